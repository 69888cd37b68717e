"""cost_optimized: cheapest first, by the request's expected input/output mix."""

from __future__ import annotations

from ..config.enums import RoutingStrategy
from .base import RouteRequest, StrategyBase


class CostOptimized(StrategyBase):
    """Cheapest provider first. Ties go to the higher quality tier, then the faster one."""

    name = RoutingStrategy.COST_OPTIMIZED

    def order(self, request: RouteRequest) -> list[str]:
        providers = self.config.providers
        return sorted(
            providers,
            key=lambda n: (self.expected_cost_usd(n, request), -providers[n].quality, self.latency_ms(n)),
        )
