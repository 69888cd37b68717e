"""Breakers seen from outside: 503 at once when every provider is down, /router/state, metrics, `llmroute status`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from llmroute.emulator import EmulatorThread

from ..test_cli import llmroute
from .conftest import RunningGateway

CHAT = "/v1/chat/completions"
BODY = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


def test_every_provider_down_answers_503_at_once_with_retry_after(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any], emus: dict[str, EmulatorThread],
) -> None:
    seed_config["retry_rounds"] = 0
    seed_config["breaker"] = {"failures": 2, "open_s": 30}
    gw = gateway_factory(seed_config)
    for emu in emus.values():
        emu.set_faults({"500": 1.0})
    for _ in range(2):  # two failures each open both breakers
        assert httpx.post(gw.base_url + CHAT, json=BODY).status_code == 502
    sent = {name: emu.emulator.stats["requests"] for name, emu in emus.items()}
    started = time.perf_counter()
    resp = httpx.post(gw.base_url + CHAT, json=BODY)
    elapsed_s = time.perf_counter() - started
    assert resp.status_code == 503
    error = resp.json()["error"]
    assert error["code"] == "all_providers_failed" and "circuit_open" in error["message"]
    assert 25 <= int(resp.headers["retry-after"]) <= 30  # when the first breaker will let a probe through
    assert sorted(resp.headers["x-llmroute-attempts"].split(",")) == ["cerebras:circuit_open", "runpod:circuit_open"]
    assert {name: emu.emulator.stats["requests"] for name, emu in emus.items()} == sent  # nobody was called
    assert elapsed_s < 1.0
    state = httpx.get(gw.base_url + "/router/state").json()["providers"]
    assert state["runpod"]["breaker"]["state"] == "open" and state["runpod"]["breaker"]["opened"] == 1
    assert "2 failures" in state["runpod"]["breaker"]["reason"]
    assert httpx.get(gw.base_url + "/ready").status_code == 503
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(httpx.get(gw.base_url + "/metrics").text) for s in f.samples}
    assert samples[("llmroute_breaker_state", (("provider", "runpod"),))] == 2.0
    assert samples[("llmroute_breaker_transitions_total", (("provider", "cerebras"), ("state", "open")))] == 1.0
    proc = llmroute("status", "--url", gw.base_url)
    assert proc.returncode == 0, proc.stderr
    assert "open (probe in" in proc.stdout and "2 failures in 10 s" in proc.stdout
    assert "breaker for runpod is now open" in gw.log()


def test_status_without_a_gateway_says_so() -> None:
    proc = llmroute("status", "--url", "http://127.0.0.1:9")
    assert proc.returncode == 1 and "cannot reach the gateway" in proc.stderr and "Traceback" not in proc.stderr
