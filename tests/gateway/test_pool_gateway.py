"""A provider's full connection pool, seen from outside a running gateway: its waiters in ``/router/state`` and
``/metrics`` while they wait, their fallback to the next provider once ``pool_timeout_s`` passes (never counted
against the provider), and one log line that names the setting to raise."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ..conftest import HeldUpstream, chat_upstream, provider
from .conftest import RunningGateway

CHAT = "/v1/chat/completions"
LOG_LINE = "waited for a free connection"


async def until(read: Callable[[], Any], done: Callable[[Any], bool], timeout_s: float = 30.0) -> Any:
    """Read a running gateway's view until it shows ``done`` (another process: nothing to wait on but its answers)."""
    async with asyncio.timeout(timeout_s):
        while True:
            value = await read()
            if done(value):
                return value
            await asyncio.sleep(0.02)


def status(base_url: str) -> str:
    """``llmroute status`` as a user runs it, wide enough not to wrap the pool column."""
    done = subprocess.run([sys.executable, "-m", "llmroute.cli", "status", "--url", base_url], capture_output=True,
                          text=True, timeout=60, check=False, env={**os.environ, "COLUMNS": "250"})
    assert done.returncode == 0, done.stderr
    return done.stdout


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_waiters_are_visible_then_fall_back_without_hurting_the_provider(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any],
) -> None:
    held = HeldUpstream()
    async with chat_upstream(held.handler) as url:
        config = {**seed_config, "strategy": "cost_optimized", "retry_rounds": 1,
                  "balanced_weights": {"held": 80, "cerebras": 20}}
        config["providers"] = {
            "held": provider(url, "runpod", price_per_m={"input": 0.01, "output": 0.01}, timeout_s=60,
                             max_connections=2, pool_timeout_s=3, breaker={"failures": 1}),
            "cerebras": seed_config["providers"]["cerebras"],
        }
        gateway = await asyncio.to_thread(gateway_factory, config)
        limits = httpx.Limits(max_connections=10, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=gateway.base_url, timeout=60, limits=limits) as client:
            async def state() -> dict[str, Any]:
                return (await client.get("/router/state")).json()["providers"]["held"]

            async def metrics() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
                return samples((await client.get("/metrics")).text)

            sent = [asyncio.ensure_future(client.post(CHAT, json={"messages": [{"role": "user", "content": f"q{i}"}],
                                                                  "max_tokens": 5})) for i in range(5)]
            async with asyncio.timeout(30), held.changed:
                await held.changed.wait_for(lambda: held.arrived == 2)  # both connections to it are busy
            waiting = await until(state, lambda s: s["pool"]["waiting"] == 3)
            seen = await metrics()
            # The other three wait for a slot: counted now, not after the fact.
            assert {k: waiting["pool"][k] for k in ("max_connections", "in_use", "waiting")} == \
                {"max_connections": 2, "in_use": 2, "waiting": 3}
            assert seen[("llmroute_pool_waiting", (("provider", "held"),))] == 3
            assert seen[("llmroute_pool_in_use", (("provider", "held"),))] == 2
            assert seen[("llmroute_pool_max_connections", (("provider", "held"),))] == 2
            # After pool_timeout_s they give up on it and the next provider answers them, while the two are held.
            pending, answered = set(sent), []
            async with asyncio.timeout(30):
                while len(answered) < 3:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    answered += [task.result() for task in done]
            after = await state()
            seen = await metrics()
            shown = await asyncio.to_thread(status, gateway.base_url)
            held.released.set()
            served = await asyncio.gather(*pending)
    for response in answered:
        assert response.status_code == 200, response.text
        assert response.headers["x-llmroute-provider"] == "cerebras"
        assert response.headers["x-llmroute-attempts"] == "held:pool_exhausted,cerebras:200"  # held: once, no retry
    assert [r.headers["x-llmroute-provider"] for r in served] == ["held", "held"]
    assert held.arrived == 2
    pool = after["pool"]
    assert (pool["waiting"], pool["in_use"], pool["waits_total"], pool["wait_timeouts_total"]) == (0, 2, 3, 3)
    assert pool["wait_p95_ms"] > 0
    # llmroute's own queue: no failure, no timeout, the breaker (one failure would open it) shut.
    assert after["failures"] == 0 and after["failures_by_kind"] == {} and after["breaker"]["state"] == "closed"
    assert seen[("llmroute_pool_wait_seconds_count", (("outcome", "timeout"), ("provider", "held")))] == 3
    assert seen[("llmroute_pool_waiting", (("provider", "held"),))] == 0
    assert "2/2; 3 waited (p95 " in shown and "3 gave up)" in shown  # llmroute status, the held row
    log = await until(lambda: asyncio.to_thread(gateway.log), lambda text: LOG_LINE in text)
    lines = [line for line in log.splitlines() if LOG_LINE in line]
    assert len(lines) == 1, lines
    assert "provider held: 3 request(s)" in lines[0] and "3 gave up" in lines[0]
    assert "providers.held.max_connections" in lines[0]
