"""A consumer that can take events at once sends a ``deliver`` into the stream: each read's events then reach it
from the socket's read callback, not through the generator; only a batch it refuses comes back through the
generator; a broken event, a silence and the end still reach the consumer's task, in order."""

from __future__ import annotations

import asyncio
import gc
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

GZIP_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-encoding: gzip\r\n"
             b"transfer-encoding: chunked\r\n\r\n")


def contents(batch: list[dict[str, Any]]) -> list[str]:
    """The text of each chunk that has a choice (a usage chunk has none)."""
    return [c["choices"][0]["delta"].get("content") or "" for c in batch if c.get("choices")]


class Consumer:
    """Records what ``deliver`` was offered (and from which task, None for a read callback) and everything the
    consumer received, in order, whichever way it came."""

    def __init__(self, refuse: set[int] | None = None, then: list[asyncio.Event] | None = None) -> None:
        self.refuse = refuse or set()  # the calls (0, 1, ...) to answer False
        self.then = then or []  # set one after each call: lets the upstream send its next read
        self.calls: list[tuple[list[str], bool, asyncio.Task[Any] | None]] = []
        self.yielded: list[list[str]] = []
        self.received: list[str] = []

    def deliver(self, batch: list[dict[str, Any]], payloads: list[bytes | None]) -> bool:
        n = len(self.calls)
        took = n not in self.refuse
        self.calls.append((contents(batch), took, asyncio.current_task()))
        if took:
            self.received += contents(batch)
        if n < len(self.then):
            self.then[n].set()
        return took

    async def run(self, reads: Any, before_send: Any = None) -> str:
        """The stream through to its end, as a relay takes it; the text received."""
        first, _ = await anext(reads)
        self.received += contents(first)
        if before_send is not None:
            before_send()
        try:
            while True:
                batch, _ = await reads.asend(self.deliver)
                self.yielded.append(contents(batch))
                self.received += contents(batch)
        except StopAsyncIteration:
            pass
        return "".join(self.received)

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


async def test_a_compressed_stream_is_pulled_and_offered_from_the_task() -> None:
    """Its pieces must be inflated with a bound on each, which only the generator's loop does: it offers each batch to
    ``deliver`` from the consumer's task instead of from the read callback."""
    z = zlib.compressobj(wbits=31)
    first, rest = z.compress(event(0)) + z.flush(zlib.Z_SYNC_FLUSH), z.compress(event(1) + event(2) + DONE) + z.flush()
    gate = gates(2)
    upstream = Writes(chunk(first), chunk(rest) + b"0\r\n\r\n", gates=gate, head=GZIP_HEAD)
    server, url = await raw_server(upstream.handle)
    consumer = Consumer()
    async with server:
        p = make_provider(url)
        reads = p.stream_reads("/chat/completions", {"stream": True}, timeout_s=5)
        got = await consumer.run(reads, before_send=gate[1].set)
        await p.aclose()
    assert got == "w0 w1 w2 "
    assert consumer.calls and all(task is not None for _, _, task in consumer.calls)  # offered from the task


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


def gzip_reads(*reads: bytes) -> list[bytes]:
    """Each read's bytes compressed as one gzip stream goes on, flushed at each read's end."""
    z = zlib.compressobj(wbits=31)
    out = [z.compress(r) + z.flush(zlib.Z_SYNC_FLUSH) for r in reads[:-1]]
    return [*out, z.compress(reads[-1]) + z.flush()]


async def test_a_compressed_routed_stream_is_counted_whole_when_deliver_is_sent() -> None:
    """Pulled, its batches are offered to ``deliver`` first, so what the client gets is what is billed."""
    usage = b'data: {"id": "c1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}\n\n'
    finish = b"data: " + orjson.dumps({"id": "c1", "choices": [
        {"index": 0, "delta": {"content": "!"}, "finish_reason": "stop"}]}) + b"\n\n"
    parts = gzip_reads(event(0, "Hello "), event(1, "wide ") + event(2, "world") + finish + usage + DONE)
    gate = gates(2)
    upstream = Writes(chunk(parts[0]), chunk(parts[1]) + b"0\r\n\r\n", head=GZIP_HEAD, gates=gate)
    server, url = await raw_server(upstream.handle)
    config = {"providers": {"only": provider(url, "cerebras")}, "strategy": "cost_optimized"}
    consumer = Consumer()
    async with server, LLMRouter(config=config, ledger=False) as router:
        stream = router.stream(prompt="hi", max_tokens=8)
        got = await consumer.run(stream.raw_batches(), before_send=gate[1].set)
    assert got == "Hello wide world!"
    assert stream.result is not None and stream.result.text == "Hello wide world!"
    assert stream.result.finish_reason == "stop"
    assert stream.result.completion_tokens == 4  # the upstream's usage chunk, not an estimate


