"""Each dashboard view's data, computed by the code behind ``llmroute report`` and ``llmroute quality``.

Nothing here re-derives a figure: report rows (spend, savings, blended price, exact latency percentiles) and
effective prices come from ``report``'s definitions, added up from the finished days ``days.DayCache`` keeps
(so a refresh reads only today and a day a late row landed in); retained quality, its interval and the curve
from ``quality_report.build_quality_report``, kept while no graded pair comes or goes. Blocking (SQL): the API
runs it in a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..ledger import Store, ledger_location, open_store
from ..ledger.store import PriceRow
from ..quality_report import (
    DEFAULT_MIN_PAIRS,
    HOW_TO_MEASURE,
    build_quality_report,
    quality_over_time,
    served_reference_share,
)
from ..report import ReportRow, baseline_cost, day_label, default_baseline, known_prices
from . import days
from .days import DayCache
from .drift import ledger_drift
from .live import Live
from .query import BadQuery, Query, parse_query

if TYPE_CHECKING:
    from ..config import RouterConfig

VIEWS = ("meta", "overview", "quality", "providers", "budgets", "requests")
REFRESH_S = 5
"""How often the page asks again."""
DAY_S = 86400

__all__ = ["VIEWS", "BadQuery", "DashboardData", "Query", "parse_query"]


class DashboardData:
    """The views over one ledger (and, in the gateway, its live state). Thread-safe: each call takes a read-only
    store from a small pool, so concurrent views never share a connection."""

    def __init__(self, location: str | None, config: RouterConfig | None, live: Live | None = None,
                 source: str | None = None) -> None:
        self.location, self.config, self.live = location, config, live
        self.source = source or ("gateway" if live is not None else "ledger")
        """Whose figures: a running gateway's (live state with them) or a ledger's alone."""
        self._idle: list[Store] = []
        self._lock = threading.Lock()
        self._closed = False
        self.days = DayCache()
        self._quality: tuple[tuple[Any, ...], dict[str, Any]] | None = None

    @classmethod
    def from_ledger(cls, location: str, config: RouterConfig | None = None) -> DashboardData:
        data = cls(location, config)
        data._give(data._take())  # a ledger that cannot be opened is an error now, not on the first view
        return data

    @classmethod
    def for_gateway(cls, config: RouterConfig, live: Live, ledger_on: bool) -> DashboardData:
        return cls(ledger_location(config) if ledger_on else None, config, live)

    def compute(self, view: str, params: Mapping[str, str], snap: dict[str, Any] | None = None) -> dict[str, Any]:
        """One view's answer. ``snap``: the live state captured on the event loop (``Live.capture``); captured
        here when not given. ``BadQuery`` for a parameter it cannot use; ``LedgerError`` when the ledger fails."""
        if view not in VIEWS:
            raise BadQuery(f"no view '{view}'; views: {', '.join(VIEWS)}", "view")
        query = parse_query(params)
        head: dict[str, Any] = {"source": self.source, "generated_ts": time.time(), "window": query.window}
        if view == "meta":
            return {**head, **self.meta()}
        if snap is None and self.live is not None:
            snap = self.live.capture()
        if self.location is None:  # the ledger is off: only the live state can be shown
            return {**head, **_VIEWS_WITHOUT_LEDGER[view](self, query, snap)}
        store = self._take()
        try:
            return {**head, **_VIEWS[view](self, store, query, snap)}
        finally:
            self._give(store)

    def meta(self) -> dict[str, Any]:
        shown = None
        if self.location is not None:
            store = self._take()
            shown = store.where  # a DSN without its password
            self._give(store)
        return {"refresh_s": REFRESH_S, "ledger": shown, "ledger_enabled": self.location is not None,
                "baseline": self.config.baseline() if self.config is not None else None, "version": __version__,
                "views": list(VIEWS[1:])}

    # -- views ------------------------------------------------------------------------------------

    def overview(self, store: Store, q: Query, snap: dict[str, Any] | None) -> dict[str, Any]:
        prices, base = self.prices(store)
        day_start = max(q.lo, float(int(q.hi - 1) // DAY_S * DAY_S))
        spans = self.spans(store, q.lo, q.hi)
        built = days.report(store, spans, q.lo, q.hi, base, prices)
        today = days.total([s for s in spans if s.lo >= day_start], base)
        total = built.total
        period = ({k: v for k, v in total.to_dict().items() if k != "group"}
                  | {"reroutes": sum(s.reroutes for s in spans)} | days.ttft(spans))
        groups = []
        for row in built.rows:
            d = row.to_dict()
            d["cost_share"] = row.cost_usd / total.cost_usd if total.cost_usd else None
            d["request_share"] = row.requests / total.requests if total.requests else None
            groups.append(d)
        per_day: dict[tuple[int, str], list[float]] = {}
        for span in spans:
            for (provider, sums) in days.sums_by([span], 0).items():
                acc = per_day.setdefault((int(span.lo // DAY_S), str(provider)), [0, 0, 0, 0])
                for i, value in enumerate((sums[5], sums[2], sums[3], sums[4])):  # cost, prompt, completion, cached
                    acc[i] += value
        daily, cumulative = [], []
        spent = base_spent = 0.0
        last_day: str | None = None
        for (day_number, provider), (cost, prompt, completion, cached) in sorted(per_day.items()):
            day, cost, prompt, completion, cached = (day_label(day_number), float(cost), int(prompt), int(completion),
                                                     int(cached))
            base_usd = baseline_cost(base, prompt, completion, cached)
            daily.append({"day": day, "provider": provider, "cost_usd": cost, "baseline_usd": base_usd,
                          "tokens": prompt + completion})
            spent += cost
            base_spent += base_usd
            point = {"day": day, "cost_usd": spent, "baseline_usd": base_spent, "savings_usd": base_spent - spent,
                     "savings_pct": _pct(base_spent, spent)}
            if day == last_day:
                cumulative[-1] = point
            else:
                cumulative.append(point)
            last_day = day
        return {"baseline": base.provider if base is not None else None,
                "today": {"from_ts": day_start, **_brief(today)}, "period": period, "by_provider": groups,
                "daily": daily, "cumulative": cumulative, "measurement": built.measurement}

    def quality(self, store: Store, q: Query, snap: dict[str, Any] | None) -> dict[str, Any]:
        min_pairs = self.config.shadow.min_pairs if self.config is not None else DEFAULT_MIN_PAIRS
        # The figures depend only on the graded pairs in the window (and, for pairs collected again, later
        # ones): while none came or went, the last answer stands. Its bootstrap is what costs.
        key = (q.by, min_pairs, *pairs_check(store, q.lo, q.hi))
        with self._lock:
            kept = self._quality
        if kept is not None and kept[0] == key:
            figures = kept[1]
        else:
            figures = self._quality_figures(store, q, min_pairs)
            with self._lock:
                self._quality = (key, figures)
        return {**figures, "drift": snap["drift"] if snap is not None else ledger_drift(store, self.config)}

    def _quality_figures(self, store: Store, q: Query, min_pairs: int) -> dict[str, Any]:
        results = _parallel({
            "report": lambda s: build_quality_report(s, q.by, q.lo, q.hi, min_pairs),
            "over_time": lambda s: quality_over_time(s, q.by, q.lo, q.hi),
            "share": lambda s: served_reference_share(s, q.lo, q.hi),
        }, store)
        built = results["report"]
        measured = bool(built.has_table and (built.total.pairs + built.total.ungraded))
        share, _ = results["share"]
        point = None
        if built.curve is not None and share is not None:
            at = built.curve.points[round(share * 100)]
            point = {"reference_share": share, "retained": at.value, "ci_low": at.low, "ci_high": at.high}
        return {"measured": measured, "how_to_start": None if measured else HOW_TO_MEASURE[0].upper() + HOW_TO_MEASURE[1:],
                "report": built.to_dict(), "over_time": results["over_time"], "operating_point": point}

    def providers(self, store: Store, q: Query, snap: dict[str, Any] | None) -> dict[str, Any]:
        from .providers import provider_view

        prices, base = self.prices(store)
        spans = self.spans(store, q.lo, q.hi)
        built = days.report(store, spans, q.lo, q.hi, base, prices, measurement=False)
        return provider_view(days.failures(spans), built, self.config, snap)

    def budgets(self, store: Store, q: Query, snap: dict[str, Any] | None) -> dict[str, Any]:
        from .budgets import budget_view

        return budget_view(store, q, self.config, snap, lambda lo, hi, now: self.spans(store, lo, hi, now))

    def requests(self, store: Store, q: Query, snap: dict[str, Any] | None) -> dict[str, Any]:
        from .requests import latest_requests

        return latest_requests(store, q)

    def spans(self, store: Store, lo: float, hi: float, now: float | None = None) -> list[days.Span]:
        """The window's spans (finished days kept), with the busy time of the providers priced per GPU-second."""
        busy_for = frozenset(name for name, p in self.prices(store)[0].items() if p.per_gpu_second is not None)
        return self.days.spans(store, lo, hi, now, busy_for)

    def prices(self, store: Store) -> tuple[dict[str, PriceRow], PriceRow | None]:
        """Prices and the savings baseline exactly as ``llmroute report`` picks them."""
        prices = known_prices(store, self.config)
        return prices, default_baseline(prices, self.config)

    # -- stores -----------------------------------------------------------------------------------

    def _take(self) -> Store:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        busy_timeout_s = self.config.ledger.busy_timeout_s if self.config is not None else 10.0
        return open_store(self.location, readonly=True, busy_timeout_s=busy_timeout_s)  # type: ignore[arg-type]

    def _give(self, store: Store) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < 4:
                self._idle.append(store)
                return
        store.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for store in idle:
            store.close()


