"""Live spend: what was spent today and this period, per gateway key, tag and provider, and in all.

Each request is counted as the router records it, from the same attempts the ledger stores: every attempt's
``cost_usd`` (failed attempts that were billed and hedge losers included) goes to the attempt's provider,
and the request's billed total (as its ledger row's ``cost_usd``) to its key, each of its tags and ``all``.
Shadow evaluation's calls count in ``all``.

The totals live in the router's state (``RouterState.settle`` adds, ``spent`` reads) under a key per window
start, so a new day or period starts empty and replicas sharing a Redis state share the totals. The request
path only adds to a pending dict; the sums go to the state at most every ``FLUSH_S`` and before every read.

Names are bounded: at most ``spend.max_series`` per dimension and period (client tags are user-controlled);
past it, a new name counts under ``(other)``. ``ledger_live_spend`` reads what the ledger recorded today and
this period, so a restart does not zero the view (``LiveSpend.seed``: only where the state holds no total).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from .budget_period import Period, period_bounds
from .config.spend import SpendConfig
from .state import RouterState

if TYPE_CHECKING:
    from .ledger import RequestContext, Store
    from .result import Attempt

log = logging.getLogger("llmroute")

DIMENSIONS = ("keys", "tags", "providers")
ALL = "all"
OTHER = "(other)"
"""Where a name past ``max_series`` counts (parenthesised: no key, tag or provider is named so by accident)."""
FLUSH_S = 0.5
"""Longest time counted spend waits before it reaches the state (and, with Redis, the other replicas)."""
MAX_NAME_CHARS = 200
MAX_TAGS = 32
"""Tags of one request counted, as the ledger keeps them."""
_METRICS = ("usd", "tokens", "requests")
_READ_LIMIT = 1e300
"""A reservation of 0 against this limit reads a shared total into the local copy."""
MAX_SPLIT_ROWS = 100_000
"""Seeding: the most ledger rows with several attempts read back to split their cost by provider."""
MAX_TAG_GROUPS_PER_SERIES = 20
"""Seeding: distinct tag lists read back, per ``max_series``, the costliest first."""

Key = tuple[str, str]
"""(dimension, name); ``all`` has the name ``""``."""
_ALL_KEY: Key = (ALL, "")


class LiveSpend:
    """Spend per key, tag and provider for the current UTC day and period, kept in ``state``'s totals."""

    def __init__(self, state: RouterState, settings: SpendConfig, clock: Callable[[], float] = time.time) -> None:
        self._state = state
        self.period: Period = settings.period
        self.max_series = settings.max_series
        self._clock = clock
        self._lock = threading.Lock()  # a SyncRouter's loop thread and a reader may both be here
        self._pending: dict[Key, list[float]] = {}
        """Per series, [cost_usd, tokens, requests] counted since the last flush."""
        self._names: dict[str, dict[str, None]] = {d: {} for d in DIMENSIONS}
        self._new_names: dict[str, list[str]] = {}
        """Per dimension, names admitted since the last flush: the state shares them with the other replicas."""
        self._day = self._span = (0.0, 0.0)
        self._roll_at = 0.0
        self._prefixes: tuple[str, ...] = ()
        self._names_ttl_s = 0.0
        self._flush_handle: asyncio.TimerHandle | None = None
        self._roll(clock())

    # -- the request path -------------------------------------------------------------------

    def record(self, attempts: Sequence[Attempt], context: RequestContext | None, tokens: int) -> None:
        """One request, as its ledger row has it: ``tokens`` the row's prompt plus completion tokens."""
        now_ts = self._clock()
        with self._lock:
            if now_ts >= self._roll_at:
                self._flush_locked()
                self._roll(now_ts)
            cost, priced = 0.0, True
            for attempt in attempts:
                billed = attempt.cost_usd or 0.0
                if billed or attempt.ok:
                    self._add(("providers", attempt.provider), billed,
                              attempt.prompt_tokens + attempt.completion_tokens)
                cost += billed
                priced = priced and attempt.cost_basis != "unknown"
            if not priced:  # the ledger stores no cost: a price unknown is not a price of zero
                cost = 0.0
            self._add(_ALL_KEY, cost, tokens)
            if context is not None:
                if context.key_id is not None:
                    self._add(("keys", context.key_id), cost, tokens)
                if context.tags:
                    for tag in dict.fromkeys(context.tags[:MAX_TAGS]):
                        self._add(("tags", tag), cost, tokens)
        self._schedule()

    def add(self, usd: float) -> None:
        """Spend that served no request (shadow evaluation's calls): counted in ``all`` only."""
        if usd:
            with self._lock:
                self._add(_ALL_KEY, usd, 0, requests=0)
            self._schedule()

    def _add(self, key: Key, usd: float, tokens: int, requests: int = 1) -> None:
        sums = self._pending.get(key)
        if sums is None:
            key = self._admit(*key)
            sums = self._pending.get(key)
            if sums is None:
                sums = self._pending[key] = [0.0, 0, 0]
        sums[0] += usd
        sums[1] += tokens
        sums[2] += requests

    def _admit(self, dimension: str, name: str) -> Key:
        """The series a name counts in: its own while fewer than ``max_series`` are known, else ``(other)``."""
        if dimension == ALL:
            return dimension, name
        names = self._names[dimension]
        if name not in names:
            name = name[:MAX_NAME_CHARS]
            if name not in names:
                if len(names) >= self.max_series:
                    return dimension, OTHER
                names[name] = None
                self._new_names.setdefault(dimension, []).append(name)
        return dimension, name

    def _schedule(self) -> None:
        if self._flush_handle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a caller without an event loop: straight to the state
            self.flush()
            return
        self._flush_handle = loop.call_later(FLUSH_S, self.flush)

    # -- to the state ---------------------------------------------------------------------------

    def flush(self) -> None:
        """Add what was counted since the last flush to the state's totals."""
        with self._lock:
            self._flush_handle = None
            self._flush_locked()

    def _flush_locked(self) -> None:
        pending, self._pending = self._pending, {}
        new_names, self._new_names = self._new_names, {}
        for dimension, names in new_names.items():  # a name one replica saw is listed by every replica
            self._state.add_names(self._names_key(dimension), names, self._names_ttl_s)
        settle = self._state.settle
        for (dimension, name), sums in pending.items():
            for prefix in self._prefixes:
                base = f"{prefix}:{dimension}:{name}:"
                for metric, value in zip(_METRICS, sums, strict=True):
                    settle(base + metric, 0.0, value)  # 0 too: a shared state then follows every total of it

    def _roll(self, now_ts: float) -> None:
        """Move to the day (and period) holding ``now_ts``: new keys, so the new window starts empty."""
        day, span = period_bounds("day", now_ts), period_bounds(self.period, now_ts)
        if span[0] != self._span[0]:
            for names in self._names.values():
                names.clear()
        self._day, self._span, self._roll_at = day, span, day[1]
        self._prefixes = tuple(dict.fromkeys((_prefix("day", day[0]), _prefix(self.period, span[0]))))
        self._names_ttl_s = span[1] - span[0] + 86_400.0

    def _names_key(self, dimension: str) -> str:
        """The shared set of the names that counted in ``dimension`` this period (a day's are among them)."""
        return f"{self._prefixes[-1]}:names:{dimension}"

    def _learn_names(self) -> None:
        """Admit the names other replicas counted this period (call with the lock held), within ``max_series``."""
        for dimension in DIMENSIONS:
            names = self._names[dimension]
            for name in sorted(self._state.names(self._names_key(dimension)) - names.keys()):
                if len(names) >= self.max_series:
                    break
                names[name] = None

    # -- reading ----------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Today's and this period's spend: ``all``, and per key, tag and provider (names with spend only)."""
        now_ts = self._clock()
        with self._lock:
            self._flush_locked()
            if now_ts >= self._roll_at:
                self._roll(now_ts)
            self._learn_names()
            names = {d: list(n) for d, n in self._names.items()}
            windows = ((self._prefixes[0], self._day), (self._prefixes[-1], self._span))
        today, period = (self._window(prefix, bounds, names) for prefix, bounds in windows)
        return {"period": self.period, "max_series": self.max_series, "today": today, "this_period": period}

    def _window(self, prefix: str, bounds: tuple[float, float], names: Mapping[str, list[str]]) -> dict[str, Any]:
        out: dict[str, Any] = {"start_ts": bounds[0], "end_ts": bounds[1], ALL: self._sums(f"{prefix}:{ALL}::")}
        for dimension in DIMENSIONS:
            rows = {}
            for name in (*names[dimension], OTHER):
                sums = self._sums(f"{prefix}:{dimension}:{name}:")
                if sums["requests"] or sums["cost_usd"]:
                    rows[name] = sums
            out[dimension] = dict(sorted(rows.items(), key=lambda item: -item[1]["cost_usd"]))
        return out

    def _sums(self, base: str) -> dict[str, Any]:
        spent = self._state.spent
        return {"cost_usd": round(spent(base + "usd"), 9), "tokens": int(spent(base + "tokens")),
                "requests": int(spent(base + "requests"))}

    # -- seeding ----------------------------------------------------------------------------------

    async def seed(self, seed: SpendSeed) -> int:
        """Add what the ledger recorded to each series, except where the state holds a total already (a shared
        state that outlived this process counted it). Call before serving; returns the series seeded."""
        seeded = 0
        now_ts = self._clock()
        with self._lock:
            self._flush_locked()
            self._roll(now_ts)
            windows = ((self._prefixes[0], self._day[0] == seed.day_start, seed.day),
                       (self._prefixes[-1], self._span[0] == seed.period_start, seed.period))
            merged = []
            for prefix, current, rows in windows:
                if not current:
                    continue  # read in a window that has ended since
                by_series: dict[Key, list[float]] = {}
                for key, sums in sorted(rows.items(), key=lambda item: -item[1][0]):  # the costliest get names
                    total = by_series.setdefault(self._admit(*key), [0.0, 0, 0])
                    for i, value in enumerate(sums):
                        total[i] += value
                merged.append((prefix, by_series))
        for prefix, by_series in merged:
            for (dimension, name), sums in by_series.items():
                base = f"{prefix}:{dimension}:{name}:"
                for metric in _METRICS:  # a shared state reads its totals into the local copy, and follows them
                    await self._state.areserve(base + metric, 0.0, _READ_LIMIT)
                if any(self._state.spent(base + metric) > 0 for metric in _METRICS):
                    continue
                for metric, value in zip(_METRICS, sums, strict=True):
                    if value:
                        self._state.settle(base + metric, 0.0, value)
                seeded += 1
        return seeded


