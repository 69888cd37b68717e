"""A chunk the gateway does not change reaches the client as the upstream's bytes; a changed one (usage hidden,
id rewritten after a resume) is encoded again; nothing an upstream sends can break the client's SSE framing."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import openai
import orjson
from aiohttp.test_utils import TestServer

from llmroute import LLMRouter
from llmroute.gateway.app import Gateway

from ..conftest import provider
from ..providers.test_http import raw_server
from ..providers.test_limits import chunk
from ..providers.test_stream_batches import END, Writes

BODY = {"model": "any", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
# Valid JSON the way no encoder writes it: spaces, key order, an escaped é, an exponent.
ODD = (b'{ "choices" : [ {"finish_reason":null, "delta" : {"content":"caf\\u00e9 "},"index":0} ],'
       b' "id":"c-odd", "object": "chat.completion.chunk", "score": 1.0e0 }')
PLAIN = b'{"id":"c-odd","choices":[{"index":0,"delta":{"content":"au lait"}}]}'
# The last chunk with both the answer's end and the usage, as some providers send it.
WITH_USAGE = (b'{"id": "c-odd", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],'
              b' "usage": {"prompt_tokens": 3, "completion_tokens": 2}}')

@asynccontextmanager
async def gateway(*upstreams: Writes) -> AsyncIterator[str]:
    """The gateway's app in this process before ``upstreams``, tried in the order given; yields its /v1 URL."""
    servers, names = [], {}
    profiles = ["runpod", "cerebras"]  # cost_optimized: the cheaper first
    for n, upstream in enumerate(upstreams):
        server, url = await raw_server(upstream.handle)
        servers.append(server)
        names[f"p{n}"] = provider(url, profiles[n])
    config = {"providers": names, "strategy": "cost_optimized"}
    try:
        async with LLMRouter(config=config, ledger=False) as router, \
                TestServer(Gateway(router).app(), host="127.0.0.1") as gateway_server:
            yield str(gateway_server.make_url("/v1"))
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()


def sse(*payloads: bytes, sep: bytes = b"data: ") -> bytes:
    return b"".join(sep + p + b"\n\n" for p in payloads)


async def post(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> list[bytes]:
    """The client's events, each checked to be one ``data:`` line; [DONE] last."""
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(url + "/chat/completions", json=body, headers=headers)
    assert response.status_code == 200
    assert b"\r" not in response.content
    assert response.content.endswith(b"\n\n")
    events = response.content[:-2].split(b"\n\n")
    for event in events:
        assert event.startswith(b"data: ") and b"\n" not in event, event
    assert events[-1] == b"data: [DONE]"
    return [e[6:] for e in events[:-1]]


async def test_an_unchanged_chunk_reaches_the_client_byte_for_byte() -> None:
    upstream = Writes(chunk(sse(ODD) + sse(PLAIN, sep=b"data:") + sse(WITH_USAGE)) + END)
    async with gateway(upstream) as url:
        payloads = await post(url, {**BODY, "stream_options": {"include_usage": True}})
    assert payloads == [ODD, PLAIN, WITH_USAGE]  # the usage is the client's: nothing to change


async def test_a_chunk_whose_usage_is_hidden_is_encoded_again_and_the_rest_pass_as_sent() -> None:
    upstream = Writes(chunk(sse(ODD) + sse(WITH_USAGE)) + END)
    async with gateway(upstream) as url:
        payloads = await post(url, BODY)  # no include_usage: the usage is hidden
    assert payloads[0] == ODD
    assert len(payloads) == 2 and b"usage" not in payloads[1]
    expected = orjson.loads(WITH_USAGE)
    del expected["usage"]
    assert payloads[1] == orjson.dumps(expected)


async def test_an_event_of_several_data_lines_is_one_valid_event_for_the_openai_client() -> None:
    # The SSE spec joins an event's data lines with "\n": JSON whitespace here, a line end on the client's side.
    multi = b'data: {"id":"c-m","choices":[{"index":0,\ndata: "delta":{"content":"two lines"}}]}\n\n'
    upstream = Writes(chunk(sse(PLAIN) + multi) + END)
    async with gateway(upstream) as url:
        payloads = await post(url, BODY)
        assert payloads == [PLAIN, orjson.dumps(orjson.loads(multi.replace(b"data: ", b"")))]
        client = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0)
        stream = await client.chat.completions.create(model="any", messages=[{"role": "user", "content": "hi"}],
                                                      stream=True)
        texts = [c.choices[0].delta.content async for c in stream]
        await client.close()
    assert texts == ["au lait", "two lines"]


