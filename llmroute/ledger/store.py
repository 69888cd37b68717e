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

from .entry import COLUMNS



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

    # Dialect snippets used by the read queries.
    day_number_expr: str
    """Whole days since the Unix epoch (UTC) of ``ts``."""

    @abstractmethod
    def write(self, values: list[Any], rows: int) -> None:
        """Append ``rows`` rows in one transaction; ``values`` holds them flat, ``COLUMNS`` values per row."""

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
    def close(self) -> None: ...

    @abstractmethod
    def reader(self) -> Store:
        """Another read-only connection to the same ledger, for a query run in parallel."""

    def prices(self) -> dict[str, PriceRow]:
        rows = self.fetch("SELECT provider, input_per_m, output_per_m, cached_input_per_m, per_gpu_second, "
                          "idle_share, quality, latency_prior_ms FROM prices")
        return {r[0]: PriceRow(*r) for r in rows}


INSERT_SQL = f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"
