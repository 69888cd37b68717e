"""A stream is read per network read, not per event: the events one read brings come out together, in order
and intact, whatever the byte chunking; what came before a broken event is kept; memory stays bounded when a
compressed read inflates to many events."""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

import orjson
import pytest

from llmroute import LLMRouter
from llmroute.config import ProviderConfig
from llmroute.errors import ProviderError
from llmroute.providers import OpenAICompatProvider

from ..conftest import provider
from .test_http import raw_server, read_request
from .test_limits import SSE_HEAD, chunk

DONE = b"data: [DONE]\n\n"
END = chunk(DONE) + b"0\r\n\r\n"


def event(n: int, text: str | None = None) -> bytes:
    content = f"w{n} " if text is None else text
    return b"data: " + orjson.dumps({"id": "c1", "choices": [{"index": 0, "delta": {"content": content}}]}) + b"\n\n"


def texts(chunks: list[dict[str, Any]]) -> list[str]:
    return [c["choices"][0]["delta"]["content"] for c in chunks]


def make_provider(url: str, **fields: Any) -> OpenAICompatProvider:
    return OpenAICompatProvider(ProviderConfig(base_url=url, model="m", price_per_m={"input": 1, "output": 1},
                                               **fields))


class Writes:
    """Answers each request with ``head`` then ``writes`` (bytes, each one ``write``); before a write, waits
    for ``gates[i]`` if there is one (set by the test when the client has seen what came before)."""

    def __init__(self, *writes: bytes, head: bytes = SSE_HEAD, gates: dict[int, asyncio.Event] | None = None) -> None:
        self.head, self.writes, self.gates = head, writes, gates or {}
        self.requests: list[dict[str, Any]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: one request after another on the connection
                try:
                    request = await read_request(reader)
                except asyncio.IncompleteReadError:
                    break
                self.requests.append(orjson.loads(request.split(b"\r\n\r\n", 1)[1]))
                writer.write(self.head)
                for n, data in enumerate(self.writes):
                    if n in self.gates:
                        await self.gates[n].wait()
                    writer.write(data)
                    await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


async def test_the_events_of_one_read_come_out_together_in_order_and_intact() -> None:
    upstream = Writes(chunk(b"".join(event(n) for n in range(5))) + END)
    server, url = await raw_server(upstream.handle)
    async with server:
        p = make_provider(url)
        batches = [b async for b, _ in p.stream_reads("/chat/completions", {"stream": True}, timeout_s=5)]
        await p.aclose()
    assert [texts(b) for b in batches] == [[f"w{n} " for n in range(5)]]  # one read: one batch of five


async def test_a_read_that_splits_an_event_joins_it_with_the_next_read() -> None:
    second = event(1, "two \u00e9\u4e2d ")  # split inside a multi-byte character, too
    cut = second.index("\u4e2d".encode()) + 1
    seen_first = asyncio.Event()
    upstream = Writes(chunk(event(0) + second[:cut]), chunk(second[cut:] + event(2)) + END, gates={1: seen_first})
    server, url = await raw_server(upstream.handle)
    async with server:
        p = make_provider(url)
        batches = []
        async for batch, _ in p.stream_reads("/chat/completions", {"stream": True}, timeout_s=5):
            batches.append(texts(batch))
            seen_first.set()  # only now does the upstream send the rest of the split event
        await p.aclose()
    assert batches[0] == ["w0 "]  # the half event waited for its end
    assert [t for b in batches for t in b] == ["w0 ", "two \u00e9\u4e2d ", "w2 "]


async def test_route_stream_gives_a_reads_chunks_one_by_one_or_as_a_batch() -> None:
    one_read = chunk(b"".join(event(n) for n in range(4))) + END
    server, url = await raw_server(Writes(one_read).handle)
    config = {"providers": {"only": provider(url, "cerebras")}, "strategy": "cost_optimized"}
    async with server, LLMRouter(config=config, ledger=False) as router:
        stream = router.stream(prompt="hi", max_tokens=8)
        one_by_one = [c async for c in stream]
        batched = router.stream(prompt="hi", max_tokens=8)
        batches = [b async for b, _ in batched.raw_batches()]
    assert texts(one_by_one) == [f"w{n} " for n in range(4)]
    assert [texts(b) for b in batches] == [[f"w{n} " for n in range(4)]]
    assert stream.result is not None and batched.result is not None
    assert stream.result.text == batched.result.text == "w0 w1 w2 w3 "


async def test_events_before_a_broken_one_in_the_same_read_are_kept_and_resumed_from() -> None:
    """One read: two good events, then one that is not JSON. The two reach the consumer, and the next provider
    is asked to continue from their text."""
    broken = Writes(chunk(event(0, "Hello ") + event(1, "world") + b"data: {not json\n\n"))
    rescue = Writes(chunk(event(0, ", again.")) + END)
    broken_server, broken_url = await raw_server(broken.handle)
    rescue_server, rescue_url = await raw_server(rescue.handle)
    config = {"providers": {"cheap": provider(broken_url, "runpod"), "fast": provider(rescue_url, "cerebras")},
              "strategy": "cost_optimized"}
    async with broken_server, rescue_server, LLMRouter(config=config, ledger=False) as router:
        stream = router.stream(prompt="hi", max_tokens=8, resume=True)
        received = texts([c async for c in stream])
    assert received == ["Hello ", "world", ", again."]
    assert stream.resumed == 1
    continued = rescue.requests[0]["messages"]
    assert {"role": "assistant", "content": "Hello world"} in continued


async def test_a_compressed_read_that_inflates_to_many_events_comes_in_bounded_batches() -> None:
    count = 20_000  # about 1.5 MB of events from a few kB on the wire, in one write
    z = zlib.compressobj(wbits=31)
    body = z.compress(b"".join(event(n) for n in range(count)) + DONE) + z.flush()
    upstream = Writes(body, head=b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-encoding: gzip\r\n"
                                 b"content-length: %d\r\n\r\n" % len(body))
    server, url = await raw_server(upstream.handle)
    async with server:
        p = make_provider(url)
        sizes, got = [], []
        async for batch, _ in p.stream_reads("/chat/completions", {"stream": True}, timeout_s=5):
            sizes.append(sum(len(orjson.dumps(e)) for e in batch))
            got.extend(texts(batch))
        await p.aclose()
    assert got == [f"w{n} " for n in range(count)]
    assert len(sizes) > 1 and max(sizes) <= 2 * 64 * 1024, sizes  # a batch, not the whole inflated read


async def test_a_broken_event_alone_in_its_read_still_fails_the_stream() -> None:
    server, url = await raw_server(Writes(chunk(b'data: {"error": {"message": "overloaded"}}\n\n')).handle)
    async with server:
        p = make_provider(url)
        with pytest.raises(ProviderError) as caught:
            async for _ in p.stream_reads("/chat/completions", {"stream": True}, timeout_s=5):
                pass
        await p.aclose()
    assert caught.value.kind == "error_in_stream"
