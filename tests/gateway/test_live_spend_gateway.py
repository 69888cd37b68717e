"""Live spend through a real ``llmroute serve``, the emulated providers and a real SQLite ledger: what
/router/state, /metrics and ``llmroute status`` show per key, tag and provider is what the ledger recorded
(billed failed attempts, streams and failed requests included), names are capped, a restart seeds from the
ledger, and replicas sharing a real redis-server converge on the same totals."""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmroute.emulator import EmulatorThread

from ..redis_fixture import RedisServer, redis_server  # noqa: F401
from .conftest import RunningGateway, stop_gateway

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "Qualify this lead: Initech, 40 employees"}]
KEYS = {"alpha": "sk-live-spend-alpha", "beta": "sk-live-spend-beta", "gamma": "sk-live-spend-gamma"}
GPU_PRICE_PER_S = 0.01  # runpod billed by worker time: its failed attempts cost money too
Sums = dict[str, dict[str, list[float]]]


def configure(seed_config: dict[str, Any], ledger: Path, **extra: Any) -> dict[str, Any]:
    runpod = seed_config["providers"]["runpod"]
    runpod.pop("price_per_m")
    runpod["price_per_gpu_second"] = GPU_PRICE_PER_S
    seed_config["ledger"] = {"path": str(ledger), "flush_interval_s": 0.01}
    seed_config["gateway"] = {"api_keys": [{"id": name, "key": key} for name, key in KEYS.items()]}
    seed_config["breaker"] = {"failures": 1000, "min_requests": 1000}  # outages here are the test's, not the breaker's
    seed_config["retry_rounds"] = 0
    seed_config.update(extra)
    return seed_config


def send(gw: RunningGateway, key: str, tags: str | None = None, *, stream: bool = False,
         metadata: dict[str, str] | None = None) -> int:
    headers = {"Authorization": f"Bearer {KEYS[key]}", **({"x-llmroute-tags": tags} if tags else {})}
    body: dict[str, Any] = {"model": "balanced", "messages": MESSAGES, "max_tokens": 30, "stream": stream}
    if metadata:
        body["metadata"] = metadata
    with httpx.stream("POST", gw.base_url + CHAT, headers=headers, json=body, timeout=30) as resp:
        resp.read()
        return resp.status_code


def ledger_sums(ledger: Path) -> Sums:
    """Per key, tag and provider (each attempt's cost to its provider), and all: [cost_usd, tokens, requests]."""
    out: Sums = {"all": defaultdict(lambda: [0.0, 0, 0]), "keys": defaultdict(lambda: [0.0, 0, 0]),
                 "tags": defaultdict(lambda: [0.0, 0, 0]), "providers": defaultdict(lambda: [0.0, 0, 0])}

    def add(dimension: str, name: str, cost: float, tokens: int) -> None:
        sums = out[dimension][name]
        sums[0] += cost
        sums[1] += tokens
        sums[2] += 1

    db = sqlite3.connect(ledger)
    try:
        rows = db.execute("SELECT key_id, tags, provider, cost_usd, prompt_tokens + completion_tokens, attempts "
                          "FROM requests").fetchall()
    finally:
        db.close()
    for key_id, tags, provider, cost, tokens, attempts in rows:
        add("all", "", cost or 0.0, tokens)
        if key_id is not None:
            add("keys", key_id, cost or 0.0, tokens)
        for tag in set(orjson.loads(tags or "[]")):
            add("tags", tag, cost or 0.0, tokens)
        if attempts is None:
            add("providers", provider, cost or 0.0, tokens)
        for a in orjson.loads(attempts or "[]"):
            if a["cost_usd"] or a["ok"]:
                add("providers", a["provider"], a["cost_usd"], a["prompt_tokens"] + a["completion_tokens"])
    return out


def ledger_count(ledger: Path) -> int:
    db = sqlite3.connect(ledger)
    try:
        return db.execute("SELECT count(*) FROM requests").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