async def test_after_a_resume_the_rewritten_ids_are_the_streams_and_the_chunks_encoded_again() -> None:
    first = b'{"id": "c-first", "choices": [{"index": 0, "delta": {"content": "Hello "}}]}'
    broken = Writes(chunk(sse(first) + b"data: {not json\n\n"))
    rescue_events = [b'{"id": "c-other", "choices": [{"index": 0, "delta": {"content": "world"}}]}',
                     b'{"choices": [{"index": 0, "delta": {"content": "!"}}]}',  # no id at all
                     b'{"id": "c-first", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}']
    rescue = Writes(chunk(sse(*rescue_events)) + END)
    async with gateway(broken, rescue) as url:
        payloads = await post(url, BODY, headers={"x-llmroute-resume": "1"})
    assert len(rescue.requests) == 1  # it did resume
    assert payloads[0] == first  # before the resume: as sent
    chunks = [orjson.loads(p) for p in payloads]
    assert [c["id"] for c in chunks] == ["c-first"] * 4
    assert [c["choices"][0]["delta"].get("content") for c in chunks] == ["Hello ", "world", "!", None]
    assert payloads[1:3] == [orjson.dumps(c) for c in chunks[1:3]]  # changed: encoded again
    assert payloads[3] == rescue_events[2]  # already the stream's id: unchanged, as sent


async def test_an_upstream_cannot_break_the_clients_framing() -> None:
    # Data lines ended by bare "\r", an empty one among them: joined, the payload holds "\n\n". Passed on raw,
    # the client would see an event end there and a line of the upstream's choosing start.
    attack = (b'data: {"id":"c-x",\rdata:\rdata: "choices":[{"index":0,"delta":{"content":"safe"}}],\r'
              b'data: "x":"\\n\\ndata: {\\"injected\\": true}"}\r\r')
    upstream = Writes(chunk(sse(PLAIN) + attack + sse(PLAIN)) + END)
    async with gateway(upstream) as url:
        payloads = await post(url, BODY)  # checks every event is one data line, no "\r" anywhere
    assert len(payloads) == 3
    assert payloads[0] == payloads[2] == PLAIN
    chunk_x = orjson.loads(payloads[1])
    assert chunk_x["choices"][0]["delta"]["content"] == "safe"
    assert chunk_x["x"] == '\n\ndata: {"injected": true}'  # stays a string's escaped text



async def test_a_streams_first_read_is_not_kept_for_its_whole_life() -> None:
    """Once the second read went out, nothing holds the first one's chunks (1000 open streams held 1000 of them)."""
    marker = "c-first-read-only"
    second, last = asyncio.Event(), asyncio.Event()
    first = b'{"id": "%s", "choices": [{"index": 0, "delta": {"content": "Hello "}}]}' % marker.encode()
    upstream = Writes(chunk(sse(first)), chunk(sse(PLAIN)), END, gates={1: second, 2: last})
    async with gateway(upstream) as url, httpx.AsyncClient(timeout=30) as client, \
            client.stream("POST", url + "/chat/completions", json=BODY) as response:
        pieces, received = response.aiter_bytes(), b""
        async for piece in pieces:
            received += piece
            second.set()  # the first read reached the client: the upstream sends the second on its own
            if b"au lait" in received:  # the second read reached the client
                break
        gc.collect()
        kept = [o for o in gc.get_objects() if type(o) is dict and o.get("id") == marker]
        last.set()
        async for piece in pieces:
            received += piece
    assert kept == []
    assert received.endswith(b"data: [DONE]\n\n")
