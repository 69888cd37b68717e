"""What keeps a polling dashboard cheap for the gateway: today read by id range without a count over the day
(SQLite), the window's first part day kept past its first hour. Each with the figures ``llmroute report`` gives."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from llmroute.dashboard.days import DAY_S, HOUR_S, DayCache, Span, scan, sums_by
from llmroute.ledger import Ledger, open_store

from .test_api import ADMIN, get, post, wait_for_rows
from .test_data import cli_json
from .test_day_cache import NOW, TODAY, ledger_path, record  # noqa: F401  (the fixture)


def figures(spans: list[Span]) -> tuple[int, dict[object, list[float]], list[float]]:
    """Rows, sums per provider and every latency of the spans: what a window's figures are made of."""
    latencies = sorted(float(v) for s in spans for piece in s.latency_ms.values() for v in piece)
    return sum(s.rows for s in spans), sums_by(spans, 0), latencies


def assert_same(got: list[Span], expected: list[Span]) -> None:
    rows, sums, latencies = figures(got)
    want_rows, want_sums, want_latencies = figures(expected)
    assert rows == want_rows and latencies == want_latencies
    assert sums.keys() == want_sums.keys()
    for name, values in want_sums.items():
        assert sums[name] == pytest.approx(values, rel=1e-12, abs=1e-12)


def test_a_row_stamped_past_the_windows_end_is_read_once_the_window_reaches_it(ledger_path: Path) -> None:  # noqa: F811
    """A replica whose clock runs ahead writes a row stamped after the window's end: the refresh that reads
    the rows written since cannot skip it when the window moves past its stamp."""
    if int((NOW + 10) // DAY_S) != int(NOW // DAY_S):
        pytest.skip("the test's few seconds would cross midnight")
    cache = DayCache()
    store = open_store(str(ledger_path), readonly=True)
    ledger = Ledger(open_store(str(ledger_path)))
    try:
        record(ledger, 501, NOW + 3.0)  # ahead: past the first read's window, with an id below the next row's
        record(ledger, 500, NOW - 0.5)
        assert ledger.flush()
        first = cache.spans(store, TODAY, NOW + 1, now=NOW + 0.5)
        assert_same(first, [scan(store, TODAY, NOW + 1)])
        later = cache.spans(store, TODAY, NOW + 4, now=NOW + 3.5)
        assert_same(later, [scan(store, TODAY, NOW + 4)])
        read = cache.tail_rows_read
        record(ledger, 502, NOW + 3.5)
        assert ledger.flush()
        newest = cache.spans(store, TODAY, NOW + 5, now=NOW + 4.5)
        assert cache.tail_rows_read - read == 1  # only the new row: by id, the day not counted again
        assert_same(newest, [scan(store, TODAY, NOW + 5)])
    finally:
        ledger.close()
        store.close()


def test_the_windows_first_part_day_is_kept_past_its_first_hour(ledger_path: Path) -> None:  # noqa: F811
    """A window starting mid-day (``since=30d`` moves its start every second): the stretch from the next whole
    hour to midnight is read once; only the part before that hour is read again as the start moves."""
    cache = DayCache()
    store = open_store(str(ledger_path), readonly=True)
    try:
        start = TODAY - 3 * DAY_S + 5 * HOUR_S + 600  # the fixture's rows are a minute apart from midnight on
        hi = NOW + 1
        assert_same(cache.spans(store, start, hi, now=NOW), [scan(store, start, hi)])
        read = cache.scanned_days
        for moved in (start + 60, start + 1800):
            assert_same(cache.spans(store, moved, hi, now=NOW), [scan(store, moved, hi)])
        assert cache.scanned_days == read  # the rest of the day, and the whole days after it, were kept
        past = start + HOUR_S  # the next hour: its rest is read again, once
        assert_same(cache.spans(store, past, hi, now=NOW), [scan(store, past, hi)])
        assert cache.scanned_days == read + 1
    finally:
        store.close()


def overview_when(base: str, requests: int) -> dict[str, Any]:
    """The overview once it shows ``requests`` (an answer is cached for a second or two)."""
    deadline = time.monotonic() + 15
    while True:
        status, _, text = get(base + "overview", key=ADMIN)
        assert status == 200, text
        view = json.loads(text)
        if view["period"]["requests"] == requests or time.monotonic() > deadline:
            assert view["period"]["requests"] == requests
            return view
        time.sleep(0.2)


def test_a_gateway_dashboard_polled_while_a_replica_writes_the_same_ledger(gateway_factory, seed_config, tmp_path: Path) -> None:
    """A gateway and a replica writing one SQLite ledger, a dashboard polling the gateway between their
    writes: every refresh shows what ``llmroute report`` shows for the ledger then."""
    ledger_file = tmp_path / "ledger.sqlite3"
    config = seed_config
    config["gateway"] = {"api_keys": [ADMIN]}
    config["ledger"] = {"path": str(ledger_file), "flush_interval_s": 0.05}
    gateway = gateway_factory(config)
    base = gateway.base_url + "/dashboard/api/"
    replica = Ledger(open_store(str(ledger_file)))
    try:
        sent = 0
        for step in range(3):
            for i in range(4):
                assert post(gateway.base_url + "/v1/chat/completions", ADMIN,
                            {"model": "balanced", "messages": [{"role": "user", "content": f"hi {step} {i}"}]},
                            "team=a") == 200
            sent += 4
            for i in range(3):  # the replica's rows, between the gateway's
                record(replica, 100 * step + i, time.time())
            assert replica.flush()
            sent += 3
            wait_for_rows(ledger_file, sent)
            view = overview_when(base, sent)
            report = cli_json("report", "--ledger", str(ledger_file))
            total = {k: v for k, v in report["total"].items() if k != "group"}
            assert {k: view["period"][k] for k in total} == pytest.approx(total, rel=1e-12, abs=1e-9)
            assert [g["group"] for g in view["by_provider"]] == [g["group"] for g in report["groups"]]
    finally:
        replica.close()