def pairs_check(store: Store, lo: float, hi: float) -> tuple[Any, ...]:
    """Which graded pairs the window holds, cheaply (index only): their count and id range, and the latest
    pair anywhere (a prompt collected again replaces its earlier pair)."""
    from ..ledger.schema import GRADED_PAIRS

    if not store.has(GRADED_PAIRS):
        return (None,)
    window = store.fetch("SELECT COUNT(*), MIN(id), MAX(id) FROM graded_pairs WHERE ts >= ? AND ts < ?", (lo, hi))[0]
    return (*window, store.fetch("SELECT MAX(id) FROM graded_pairs")[0][0])


def _brief(row: ReportRow) -> dict[str, Any]:
    return {"requests": row.requests, "failed": row.failed, "cost_usd": row.cost_usd, "baseline_usd": row.baseline_usd,
            "savings_usd": row.savings_usd, "savings_pct": row.savings_pct}


def _pct(baseline: float, cost: float) -> float:
    from ..pricing import savings_pct

    return savings_pct(baseline, cost)


def _parallel(jobs: dict[str, Callable[[Store], Any]], store: Store) -> dict[str, Any]:
    """Run each job on its own read connection at once (the first on ``store``), as ``report.fetch_parallel``
    runs queries."""
    from concurrent.futures import ThreadPoolExecutor

    names = list(jobs)

    def run(name: str) -> Any:
        reader = store.reader()
        try:
            return jobs[name](reader)
        finally:
            reader.close()

    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        futures = {name: pool.submit(run, name) for name in names[1:]}
        out = {names[0]: jobs[names[0]](store)}
        out.update({name: future.result() for name, future in futures.items()})
    return out


def _live_only(view: str) -> Callable[[DashboardData, Query, dict[str, Any] | None], dict[str, Any]]:
    def answer(data: DashboardData, q: Query, snap: dict[str, Any] | None) -> dict[str, Any]:
        note = "the ledger is switched off (ledger.enabled: false or $LLMROUTE_LEDGER=off): nothing recorded to show"
        if view == "providers" and snap is not None:
            from .providers import provider_view

            return provider_view(None, None, data.config, snap) | {"note": note}
        if view == "budgets" and snap is not None:
            from .budgets import budget_view

            return budget_view(None, q, data.config, snap, None) | {"note": note}
        return {"note": note}
    return answer


_VIEWS: dict[str, Callable[[DashboardData, Store, Query, dict[str, Any] | None], dict[str, Any]]] = {
    "overview": DashboardData.overview, "quality": DashboardData.quality, "providers": DashboardData.providers,
    "budgets": DashboardData.budgets, "requests": DashboardData.requests,
}
_VIEWS_WITHOUT_LEDGER = {view: _live_only(view) for view in _VIEWS}
