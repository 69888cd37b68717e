"""balanced: a deterministic weighted split (default 80/20)."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import TYPE_CHECKING

from .base import RouteRequest, RoutingStrategy, StrategyBase

if TYPE_CHECKING:
    from ..config import RouterConfig
    from ..state import RouterState

MAX_CYCLE = 10_000


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


class Balanced(StrategyBase):
    """First choice follows the schedule; the fallback order is by weight, then by price.

    The position in the schedule comes from the shared state's counter, so several
    gateway workers sharing one state still split exactly.
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

    def order(self, request: RouteRequest) -> list[str]:
        first = self.schedule[self.state.next_count(self._counter_key) % len(self.schedule)]
        return [first, *(n for n in self._fallback_rank if n != first)]
