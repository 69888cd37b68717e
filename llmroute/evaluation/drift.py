"""The live retained quality of shadow evaluation, and the drift alarm on it.

The latest graded pairs (the served answer's grade, the reference's) are kept in a window. Their
retained quality and its 95% interval are a bootstrap, so they are recomputed off the event loop, at
most once every few seconds whatever the traffic: a bootstrap over a full window costs tens of
milliseconds of CPU, which a busy gateway must not pay every few requests. While even the interval's upper
bound is below the target, a WARNING is logged: quality has dropped, and the measurement is sure of it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence

from ..ledger.pairs import GradedPair
from ..quality.retained import Estimate, retained

log = logging.getLogger("llmroute.shadow")

RECOMPUTE_S = 5.0
"""The estimate is recomputed at most this often, and this long after a pair that came in between."""
ALERT_EVERY_S = 300.0
"""While the drift alarm holds, its WARNING is repeated at most this often."""


def _nothing(estimate: Estimate) -> None:
    return None


class DriftWatch:
    """Retained quality over the latest ``size`` graded pairs, and the alarm when it is surely below
    ``alert_below`` (at least ``min_pairs`` pairs, the interval's upper bound under it).

    Pairs are added from inside the event loop; ``on_estimate(estimate)`` is called with each new estimate.
    """

    def __init__(self, size: int, min_pairs: int, alert_below: float, *,
                 on_estimate: Callable[[Estimate], None] = _nothing) -> None:
        self.min_pairs, self.alert_below, self.on_estimate = min_pairs, alert_below, on_estimate
        self.estimate: Estimate | None = None
        self._window: deque[tuple[float, float]] = deque(maxlen=size)
        self._new_pairs = 0
        self._computed_at = -RECOMPUTE_S
        self._computing: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._alerted_at = -ALERT_EVERY_S
        self._closed = False

    def seed(self, pairs: Sequence[GradedPair], reference: str, candidate: str) -> None:
        """The latest graded shadow pairs of ``reference`` against ``candidate`` (read back at start-up);
        offline prompts and pairs of another provider pair stay out. Computed at the next ``refresh``."""
        live = [p for p in pairs if p.source == "shadow"
                and (p.reference_provider, p.candidate_provider) == (reference, candidate)]
        for p in sorted(live, key=lambda p: p.ts)[-(self._window.maxlen or 0):]:
            served = p.served_grade
            if served is not None and p.reference_grade is not None:
                self.add(served, p.reference_grade, recompute=False)

    def add(self, served: float, reference: float, *, recompute: bool = True) -> None:
        """A new graded pair: the served answer's grade and the reference's."""
        self._window.append((served, reference))
        self._new_pairs += 1
        if recompute:
            self._maybe_recompute()

    def refresh(self) -> None:
        """Recompute now if any pair arrived since the last estimate (start-up, drain)."""
        self._maybe_recompute(force=True)

    @property
    def computing(self) -> asyncio.Task[None] | None:
        """The recomputation running, if any (to wait for it)."""
        return self._computing

    def stop(self) -> None:
        """No further recomputation (shutting down)."""
        self._closed = True

    def close(self) -> None:
        """Stop, and cancel what is scheduled or running."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._computing is not None:
            self._computing.cancel()

    def _maybe_recompute(self, force: bool = False) -> None:
        if self._computing is not None or not self._new_pairs or not self._window or self._closed:
            return
        wall = time.monotonic()
        if not force and wall - self._computed_at < RECOMPUTE_S:
            if self._timer is None:  # traffic may stop here: catch up when the interval is over anyway
                self._timer = asyncio.get_running_loop().call_later(
                    RECOMPUTE_S - (wall - self._computed_at), self._on_timer)
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._new_pairs, self._computed_at = 0, wall
        served, reference = zip(*self._window)
        self._computing = asyncio.get_running_loop().create_task(self._estimate(list(served), list(reference)))

    def _on_timer(self) -> None:
        self._timer = None
        self._maybe_recompute(force=True)

    async def _estimate(self, served: list[float], reference: list[float]) -> None:
        """Retained quality over the window, with its interval: a bootstrap, so off the event loop."""
        try:
            estimate = await asyncio.to_thread(retained, served, reference)
        finally:
            self._computing = None
        if estimate is None:
            return
        self.estimate = estimate
        self.on_estimate(estimate)
        wall = time.monotonic()
        if estimate.pairs >= self.min_pairs and estimate.high < self.alert_below \
                and wall - self._alerted_at >= ALERT_EVERY_S:
            self._alerted_at = wall
            log.warning("quality drift: retained quality %.1f%% (95%% CI %.1f-%.1f%%, %d pairs) is below the target "
                        "%.1f%% even at the interval's upper bound", estimate.value * 100, estimate.low * 100,
                        estimate.high * 100, estimate.pairs, self.alert_below * 100)
