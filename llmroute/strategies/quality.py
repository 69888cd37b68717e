"""quality_optimized: highest quality tier first."""

from __future__ import annotations

from ..config.enums import RoutingStrategy
from .base import RouteRequest, StrategyBase


class QualityOptimized(StrategyBase):
    """Highest quality tier first; within a tier, the lowest measured latency."""

    name = RoutingStrategy.QUALITY_OPTIMIZED

    def order(self, request: RouteRequest) -> list[str]:
        providers = self.config.providers
        return sorted(providers, key=lambda n: (-providers[n].quality, self.latency_ms(n)))
