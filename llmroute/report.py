"""``llmroute report``: spend, tokens, latency and savings from the ledger, grouped any way.

Sums run as one SQL aggregate; latency percentiles need every latency of a
group, so they come from a second query sorted in Python. Savings price the
same token counts on the baseline (premium) provider.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import orjson

from .ledger import Store
from .ledger.schema import GRADED_PAIRS
from .ledger.store import PriceRow
from .pricing import per_million, savings_pct

if TYPE_CHECKING:
    from .config import RouterConfig

GROUPS = ("provider", "strategy", "model", "tag", "key", "user", "day", "route", "status", "decision")
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
    estimated_tokens_requests: int
    """Requests priced from estimated tokens: the provider sent no usage."""
    p50_ms: float | None
    p95_ms: float | None
    baseline_usd: float

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def blended_per_m(self) -> float:
        return per_million(self.cost_usd, self.tokens)

    @property
    def savings_usd(self) -> float:
        return self.baseline_usd - self.cost_usd

    @property
    def savings_pct(self) -> float:
        return savings_pct(self.baseline_usd, self.cost_usd)

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


def _group_expr(store: Store, by: str) -> str:
    """The SQL expression a grouping groups by (tags are split in Python)."""
    column = {"provider": "provider", "strategy": "strategy", "model": "model", "key": "key_id",
              "user": "user_id", "route": "route", "status": "status", "decision": "route_decision"}
    if by == "day":
        return store.day_number_expr
    if by == "tag":
        return "tags"
    if by not in column:
        raise ValueError(f"--by must be one of {', '.join(GROUPS)}, not '{by}'")
    return f"COALESCE({column[by]}, '(none)')"


def day_label(day_number: object) -> str:
    """Days since the epoch (what the stores group by: cheaper than formatting every row) -> YYYY-MM-DD."""
    return time.strftime("%Y-%m-%d", time.gmtime(int(day_number) * 86400))  # type: ignore[call-overload]


def percentile_rank(count: int, q: float) -> int:
    """The index of the nearest-rank percentile among ``count`` sorted values."""
    return max(0, min(count - 1, int(q * count + 0.999999) - 1))


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted values."""
    return values[percentile_rank(len(values), q)]


# The sums every report row needs, in ``_row``'s order.
SUMS = (
    "COUNT(*), SUM(CASE WHEN status = 'ok' THEN 0 ELSE 1 END), SUM(prompt_tokens), SUM(completion_tokens), "
    "SUM(cached_tokens), SUM(COALESCE(cost_usd, 0)), SUM(CASE WHEN cost_usd IS NULL THEN 1 ELSE 0 END), "
    "SUM(CASE WHEN cost_basis = 'gpu_seconds' THEN 1 ELSE 0 END), SUM(CASE WHEN fallback THEN 1 ELSE 0 END), "
    "SUM(CASE WHEN cost_basis = 'tokens_estimated' THEN 1 ELSE 0 END)"
)


def fetch_parallel(store: Store, queries: dict[str, tuple[str, tuple[object, ...]]]) -> dict[str, list[tuple]]:
    """Run independent read queries at once, one connection each: each is a full scan, and the
    database does the work without holding the GIL, so two cores finish them in about the time of one."""
    names = list(queries)
    if len(names) == 1:
        return {names[0]: store.fetch(*queries[names[0]])}

    def run(name: str) -> list[tuple]:
        reader = store.reader()
        try:
            return reader.fetch(*queries[name])
        finally:
            reader.close()

    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        futures = {name: pool.submit(run, name) for name in names[1:]}
        results = {names[0]: store.fetch(*queries[names[0]])}
        results.update({name: future.result() for name, future in futures.items()})
    return results


@dataclass(slots=True)
class Report:
    rows: list[ReportRow]
    total: ReportRow
    prices: list[ProviderPrice]
    measurement: dict[str, float | int] = field(default_factory=dict)
    """Shadow and judge spend in the period (``measurement_spend``): not part of serving spend."""


