"""Graded pairs in the ledger: schema v3, ``Ledger.record_pair`` on the shared writer, and storable rows."""

from __future__ import annotations

import math
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llmroute.ledger import MAX_PAIR_TEXT_CHARS, GradedPair, Ledger, open_store
from llmroute.ledger.pairs import PAIR_COLUMNS
from llmroute.ledger.schema import GRADED_PAIRS, latest_version
from llmroute.ledger.sqlite import SQLiteStore

from .test_faults import LogEvent, ledger_log, stored  # noqa: F401
from .test_store import entry

V2_LEDGER = Path(__file__).parent / "data" / "ledger_v2.sqlite3"
"""A ledger written by llmroute's schema v2 code (three quality_aware requests), kept as it was."""


def pair(i: int = 0, **overrides: Any) -> GradedPair:
    values: dict[str, Any] = dict(
        ts=1_700_000_000.0 + i, request_id=f"req-{i}", route="quality_aware", strategy="quality_aware",
        tags=["team=sales"], key_id="k1", quality_score=0.5, route_decision="weak", served_provider="runpod",
        reference_provider="cerebras", candidate_provider="runpod", served_tier="candidate", grader="exact",
        reference_grade=1.0, candidate_grade=0.0, note=None, shadow_cost_usd=2e-6, judge_cost_usd=0.0,
    )
    values.update(overrides)
    return GradedPair(**values)


def stored_pairs(path: Path) -> list[GradedPair]:
    return [GradedPair.from_row(r) for r in stored(path, f"SELECT {', '.join(PAIR_COLUMNS)} FROM graded_pairs ORDER BY id")]


