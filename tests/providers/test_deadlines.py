"""An answer's deadline is watched by the pool (one timer for every answer awaited), and a connection slot is
taken without awaiting when one is free: the per-request timer and semaphore were most of the client's CPU."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from llmroute.config import ProviderConfig
from llmroute.errors import ProviderTimeout
from llmroute.providers import OpenAICompatProvider
from llmroute.providers.http import ConnectionPool

from .test_pool import ANSWER

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


class Upstream:
    """Keep-alive: answers at once, except a request to ``/silent/...``, which it reads and never answers."""

    def __init__(self) -> None:
        self.base_url = ""
        self.hung_up = 0
        """Connections of silent requests that the client closed."""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length"))
                await reader.readexactly(length)
                if b" /v1/silent/" in head.split(b"\r\n")[0]:
                    await reader.read()  # until the client hangs up
                    self.hung_up += 1
                    return
                body = orjson.dumps(ANSWER)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                             % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    served = Upstream()
    server = await asyncio.start_server(served.handle, "127.0.0.1", 0)
    served.base_url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    async with server:
        yield served


def provider(base_url: str, **fields: Any) -> OpenAICompatProvider:
    return OpenAICompatProvider(ProviderConfig(base_url=base_url, model="m", price_per_m={"input": 1, "output": 1}, **fields))


async def test_answers_on_a_warm_connection_schedule_no_timer_each(upstream: Upstream,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    p = provider(upstream.base_url)
    await p.request("/chat/completions", BODY, timeout_s=5)  # opens the connection (its connect is timed)
    loop = asyncio.get_running_loop()
    timers: list[float] = []
    call_at = loop.call_at

    def counting_call_at(when: float, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        timers.append(when)
        return call_at(when, *args, **kwargs)

    monkeypatch.setattr(loop, "call_at", counting_call_at)
    for _ in range(20):
        answer = await p.request("/chat/completions", BODY, timeout_s=5)
        assert answer.body["choices"][0]["message"]["content"] == "ok"
    monkeypatch.undo()
    await p.aclose()
    assert len(timers) <= 1  # at most the watcher's one timer, not one per request
    assert p.pool_stats.in_use == 0


async def test_silent_requests_time_out_each_at_its_own_deadline_and_hang_up(upstream: Upstream) -> None:
    p = provider(upstream.base_url)
    loop = asyncio.get_running_loop()
    ended: dict[float, float] = {}

    async def ask(timeout_s: float) -> None:
        started = loop.time()
        with pytest.raises(ProviderTimeout) as caught:
            await p.request("/silent/chat/completions", BODY, timeout_s=timeout_s)
        assert caught.value.kind == "timeout"
        ended[timeout_s] = loop.time() - started

    await asyncio.gather(ask(0.4), ask(0.1), ask(0.2))
    assert sorted(ended, key=ended.__getitem__) == [0.1, 0.2, 0.4]  # each one's own deadline, in order
    assert all(waited >= timeout_s for timeout_s, waited in ended.items())
    answer = await p.request("/chat/completions", BODY, timeout_s=5)  # the pool still serves, nothing leaked
    assert answer.status == 200 and p.pool_stats.in_use == 0
    for _ in range(100):  # the upstream notices the hang-ups as its reads end
        if upstream.hung_up == 3:
            break
        await asyncio.sleep(0.01)
    assert upstream.hung_up == 3
    await p.aclose()


async def test_a_timeout_without_a_watched_answer_is_still_a_timeout(upstream: Upstream) -> None:
    """A deadline shorter than the watcher's timer moves the timer earlier."""
    p = provider(upstream.base_url)
    slow = asyncio.create_task(p.request("/silent/chat/completions", BODY, timeout_s=30))
    await asyncio.sleep(0.05)  # the long deadline is the one the timer is set for
    with pytest.raises(ProviderTimeout):
        await p.request("/silent/chat/completions", BODY, timeout_s=0.05)
    slow.cancel()
    await asyncio.gather(slow, return_exceptions=True)
    await p.aclose()


async def test_a_slot_handed_to_a_cancelled_waiter_goes_to_the_next(upstream: Upstream) -> None:
    pool = ConnectionPool(upstream.base_url, max_connections=1)
    assert pool.try_slot() and not pool.try_slot()
    first = asyncio.create_task(pool.acquire_slot(None))
    second = asyncio.create_task(pool.acquire_slot(None))
    await asyncio.sleep(0)  # both queued
    response = await pool.post("/chat/completions", b"{}", slot_held=True)  # gives the slot to `first`...
    first.cancel()  # ...which is cancelled before it runs
    await asyncio.gather(first, return_exceptions=True)
    await asyncio.wait_for(second, 5)  # the slot went on to `second`
    assert response.status == 200 and first.cancelled()
    assert pool.stats.in_use == 1 and pool.stats.waiting == 0 and not pool.try_slot()
    await pool.aclose()
