"""Ledger writes off the request path: a bounded queue drained in batches by one thread.

``record`` never blocks and never waits for the disk. If the queue is full the
entry is dropped, counted (``dropped``, and the gateway's
``llmroute_ledger_dropped_total``) and logged: never silently.

Durability window: an entry is committed at most ``flush_interval_s`` after it
was recorded, plus the time of one batch write. A process killed with SIGKILL
loses at most the entries recorded in that window; a SIGTERM (or ``close``)
loses none.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from .entry import LedgerEntry
from .store import Store, serialise

log = logging.getLogger("llmroute.ledger")

_STOP = object()


class Ledger:
    def __init__(
        self, store: Store, *, queue_size: int = 10_000, batch_size: int = 500, flush_interval_s: float = 0.1,
        on_drop: Callable[[], None] | None = None, on_written: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        self.where = store.where
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.on_drop = on_drop
        self.on_written = on_written
        self.written = 0
        self.dropped = 0
        self.failed = 0
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._last_drop_log = 0.0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="llmroute-ledger", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def record(self, entry: LedgerEntry) -> None:
        """Queue an entry for writing. Never blocks."""
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            self._drop()

    def _drop(self) -> None:
        self.dropped += 1
        if self.on_drop is not None:
            self.on_drop()
        wall = time.monotonic()
        if wall - self._last_drop_log >= 10.0:
            self._last_drop_log = wall
            log.warning("ledger queue full (%d entries): dropped %d entries so far; the writer to %s cannot keep up",
                        self._queue.maxsize, self.dropped, self.where)

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until everything recorded before this call is committed. False on timeout."""
        if self._closed:
            return True
        done = threading.Event()
        self._queue.put(done, timeout=timeout_s)
        return done.wait(timeout_s)

    def close(self, timeout_s: float = 30.0) -> None:
        """Commit what is queued, then stop the writer and close the store."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error("ledger writer to %s did not finish within %.0f s; %d entries not written",
                      self.where, timeout_s, self._queue.qsize())
        else:
            self.store.close()

    def _run(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()  # idle: sleep until there is something to write
            batch: list[tuple[Any, ...]] = []
            waiters: list[threading.Event] = []
            deadline = time.monotonic() + self.flush_interval_s
            while True:
                if item is _STOP:
                    stop = True
                elif isinstance(item, threading.Event):
                    waiters.append(item)
                else:
                    batch.append(serialise(item))
                if stop or waiters or len(batch) >= self.batch_size:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if batch:
                self._write(batch)
            for waiter in waiters:
                waiter.set()

    def _write(self, rows: list[tuple[Any, ...]]) -> None:
        try:
            self.store.write(rows)
        except Exception as exc:  # a full disk or a locked file must not kill the writer
            self.failed += len(rows)
            log.error("ledger: could not write %d entries to %s: %s", len(rows), self.where, exc)
            return
        self.written += len(rows)
        if self.on_written is not None:
            self.on_written(len(rows))
