"""Ledger writes off the request path: a bounded buffer drained in batches by one thread.

``record`` never blocks and never waits for the disk. If the buffer is full the
entry is dropped, counted (``dropped``, and the gateway's
``llmroute_ledger_dropped_total``) and logged: never silently.

Durability window: an entry is committed at most ``flush_interval_s`` after it
was recorded, plus the time of one batch write. A process killed with SIGKILL
loses at most the entries recorded in that window; a SIGTERM (or ``close``)
loses none.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .entry import COLUMNS, LedgerEntry
from .store import Store

log = logging.getLogger("llmroute.ledger")

class Ledger:
    def __init__(
        self, store: Store, *, queue_size: int = 10_000, batch_size: int = 500, flush_interval_s: float = 0.1,
        on_drop: Callable[[], None] | None = None, on_written: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        self.where = store.where
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.on_drop = on_drop
        self.on_written = on_written
        self.written = 0
        self.dropped = 0
        self.failed = 0
        # Rows are flattened into one list as they are recorded: the writer swaps the list out and hands
        # it to the database in a few statements, so it needs the GIL only briefly per batch. A
        # queue.Queue (a notify per put) or per-row work on the writer thread made the request path
        # give way to the writer thread on every request under load.
        self._values: list[Any] = []
        self._rows = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._waiters: list[threading.Event] = []
        self._waiters_lock = threading.Lock()
        self._last_drop_log = 0.0
        self._stopping = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="llmroute-ledger", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return self._rows

    def record(self, entry: LedgerEntry) -> None:
        """Queue an entry for writing. Never blocks (the lock is only ever held for a list append or swap)."""
        row = entry.row()
        with self._lock:
            if self._rows < self.queue_size and not self._stopping:
                self._values.extend(row)
                self._rows += 1
                return
        self._drop()

    def _drop(self) -> None:
        self.dropped += 1
        if self.on_drop is not None:
            self.on_drop()
        wall = time.monotonic()
        if wall - self._last_drop_log >= 10.0:
            self._last_drop_log = wall
            why = "the ledger is closed" if self._stopping else f"queue full ({self.queue_size} entries)"
            log.warning("ledger %s: dropped %d entries so far; the writer to %s cannot keep up",
                        why, self.dropped, self.where)

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until everything recorded before this call is committed. False on timeout."""
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
                      self.where, timeout_s, self._rows)
        else:
            self.store.close()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            stopping = self._stopping
            with self._waiters_lock:
                waiters, self._waiters = self._waiters, []
            # Everything recorded before those waiters asked is in the buffer now: take it all.
            with self._lock:
                values, rows = self._values, self._rows
                self._values, self._rows = [], 0
            width = len(COLUMNS)
            for start in range(0, rows, self.batch_size):
                count = min(self.batch_size, rows - start)
                self._write(values[start * width:(start + count) * width], count)
            for waiter in waiters:
                waiter.set()
            if stopping:
                return

    def _write(self, values: list[Any], rows: int) -> None:
        try:
            self.store.write(values, rows)
        except Exception as exc:  # a full disk or a locked file must not kill the writer
            self.failed += rows
            log.error("ledger: could not write %d entries to %s: %s", rows, self.where, exc)
            return
        self.written += rows
        if self.on_written is not None:
            self.on_written(rows)
