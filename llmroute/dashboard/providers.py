"""The providers view: breaker, latency, rate-limit headroom, cold or warm, prices and failures.

From the live gateway state when served by the gateway (``live: true``); from the ledger alone otherwise,
where what only a running router knows (breaker, measured EWMA, headroom, pools) is null.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from ..report import SKIPPED_KINDS, Report

if TYPE_CHECKING:
    from ..config import RouterConfig

RECENT_FAILURES = 20
"""Latest failed attempts shown per provider."""
HOUR_S = 3600


def provider_view(failed: Failures | None, built: Report | None, config: RouterConfig | None,
                  snap: dict[str, Any] | None) -> dict[str, Any]:
    """``failed``: the window's failed attempts (none without a ledger)."""
    live = snap["providers"] if snap is not None else {}
    rows = {r.group: r for r in built.rows} if built is not None else {}
    prices = {p.provider: p for p in built.prices} if built is not None else {}
    failures = failures_view(failed) if failed is not None else {}
    names = [*(config.providers if config is not None else ()), *sorted(set(rows) | set(prices) - {"(none)"})]
    out = []
    for name in dict.fromkeys(names):
        row, price, now = rows.get(name), prices.get(name), live.get(name)
        p = config.providers.get(name) if config is not None else None
        seen = failures.get(name)
        out.append({
            "provider": name, "model": p.model if p is not None else None,
            "breaker": now["breaker"] if now else None,
            "breaker_history": seen["breaker_history"] if seen else [],
            "latency_ms": now["latency_ms"] if now else None, "latency_samples": now["latency_samples"] if now else None,
            "latency_p50_ms": row.p50_ms if row else None, "latency_p95_ms": row.p95_ms if row else None,
            "requests": row.requests if row else 0, "failed": row.failed if row else 0,
            "error_rate": (row.failed / row.requests if row and row.requests else None),
            "rate_limit": now["rate_limit"] if now else None, "cold": now["cold"] if now else None,
            "cold_starts": now["cold_starts"] if now else None,
            "cooling_down_s": now["cooling_down_s"] if now else None, "pool": now["pool"] if now else None,
            "live_failures_by_kind": now["failures_by_kind"] if now else None,
            "price": {**(asdict(price) if price is not None else {"configured": None, "effective_per_m": None,
                                                                   "busy_s": None, "tokens": 0}),
                      "price_per_m": p.price_per_m.model_dump(exclude_none=True) if p is not None and p.price_per_m else None,
                      "price_per_gpu_second": p.price_per_gpu_second if p is not None else None},
            "failures_by_kind": seen["by_kind"] if seen else {},
            "recent_failures": seen["recent"] if seen else (now["recent_failures"] if now else []),
        })
    for entry in out:
        entry["price"].pop("provider", None)
    return {"live": snap is not None, "providers": out}


@dataclass(slots=True)
class Failures:
    """Failed attempts per provider in a stretch of the ledger: by kind, breaker-open skips per hour, and the
    latest ones (newest first). Failures of disjoint stretches add up (``merge_failures``)."""

    by_kind: dict[str, Counter[str]] = field(default_factory=dict)
    skips: dict[str, Counter[float]] = field(default_factory=dict)
    recent: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def failures_of(rows: list[tuple[Any, ...]]) -> Failures:
    """From (ts, request_id, attempts JSON) rows, newest first (only requests that did not succeed at the first
    attempt store their attempts)."""
    out = Failures(defaultdict(Counter), defaultdict(Counter), defaultdict(list))
    for ts, request_id, text in rows:
        try:
            attempts = orjson.loads(text)
        except orjson.JSONDecodeError:
            continue
        for a in attempts if isinstance(attempts, list) else ():
            if not isinstance(a, dict) or a.get("ok"):
                continue
            name, kind = str(a.get("provider")), str(a.get("kind"))
            out.by_kind[name][kind] += 1
            if kind == "circuit_open":
                out.skips[name][ts // HOUR_S * HOUR_S] += 1
            if kind not in SKIPPED_KINDS and len(out.recent[name]) < RECENT_FAILURES:
                out.recent[name].append({"ts": ts, "kind": kind, "status": a.get("status"), "request_id": request_id,
                                         "error": a.get("error")})
    return Failures(dict(out.by_kind), dict(out.skips), dict(out.recent))


def merge_failures(parts: list[Failures]) -> Failures:
    """Failures of disjoint stretches given oldest first, as one: counts added, the latest kept."""
    out = Failures(defaultdict(Counter), defaultdict(Counter), defaultdict(list))
    for part in parts:
        for name, kinds in part.by_kind.items():
            out.by_kind[name].update(kinds)
        for name, hours in part.skips.items():
            out.skips[name].update(hours)
    for part in reversed(parts):
        for name, recent in part.recent.items():
            out.recent[name].extend(recent[:RECENT_FAILURES - len(out.recent[name])])
    return out


def failures_view(failures: Failures) -> dict[str, dict[str, Any]]:
    """Per provider: failures by kind (most common first), the latest ones, breaker-open skips per hour."""
    return {name: {"by_kind": dict(kinds.most_common()), "recent": failures.recent.get(name, []),
                   "breaker_history": [{"hour_ts": h, "circuit_open_skips": n}
                                       for h, n in sorted(failures.skips.get(name, Counter()).items())]}
            for name, kinds in failures.by_kind.items()}