def build_report(
    store: Store, by: str, lo: float, hi: float, baseline: PriceRow | None, prices: dict[str, PriceRow] | None = None,
) -> Report:
    """Groups, the total and each provider's configured and effective price, over ``lo <= ts < hi``."""
    expr = _group_expr(store, by)
    window_sql = "FROM requests WHERE ts >= ? AND ts < ?"
    window_params = (lo, hi)
    by_provider = "COALESCE(provider, '(none)')"
    queries: dict[str, tuple[str, tuple[object, ...]]] = {
        # Sums by provider give the total and each provider's effective price, whatever the grouping.
        "providers": (f"SELECT {by_provider}, {SUMS} {window_sql} GROUP BY {by_provider}", window_params),
        "latencies": (f"SELECT {expr}, latency_ms {window_sql}", window_params),
    }
    if by != "provider":
        # Tags: group by the tag set (few distinct ones); each set's sums then go to each of its tags.
        queries["groups"] = (f"SELECT {expr}, {SUMS} {window_sql} GROUP BY {expr}", window_params)
    results = fetch_parallel(store, queries)
    if by == "tag":
        results["groups"] = _explode_tags(results["groups"])
    latencies: dict[object, list[float]] = defaultdict(list)
    every: list[float] = []
    if by == "tag":
        split: dict[str | None, list[str]] = {}
        for tags, latency in results["latencies"]:
            names = split.get(tags)
            if names is None:
                names = split[tags] = tag_names(tags)
            for name in names:
                latencies[name].append(latency)
            every.append(latency)
    else:
        for group, latency in results["latencies"]:
            latencies[group].append(latency)
    label = day_label if by == "day" else str
    providers = results["providers"]
    grouped = sorted(results.get("groups", providers), key=lambda r: (r[0] is None, r[0]))
    rows = [_row(label(g), list(rest), latencies[g], baseline) for g, *rest in grouped]
    if by != "tag":  # the groups' latencies are sorted runs now, which the total's sort merges cheaply
        every = [v for values in latencies.values() for v in values]
    total = _row("total", [sum((r[i] or 0) for r in providers) for i in range(1, 11)], every, baseline)
    served = {r[0]: (int(r[3] or 0) + int(r[4] or 0), r[6]) for r in providers if r[0] != "(none)"}
    return Report(rows, total, provider_prices(store, prices or {}, lo, hi, served), measurement_spend(store, lo, hi))


def measurement_spend(store: Store, lo: float, hi: float, source: str | None = None) -> dict[str, float | int]:
    """Shadow calls and judge calls in the period: the cost of measuring quality, apart from serving.

    ``source``: only pairs from ``shadow`` (live traffic) or ``collect`` (offline prompts)."""
    if not store.has(GRADED_PAIRS):
        return {"pairs": 0, "shadow_cost_usd": 0.0, "judge_cost_usd": 0.0, "total_usd": 0.0}
    only = " AND source = ?" if source is not None else ""
    count, shadow, judge = store.fetch("SELECT COUNT(*), SUM(COALESCE(shadow_cost_usd, 0)), "
                                       "SUM(COALESCE(judge_cost_usd, 0)) FROM graded_pairs WHERE ts >= ? AND ts < ?"
                                       + only, (lo, hi, *((source,) if source is not None else ())))[0]
    shadow, judge = float(shadow or 0), float(judge or 0)
    return {"pairs": int(count or 0), "shadow_cost_usd": shadow, "judge_cost_usd": judge, "total_usd": shadow + judge}


def tag_names(tags: str | None) -> list[str]:
    """The distinct tags in a stored tag set (JSON text); none for an untagged request."""
    return list(dict.fromkeys(str(t) for t in orjson.loads(tags))) if tags else []


def _explode_tags(tag_sets: list[tuple]) -> list[tuple]:
    """Rows of (tag set JSON, sums...) -> rows of (tag, sums...), a request counted once under each of its tags."""
    per_tag: dict[str, list[float]] = {}
    for tags, *sums in tag_sets:
        for tag in tag_names(tags):
            acc = per_tag.setdefault(tag, [0] * len(sums))
            for i, value in enumerate(sums):
                acc[i] += value or 0
    return [(tag, *sums) for tag, sums in per_tag.items()]


def _row(group: str, sums: list[object], latencies: list[float], baseline: PriceRow | None) -> ReportRow:
    latencies.sort()
    return report_row(group, sums, percentile(latencies, 0.50) if latencies else None,
                      percentile(latencies, 0.95) if latencies else None, baseline)


def report_row(group: str, sums: list[object], p50_ms: float | None, p95_ms: float | None,
               baseline: PriceRow | None) -> ReportRow:
    """A report row from ``SUMS`` (in their order) and the group's latency percentiles: the one place a row's
    figures are defined, whether the sums come from one scan or from several spans added up (the dashboard)."""
    count, failed, prompt, completion, cached, cost, unknown, gpu, fallbacks, estimated = (v or 0 for v in sums)
    return ReportRow(
        group=group, requests=int(count), failed=int(failed), prompt_tokens=int(prompt),  # type: ignore[call-overload]
        completion_tokens=int(completion), cost_usd=float(cost), unknown_cost_requests=int(unknown),  # type: ignore[call-overload,arg-type]
        gpu_priced_requests=int(gpu), fallbacks=int(fallbacks),  # type: ignore[call-overload]
        estimated_tokens_requests=int(estimated),  # type: ignore[call-overload]
        p50_ms=p50_ms, p95_ms=p95_ms,
        baseline_usd=baseline_cost(baseline, int(prompt), int(completion), int(cached)),  # type: ignore[call-overload]
    )


