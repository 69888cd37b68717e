"""Active health checks, cold-start detection and keep-warm pings, against real emulators."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from llmroute import LLMRouter
from llmroute.emulator import EmulatorSettings, EmulatorThread, get_profile
from llmroute.ledger import Ledger, open_store
from llmroute.state import ColdStartSettings, InMemoryState
from llmroute.strategies import LatencyOptimized, RouteRequest

from .conftest import emulator, free_port, provider


async def test_health_checks_open_and_close_the_breaker_without_user_requests(seed_config: dict[str, Any]) -> None:
    port = free_port()
    seed_config["providers"]["runpod"] = provider(
        f"http://127.0.0.1:{port}/v1", "runpod", health_check={"interval_s": 0.05, "timeout_s": 1, "failures": 2})
    async with LLMRouter(config=seed_config, ledger=False) as router:
        changes: asyncio.Queue[str] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        router.state.on_breaker_change = lambda name, state, reason: loop.call_soon(changes.put_nowait, f"{name}:{state}")
        router.health.ensure_started()
        assert await asyncio.wait_for(changes.get(), 10) == "runpod:open"  # nothing listens: 2 failed checks
        assert "health checks failed" in router.state.breaker("runpod").last_reason
        with EmulatorThread(EmulatorSettings(get_profile("runpod"), speed=float("inf")), port=port) as emu:
            assert await asyncio.wait_for(changes.get(), 10) == "runpod:closed"
            assert router.state.breaker("runpod").last_reason == "health check passed"
            assert emu.emulator.stats["requests"] == 0  # checks are GETs on /models, not chat requests


def test_a_latency_spike_marks_a_cold_start_and_latency_optimized_avoids_it(seed_config: dict[str, Any]) -> None:
    from llmroute import load_config

    config = load_config(seed_config)
    state = InMemoryState({"runpod": 100.0, "cerebras": 300.0},
                          cold_starts={"runpod": ColdStartSettings(idle_s=60, factor=3.0, warm_s=30)})
    strategy = LatencyOptimized(config, state)
    request = RouteRequest(input_tokens=100, output_tokens=100)
    for _ in range(25):
        state.record_success("runpod", 100.0)
        state.record_success("cerebras", 300.0)
    assert strategy.order(request)[0] == "runpod"
    state.record_success("runpod", 5_000.0)  # 50x its p95: a worker starting from zero
    stats = state.snapshot()["runpod"]
    assert stats.cold_starts == 1 and state.warming("runpod")
    assert stats.latency_ms == pytest.approx(100.0)  # the outlier stays out of the estimate
    assert strategy.order(request) == ["cerebras", "runpod"]  # still a fallback, just not first
    assert stats.warming_until - time.monotonic() == pytest.approx(30, abs=1)
    stats.warming_until = 0.0
    assert not state.warming("runpod")
    stats.last_success = time.monotonic() - 61  # idle longer than idle_s: expect a cold start
    assert state.warming("runpod") and strategy.order(request)[0] == "cerebras"


async def test_keep_warm_pings_are_priced_and_recorded(seed_config: dict[str, Any], tmp_path: Path) -> None:
    ledger = Ledger(open_store(str(tmp_path / "k.sqlite3")), flush_interval_s=0.01)
    with emulator("runpod") as emu:
        seed_config["providers"]["runpod"] = provider(emu.base_url, "runpod", cold_start={"keep_warm_s": 0.05})
        async with LLMRouter(config=seed_config, ledger=ledger) as router:
            router.health.ensure_started()
            deadline = time.monotonic() + 10
            while emu.emulator.stats["ok"] < 3:  # the loop pings on its own while the provider is idle
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            attempt = await router.health.ping(router.providers["runpod"])
    assert attempt.ok and attempt.completion_tokens >= 1 and attempt.cost_usd > 0
    assert emu.emulator.last_body["max_tokens"] == 1
    assert ledger.flush()
    rows = ledger.store.fetch("SELECT status, route, provider, cost_usd FROM requests")
    assert len(rows) >= 3 and {r[0] for r in rows} == {"keep_warm"} and {r[1] for r in rows} == {"keep_warm"}
    assert all(r[3] > 0 for r in rows)
    ledger.close()
