"""A consumer that can take events at once sends a ``deliver`` into the stream: each read's events then reach it
from the socket's read callback, not through the generator; only a batch it refuses comes back through the
generator; a broken event, a silence and the end still reach the consumer's task, in order."""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

import orjson
import pytest

from llmroute import LLMRouter
from llmroute.errors import ProviderError

from ..conftest import provider
from .test_http import raw_server
from .test_stream_batches import DONE, END, Writes, event, make_provider, texts
from .test_limits import chunk


class Consumer:
    """Records what ``deliver`` took (and from which task) and what the generator yielded instead."""

    def __init__(self, refuse: set[int] | None = None, then: list[asyncio.Event] | None = None) -> None:
        self.refuse = refuse or set()  # the calls (0, 1, ...) to answer False
        self.then = then or []  # set one after each call: lets the upstream send its next read
        self.calls: list[tuple[list[str], bool, asyncio.Task[Any] | None]] = []
        self.yielded: list[list[str]] = []

    def deliver(self, batch: list[dict[str, Any]], payloads: list[bytes | None]) -> bool:
        n = len(self.calls)
        took = n not in self.refuse
        self.calls.append((texts(batch), took, asyncio.current_task()))
        if n < len(self.then):
            self.then[n].set()
        return took

    async def run(self, reads: Any) -> list[str]:
        first, _ = await anext(reads)
        got = texts(first)
        try:
            while True:
                batch, _ = await reads.asend(self.deliver)
                self.yielded.append(texts(batch))
                got += texts(batch)
        except StopAsyncIteration:
            pass
        return got

    @property
    def taken(self) -> list[str]:
        return [t for batch, took, _ in self.calls if took for t in batch]


def gates(n: int) -> dict[int, asyncio.Event]:
    return {i: asyncio.Event() for i in range(1, n)}


async def test_events_reach_a_consumer_that_takes_them_from_the_read_callback() -> None:
    gate = gates(4)
    upstream = Writes(chunk(event(0)), chunk(event(1) + event(2)), chunk(event(3)), END, gates=gate)
    server, url = await raw_server(upstream.handle)
    consumer = Consumer(then=[gate[2], gate[3]])
    async with server:
        p = make_provider(url)
        reads = p.stream_reads("/chat/completions", {"stream": True}, timeout_s=5)
        first, _ = await anext(reads)
        gate[1].set()  # the next read comes while the consumer waits with ``deliver`` sent in
        with pytest.raises(StopAsyncIteration):
            await reads.asend(consumer.deliver)  # nothing comes back through the generator: it was all taken
        await p.aclose()
    assert texts(first) == ["w0 "]
    assert [batch for batch, _, _ in consumer.calls] == [["w1 ", "w2 "], ["w3 "]]  # a read's events together
    assert all(task is None for _, _, task in consumer.calls)  # from the socket's callback, not from a task


async def test_a_refused_batch_comes_back_through_the_generator_and_pushing_goes_on_after() -> None:
    gate = gates(4)
    upstream = Writes(chunk(event(0)), chunk(event(1)), chunk(event(2)), END, gates=gate)
    server, url = await raw_server(upstream.handle)
    consumer = Consumer(refuse={0})
    async with server:
        p = make_provider(url)
        reads = p.stream_reads("/chat/completions", {"stream": True}, timeout_s=5)
        first, _ = await anext(reads)
        gate[1].set()
        refused, _ = await reads.asend(consumer.deliver)  # the client's socket was full: the task sends it
        gate[2].set()
        gate[3].set()
        with pytest.raises(StopAsyncIteration):
            await reads.asend(consumer.deliver)
        await p.aclose()
    assert texts(first) == ["w0 "] and texts(refused) == ["w1 "]
    assert [(batch, took) for batch, took, _ in consumer.calls] == [(["w1 "], False), (["w2 "], True)]


async def test_events_before_a_broken_one_are_delivered_then_its_error_reaches_the_task() -> None:
    gate = gates(2)
    upstream = Writes(chunk(event(0)), chunk(event(1) + event(2) + b"data: {not json\n\n" + event(3)), gates=gate)
    server, url = await raw_server(upstream.handle)
    consumer = Consumer()
    async with server:
        p = make_provider(url)
        reads = p.stream_reads("/chat/completions", {"stream": True}, timeout_s=5)
        await anext(reads)
        gate[1].set()
        with pytest.raises(ProviderError) as caught:
            await reads.asend(consumer.deliver)
        await p.aclose()
    assert caught.value.kind == "malformed"
    assert consumer.taken == ["w1 ", "w2 "]  # what came before the broken event, nothing after


