"""Finished days kept between refreshes: the same figures as without them, and a day read again when a row
lands in it late."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from llmroute.budgets import Budgets, ledger_spend
from llmroute.config import parse_config
from llmroute.dashboard.data import DashboardData
from llmroute.dashboard.days import DAY_S, DayCache
from llmroute.ledger import GradedPair, Ledger, open_store, price_rows
from llmroute.result import Attempt
from llmroute.state import InMemoryState

from ..ledger.test_postgres import postgres_dsn  # noqa: F401  (a real PostgreSQL server)
from ..ledger.test_store import entry
from .test_data import cli_json

NOW = time.time()
TODAY = NOW // DAY_S * DAY_S
CONFIG = {"providers": {
    "cerebras": {"base_url": "http://127.0.0.1:1/v1", "model": "m", "price_per_m": {"input": 0.10, "output": 0.10}},
    "runpod": {"base_url": "http://127.0.0.1:1/v1", "model": "m", "price_per_m": {"input": 0.02, "output": 0.02}},
    "gpu": {"base_url": "http://127.0.0.1:1/v1", "model": "m", "price_per_gpu_second": 0.0004},
}}
PROVIDERS = ("runpod", "cerebras", "gpu")


def record(ledger: Ledger, i: int, ts: float) -> None:
    provider = PROVIDERS[i % 3]
    attempts = [Attempt(provider=provider, model="m", ok=True, latency_ms=5.0, status=200)]
    if i % 7 == 0:
        attempts.insert(0, Attempt(provider="cerebras", model="m", ok=False, latency_ms=0.0, kind="circuit_open",
                                   error="skipped"))
    ledger.record(entry(
        i, ts=ts, request_id=f"req-{i}", provider=provider, status="failed" if i % 11 == 0 else "ok",
        prompt_tokens=100 + i, completion_tokens=50 + i, cost_usd=(100 + 50 + 2 * i) * 1e-7,
        cost_basis="gpu_seconds" if provider == "gpu" else "tokens", latency_ms=400.0 + (i * 37) % 900,
        ttft_ms=30.0 + i if i % 4 == 0 else None, fallback=len(attempts) > 1, attempts=attempts,
        key_id=f"key-{i % 3}", tags=["team=a", "x"] if i % 2 else ["team=b"]))


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    """Four days before today and today: 40 requests a day, some crossing midnight (a GPU worker busy across
    two days), a few rerouted, failed or streamed."""
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger(open_store(str(path)))
    ledger.store.put_prices(price_rows(parse_config(CONFIG)), NOW)
    i = 0
    for day in range(4, -1, -1):
        start = TODAY - day * DAY_S
        for n in range(40):
            ts = start + 0.2 + n * 60.0 if n % 10 else start + 0.1  # some start before midnight
            if ts < NOW:
                record(ledger, i, ts)
                i += 1
    for n in range(10):
        ledger.record_pair(shadow_pair(TODAY - DAY_S + n, grade=float(n % 2)))
    ledger.close()
    return path


def shadow_pair(ts: float, shadow_cost_usd: float = 1e-5, grade: float = 1.0) -> GradedPair:
    return GradedPair(
        ts=ts, request_id=f"pair-{ts}", route="quality_aware", strategy="quality_aware", tags=[], key_id=None,
        quality_score=None, route_decision=None, served_provider="runpod", reference_provider="cerebras",
        candidate_provider="runpod", served_tier="candidate", grader="exact", reference_grade=1.0,
        candidate_grade=grade, note=None, shadow_cost_usd=shadow_cost_usd, judge_cost_usd=None, source="shadow",
        prompt=None, reference_answer=None, candidate_answer=None)


def views(data: DashboardData, **params: str) -> dict[str, Any]:
    out = {}
    for view in ("overview", "providers", "budgets"):
        answer = data.compute(view, params)
        answer.pop("generated_ts")
        answer.pop("window")  # ends at now (whole seconds): two calls may straddle a second
        out[view] = answer
    return out


def test_a_refresh_reads_only_the_unfinished_day_and_answers_the_same(ledger_path: Path) -> None:
    data = DashboardData.from_ledger(str(ledger_path))
    try:
        params = {"from": time.strftime("%Y-%m-%d", time.gmtime(TODAY - 4 * DAY_S))}
        first = views(data, **params)
        read, today_read = data.days.scanned_days, data.days.tail_rows_read
        again = views(data, **params)
        assert data.days.scanned_days - read == 0  # the four finished days were kept
        assert data.days.tail_rows_read == today_read  # and today had no new row to read
        fresh = DashboardData.from_ledger(str(ledger_path))
        try:
            assert views(fresh, **params) == again == first
        finally:
            fresh.close()
    finally:
        data.close()


def test_the_kept_days_give_the_reports_figures(ledger_path: Path) -> None:
    data = DashboardData.from_ledger(str(ledger_path))
    try:
        data.compute("overview", {})
        view = data.compute("overview", {})  # from the kept days
        providers = {p["provider"]: p for p in data.compute("providers", {})["providers"]}
    finally:
        data.close()
    report = cli_json("report", "--ledger", str(ledger_path))
    total = {k: v for k, v in report["total"].items() if k != "group"}
    assert {k: view["period"][k] for k in total} == pytest.approx(total, rel=1e-12, abs=1e-9)
    for shown, expected in zip(view["by_provider"], report["groups"], strict=True):
        assert shown["group"] == expected["group"]
        assert shown["p50_ms"] == expected["p50_ms"] and shown["p95_ms"] == expected["p95_ms"]  # exact ranks
    prices = {p["provider"]: p for p in report["prices"]}
    assert providers["gpu"]["price"]["busy_s"] == pytest.approx(prices["gpu"]["busy_s"], rel=1e-9)
    assert providers["gpu"]["price"]["effective_per_m"] == pytest.approx(prices["gpu"]["effective_per_m"], rel=1e-9)
    assert view["period"]["reroutes"] == sum(1 for i in range(view["period"]["requests"]) if i % 7 == 0)


def test_a_late_row_in_a_finished_day_is_counted(ledger_path: Path) -> None:
    data = DashboardData.from_ledger(str(ledger_path))
    try:
        before = data.compute("overview", {})
        read = data.days.scanned_days
        late = Ledger(open_store(str(ledger_path)))
        record(late, 10_000, TODAY - 2 * DAY_S + 3600)  # two days ago, arriving now
        late.close()
        after = data.compute("overview", {})
        assert 1 <= data.days.scanned_days - read <= 2  # the changed day; the window's first part day if it moved on a second
        budgets = data.compute("budgets", {})
    finally:
        data.close()
    report = cli_json("report", "--ledger", str(ledger_path))
    assert after["period"]["requests"] == before["period"]["requests"] + 1 == report["total"]["requests"]
    assert after["period"]["cost_usd"] == pytest.approx(report["total"]["cost_usd"], rel=1e-12)
    keys = cli_json("report", "--ledger", str(ledger_path), "--by", "key")
    assert {k["key"]: k["requests"] for k in budgets["keys"]} == {g["group"]: g["requests"] for g in keys["groups"]}


def test_quality_is_computed_again_when_a_pair_arrives(ledger_path: Path) -> None:
    data = DashboardData.from_ledger(str(ledger_path))
    try:
        assert data.compute("quality", {})["report"]["total"]["pairs"] == 10
        ledger = Ledger(open_store(str(ledger_path)))
        ledger.record_pair(shadow_pair(NOW - 60))
        ledger.close()
        assert data.compute("quality", {})["report"]["total"]["pairs"] == 11
    finally:
        data.close()


def test_kept_days_are_bounded(ledger_path: Path) -> None:
    cache = DayCache(max_rows=50)
    store = open_store(str(ledger_path), readonly=True)
    try:
        spans = cache.spans(store, TODAY - 4 * DAY_S, NOW + 1)
        assert sum(s.rows for s in spans) > 150
        assert 0 < cache.kept_rows <= 50
        assert sum(s.rows for s in cache.spans(store, TODAY - 4 * DAY_S, NOW + 1)) == sum(s.rows for s in spans)
    finally:
        store.close()


def test_postgres_ledger_kept_days_and_a_late_row(postgres_dsn: str) -> None:  # noqa: F811
    ledger = Ledger(open_store(postgres_dsn))
    ledger.store.put_prices(price_rows(parse_config(CONFIG)), NOW)
    for i in range(60):
        record(ledger, i, TODAY - (3 - i // 20) * DAY_S + 0.1 + i * 60)  # three finished days
    ledger.close()
    data = DashboardData.from_ledger(postgres_dsn)
    try:
        first = data.compute("overview", {})
        read = data.days.scanned_days
        late = Ledger(open_store(postgres_dsn))
        record(late, 60, TODAY - 2 * DAY_S + 7200)
        late.close()
        after = data.compute("overview", {})
        assert 1 <= data.days.scanned_days - read <= 2  # the changed day; the window's first part day if it moved on a second
    finally:
        data.close()
    report = cli_json("report", "--ledger", postgres_dsn)
    assert first["period"]["requests"] + 1 == after["period"]["requests"] == report["total"]["requests"] == 61
    total = {k: v for k, v in report["total"].items() if k != "group"}
    assert {k: after["period"][k] for k in total} == pytest.approx(total, rel=1e-12, abs=1e-9)


def test_budget_spend_is_what_the_gateway_seeds(ledger_path: Path) -> None:
    config = parse_config({**CONFIG, "budgets": [{"key": "key-1", "usd": 10, "period": "month"},
                                                 {"tag": "x", "usd": 5, "period": "week"},
                                                 {"usd": 50, "period": "day"}]})
    ledger = Ledger(open_store(str(ledger_path)))
    ledger.record_pair(shadow_pair(NOW - 1, shadow_cost_usd=0.5))  # what measuring spent counts for all traffic
    ledger.close()
    data = DashboardData.from_ledger(str(ledger_path), config)
    try:
        data.compute("budgets", {})
        view = {b["name"]: b for b in data.compute("budgets", {})["budgets"]}  # from the kept days
    finally:
        data.close()
    store = open_store(str(ledger_path), readonly=True)
    try:
        seeded = ledger_spend(store, Budgets(config, InMemoryState({})), time.time())
    finally:
        store.close()
    expected = {"key:key-1": seeded.keys["key-1"]["month"], **seeded.budgets}
    assert set(view) == set(expected) and all(v > 0 for v in expected.values())
    assert {n: b["spent_usd"] for n, b in view.items()} == pytest.approx(expected, rel=1e-12)
    assert all(b["spent_from"] == "ledger" for b in view.values())
    assert view["key:key-1"]["path"][-1]["spent_usd"] == pytest.approx(expected["key:key-1"], rel=1e-12)


def test_todays_new_rows_are_read_alone_and_give_a_fresh_dashboards_figures(ledger_path: Path) -> None:
    """A dashboard polled while the gateway writes: each refresh reads the rows written since the last one, not
    the whole day again, and its figures equal a fresh dashboard's over the same ledger."""
    params = {"from": time.strftime("%Y-%m-%d", time.gmtime(TODAY - 4 * DAY_S))}
    data = DashboardData.from_ledger(str(ledger_path))
    try:
        views(data, **params)
        read = data.days.tail_rows_read
        ledger = Ledger(open_store(str(ledger_path)))
        new = [TODAY + 1.0 + n for n in range(6)]  # today, after the fixture's rows: what the gateway writes next
        for n, ts in enumerate(new):
            record(ledger, 1000 + n, min(ts, NOW - 0.5))
        ledger.close()
        refreshed = views(data, **params)
        assert data.days.tail_rows_read - read == len(new)  # the new rows only, once: the other views reuse them
        fresh = DashboardData.from_ledger(str(ledger_path))
        try:
            assert_close(views(fresh, **params), refreshed)  # sums added in another order: equal to the last bits
        finally:
            fresh.close()
    finally:
        data.close()


def assert_close(expected: Any, got: Any, where: str = "") -> None:
    if isinstance(expected, float) and isinstance(got, float):
        assert got == pytest.approx(expected, rel=1e-12, abs=1e-9), where
    elif isinstance(expected, dict):
        assert isinstance(got, dict) and expected.keys() == got.keys(), where
        for key in expected:
            assert_close(expected[key], got[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(expected) == len(got), where
        for i, (a, b) in enumerate(zip(expected, got, strict=True)):
            assert_close(a, b, f"{where}[{i}]")
    else:
        assert expected == got, where
