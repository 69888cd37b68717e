"""What travels between replicas sharing state: Lua scripts, clocks, the order of breaker openings.

Kept apart from ``state_redis`` (which needs the Redis client) because none of it talks to Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .breaker import OPEN, CircuitBreaker
from .ratelimit import RateLimitWindow

Event = list[Any]

TOTALS_TTL_S = 40 * 86400
"""Spend totals expire this long after their last change: longer than any budget period."""
MAX_REMOTE_OUTCOMES = 256
"""Successes of one batch fed to a breaker's window at most: enough for the error-rate rule."""

# Check and add in one step: concurrent spenders on any replica can never pass the limit together.
RESERVE_LUA = """
local total = tonumber(redis.call('GET', KEYS[1]) or '0')
if total + tonumber(ARGV[1]) > tonumber(ARGV[2]) then return {0, tostring(total)} end
total = redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {1, tostring(total)}
"""
# Add a settled difference (never below zero); ``ARGV[2]``, if not empty: the total this replica last knew,
# restored first if the key is missing (Redis restarted without its data).
SETTLE_LUA = """
if ARGV[2] ~= '' and redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SET', KEYS[1], ARGV[2]) end
local total = tonumber(redis.call('INCRBYFLOAT', KEYS[1], ARGV[1]))
if total < 0 then redis.call('SET', KEYS[1], '0') total = 0 end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return tostring(total)
"""

def to_wall(monotonic: float) -> float:
    return monotonic - time.monotonic() + time.time()


def to_monotonic(wall: float) -> float:
    return wall - time.time() + time.monotonic()


def newer_open(breaker: CircuitBreaker, opening: tuple[float, float] | None, at: float) -> bool:
    """Should a breaker adopt another replica's opening at ``at`` (wall clock)? ``opening``: (when, until)
    of the opening an open breaker follows.

    Replicas count the same failures, so several often open at nearly the same time: all settle on the
    earliest opening of the period, so they claim the same probe. An opening after the period's end is a new
    period (a probe failed); a closed breaker takes only news newer than its last change."""
    if breaker.state != OPEN or opening is None:
        return at >= changed_wall(breaker)
    opened_at, until_wall = opening
    return at < opened_at or at >= until_wall


def changed_wall(breaker: CircuitBreaker) -> float:
    """When the breaker last changed state (wall clock); 0 if it never has (news of any age applies)."""
    return to_wall(breaker.changed_at) if breaker.opened or breaker.state != "closed" else 0.0


@dataclass(slots=True)
class SharedWindow(RateLimitWindow):
    """A rate-limit window whose readings and spending reach the other replicas."""

    publish: Callable[[Event], None] | None = None

    def update(self, headers: Mapping[str, str], now: float | None = None) -> None:
        RateLimitWindow.update(self, headers, now)
        if self.publish is not None and (self.tokens or self.requests):
            self.publish(["rl", [[b.remaining, to_wall(b.resets_at)] for b in self.tokens],
                          [[b.remaining, to_wall(b.resets_at)] for b in self.requests]])

    def spend(self, tokens: int) -> None:
        RateLimitWindow.spend(self, tokens)
        if self.publish is not None and (self.tokens or self.requests):
            self.publish(["sp", tokens])


async def first_error(*coroutines: Any) -> None:
    """Run side by side until one fails; then cancel the rest and raise its error."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
        raise ConnectionError("a state sync task ended")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
