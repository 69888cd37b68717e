"""Circuit breakers: notice an outage once, then route around it without waiting on the dead provider.

closed -> open when, within ``window_s``: ``failures`` failures, or an error rate of
``error_rate`` over at least ``min_requests``, or ``consecutive_timeouts`` timeouts in a
row. open -> half-open after ``open_s`` (doubling up to ``max_open_s`` while probes keep
failing). half-open lets ``half_open_probes`` requests through; a success closes the
breaker, a failure opens it again. Outcomes of attempts sent before the breaker last
changed state are ignored: a request that was in flight when it opened says nothing
about the provider after. Checking a breaker is a comparison and a counter:
skipping an open provider costs microseconds.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .config.settings import BreakerSettings

__all__ = ["CLOSED", "HALF_OPEN", "NOT_HEALTH", "OPEN", "STATE_VALUE", "BreakerSettings", "CircuitBreaker",
           "log_transition"]

log = logging.getLogger("llmroute")

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"
STATE_VALUE = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}
HISTORY_LEN = 20
"""Changes of state a breaker keeps (wall time, state, reason): enough to see a flapping provider."""

# Failures that say nothing about the provider's health: the request was at fault, or the caller left.
NOT_HEALTH = frozenset({"bad_request", "context_length", "not_found", "unprocessable", "cancelled", "client_error"})


class CircuitBreaker:
    def __init__(self, settings: BreakerSettings | None = None,
                 on_change: Callable[[str, str], None] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings or BreakerSettings()
        self.state = CLOSED
        self.changed_at = clock()
        self.open_until = 0.0
        self.opened = 0
        self.last_reason = ""
        self._open_s = self.settings.open_s
        self._outcomes: deque[tuple[float, bool]] = deque()  # (time, failed) within the window
        self._failures_in_window = 0
        self._consecutive_timeouts = 0
        self._probes: deque[float] = deque()
        self._clock = clock
        self._on_change = on_change
        self.history: deque[tuple[float, str, str]] = deque(maxlen=HISTORY_LEN)
        """The latest changes of state, oldest first: (Unix time, state, reason)."""

    def allow(self) -> bool:
        """May a request go to this provider now? Counts a half-open probe when it says yes."""
        if self.state == CLOSED:
            return True
        now = self._clock()
        if self.state == OPEN:
            if now < self.open_until:
                return False
            self._move(HALF_OPEN, "open period over: probing", now)
        while self._probes and now - self._probes[0] > self.settings.probe_timeout_s:
            self._probes.popleft()
        if len(self._probes) < self.settings.half_open_probes:
            self._probes.append(now)
            return True
        return False

    @property
    def open_period_s(self) -> float:
        """How long the breaker stays open when it next opens (or stayed open this time)."""
        return self._open_s

    def describe(self) -> dict[str, Any]:
        """The breaker as ``/router/state`` and the dashboard show it (JSON-ready)."""
        return {"state": self.state, "since_s": round(self._clock() - self.changed_at, 3), "reason": self.last_reason,
                "retry_in_s": round(self.retry_in_s(), 3), "opened": self.opened,
                "transitions": [{"ts": ts, "state": state, "reason": reason} for ts, state, reason in self.history]}

    def retry_in_s(self) -> float:
        """Seconds until this breaker lets a probe through (0 if it would now)."""
        if self.state != OPEN:
            return 0.0
        return max(0.0, self.open_until - self._clock())

    def _stale(self, started_at: float | None) -> bool:
        """An attempt sent before the last change of state says nothing about the provider since."""
        return started_at is not None and started_at < self.changed_at

    def on_success(self, started_at: float | None = None) -> None:
        if self._stale(started_at):
            return
        now = self._clock()
        self._consecutive_timeouts = 0
        if self.state != CLOSED:
            if self._probes:
                self._probes.popleft()
            self._open_s = self.settings.open_s
            self._outcomes.clear()
            self._failures_in_window = 0
            self._move(CLOSED, "probe succeeded", now)
            return
        self._add(now, failed=False)

    def on_failure(self, kind: str, started_at: float | None = None) -> None:
        if kind in NOT_HEALTH or self._stale(started_at):
            return
        now = self._clock()
        self._consecutive_timeouts = self._consecutive_timeouts + 1 if kind == "timeout" else 0
        if self.state == HALF_OPEN:
            if self._probes:
                self._probes.popleft()
            self._open_s = min(self._open_s * 2, self.settings.max_open_s)
            self._open(now, f"probe failed ({kind})")
            return
        if self.state == OPEN:
            return
        self._count_failure(kind, now)

    def _count_failure(self, kind: str, now: float) -> None:
        self._add(now, failed=True)
        s = self.settings
        total = len(self._outcomes)
        if self._consecutive_timeouts >= s.consecutive_timeouts:
            self._open(now, f"{self._consecutive_timeouts} timeouts in a row")
        elif self._failures_in_window >= s.failures:
            self._open(now, f"{self._failures_in_window} failures in {s.window_s:g} s (last: {kind})")
        elif total >= s.min_requests and self._failures_in_window / total >= s.error_rate:
            self._open(now, f"error rate {self._failures_in_window / total:.0%} over {total} requests")

    def observe_remote(self, failed: bool, kind: str = "") -> None:
        """An outcome another replica saw: it counts toward opening this breaker, but only while closed (probes
        are each replica's own business, and a late outcome must not close or re-open anything)."""
        if self.state != CLOSED or (failed and kind in NOT_HEALTH):
            return
        if failed:
            self._consecutive_timeouts = self._consecutive_timeouts + 1 if kind == "timeout" else 0
            self._count_failure(kind, self._clock())
        else:
            self._consecutive_timeouts = 0
            self._add(self._clock(), failed=False)

    def adopt_open(self, open_until: float, open_s: float, reason: str) -> None:
        """Another replica opened this provider's breaker until ``open_until`` (this breaker's clock): open it
        too, or move its end there (the caller drops events older than this breaker's own last change)."""
        if self.state == OPEN and self.open_until == open_until:
            return
        self._open_s = max(self.settings.open_s, min(open_s, self.settings.max_open_s))
        self.open_until = open_until
        self.opened += 1
        self._probes.clear()
        self._move(OPEN, reason, self._clock())

    def hold(self, until: float) -> None:
        """Stay open until ``until`` at least: another replica holds the probe, and its verdict will come."""
        if self.state == OPEN:
            self.open_until = max(self.open_until, until)

    def force(self, healthy: bool, reason: str) -> None:
        """An active health check's verdict: close an open breaker, or open a closed one."""
        now = self._clock()
        if healthy and self.state != CLOSED:
            self._open_s = self.settings.open_s
            self._outcomes.clear()
            self._failures_in_window = 0
            self._probes.clear()
            self._move(CLOSED, reason, now)
        elif not healthy and self.state != OPEN:
            self._open(now, reason)

    def _add(self, now: float, failed: bool) -> None:
        outcomes = self._outcomes
        outcomes.append((now, failed))
        self._failures_in_window += failed
        horizon = now - self.settings.window_s
        while outcomes and outcomes[0][0] < horizon:
            self._failures_in_window -= outcomes.popleft()[1]

    def _open(self, now: float, reason: str) -> None:
        self.open_until = now + self._open_s
        self.opened += 1
        self._probes.clear()
        self._move(OPEN, reason, now)

    def _move(self, state: str, reason: str, now: float) -> None:
        if state == self.state and state != OPEN:
            return
        self.state, self.changed_at, self.last_reason = state, now, reason
        self.history.append((time.time(), state, reason))
        if self._on_change is not None:
            self._on_change(state, reason)


def log_transition(provider: str, state: str, reason: str) -> None:
    """The log line of a breaker's change of state: a warning when it opens."""
    log.log(logging.WARNING if state == OPEN else logging.INFO,
            "circuit breaker for %s is now %s: %s", provider, state, reason)
