"""Fault injection under concurrent load through the gateway: with the secondary healthy, clients see no error."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from llmroute.emulator import EmulatorThread

from ..conftest import emulator, provider
from .conftest import RunningGateway

FAULTS = ["hang", "429", "500", "502", "503", "504", "error_in_body", "malformed", "reset", "stream_cut_first",
          "stream_cut"]


def load(gw: RunningGateway, requests: int, *, stream: bool, headers: dict[str, str] | None = None) -> list[tuple[int, str, str]]:
    body = {"max_tokens": 20, "stream": stream, "messages": [{"role": "user", "content": "Qualify this lead: TechCorp"}]}

    def one(_: int) -> tuple[int, str, str]:
        resp = httpx.post(gw.base_url + "/v1/chat/completions", json=body, headers=headers, timeout=30)
        return resp.status_code, resp.headers.get("x-llmroute-provider", ""), resp.text

    with ThreadPoolExecutor(max_workers=10) as pool:
        return list(pool.map(one, range(requests)))


@pytest.mark.parametrize("fault", FAULTS)
def test_primary_fault_under_load_is_invisible_to_clients(
    fault: str, gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any],
) -> None:
    with emulator("runpod") as primary:
        seed_config["providers"]["runpod"] = provider(primary.base_url, "runpod", timeout_s=0.5)
        seed_config["strategy"] = "cost_optimized"
        seed_config["breaker"] = {"failures": 3, "open_s": 30}
        gw = gateway_factory(seed_config)
        primary.set_faults({fault: 1.0})
        stream = fault.startswith("stream")
        # A stream cut after tokens were sent can only be hidden by resuming on the next provider.
        headers = {"x-llmroute-resume": "true"} if fault == "stream_cut" else None
        answers = load(gw, 60, stream=stream, headers=headers)
    assert [a for a in answers if a[0] != 200 or '"error"' in a[2]] == []
    assert {provider for _, provider, _ in answers} <= {"cerebras", "runpod"}
    state = httpx.get(gw.base_url + "/router/state").json()["providers"]["runpod"]
    if fault != "stream_cut":  # noticed once, then routed around
        assert state["breaker"]["state"] == "open"
        assert primary.emulator.stats["requests"] < 60


def test_connection_refused_primary(gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any],
                                    emus: dict[str, EmulatorThread]) -> None:
    from ..conftest import free_port

    seed_config["providers"]["runpod"] = provider(f"http://127.0.0.1:{free_port()}/v1", "runpod")
    seed_config["strategy"] = "cost_optimized"
    gw = gateway_factory(seed_config)
    answers = load(gw, 40, stream=False)
    assert all(status == 200 and provider == "cerebras" for status, provider, _ in answers)
    assert httpx.get(gw.base_url + "/router/state").json()["providers"]["runpod"]["breaker"]["state"] == "open"
