"""How good a router's ranking is, in the RouteLLM paper's terms (arXiv 2406.18665).

Sort prompts by the router's score, send the top fraction f to the strong model, and read
q(f), the mean score of the answers chosen. Calls needed for 95% quality: the smallest f
on the grid 0, 0.01, ..., 1 with q(f) >= 0.95 q(1). APGR: the mean over that grid of
(q(f) - q(0)) / (q(1) - q(0)). Random routing is the straight line between q(0) and q(1)
(APGR 0.5).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

GRID = [i / 100 for i in range(101)]


@dataclass(frozen=True, slots=True)
class Curve:
    """q(f) on ``GRID`` for one ranking."""

    quality: list[float]

    @property
    def weak_only(self) -> float:
        return self.quality[0]

    @property
    def strong_only(self) -> float:
        return self.quality[-1]

    def calls_for(self, share_of_strong: float = 0.95) -> float | None:
        """Smallest strong-call fraction whose quality reaches ``share_of_strong`` of strong-only."""
        target = share_of_strong * self.strong_only
        return next((f for f, q in zip(GRID, self.quality) if q >= target - 1e-12), None)

    def apgr(self) -> float:
        gap = self.strong_only - self.weak_only
        if gap <= 0:
            return 0.0
        return sum((q - self.weak_only) / gap for q in self.quality) / len(self.quality)

    def at(self, fraction: float) -> float:
        return self.quality[round(fraction * 100)]


def curve(scores: Sequence[float], weak: Sequence[float], strong: Sequence[float]) -> Curve:
    """q(f) when the prompts with the highest router ``scores`` go to the strong model."""
    n = len(scores)
    if not (n == len(weak) == len(strong)) or n == 0:
        raise ValueError("scores, weak and strong need the same, non-zero length")
    order = sorted(range(n), key=lambda i: -scores[i])
    base = sum(weak)
    gains = [strong[i] - weak[i] for i in order]
    prefix = [0.0]
    for gain in gains:
        prefix.append(prefix[-1] + gain)
    return Curve([(base + prefix[round(f * n)]) / n for f in GRID])


def random_curve(weak: Sequence[float], strong: Sequence[float]) -> Curve:
    """The expected curve of routing a random fraction f to the strong model."""
    q0, q1 = sum(weak) / len(weak), sum(strong) / len(strong)
    return Curve([q0 + f * (q1 - q0) for f in GRID])
