"""/metrics, parsed with prometheus-client's own parser, matches what was sent."""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmroute.emulator import EmulatorThread

from .conftest import RunningGateway, stop_gateway

CHAT = "/v1/chat/completions"


def scrape(gateway: RunningGateway) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    text = httpx.get(gateway.base_url + "/metrics").text
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def total(samples: dict[tuple[tuple[str, str], ...], float], **match: str) -> float:
    return sum(v for labels, v in samples.items() if all(dict(labels).get(k) == want for k, want in match.items()))


def run_traffic(base_url: str, emus: dict[str, EmulatorThread]) -> dict[str, Any]:
    sent: dict[str, Any] = {"requests": defaultdict(int), "prompt": 0, "completion": 0, "cost": 0.0, "fallbacks": 0}
    with httpx.Client(base_url=base_url) as http:
        for i in range(30):
            if i == 10:
                emus["runpod"].set_faults({"503": 1.0})
            if i == 15:
                emus["runpod"].set_faults({})
            model = "cost_optimized" if i % 2 else "quality_optimized"
            resp = http.post(CHAT, json={"model": model, "messages": [{"role": "user", "content": f"lead {i}"}],
                                         "max_tokens": 30})
            assert resp.status_code == 200
            usage = resp.json()["usage"]
            sent["requests"][(model, resp.headers["x-llmroute-provider"])] += 1
            sent["prompt"] += usage["prompt_tokens"]
            sent["completion"] += usage["completion_tokens"]
            sent["cost"] += float(resp.headers["x-llmroute-cost-usd"])
            sent["fallbacks"] += resp.headers["x-llmroute-fallback"] == "true"
        bad = http.post(CHAT, content=b"{oops", headers={"content-type": "application/json"})
        assert bad.status_code == 400
    return sent


def test_counters_match_what_was_sent(gateway: RunningGateway, emus: dict[str, EmulatorThread]) -> None:
    sent = run_traffic(gateway.base_url, emus)
    m = scrape(gateway)
    for (strategy, provider), count in sent["requests"].items():
        assert total(m["llmroute_requests_total"], strategy=strategy, provider=provider) == count
    assert total(m["llmroute_requests_total"]) == 30
    assert total(m["llmroute_tokens_total"], type="prompt") == sent["prompt"]
    assert total(m["llmroute_tokens_total"], type="completion") == sent["completion"]
    assert total(m["llmroute_cost_usd_total"]) == pytest.approx(sent["cost"], abs=1e-8)
    assert total(m["llmroute_fallbacks_total"]) == sent["fallbacks"] >= 1
    assert total(m["llmroute_attempt_failures_total"], provider="runpod", kind="server_error") >= 1
    assert total(m["llmroute_request_latency_seconds_count"]) == 30
    assert total(m["llmroute_request_latency_seconds_count"], strategy="cost_optimized") == 15


def test_metrics_add_up_across_workers(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any], emus: dict[str, EmulatorThread],
) -> None:
    from ..conftest import free_port

    gw = gateway_factory(seed_config, "--workers", "2", port=free_port())
    sent = 0
    for _ in range(40):  # new connections, so the kernel spreads them over both workers
        with httpx.Client() as http:
            assert http.post(gw.base_url + CHAT, json={"messages": [{"role": "user", "content": "hi"}]}).status_code == 200
            sent += 1
    for _ in range(3):  # whichever worker answers the scrape, it reports both
        assert total(scrape(gw)["llmroute_requests_total"]) == sent


def test_cost_counter_adds_up_to_the_ledger_when_failed_attempts_were_billed(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any], emus: dict[str, EmulatorThread],
    tmp_path: Path,
) -> None:
    """A GPU-second provider bills the worker time of an attempt that failed: the counter, per provider, must
    say what the ledger says, not only what the answering provider cost."""
    ledger = tmp_path / "l.sqlite3"
    runpod = seed_config["providers"]["runpod"]
    runpod.pop("price_per_m")
    runpod["price_per_gpu_second"] = 0.00001  # still the cheaper one to route to: cost_optimized tries it first
    gateway = gateway_factory({**seed_config, "ledger": {"path": str(ledger), "flush_interval_s": 0.01}})
    emus["runpod"].set_faults({"500": 1.0})  # every runpod attempt fails, after holding the worker a moment
    with httpx.Client(base_url=gateway.base_url, timeout=20) as http:
        for i in range(6):
            r = http.post(CHAT, json={"model": "cost_optimized", "messages": [{"role": "user", "content": f"q {i}"}]})
            assert r.status_code == 200 and r.headers["x-llmroute-provider"] == "cerebras"
        m = scrape(gateway)
    assert stop_gateway(gateway) == 0
    rows = sqlite3.connect(ledger).execute("SELECT provider, cost_usd, attempts FROM requests").fetchall()
    billed: dict[str, float] = defaultdict(float)
    for provider, cost_usd, attempts in rows:
        if attempts is None:  # answered at the first attempt: the row is that attempt
            billed[provider] += cost_usd
        for attempt in orjson.loads(attempts or "[]"):
            billed[attempt["provider"]] += attempt["cost_usd"]
    assert billed["runpod"] > 0  # the failed attempts were billed: the case this test is about
    for provider, cost in billed.items():
        assert total(m["llmroute_cost_usd_total"], provider=provider) == pytest.approx(cost, rel=1e-6, abs=1e-12)
