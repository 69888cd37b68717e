"""``llmroute report``, ``replay`` and ``plan --from-ledger`` over a ledger with known contents."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import pytest

from llmroute.config import parse_config
from llmroute.ledger import Ledger, open_store, price_rows

from ..test_cli import llmroute
from .test_store import entry

DAY = 86400.0
T0 = time.time() - 3 * DAY  # three days ago, inside the default 30-day window
PRICES = {"providers": {
    "cerebras": {"base_url": "http://127.0.0.1:1/v1", "model": "llama3.1-8b", "price_per_m": {"input": 0.10, "output": 0.10},
                 "latency_ms": 945, "quality": 2},
    "runpod": {"base_url": "http://127.0.0.1:1/v1", "model": "llama-8b", "price_per_m": {"input": 0.02, "output": 0.02},
               "latency_ms": 1200, "quality": 1},
}}


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    """100 requests of 1,000 tokens: 80 on runpod (100 ms ... 179 ms), 20 on cerebras (50 ms), over two days."""
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger(open_store(str(path)))
    ledger.store.put_prices(price_rows(parse_config(PRICES)), T0)
    for i in range(100):
        on_runpod = i % 5 != 0
        ledger.record(entry(
            i, ts=T0 + (DAY if i >= 50 else 0) + i, provider="runpod" if on_runpod else "cerebras",
            prompt_tokens=400, completion_tokens=600, cost_usd=(0.02 if on_runpod else 0.10) * 1000 / 1e6,
            latency_ms=100.0 + i if on_runpod else 50.0, fallback=i == 7, tags=["team=sales" if i < 30 else "team=ops"],
            key_id="team-a" if i % 2 else "team-b",
        ))
    ledger.close()
    return path


def report_json(path: Path, *args: str) -> dict:
    proc = llmroute("report", "--ledger", str(path), "--format", "json", *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_report_by_provider_matches_the_seed_analysis(ledger_path: Path) -> None:
    data = report_json(ledger_path)
    groups = {g["group"]: g for g in data["groups"]}
    assert set(groups) == {"cerebras", "runpod"}
    assert groups["runpod"]["requests"] == 80 and groups["runpod"]["tokens"] == 80_000
    assert groups["runpod"]["cost_usd"] == pytest.approx(0.0016, abs=1e-12)
    assert groups["cerebras"]["cost_usd"] == pytest.approx(0.0020, abs=1e-12)
    total = data["total"]
    # The seed's 80/20 case: $0.036 per 1M tokens, 64% saved against all-Cerebras.
    assert total["blended_per_m"] == pytest.approx(0.036, abs=1e-9)
    assert total["baseline_usd"] == pytest.approx(0.010, abs=1e-12)
    assert total["savings_pct"] == pytest.approx(64.0, abs=1e-6)
    assert data["baseline"] == "cerebras"
    runpod_latencies = sorted(100.0 + i for i in range(100) if i % 5)
    assert groups["runpod"]["p50_ms"] == runpod_latencies[39]  # nearest rank: 40th of 80
    assert groups["runpod"]["p95_ms"] == runpod_latencies[75]  # 76th of 80
    assert groups["cerebras"]["p95_ms"] == 50.0
    assert total["fallback_rate"] == pytest.approx(0.01)


def test_report_by_day_tag_and_key_with_a_date_range(ledger_path: Path) -> None:
    days = report_json(ledger_path, "--by", "day")["groups"]
    assert [g["requests"] for g in days] == [50, 50]
    first_day = time.strftime("%Y-%m-%d", time.gmtime(T0))
    only_first = report_json(ledger_path, "--by", "day", "--from", first_day, "--to", first_day)
    assert [(g["group"], g["requests"]) for g in only_first["groups"]] == [(first_day, 50)]
    tags = {g["group"]: g["requests"] for g in report_json(ledger_path, "--by", "tag")["groups"]}
    assert tags == {"team=sales": 30, "team=ops": 70}
    keys = {g["group"]: g["requests"] for g in report_json(ledger_path, "--by", "key")["groups"]}
    assert keys == {"team-a": 50, "team-b": 50}
    assert report_json(ledger_path, "--since", "1h")["total"]["requests"] == 0


def test_report_table_csv_and_plots(ledger_path: Path, tmp_path: Path) -> None:
    table = llmroute("report", "--ledger", str(ledger_path))
    assert table.returncode == 0, table.stderr
    assert "$0.036" in table.stdout and "64%" in table.stdout and "effective $/1M" in table.stdout
    proc = llmroute("report", "--ledger", str(ledger_path), "--format", "csv", "--by", "strategy")
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert [r["group"] for r in rows] == ["balanced", "total"] and rows[1]["requests"] == "100"
    png, page = tmp_path / "spend.png", tmp_path / "spend.html"
    for target in (png, page):
        proc = llmroute("report", "--ledger", str(ledger_path), "--plot", str(target))
        assert proc.returncode == 0, proc.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    html = page.read_text()
    assert "data:image/png;base64," in html and "<table" in html


@pytest.mark.parametrize(("args", "message"), [
    (["--since", "7x"], "'7x' is not a time span"),
    (["--by", "colour"], "--by must be one of"),
    (["--format", "xml"], "--format must be table, json or csv"),
    (["--from", "yesterday"], "'yesterday' is not a date"),
    (["--baseline", "openai"], "no provider 'openai'"),
    (["--plot", "chart.docx"], "use a file name ending in .png, .svg, .pdf or .html"),
])
def test_report_rejects_bad_options(ledger_path: Path, args: list[str], message: str) -> None:
    proc = llmroute("report", "--ledger", str(ledger_path), *args)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_report_on_a_missing_ledger(tmp_path: Path) -> None:
    proc = llmroute("report", "--ledger", str(tmp_path / "none.sqlite3"))
    assert proc.returncode == 2 and "no ledger here yet" in proc.stderr
    assert not (tmp_path / "none.sqlite3").exists()


def test_replay_under_other_strategies(ledger_path: Path) -> None:
    def replay(*args: str) -> dict:
        proc = llmroute("replay", "--ledger", str(ledger_path), "--json", *args)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    cheapest = replay("--strategy", "cost_optimized")
    assert cheapest["actual"]["cost_usd"] == pytest.approx(0.0036, abs=1e-12)
    assert cheapest["estimate"]["split"] == {"runpod": 100}
    assert cheapest["estimate"]["cost_usd"] == pytest.approx(0.0020, abs=1e-12)
    # Latencies are drawn from what runpod was observed to do (100 ... 199 ms, without the fallback request).
    assert 100.0 <= cheapest["estimate"]["p50_ms"] <= 199.0
    fastest = replay("--strategy", "latency_optimized")
    assert fastest["estimate"]["split"] == {"cerebras": 100} and fastest["estimate"]["p95_ms"] == 50.0
    split = replay("--strategy", "balanced", "--weights", "runpod=70,cerebras=30")
    assert split["estimate"]["split"] == {"runpod": 70, "cerebras": 30}
    assert split["estimate"]["cost_usd"] == pytest.approx((70 * 0.02 + 30 * 0.10) * 1000 / 1e6, abs=1e-12)
    table = llmroute("replay", "--ledger", str(ledger_path), "--strategy", "cost_optimized")
    assert "replayed: cost_optimized" in table.stdout and "less" in table.stdout
    bad = llmroute("replay", "--ledger", str(ledger_path), "--strategy", "balanced", "--weights", "openai=5")
    assert bad.returncode == 2 and "unknown provider 'openai'" in bad.stderr


def test_plan_takes_volume_and_mix_from_the_ledger(ledger_path: Path) -> None:
    proc = llmroute("plan", "--from-ledger", "--ledger", str(ledger_path), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    span_s = (DAY + 99) - 0  # first request at T0, last at T0 + DAY + 99
    assert data["monthly_tokens"] == round(100_000 * 30 * DAY / span_s)
    assert data["input_share"] == pytest.approx(0.4)
    balanced = next(s for s in data["strategies"] if s["strategy"] == "balanced")
    assert balanced["savings_pct"] == pytest.approx(64.0)
    both = llmroute("plan", "--from-ledger", "--monthly-tokens", "10M", "--ledger", str(ledger_path))
    assert both.returncode == 2 and "not both" in both.stderr


def test_gpu_second_provider_shows_configured_and_effective_price(tmp_path: Path) -> None:
    path = tmp_path / "gpu.sqlite3"
    config = parse_config({"providers": {"runpod": {
        "base_url": "http://127.0.0.1:1/v1", "model": "m", "price_per_gpu_second": 0.001, "idle_share": 0.5}}})
    ledger = Ledger(open_store(str(path)))
    ledger.store.put_prices(price_rows(config), T0)
    # Requests busy over [0, 1], [0.5, 1.5] and [3, 4]: the worker was busy 2.5 s in all.
    for i, (end_s, latency_ms) in enumerate([(1.0, 1000.0), (1.5, 1000.0), (4.0, 1000.0)]):
        ledger.record(entry(i, ts=T0 + end_s, provider="runpod", prompt_tokens=500, completion_tokens=500,
                            latency_ms=latency_ms, cost_usd=0.0005, cost_basis="gpu_seconds"))
    ledger.close()
    data = report_json(path)
    [price] = data["prices"]
    assert price["busy_s"] == pytest.approx(2.5)
    # 2.5 busy seconds at $0.001, billed at twice that for a 50% idle share, over 3,000 tokens.
    assert price["effective_per_m"] == pytest.approx(2.5 * 0.001 / 0.5 * 1e6 / 3000)
    assert data["groups"][0]["gpu_priced_requests"] == 3
    table = llmroute("report", "--ledger", str(path))
    assert "$0.001/GPU-second + 50% idle" in table.stdout and "GPU-s est." in table.stdout


def test_report_counts_requests_priced_from_estimated_tokens(tmp_path: Path) -> None:
    """A provider that sent no usage was billed from an estimate: the report says how many requests were."""
    path = tmp_path / "est.sqlite3"
    ledger = Ledger(open_store(str(path)))
    ledger.store.put_prices(price_rows(parse_config(PRICES)), T0)
    for i, basis in enumerate(["tokens", "tokens_estimated", "tokens_estimated", "tokens"]):
        ledger.record(entry(i, ts=T0 + i, provider="runpod" if i < 3 else "cerebras", prompt_tokens=400,
                            completion_tokens=600, cost_usd=0.00002, cost_basis=basis))
    ledger.close()
    data = report_json(path)
    groups = {g["group"]: g for g in data["groups"]}
    assert groups["runpod"]["estimated_tokens_requests"] == 2
    assert groups["cerebras"]["estimated_tokens_requests"] == 0
    assert data["total"]["estimated_tokens_requests"] == 2
    assert data["total"]["cost_usd"] == pytest.approx(4 * 0.00002)  # an estimate is a cost, never free
    by_day = report_json(path, "--by", "day")
    assert sum(g["estimated_tokens_requests"] for g in by_day["groups"]) == 2
    table = llmroute("report", "--ledger", str(path), "--by", "provider")
    assert table.returncode == 0 and "(2 est.)" in table.stdout
