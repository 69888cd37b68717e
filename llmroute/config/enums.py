"""The enums the config validates and every layer above it shares.

A leaf: it imports nothing from llmroute, so the config (the lowest layer) can use these names and strategies,
router, gateway and CLI can import them from here without reaching back down through each other.
"""

from __future__ import annotations

import difflib
from enum import StrEnum


class RoutingStrategy(StrEnum):
    """Names a client can use in config, the Python API or the gateway's ``model`` field."""

    COST_OPTIMIZED = "cost_optimized"
    LATENCY_OPTIMIZED = "latency_optimized"
    QUALITY_OPTIMIZED = "quality_optimized"
    BALANCED = "balanced"
    QUALITY_AWARE = "quality_aware"

    @classmethod
    def _missing_(cls, value: object) -> RoutingStrategy:
        """``RoutingStrategy("cheapest")`` names the valid strategies, and the closest one if any."""
        raise ValueError(unknown_strategy_message(value))


def unknown_strategy_message(value: object) -> str:
    """Why ``value`` is not a strategy, in the words every entry point (API, config, CLI) uses."""
    names = [s.value for s in RoutingStrategy]
    close = difflib.get_close_matches(str(value), names, n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown strategy {str(value)!r} (valid: {', '.join(names)}){hint}"
