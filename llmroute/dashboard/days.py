"""Finished UTC days of the ledger, summed once and kept: what lets every view refresh without rescanning.

A day that has ended does not change, except when a row lands late (a replica's batch, a copied file): each
kept day is checked at every use by a cheap count over the ``ts`` index (``COUNT(*)``, ``MAX(id)``), and a day
whose count changed is summed again. A window is cut at day boundaries into a head (from its start to the
first midnight), whole days, and a tail (from the last midnight: today); only the head, the tail and changed
days are read. Each span keeps pieces that add up exactly: ``report.SUMS`` per provider, key and tag set, every
latency and TTFT (sorted, so nearest-rank percentiles stay exact), the reroute count, busy intervals per
provider, and failed attempts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

from ..ledger import Store
from ..ledger.store import PriceRow
from ..report import (
    BUSY_START,
    SUMS,
    Report,
    ReportRow,
    measurement_spend,
    provider_prices,
    report_row,
    rerouted,
)
from .providers import Failures, failures_of, merge_failures
from .ranks import Unions, percentiles

DAY_S = 86400
HOUR_S = 3600
MAX_CACHED_ROWS = 3_000_000
"""Requests whose days are kept (about 10-30 bytes each): a window longer than this reads its oldest days
again at each refresh rather than holding them."""
IDLE_S = 600.0
"""A kept day not asked for in this long is dropped."""
WORKERS = 2
"""Spans read at once, each on its own read-only connection (SQLite reads without the GIL)."""

_EMPTY = np.empty(0)


@dataclass(slots=True)
class Span:
    """What ``lo <= ts < hi`` holds, in pieces that add up exactly with other spans'."""

    lo: float
    hi: float
    sums: list[tuple[object, ...]]
    """(provider, key_id, tags, *SUMS) per distinct provider, key and tag set."""
    latency_ms: dict[str, np.ndarray]
    """Per provider, sorted."""
    ttft_ms: np.ndarray
    """Sorted."""
    busy: dict[str, np.ndarray]
    """Per provider priced per GPU-second (``busy_for``), the union of its requests' (start, end) intervals,
    shape (n, 2)."""
    reroutes: int
    failures: Failures
    rows: int = field(default=0)
    busy_for: frozenset[str] = field(default=frozenset())
    totals: dict[int, dict[object, list[float]]] = field(default_factory=dict)
    """``sums`` added up per provider (0), key (1) or tag set (2), once: a kept day is added up at every refresh."""

    def sums_by(self, part: int) -> dict[object, list[float]]:
        """``report.SUMS`` per provider (``part`` 0), key (1) or tag set (2) in this span."""
        out = self.totals.get(part)
        if out is None:
            out = {}
            for row in self.sums:
                _add(out, row[part], row[3:])
            self.totals[part] = out
        return out


