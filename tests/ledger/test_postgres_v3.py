"""Schema v3 on a real PostgreSQL server: a v2 ledger migrated in place, and graded pairs written to it."""

from __future__ import annotations

import math

import pytest

from llmroute.ledger import GradedPair, Ledger, open_store
from llmroute.ledger.pairs import PAIR_COLUMNS
from llmroute.ledger.schema import GRADED_PAIRS, MIGRATIONS, REQUESTS, SCHEMA_TABLE, latest_version

from .test_pairs import pair
from .test_postgres import postgres_dsn  # noqa: F401
from .test_store import entry

psycopg = pytest.importorskip("psycopg")


def _database(dsn: str, name: str) -> str:
    """A fresh database on the test server; its DSN."""
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute(f"DROP DATABASE IF EXISTS {name}")
        db.execute(f"CREATE DATABASE {name}")
    return dsn.rsplit("/", 1)[0] + "/" + name


def _write_v2_ledger(dsn: str) -> None:
    """What llmroute's schema v2 left in a database: its two migrations (never edited since) and requests."""
    with psycopg.connect(dsn, autocommit=True) as db, db.transaction():
        db.execute(f"CREATE TABLE {SCHEMA_TABLE} (version INTEGER NOT NULL)")
        db.execute(f"INSERT INTO {SCHEMA_TABLE} (version) VALUES (2)")
        for statements in MIGRATIONS["postgres"][:2]:
            for sql in statements:
                db.execute(sql)
        for i in range(3):
            row = list(entry(i, quality_score=0.2 * i, route_decision="weak").row())
            row[REQUESTS.booleans[0]] = bool(row[REQUESTS.booleans[0]])
            db.execute(REQUESTS.insert_sql().replace("?", "%s"), row)


def test_a_v2_postgres_ledger_is_migrated_and_takes_pairs(postgres_dsn: str) -> None:
    dsn = _database(postgres_dsn, "ledger_v2")
    _write_v2_ledger(dsn)
    reader = open_store(dsn, readonly=True)
    assert reader.schema_version == 2 and not reader.has(GRADED_PAIRS)
    reader.close()
    ledger = Ledger(open_store(dsn), flush_interval_s=0.01)
    assert ledger.store.schema_version == latest_version("postgres") >= 3
    sent = [pair(0), pair(1, served_tier="reference", prompt="a\x00b", reference_answer="lone \udc00",
                         candidate_answer="c" * 50_000, reference_grade=math.nan, note="judge reply unparsed")]
    for p in sent:
        ledger.record_pair(p)
    ledger.record(entry(7))
    ledger.close()
    assert ledger.pairs_written == 2 and ledger.dropped == 0
    store = open_store(dsn, readonly=True)
    try:
        got = [GradedPair.from_row(r) for r in
               store.fetch(f"SELECT {', '.join(PAIR_COLUMNS)} FROM graded_pairs ORDER BY id")]
        requests = store.fetch("SELECT request_id, quality_score FROM requests ORDER BY id")
        version = store.fetch(f"SELECT version FROM {SCHEMA_TABLE}")
        index = store.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 'graded_pairs' AND indexname = ?",
                            ("graded_pairs_ts",))
    finally:
        store.close()
    assert got[0] == sent[0]
    assert got[1].prompt == "a\ufffdb" and got[1].reference_answer == "lone ?" and len(got[1].candidate_answer) == 32_768
    assert got[1].reference_grade is None and got[1].served_grade is None
    assert requests == [("req-0", 0.0), ("req-1", 0.2), ("req-2", 0.4), ("req-7", None)]
    assert version == [(latest_version("postgres"),)] and index == [("graded_pairs_ts",)]


def test_a_fresh_postgres_ledger_starts_at_v3(postgres_dsn: str) -> None:
    dsn = _database(postgres_dsn, "ledger_fresh")
    ledger = Ledger(open_store(dsn), flush_interval_s=0.01, batch_size=7)
    for i in range(30):
        ledger.record_pair(pair(i, tags=[f"n={i}"]))
    ledger.close()
    store = open_store(dsn, readonly=True)
    try:
        assert store.has(GRADED_PAIRS)
        assert store.fetch("SELECT COUNT(*), MIN(tags), SUM(candidate_grade) FROM graded_pairs") == [
            (30, '["n=0"]', 0.0)]
    finally:
        store.close()


def test_quality_and_report_read_pairs_from_postgres(postgres_dsn: str) -> None:
    import json

    from ..test_cli import llmroute
    from ..test_quality_report import synthetic_pairs

    dsn = _database(postgres_dsn, "ledger_quality")
    pairs = synthetic_pairs(120)
    ledger = Ledger(open_store(dsn), flush_interval_s=0.01)
    for p in pairs:
        ledger.record_pair(p)
    ledger.close()
    graded = [p for p in pairs if p.graded]
    for by in ("strategy", "tag", "day", "decision"):
        proc = llmroute("quality", "--ledger", dsn, "--by", by, "--format", "json")
        assert proc.returncode == 0, proc.stderr
        data = json.loads(proc.stdout)
        assert data["total"]["pairs"] == len(graded) and data["total"]["ungraded"] == len(pairs) - len(graded)
        assert data["total"]["retained"] == pytest.approx(sum(p.served_grade for p in graded)
                                                          / sum(p.reference_grade for p in graded))
    assert data["curve"]["pairs"] == sum(p.quality_score is not None for p in graded)
    proc = llmroute("report", "--ledger", dsn, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["measurement"]["shadow_cost_usd"] == pytest.approx(0.12)
