"""Ledger writes off the request path: a bounded buffer drained in batches by one thread.

``record`` (a request) and ``record_pair`` (a graded pair) never block and never wait for
the disk. Both tables share one buffer, its bounds, its drop counting and its thread. An entry that cannot be
kept is dropped, counted (``dropped``, and the gateway's
``llmroute_ledger_dropped_total``) and logged: never silently. That happens when
the buffer is full (``queue_size`` entries or ``queue_bytes`` of them), when the
store stays unavailable (locked, full, disconnected) for longer than ``retry_s``
while its entries are retried with backoff, and when the store refuses one entry
itself (only that entry: the rest of its batch is written).

Durability window: an entry is committed at most ``flush_interval_s`` after it
was recorded, plus the write that was in progress when it was queued and its own
write (the wait starts when a write ends, and a write takes everything queued),
while the store is available. A
process killed with SIGKILL loses at most the entries recorded in that window
(plus those held for a retry); a SIGTERM (or ``close``) loses none that the
store accepts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from itertools import chain
from typing import Any

from .entry import MAX_TEXT_CHARS, LedgerEntry
from .pairs import GradedPair
from .schema import GRADED_PAIRS, REQUESTS, TABLES, Table
from .store import Store

log = logging.getLogger("llmroute.ledger")

_REQUESTS = TABLES.index(REQUESTS)
_PAIRS = TABLES.index(GRADED_PAIRS)
_MAX_BACKOFF_S = 5.0
_LOG_EVERY_S = 10.0


class Ledger:
    def __init__(
        self, store: Store, *, queue_size: int = 10_000, queue_bytes: int = 64 * 1024 * 1024, batch_size: int = 500,
        flush_interval_s: float = 0.1, retry_s: float = 60.0, max_text_chars: int = MAX_TEXT_CHARS,
        on_drop: Callable[[], None] | None = None, on_written: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        self.where = store.where
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.retry_s = retry_s
        self.max_text_chars = max_text_chars
        self.on_drop = on_drop
        """Called once per dropped entry (the gateway's counter)."""
        self.on_written = on_written
        self.written = 0
        """Requests stored (``on_written`` counts these)."""
        self.pairs_written = 0
        """Graded pairs stored."""
        self.dropped = 0
        """Entries (requests and pairs) recorded but never stored, whatever the reason."""
        self.failed = 0
        """Of those, the entries the store refused or stayed unavailable for."""
        # Rows are flattened into one list as they are recorded: the writer swaps the list out and hands
        # it to the database in a few statements, so it needs the GIL only briefly per batch. A
        # queue.Queue (a notify per put) or per-row work on the writer thread made the request path
        # give way to the writer thread on every request under load. One flat list per table (``TABLES``
        # order); ``_rows`` and ``_bytes`` count them all, so the bounds are shared.
        self._values: list[list[Any]] = [[] for _ in TABLES]
        self._rows = 0
        self._bytes = 0
        # Rows the store could not take yet, oldest first: the writer thread's own, counted in the bounds.
        self._held: list[list[Any]] = [[] for _ in TABLES]
        self._held_rows = 0
        self._held_bytes = 0
        self._held_since: float | None = None
        self._backoff_s = 0.0
        self._lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._wake = threading.Event()
        self._waiters: list[threading.Event] = []
        self._waiters_lock = threading.Lock()
        self._last_drop_log = 0.0
        self._last_refused_log = 0.0
        self._stopping = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="llmroute-ledger", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return self._rows + self._held_rows

    def record(self, entry: LedgerEntry) -> None:
        """Queue an entry for writing. Never blocks (the lock is only ever held for a list append or swap)."""
        try:
            row = entry.row(self.max_text_chars)
        except Exception as exc:  # a value no row can hold: lose this entry, not the request
            self._refused(1, getattr(entry, "request_id", "?"), exc)
            return
        self._queue(_REQUESTS, row, REQUESTS.row_bytes(row))

    def record_pair(self, pair: GradedPair) -> None:
        """Queue a graded pair for writing, like ``record``: never blocks, dropped and counted when full."""
        try:
            row = pair.row(self.max_text_chars)
        except Exception as exc:
            self._refused(1, getattr(pair, "request_id", "?"), exc)
            return
        self._queue(_PAIRS, row, GRADED_PAIRS.row_bytes(row))

    def _queue(self, table: int, row: tuple[Any, ...], size: int) -> None:
        with self._lock:
            if (self._rows + self._held_rows < self.queue_size and not self._stopping
                    and self._bytes + self._held_bytes + size <= self.queue_bytes):
                self._values[table].extend(row)
                self._rows += 1
                self._bytes += size
                return
        self._drop(1)

    def _drop(self, count: int) -> None:
        """Entries the buffer had no room for (or that came after ``close``)."""
        self._count_dropped(count)
        wall = time.monotonic()
        if wall - self._last_drop_log >= _LOG_EVERY_S:
            self._last_drop_log = wall
            if self._stopping:
                why = "the ledger is closed"
            elif self._rows + self._held_rows >= self.queue_size:
                why = f"queue full ({self.queue_size} entries)"
            else:
                why = f"queue full ({self.queue_bytes} bytes)"
            log.warning("ledger %s: dropped %d entries so far; the writer to %s cannot keep up",
                        why, self.dropped, self.where)

    def _count_dropped(self, count: int, failed: bool = False) -> None:
        with self._stats_lock:  # the request path and the writer thread both drop
            self.dropped += count
            if failed:
                self.failed += count
        if self.on_drop is not None:
            for _ in range(count):
                self.on_drop()

    def _refused(self, count: int, request_id: Any, exc: BaseException) -> None:
        """An entry the store (or the row builder) would not take: it alone is lost."""
        self._count_dropped(count, failed=True)
        wall = time.monotonic()
        if wall - self._last_refused_log >= _LOG_EVERY_S:
            self._last_refused_log = wall
            log.error("ledger: %s refused entry %s (%s: %s); the entries batched with it were kept. "
                      "%d entries dropped so far", self.where, request_id, type(exc).__name__, exc, self.dropped)

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until everything recorded before this call is stored (or dropped). False on timeout."""
        if self._closed:
            return True
        done = threading.Event()
        with self._waiters_lock:
            self._waiters.append(done)
        self._wake.set()
        return done.wait(timeout_s)

    def close(self, timeout_s: float = 30.0) -> None:
        """Commit what is queued, then stop the writer and close the store."""
        if self._closed:
            return
        self._closed = True
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error("ledger writer to %s did not finish within %.0f s; %d entries not written",
                      self.where, timeout_s, self.pending)
        else:
            self.store.close()

    def _run(self) -> None:
        while True:
            self._wake.wait(self._backoff_s or self.flush_interval_s)
            self._wake.clear()
            stopping = self._stopping
            with self._waiters_lock:
                waiters, self._waiters = self._waiters, []
            # Everything recorded before those waiters asked is in the buffer now: take it all.
            with self._lock:
                values, rows, size = self._values, self._rows, self._bytes
                self._values, self._rows, self._bytes = [[] for _ in TABLES], 0, 0
            if self._held_rows:
                values = [held + new for held, new in zip(self._held, values)]
                rows, size = self._held_rows + rows, self._held_bytes + size
                self._held, self._held_rows, self._held_bytes = [[] for _ in TABLES], 0, 0
            left, left_rows, error = self._write_tables(values)
            if left_rows:
                self._hold(left, left_rows, (size * left_rows) // max(rows, 1), error, give_up=stopping)
            elif self._held_since is not None:
                log.warning("ledger: %s is writable again after %.1f s; the entries held meanwhile are stored",
                            self.where, time.monotonic() - self._held_since)
                self._held_since, self._backoff_s = None, 0.0
            if self._held_rows:
                with self._waiters_lock:  # they wait for the held entries too
                    self._waiters[:0] = waiters
            else:
                for waiter in waiters:
                    waiter.set()
            if stopping:
                return

    def _hold(self, values: list[list[Any]], rows: int, size: int, error: BaseException, give_up: bool) -> None:
        """Keep rows the store could not take for a later try, with backoff, until ``retry_s`` has passed."""
        wall = time.monotonic()
        first = self._held_since is None
        if self._held_since is None:
            self._held_since = wall
        waited_s = wall - self._held_since
        if give_up or waited_s >= self.retry_s:
            self._held_since, self._backoff_s = None, 0.0
            self._count_dropped(rows, failed=True)
            log.error("ledger: dropped %d entries: %s stayed unavailable for %.1f s (%s). %d entries dropped so far",
                      rows, self.where, waited_s, error, self.dropped)
            return
        self._held, self._held_rows, self._held_bytes = values, rows, size
        self._backoff_s = min(max(2 * self._backoff_s, self.flush_interval_s), _MAX_BACKOFF_S)
        if first:
            log.warning("ledger: could not write %d entries to %s (%s); retrying for up to %.0f s",
                        rows, self.where, error, self.retry_s)

    def _write_tables(self, values: list[list[Any]]) -> tuple[list[list[Any]], int, BaseException | None]:
        """Write each table's rows (``values`` in ``TABLES`` order). Returns the rows left unwritten, per
        table, because the store is unavailable, and why: then the tables after it are not tried."""
        left: list[list[Any]] = [[] for _ in TABLES]
        for i, table in enumerate(TABLES):
            if not values[i]:
                continue
            rest, rest_rows, error = self._write(table, values[i], len(values[i]) // table.width)
            if error is not None:
                left[i] = rest
                left[i + 1:] = values[i + 1:]
                return left, rest_rows + sum(len(v) // t.width for v, t in zip(values[i + 1:], TABLES[i + 1:])), error
        return left, 0, None

    def _write(self, table: Table, values: list[Any], rows: int) -> tuple[list[Any], int, BaseException | None]:
        """Write in batches. A batch the store refuses is split until the refused entries are found, so only
        they are lost. Returns the rows left unwritten because the store is unavailable, and why."""
        width = table.width
        pending = [(start, min(self.batch_size, rows - start)) for start in range(0, rows, self.batch_size)]
        pending.reverse()  # a stack: the next batch on top
        while pending:
            start, count = pending.pop()
            chunk = values[start * width:(start + count) * width]
            try:
                self.store.write(chunk, count, table)
            except Exception as exc:  # a full disk or a locked file must not kill the writer
                if self.store.unavailable(exc):
                    rest = [values[s * width:(s + c) * width] for s, c in reversed(pending)]
                    return list(chain(chunk, *rest)), count + sum(c for _, c in pending), exc
                if count == 1:
                    self._refused(1, chunk[table.id_index], exc)
                else:
                    half = count // 2
                    pending += [(start + half, count - half), (start, half)]
                continue
            if table is REQUESTS:
                self.written += count
                if self.on_written is not None:
                    self.on_written(count)
            else:
                self.pairs_written += count
        return [], 0, None
