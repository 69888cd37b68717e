"""What a running gateway knows that its ledger does not: breakers, measured latency, rate-limit headroom,
cold starts, pools, budgets, pacing, live spend and the drift alarm.

Captured on the event loop (a few dictionary reads, as ``/router/state`` makes them) before a view is
computed in a thread, so no thread reads the router's state while the loop changes it. Never a key, a
header value or a URL.
"""

from __future__ import annotations

import time
from typing import Any, Protocol


class GatewayLike(Protocol):
    """The parts of ``gateway.app.Gateway`` read here (a protocol: the gateway imports this package)."""

    router: Any
    budgeting: Any
    pacing: Any


class Live:
    def __init__(self, gateway: GatewayLike) -> None:
        self.gateway = gateway

    def capture(self) -> dict[str, Any]:
        router = self.gateway.router
        budgets = self.gateway.budgeting.budgets.snapshot()
        pacing = self.gateway.pacing.states() if self.gateway.pacing else {}
        shares = [p["share"] for p in pacing.values() if p.get("share") is not None]
        return {"providers": self.providers(), "budgets": budgets, "pacing": pacing,
                "spend": router.spend.snapshot() if router.spend is not None else None,
                "drift": self.drift(), "strong_share": min(shares) if shares else None}

    def providers(self) -> dict[str, dict[str, Any]]:
        router = self.gateway.router
        state, config = router.state, router.config
        clock, wall = time.monotonic(), time.time()
        out = {}
        for name, stats in state.snapshot().items():
            if name not in config.providers:
                continue
            limits = state.ratelimit(name)
            out[name] = {
                "breaker": state.breaker(name).describe(),
                "latency_ms": round(stats.latency_ms, 3), "latency_samples": stats.samples,
                "successes": stats.successes, "failures": stats.failures, "error_rate": round(stats.error_rate, 4),
                "failures_by_kind": dict(stats.failures_by_kind),
                "recent_failures": [{"ts": t, "kind": k, "status": s} for t, k, s in stats.recent_failures],
                "rate_limit": _headroom(limits, clock),
                "cold": state.warming(name), "cold_starts": stats.cold_starts,
                "cooling_down_s": round(max(0.0, stats.cooldown_until - wall), 3),
                "pool": router.providers[name].pool_stats.snapshot(),
            }
        return out

    def drift(self) -> dict[str, Any]:
        """The drift alarm as the live shadow evaluation holds it (``evaluation/drift.py``)."""
        router = self.gateway.router
        shadow = router.shadow
        if shadow is None:
            return {"live": True, "enabled": False, "alert_below": None, "alarm": None, "retained": None,
                    "ci_low": None, "ci_high": None, "pairs": 0}
        snap = shadow.snapshot()
        estimate = snap.get("retained")
        alert_below = snap.get("alert_below")
        return drift_state(True, alert_below, router.config.shadow.min_pairs,
                           None if estimate is None else (estimate["estimate"], estimate["low"], estimate["high"],
                                                          estimate["pairs"]))


def drift_state(live: bool, alert_below: float | None, min_pairs: int,
                estimate: tuple[float, float, float, int] | None) -> dict[str, Any]:
    """The alarm as ``DriftWatch`` raises it: enough pairs, and even the interval's upper bound below the target."""
    value, low, high, pairs = estimate if estimate is not None else (None, None, None, 0)
    alarm = None if alert_below is None else bool(high is not None and pairs >= min_pairs and high < alert_below)
    return {"live": live, "enabled": True, "alert_below": alert_below, "alarm": alarm, "retained": value,
            "ci_low": low, "ci_high": high, "pairs": pairs, "min_pairs": min_pairs}


def _headroom(limits: Any, clock: float) -> dict[str, float | None] | None:
    """What the provider's last ``x-ratelimit-*`` headers left, less what was sent since (the tightest bucket)."""
    out: dict[str, float | None] = {}
    for unit, buckets in (("tokens", limits.tokens), ("requests", limits.requests)):
        live = [b for b in buckets if b.resets_at > clock]
        tightest = min(live, key=lambda b: b.remaining) if live else None
        out[f"{unit}_remaining"] = None if tightest is None else round(tightest.remaining, 3)
        out[f"{unit}_resets_in_s"] = None if tightest is None else round(tightest.resets_at - clock, 3)
    return out if any(v is not None for v in out.values()) else None
