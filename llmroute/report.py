"""``llmroute report``: spend, tokens, latency and savings from the ledger, grouped any way.

Sums run as one SQL aggregate; latency percentiles need every latency of a
group, so they come from a second query sorted in Python. Savings price the
same token counts on the baseline (premium) provider.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from .ledger import Store
from .ledger.store import PriceRow

GROUPS = ("provider", "strategy", "model", "tag", "key", "user", "day", "route", "status")
_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_SPAN_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(slots=True)
class ReportRow:
    group: str
    requests: int
    failed: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    unknown_cost_requests: int
    """Requests whose price was unknown: not counted as free, counted here."""
    gpu_priced_requests: int
    """Requests priced from worker time (an attribution of a per-second bill)."""
    fallbacks: int
    p50_ms: float | None
    p95_ms: float | None
    baseline_usd: float

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def blended_per_m(self) -> float:
        return self.cost_usd * 1e6 / self.tokens if self.tokens else 0.0

    @property
    def savings_usd(self) -> float:
        return self.baseline_usd - self.cost_usd

    @property
    def savings_pct(self) -> float:
        return 100 * self.savings_usd / self.baseline_usd if self.baseline_usd else 0.0

    @property
    def fallback_rate(self) -> float:
        return self.fallbacks / self.requests if self.requests else 0.0

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data.update(tokens=self.tokens, blended_per_m=self.blended_per_m, savings_usd=self.savings_usd,
                    savings_pct=self.savings_pct, fallback_rate=self.fallback_rate)
        return data


@dataclass(slots=True)
class ProviderPrice:
    """What a provider was configured to cost, and what it effectively cost in the period."""

    provider: str
    configured: str
    effective_per_m: float | None
    busy_s: float | None
    tokens: int


def parse_span(text: str) -> float:
    """'7d' -> seconds; s, m, h, d and w."""
    match = _SPAN.match(text)
    if not match:
        raise ValueError(f"'{text}' is not a time span; use a number and s, m, h, d or w, e.g. 7d")
    return float(match.group(1)) * _SPAN_S[match.group(2)]


def parse_time(text: str) -> float:
    """An ISO date or date-time (UTC unless it says otherwise) -> Unix seconds."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"'{text}' is not a date; use YYYY-MM-DD or YYYY-MM-DDTHH:MM") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def window(since: str | None, start: str | None, end: str | None, now: float | None = None) -> tuple[float, float]:
    """(from, to) in Unix seconds from ``--since`` or ``--from``/``--to``; default the last 30 days."""
    now = time.time() if now is None else now
    if since and (start or end):
        raise ValueError("use either --since or --from/--to, not both")
    if start or end:
        lo = parse_time(start) if start else 0.0
        hi = parse_time(end) + (86400 if end and len(end.strip()) == 10 else 0) if end else now + 1
        if hi <= lo:
            raise ValueError("--to must be after --from")
        return lo, hi
    return now - parse_span(since or "30d"), now + 1