def _prefix(window: str, start_ts: float) -> str:
    return f"spend:{window}:{int(start_ts)}"


_BY_STATE: weakref.WeakKeyDictionary[RouterState, LiveSpend] = weakref.WeakKeyDictionary()


def live_spend(state: RouterState, settings: SpendConfig) -> LiveSpend | None:
    """The state's live spend (one per state: routers that share a state, such as the gateway's ``cheapest``
    router, count into one view); None when ``spend.enabled`` is off."""
    if not settings.enabled:
        return None
    spend = _BY_STATE.get(state)
    if spend is None:
        spend = _BY_STATE[state] = LiveSpend(state, settings)
    return spend


# -- what the ledger recorded ------------------------------------------------------------------------


@dataclass(slots=True)
class SpendSeed:
    """Per series, [cost_usd, tokens, requests] the ledger recorded today and this period."""

    day_start: float
    period_start: float
    day: dict[Key, list[float]] = field(default_factory=dict)
    period: dict[Key, list[float]] = field(default_factory=dict)

    def add(self, key: Key, today: Sequence[Any], period: Sequence[Any]) -> None:
        for rows, sums in ((self.day, today), (self.period, period)):
            if sums[2] or sums[0]:
                total = rows.setdefault(key, [0.0, 0, 0])
                for i, value in enumerate(sums):
                    total[i] += float(value or 0)


