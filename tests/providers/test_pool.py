"""A full connection pool is llmroute's queue, not the provider's failure; a header HTTP cannot carry is the
caller's error, refused before any provider is called."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from llmroute import ClientRequestError, LLMRouter
from llmroute.errors import PoolExhausted
from llmroute.providers.http import InvalidHeader, encode_headers

ANSWER = {"id": "x", "object": "chat.completion", "model": "m", "usage": {"prompt_tokens": 3, "completion_tokens": 1},
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}


@dataclass
class HeldUpstream:
    """Answers only when told to: a slow provider whose one connection is busy for as long as a test wants."""

    base_url: str = ""
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    requests: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        self.requests += 1
        self.arrived.set()
        await self.release.wait()
        body = orjson.dumps(ANSWER)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                     b"connection: close\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()


@pytest.fixture
async def held() -> AsyncIterator[HeldUpstream]:
    upstream = HeldUpstream()
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    upstream.base_url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    async with server:
        yield upstream
        upstream.release.set()


def one_connection(seed_config: dict[str, Any], base_url: str) -> dict[str, Any]:
    runpod = seed_config["providers"]["runpod"]
    runpod.update(base_url=base_url, max_connections=1, pool_timeout_s=0.2, timeout_s=10,
                  price_per_m={"input": 0.01, "output": 0.01}, breaker={"failures": 1})
    seed_config["strategy"] = "cost_optimized"
    return seed_config


async def test_waiting_for_a_slot_is_pool_exhausted_not_a_timeout(seed_config: dict[str, Any], held: HeldUpstream) -> None:
    async with LLMRouter(config=one_connection(seed_config, held.base_url), ledger=False) as router:
        first = asyncio.create_task(router.generate("hi", max_tokens=5))
        await held.arrived.wait()  # runpod's only connection is now busy
        second = await router.generate("hi", max_tokens=5)
        held.release.set()
        answered = await first
        stats = router.state.snapshot()["runpod"]
        breaker = router.state.breaker("runpod").state
    assert answered.provider == "runpod" and not answered.fallback
    assert second.provider == "cerebras" and second.fallback
    assert [(a.provider, a.kind) for a in second.attempts] == [("runpod", "pool_exhausted"), ("cerebras", "ok")]
    assert "max_connections" in (second.attempts[0].error or "")
    # The wait was llmroute's own queue: nothing counted against runpod, and its breaker (one failure opens it) stays shut.
    assert stats.failures == 0 and breaker == "closed"
    assert held.requests == 1


async def test_a_stream_holding_the_only_connection_does_not_hurt_the_provider(
    seed_config: dict[str, Any], held: HeldUpstream,
) -> None:
    async with LLMRouter(config=one_connection(seed_config, held.base_url), ledger=False) as router:
        first = asyncio.create_task(router.generate("hi", max_tokens=5))
        await held.arrived.wait()
        stream = router.stream(prompt="hi", max_tokens=5)
        chunks = [c async for c in stream]
        held.release.set()
        await first
        stats = router.state.snapshot()["runpod"]
    assert chunks and stream.result is not None and stream.result.provider == "cerebras"
    assert [a.kind for a in stream.result.attempts] == ["pool_exhausted", "ok"]
    assert stats.failures == 0


@pytest.mark.parametrize("value", ["€", "caf\udce9", "ok\u2028"])
def test_encode_headers_refuses_what_http_cannot_carry(value: str) -> None:
    with pytest.raises(InvalidHeader, match="x-trace"):
        encode_headers({"accept": "*/*", "x-trace": value})
    with pytest.raises(InvalidHeader, match="line break"):
        encode_headers({"x-trace": "a\r\nx-injected: 1"})
    assert encode_headers({"x-trace": "café"}) == "x-trace: café\r\n".encode("latin-1")


async def test_a_header_outside_latin1_is_a_client_error_and_reaches_no_provider(
    seed_config: dict[str, Any], emus: dict[str, Any],
) -> None:
    before = {name: emu.emulator.stats["requests"] for name, emu in emus.items()}
    async with LLMRouter(config=seed_config, ledger=False) as router:
        with pytest.raises(ClientRequestError) as info:
            await router.generate("hi", extra_headers={"x-request-id": "€-1"})
        ok = await router.generate("hi", max_tokens=5)  # the router is fine afterwards
        stats = router.state.snapshot()
    assert info.value.kind == "bad_header" and info.value.param == "x-request-id"
    assert "latin-1" in info.value.message
    assert len(info.value.attempts) == 1  # refused at once, not tried on every provider
    assert all(s.failures == 0 for s in stats.values()) and ok.text
    assert sum(emu.emulator.stats["requests"] for emu in emus.values()) == sum(before.values()) + 1


async def test_a_health_check_on_a_full_pool_is_no_verdict(seed_config: dict[str, Any], held: HeldUpstream) -> None:
    config = one_connection(seed_config, held.base_url)
    config["providers"]["runpod"]["health_check"] = {"timeout_s": 1.0}
    async with LLMRouter(config=config, ledger=False) as router:
        first = asyncio.create_task(router.generate("hi", max_tokens=5))
        await held.arrived.wait()
        with pytest.raises(PoolExhausted):  # not "no answer within 1 s", which would count toward opening the breaker
            await router.health.check(router.providers["runpod"])
        held.release.set()
        await first
