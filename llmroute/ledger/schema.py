"""Versioned schema migrations, one list per SQL dialect.

A migration is applied once, in order, inside a transaction, and the version
it reaches is stored in ``llmroute_schema``. Never edit a shipped migration:
add the next one.
"""

from __future__ import annotations

from ..errors import LLMRouteError

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

MIGRATIONS: dict[str, list[list[str]]] = {
    "sqlite": [
        [
            _REQUESTS_V1.format(pk="INTEGER PRIMARY KEY", bool="INTEGER"),
            "CREATE INDEX requests_ts ON requests (ts)",
            _PRICES_V1,
        ],
        _V2,
    ],
    "postgres": [
        [
            _REQUESTS_V1.format(pk="BIGSERIAL PRIMARY KEY", bool="BOOLEAN"),
            "CREATE INDEX requests_ts ON requests (ts)",
            _PRICES_V1,
        ],
        _V2,
    ],
}


def latest_version(dialect: str) -> int:
    return len(MIGRATIONS[dialect])
