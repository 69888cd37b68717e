"""Ledger storage: migrations, WAL, batching, back-pressure, and clear errors for files that are not ledgers."""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

import pytest

from llmroute.ledger import Ledger, LedgerEntry, LedgerError, open_store
from llmroute.ledger.schema import latest_version
from llmroute.ledger.sqlite import SQLiteStore
from llmroute.result import Attempt

from ..test_cli import llmroute


def entry(i: int = 0, **overrides: object) -> LedgerEntry:
    values: dict[str, object] = dict(
        ts=1_700_000_000.0 + i, request_id=f"req-{i}", endpoint="chat", route="balanced", strategy="balanced",
        provider="runpod", model="m", status="ok", prompt_tokens=10, completion_tokens=20, cached_tokens=0,
        cost_usd=6e-7, cost_basis="tokens", latency_ms=12.5, ttft_ms=None, fallback=False,
        attempts=[Attempt(provider="runpod", model="m", ok=True, latency_ms=12.0, status=200)],
        tags=["team=sales"],
    )
    values.update(overrides)
    return LedgerEntry(**values)  # type: ignore[arg-type]


def test_fresh_file_is_migrated_once_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "ledger.sqlite3"
    store = SQLiteStore(path)
    store.close()
    again = SQLiteStore(path)  # reopening applies nothing twice
    again.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT version FROM llmroute_schema").fetchall() == [(latest_version("sqlite"),)]
    assert {"requests", "prices"} <= {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def test_entries_round_trip_with_attempts_and_tags(tmp_path: Path) -> None:
    ledger = Ledger(open_store(str(tmp_path / "l.sqlite3")))
    for i in range(2):
        ledger.record(entry(i))
    fallback = [Attempt(provider="cerebras", model="c", ok=False, latency_ms=3.0, status=503, kind="server_error",
                        error="overloaded"), Attempt(provider="runpod", model="m", ok=True, latency_ms=12.0, status=200)]
    ledger.record(entry(2, attempts=fallback, fallback=True))
    assert ledger.flush()
    rows = ledger.store.fetch("SELECT request_id, cost_usd, attempts, tags, fallback FROM requests ORDER BY id")
    ledger.close()
    assert [r[0] for r in rows] == ["req-0", "req-1", "req-2"]
    assert rows[0][1] == 6e-7 and rows[0][3] == '["team=sales"]' and rows[0][4] == 0
    assert rows[0][2] is None  # answered by its first attempt: the row is that attempt
    assert '"provider":"cerebras"' in rows[2][2] and '"status":503' in rows[2][2] and '"error":"overloaded"' in rows[2][2]
    assert rows[2][4] == 1
    assert ledger.written == 3 and ledger.dropped == 0


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    SQLiteStore(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE llmroute_schema SET version = 99")
    db.commit()
    db.close()
    with pytest.raises(LedgerError, match=r"l\.sqlite3: written by a newer llmroute \(schema version 99"):
        SQLiteStore(path)


def refused(path: Path, pattern: str, cli_text: str) -> None:
    """The store refuses the file with ``pattern``, and ``llmroute report`` says ``cli_text`` without a traceback."""
    with pytest.raises(LedgerError, match=pattern):
        SQLiteStore(path)
    proc = llmroute("report", "--ledger", str(path))
    assert proc.returncode == 2
    assert cli_text in proc.stderr and "Traceback" not in proc.stderr


def test_corrupt_file_is_a_clear_error_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    garbage = b"\x00\x13 this is not a database \xff" * 100
    path.write_bytes(garbage)
    refused(path, "not a SQLite database", f"{path}: not a SQLite database")
    assert path.read_bytes() == garbage


def test_damaged_sqlite_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    SQLiteStore(path).close()
    data = bytearray(path.read_bytes())
    data[100:] = b"\xee" * (len(data) - 100)  # header intact, schema pages destroyed
    path.write_bytes(bytes(data))
    refused(path, r"ledger\.sqlite3: cannot use this ledger database", "cannot use this ledger database")


def test_foreign_database_is_refused_without_touching_it(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    db.commit()
    db.close()
    with pytest.raises(LedgerError, match=r"app\.db: not an llmroute ledger \(it holds other tables: customers\)"):
        SQLiteStore(path)
    db = sqlite3.connect(path)
    assert [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")] == ["customers"]


def test_full_queue_drops_loudly_and_never_blocks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "l.sqlite3"
    dropped: list[int] = []
    ledger = Ledger(SQLiteStore(path), queue_size=2, batch_size=1, flush_interval_s=0.01,
                    on_drop=lambda: dropped.append(1))
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # the writer's next commit waits on this lock
    ledger.record(entry(0))
    # The writer has taken entry 0 and is stuck on the lock; fill the queue past its size.
    with caplog.at_level(logging.WARNING, logger="llmroute.ledger"):
        finished = threading.Event()

        def produce() -> None:
            for i in range(1, 50):
                ledger.record(entry(i))
            finished.set()

        threading.Thread(target=produce).start()
        assert finished.wait(5), "record() blocked on a full queue"
    assert ledger.dropped >= 46 and len(dropped) == ledger.dropped
    assert "ledger queue full" in caplog.text and "dropped" in caplog.text
    blocker.execute("ROLLBACK")
    blocker.close()
    ledger.close()
    db = sqlite3.connect(path)
    stored = db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
    assert stored + ledger.dropped == 50  # every entry is either stored or counted as dropped


def test_close_commits_everything_queued(tmp_path: Path) -> None:
    ledger = Ledger(open_store(str(tmp_path / "l.sqlite3")), flush_interval_s=5.0)
    for i in range(1200):
        ledger.record(entry(i))
    ledger.close()
    db = sqlite3.connect(tmp_path / "l.sqlite3")
    assert db.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 1200


def test_row_follows_the_column_order() -> None:
    import dataclasses

    from llmroute.ledger import COLUMNS

    e = entry(3)
    assert [f.name for f in dataclasses.fields(LedgerEntry)] == list(COLUMNS)
    row = e.row()
    assert row[COLUMNS.index("request_id")] == "req-3" and row[COLUMNS.index("tags")] == '["team=sales"]'
