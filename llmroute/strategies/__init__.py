"""Routing strategies: one small class per policy behind the ``Strategy`` interface."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..config.enums import RoutingStrategy
from .balanced import Balanced, smooth_weighted_schedule
from .base import Route, RouteRequest, Strategy, StrategyBase, StrongShare
from .cost import CostOptimized
from .latency import LatencyOptimized
from .quality import QualityOptimized
from .quality_aware import QualityAware

if TYPE_CHECKING:
    from ..config import RouterConfig
    from ..state import RouterState

STRATEGIES: dict[RoutingStrategy, type[StrategyBase]] = {
    RoutingStrategy.COST_OPTIMIZED: CostOptimized,
    RoutingStrategy.LATENCY_OPTIMIZED: LatencyOptimized,
    RoutingStrategy.QUALITY_OPTIMIZED: QualityOptimized,
    RoutingStrategy.BALANCED: Balanced,
    RoutingStrategy.QUALITY_AWARE: QualityAware,
}


def build_strategy(name: RoutingStrategy | str, config: RouterConfig, state: RouterState) -> StrategyBase:
    """The strategy called ``name``; raises ``ValueError`` listing the valid names otherwise."""
    try:
        key = RoutingStrategy(name)
    except ValueError:
        valid = ", ".join(s.value for s in RoutingStrategy)
        raise ValueError(f"unknown strategy '{name}' (valid: {valid})") from None
    return STRATEGIES[key](config, state)


__all__ = [
    "Balanced",
    "CostOptimized",
    "LatencyOptimized",
    "QualityAware",
    "QualityOptimized",
    "Route",
    "RouteRequest",
    "RoutingStrategy",
    "Strategy",
    "StrategyBase",
    "StrongShare",
    "build_strategy",
    "smooth_weighted_schedule",
]
