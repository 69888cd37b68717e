"""Each dashboard view's figures over a ledger with known contents, against ``llmroute report`` and
``llmroute quality`` run as commands on the same ledger."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from llmroute.config import parse_config
from llmroute.dashboard.data import BadQuery, DashboardData
from llmroute.dashboard.query import MAX_LIMIT
from llmroute.ledger import GradedPair, Ledger, open_store, price_rows
from llmroute.result import Attempt

from ..ledger.test_store import entry
from ..test_cli import llmroute

DAY = 86400.0
T0 = time.time() - 3 * DAY
HOSTILE = "<img src=x onerror=alert(1)>"
CONFIG = {"providers": {
    "cerebras": {"base_url": "http://127.0.0.1:1/v1", "model": "llama3.1-8b", "price_per_m": {"input": 0.10, "output": 0.10}},
    "runpod": {"base_url": "http://127.0.0.1:1/v1", "model": "llama-8b", "price_per_m": {"input": 0.02, "output": 0.02}},
}}


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    """60 requests over two days (48 runpod, 12 cerebras), 5 rerouted past an open breaker, 3 failed, 10 streamed,
    one tagged with markup; 40 graded pairs."""
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger(open_store(str(path)))
    ledger.store.put_prices(price_rows(parse_config(CONFIG)), T0)
    for i in range(60):
        runpod = i % 5 != 0
        provider = "runpod" if runpod else "cerebras"
        attempts = [Attempt(provider=provider, model="m", ok=True, latency_ms=10.0 + i, status=200)]
        if i < 5:
            attempts.insert(0, Attempt(provider="cerebras", model="m", ok=False, latency_ms=0.0, kind="circuit_open",
                                       error='skipped: "kind":"circuit_open" in a message'))
        if 10 <= i < 13:
            attempts.insert(0, Attempt(provider="cerebras", model="m", ok=False, latency_ms=30.0, status=503,
                                       kind="http_5xx", error="cerebras: 503"))
        ledger.record(entry(
            i, ts=T0 + (DAY if i >= 30 else 0) + i, request_id=f"req-{i}", provider=provider,
            strategy="quality_aware" if i % 2 else "balanced", status="failed" if i in (20, 21, 22) else "ok",
            prompt_tokens=400, completion_tokens=600, cost_usd=(0.02 if runpod else 0.10) * 1000 / 1e6,
            latency_ms=100.0 + i, ttft_ms=20.0 + i if i < 10 else None, fallback=len(attempts) > 1, attempts=attempts,
            tags=[HOSTILE] if i == 59 else ["team=sales" if i < 30 else "team=ops"], key_id=f"team-{i % 3}"))
    for i in range(40):
        ledger.record_pair(GradedPair(
            ts=T0 + i, request_id=f"req-{i}", route="quality_aware", strategy="quality_aware" if i % 2 else "balanced",
            tags=["team=sales"], key_id="team-0", quality_score=i / 40, route_decision="strong" if i > 20 else "weak",
            served_provider="runpod", reference_provider="cerebras", candidate_provider="runpod",
            served_tier="reference" if i % 4 == 0 else "candidate", grader="exact", reference_grade=1.0,
            candidate_grade=float(i % 3 != 0), note=None, shadow_cost_usd=1e-5, judge_cost_usd=None, source="shadow",
            prompt=None, reference_answer=None, candidate_answer=None))
    ledger.close()
    return path


def cli_json(*args: str) -> dict:
    proc = llmroute(*args, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture
def data(ledger_path: Path):
    d = DashboardData.from_ledger(str(ledger_path))
    yield d
    d.close()


def test_overview_equals_the_report(data: DashboardData, ledger_path: Path) -> None:
    report = cli_json("report", "--ledger", str(ledger_path))
    view = data.compute("overview", {})
    assert view["source"] == "ledger" and view["baseline"] == report["baseline"] == "cerebras"
    total = {k: v for k, v in report["total"].items() if k != "group"}
    assert {k: view["period"][k] for k in total} == pytest.approx(total)
    assert view["period"]["requests"] == 60 and view["period"]["failed"] == 3
    # Day by day sums add up in another order than one SQL SUM: equal to the last bits of a float.
    assert [g["group"] for g in view["by_provider"]] == [g["group"] for g in report["groups"]]
    for shown, expected in zip(view["by_provider"], report["groups"], strict=True):
        assert {k: shown[k] for k in expected if k != "group"} == pytest.approx(
            {k: v for k, v in expected.items() if k != "group"}, rel=1e-12, abs=1e-9)
    assert view["period"]["reroutes"] == 5  # past the open breaker; the error message quoting the kind is not counted twice
    assert view["period"]["ttft_requests"] == 10 and view["period"]["ttft_p50_ms"] == 24.0
    assert view["cumulative"][-1]["cost_usd"] == pytest.approx(report["total"]["cost_usd"])
    assert view["cumulative"][-1]["savings_usd"] == pytest.approx(report["total"]["savings_usd"])
    assert sum(d["cost_usd"] for d in view["daily"]) == pytest.approx(report["total"]["cost_usd"])
    assert view["measurement"] == report["measurement"]


def test_quality_equals_the_quality_report(data: DashboardData, ledger_path: Path) -> None:
    for by in ("strategy", "tag"):
        report = cli_json("quality", "--ledger", str(ledger_path), "--by", by)
        view = data.compute("quality", {"by": by})
        assert view["measured"] is True and view["how_to_start"] is None
        for key in ("groups", "total", "curve", "prompt_blind", "tiers", "warnings"):
            assert view["report"][key] == report[key], key
    over_time = data.compute("quality", {"by": "strategy"})["over_time"]
    assert {(p["group"], p["pairs"]) for p in over_time} == {("balanced", 20), ("quality_aware", 20)}
    point = data.compute("quality", {})["operating_point"]
    assert point["reference_share"] == pytest.approx(10 / 40)


def test_quality_says_how_to_start_when_nothing_is_measured(data: DashboardData) -> None:
    view = data.compute("quality", {"since": "1h"})
    assert view["measured"] is False and "llmroute quality collect" in view["how_to_start"]


def test_providers_from_the_ledger_alone(data: DashboardData, ledger_path: Path) -> None:
    report = cli_json("report", "--ledger", str(ledger_path))
    view = data.compute("providers", {})
    assert view["live"] is False
    by_name = {p["provider"]: p for p in view["providers"]}
    cerebras = by_name["cerebras"]
    assert cerebras["breaker"] is None and cerebras["rate_limit"] is None
    assert cerebras["failures_by_kind"] == {"circuit_open": 5, "http_5xx": 3}
    assert [f["request_id"] for f in cerebras["recent_failures"]] == ["req-12", "req-11", "req-10"]
    assert len(cerebras["breaker_history"]) >= 1 and sum(h["circuit_open_skips"] for h in cerebras["breaker_history"]) == 5
    prices = {p["provider"]: p for p in report["prices"]}
    assert by_name["runpod"]["price"]["effective_per_m"] == pytest.approx(prices["runpod"]["effective_per_m"])
    assert by_name["runpod"]["price"]["configured"] == prices["runpod"]["configured"]


def test_requests_filters_pages_and_bounds(data: DashboardData) -> None:
    latest = data.compute("requests", {"limit": "5"})
    assert [r["request_id"] for r in latest["requests"]] == [f"req-{i}" for i in range(59, 54, -1)]
    following = data.compute("requests", {"limit": "5", "before": latest["next_before"]})
    assert [r["request_id"] for r in following["requests"]] == [f"req-{i}" for i in range(54, 49, -1)]
    assert data.compute("requests", {"limit": "100000"})["limit"] == MAX_LIMIT
    rerouted = data.compute("requests", {"provider": "runpod", "status": "ok", "key": "team-1", "limit": "200"})
    assert {r["request_id"] for r in rerouted["requests"]} == {
        f"req-{i}" for i in range(60) if i % 5 and i not in (20, 21, 22) and i % 3 == 1}
    first = data.compute("requests", {"tag": "team=sales", "strategy": "balanced", "limit": "200"})["requests"]
    assert {r["request_id"] for r in first} == {f"req-{i}" for i in range(0, 30, 2)}
    assert first[-1]["attempts"][0]["kind"] == "circuit_open"  # req-0: its attempts, oldest last
    hostile = data.compute("requests", {"tag": HOSTILE})["requests"]
    assert [r["tags"] for r in hostile] == [[HOSTILE]]
    with pytest.raises(BadQuery) as bad:
        data.compute("requests", {"limit": "zero"})
    assert bad.value.param == "limit"


def test_budgets_per_key_and_tag(data: DashboardData, ledger_path: Path) -> None:
    report = cli_json("report", "--ledger", str(ledger_path), "--by", "key")
    view = data.compute("budgets", {})
    assert {k["key"]: k["cost_usd"] for k in view["keys"]} == pytest.approx(
        {g["group"]: g["cost_usd"] for g in report["groups"]})
    assert HOSTILE in {t["tag"] for t in view["tags"]}
