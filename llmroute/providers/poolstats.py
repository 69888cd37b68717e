"""What a provider's connection pool is doing, for metrics, ``/router/state`` and a log line.

A pool that is full makes requests wait for a slot. A wait that ends in a slot is no error, so
without these counts a pool that queues every stream past its size is invisible: streams only
get slower to start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

DEFAULT_MAX_CONNECTIONS = 4096
"""Connections per upstream: each open stream holds one, and a gateway holds thousands of streams."""
WAIT_LOG_EVERY_S = 30.0
"""At most one log line per provider per this interval, summing up the waits since the last one."""
WAIT_LOG_GATHER_S = 1.0
"""A line waits this long after the first wait of a burst, so that it reports the burst, not its first wait."""
_RECENT_WAITS = 1000  # the waits a percentile is taken over

log = logging.getLogger("llmroute")


class PoolStats:
    """What one provider's pool is doing: slots in use, requests waiting for one, and the waits themselves.

    Counted where a wait happens, not per request: a free slot costs two integer updates. A wait that ends
    (``slot``, ``timeout`` or ``cancelled``) is kept (the last 1,000, for percentiles), passed to ``on_wait`` (a
    metrics histogram) and summed into one log line per provider (a second after a burst's first wait, then at
    most every ``WAIT_LOG_EVERY_S`` while waits go on) that names the setting to raise: a wait that ends in a slot
    is no error, so a pool that queues is otherwise invisible.
    """

    __slots__ = ("_flush", "_logged_at", "_unlogged", "_unlogged_longest_s", "_unlogged_since", "_unlogged_timeouts",
                 "in_use", "max_connections", "name", "on_wait", "recent_waits_s", "timeouts_total",
                 "wait_seconds_total", "waiting", "waits_total")

    def __init__(self, name: str = "", max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        self.name = name
        self.max_connections = max_connections
        self.in_use = 0
        self.waiting = 0
        self.waits_total = 0
        """Waits that ended, however."""
        self.timeouts_total = 0
        """Waits that ended in ``PoolTimeout``: the request went on to the next provider."""
        self.wait_seconds_total = 0.0
        self.recent_waits_s: deque[float] = deque(maxlen=_RECENT_WAITS)
        self.on_wait: Callable[[float, str], None] | None = None
        """Called with (seconds waited, outcome) when a wait ends; never when a slot was free at once."""
        self._logged_at = -WAIT_LOG_EVERY_S
        self._flush: asyncio.TimerHandle | None = None
        self._unlogged = 0  # waits since the last log line: how many, how many gave up, the longest
        self._unlogged_timeouts = 0
        self._unlogged_longest_s = 0.0
        self._unlogged_since = 0.0

    def wait_ended(self, waited_s: float, outcome: str) -> None:
        self.waits_total += 1
        self.wait_seconds_total += waited_s
        self.recent_waits_s.append(waited_s)
        self._unlogged += 1
        self._unlogged_longest_s = max(self._unlogged_longest_s, waited_s)
        if outcome == "timeout":
            self.timeouts_total += 1
            self._unlogged_timeouts += 1
        if self.on_wait is not None:
            self.on_wait(waited_s, outcome)
        if self._flush is None:  # one line for a burst (a second on), then at most one per interval while it lasts
            wall = time.monotonic()
            if not self._unlogged_since:
                self._unlogged_since = wall
            delay_s = max(WAIT_LOG_GATHER_S, self._logged_at + WAIT_LOG_EVERY_S - wall)
            self._flush = asyncio.get_running_loop().call_later(delay_s, self._log)

    def wait_percentile_ms(self, q: float) -> float | None:
        """The ``q`` quantile (0 to 1) of the last 1,000 waits, in ms; None before the first wait."""
        if not self.recent_waits_s:
            return None
        ordered = sorted(self.recent_waits_s)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def snapshot(self) -> dict[str, int | float | None]:
        """For ``/router/state``: now (slots in use, waiting) and the waits so far."""
        p95_ms = self.wait_percentile_ms(0.95)
        return {"max_connections": self.max_connections, "in_use": self.in_use, "waiting": self.waiting,
                "waits_total": self.waits_total, "wait_timeouts_total": self.timeouts_total,
                "wait_p95_ms": None if p95_ms is None else round(p95_ms, 3),
                "wait_max_ms": round(max(self.recent_waits_s) * 1000, 3) if self.recent_waits_s else None}

    def _log(self) -> None:
        self._flush = None
        if not self._unlogged:
            return
        wall = time.monotonic()
        log.warning("provider %s: %d request(s) in the last %.0f s waited for a free connection (all %d in use), the "
                    "longest %.0f ms; %d gave up after pool_timeout_s and went to the next provider. Raise "
                    "providers.%s.max_connections", self.name, self._unlogged, max(wall - self._unlogged_since, 1.0),
                    self.max_connections, self._unlogged_longest_s * 1000, self._unlogged_timeouts, self.name)
        self._logged_at = wall
        self._unlogged = self._unlogged_timeouts = 0
        self._unlogged_longest_s = self._unlogged_since = 0.0