async def test_a_silence_while_pushing_is_a_provider_timeout() -> None:
    stall = asyncio.Event()  # never set: after the first read the upstream says nothing
    upstream = Writes(chunk(event(0)), END, gates={1: stall})
    server, url = await raw_server(upstream.handle)
    async with server:
        p = make_provider(url)
        reads = p.stream_reads("/chat/completions", {"stream": True}, timeout_s=0.3)
        await anext(reads)
        with pytest.raises(ProviderError) as caught:
            await asyncio.wait_for(reads.asend(Consumer().deliver), 10)
        await p.aclose()
    assert caught.value.kind == "timeout"


async def test_a_compressed_stream_is_pulled_batch_by_batch_even_when_deliver_is_sent() -> None:
    """Its pieces must be inflated with a bound on each, which only the generator's loop does."""
    z = zlib.compressobj(wbits=31)
    first, rest = z.compress(event(0)) + z.flush(zlib.Z_SYNC_FLUSH), z.compress(event(1) + event(2) + DONE) + z.flush()
    gate = gates(2)
    upstream = Writes(chunk(first), chunk(rest) + b"0\r\n\r\n", gates=gate,
                      head=b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-encoding: gzip\r\n"
                           b"transfer-encoding: chunked\r\n\r\n")
    server, url = await raw_server(upstream.handle)
    consumer = Consumer()
    async with server:
        p = make_provider(url)
        reads = p.stream_reads("/chat/completions", {"stream": True}, timeout_s=5)
        got = texts((await anext(reads))[0])
        gate[1].set()
        batch, _ = await reads.asend(consumer.deliver)
        got += texts(batch)
        with pytest.raises(StopAsyncIteration):
            await reads.asend(consumer.deliver)
        await p.aclose()
    assert got == ["w0 ", "w1 ", "w2 "]
    assert all(task is not None for _, _, task in consumer.calls)  # offered from the generator's loop, if at all


async def test_a_routed_stream_counts_what_it_pushed_and_keeps_one_id_across_a_resume() -> None:
    """Text, usage and finish reason of pushed batches are the result's; after a resume the next provider's chunks
    get the first one's id, and lose the bytes they came as (they changed)."""
    gate = gates(3)
    usage = b'data: {"id": "r2", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}\n\n'
    broken = Writes(chunk(event(0, "Hello ")), chunk(event(1, "world")), chunk(b"data: {not json\n\n"), gates=gate)
    rescue_gate = asyncio.Event()
    rescue = Writes(chunk(event(0, ", again")), chunk(b"data: " + orjson.dumps({"id": "r2", "choices": [
        {"index": 0, "delta": {"content": "."}, "finish_reason": "stop"}]}) + b"\n\n" + usage) + END,
        gates={1: rescue_gate})
    broken_server, broken_url = await raw_server(broken.handle)
    rescue_server, rescue_url = await raw_server(rescue.handle)
    config = {"providers": {"cheap": provider(broken_url, "runpod"), "fast": provider(rescue_url, "cerebras")},
              "strategy": "cost_optimized"}
    pushed: list[tuple[list[dict[str, Any]], list[bytes | None]]] = []

    def deliver(batch: list[dict[str, Any]], payloads: list[bytes | None]) -> bool:
        pushed.append((batch, list(payloads)))
        for event_ in gate.values():
            event_.set()
        return True

    async with broken_server, rescue_server, LLMRouter(config=config, ledger=False) as router:
        stream = router.stream(prompt="hi", max_tokens=8, resume=True)
        batches = stream.raw_batches()
        first, _ = await anext(batches)
        gate[1].set()
        yielded = []
        with pytest.raises(StopAsyncIteration):
            while True:
                yielded.append(await batches.asend(deliver))
                rescue_gate.set()  # the next provider's first read went through: its second may come
    assert texts(first) == ["Hello "]
    # The next provider's first read opens its stream and comes through the generator; its second is pushed.
    assert [texts(b) for b, _ in yielded] == [[", again"]]
    assert [texts([c for c in b if c["choices"]]) for b, _ in pushed] == [["world"], ["."]]
    assert pushed[0][1][0] is not None  # an unchanged chunk keeps its bytes as received
    resumed_batch, resumed_payloads = pushed[-1]  # one id for the client, so not the bytes as received
    assert [c["id"] for c in [*yielded[0][0], *resumed_batch]] == [first[0]["id"]] * 3
    assert resumed_payloads == [None, None]
    assert stream.resumed == 1 and stream.result is not None
    assert stream.result.text == "Hello world, again."
    assert stream.result.finish_reason == "stop"
    assert stream.result.attempts[-1].completion_tokens == 2
