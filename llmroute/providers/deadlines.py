"""Deadlines of the answers a connection pool awaits, watched by one timer."""

from __future__ import annotations

import asyncio
import math
from typing import Protocol

DEADLINE_SLACK_S = 0.005
"""After a deadline fired, the next check waits at least this long: answers that time out together (a hung
upstream) are failed in one pass, not one timer each."""


class Expiring(Protocol):
    def expire(self) -> None:
        """The deadline passed: fail whatever waits for the answer with ``TimeoutError``."""


class Deadlines:
    """Deadlines of the answers being awaited, watched by one timer set for the earliest.

    Why not ``asyncio.timeout`` per request: it schedules and cancels a timer each time, which cost more CPU
    than the rest of this client's work for a short answer. Here a request adds its deadline to a dict and
    removes it when answered; the timer only moves when a deadline comes earlier than the one it is set for.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiting: dict[Expiring, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def now(self) -> float:
        """The clock deadlines are on (the event loop's)."""
        return self._loop.time()

    def watch(self, conn: Expiring, deadline: float) -> None:
        """Fail ``conn``'s answer with ``TimeoutError`` unless it arrives by ``deadline`` (on ``now()``'s clock)."""
        self._waiting[conn] = deadline
        if deadline < self._timer_at:
            self._arm(deadline)

    def forget(self, conn: Expiring) -> None:
        self._waiting.pop(conn, None)

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._expire)

    def _expire(self) -> None:
        self._timer, self._timer_at = None, math.inf
        now = self._loop.time()
        expired = [conn for conn, deadline in self._waiting.items() if deadline <= now]
        for conn in expired:
            del self._waiting[conn]
            conn.expire()
        if self._waiting:
            self._arm(max(min(self._waiting.values()), now + DEADLINE_SLACK_S))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, math.inf
