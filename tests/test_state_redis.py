"""RedisState against a real redis-server: what one replica learns, the others know, without a round trip."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from llmroute.breaker import BreakerSettings
from llmroute.config.state import StateConfig
from tests.redis_fixture import RedisServer, redis_server  # noqa: F401

pytest.importorskip("redis")
from llmroute.state_redis import RedisState  # noqa: E402


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait for a condition another task makes true (polled: the change arrives over a socket)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


@pytest.fixture
async def replicas(redis_server: RedisServer) -> AsyncIterator[Callable[..., Any]]:  # noqa: F811
    made: list[RedisState] = []

    async def make(n: int, **breaker: Any) -> list[RedisState]:
        config = StateConfig(backend="redis", redis_url=redis_server.url, sync_interval_s=0.1, reconnect_s=0.05)
        settings = BreakerSettings(**breaker)
        states = [RedisState(config, {"p": 100.0, "q": 100.0}, breakers={"p": settings}) for _ in range(n)]
        for state in states:
            await state.start()
            assert state.up
        made.extend(states)
        return states

    yield make
    for state in made:
        await state.aclose()


async def test_failures_are_counted_cluster_wide_and_the_breaker_opens_everywhere(replicas: Any) -> None:
    a, b, c = await replicas(3, failures=6)
    for state in (a, b, c, a, b):  # 5 failures spread over three replicas: none has 6 of its own
        state.record_failure("p", "server_error", 10.0)
    await until(lambda: all(s.breaker("p")._failures_in_window == 5 for s in (a, b, c)))
    assert all(s.breaker("p").state == "closed" for s in (a, b, c))
    c.record_failure("p", "server_error", 10.0)  # the 6th, cluster-wide
    await until(lambda: all(s.breaker("p").state == "open" for s in (a, b, c)))
    assert b.breaker("p").last_reason.endswith("(another replica)")


async def test_one_probe_cluster_wide(replicas: Any) -> None:
    states = await replicas(3, failures=1, open_s=0.3)
    states[0].record_failure("p", "server_error", 10.0)
    await until(lambda: all(s.breaker("p").state == "open" for s in states))
    # Every replica claims the probe as soon as it hears; the losers stay open for the winner's verdict.
    opened_until = states[0].breaker("p").open_until
    await until(lambda: sum(s.breaker("p").open_until > opened_until + 1 for s in states) == 2)
    await until(lambda: time.monotonic() > opened_until + 0.01, timeout_s=2)
    allowed = [s.breaker("p").allow() for s in states]
    assert allowed.count(True) == 1
    prober = states[allowed.index(True)]
    prober.record_success("p", 50.0)  # the probe succeeded: every replica closes
    await until(lambda: all(s.breaker("p").state == "closed" for s in states))


async def test_cooldowns_buckets_and_scores_are_shared(replicas: Any) -> None:
    a, b = await replicas(2)
    wall = time.time()
    a.set_cooldown("q", wall + 30)
    a.ratelimit("p").update({"x-ratelimit-remaining-tokens-minute": "1000",
                             "x-ratelimit-reset-tokens-minute": "60"})
    await until(lambda: b.cooldown_until("q") == wall + 30 and bool(b.ratelimit("p").tokens))
    assert b.ratelimit("p").headroom(900)
    a.ratelimit("p").spend(300)  # sent from one replica: the others' estimate shrinks too
    await until(lambda: not b.ratelimit("p").headroom(900))
    assert b.ratelimit("p").headroom(700)
    seen: dict[str, list[float]] = {"a": [], "b": []}
    add_a = a.shared_samples("scores", seen["a"].append)
    b.shared_samples("scores", seen["b"].append)
    add_a(0.25)
    await until(lambda: seen["b"] == [0.25])
    assert seen["a"] == [0.25]


async def test_latency_samples_reach_the_other_replicas(replicas: Any) -> None:
    a, b = await replicas(2)
    for _ in range(5):
        a.record_success("p", 400.0)
    await until(lambda: b.latency_estimate_ms("p") == 400.0)
    assert b.snapshot()["p"].successes == 0  # counters stay per replica: /router/state shows what each served


async def test_reservations_never_pass_the_limit_together(replicas: Any) -> None:
    a, b, c = await replicas(3)
    results: list[bool] = []

    def spend(state: RedisState) -> None:
        for _ in range(20):
            results.append(state.reserve("budget:test", 0.001, 0.0105))

    threads = [threading.Thread(target=spend, args=(s,)) for s in (a, b, c)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    granted = results.count(True)
    assert granted <= 10
    # A refusal may come early while another replica holds an unused slice; it gives the slice back on hearing
    # of the refusal, so the limit is reachable to the last reservation.
    deadline = time.monotonic() + 5
    while granted < 10 and time.monotonic() < deadline:
        if await b.areserve("budget:test", 0.001, 0.0105):
            granted += 1
        else:
            await asyncio.sleep(0.01)
    assert granted == 10
    assert not await c.areserve("budget:test", 0.001, 0.0105)
    await until(lambda: a.spent("budget:test") == pytest.approx(0.01))
    a.settle("budget:test", 0.001, 0.0004)  # settled below its reservation: the difference comes back
    await until(lambda: c.spent("budget:test") == pytest.approx(0.0094))
    assert await b.areserve("budget:test", 0.001, 0.0105)
    assert not await b.areserve("budget:test", 0.001, 0.0105)


async def test_redis_lost_and_back(replicas: Any, redis_server: RedisServer) -> None:  # noqa: F811
    a, b = await replicas(2)
    changes: list[bool] = []
    a.on_backend_change = changes.append
    assert a.reserve("budget:day", 0.004, 0.010)
    await until(lambda: a.replicas == 2)
    redis_server.kill()
    await until(lambda: not a.up and not b.up)
    assert changes == [False]
    # Local state goes on; a reservation follows the local rule: its share of what was left, (0.010-0.004)/2.
    a.record_failure("q", "server_error", 5.0)
    assert a.reserve("budget:day", 0.002, 0.010)
    assert not a.reserve("budget:day", 0.002, 0.010)
    assert a.reserve("budget:day", 0.001, 0.010)
    redis_server.start()  # empty: it lost everything
    await until(lambda: a.up and b.up)
    assert changes == [False, True]
    # The total comes back from what the replica knew plus what it spent while Redis was away.
    import redis

    stored = redis.Redis.from_url(redis_server.url).get("llmroute:total:budget:day")
    assert float(stored) == pytest.approx(0.007)
    assert not b.reserve("budget:day", 0.0035, 0.010)  # b sees the cluster's total again, and so does its rule
    assert b.reserve("budget:day", 0.003, 0.010)
    a.set_cooldown("q", time.time() + 60)
    await until(lambda: b.cooldown_until("q") > time.time() + 30)


def test_the_redis_url_is_a_secret() -> None:
    config = StateConfig(backend="redis", redis_url="redis://:hunter2@cache.internal:6379/0")
    assert "hunter2" not in repr(config) and "hunter2" not in config.model_dump_json()
    with pytest.raises(ValueError, match="redis://"):
        StateConfig(redis_url="http://cache.internal:6379")


async def test_without_redis_requests_go_on_and_reservations_follow_the_local_rule(
        redis_server: RedisServer) -> None:  # noqa: F811
    redis_server.kill()  # nothing listens: the replica starts on its own
    config = StateConfig(backend="redis", redis_url=redis_server.url, min_replicas=4, reconnect_s=0.05)
    state = RedisState(config, {"p": 100.0})
    changes: list[bool] = []
    state.on_backend_change = changes.append
    await state.start()
    try:
        assert not state.up and changes == [False]
        state.record_failure("p", "server_error", 5.0)
        state.record_success("p", 80.0)
        assert state.snapshot()["p"].failures == 1
        assert state.reserve("day", 0.25, 1.0)  # a quarter of the limit: its share among 4 replicas
        assert not state.reserve("day", 0.01, 1.0)
    finally:
        await state.aclose()
