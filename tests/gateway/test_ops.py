"""Health, readiness, router state, client disconnects, and shutdown."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import httpx

from llmroute.emulator import EmulatorThread

from ..conftest import emulator, provider
from .conftest import RunningGateway, stop_gateway

CHAT = "/v1/chat/completions"


def test_health_and_ready(gateway_factory: Callable[..., RunningGateway], emus: dict[str, EmulatorThread]) -> None:
    with emulator("runpod", speed=1.0, latency_ms=0.0, retry_after_s=600) as limited:
        config = {"providers": {"only": provider(limited.base_url, "runpod", max_retry_after_s=900)}, "retry_rounds": 0}
        gw = gateway_factory(config)
        assert httpx.get(gw.base_url + "/health").json() == {"status": "ok"}
        ready = httpx.get(gw.base_url + "/ready")
        assert ready.status_code == 200 and ready.json()["usable_providers"] == ["only"]
        limited.set_faults({"429": 1.0})
        resp = httpx.post(gw.base_url + CHAT, json={"messages": [{"role": "user", "content": "hi"}]})
        assert resp.status_code == 503 and int(resp.headers["retry-after"]) >= 500
        not_ready = httpx.get(gw.base_url + "/ready")
        assert not_ready.status_code == 503 and not_ready.json() == {"ready": False, "usable_providers": []}
        assert httpx.get(gw.base_url + "/health").status_code == 200  # alive, just not ready


def test_router_state_shows_measurements_never_secrets(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any], emus: dict[str, EmulatorThread],
) -> None:
    secret = "sk-state-must-not-show-777"
    seed_config["providers"]["runpod"]["api_key"] = secret
    seed_config["providers"]["runpod"]["headers"] = {"x-custom-auth": secret}
    gw = gateway_factory(seed_config)
    emus["runpod"].set_faults({"500": 1.0}, times=1)
    for _ in range(3):
        httpx.post(gw.base_url + CHAT, json={"model": "cost_optimized", "messages": [{"role": "user", "content": "hi"}]})
    resp = httpx.get(gw.base_url + "/router/state")
    assert secret not in resp.text and secret not in gw.log()
    state = resp.json()
    runpod = state["providers"]["runpod"]
    assert state["default_strategy"] == "balanced"
    assert runpod["failures"] == 1 and runpod["successes"] == 2
    assert runpod["recent_failures"][0]["kind"] == "server_error" and runpod["recent_failures"][0]["status"] == 500
    assert runpod["latency_samples"] == 2 and runpod["latency_ms"] != runpod["latency_prior_ms"]
    assert runpod["weight"] == 80 and state["providers"]["cerebras"]["weight"] == 20
    assert 0 < runpod["error_rate"] < 1


def test_client_disconnect_cancels_the_upstream_stream(gateway_factory: Callable[..., RunningGateway]) -> None:
    with emulator("cerebras", speed=1.0, latency_ms=4000.0) as slow:
        gw = gateway_factory({"providers": {"slow": provider(slow.base_url, "cerebras")}})
        slow.emulator.stream_abandoned.clear()
        with httpx.stream("POST", gw.base_url + CHAT, json={"stream": True, "max_tokens": 200,
                                                            "messages": [{"role": "user", "content": "hi"}]}) as resp:
            first = next(resp.iter_lines())
            assert first.startswith("data: ")
        # The client is gone; the gateway must hang up on the provider well before its 4 s answer ends.
        assert slow.emulator.stream_abandoned.wait(timeout=3.0)


def test_sigterm_finishes_requests_in_flight(gateway_factory: Callable[..., RunningGateway]) -> None:
    with emulator("runpod", speed=1.0, latency_ms=600.0) as slow:
        gw = gateway_factory({"providers": {"slow": provider(slow.base_url, "runpod")}})
        with httpx.Client(timeout=10) as http:
            import threading

            result: dict[str, Any] = {}
            started = threading.Event()

            def call() -> None:
                started.set()
                result["resp"] = http.post(gw.base_url + CHAT, json={"messages": [{"role": "user", "content": "hi"}]})

            thread = threading.Thread(target=call)
            thread.start()
            started.wait()
            while slow.emulator.stats["requests"] == 0:  # the request reached the provider
                pass
            gw.process.send_signal(signal.SIGTERM)
            thread.join()
        assert result["resp"].status_code == 200
        assert gw.process.wait(timeout=15) == 0


def test_non_loopback_without_keys_refuses_to_start(seed_config: dict[str, Any], tmp_path: Any) -> None:
    import subprocess
    import sys

    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(seed_config))
    proc = subprocess.run([sys.executable, "-m", "llmroute.cli", "serve", "--config", str(path), "--host", "0.0.0.0",
                           "--port", "0"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "refusing to listen on 0.0.0.0 without API keys" in proc.stderr and "--insecure" in proc.stderr


def test_non_loopback_with_insecure_or_keys_starts(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any],
) -> None:
    gw = gateway_factory(seed_config, "--host", "0.0.0.0", "--insecure")
    assert "0.0.0.0" in gw.base_url
    assert stop_gateway(gw) == 0
    seed_config["gateway"] = {"api_keys": ["k-1"]}
    gw = gateway_factory(seed_config, "--host", "0.0.0.0")
    assert stop_gateway(gw) == 0
