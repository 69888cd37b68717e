"""A key's rpm and tpm across real ``llmroute serve`` processes sharing a real redis-server: three replicas, or
one gateway with two workers, take exactly the key's limit between them, not the limit once per process.

Requests are sprayed at once and the provider holds every request it receives until all have either reached
it or been refused: so every reservation is taken before any is settled, and the count that passes is exact.
A burst is kept off a minute's boundary: there the previous minute's count carries over from each process's
copy of it, which may miss what the others reserved in the last sync interval (the documented bound)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from llmroute.tokens import prompt_estimate

from ..conftest import HeldUpstream, chat_upstream, free_port, provider
from ..redis_fixture import RedisServer, redis_server  # noqa: F401
from .conftest import RunningGateway
from .test_keys_gateway import create

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "Qualify this lead: Initech, 40 employees"}]
MAX_TOKENS = 50
SCOPE = "shared by every gateway replica"


class HeldProvider(HeldUpstream):
    """A stand-in provider that answers nothing until ``release``: what reaches it was admitted by the key."""

    def __init__(self) -> None:
        super().__init__()
        self.refused: list[httpx.Response] = []
        self.served: list[httpx.Response] = []

    async def send(self, client: httpx.AsyncClient, url: str, key: str) -> None:
        response = await client.post(url + CHAT, json={"messages": MESSAGES, "max_tokens": MAX_TOKENS},
                                     headers={"Authorization": f"Bearer {key}"})
        async with self.changed:
            (self.served if response.status_code == 200 else self.refused).append(response)
            self.changed.notify_all()

    async def spray(self, urls: list[str], key: str, count: int) -> None:
        """``count`` requests at once, round-robin over ``urls``; held until each was admitted or refused."""
        limits = httpx.Limits(max_connections=count, max_keepalive_connections=0)  # a connection each
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            sent = [asyncio.ensure_future(self.send(client, urls[i % len(urls)], key)) for i in range(count)]
            async with asyncio.timeout(60), self.changed:
                await self.changed.wait_for(lambda: self.arrived + len(self.refused) == count)
            self.released.set()
            await asyncio.gather(*sent)


def off_the_minute_boundary(burst_s: float = 5.0) -> None:
    """Start a burst at least ``burst_s`` before a minute ends (see the module's docstring)."""
    left_s = 60.0 - time.time() % 60.0
    if left_s < burst_s:
        time.sleep(left_s + 0.05)


async def start(gateway_factory: Callable[..., RunningGateway], config: dict[str, Any], *args: str,
                count: int, **kw: Any) -> list[RunningGateway]:
    """Gateways started one after another (off the loop: the held provider must keep answering)."""
    return [await asyncio.to_thread(gateway_factory, config, *args, **kw) for _ in range(count)]


def held_config(base_url: str, ledger: Path, redis: RedisServer) -> dict[str, Any]:
    return {"providers": {"held": provider(base_url, "cerebras", timeout_s=60)}, "strategy": "cost_optimized",
            "deadline_s": 60, "ledger": {"path": str(ledger), "flush_interval_s": 0.01},
            "state": {"backend": "redis", "redis_url": redis.url, "sync_interval_s": 0.2}}


def assert_refused(responses: list[httpx.Response], unit: str, limit: str) -> None:
    for response in responses:
        error = response.json()["error"]
        assert response.status_code == 429 and error["code"] == "rate_limit_exceeded" and error["type"] == unit
        assert f"{limit} per minute ({SCOPE})" in error["message"]
        assert 1 <= int(response.headers["Retry-After"]) <= 120


async def test_three_replicas_sharing_redis_take_exactly_a_keys_rpm_and_tpm(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path, redis_server: RedisServer,  # noqa: F811
) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    rpm_key = create(ledger, "rpm-bot", "--rpm", "12")
    per_request = prompt_estimate({"messages": MESSAGES}) + MAX_TOKENS  # what each request reserves of a tpm
    tpm_key = create(ledger, "tpm-bot", "--tpm", str(7 * per_request + per_request // 2))
    held, held_tpm = HeldProvider(), HeldProvider()
    async with chat_upstream(held.handler) as rpm_url, chat_upstream(held_tpm.handler) as tpm_url:
        replicas = await start(gateway_factory, held_config(rpm_url, ledger, redis_server), count=3)
        off_the_minute_boundary()
        await held.spray([g.base_url for g in replicas], rpm_key, 36)
        tpm_replicas = await start(gateway_factory, held_config(tpm_url, ledger, redis_server), count=3)
        off_the_minute_boundary()
        await held_tpm.spray([g.base_url for g in tpm_replicas], tpm_key, 24)
    print(f"3 replicas: rpm 12 -> {len(held.served)} served of 36; tpm 7.5 requests' worth -> "
          f"{len(held_tpm.served)} served of 24")
    # Independent replicas would each have served up to 12 (36 in all) and 7 (21).
    assert held.arrived == len(held.served) == 12 and len(held.refused) == 24
    assert_refused(held.refused, "requests", "12 requests")
    assert held_tpm.arrived == len(held_tpm.served) == 7 and len(held_tpm.refused) == 17
    assert_refused(held_tpm.refused, "tokens", f"{7 * per_request + per_request // 2} tokens")


async def test_one_gateway_with_two_workers_sharing_redis_takes_a_keys_rpm_once(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path, redis_server: RedisServer,  # noqa: F811
) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    key = create(ledger, "workers-bot", "--rpm", "10")
    held = HeldProvider()
    async with chat_upstream(held.handler) as url:  # --workers needs an explicit port
        gateway, = await start(gateway_factory, held_config(url, ledger, redis_server), "--workers", "2",
                               count=1, port=free_port())
        off_the_minute_boundary()
        await held.spray([gateway.base_url], key, 40)
    assert held.arrived == len(held.served) == 10 and len(held.refused) == 30
    assert_refused(held.refused, "requests", "10 requests")


async def test_the_router_routes_and_bills_on_an_estimate_it_is_given() -> None:
    """The gateway estimates a prompt once and hands the number on: a router given ``prompt_tokens`` uses it
    (here visible as the prompt it bills when the provider reports no usage) instead of estimating again."""
    from llmroute import LLMRouter

    async def no_usage(request: web.Request) -> web.Response:
        return web.json_response({"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}]})

    async with chat_upstream(no_usage) as url:
        router = LLMRouter(config={"providers": {"bare": provider(url, "cerebras")}}, ledger=False)
        try:
            body = {"messages": MESSAGES, "max_tokens": 5}
            own = await router.chat_request(body)
            given = await router.chat_request(body, prompt_tokens=1234)
        finally:
            await router.aclose()
    assert own.prompt_tokens == prompt_estimate(body) != 1234
    assert given.prompt_tokens == 1234