async def test_events_pulled_before_a_broken_one_are_counted_and_resumed_from() -> None:
    """A compressed read (so pulled, with ``deliver`` sent): a good event, then a broken one. The good one reaches
    the client and the bill, and the next provider is asked to continue after it."""
    parts = gzip_reads(event(0, "Hello "), event(1, "world") + b"data: {not json\n\n")
    gate = gates(2)
    broken = Writes(chunk(parts[0]), chunk(parts[1]), head=GZIP_HEAD, gates=gate)
    rescue = Writes(chunk(event(0, ", again")) + END)
    broken_server, broken_url = await raw_server(broken.handle)
    rescue_server, rescue_url = await raw_server(rescue.handle)
    config = {"providers": {"cheap": provider(broken_url, "runpod"), "fast": provider(rescue_url, "cerebras")},
              "strategy": "cost_optimized"}
    consumer = Consumer()
    async with broken_server, rescue_server, LLMRouter(config=config, ledger=False) as router:
        stream = router.stream(prompt="hi", max_tokens=8, resume=True)
        got = await consumer.run(stream.raw_batches(), before_send=gate[1].set)
    assert got == "Hello world, again"
    assert stream.result is not None and stream.result.text == "Hello world, again"
    assert {"role": "assistant", "content": "Hello world"} in rescue.requests[0]["messages"]


async def test_a_failure_of_deliver_is_the_consumers_not_the_providers() -> None:
    """It reaches the consumer as itself: no resume, no other provider asked, the provider not marked failed."""
    gate = gates(2)
    upstream = Writes(chunk(event(0)), chunk(event(1)), END, gates=gate)
    rescue = Writes(chunk(event(0, "other")) + END)
    server, url = await raw_server(upstream.handle)
    rescue_server, rescue_url = await raw_server(rescue.handle)
    config = {"providers": {"cheap": provider(url, "runpod"), "fast": provider(rescue_url, "cerebras")},
              "strategy": "cost_optimized"}

    def deliver(batch: list[dict[str, Any]], payloads: list[bytes | None]) -> bool:
        raise ConnectionResetError("the client went away")

    async with server, rescue_server, LLMRouter(config=config, ledger=False) as router:
        stream = router.stream(prompt="hi", max_tokens=8, resume=True)
        batches = stream.raw_batches()
        await anext(batches)
        gate[1].set()
        with pytest.raises(ConnectionResetError):
            await batches.asend(deliver)
    assert stream.resumed == 0 and rescue.requests == []
    assert all(a.kind != "stream_interrupted" for a in stream.attempts)


async def test_a_finished_pushed_stream_leaves_no_reference_cycle() -> None:
    """What counts a pushed stream (its text, the client's writer through ``deliver``) is freed when it ends, by
    reference counting: a cycle would keep it until a full collection, which long streams reach late."""
    gate = gates(3)
    upstream = Writes(chunk(event(0)), chunk(event(1)), chunk(event(2)), END, gates=gate)
    server, url = await raw_server(upstream.handle)
    config = {"providers": {"only": provider(url, "cerebras")}, "strategy": "cost_optimized"}

    class Writer:
        def deliver(self, batch: list[dict[str, Any]], payloads: list[bytes | None]) -> bool:
            for g in gate.values():
                g.set()
            return True

    gc.collect()
    gc.disable()
    try:
        async with server, LLMRouter(config=config, ledger=False) as router:
            stream = router.stream(prompt="hi", max_tokens=8)
            batches = stream.raw_batches()
            await anext(batches)
            gate[1].set()
            with pytest.raises(StopAsyncIteration):
                await batches.asend(Writer().deliver)
            assert stream.result is not None and stream.result.text == "w0 w1 w2 "
            del batches
            kept = [type(o).__name__ for o in gc.get_objects() if type(o).__name__ in ("Tally", "Writer")]
    finally:
        gc.enable()
    assert kept == []
