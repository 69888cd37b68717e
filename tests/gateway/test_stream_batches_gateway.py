"""The events one upstream read brings reach the client in order and intact, framed as SSE."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from aiohttp.test_utils import TestServer

from llmroute import LLMRouter
from llmroute.gateway.app import Gateway

from ..conftest import provider
from ..providers.test_http import raw_server
from ..providers.test_limits import chunk
from ..providers.test_stream_batches import END, Writes, event

USAGE = b'data: {"id": "c1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 6}}\n\n'
BODY = {"model": "any", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def one_read_gateway() -> AsyncIterator[tuple[Writes, str]]:
    """The gateway's app in this process, in front of an upstream that sends six events, the usage chunk and
    [DONE] in one write."""
    upstream = Writes(chunk(b"".join(event(n) for n in range(6)) + USAGE) + END)
    server, url = await raw_server(upstream.handle)
    config = {"providers": {"only": provider(url, "cerebras")}, "strategy": "cost_optimized"}
    async with server, LLMRouter(config=config, ledger=False) as router:
        async with TestServer(Gateway(router).app(), host="127.0.0.1") as gateway:
            yield upstream, str(gateway.make_url("/v1/chat/completions"))


@pytest.mark.parametrize("include_usage", [False, True])
async def test_the_events_of_one_read_reach_the_client_in_order(one_read_gateway: tuple[Writes, str],
                                                                include_usage: bool) -> None:
    _, url = one_read_gateway
    body = {**BODY, "stream_options": {"include_usage": include_usage}}
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(url, json=body)  # httpx refuses a broken chunked framing
    events = [e for e in response.content.split(b"\n\n") if e]
    assert all(e.startswith(b"data: ") for e in events)
    assert events[-1] == b"data: [DONE]"
    chunks = [orjson.loads(e[6:]) for e in events[:-1]]
    if include_usage:  # the usage chunk, passed on only to a client that asked for it
        assert chunks.pop()["usage"] == {"prompt_tokens": 3, "completion_tokens": 6}
    assert not any("usage" in c for c in chunks)
    assert [c["choices"][0]["delta"]["content"] for c in chunks] == [f"w{n} " for n in range(6)]
