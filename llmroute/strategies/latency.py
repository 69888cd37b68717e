"""latency_optimized: fastest first, by measured latency."""

from __future__ import annotations

from ..config.enums import RoutingStrategy
from .base import RouteRequest, StrategyBase


class LatencyOptimized(StrategyBase):
    """Lowest latency estimate first: the EWMA of recent requests, or the config prior before any.
    A provider warming up from a cold start goes last until it is warm."""

    name = RoutingStrategy.LATENCY_OPTIMIZED

    def order(self, request: RouteRequest) -> list[str]:
        return sorted(self.config.providers,
                      key=lambda n: (self.state.warming(n), self.latency_ms(n), self.expected_cost_usd(n, request)))
