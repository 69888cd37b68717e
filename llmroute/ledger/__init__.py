"""The cost ledger: every routed request, what it cost, and what happened, stored for reports and replay.

    ledger = open_ledger(config)          # SQLite in the user's data dir, or Postgres by DSN
    ledger.record(entry)                  # from the request path: queued, never blocks
    ledger.record_pair(pair)              # a graded pair (shadow evaluation, quality collect): the same
    ledger.close()                        # on shutdown: commits what is queued
"""

from __future__ import annotations

import atexit
import os
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

from .entry import COLUMNS, LedgerEntry, RequestContext, entry_from_failure, entry_from_result, parse_tags
from .pairs import MAX_PAIR_TEXT_CHARS, GradedPair
from .schema import LedgerError
from .store import PriceRow, Store
from .writer import Ledger

if TYPE_CHECKING:
    from ..config import RouterConfig

LEDGER_ENV_VAR = "LLMROUTE_LEDGER"
_OPEN: weakref.WeakSet[Ledger] = weakref.WeakSet()


def default_ledger_path() -> Path:
    """``ledger.sqlite3`` in the user's data directory (``$XDG_DATA_HOME/llmroute`` on Linux)."""
    from platformdirs import user_data_path

    return user_data_path("llmroute", appauthor=False) / "ledger.sqlite3"


def ledger_location(config: RouterConfig | None = None) -> str | None:
    """Where the ledger lives: a DSN, a file path, or None when it is switched off."""
    env = os.environ.get(LEDGER_ENV_VAR, "").strip()
    if env:
        return None if env.lower() in ("off", "0", "false", "none") else env
    settings = config.ledger if config is not None else None
    if settings is not None and not settings.enabled:
        return None
    if settings is not None and settings.dsn is not None:
        return settings.dsn.get_secret_value()
    if settings is not None and settings.path:
        return settings.path
    return str(default_ledger_path())


def open_store(location: str, *, readonly: bool = False, busy_timeout_s: float = 10.0) -> Store:
    """A store for a DSN (``postgresql://``) or a SQLite file path (``busy_timeout_s``: SQLite's lock wait)."""
    if location.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        return PostgresStore(location, readonly=readonly)
    from .sqlite import SQLiteStore

    return SQLiteStore(location, readonly=readonly, busy_timeout_s=busy_timeout_s)


def price_rows(config: RouterConfig) -> list[PriceRow]:
    rows = []
    for name, p in config.providers.items():
        price = p.price_per_m
        rows.append(PriceRow(
            provider=name, input_per_m=price.input if price else None, output_per_m=price.output if price else None,
            cached_input_per_m=price.cached_input if price else None, per_gpu_second=p.price_per_gpu_second,
            idle_share=p.idle_share, quality=p.quality, latency_prior_ms=p.latency_ms,
        ))
    return rows


def open_ledger(config: RouterConfig) -> Ledger | None:
    """The ledger the config (or ``$LLMROUTE_LEDGER``) asks for, with the config's prices noted in it."""
    location = ledger_location(config)
    if location is None:
        return None
    settings = config.ledger
    store = open_store(location, busy_timeout_s=settings.busy_timeout_s)
    try:
        store.put_prices(price_rows(config), time.time())  # also proves the ledger is writable, at start-up
    except BaseException:
        store.close()
        raise
    ledger = Ledger(store, queue_size=settings.queue_size, queue_bytes=settings.queue_bytes,
                    batch_size=settings.batch_size, flush_interval_s=settings.flush_interval_s,
                    retry_s=settings.retry_s, max_text_chars=settings.max_text_chars)
    _OPEN.add(ledger)
    return ledger


@atexit.register
def _close_open_ledgers() -> None:
    """A script that never closed its router still gets its last requests written."""
    for ledger in list(_OPEN):
        ledger.close(timeout_s=10.0)


__all__ = [
    "COLUMNS",
    "MAX_PAIR_TEXT_CHARS",
    "GradedPair",
    "Ledger",
    "LedgerEntry",
    "LedgerError",
    "PriceRow",
    "RequestContext",
    "Store",
    "default_ledger_path",
    "entry_from_failure",
    "entry_from_result",
    "ledger_location",
    "open_ledger",
    "open_store",
    "parse_tags",
]
