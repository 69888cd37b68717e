"""SQLite ledger: the default, one file in the user's data directory, WAL mode.

WAL with ``synchronous=NORMAL`` makes each committed batch survive the process
being killed (the OS has the pages); only a power loss can cost the last
commits. Several processes (gateway workers) can share one file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .schema import MIGRATIONS, REQUESTS, SCHEMA_TABLE, LedgerError, Table, latest_version
from .store import PriceRow, Store

_ROWS_PER_INSERT = 200  # 200 rows x 23 columns stays well under SQLite's 32,766 bound parameters


class SQLiteStore(Store):
    dialect = "sqlite"
    day_number_expr = "CAST(ts / 86400 AS INTEGER)"

    def __init__(self, path: str | Path, *, readonly: bool = False, busy_timeout_s: float = 10.0) -> None:
        self.path = Path(path).expanduser()
        self.busy_timeout_s = busy_timeout_s
        self.where = str(self.path)
        _check_file(self.path, must_exist=readonly)
        if not readonly:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise LedgerError(f"{self.where}: cannot create its directory: {exc.strerror or exc}") from None
        try:
            uri = f"file:{self.path}?mode=ro" if readonly else f"file:{self.path}"
            self._db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False,
                                       timeout=busy_timeout_s)
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            if not readonly:
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute("PRAGMA synchronous = NORMAL")
            self._migrate(readonly)
        except sqlite3.DatabaseError as exc:
            if exc.sqlite_errorcode == sqlite3.SQLITE_NOTADB:  # type: ignore[attr-defined]
                raise _not_a_database(self.path) from None
            raise LedgerError(f"{self.where}: cannot use this ledger database: {exc}{_hint(exc)}") from None

    def _migrate(self, readonly: bool) -> None:
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and SCHEMA_TABLE not in tables:
            shown = ", ".join(sorted(tables)[:5])
            raise LedgerError(f"{self.where}: not an llmroute ledger (it holds other tables: {shown}); "
                              "refusing to write into it. Point ledger.path at another file")
        if readonly:
            if not tables:
                raise LedgerError(f"{self.where}: empty database, no ledger in it yet")
            self.schema_version = self._check_version()
            return
        self._db.execute("BEGIN IMMEDIATE")  # one process migrates; the others wait, then see it done
        try:
            self._db.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (version INTEGER NOT NULL)")
            version = self._check_version()
            if version == 0:
                self._db.execute(f"INSERT INTO {SCHEMA_TABLE} (version) VALUES (0)")
            for number, statements in enumerate(MIGRATIONS[self.dialect][version:], version + 1):
                for sql in statements:
                    self._db.execute(sql)
                self._db.execute(f"UPDATE {SCHEMA_TABLE} SET version = ?", (number,))
            self._db.execute("COMMIT")
            self.schema_version = latest_version(self.dialect)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _check_version(self) -> int:
        row = self._db.execute(f"SELECT max(version) FROM {SCHEMA_TABLE}").fetchone()
        version = int(row[0] or 0) if row else 0
        if version > latest_version(self.dialect):
            raise LedgerError(f"{self.where}: written by a newer llmroute (schema version {version}; "
                              f"this one knows up to {latest_version(self.dialect)}). Upgrade llmroute")
        return version

    def write(self, values: list[Any], rows: int, table: Table = REQUESTS) -> None:
        # One multi-row INSERT per chunk, not executemany: the sqlite3 module releases and retakes the
        # GIL around every statement step, and under load each retake makes the event loop thread give
        # way; one step per chunk keeps the writer from convoying the request path.
        width = table.width
        with self._db:
            self._db.execute("BEGIN")
            for start in range(0, rows, _ROWS_PER_INSERT):
                count = min(_ROWS_PER_INSERT, rows - start)
                self._db.execute(table.insert_sql(count), values[start * width:(start + count) * width])

    def put_prices(self, prices: Iterable[PriceRow], ts: float) -> None:
        try:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT OR REPLACE INTO prices VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(p.provider, p.input_per_m, p.output_per_m, p.cached_input_per_m, p.per_gpu_second,
                      p.idle_share, p.quality, p.latency_prior_ms, ts) for p in prices],
                )
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"{self.where}: cannot write to the ledger: {exc}{_hint(exc)}") from None

    def unavailable(self, exc: Exception) -> bool:
        # OperationalError is SQLite saying "not now": locked, busy, disk full, I/O error, read-only file.
        # Anything else (a value SQLite cannot bind, a constraint) is about the rows.
        return isinstance(exc, sqlite3.OperationalError)

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"{self.where}: cannot read the ledger: {exc}") from None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            with self._db:
                return self._db.execute(sql, params).rowcount
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"{self.where}: cannot write to the ledger: {exc}{_hint(exc)}") from None

    def close(self) -> None:
        self._db.close()

    def reader(self) -> SQLiteStore:
        return SQLiteStore(self.path, readonly=True, busy_timeout_s=self.busy_timeout_s)


def _hint(exc: sqlite3.DatabaseError) -> str:
    """What to do about the errors a user can fix."""
    text = str(exc)
    if "readonly" in text or "read-only" in text:
        return " (the file or its directory is read-only: fix its permissions, or point ledger.path elsewhere)"
    if "locked" in text:
        return " (another process holds a lock on it)"
    return ""


def _check_file(path: Path, *, must_exist: bool) -> None:
    """What can be said without opening the file. Its header is left to SQLite (see ``_not_a_database``):
    opening and closing a file descriptor on it here would drop every POSIX lock this process holds on it,
    the ledger writer's included, and another process could then delete the write-ahead log under it."""
    if path.is_dir():
        raise LedgerError(f"{path}: is a directory; ledger.path must name a file")
    if not path.exists() and must_exist:
        raise LedgerError(f"{path}: no ledger here yet (nothing has been recorded)")


def _not_a_database(path: Path) -> LedgerError:
    return LedgerError(f"{path}: not a SQLite database (it may be corrupt, or another kind of file); "
                       "move it away or point ledger.path elsewhere")
