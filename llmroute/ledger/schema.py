"""Versioned schema migrations, one list per SQL dialect (v4: gateway_keys).

A migration is applied once, in order, inside a transaction, and the version
it reaches is stored in ``llmroute_schema``. Never edit a shipped migration:
add the next one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import LLMRouteError
from .entry import COLUMNS, row_bytes
from .pairs import PAIR_COLUMNS, pair_row_bytes

SCHEMA_TABLE = "llmroute_schema"


class LedgerError(LLMRouteError):
    """A ledger that cannot be opened or written: says which file or DSN, and why."""


_REQUESTS_V1 = """
CREATE TABLE requests (
    id {pk},
    ts DOUBLE PRECISION NOT NULL,
    request_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    route TEXT,
    strategy TEXT NOT NULL,
    provider TEXT,
    model TEXT,
    status TEXT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    cost_usd DOUBLE PRECISION,
    cost_basis TEXT NOT NULL,
    latency_ms DOUBLE PRECISION NOT NULL,
    ttft_ms DOUBLE PRECISION,
    fallback {bool} NOT NULL,
    attempts TEXT,
    key_id TEXT,
    user_id TEXT,
    tags TEXT,
    error TEXT
)"""

_PRICES_V1 = """
CREATE TABLE prices (
    provider TEXT PRIMARY KEY,
    input_per_m DOUBLE PRECISION,
    output_per_m DOUBLE PRECISION,
    cached_input_per_m DOUBLE PRECISION,
    per_gpu_second DOUBLE PRECISION,
    idle_share DOUBLE PRECISION NOT NULL,
    quality INTEGER NOT NULL,
    latency_prior_ms DOUBLE PRECISION NOT NULL,
    updated_ts DOUBLE PRECISION NOT NULL
)"""

# v2: quality_aware's score and decision per request.
_V2 = [
    "ALTER TABLE requests ADD COLUMN quality_score DOUBLE PRECISION",
    "ALTER TABLE requests ADD COLUMN route_decision TEXT",
]

# v3: graded pairs (shadow evaluation and ``quality collect``), what retained quality is measured from.
_PAIRS_V3 = """
CREATE TABLE graded_pairs (
    id {pk},
    ts DOUBLE PRECISION NOT NULL,
    request_id TEXT NOT NULL,
    route TEXT,
    strategy TEXT NOT NULL,
    tags TEXT,
    key_id TEXT,
    quality_score DOUBLE PRECISION,
    route_decision TEXT,
    served_provider TEXT NOT NULL,
    reference_provider TEXT NOT NULL,
    candidate_provider TEXT NOT NULL,
    served_tier TEXT NOT NULL,
    grader TEXT NOT NULL,
    reference_grade DOUBLE PRECISION,
    candidate_grade DOUBLE PRECISION,
    note TEXT,
    shadow_cost_usd DOUBLE PRECISION,
    judge_cost_usd DOUBLE PRECISION,
    source TEXT NOT NULL,
    prompt TEXT,
    reference_answer TEXT,
    candidate_answer TEXT
)"""

# By time for reports; by request id for a prompt collected again (only its latest pair counts).
_PAIRS_V3_INDEXES = ["CREATE INDEX graded_pairs_ts ON graded_pairs (ts)",
                     "CREATE INDEX graded_pairs_request ON graded_pairs (request_id)"]

# v4: gateway keys made with ``llmroute keys``. Only a key's SHA-256 digest is stored (hex, unique), never the key.
# A revoked key keeps its row (``revoked_ts``): ledger rows name it, and its name is not handed out again.
# Budget columns are stored for budget enforcement to read; ``strategies`` and ``tags`` are JSON lists.
_KEYS_V4 = """
CREATE TABLE gateway_keys (
    name TEXT PRIMARY KEY,
    key_sha256 TEXT NOT NULL UNIQUE,
    created_ts DOUBLE PRECISION NOT NULL,
    updated_ts DOUBLE PRECISION NOT NULL,
    revoked_ts DOUBLE PRECISION,
    budget_usd DOUBLE PRECISION,
    budget_period TEXT,
    rpm BIGINT,
    tpm BIGINT,
    strategies TEXT,
    tags TEXT,
    admin {bool} NOT NULL
)"""

GATEWAY_KEYS_VERSION = 4
"""The schema version that created ``gateway_keys``."""

MIGRATIONS: dict[str, list[list[str]]] = {
    "sqlite": [
        [
            _REQUESTS_V1.format(pk="INTEGER PRIMARY KEY", bool="INTEGER"),
            "CREATE INDEX requests_ts ON requests (ts)",
            _PRICES_V1,
        ],
        _V2,
        [_PAIRS_V3.format(pk="INTEGER PRIMARY KEY"), *_PAIRS_V3_INDEXES],
        [_KEYS_V4.format(bool="INTEGER")],
    ],
    "postgres": [
        [
            _REQUESTS_V1.format(pk="BIGSERIAL PRIMARY KEY", bool="BOOLEAN"),
            "CREATE INDEX requests_ts ON requests (ts)",
            _PRICES_V1,
        ],
        _V2,
        [_PAIRS_V3.format(pk="BIGSERIAL PRIMARY KEY"), *_PAIRS_V3_INDEXES],
        [_KEYS_V4.format(bool="BOOLEAN")],
    ],
}


def latest_version(dialect: str) -> int:
    return len(MIGRATIONS[dialect])


@dataclass(frozen=True, slots=True)
class Table:
    """A table the writer appends rows to: its columns, and how to size a queued row."""

    name: str
    columns: tuple[str, ...]
    row_bytes: Callable[[tuple[Any, ...]], int]
    booleans: tuple[int, ...] = ()
    """Columns SQLite stores as 0/1 and Postgres as a boolean."""
    since_version: int = 1
    """The schema version that created the table."""

    @property
    def width(self) -> int:
        return len(self.columns)

    @property
    def id_index(self) -> int:
        """Where a row keeps its request id, for messages about a refused row."""
        return self.columns.index("request_id")

    @functools.lru_cache(maxsize=16)  # noqa: B019 (a handful of module-level tables)
    def insert_sql(self, rows: int = 1) -> str:
        """A ``?``-placeholder INSERT of ``rows`` rows."""
        one = "(" + ", ".join("?" for _ in self.columns) + ")"
        return f"INSERT INTO {self.name} ({', '.join(self.columns)}) VALUES " + ", ".join([one] * rows)


REQUESTS = Table("requests", COLUMNS, row_bytes, booleans=(COLUMNS.index("fallback"),))
GRADED_PAIRS = Table("graded_pairs", PAIR_COLUMNS, pair_row_bytes, since_version=3)
TABLES = (REQUESTS, GRADED_PAIRS)