_SUMS = ("SUM(CASE WHEN ts >= ? THEN COALESCE(cost_usd, 0) ELSE 0 END), "
         "SUM(CASE WHEN ts >= ? THEN prompt_tokens + completion_tokens ELSE 0 END), "
         "SUM(CASE WHEN ts >= ? THEN 1 ELSE 0 END), "
         "SUM(COALESCE(cost_usd, 0)), SUM(prompt_tokens + completion_tokens), COUNT(*)")


def ledger_live_spend(store: Store, period: Period, max_series: int, now_ts: float) -> SpendSeed:
    """Today's and this period's spend by the ledger: requests per key and provider in one grouped query, per
    tag list in another (the costliest ``MAX_TAG_GROUPS_PER_SERIES * max_series``), the attempts of rows with
    several (to split their cost by provider, at most ``MAX_SPLIT_ROWS``) and shadow evaluation's spend."""
    from .ledger.schema import GRADED_PAIRS

    day_start, period_start = period_bounds("day", now_ts)[0], period_bounds(period, now_ts)[0]
    seed = SpendSeed(day_start, period_start)
    day_args = (day_start,) * 3
    split = store.fetch("SELECT ts, attempts FROM requests WHERE ts >= ? AND attempts IS NOT NULL LIMIT ?",
                        (period_start, MAX_SPLIT_ROWS + 1))
    exact = len(split) <= MAX_SPLIT_ROWS
    if not exact:
        log.warning("live spend: over %d ledger rows with several attempts this %s; their cost counts under "
                    "the provider that answered", MAX_SPLIT_ROWS, period)
    for key_id, provider, single, *sums in store.fetch(
            f"SELECT key_id, provider, attempts IS NULL, {_SUMS} FROM requests WHERE ts >= ? "
            "GROUP BY key_id, provider, attempts IS NULL", (*day_args, period_start)):
        today, whole = sums[:3], sums[3:]
        seed.add((ALL, ""), today, whole)
        if key_id is not None:
            seed.add(("keys", key_id), today, whole)
        if provider is not None and (single or not exact):
            seed.add(("providers", provider), today, whole)
    if exact:
        for ts, attempts in split:
            _split(seed, float(ts) >= day_start, attempts)
    for tags, *sums in store.fetch(
            f"SELECT tags, {_SUMS} FROM requests WHERE ts >= ? AND tags IS NOT NULL GROUP BY tags "
            "ORDER BY SUM(COALESCE(cost_usd, 0)) DESC LIMIT ?",
            (*day_args, period_start, MAX_TAG_GROUPS_PER_SERIES * max_series)):
        try:
            names = orjson.loads(tags)
        except orjson.JSONDecodeError:
            continue
        for tag in dict.fromkeys(t for t in names if isinstance(t, str)):
            seed.add(("tags", tag), sums[:3], sums[3:])
    if store.has(GRADED_PAIRS):
        col = "COALESCE(shadow_cost_usd, 0) + COALESCE(judge_cost_usd, 0)"
        today_usd, period_usd = store.fetch(
            f"SELECT SUM(CASE WHEN ts >= ? THEN {col} ELSE 0 END), SUM({col}) FROM graded_pairs "
            "WHERE ts >= ? AND source = ?", (day_start, period_start, "shadow"))[0]
        seed.add((ALL, ""), (today_usd or 0.0, 0, 0), (period_usd or 0.0, 0, 0))
    return seed


