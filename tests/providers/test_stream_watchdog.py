"""The per-stream silence bound: an event must arrive within ``timeout_s`` of the last one, however long the
stream lasts, and the bound costs a timer per silence, not one per event."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from llmroute import LLMRouter
from llmroute.errors import StreamInterrupted

from ..conftest import provider
from .test_http import raw_server, read_request
from .test_limits import SSE_HEAD, chunk

DONE = chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"


def event(n: int) -> bytes:
    return chunk(b"data: " + orjson.dumps({"id": "c1", "choices": [{"index": 0, "delta": {"content": f"w{n} "}}]}) + b"\n\n")


class Scripted:
    """Sends ``count`` events ``gap_s`` apart, then ``[DONE]`` unless ``hang``; then waits for ``release``."""

    def __init__(self, count: int, gap_s: float = 0.0, hang: bool = False) -> None:
        self.count, self.gap_s, self.hang = count, gap_s, hang
        self.release = asyncio.Event()
        self.dropped = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while not reader.at_eof():  # keep-alive: one request after another on the connection
                try:
                    await read_request(reader)
                except asyncio.IncompleteReadError:
                    break
                writer.write(SSE_HEAD)
                for n in range(self.count):
                    writer.write(event(n))
                    await writer.drain()
                    if self.gap_s:
                        await asyncio.sleep(self.gap_s)  # the upstream's cadence, the thing under test
                if self.hang:
                    await asyncio.wait([asyncio.ensure_future(self.release.wait()),
                                        asyncio.ensure_future(reader.read())], return_when=asyncio.FIRST_COMPLETED)
                    break
                writer.write(DONE)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self.dropped.set()
            writer.close()


def config(url: str, timeout_s: float) -> dict[str, Any]:
    return {"providers": {"only": provider(url, "cerebras", timeout_s=timeout_s)}, "strategy": "cost_optimized"}


async def test_a_stream_longer_than_timeout_s_whose_events_keep_coming_completes() -> None:
    upstream = Scripted(count=12, gap_s=0.05)  # 0.6 s in all, each silence far inside 0.25 s
    server, url = await raw_server(upstream.handle)
    async with server, LLMRouter(config=config(url, 0.25), ledger=False) as router:
        stream = router.stream(prompt="hi", max_tokens=8)
        texts = [c["choices"][0]["delta"]["content"] async for c in stream]
    assert texts == [f"w{n} " for n in range(12)]
    assert stream.result is not None and stream.result.provider == "only"


async def test_silence_after_some_events_times_out_and_drops_the_upstream() -> None:
    upstream = Scripted(count=3, hang=True)
    server, url = await raw_server(upstream.handle)
    async with server, LLMRouter(config=config(url, 0.3), ledger=False) as router:
        stream = router.stream(prompt="hi", max_tokens=8)
        received = []
        with pytest.raises(StreamInterrupted) as caught:
            async with asyncio.timeout(30):  # only a guard: the silence bound must end it long before
                async for piece in stream:
                    received.append(piece)
        await asyncio.wait_for(upstream.dropped.wait(), 30)
    assert len(received) == 3
    assert "timed out" in caught.value.message
    assert stream.attempts[-1].kind == "stream_interrupted"


async def test_the_consumers_time_with_an_event_does_not_count() -> None:
    upstream = Scripted(count=3)
    server, url = await raw_server(upstream.handle)
    async with server, LLMRouter(config=config(url, 0.2), ledger=False) as router:
        stream = router.stream(prompt="hi", max_tokens=8)
        received = []
        async for piece in stream:
            received.append(piece)
            await asyncio.sleep(0.5)  # a slow consumer (a slow client), well past timeout_s per event
    assert len(received) == 3 and stream.result is not None


async def test_a_cancel_from_outside_stays_a_cancel() -> None:
    """The client going away while the stream waits on its upstream is a cancellation, not a provider timeout."""
    upstream = Scripted(count=1, hang=True)
    server, url = await raw_server(upstream.handle)
    async with server, LLMRouter(config=config(url, 30), ledger=False) as router:
        stream = router.stream(prompt="hi", max_tokens=8)
        first = asyncio.Event()

        async def consume() -> None:
            async for _ in stream:
                first.set()

        task = asyncio.create_task(consume())
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(upstream.dropped.wait(), 30)
    assert stream.attempts[-1].kind != "timeout"


async def test_a_flowing_stream_arms_a_timer_per_silence_not_per_event(monkeypatch: pytest.MonkeyPatch) -> None:
    """200 events in a burst: the silence bound schedules a handful of timers, where a timeout per event
    scheduled one for every read."""
    upstream = Scripted(count=200)
    server, url = await raw_server(upstream.handle)
    loop = asyncio.get_running_loop()
    timers = 0
    call_at = loop.call_at

    def counting_call_at(when: float, callback: Any, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        nonlocal timers
        timers += 1
        return call_at(when, callback, *args, **kwargs)

    async with server, LLMRouter(config=config(url, 30), ledger=False) as router:
        stream = router.stream(prompt="hi", max_tokens=8)
        chunks = stream.__aiter__()
        await anext(chunks)  # the stream is open: count from here
        monkeypatch.setattr(loop, "call_at", counting_call_at)
        rest = [c async for c in chunks]
        monkeypatch.undo()
    assert len(rest) == 199
    assert timers < 10, f"{timers} timers for 199 events"
