"""PostgreSQL ledger, selected by a ``postgresql://`` DSN. Needs ``pip install 'llmroute[postgres]'``."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from .schema import MIGRATIONS, REQUESTS, SCHEMA_TABLE, LedgerError, Table, latest_version
from .store import PriceRow, Store

_LOCK_ID = 0x6C6C6D72  # advisory lock held while migrating, so workers do not race


def redact_dsn(dsn: str) -> str:
    """The DSN with any password replaced, for messages."""
    dsn = re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", dsn)
    return re.sub(r"(password\s*=\s*)\S+", r"\1***", dsn)


class PostgresStore(Store):
    dialect = "postgres"
    day_number_expr = "CAST(FLOOR(ts / 86400) AS INTEGER)"

    def __init__(self, dsn: str, *, readonly: bool = False) -> None:
        self._dsn = dsn
        self.where = redact_dsn(dsn)
        try:
            import psycopg
        except ImportError:
            raise LedgerError("a postgresql:// ledger needs psycopg: pip install 'llmroute[postgres]'") from None
        self._psycopg = psycopg
        try:
            self._db = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise LedgerError(f"{self.where}: cannot connect: {_first_line(exc)}") from None
        try:
            self._migrate(readonly)
        except psycopg.Error as exc:
            raise LedgerError(f"{self.where}: cannot use this ledger database: {_first_line(exc)}") from None

    def _migrate(self, readonly: bool) -> None:
        with self._db.transaction():
            if not readonly:
                self._db.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
            exists = self._db.execute("SELECT to_regclass(%s)", (SCHEMA_TABLE,)).fetchone()[0]
            if exists is None:
                if readonly:
                    raise LedgerError(f"{self.where}: no ledger in this database yet")
                if self._db.execute("SELECT to_regclass('requests')").fetchone()[0] is not None:
                    raise LedgerError(f"{self.where}: has a 'requests' table that is not llmroute's; "
                                      "refusing to write into it. Use another database or schema")
                self._db.execute(f"CREATE TABLE {SCHEMA_TABLE} (version INTEGER NOT NULL)")
                self._db.execute(f"INSERT INTO {SCHEMA_TABLE} (version) VALUES (0)")
            version = int(self._db.execute(f"SELECT max(version) FROM {SCHEMA_TABLE}").fetchone()[0] or 0)
            if version > latest_version(self.dialect):
                raise LedgerError(f"{self.where}: written by a newer llmroute (schema version {version}; "
                                  f"this one knows up to {latest_version(self.dialect)}). Upgrade llmroute")
            self.schema_version = version
            if readonly:
                return
            self.schema_version = latest_version(self.dialect)
            for number, statements in enumerate(MIGRATIONS[self.dialect][version:], version + 1):
                for sql in statements:
                    self._db.execute(sql)
                self._db.execute(f"UPDATE {SCHEMA_TABLE} SET version = %s", (number,))

    def write(self, values: list[Any], rows: int, table: Table = REQUESTS) -> None:
        if self._db.closed:  # the server went away since the last batch: a new connection, not a lost batch
            self._db = self._psycopg.connect(self._dsn, autocommit=True, connect_timeout=10)
        width = table.width
        tuples = [values[i * width:(i + 1) * width] for i in range(rows)]
        for row in tuples:
            for column in table.booleans:
                row[column] = bool(row[column])  # SQLite stores 0/1, Postgres a boolean
        with self._db.transaction(), self._db.cursor() as cur:
            cur.executemany(_pg(table.insert_sql()), tuples)

    def unavailable(self, exc: Exception) -> bool:
        return isinstance(exc, self._psycopg.OperationalError)

    def put_prices(self, prices: Iterable[PriceRow], ts: float) -> None:
        try:
            self._put_prices(prices, ts)
        except self._psycopg.Error as exc:
            raise LedgerError(f"{self.where}: cannot write to the ledger: {_first_line(exc)}") from None

    def _put_prices(self, prices: Iterable[PriceRow], ts: float) -> None:
        with self._db.transaction(), self._db.cursor() as cur:
            cur.executemany(
                "INSERT INTO prices VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (provider) DO UPDATE SET "
                "input_per_m = EXCLUDED.input_per_m, output_per_m = EXCLUDED.output_per_m, "
                "cached_input_per_m = EXCLUDED.cached_input_per_m, per_gpu_second = EXCLUDED.per_gpu_second, "
                "idle_share = EXCLUDED.idle_share, quality = EXCLUDED.quality, "
                "latency_prior_ms = EXCLUDED.latency_prior_ms, updated_ts = EXCLUDED.updated_ts",
                [(p.provider, p.input_per_m, p.output_per_m, p.cached_input_per_m, p.per_gpu_second, p.idle_share,
                  p.quality, p.latency_prior_ms, ts) for p in prices],
            )

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._db.execute(_pg(sql), params).fetchall()
        except self._psycopg.Error as exc:
            raise LedgerError(f"{self.where}: cannot read the ledger: {_first_line(exc)}") from None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            with self._db.transaction(), self._db.cursor() as cur:
                cur.execute(_pg(sql), params)
                return cur.rowcount
        except self._psycopg.Error as exc:
            raise LedgerError(f"{self.where}: cannot write to the ledger: {_first_line(exc)}") from None

    def close(self) -> None:
        self._db.close()

    def reader(self) -> PostgresStore:
        return PostgresStore(self._dsn, readonly=True)


def _pg(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


def _first_line(exc: Exception) -> str:
    return redact_dsn(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
