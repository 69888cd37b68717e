"""The storage interface every ledger backend implements, and what they share.

Kept small on purpose: append rows, upsert prices, run a read query. Reports,
replay and plans are SQL over the ``requests`` table, written once with ``?``
placeholders and a few dialect snippets.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .schema import REQUESTS, Table


@dataclass(frozen=True, slots=True)
class PriceRow:
    """A provider's prices as they were when traffic was recorded, for reports without a config."""

    provider: str
    input_per_m: float | None
    output_per_m: float | None
    cached_input_per_m: float | None
    per_gpu_second: float | None
    idle_share: float
    quality: int
    latency_prior_ms: float


class Store(ABC):
    """A ledger backend. Not thread-safe: the writer thread owns the one that writes."""

    dialect: str
    where: str
    """The file or DSN (without password), for messages."""
    schema_version: int = 0
    """The ledger's schema version once opened (a read-only store sees an older ledger as it is)."""

    # Dialect snippets used by the read queries.
    day_number_expr: str
    """Whole days since the Unix epoch (UTC) of ``ts``."""

    @abstractmethod
    def write(self, values: list[Any], rows: int, table: Table = REQUESTS) -> None:
        """Append ``rows`` rows to ``table`` in one transaction; ``values`` holds them flat, in its column order."""

    def has(self, table: Table) -> bool:
        """Whether this ledger has ``table`` yet: a read-only store does not migrate an older ledger."""
        return self.schema_version >= table.since_version

    @abstractmethod
    def put_prices(self, prices: Iterable[PriceRow], ts: float) -> None:
        """Upsert the prices; raises ``LedgerError`` naming the store when it cannot be written."""

    def unavailable(self, exc: Exception) -> bool:
        """True when a failed write says the store is unavailable for now (locked, busy, full, disconnected):
        the same rows may go in later. False when the rows themselves were refused."""
        return False

    @abstractmethod
    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read query written with ``?`` placeholders."""

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement that changes rows (``?`` placeholders) in its own transaction; the rows it changed.
        For small administrative tables (gateway keys), not for the request path."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def reader(self) -> Store:
        """Another read-only connection to the same ledger, for a query run in parallel."""

    def prices(self) -> dict[str, PriceRow]:
        rows = self.fetch("SELECT provider, input_per_m, output_per_m, cached_input_per_m, per_gpu_second, "
                          "idle_share, quality, latency_prior_ms FROM prices")
        return {r[0]: PriceRow(*r) for r in rows}
