"""Settings the config hands to the request path: frozen, slotted dataclasses read on every attempt.

The pydantic sections in ``schema.py`` validate what a user wrote; these are what ``breaker.py`` and
``state.py`` keep, so checking a breaker or a cold start reads a plain attribute, not a model. A leaf: it
imports nothing from llmroute, so the config builds them without importing the layers that use them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """A circuit breaker's thresholds (``breaker`` in the config; ``llmroute.breaker`` explains them)."""

    failures: int = 5
    window_s: float = 10.0
    error_rate: float = 0.5
    min_requests: int = 20
    consecutive_timeouts: int = 2
    open_s: float = 5.0
    max_open_s: float = 60.0
    half_open_probes: int = 1
    probe_timeout_s: float = 30.0
    """A probe whose outcome never came (its caller left) frees its slot after this long."""


@dataclass(frozen=True, slots=True)
class ColdStartSettings:
    """When a provider counts as cold (``providers.NAME.cold_start``; keep-warm pings are the health monitor's)."""

    idle_s: float | None = None
    factor: float = 3.0
    warm_s: float = 30.0