def test_pairs_round_trip_beside_requests(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    ledger = Ledger(open_store(str(path)), flush_interval_s=0.01)
    sent = [pair(0), pair(1, served_tier="reference", served_provider="cerebras", tags=[], key_id=None,
                         quality_score=None, route_decision=None, source="collect", prompt="2+2?",
                         reference_answer="4", candidate_answer="5"),
            pair(2, reference_grade=None, note="shadow call failed: timeout", shadow_cost_usd=None)]
    for i, p in enumerate(sent):
        ledger.record(entry(i))
        ledger.record_pair(p)
    assert ledger.flush(10)
    ledger.close()
    assert stored_pairs(path) == sent
    assert [r[0] for r in stored(path)] == ["req-0", "req-1", "req-2"]
    assert ledger.written == 3 and ledger.pairs_written == 3 and ledger.dropped == 0
    assert [p.served_grade for p in sent] == [0.0, 1.0, 0.0] and [p.graded for p in sent] == [True, True, False]


def test_pair_values_are_made_storable_and_their_batch_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    ledger = Ledger(open_store(str(path)), batch_size=100, flush_interval_s=0.01, max_text_chars=64)
    long_prompt = "p" * (MAX_PAIR_TEXT_CHARS + 5000)
    ledger.record_pair(pair(0))
    ledger.record_pair(pair(1, reference_grade=math.nan, candidate_grade=1.7, shadow_cost_usd=math.inf,
                            judge_cost_usd=-1.0, quality_score=math.inf, route="r" * 1000, note="n" * 1000,
                            tags=["t" * 1000, 5], prompt=long_prompt, reference_answer="a\x00b",
                            candidate_answer="lone \ud800 surrogate", grader=None, strategy=7))
    ledger.record_pair(pair(2, reference_grade=-0.5, candidate_grade="0.25", tags="solo"))
    ledger.record_pair(pair(3))
    ledger.close()
    rows = stored_pairs(path)
    assert [p.request_id for p in rows] == ["req-0", "req-1", "req-2", "req-3"] and ledger.dropped == 0
    odd = rows[1]
    assert odd.reference_grade is None and odd.candidate_grade == 1.0  # NaN is ungraded, never a score
    assert odd.shadow_cost_usd is None and odd.judge_cost_usd is None and odd.quality_score is None
    assert len(odd.route) == 64 and len(odd.note) == 64 and odd.tags == ["t" * 64, "5"]  # type: ignore[arg-type]
    assert odd.prompt == long_prompt[:MAX_PAIR_TEXT_CHARS]  # its own bound, larger than max_text_chars
    assert odd.reference_answer == "a\ufffdb" and odd.candidate_answer == "lone ? surrogate"
    assert odd.grader == "" and odd.strategy == "7"
    assert rows[2].reference_grade == 0.0 and rows[2].candidate_grade == 0.25 and rows[2].tags == ["solo"]


def test_pairs_and_requests_share_the_queue_bounds(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    dropped: list[int] = []
    ledger = Ledger(open_store(str(path)), queue_size=4, flush_interval_s=30.0, on_drop=lambda: dropped.append(1))
    for i in range(3):
        ledger.record(entry(i))
        ledger.record_pair(pair(i))
    # The writer waits for its first turn: the first four (two of each) fill the queue, the rest are dropped.
    assert ledger.pending == 4 and ledger.dropped == 2 and len(dropped) == 2
    ledger.close()
    assert len(stored(path)) == 2 and len(stored_pairs(path)) == 2 and ledger.pairs_written == 2


def test_pairs_count_against_the_byte_bound(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    ledger = Ledger(open_store(str(path)), queue_bytes=150_000, flush_interval_s=30.0)
    text = "x" * MAX_PAIR_TEXT_CHARS
    for i in range(5):  # about 98 kB each: one fits
        ledger.record_pair(pair(i, prompt=text, reference_answer=text, candidate_answer=text))
    assert ledger.pending == 1 and ledger.dropped == 4
    ledger.close()
    assert len(stored_pairs(path)) == 1


def test_a_pair_the_database_refuses_loses_only_itself(tmp_path: Path, ledger_log: Callable[[str], LogEvent]) -> None:
    path = tmp_path / "l.sqlite3"
    open_store(str(path)).close()
    db = sqlite3.connect(path)
    db.execute("CREATE TRIGGER no_poison BEFORE INSERT ON graded_pairs WHEN NEW.grader = 'poison' "
               "BEGIN SELECT RAISE(ABORT, 'poisoned pair'); END")
    db.commit()
    db.close()
    log = ledger_log("refused entry req-6")
    ledger = Ledger(open_store(str(path)), batch_size=20, flush_interval_s=30.0)
    for i in range(20):
        ledger.record_pair(pair(i, grader="poison" if i == 6 else "exact"))
        ledger.record(entry(i))
    ledger.close()
    ids = [p.request_id for p in stored_pairs(path)]
    assert len(ids) == 19 and "req-6" not in ids and ids == [f"req-{i}" for i in range(20) if i != 6]
    assert len(stored(path)) == 20  # the requests batched alongside are all there
    assert ledger.pairs_written == 19 and ledger.written == 20 and ledger.dropped == ledger.failed == 1
    assert log.event.is_set() and "poisoned pair" in "\n".join(log.lines)


def test_a_locked_database_holds_pairs_and_requests_until_released(
    tmp_path: Path, ledger_log: Callable[[str], LogEvent],
) -> None:
    path = tmp_path / "l.sqlite3"
    log = ledger_log("retrying for up to")
    ledger = Ledger(open_store(str(path), busy_timeout_s=0.05), flush_interval_s=0.01, retry_s=60)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    for i in range(4):
        ledger.record_pair(pair(i))
        ledger.record(entry(i))
    assert log.event.wait(10), "the writer never tried while the file was locked"
    assert ledger.pairs_written == 0 and ledger.dropped == 0
    blocker.execute("ROLLBACK")
    blocker.close()
    assert ledger.flush(20)
    ledger.close()
    assert [p.request_id for p in stored_pairs(path)] == [f"req-{i}" for i in range(4)]
    assert len(stored(path)) == 4 and ledger.dropped == 0


def test_a_v2_ledger_file_is_migrated_to_v3_keeping_its_requests(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    shutil.copy(V2_LEDGER, path)
    reader = SQLiteStore(path, readonly=True)  # a report on an older ledger: read as it is, not migrated
    assert reader.schema_version == 2 and not reader.has(GRADED_PAIRS)
    reader.close()
    before = stored(path, "SELECT * FROM requests ORDER BY id")
    ledger = Ledger(open_store(str(path)), flush_interval_s=0.01)
    assert ledger.store.schema_version == latest_version("sqlite") >= 3 and ledger.store.has(GRADED_PAIRS)
    ledger.record_pair(pair(0, request_id="v2-1"))
    ledger.record(entry(9))
    ledger.close()
    after = stored(path, "SELECT * FROM requests ORDER BY id")
    assert after[:3] == before and len(after) == 4 and [r[2] for r in before] == ["v2-0", "v2-1", "v2-2"]
    assert [p.request_id for p in stored_pairs(path)] == ["v2-1"]
    assert stored(path, "SELECT version FROM llmroute_schema") == [(latest_version("sqlite"),)]
    assert ("graded_pairs_ts",) in stored(path, "SELECT name FROM sqlite_master WHERE type = 'index'")
    SQLiteStore(path).close()  # opening again migrates nothing
    assert stored(path, "SELECT version FROM llmroute_schema") == [(latest_version("sqlite"),)]


@pytest.mark.parametrize("bad", [None, "x"])
def test_served_grade_of_an_unknown_tier_is_unknown(bad: Any) -> None:
    assert pair(0, served_tier=bad).served_grade is None