def baseline_cost(price: PriceRow | None, prompt: int, completion: int, cached: int) -> float:
    """The same tokens on the baseline provider (cached prompt tokens at its cached price, where it has one)."""
    if price is None or price.input_per_m is None or price.output_per_m is None:
        return 0.0
    cached_price = price.cached_input_per_m
    cached = min(cached, prompt) if cached_price is not None else 0
    return ((prompt - cached) * price.input_per_m + cached * (cached_price or 0.0)
            + completion * price.output_per_m) / 1e6


BUSY_START = "ts - latency_ms / 1000.0"
"""When a request started keeping its worker busy (it is recorded when it ended)."""


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


def provider_prices(
    store: Store | None, prices: dict[str, PriceRow], lo: float, hi: float,
    served: dict[str, tuple[int, float | None]], busy_s: Callable[[str], float] | None = None,
) -> list[ProviderPrice]:
    """Configured against effective prices. ``served`` is (tokens, cost) per provider. For GPU-second
    providers the effective $/1M comes from the worker's busy time (the union of its requests'
    intervals) and the tokens it served: scanned here, or given by ``busy_s`` (a provider's busy seconds)."""
    out = []
    for name in sorted(set(prices) | set(served)):
        price = prices.get(name)
        tokens, cost = served.get(name, (0, None))
        if price is not None and price.per_gpu_second is not None:
            if busy_s is not None:
                busy = busy_s(name)
            else:
                assert store is not None
                spans = store.fetch(f"SELECT {BUSY_START}, ts FROM requests WHERE provider = ? "
                                    "AND ts >= ? AND ts < ?", (name, lo, hi))
                busy = busy_seconds([(float(a), float(b)) for a, b in spans])
            usd = busy * price.per_gpu_second / (1 - price.idle_share)
            idle = f" + {price.idle_share:.0%} idle" if price.idle_share else ""
            out.append(ProviderPrice(name, f"${price.per_gpu_second:g}/GPU-second{idle}",
                                     usd * 1e6 / tokens if tokens else None, busy, tokens))
            continue
        configured = (f"${price.input_per_m:g} in / ${price.output_per_m:g} out per 1M"
                      if price is not None and price.input_per_m is not None else "unknown (not in config)")
        out.append(ProviderPrice(name, configured, float(cost) * 1e6 / tokens if tokens and cost is not None else None,
                                 None, tokens))
    return out


def daily_by_provider(store: Store, lo: float, hi: float) -> list[tuple[str, str, float, int, int, int]]:
    """(day, provider, cost, prompt, completion, cached) for the plot."""
    return [(day_label(d), str(p), float(c or 0), int(pt or 0), int(ct or 0), int(ca or 0)) for d, p, c, pt, ct, ca in store.fetch(
        f"SELECT {store.day_number_expr} AS d, COALESCE(provider, '(none)'), SUM(COALESCE(cost_usd, 0)), "
        f"SUM(prompt_tokens), SUM(completion_tokens), SUM(cached_tokens) FROM requests WHERE ts >= ? AND ts < ? "
        f"GROUP BY d, COALESCE(provider, '(none)') ORDER BY d", (lo, hi))]


SKIPPED_KINDS = ("circuit_open", "cooling_down", "rate_limit_headroom")
"""Attempts recording a provider passed over without a call (``cascade``): a request with one was rerouted."""


_SKIPPED_MARKS = tuple('"kind":"' + kind + '"' for kind in SKIPPED_KINDS)


def rerouted(attempts: str | None) -> bool:
    """Whether stored attempts (orjson: no spaces) hold a provider passed over without a call. A quote inside an
    error message is stored escaped, so no message can forge the mark."""
    return attempts is not None and any(mark in attempts for mark in _SKIPPED_MARKS)


def known_prices(store: Store, config: RouterConfig | None) -> dict[str, PriceRow]:
    """Prices from the config when given, else as the ledger noted them when traffic was recorded (what
    ``llmroute report`` prices with)."""
    from .ledger import price_rows

    prices = store.prices()
    if config is not None:
        prices.update({p.provider: p for p in price_rows(config)})
    return prices


def default_baseline(prices: dict[str, PriceRow], config: RouterConfig | None) -> PriceRow | None:
    """The savings baseline ``llmroute report`` uses without ``--baseline``: the config's (the premium provider,
    or ``baseline:``), else the priciest provider the ledger knows."""
    name = config.baseline() if config is not None else None
    if name is None or name not in prices or prices[name].input_per_m is None:
        priced = [p for p in prices.values() if p.input_per_m is not None and p.output_per_m is not None]
        return max(priced, key=lambda p: p.input_per_m + p.output_per_m) if priced else None  # type: ignore[operator]
    return prices[name]