def _group_sql(store: Store, by: str) -> tuple[str, str]:
    """(expression, FROM clause) for a grouping."""
    column = {"provider": "provider", "strategy": "strategy", "model": "model", "key": "key_id",
              "user": "user_id", "route": "route", "status": "status"}
    if by == "day":
        return store.day_expr, "requests"
    if by == "tag":
        return "t.value", store.tag_source
    if by not in column:
        raise ValueError(f"--by must be one of {', '.join(GROUPS)}, not '{by}'")
    return f"COALESCE({column[by]}, '(none)')", "requests"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted values."""
    rank = max(0, min(len(values) - 1, int(q * len(values) + 0.999999) - 1))
    return values[rank]


def build_report(
    store: Store, by: str, lo: float, hi: float, baseline: PriceRow | None,
) -> tuple[list[ReportRow], ReportRow]:
    """(one row per group, the total), over requests with ``lo <= ts < hi``."""
    expr, source = _group_sql(store, by)
    prefix = "r." if by == "tag" else ""
    sums = (
        f"COUNT(*), SUM(CASE WHEN {prefix}status = 'ok' THEN 0 ELSE 1 END), SUM({prefix}prompt_tokens), "
        f"SUM({prefix}completion_tokens), SUM({prefix}cached_tokens), SUM(COALESCE({prefix}cost_usd, 0)), "
        f"SUM(CASE WHEN {prefix}cost_usd IS NULL THEN 1 ELSE 0 END), "
        f"SUM(CASE WHEN {prefix}cost_basis = 'gpu_seconds' THEN 1 ELSE 0 END), "
        f"SUM(CASE WHEN {prefix}fallback THEN 1 ELSE 0 END)"
    )
    where = f"WHERE {prefix}ts >= ? AND {prefix}ts < ?"
    grouped = store.fetch(f"SELECT {expr} AS g, {sums} FROM {source} {where} GROUP BY {expr} ORDER BY 1", (lo, hi))
    latencies: dict[str, list[float]] = defaultdict(list)
    every: list[float] = []
    for group, latency in store.fetch(f"SELECT {expr}, {prefix}latency_ms FROM {source} {where}", (lo, hi)):
        latencies[str(group)].append(latency)
    if by != "tag":
        every = [v for values in latencies.values() for v in values]
    else:
        every = [r[0] for r in store.fetch(f"SELECT latency_ms FROM requests WHERE ts >= ? AND ts < ?", (lo, hi))]
    rows = [_row(str(g), rest, latencies[str(g)], baseline) for g, *rest in grouped]
    total_sums = store.fetch(f"SELECT {sums.replace('r.', '')} FROM requests WHERE ts >= ? AND ts < ?", (lo, hi))[0]
    total = _row("total", list(total_sums), every, baseline)
    return rows, total


def _row(group: str, sums: list[object], latencies: list[float], baseline: PriceRow | None) -> ReportRow:
    count, failed, prompt, completion, cached, cost, unknown, gpu, fallbacks = (v or 0 for v in sums)
    latencies.sort()
    return ReportRow(
        group=group, requests=int(count), failed=int(failed), prompt_tokens=int(prompt),
        completion_tokens=int(completion), cost_usd=float(cost), unknown_cost_requests=int(unknown),
        gpu_priced_requests=int(gpu), fallbacks=int(fallbacks),
        p50_ms=percentile(latencies, 0.50) if latencies else None,
        p95_ms=percentile(latencies, 0.95) if latencies else None,
        baseline_usd=baseline_cost(baseline, int(prompt), int(completion), int(cached)),
    )


def baseline_cost(price: PriceRow | None, prompt: int, completion: int, cached: int) -> float:
    """The same tokens on the baseline provider (cached prompt tokens at its cached price, where it has one)."""
    if price is None or price.input_per_m is None or price.output_per_m is None:
        return 0.0
    cached_price = price.cached_input_per_m
    cached = min(cached, prompt) if cached_price is not None else 0
    return ((prompt - cached) * price.input_per_m + cached * (cached_price or 0.0)
            + completion * price.output_per_m) / 1e6


def busy_seconds(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of (start, end) intervals: the time a worker had at least one request."""
    total = 0.0
    current_start = current_end = None
    for start, end in sorted(intervals):
        if current_end is None or start > current_end:
            if current_end is not None:
                total += current_end - current_start  # type: ignore[operator]
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        total += current_end - current_start  # type: ignore[operator]
    return total


def provider_prices(store: Store, prices: dict[str, PriceRow], lo: float, hi: float) -> list[ProviderPrice]:
    """Configured against effective prices. For GPU-second providers the effective $/1M comes from the
    worker's busy time (the union of its requests' intervals) and the tokens it served."""
    out = []
    served = dict(store.fetch(
        "SELECT provider, SUM(prompt_tokens + completion_tokens) FROM requests "
        "WHERE ts >= ? AND ts < ? AND provider IS NOT NULL GROUP BY provider", (lo, hi)))
    costs = dict(store.fetch(
        "SELECT provider, SUM(cost_usd) FROM requests WHERE ts >= ? AND ts < ? AND provider IS NOT NULL "
        "GROUP BY provider", (lo, hi)))
    for name in sorted(set(prices) | set(served)):
        price = prices.get(name)
        tokens = int(served.get(name) or 0)
        if price is not None and price.per_gpu_second is not None:
            spans = store.fetch("SELECT ts - latency_ms / 1000.0, ts FROM requests WHERE provider = ? "
                                "AND ts >= ? AND ts < ?", (name, lo, hi))
            busy = busy_seconds([(float(a), float(b)) for a, b in spans])
            usd = busy * price.per_gpu_second / (1 - price.idle_share)
            idle = f" + {price.idle_share:.0%} idle" if price.idle_share else ""
            out.append(ProviderPrice(name, f"${price.per_gpu_second:g}/GPU-second{idle}",
                                     usd * 1e6 / tokens if tokens else None, busy, tokens))
            continue
        configured = (f"${price.input_per_m:g} in / ${price.output_per_m:g} out per 1M"
                      if price is not None and price.input_per_m is not None else "unknown (not in config)")
        cost = costs.get(name)
        out.append(ProviderPrice(name, configured, float(cost) * 1e6 / tokens if tokens and cost is not None else None,
                                 None, tokens))
    return out


def daily_by_provider(store: Store, lo: float, hi: float) -> list[tuple[str, str, float, int, int, int]]:
    """(day, provider, cost, prompt, completion, cached) for the plot."""
    return [(str(d), str(p), float(c or 0), int(pt or 0), int(ct or 0), int(ca or 0)) for d, p, c, pt, ct, ca in store.fetch(
        f"SELECT {store.day_expr} AS d, COALESCE(provider, '(none)'), SUM(COALESCE(cost_usd, 0)), SUM(prompt_tokens), "
        f"SUM(completion_tokens), SUM(cached_tokens) FROM requests WHERE ts >= ? AND ts < ? "
        f"GROUP BY d, COALESCE(provider, '(none)') ORDER BY d", (lo, hi))]
