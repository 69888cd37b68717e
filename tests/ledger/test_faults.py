"""The ledger under faults: values no column can hold, rows the database refuses, a locked or read-only file,
and entries bigger than the queue should hold. Every entry is either stored or counted as dropped."""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from llmroute.config import RouterConfig
from llmroute.ledger import Ledger, LedgerError, open_ledger, open_store
from llmroute.result import Attempt

from ..gateway.conftest import RunningGateway
from ..test_cli import llmroute
from .test_postgres import postgres_dsn  # noqa: F401
from .test_store import entry

BIGINT_MAX = 2**63 - 1


class LogEvent(logging.Handler):
    """Sets ``event`` when the ledger logs a message containing ``text``: how a test waits for the writer thread."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.DEBUG)
        self.text = text
        self.event = threading.Event()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.lines.append(message)
        if self.text in message:
            self.event.set()


@pytest.fixture
def ledger_log() -> Iterator[Callable[[str], LogEvent]]:
    handlers: list[LogEvent] = []
    logger = logging.getLogger("llmroute.ledger")

    def watch(text: str) -> LogEvent:
        handler = LogEvent(text)
        logger.addHandler(handler)
        handlers.append(handler)
        return handler

    yield watch
    for handler in handlers:
        logger.removeHandler(handler)


def stored(path: Path, sql: str = "SELECT request_id FROM requests ORDER BY id") -> list[tuple[Any, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_absurd_values_are_clamped_and_their_batch_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    ledger = Ledger(open_store(str(path)), batch_size=100, flush_interval_s=0.01)
    huge = Attempt(provider="runpod", model="m", ok=False, latency_ms=math.nan, status=200, kind="bad",
                   error="e" * 100_000, prompt_tokens=2**80, completion_tokens=-4, cost_usd=math.inf)
    for i in range(12):
        ledger.record(entry(i))
    ledger.record(entry(
        99, completion_tokens=1e308, prompt_tokens=2**80, cached_tokens=-5, cost_usd=math.inf, latency_ms=math.nan,
        ttft_ms=-math.inf, quality_score=math.nan, model="m" * 3_900_000, user_id="u" * 1_000_000,
        route="r" * 10_000, key_id="k" * 10_000, error="x" * 10_000, tags=["t" * 10_000] * 1000,
        attempts=[huge, huge], status="failed", fallback=True,
    ))
    for i in range(12, 25):
        ledger.record(entry(i))
    assert ledger.flush(10)
    ledger.close()
    assert len(stored(path)) == 26 and ledger.written == 26 and ledger.dropped == 0
    (row,) = stored(path, "SELECT completion_tokens, prompt_tokens, cached_tokens, cost_usd, latency_ms, ttft_ms, "
                          "quality_score, length(model), length(user_id), length(route), length(key_id), "
                          "length(error), length(tags), attempts FROM requests WHERE request_id = 'req-99'")
    assert row[:7] == (BIGINT_MAX, BIGINT_MAX, 0, None, 0.0, None, None)
    assert row[7:12] == (512, 512, 512, 512, 512)
    assert row[12] < 32 * 520  # at most 32 tags, each cut
    attempts = orjson.loads(row[13])  # still valid JSON, with the values made storable
    assert attempts[0]["prompt_tokens"] == BIGINT_MAX and attempts[0]["completion_tokens"] == 0
    assert len(attempts[0]["error"]) == 512 and attempts[0]["cost_usd"] is None


def test_a_row_the_database_refuses_loses_only_itself(tmp_path: Path, ledger_log: Callable[[str], LogEvent]) -> None:
    path = tmp_path / "l.sqlite3"
    open_store(str(path)).close()
    db = sqlite3.connect(path)  # a rule the operator added: the database itself refuses this row
    db.execute("CREATE TRIGGER no_poison BEFORE INSERT ON requests WHEN NEW.user_id = 'poison' "
               "BEGIN SELECT RAISE(ABORT, 'poisoned row'); END")
    db.commit()
    db.close()
    log = ledger_log("refused entry req-7")
    dropped: list[int] = []
    ledger = Ledger(open_store(str(path)), batch_size=25, flush_interval_s=5.0, on_drop=lambda: dropped.append(1))
    for i in range(25):
        ledger.record(entry(i, user_id="poison" if i == 7 else "ok"))
    ledger.close()
    ids = [r[0] for r in stored(path)]
    assert len(ids) == 24 and "req-7" not in ids and ids == sorted(ids, key=lambda s: int(s[4:]))
    assert ledger.written == 24 and ledger.dropped == 1 and dropped == [1]
    assert log.event.is_set() and "poisoned row" in "\n".join(log.lines)


def test_a_locked_database_is_retried_and_written_once_released(
    tmp_path: Path, ledger_log: Callable[[str], LogEvent],
) -> None:
    path = tmp_path / "l.sqlite3"
    log = ledger_log("retrying for up to")
    ledger = Ledger(open_store(str(path), busy_timeout_s=0.05), flush_interval_s=0.01, retry_s=60)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # held far longer than the busy timeout
    for i in range(5):
        ledger.record(entry(i))
    assert log.event.wait(10), "the writer never tried while the file was locked"
    assert ledger.written == 0 and ledger.dropped == 0  # held for the next try, not lost
    blocker.execute("ROLLBACK")
    blocker.close()
    assert ledger.flush(20)
    ledger.close()
    assert [r[0] for r in stored(path)] == [f"req-{i}" for i in range(5)]
    assert ledger.written == 5 and ledger.dropped == 0


def test_a_database_locked_past_retry_s_counts_every_drop(
    tmp_path: Path, ledger_log: Callable[[str], LogEvent],
) -> None:
    path = tmp_path / "l.sqlite3"
    log = ledger_log("dropped 5 entries")
    dropped: list[int] = []
    ledger = Ledger(open_store(str(path), busy_timeout_s=0.02), flush_interval_s=0.01, retry_s=0.2,
                    on_drop=lambda: dropped.append(1))
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # never released while the ledger runs
    for i in range(5):
        ledger.record(entry(i))
    assert ledger.flush(20)  # returns once the entries are given up on
    assert log.event.wait(5)
    assert ledger.dropped == 5 and ledger.failed == 5 and len(dropped) == 5 and ledger.written == 0
    blocker.execute("ROLLBACK")
    blocker.close()
    ledger.record(entry(5))  # the ledger carries on once the file is free again
    ledger.close()
    assert [r[0] for r in stored(path)] == ["req-5"]


def test_the_queue_is_bounded_by_bytes_too(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    ledger = Ledger(open_store(str(path)), queue_size=10_000, queue_bytes=50_000, max_text_chars=4096,
                    flush_interval_s=10.0)
    for i in range(100):  # ~4.5 kB each: about 11 fit before the writer's first turn
        ledger.record(entry(i, model="m" * 100_000))
    assert 5 <= ledger.pending <= 12 and ledger.dropped == 100 - ledger.pending
    ledger.close()
    assert len(stored(path)) + ledger.dropped == 100


def test_the_gateway_counts_entries_it_could_not_store(
    tmp_path: Path, gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any],
) -> None:
    path = tmp_path / "gw.sqlite3"
    open_store(str(path)).close()
    gateway = gateway_factory({**seed_config, "ledger": {"path": str(path), "busy_timeout_s": 0.02,
                                                        "retry_s": 0.2, "flush_interval_s": 0.01}})
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with httpx.Client(base_url=gateway.base_url, timeout=20) as client:
            for _ in range(3):
                r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
                assert r.status_code == 200
            # The writer gives up after retry_s, in another process: the metric is what can be watched.
            deadline = time.monotonic() + 20
            while "llmroute_ledger_dropped_total 3.0" not in (metrics := client.get("/metrics").text):
                assert time.monotonic() < deadline, metrics
                time.sleep(0.02)  # a poll: nothing in another process can be waited on
            assert "llmroute_ledger_written_total 0.0" in metrics
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert "dropped 3 entries" in gateway.log() and "Traceback" not in gateway.log()


def make_read_only(path: Path) -> str:
    """Make a ledger file read-only for this process. Returns how.

    As an ordinary user that is its permissions. Root writes through permissions, so then the file is
    marked read-only the way SQLite itself reads it: a file format write version above 2 (header offset
    18) means "readers only".
    """
    if os.geteuid() != 0:
        path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        return "chmod 0444"
    data = bytearray(path.read_bytes())
    data[18] = 3
    path.write_bytes(bytes(data))
    return "write version 3"


@pytest.fixture
def read_only_ledger(tmp_path: Path) -> Path:
    path = tmp_path / "ro.sqlite3"
    store = open_store(str(path))
    store.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    make_read_only(path)
    return path


def test_a_read_only_ledger_is_a_clear_error_from_open_ledger(read_only_ledger: Path) -> None:
    config = RouterConfig.model_validate({
        "providers": {"p": {"base_url": "http://127.0.0.1:1/v1", "model": "m", "price_per_m": {"input": 1, "output": 1}}},
        "ledger": {"path": str(read_only_ledger)},
    })
    with pytest.raises(LedgerError, match=rf"{read_only_ledger.name}: cannot write to the ledger: .*read-?only"):
        open_ledger(config)


def test_serve_with_a_read_only_ledger_exits_cleanly(tmp_path: Path, read_only_ledger: Path,
                                                     seed_config: dict[str, Any]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**seed_config, "ledger": {"path": str(read_only_ledger)}}))
    proc = llmroute("serve", "--config", str(config), "--port", "0", timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert str(read_only_ledger) in proc.stderr and "read-only" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_postgres_keeps_a_batch_with_absurd_values(postgres_dsn: str) -> None:
    store = open_store(postgres_dsn)
    ledger = Ledger(store, batch_size=100, flush_interval_s=0.01)
    for i in range(10):
        ledger.record(entry(i, request_id=f"pg-{i}"))
    ledger.record(entry(99, request_id="pg-99", completion_tokens=1e308, prompt_tokens=2**80, cost_usd=math.nan,
                        user_id="nul\x00inside", model="m" * 100_000))
    assert ledger.flush(10)
    rows = ledger.store.fetch("SELECT request_id, completion_tokens, prompt_tokens, cost_usd, user_id, length(model) "
                              "FROM requests WHERE request_id LIKE 'pg-%' ORDER BY id")
    ledger.close()
    assert len(rows) == 11 and ledger.dropped == 0
    assert rows[-1] == ("pg-99", BIGINT_MAX, BIGINT_MAX, None, "nul\ufffdinside", 512)
