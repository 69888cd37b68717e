"""A full pool: its waits are counted (the ones that get a slot too), and a request does not queue for the same
provider twice; the retry rounds still apply to the provider failures."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from llmroute import LLMRouter
from llmroute.errors import AllProvidersFailed
from llmroute.providers.http import ConnectionPool, PoolTimeout
from llmroute.providers.poolstats import PoolStats

from ..conftest import chat_upstream
from .test_pool import HeldUpstream, held, one_connection  # noqa: F401  (held: the fixture)


async def test_a_wait_that_gets_a_slot_is_counted_and_a_free_slot_is_not(held: HeldUpstream) -> None:  # noqa: F811
    waits: list[tuple[float, str]] = []
    stats = PoolStats("held")
    stats.on_wait = lambda waited_s, outcome: waits.append((waited_s, outcome))
    pool = ConnectionPool(held.base_url, max_connections=1, stats=stats)
    first = asyncio.create_task(pool.post("/chat/completions", b"{}"))
    await held.arrived.wait()
    assert (stats.in_use, stats.waiting, waits) == (1, 0, [])  # a free slot: no wait recorded
    second = asyncio.create_task(pool.post("/chat/completions", b"{}"))
    with pytest.raises(PoolTimeout, match="max_connections 1 in use"):
        await pool.acquire_slot(0.05)
    assert stats.waiting == 1  # the second request, still waiting (the third gave up)
    held.release.set()
    await asyncio.gather(first, second)
    await pool.aclose()
    assert [outcome for _, outcome in waits] == ["timeout", "slot"]
    assert (stats.in_use, stats.waiting, stats.waits_total, stats.timeouts_total) == (0, 0, 2, 1)
    snapshot = stats.snapshot()
    assert snapshot["max_connections"] == 1 and snapshot["waits_total"] == 2
    assert snapshot["wait_p95_ms"] is not None and snapshot["wait_max_ms"] >= snapshot["wait_p95_ms"]


async def test_a_cancelled_wait_gives_its_place_back(held: HeldUpstream) -> None:  # noqa: F811
    stats = PoolStats("held")
    pool = ConnectionPool(held.base_url, max_connections=1, stats=stats)
    first = asyncio.create_task(pool.post("/chat/completions", b"{}"))
    await held.arrived.wait()
    waiter = asyncio.create_task(pool.acquire_slot(30))
    while stats.waiting == 0:
        await asyncio.sleep(0)  # let the waiter start waiting
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    held.release.set()
    await first
    await pool.aclose()
    assert (stats.in_use, stats.waiting, stats.waits_total, stats.timeouts_total) == (0, 0, 1, 0)


async def test_a_full_pool_is_not_retried_but_provider_failures_are(
    seed_config: dict[str, Any], held: HeldUpstream,  # noqa: F811
) -> None:
    failed = 0

    async def broken(request: web.Request) -> web.Response:
        nonlocal failed
        failed += 1
        return web.json_response({"error": {"message": "overloaded", "type": "server_error"}}, status=500)

    config = one_connection(seed_config, held.base_url)
    config["retry_rounds"] = 1
    async with chat_upstream(broken) as broken_url:
        config["providers"]["cerebras"].update(base_url=broken_url, breaker={"failures": 10})
        async with LLMRouter(config=config, ledger=False) as router:
            first = asyncio.create_task(router.generate("hi", max_tokens=5))
            await held.arrived.wait()  # runpod's only connection is busy
            with pytest.raises(AllProvidersFailed) as info:
                await router.generate("hi", max_tokens=5)
            held.release.set()
            await first
            stats = router.state.snapshot()["runpod"]
            pool = router.providers["runpod"].pool_stats
    # runpod's full pool was tried once; cerebras's 500 got its retry round, as before.
    assert [(a.provider, a.kind) for a in info.value.attempts] == [
        ("runpod", "pool_exhausted"), ("cerebras", "server_error"), ("cerebras", "server_error")]
    assert failed == 2 and held.requests == 1
    assert stats.failures == 0 and pool.timeouts_total == 1 and pool.waits_total == 1
