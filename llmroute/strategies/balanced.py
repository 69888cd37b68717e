"""balanced: a deterministic weighted split (default 80/20)."""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from typing import TYPE_CHECKING

from ..config.enums import RoutingStrategy
from .base import RouteRequest, StrategyBase

if TYPE_CHECKING:
    from ..config import RouterConfig
    from ..state import RouterState

MAX_CYCLE = 10_000
SHARE_DENOMINATOR = 10_000
"""A paced share is split exactly as the nearest fraction with at most this denominator (0.01% steps)."""


def smooth_weighted_schedule(weights: dict[str, float]) -> list[str]:
    """One cycle of smooth weighted round-robin (nginx's algorithm).

    Weights are reduced to the smallest whole numbers with the same ratios, so
    any window of a whole number of cycles has exactly the configured split
    (80/20 gives a cycle of 5: 100 consecutive requests are exactly 80/20),
    and the picks of each provider are spread evenly inside the cycle.
    """
    fractions = {n: Fraction(w).limit_denominator(1000) for n, w in weights.items() if w > 0}
    if not fractions:
        raise ValueError("at least one weight must be > 0")
    scale = math.lcm(*(f.denominator for f in fractions.values()))
    ints = {n: int(f * scale) for n, f in fractions.items()}
    divisor = math.gcd(*ints.values())
    ints = {n: v // divisor for n, v in ints.items()}
    total = sum(ints.values())
    if total > MAX_CYCLE:
        raise ValueError(f"weights {weights} need a cycle of {total} requests; round them")
    current = dict.fromkeys(ints, 0)
    schedule = []
    for _ in range(total):
        for name, weight in ints.items():
            current[name] += weight
        pick = max(current, key=current.__getitem__)
        current[pick] -= total
        schedule.append(pick)
    return schedule


@functools.lru_cache(maxsize=256)
def _ratio(share: float) -> tuple[int, int]:
    """``share`` as p/q in lowest terms: the split below is integer arithmetic, exact however long it runs."""
    fraction = Fraction(min(max(share, 0.0), 1.0)).limit_denominator(SHARE_DENOMINATOR)
    return fraction.numerator, fraction.denominator


def goes_strong(n: int, share: float) -> bool:
    """Does the ``n``-th request (0, 1, 2, ...) of a run at ``share`` go strong? Bresenham's rule: iff
    floor((n+1)s) > floor(ns), so any k consecutive requests hold floor(ks) or ceil(ks) strong ones."""
    p, q = _ratio(share)
    return (n + 1) * p // q > n * p // q


class Balanced(StrategyBase):
    """First choice follows the schedule; the fallback order is by weight, then by price.

    The position in the schedule comes from the shared state's counter, so several
    gateway workers sharing one state still split exactly. A request's ``strong_share``
    (budget pacing) replaces the weights by a strong/weak split at that share, between
    quality_aware's pair, counted per scope so each paced budget's split is exact.
    """

    name = RoutingStrategy.BALANCED

    def __init__(self, config: RouterConfig, state: RouterState, weights: dict[str, float] | None = None) -> None:
        super().__init__(config, state)
        self.weights = weights if weights is not None else config.weights()
        self.schedule = smooth_weighted_schedule(self.weights)
        typical = RouteRequest(input_tokens=500, output_tokens=config.expected_output_tokens)
        self._fallback_rank = sorted(
            config.providers, key=lambda n: (-self.weights.get(n, 0.0), self.expected_cost_usd(n, typical))
        )
        self._counter_key = "balanced:" + ",".join(f"{n}={w:g}" for n, w in sorted(self.weights.items()))
        strong, weak = config.quality_pair()
        rest = [n for n in self._fallback_rank if n not in (strong, weak)]
        self._paced_orders = ({True: [strong, weak, *rest], False: [weak, strong, *rest]}
                              if strong != weak else None)
        """The order for a paced request going strong (True) or weak (False); None with one provider."""

    def order(self, request: RouteRequest) -> list[str]:
        paced = request.strong_share
        if paced is not None and self._paced_orders is not None:
            n = self.state.next_count("balanced:paced:" + paced.scope)
            return list(self._paced_orders[goes_strong(n, paced.share)])
        first = self.schedule[self.state.next_count(self._counter_key) % len(self.schedule)]
        return [first, *(n for n in self._fallback_rank if n != first)]
