"""Budget leases against a real redis-server: replicas reserve locally within slices of a limit that Redis
counts at once, so they cannot pass it together, and the round trips drop to a few."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from llmroute.config.state import StateConfig
from tests.redis_fixture import RedisServer, redis_server  # noqa: F401

pytest.importorskip("redis")
import redis  # noqa: E402

from llmroute.state_redis import RedisState  # noqa: E402
from tests.test_state_redis import until  # noqa: E402  (wait for what a background task makes true)

KEY = "budget:all:0"


@pytest.fixture
async def replicas(redis_server: RedisServer) -> AsyncIterator[Callable[..., Any]]:  # noqa: F811
    made: list[RedisState] = []

    async def make(n: int, **settings: Any) -> list[RedisState]:
        # A reservation that times out takes the local rule while Redis still serves the others: not what these
        # tests are about (a partial outage, documented with the local rule), so a loaded machine gets a generous bound.
        settings.setdefault("reserve_timeout_s", 1.0)
        config = StateConfig(backend="redis", redis_url=redis_server.url, sync_interval_s=0.05, reconnect_s=0.05,
                             **settings)
        states = [RedisState(config, {"p": 100.0}) for _ in range(n)]
        for state in states:
            state.lease_keys("budget:")  # as Budgets does
        for state in states:
            await state.start()
            assert state.up
        await until(lambda: all(s.replicas == n for s in states))
        await states[0].areserve("warm-up", 0.0, 1.0)  # Redis learns the script: later calls are one EVALSHA
        made.extend(states)
        return states

    yield make
    for state in made:
        await state.aclose()


def redis_total(server: RedisServer, key: str = KEY) -> float:
    value = redis.Redis.from_url(server.url).get("llmroute:total:" + key)
    return float(value) if value is not None else 0.0


def grants(server: RedisServer) -> int:
    """Scripts Redis ran (each grant is one; settles flushed in the background are others)."""
    stats = redis.Redis.from_url(server.url).info("commandstats")
    return sum(stats.get(name, {}).get("calls", 0) for name in ("cmdstat_evalsha", "cmdstat_eval"))


async def test_many_concurrent_reservations_on_three_replicas_never_pass_the_limit(
        replicas: Any, redis_server: RedisServer) -> None:  # noqa: F811
    states = await replicas(3)
    limit, amount = 1.0, 0.003
    held = 0.0
    before = grants(redis_server)
    for waves in range(30):  # waves of 50 concurrent reservations per replica, until a whole wave is refused
        wave = [s.areserve(KEY, amount, limit) for s in states for _ in range(50)]
        verdicts = await asyncio.gather(*wave)
        held += amount * sum(verdicts)
        if waves == 0:  # 150 reservations, 45% of the limit: without leases each is one script call
            assert all(verdicts) and grants(redis_server) - before < 150 / 5
        assert held <= limit + 1e-9
        assert redis_total(redis_server) <= limit + 1e-9  # every slice counts at once
        if not any(verdicts):
            break
    else:
        raise AssertionError("the limit was never reached")
    # No room was lost to slices other replicas kept: refusals came when what was left could not hold one more.
    assert held > limit - 3 * amount


async def test_settled_spend_and_released_holds_are_counted_across_replicas(
        replicas: Any, redis_server: RedisServer) -> None:  # noqa: F811
    a, b, c = await replicas(3)
    rng = random.Random(7)
    expected = 0.0
    for _ in range(200):
        state = rng.choice((a, b, c))
        reserved = rng.choice((0.01, 0.02))
        assert await state.areserve(KEY, reserved, 100.0)
        cost = rng.choice((0.0, reserved / 2, reserved, reserved * 1.5))  # released, under, exact, over
        state.settle(KEY, reserved, cost)
        expected += cost
    assert await a.areserve(KEY, 0.05, 100.0)  # one still held
    expected += 0.05
    c.settle("rpm:k:0", 0.0, 3.0)  # a plain counter, no reservation
    b.settle("rpm:k:0", 0.0, 4.0)
    await until(lambda: all(s.spent(KEY) == pytest.approx(expected) for s in (a, b, c)))
    await until(lambda: all(s.spent("rpm:k:0") == pytest.approx(7.0) for s in (a, b, c)))
    # Redis holds the settled spend, the hold and the slices still unused; nothing more.
    rooms = redis.Redis.from_url(redis_server.url).hgetall("llmroute:room:" + KEY)
    assert redis_total(redis_server) == pytest.approx(expected + sum(float(v) for v in rooms.values()))


async def test_a_replica_whose_slice_ran_out_takes_a_new_one(
        replicas: Any, redis_server: RedisServer) -> None:  # noqa: F811
    (a,) = await replicas(1)
    before = grants(redis_server)
    assert await a.areserve(KEY, 0.1, 1.0)  # first slice: half of what is left, 0.5
    assert redis_total(redis_server) == pytest.approx(0.5)
    for _ in range(4):
        assert await a.areserve(KEY, 0.1, 1.0)  # within the slice: no round trip
    assert grants(redis_server) - before == 1
    assert await a.areserve(KEY, 0.1, 1.0)  # the slice is used up: a new one, half of the 0.5 left
    assert grants(redis_server) - before == 2
    assert redis_total(redis_server) == pytest.approx(0.75)
    assert a.spent(KEY) == pytest.approx(0.6)
    # A total not leased (a key's requests per minute, say) is reserved exactly: no slice, no early refusal.
    assert await a.areserve("rpm:k:1", 1.0, 10.0)
    assert redis_total(redis_server, "rpm:k:1") == 1.0
    a.settle("rpm:k:1", 1.0, 0.0)  # released: back in Redis, not kept in a room
    await until(lambda: redis_total(redis_server, "rpm:k:1") == 0.0)


async def test_unused_slices_go_back_after_idle_and_at_close(
        replicas: Any, redis_server: RedisServer) -> None:  # noqa: F811
    a, b = await replicas(2, lease_idle_s=0.2)
    assert await a.areserve(KEY, 0.1, 10.0)
    assert redis_total(redis_server) > 1.0  # a slice, not the request alone
    a.settle(KEY, 0.1, 0.04)
    await until(lambda: redis_total(redis_server) == pytest.approx(0.04))  # idle: the slice went back
    assert await b.areserve(KEY, 0.1, 10.0)
    assert redis_total(redis_server) > 1.0
    await b.aclose()  # at close: its hold stays counted, its unused slice goes back
    assert redis_total(redis_server) == pytest.approx(0.14)


async def test_a_refusal_calls_back_the_other_replicas_slices(
        replicas: Any, redis_server: RedisServer) -> None:  # noqa: F811
    a, b = await replicas(2, lease_idle_s=3600)
    assert await a.areserve(KEY, 0.1, 1.0)  # a holds a slice of 0.25 (half of the room, over two replicas)
    assert await b.areserve(KEY, 0.5, 1.0)  # b's slice: all that is left of the limit... almost
    assert not await b.areserve(KEY, 0.3, 1.0)  # refused early: 0.4 is free, but 0.15 of it is a's unused slice
    await until(lambda: redis_total(redis_server) == pytest.approx(0.6))  # both gave their rooms back
    assert await b.areserve(KEY, 0.3, 1.0)  # now it fits
    assert not await a.areserve(KEY, 0.2, 1.0)


async def test_redis_killed_mid_way_falls_back_to_the_local_rule_without_overspend(
        replicas: Any, redis_server: RedisServer) -> None:  # noqa: F811
    states = await replicas(3, lease_idle_s=3600)
    limit, amount = 1.0, 0.01
    held = 0.0
    for state in states:  # each takes a slice and spends part of it
        for _ in range(5):
            assert await state.areserve(KEY, amount, limit)
            held += amount
    await until(lambda: all(s.spent(KEY) == pytest.approx(held) for s in states))  # synced once
    redis_server.kill()
    await until(lambda: not any(s.up for s in states))
    for _ in range(200):  # each as much as the local rule lets it: its room, then its share of the rest
        for state in states:
            if await state.areserve(KEY, amount, limit):
                held += amount
    assert held <= limit + 1e-9
    assert held > 0.15  # the rooms in hand and the shares were used
    redis_server.start()  # it lost everything: the replicas put back what they knew and what they spent
    await until(lambda: all(s.up for s in states))
    await until(lambda: redis_total(redis_server) >= held - 1e-9)
    assert redis_total(redis_server) <= limit + 1e-9


async def test_short_lived_totals_expire_in_redis_and_budgets_keep_theirs(
        replicas: Callable[..., Any], redis_server: RedisServer) -> None:  # noqa: F811
    """A key's per-minute window must not stay in Redis for a budget's 40 days: two new totals per key and
    minute would pile up without end. Its expiry follows ``short_lived``; a budget's total keeps the long one."""
    state, = await replicas(1)
    state.short_lived("keyrpm:", 180)
    assert await state.areserve("keyrpm:bot:1", 1, 10)
    assert await state.areserve(KEY, 0.001, 1.0)
    state.settle("keyrpm:bot:1", 1, 0)
    state.settle(KEY, 0.001, 0.0005)
    client = redis.Redis.from_url(redis_server.url)
    try:
        await until(lambda: float(client.get("llmroute:total:keyrpm:bot:1") or -1) == 0.0)
        window_ttl_s = client.ttl("llmroute:total:keyrpm:bot:1")
        budget_ttl_s = client.ttl("llmroute:total:" + KEY)
    finally:
        client.close()
    assert 0 < window_ttl_s <= 180
    assert budget_ttl_s > 30 * 86400
