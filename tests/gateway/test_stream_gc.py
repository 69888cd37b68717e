"""The serving process keeps the cyclic collector rare, which is safe only because the stream path makes no
reference cycles per event: memory stays bounded by reference counting, however long a stream runs."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web

from llmroute import LLMRouter
from llmroute.gateway.app import Gateway
from llmroute.gateway.server import GC_THRESHOLDS, tune_collector

from ..providers.test_http import raw_server
from ..providers.test_stream_watchdog import Scripted, config


def test_serving_freezes_start_up_objects_and_raises_the_collectors_thresholds() -> None:
    before = gc.get_threshold()
    try:
        tune_collector()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert GC_THRESHOLDS[0] > before[0]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[Scripted, str]]:
    upstream = Scripted(count=10)
    server, url = await raw_server(upstream.handle)
    async with server, LLMRouter(config=config(url, 30), ledger=False) as router:
        runner = web.AppRunner(Gateway(router).app(), handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            yield upstream, f"http://127.0.0.1:{runner.addresses[0][1]}/v1/chat/completions"
        finally:
            await runner.cleanup()


async def test_a_relayed_stream_leaves_no_more_cycles_however_many_events_it_had(
        gateway: tuple[Scripted, str]) -> None:
    upstream, url = gateway
    body = {"model": "any", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "hi"}]}

    async def cycles_left_by_a_stream_of(events: int) -> int:
        upstream.count = events
        gc.collect()
        async with client.stream("POST", url, json=body) as response:
            assert response.status_code == 200
            received = b"".join([piece async for piece in response.aiter_bytes()])
        assert received.count(b"data: ") == events + 1  # and [DONE]
        return gc.collect()  # what only the collector could free: objects in reference cycles

    enabled = gc.isenabled()
    gc.disable()
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            await cycles_left_by_a_stream_of(10)  # warm: first-use caches
            short = await cycles_left_by_a_stream_of(10)
            long = await cycles_left_by_a_stream_of(1_000)
    finally:
        if enabled:
            gc.enable()
    assert long <= short + 20, f"{short} objects in cycles after 10 events, {long} after 1,000"
