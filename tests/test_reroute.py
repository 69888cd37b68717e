"""Rerouting is visible: a provider passed over (cooling down, breaker open) is an attempt with its reason, in
the headers and the ledger, and makes the answer a fallback. Refused connections are transient (503), a TLS
failure is not (502) and is named."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from .conftest import emulator, free_port, provider
from .gateway.conftest import RunningGateway, gateway_factory  # noqa: F401

CHAT = "/v1/chat/completions"
HI = {"model": "cost_optimized", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


def ledger_attempts(path: Path) -> list[tuple[bool, list[tuple[str, str]]]]:
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT fallback, attempts FROM requests ORDER BY id").fetchall()
    finally:
        db.close()
    return [(bool(fallback), [(a["provider"], a["kind"]) for a in json.loads(attempts)]) for fallback, attempts in rows]


def test_a_provider_cooling_down_after_retry_after_is_a_visible_reroute(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path,  # noqa: F811
) -> None:
    with emulator("runpod", speed=1.0, latency_ms=0.0, retry_after_s=120) as runpod, \
            emulator("cerebras", speed=1.0, latency_ms=0.0) as cerebras:
        runpod.set_faults({"503": 1.0}, times=1)
        config = {"providers": {"runpod": provider(runpod.base_url, "runpod"),
                                "cerebras": provider(cerebras.base_url, "cerebras")},
                  "ledger": {"path": str(tmp_path / "l.sqlite3")}}
        gw = gateway_factory(config)
        first = httpx.post(gw.base_url + CHAT, json=HI)
        second = httpx.post(gw.base_url + CHAT, json=HI)
        gw.process.terminate()
        gw.process.wait(timeout=20)
    assert first.headers["x-llmroute-attempts"] == "runpod:503,cerebras:200"
    # Nothing was sent to runpod, but the answer says why the expensive provider answered.
    assert second.status_code == 200
    assert second.headers["x-llmroute-attempts"] == "runpod:cooling_down,cerebras:200"
    assert second.headers["x-llmroute-fallback"] == "true"
    assert runpod.emulator.stats["requests"] == 1
    assert ledger_attempts(tmp_path / "l.sqlite3") == [
        (True, [("runpod", "server_error"), ("cerebras", "ok")]),
        (True, [("runpod", "cooling_down"), ("cerebras", "ok")]),
    ]


def test_an_open_breaker_is_a_visible_reroute(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any], emus: dict[str, Any],  # noqa: F811
) -> None:
    seed_config["providers"]["runpod"]["breaker"] = {"failures": 1, "open_s": 60}
    seed_config["strategy"] = "cost_optimized"
    emus["runpod"].set_faults({"500": 1.0}, times=1)
    gw = gateway_factory(seed_config)
    assert httpx.post(gw.base_url + CHAT, json=HI).headers["x-llmroute-attempts"] == "runpod:500,cerebras:200"
    for stream in (False, True):
        resp = httpx.post(gw.base_url + CHAT, json={**HI, "stream": stream})
        assert resp.headers["x-llmroute-attempts"] == "runpod:circuit_open,cerebras:200"
        assert resp.headers["x-llmroute-fallback"] == "true"


def test_every_provider_refusing_connections_is_a_503_with_retry_after(
    gateway_factory: Callable[..., RunningGateway],  # noqa: F811
) -> None:
    config = {"providers": {name: provider(f"http://127.0.0.1:{free_port()}/v1", name) for name in ("runpod", "cerebras")},
              "retry_rounds": 0}
    gw = gateway_factory(config)
    resp = httpx.post(gw.base_url + CHAT, json=HI)
    assert resp.status_code == 503 and resp.headers["retry-after"]
    assert resp.json()["error"]["code"] == "all_providers_failed"
    assert "connect" in resp.json()["error"]["message"]


def test_a_tls_failure_is_a_502_that_names_it(
    gateway_factory: Callable[..., RunningGateway], emus: dict[str, Any],  # noqa: F811
) -> None:
    # https:// to a plain-HTTP port: the handshake fails, as against a proxy or a wrong certificate.
    config = {"providers": {name: provider(emus[name].base_url.replace("http://", "https://"), name)
                            for name in ("runpod", "cerebras")}, "retry_rounds": 0}
    gw = gateway_factory(config)
    resp = httpx.post(gw.base_url + CHAT, json=HI)
    assert resp.status_code == 502
    message = resp.json()["error"]["message"]
    assert "runpod: tls, TLS error" in message and "cerebras: tls, TLS error" in message