def wait_for(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Poll a condition another process makes true (the ledger's writer, another replica's sync)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def spend_of(gw: RunningGateway) -> dict[str, Any]:
    resp = httpx.get(gw.base_url + "/router/state", headers={"Authorization": f"Bearer {KEYS['alpha']}"})
    assert resp.status_code == 200
    return resp.json()["spend"]


def as_sums(view: dict[str, Any]) -> Sums:
    out: Sums = {"all": {"": [view["all"]["cost_usd"], view["all"]["tokens"], view["all"]["requests"]]}}
    for dimension in ("keys", "tags", "providers"):
        out[dimension] = {name: [s["cost_usd"], s["tokens"], s["requests"]] for name, s in view[dimension].items()}
    return out


def assert_equal(shown: Sums, recorded: Sums) -> None:
    for dimension, series in recorded.items():
        assert set(shown[dimension]) == set(series), (dimension, shown[dimension], dict(series))
        for name, (cost, tokens, requests) in series.items():
            assert shown[dimension][name][0] == pytest.approx(cost, abs=1e-8), (dimension, name)
            assert shown[dimension][name][1:] == [tokens, requests], (dimension, name)


def traffic(gw: RunningGateway, emus: dict[str, EmulatorThread]) -> int:
    """Keys, header and metadata tags, streams, fallbacks from billed failures, and requests every provider
    failed: the number of requests the ledger must hold."""
    sent = 0
    for i in range(12):
        assert send(gw, "alpha" if i % 3 else "beta", "team=sales,urgent" if i % 2 else "team=ops",
                    stream=i % 4 == 0, metadata={"app": "crm"} if i % 5 == 0 else None) == 200
        sent += 1
    emus["runpod"].set_faults({"500": 1.0})  # runpod fails (billed its worker time), cerebras answers
    for i in range(4):
        assert send(gw, "alpha", "team=sales", stream=i % 2 == 0) == 200
        sent += 1
    emus["cerebras"].set_faults({"500": 1.0})  # both fail: the requests fail, runpod's attempts still cost
    for _ in range(2):
        assert send(gw, "beta", "team=ops") == 502
        sent += 1
    emus["runpod"].set_faults({})
    emus["cerebras"].set_faults({})
    return sent


def test_state_spend_equals_the_ledger_per_key_tag_and_provider(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any], emus: dict[str, EmulatorThread],
    tmp_path: Path,
) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    gw = gateway_factory(configure(seed_config, ledger, spend={"period": "week"}))
    sent = traffic(gw, emus)
    wait_for(lambda: ledger_count(ledger) == sent)
    recorded = ledger_sums(ledger)
    failed_runpod = sqlite3.connect(ledger).execute(
        "SELECT count(*) FROM requests WHERE status = 'failed' AND cost_usd > 0").fetchone()[0]
    assert failed_runpod == 2  # the failed requests were billed: the test covers that spend
    spend = spend_of(gw)
    assert spend["period"] == "week"
    for window in ("today", "this_period"):
        assert_equal(as_sums(spend[window]), recorded)
    assert set(spend["today"]["keys"]) == {"alpha", "beta"} and "sk-live" not in json.dumps(spend)
    assert recorded["providers"]["runpod"][0] > 0 and recorded["providers"]["cerebras"][0] > 0

    gauges = scrape(gw)
    for window in ("day", "period"):
        assert gauges["llmroute_spend_usd"][(window, "key", "alpha")] == pytest.approx(recorded["keys"]["alpha"][0], abs=1e-8)
        assert gauges["llmroute_spend_usd"][(window, "tag", "team=sales")] == pytest.approx(
            recorded["tags"]["team=sales"][0], abs=1e-8)
        assert gauges["llmroute_spend_usd"][(window, "provider", "runpod")] == pytest.approx(
            recorded["providers"]["runpod"][0], abs=1e-8)
        assert gauges["llmroute_spend_requests"][(window, "all", "all")] == sent
        assert gauges["llmroute_spend_tokens"][(window, "all", "all")] == recorded["all"][""][1]


def scrape(gw: RunningGateway) -> dict[str, dict[tuple[str, ...], float]]:
    text = httpx.get(gw.base_url + "/metrics", headers={"Authorization": f"Bearer {KEYS['alpha']}"}).text
    out: dict[str, dict[tuple[str, ...], float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            key = ((labels["window"], labels["dimension"], labels["name"]) if "window" in labels
                   else (labels.get("budget", ""),))
            out[sample.name][key] = sample.value
    return out


def test_names_past_max_series_count_under_other(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any], tmp_path: Path,
) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    gw = gateway_factory(configure(seed_config, ledger, spend={"max_series": 3}))
    tags = [f"run={i}" for i in range(8)]
    for tag in tags:  # each a new, client-chosen name
        assert send(gw, "alpha", tag) == 200
    wait_for(lambda: ledger_count(ledger) == len(tags))
    recorded = ledger_sums(ledger)["tags"]
    shown = spend_of(gw)["today"]["tags"]
    assert set(shown) == {"run=0", "run=1", "run=2", "(other)"}
    other = [recorded[t] for t in tags[3:]]
    assert shown["(other)"]["requests"] == 5
    assert shown["(other)"]["cost_usd"] == pytest.approx(sum(s[0] for s in other), abs=1e-8)
    labels = [key for key in scrape(gw)["llmroute_spend_usd"] if key[1] == "tag"]
    assert len(labels) == 2 * 4  # three names and (other), per window: the labels stay bounded


def test_a_restart_seeds_the_view_from_the_ledger(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any], emus: dict[str, EmulatorThread],
    tmp_path: Path,
) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    config = configure(seed_config, ledger)
    gw = gateway_factory(config)
    sent = traffic(gw, emus)
    assert stop_gateway(gw) == 0
    assert ledger_count(ledger) == sent

    again = gateway_factory(config)
    recorded = ledger_sums(ledger)
    spend = spend_of(again)
    for window in ("today", "this_period"):
        assert_equal(as_sums(spend[window]), recorded)
    assert send(again, "beta", "team=ops") == 200  # seeded once: new spend adds to it
    wait_for(lambda: ledger_count(ledger) == sent + 1)
    assert_equal(as_sums(spend_of(again)["this_period"]), ledger_sums(ledger))