def _split(seed: SpendSeed, today: bool, attempts_json: str) -> None:
    """A row's attempts, each to its provider, as ``LiveSpend.record`` counts them."""
    try:
        attempts = orjson.loads(attempts_json)
    except orjson.JSONDecodeError:
        return
    for a in attempts if isinstance(attempts, list) else ():
        if not isinstance(a, dict) or not isinstance(a.get("provider"), str):
            continue
        billed = a.get("cost_usd") or 0.0
        if not (billed or a.get("ok")):
            continue
        sums = (float(billed), int(a.get("prompt_tokens") or 0) + int(a.get("completion_tokens") or 0), 1)
        seed.add(("providers", a["provider"]), sums if today else (0.0, 0, 0), sums)


async def seed_from_ledger(spend: LiveSpend, store: Store) -> None:
    """Before serving: today's and this period's spend from the ledger (read in a thread), added where the
    state holds no total. A ledger that cannot be read: one warning, and the view starts from zero."""
    def read() -> SpendSeed:
        reader = store.reader()
        try:
            return ledger_live_spend(reader, spend.period, spend.max_series, time.time())
        finally:
            reader.close()

    try:
        seed = await asyncio.to_thread(read)
    except Exception as exc:  # noqa: BLE001: an unreadable ledger must not stop the gateway
        log.warning("live spend could not be read from the ledger (%s: %s); it starts from zero in this process",
                    type(exc).__name__, str(exc).split("\n")[0])
        return
    await spend.seed(seed)
