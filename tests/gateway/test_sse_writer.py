"""Relayed events go straight to the client's socket while that cannot wait, framed as aiohttp would frame them;
a write that can wait still goes through aiohttp under ``write_timeout_s`` (tests/gateway/test_stream_timeouts.py)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from llmroute import LLMRouter
from llmroute.gateway.app import Gateway

from ..providers.test_http import raw_server
from ..providers.test_stream_watchdog import Scripted, config

BODY = {"model": "any", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def inproc_gateway() -> AsyncIterator[tuple[Scripted, str]]:
    """The gateway's app in this process (so a test can look inside it), in front of a scripted upstream."""
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


def texts(body: bytes) -> list[Any]:
    events = [line[len(b"data: "):] for line in body.split(b"\n\n") if line]
    assert events[-1] == b"[DONE]"
    return [orjson.loads(e)["choices"][0]["delta"]["content"] for e in events[:-1]]


async def test_events_that_cannot_wait_skip_aiohttps_write_layers(
        inproc_gateway: tuple[Scripted, str], monkeypatch: pytest.MonkeyPatch) -> None:
    upstream, url = inproc_gateway
    upstream.count = 200
    through_aiohttp = 0
    write = web.StreamResponse.write

    async def counting_write(self: web.StreamResponse, data: Any) -> None:
        nonlocal through_aiohttp
        through_aiohttp += 1
        await write(self, data)

    monkeypatch.setattr(web.StreamResponse, "write", counting_write)
    async with httpx.AsyncClient(timeout=30) as client, client.stream("POST", url, json=BODY) as response:
        body = await response.aread()  # httpx undoes the chunked framing, and refuses a broken one
    assert response.status_code == 200 and response.headers["transfer-encoding"] == "chunked"
    assert texts(body) == [f"w{n} " for n in range(200)]
    assert through_aiohttp < 10, f"{through_aiohttp} of 201 writes went through StreamResponse.write"


async def test_an_http_1_0_client_gets_the_events_unframed(inproc_gateway: tuple[Scripted, str]) -> None:
    _, url = inproc_gateway
    host, port = url.split("/")[2].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    payload = orjson.dumps(BODY)
    writer.write(b"POST /v1/chat/completions HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload))
    answer = await asyncio.wait_for(reader.read(), 30)  # HTTP/1.0: the body ends when the connection does
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.") and b" 200 " in head.split(b"\r\n")[0]
    assert b"transfer-encoding" not in head.lower()
    assert texts(body) == [f"w{n} " for n in range(10)]


async def test_a_relayed_stream_leaves_no_more_cycles_however_many_events_it_had(
        inproc_gateway: tuple[Scripted, str]) -> None:
    """The serving process keeps the cyclic collector rare (server.tune_collector), which is safe only because
    the stream path makes no reference cycles per event: reference counting frees what each event made."""
    upstream, url = inproc_gateway
    body = {**BODY, "stream_options": {"include_usage": True}}

    async def cycles_left_by_a_stream_of(events: int) -> int:
        upstream.count = events
        gc.collect()
        async with client.stream("POST", url, json=body) as response:
            assert response.status_code == 200
            received = await response.aread()
        assert len(texts(received)) == events
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