def test_replicas_sharing_redis_converge_on_the_ledgers_totals(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any], emus: dict[str, EmulatorThread],
    redis_server: RedisServer, tmp_path: Path,  # noqa: F811
) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    config = configure(seed_config, ledger, state={"backend": "redis", "redis_url": redis_server.url,
                                                   "sync_interval_s": 0.2})
    first, second = gateway_factory(config), gateway_factory(config)
    sent = 0
    for i in range(16):
        gw = (first, second)[i % 2]
        assert send(gw, ("alpha", "beta")[i // 2 % 2], ("team=sales", "team=ops")[i // 4 % 2], stream=i % 3 == 0) == 200
        sent += 1
    wait_for(lambda: ledger_count(ledger) == sent)
    recorded = ledger_sums(ledger)

    def converged() -> bool:
        try:
            for gw in (first, second):
                assert_equal(as_sums(spend_of(gw)["this_period"]), recorded)
        except AssertionError:
            return False
        return True

    wait_for(converged)
    # A key and a tag only the first replica serves: the second lists them too (the names are shared).
    for _ in range(2):
        assert send(first, "gamma", "team=solo") == 200
        sent += 1
    wait_for(lambda: ledger_count(ledger) == sent)
    recorded = ledger_sums(ledger)
    assert "gamma" in recorded["keys"] and "team=solo" in recorded["tags"]
    wait_for(converged)
    # A restarted replica takes the shared totals, and does not add the ledger's spend to them again.
    assert stop_gateway(second) == 0
    third = gateway_factory(config)
    assert third.log().count("live spend could not be read") == 0
    assert_equal(as_sums(spend_of(third)["this_period"]), recorded)
    assert_equal(as_sums(spend_of(third)["today"]), recorded)


def status(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"} | {"COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "llmroute.cli", "status", "--api-key", KEYS["alpha"], *args],
                          capture_output=True, text=True, env=env, timeout=60)


def test_status_prints_spend_in_every_format(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any], tmp_path: Path,
) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    config = configure(seed_config, ledger, budgets=[{"name": "everything", "usd": 50, "period": "month"}])
    gw = gateway_factory(config)
    for key, tag in (("alpha", "team=sales"), ("beta", "team=ops"), ("alpha", "team=ops")):
        assert send(gw, key, tag) == 200
    wait_for(lambda: ledger_count(ledger) == 3)
    recorded = ledger_sums(ledger)

    table = status("--url", gw.base_url)
    assert table.returncode == 0, table.stderr
    assert "spend (today UTC, and this month)" in table.stdout and "budgets (this period)" in table.stdout
    for name in ("alpha", "beta", "team=sales", "team=ops", "runpod"):
        assert any(name in line and f"{recorded['keys'].get(name, recorded['tags'].get(name, [0, 0, 0]))[2]:,}"
                   in line for line in table.stdout.splitlines()), name
    assert "sk-live" not in table.stdout

    shown = json.loads(status("--url", gw.base_url, "--format", "json").stdout)
    assert_equal(as_sums(shown["spend"]["today"]), recorded)
    assert shown["budgets"]["everything"]["left_usd"] == pytest.approx(50 - recorded["all"][""][0], abs=1e-8)

    rows = list(csv.DictReader(status("--url", gw.base_url, "--format", "csv", "--table", "spend").stdout.splitlines()))
    by = {(r["window"], r["by"], r["name"]): r for r in rows}
    assert float(by[("period", "key", "alpha")]["cost_usd"]) == pytest.approx(recorded["keys"]["alpha"][0], abs=1e-8)
    assert int(by[("day", "tag", "team=ops")]["requests"]) == 2
    budgets = list(csv.DictReader(status("--url", gw.base_url, "--format", "csv", "--table", "budgets").stdout.splitlines()))
    assert [b["budget"] for b in budgets] == ["everything"] and "pacing_target_usd" in budgets[0]
    assert float(budgets[0]["left_usd"]) == pytest.approx(50 - recorded["all"][""][0], abs=1e-8)
