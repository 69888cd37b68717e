"""Exact nearest-rank percentiles over a window's pieces (each span's sorted latencies), without sorting the
whole window again at every refresh.

The pieces of finished days stay the same from one refresh to the next: their union is sorted once and kept
(while those pieces live). The value at a rank of it and of the pieces that change (today, the window's first
part day) is then selected among those pieces and as many of the kept values around that rank: work in
proportion to what changed, not to the window. The value is the one ``report.percentile`` picks from all the
values sorted, whatever the pieces.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from ..report import percentile_rank

MAX_KEPT_VALUES = 6_000_000
"""Values held in kept unions at most (8 bytes each), over every window and group asked for."""

_EMPTY = np.empty(0)


class Unions:
    """Sorted unions of stable pieces, by the pieces' identity. Each entry holds its pieces, so an identity
    cannot be reused by another array while the entry lives. Thread-safe."""

    def __init__(self, max_values: int = MAX_KEPT_VALUES) -> None:
        self.max_values = max_values
        self._kept: OrderedDict[tuple[int, ...], tuple[list[np.ndarray], np.ndarray]] = OrderedDict()
        self._values = 0
        self._lock = threading.Lock()

    def union(self, pieces: list[np.ndarray]) -> np.ndarray:
        """The pieces' values, sorted."""
        pieces = [p for p in pieces if len(p)]
        if len(pieces) <= 1:
            return pieces[0] if pieces else _EMPTY
        key = tuple(map(id, pieces))
        with self._lock:
            hit = self._kept.get(key)
            if hit is not None:
                self._kept.move_to_end(key)
                return hit[1]
        union = np.sort(np.concatenate(pieces))
        with self._lock:
            if key not in self._kept:
                self._kept[key] = (pieces, union)
                self._values += len(union)
            while self._values > self.max_values and self._kept:
                self._values -= len(self._kept.popitem(last=False)[1][1])
        return union


def kth(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """The ``k``-th smallest value (from 0) of the values of the sorted array ``a`` and of ``b`` (any order).

    At most ``len(b)`` values of ``b`` come before it, so it is among ``a[k - len(b):k + 1]`` and ``b``: a
    selection over at most ``2 * len(b) + 1`` values, whatever ``a`` holds."""
    if not len(b):
        return float(a[k])
    first = max(0, k - len(b))
    near = np.concatenate((a[first:k + 1], b))
    return float(np.partition(near, k - first)[k - first])


def percentiles(unions: Unions, stable: list[np.ndarray], changing: list[np.ndarray],
                qs: tuple[float, ...] = (0.50, 0.95)) -> tuple[float | None, ...]:
    """Nearest-rank percentiles (``report.percentile_rank``) of every value in ``stable`` and ``changing``."""
    kept = unions.union(stable)
    fresh = [p for p in changing if len(p)]
    rest = np.concatenate(fresh) if fresh else _EMPTY
    count = len(kept) + len(rest)
    if not count:
        return tuple(None for _ in qs)
    return tuple(kth(kept, rest, percentile_rank(count, q)) for q in qs)