def _union(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Intervals -> the disjoint intervals covering the same time (``report.busy_seconds``' rule: an interval
    starting after the current one's end begins a new one)."""
    if not len(starts):
        return np.empty((0, 2))
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], np.maximum.accumulate(ends[order])
    first = np.concatenate(([0], np.flatnonzero(starts[1:] > ends[:-1]) + 1))
    last = np.concatenate((first[1:] - 1, [len(starts) - 1]))
    return np.column_stack((starts[first], ends[last]))


def busy_s(parts: Iterable[np.ndarray]) -> float:
    """Length of the union of several spans' busy intervals."""
    joined = [p for p in parts if len(p)]
    if not joined:
        return 0.0
    both = np.concatenate(joined)
    merged = _union(both[:, 0], both[:, 1])
    return float(np.sum(merged[:, 1] - merged[:, 0]))


def scan(store: Store, lo: float, hi: float, busy_for: frozenset[str] = frozenset(),
         ids: tuple[int, int] | None = None) -> Span:
    """Read one span: three range reads over the ``ts`` index. ``busy_for``: the providers whose busy time is
    needed (those priced per GPU-second). ``ids``: only the rows with ``first < id <= last``."""
    window = "FROM requests WHERE ts >= ? AND ts < ?"
    args: tuple[float, ...] = (lo, hi)
    if ids is not None:
        window += " AND id > ? AND id <= ?"
        args = (lo, hi, *ids)
    provider = "COALESCE(provider, '(none)')"
    sums = store.fetch(f"SELECT {provider}, key_id, tags, {SUMS} {window} GROUP BY {provider}, key_id, tags", args)
    # When a request ran matters only for the providers priced per GPU-second: NULL for the others (no float
    # to build per row; the rows a refresh reads back are mostly served by providers priced per token).
    busy = f"provider IN ({', '.join('?' * len(busy_for))})" if busy_for else "0"
    rows = store.fetch(f"SELECT {provider}, CASE WHEN {busy} THEN ts END, CASE WHEN {busy} THEN {BUSY_START} END, "
                       f"latency_ms, ttft_ms {window}", (*sorted(busy_for), *sorted(busy_for), *args))
    # Newest first, sorted here: an ORDER BY ts makes SQLite walk the ``ts`` index over the whole span, where
    # the rows written since the last read are an id range.
    stored = store.fetch(f"SELECT ts, request_id, attempts {window} AND attempts IS NOT NULL", args)
    stored.reverse()
    stored.sort(key=lambda row: row[0], reverse=True)
    latency: dict[str, np.ndarray] = {}
    intervals: dict[str, np.ndarray] = {}
    ttft = _EMPTY
    if rows:
        names, ends, starts, latencies, ttfts = zip(*rows, strict=True)
        names_a = np.array(names, dtype=object)
        ends_a, starts_a = np.array(ends, dtype=float), np.array(starts, dtype=float)
        latency_a = np.array(latencies, dtype=float)
        ttft_a = np.array(ttfts, dtype=float)  # NULL -> nan
        ttft = np.sort(ttft_a[~np.isnan(ttft_a)])
        for name in set(names):
            mine = names_a == name
            latency[name] = np.sort(latency_a[mine])
            if name in busy_for:
                intervals[name] = _union(starts_a[mine], ends_a[mine])
    return Span(lo, hi, sums, latency, ttft, intervals, sum(1 for _, _, text in stored if rerouted(text)),
                failures_of(stored), len(rows), busy_for)


def merged(spans: list[Span]) -> Span:
    """Spans of one stretch (read in parts, as today's rows arrive) as one: what adds up, added."""
    latency: dict[str, list[np.ndarray]] = {}
    busy: dict[str, list[np.ndarray]] = {}
    for span in spans:
        for name, values in span.latency_ms.items():
            latency.setdefault(name, []).append(values)
        for name, intervals in span.busy.items():
            busy.setdefault(name, []).append(intervals)
    busy_for = frozenset.intersection(*(s.busy_for for s in spans)) if spans else frozenset()
    return Span(
        min(s.lo for s in spans), max(s.hi for s in spans), [row for s in spans for row in s.sums],
        {name: np.sort(np.concatenate(parts)) for name, parts in latency.items()},
        np.sort(np.concatenate([s.ttft_ms for s in spans])),
        {name: _union(np.concatenate(parts)[:, 0], np.concatenate(parts)[:, 1])
         for name, parts in busy.items() if name in busy_for},
        sum(s.reroutes for s in spans), merge_failures([s.failures for s in spans]), sum(s.rows for s in spans),
        busy_for)


RECHECK_S = 60.0
"""How often every kept day is counted again over the ``ts`` index (between, only rows with new ids are looked
at: a Postgres ledger with several writers may commit a lower id after a higher one)."""
MAX_TAIL_PARTS = 16
"""Reads of today's rows kept apart before they are merged into one span."""


@dataclass(frozen=True, slots=True)
class Tail:
    """Today as read so far."""

    lo: float
    hi: float
    """How far it was read."""
    last: int
    """The last id read."""
    rows: int
    parts: list[Span]
    counted_s: float
    """When today's rows were last counted over the ``ts`` index (``time.monotonic``)."""
    complete: bool
    """Whether every row up to ``last`` lies before ``hi`` (none left for a later read)."""


class DayCache:
    """Spans of finished days, kept while asked for and checked at each use. Thread-safe."""

    def __init__(self, max_rows: int = MAX_CACHED_ROWS) -> None:
        self.max_rows = max_rows
        self._days: dict[int, tuple[tuple[object, ...], Span, float]] = {}  # day -> (check, span, last used)
        self._lock = threading.Lock()
        self._reading = threading.Lock()
        """One caller reads at a time: views asked at once on a fresh cache (a page opening) read each day once,
        the later ones finding the days the first kept."""
        self.scanned_days = 0
        """Days summed so far (kept or not): a test's view into what a refresh read."""
        self._tail: Tail | None = None
        """Today so far; a refresh reads only the rows written since."""
        self.tail_rows_read = 0
        self._seen_id: int | None = None
        """The highest row id when the days were last checked: a row above it is new (a late one may land in a
        finished day)."""
        self._checked_at = 0.0
        self._head: dict[bool, tuple[float, float, tuple[object, ...], Span]] = {}
        """The window's first, part day: (from, to, its day's check, span), for its first hour (True) and the
        rest (False)."""

    @property
    def kept_rows(self) -> int:
        """Requests whose days are kept now (bounded by ``max_rows``)."""
        with self._lock:
            return sum(span.rows for _, span, _ in self._days.values())

    def spans(self, store: Store, lo: float, hi: float, now: float | None = None,
              busy_for: frozenset[str] = frozenset()) -> list[Span]:
        """``lo <= ts < hi`` as spans, oldest first: finished days from the cache when their check still holds
        (and they hold the busy time of ``busy_for``)."""
        now = time.time() if now is None else now
        with self._reading:
            today = int(now // DAY_S)
            midnights = [d * DAY_S for d in range(-int(-lo // DAY_S), int(hi // DAY_S) + 1) if lo < d * DAY_S < hi]
            cuts = [lo, *midnights, hi]
            pieces = [(a, b) for a, b in pairwise(cuts) if b > a]
            days = [int(a // DAY_S) for a, b in pieces
                    if a % DAY_S == 0 and b - a == DAY_S and int(a // DAY_S) < today]
            checks = self._checks(store, days, today, now)
            with self._lock:
                kept = {d: self._days[d][1] for d in days if d in self._days and self._days[d][0] == checks[d]
                        and busy_for <= self._days[d][1].busy_for}
            todo = [(a, b) for a, b in pieces if int(a // DAY_S) not in kept or a % DAY_S or b - a != DAY_S]
            tail: list[Span] = []
            if todo and todo[-1][0] % DAY_S == 0 and todo[-1][1] == hi and hi - todo[-1][0] < DAY_S:
                tail = self._read_tail(store, *todo.pop(), busy_for)
            head: list[Span] = []
            if todo and todo[0][0] == lo and lo % DAY_S and todo[0][1] % DAY_S == 0:  # the window's first, part day
                head = self._read_head(store, *todo.pop(0), busy_for, checks)
            read = head + self._read(store, todo, busy_for) + tail
            with self._lock:
                self.scanned_days += len(todo)
                for span in read:
                    day = int(span.lo // DAY_S)
                    if day in checks and span.lo == day * DAY_S and span.hi == (day + 1) * DAY_S:
                        self._days[day] = (checks[day], span, now)
                for day in kept:
                    check, span, _ = self._days[day]
                    self._days[day] = (check, span, now)
                self._evict(now)
            return sorted([*kept.values(), *read], key=lambda s: s.lo)

    def _checks(self, store: Store, days: list[int], today: int, now: float) -> dict[int, tuple[object, ...]]:
        """Each finished day's check, ``(COUNT(*), MAX(id))`` over the ``ts`` index. Between full checks (every
        ``RECHECK_S``) a kept day keeps its check unless a row written since the last look (``id`` above the
        highest seen) landed in it: one read of the new rows instead of a count over every day."""
        last = int(store.fetch("SELECT MAX(id) FROM requests")[0][0] or 0)
        with self._lock:
            seen, full = self._seen_id, now - self._checked_at >= RECHECK_S
            kept = {d: self._days[d][0] for d in days if d in self._days}
        if seen is None or full or last < seen:
            kept = {}
            self._checked_at = now
        elif kept and last > seen:
            late = store.fetch("SELECT ts FROM requests WHERE id > ? AND id <= ? AND ts < ?",
                               (seen, last, today * DAY_S))
            for (ts,) in late:
                kept.pop(int(ts // DAY_S), None)
        self._seen_id = last
        return {day: kept[day] if day in kept else tuple(store.fetch(
            "SELECT COUNT(*), MAX(id) FROM requests WHERE ts >= ? AND ts < ?", (day * DAY_S, (day + 1) * DAY_S))[0])
            for day in days}

    def _read_head(self, store: Store, lo: float, hi: float, busy_for: frozenset[str],
                   checks: dict[int, tuple[object, ...]]) -> list[Span]:
        """The window's first, part day (``hi`` its midnight), in two spans: from ``lo`` to the next whole hour,
        read whenever ``lo`` moves (every second, with a window ending now), and from that hour to midnight,
        kept while its day's check holds (read again once an hour)."""
        day = int(lo // DAY_S)
        check = checks.get(day) or tuple(store.fetch("SELECT COUNT(*), MAX(id) FROM requests WHERE ts >= ? AND ts < ?",
                                                     (day * DAY_S, (day + 1) * DAY_S))[0])
        cut = min(hi, -(-lo // HOUR_S) * HOUR_S)
        spans = []
        for start, end in ((lo, cut), (cut, hi)):
            if end <= start:
                continue
            kept = self._head.get(start == lo)
            if kept is not None and kept[:3] == (start, end, check) and busy_for <= kept[3].busy_for:
                spans.append(kept[3])
                continue
            span = scan(store, start, end, busy_for)
            if start == cut:
                with self._lock:
                    self.scanned_days += 1
            self._head[start == lo] = (start, end, check, span)
            spans.append(span)
        return spans

    def _read_tail(self, store: Store, lo: float, hi: float, busy_for: frozenset[str]) -> list[Span]:
        """Today so far (``lo`` its midnight): the rows written since the last read added to what was read.

        A count over the ``ts`` index checks that nothing else changed (else today is read again). SQLite hands
        out ids in commit order, so between counts (every ``RECHECK_S``) no row can appear below the last id
        read: there the check is the newest id and ts alone (two index lookups, whatever today holds), as long
        as no row anywhere is stamped at or after ``hi`` (a replica's clock ahead: then the count decides)."""
        kept = self._tail
        usable = (kept is not None and kept.lo == lo and kept.hi <= hi and busy_for <= kept.parts[0].busy_for)
        if usable and kept.complete and store.dialect == "sqlite" and time.monotonic() - kept.counted_s < RECHECK_S:
            last, newest = store.fetch("SELECT (SELECT MAX(id) FROM requests), (SELECT MAX(ts) FROM requests)")[0]
            if last is not None and last >= kept.last and newest < hi:
                new = scan(store, lo, hi, busy_for, (kept.last, last)) if last > kept.last else None
                return self._extend(kept, new, int(last), hi, kept.rows + (new.rows if new is not None else 0),
                                    kept.counted_s, True)
        count, last, newest = store.fetch("SELECT COUNT(*), MAX(id), (SELECT MAX(ts) FROM requests) FROM requests "
                                          "WHERE ts >= ? AND ts < ?", (lo, hi))[0]
        count, last = int(count or 0), int(last or 0)
        complete = newest is None or newest < hi  # no row with an id up to ``last`` lies beyond this read
        counted_s = time.monotonic()
        if usable and kept.last <= last:
            new = scan(store, lo, hi, busy_for, (kept.last, last)) if last > kept.last else None
            if kept.rows + (new.rows if new is not None else 0) == count:
                return self._extend(kept, new, last, hi, count, counted_s, complete)
        span = scan(store, lo, hi, busy_for, (0, last))  # rows written after the count wait for the next read
        self.tail_rows_read += span.rows
        self._tail = Tail(lo, hi, last, span.rows, [span], counted_s, complete)
        return [span]

    def _extend(self, kept: Tail, new: Span | None, last: int, hi: float, rows: int, counted_s: float,
                complete: bool) -> list[Span]:
        parts = kept.parts + [new] if new is not None else kept.parts
        if len(parts) > MAX_TAIL_PARTS:
            parts = [merged(parts)]
        self.tail_rows_read += new.rows if new is not None else 0
        self._tail = Tail(kept.lo, hi, last, rows, parts, counted_s, complete)
        return list(parts)

    @staticmethod
    def _read(store: Store, ranges: list[tuple[float, float]], busy_for: frozenset[str]) -> list[Span]:
        if len(ranges) <= 1:
            return [scan(store, lo, hi, busy_for) for lo, hi in ranges]

        def run(chunk: list[tuple[float, float]]) -> list[Span]:
            reader = store.reader()
            try:
                return [scan(reader, lo, hi, busy_for) for lo, hi in chunk]
            finally:
                reader.close()

        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            return [s for part in pool.map(run, [ranges[i::WORKERS] for i in range(WORKERS)]) for s in part]

    def _evict(self, now: float) -> None:
        for day in [d for d, (_, _, used) in self._days.items() if now - used > IDLE_S]:
            del self._days[day]
        total = sum(span.rows for _, span, _ in self._days.values())
        for day in sorted(self._days, key=lambda d: (self._days[d][2], d)):  # least recently used, oldest first
            if total <= self.max_rows:
                break
            total -= self._days.pop(day)[1].rows


# -- adding spans up, with the report's definitions ------------------------------------------------------------


def _add(into: dict[object, list[float]], key: object, sums: Iterable[object]) -> None:
    acc = into.setdefault(key, [0] * 10)
    for i, value in enumerate(sums):
        acc[i] += value or 0  # type: ignore[operator]


def sums_by(spans: Iterable[Span], part: int) -> dict[object, list[float]]:
    """``report.SUMS`` per provider (``part`` 0), key (1) or tag set (2), over the spans."""
    out: dict[object, list[float]] = {}
    for span in spans:
        for key, sums in span.sums_by(part).items():
            _add(out, key, sums)
    return out


_UNIONS = Unions()


def _percentiles(spans: list[Span], pick: Callable[[Span], Iterable[np.ndarray]]) -> tuple[float | None, ...]:
    """Exact nearest-rank p50 and p95 (``report.percentile``'s rank) of the values ``pick`` takes from each span:
    finished days' pieces are kept sorted together (``ranks.Unions``), the others sorted at each call."""
    stable: list[np.ndarray] = []
    changing: list[np.ndarray] = []
    for span in spans:
        whole_day = span.lo % DAY_S == 0 and span.hi - span.lo == DAY_S
        (stable if whole_day else changing).extend(pick(span))
    return percentiles(_UNIONS, stable, changing)


def ttft(spans: list[Span]) -> dict[str, float | int | None]:
    """Time to first token over the spans, and how many requests had one."""
    p50, p95 = _percentiles(spans, lambda s: (s.ttft_ms,))
    return {"ttft_requests": sum(len(s.ttft_ms) for s in spans), "ttft_p50_ms": p50, "ttft_p95_ms": p95}


def total(spans: list[Span], baseline: PriceRow | None) -> ReportRow:
    """The report's total row over the spans."""
    providers = sums_by(spans, 0)
    return report_row("total", [sum(p[i] for p in providers.values()) for i in range(10)],
                      *_percentiles(spans, lambda s: s.latency_ms.values()), baseline)


def report(store: Store, spans: list[Span], lo: float, hi: float, baseline: PriceRow | None,
           prices: dict[str, PriceRow], measurement: bool = True) -> Report:
    """``report.build_report(store, "provider", lo, hi, ...)`` from spans covering the window."""
    providers = sums_by(spans, 0)
    rows = [report_row(str(name), sums, *_percentiles(spans, lambda s, name=name: (s.latency_ms.get(name, _EMPTY),)),
                       baseline) for name, sums in sorted(providers.items(), key=lambda kv: str(kv[0]))]
    served = {str(n): (int(p[2]) + int(p[3]), p[5]) for n, p in providers.items() if n != "(none)"}
    built_prices = provider_prices(store, prices, lo, hi, served,
                                   busy_s=lambda name: busy_s(s.busy[name] for s in spans if name in s.busy))
    return Report(rows, total(spans, baseline), built_prices, measurement_spend(store, lo, hi) if measurement else {})


def failures(spans: list[Span]) -> Failures:
    return merge_failures([s.failures for s in spans])
