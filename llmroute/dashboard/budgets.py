"""The keys and budgets view: spend against each budget, the pacing path against actual spend, spend per key
and tag, and the current strong share.

A budget's spend this period is what the gateway seeds from the ledger at start-up (``budgets.ledger_spend``'s
sums, added up from the kept days);
served by the gateway, the live totals (``/router/state``'s budgets and pacing) take its place.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..budget_period import SpendPath, period_bounds
from ..budgets import Budget
from ..keys import GatewayKeys
from ..ledger import Store
from ..ledger.schema import GRADED_PAIRS
from ..report import tag_names
from .days import Span, sums_by
from .query import Query

if TYPE_CHECKING:
    from ..config import RouterConfig

DAY_S = 86400
SpansOf = Callable[[float, float, float], list[Span]]
"""(from, to, now) -> the ledger's spans over ``from <= ts < to``."""


def budget_view(store: Store | None, q: Query, config: RouterConfig | None,
                snap: dict[str, Any] | None, spans: SpansOf | None) -> dict[str, Any]:
    """``spans``: the ledger's sums over a time range (``DashboardData.spans``: finished days kept), where the spend
    per key, tag and day comes from (none without a ledger)."""
    now_ts = time.time()
    scoped = _budgets(store, config)
    live = snap["budgets"] if snap is not None else {}
    pacing = snap["pacing"] if snap is not None else {}
    daily = _daily(spans, scoped, now_ts) if spans is not None and scoped else {}
    spent = _ledger_spent(store, scoped, daily, now_ts) if store is not None else {}
    out = []
    for name, (budget, scope, target, profile) in scoped.items():
        start, end = period_bounds(budget.period, now_ts)
        now = live.get(name)
        used = now["spent_usd"] if now is not None else spent.get(name, 0.0)
        reserved = now["reserved_usd"] if now is not None else 0.0
        path = SpendPath(profile)
        points, running = [], 0.0
        for day_start in range(int(start), int(min(end, now_ts)) + 1, DAY_S):
            at = min(day_start + DAY_S, now_ts, end)
            running += daily.get(name, {}).get(day_start // DAY_S, 0.0)
            points.append({"ts": at, "target_usd": budget.usd * path.fraction(start, end, at), "spent_usd": running})
        out.append({"name": name, "scope": scope, "target": target, "usd": budget.usd, "period": budget.period,
                    "period_start_ts": start, "period_end_ts": end, "spent_usd": used, "reserved_usd": reserved,
                    "left_usd": max(0.0, budget.usd - used - reserved), "on_exhausted": budget.on_exhausted,
                    "used_share": used / budget.usd if budget.usd else None, "pacing": pacing.get(name),
                    "spent_from": "live" if now is not None else "ledger", "path": points})
    keys, tags = _spend(spans(q.lo, q.hi, now_ts), q, now_ts) if spans is not None else ([], [])
    return {"live": snap is not None, "budgets": out, "keys": keys, "tags": tags,
            "strong_share": snap["strong_share"] if snap is not None else None}


def _budgets(store: Store | None, config: RouterConfig | None) -> dict[str, tuple[Budget, str, str | None, Any]]:
    """name -> (budget, scope, the key or tag it covers, its daily profile): the config's budgets, then the
    budgets stored with keys (``llmroute keys create --budget-usd``) that the config does not override."""
    out: dict[str, tuple[Budget, str, str | None, Any]] = {}
    for c in config.budgets if config is not None else ():
        scope, target = ("key", c.key) if c.key is not None else (("tag", c.tag) if c.tag is not None else ("all", None))
        out[c.label] = (Budget.from_config(c), scope, target, c.daily_profile)
    configured_keys = {t for _, s, t, _ in out.values() if s == "key"}
    if store is not None:
        for key in GatewayKeys(store).load()[0].values():
            s = key.settings
            if s.budget_usd is not None and s.budget_period is not None and key.name not in configured_keys:
                out[f"key:{key.name}"] = (Budget(f"key:{key.name}", s.budget_usd, s.budget_period), "key",  # type: ignore[arg-type]
                                          key.name, None)
    return out


def _ledger_spent(store: Store, scoped: dict[str, Any], daily: dict[str, dict[int, float]],
                  now_ts: float) -> dict[str, float]:
    """Each budget's spend this period by the ledger, counted as the gateway seeds it (``budgets.ledger_spend``:
    the cost of the key's requests, of those with the tag, or of all, plus for all-traffic budgets what shadow
    evaluation spent), added up from the days' sums (periods start at UTC midnight) rather than a scan."""
    out = {name: sum(daily.get(name, {}).values()) for name in scoped}
    if store.has(GRADED_PAIRS):
        for name, (budget, scope, _, _) in scoped.items():
            if scope == "all":
                shadow = store.fetch("SELECT SUM(COALESCE(shadow_cost_usd, 0) + COALESCE(judge_cost_usd, 0)) "
                                     "FROM graded_pairs WHERE ts >= ? AND source = ?",
                                     (period_bounds(budget.period, now_ts)[0], "shadow"))[0][0]
                out[name] += float(shadow or 0.0)
    return out


def _daily(spans: SpansOf, scoped: dict[str, Any], now_ts: float) -> dict[str, dict[int, float]]:
    """Per budget, the spend per UTC day since its period started (for the path chart), from the days' sums."""
    starts = {name: period_bounds(b.period, now_ts)[0] for name, (b, *_) in scoped.items()}
    out: dict[str, dict[int, float]] = {name: {} for name in scoped}
    for span in spans(min(starts.values()), now_ts + 1, now_ts):
        day = int(span.lo // DAY_S)
        for _, key_id, tags, *sums in span.sums:
            names, cost = tag_names(tags), float(sums[5] or 0)  # type: ignore[arg-type]
            for name, (_, scope, target, _) in scoped.items():
                if day * DAY_S < starts[name]:
                    continue
                if scope == "all" or (scope == "key" and key_id == target) or (scope == "tag" and target in names):
                    out[name][day] = out[name].get(day, 0.0) + cost
    return out


def _spend(spans: list[Span], q: Query, now_ts: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Spend per key and per tag in the window, and today (UTC), grouped as ``llmroute report --by key|tag`` groups."""
    day_start = max(q.lo, float(int(now_ts) // DAY_S * DAY_S))
    today = [s for s in spans if s.lo >= day_start]
    out = []
    for part, label in ((1, "key"), (2, "tag")):
        now, period = (_by(sums_by(chosen, part), label == "tag") for chosen in (today, spans))
        out.append([{label: g, "requests": int(sums[0]), "cost_usd": float(sums[5]),
                     "today_cost_usd": float(now[g][5]) if g in now else 0.0}
                    for g, sums in sorted(period.items(), key=lambda kv: -kv[1][5])])
    return out[0], out[1]


def _by(sums: dict[object, list[float]], tags: bool) -> dict[str, list[float]]:
    """Sums per key (none as '(none)', as the report groups) or per tag (a tag set's sums to each of its tags)."""
    out: dict[str, list[float]] = {}
    for group, values in sums.items():
        for name in tag_names(group) if tags else [str(group) if group is not None else "(none)"]:  # type: ignore[arg-type]
            acc = out.setdefault(name, [0] * len(values))
            for i, value in enumerate(values):
                acc[i] += value
    return out
