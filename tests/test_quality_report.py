"""``llmroute quality`` and the measurement spend in ``llmroute report``, over real SQLite ledgers."""

from __future__ import annotations

import csv
import io
import json
import random
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from llmroute.ledger import Ledger, open_store
from llmroute.quality.metrics import curve
from llmroute.quality.retained import retained

from .ledger.test_pairs import V2_LEDGER, pair
from .ledger.test_store import entry
from .test_cli import llmroute


def synthetic_pairs(n: int, seed: int = 0, now: float | None = None) -> list[Any]:
    """Pairs of known grades: half routed by quality_aware (with its score), some ungraded, two tags."""
    rng = random.Random(seed)
    now = time.time() if now is None else now
    out = []
    for i in range(n):
        score = rng.random()
        ref = float(rng.random() < 0.9)
        cand = ref * float(rng.random() < 1 - 0.6 * score)
        qa = i % 2 == 0
        out.append(pair(i, ts=now - 3600 - i * 7, strategy="quality_aware" if qa else "balanced",
                        route="chat" if i % 3 else "lead", tags=["team=a"] if i % 4 else ["team=a", "team=b"],
                        quality_score=score if qa else None, route_decision=("strong" if score > 0.8 else "weak") if qa else None,
                        served_tier="reference" if rng.random() < 0.2 else "candidate",
                        reference_grade=ref, candidate_grade=None if i % 25 == 7 else cand,
                        note="judge reply unparsed" if i % 25 == 7 else None,
                        grader="judge" if i % 5 else "exact", shadow_cost_usd=0.001, judge_cost_usd=0.0005 if i % 5 else 0.0))
    return out


def write_ledger(path: Path, pairs: list[Any], requests: int = 0) -> None:
    ledger = Ledger(open_store(str(path)), flush_interval_s=0.01)
    for i in range(requests):
        ledger.record(entry(i, ts=time.time() - 60, cost_usd=0.25))
    for p in pairs:
        ledger.record_pair(p)
    ledger.close()
    assert ledger.dropped == 0


def quality_json(*args: str) -> dict[str, Any]:
    proc = llmroute("quality", *args, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def graded(pairs: list[Any], keep=lambda p: True) -> tuple[list[float], list[float], list[float]]:  # type: ignore[no-untyped-def]
    rows = [p for p in pairs if p.graded and keep(p)]
    return [p.served_grade for p in rows], [p.candidate_grade for p in rows], [p.reference_grade for p in rows]


def test_quality_by_strategy_matches_the_pairs(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    pairs = synthetic_pairs(400)
    write_ledger(path, pairs)
    data = quality_json("--ledger", str(path), "--since", "7d")
    groups = {g["group"]: g for g in data["groups"]}
    assert set(groups) == {"balanced", "quality_aware"}
    for name, group in [*groups.items(), ("total", data["total"])]:
        mine = [p for p in pairs if name in ("total", p.strategy)]
        served, _, reference = graded(mine)
        assert group["pairs"] == len(served) and group["ungraded"] == len(mine) - len(served)
        assert group["retained"] == pytest.approx(sum(served) / sum(reference))
        assert group["served_mean"] == pytest.approx(sum(served) / len(served))
        assert group["reference_mean"] == pytest.approx(sum(reference) / len(reference))
        assert group["ci_low"] < group["retained"] < group["ci_high"]
        expected = retained(served, reference)
        assert (group["ci_low"], group["ci_high"]) == pytest.approx((expected.low, expected.high))  # type: ignore[union-attr]
        assert group["shadow_cost_usd"] == pytest.approx(0.001 * len(mine))
        assert group["judge_cost_usd"] == pytest.approx(0.0005 * sum(p.grader == "judge" for p in mine))
        assert group["graders"] == {g: sum(p.grader == g for p in mine) for g in {p.grader for p in mine}}
    # quality_aware's curve: its pairs re-decided from their logged scores, as router eval computes it.
    scored = [p for p in pairs if p.quality_score is not None and p.graded]
    line = curve([p.quality_score for p in scored], [p.candidate_grade for p in scored],
                 [p.reference_grade for p in scored])
    assert data["curve"]["pairs"] == len(scored) and len(data["curve"]["points"]) == 101
    assert data["curve"]["calls_for_95"] == line.calls_for(0.95) and data["curve"]["apgr"] == pytest.approx(line.apgr())
    assert data["curve"]["points"][30]["retained"] == pytest.approx(line.quality[30] / line.strong_only)
    assert data["curve"]["points"][100]["retained"] == 1.0
    assert any("ungraded" in w for w in data["warnings"]) and not any("fewer than" in w for w in data["warnings"])


def test_quality_by_tag_counts_a_pair_under_each_of_its_tags(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    pairs = synthetic_pairs(200)
    write_ledger(path, pairs)
    groups = {g["group"]: g for g in quality_json("--ledger", str(path), "--by", "tag")["groups"]}
    for tag in ("team=a", "team=b"):
        served, _, _ = graded(pairs, lambda p, tag=tag: tag in p.tags)
        assert groups[tag]["pairs"] == len(served)
    assert groups["team=a"]["pairs"] > groups["team=b"]["pairs"] > 0
    days = quality_json("--ledger", str(path), "--by", "day")["groups"]
    assert sum(d["pairs"] for d in days) == len(graded(pairs)[0])
    assert all(len(d["group"]) == 10 and d["group"][4] == "-" for d in days)
    decisions = {g["group"] for g in quality_json("--ledger", str(path), "--by", "decision")["groups"]}
    assert decisions == {"strong", "weak", "(none)"}


def test_the_table_warns_when_there_are_too_few_pairs(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    write_ledger(path, synthetic_pairs(30))
    proc = llmroute("quality", "--ledger", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "95% CI" in proc.stdout and "quality_aware" in proc.stdout
    assert "warning: only 29 graded pairs (fewer than shadow.min_pairs = 100)" in proc.stdout
    assert "too wide, or too unstable, to mean anything" in proc.stdout
    as_json = llmroute("quality", "--ledger", str(path), "--format", "json")
    assert "fewer than shadow.min_pairs" in as_json.stderr and json.loads(as_json.stdout)["total"]["pairs"] == 29


def test_min_pairs_comes_from_the_config(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    write_ledger(path, synthetic_pairs(30))
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"providers": {"a": {"base_url": "http://127.0.0.1:1/v1", "model": "m",
                                                                      "price_per_m": {"input": 1, "output": 2}}},
                                  "ledger": {"path": str(path)}, "shadow": {"min_pairs": 20}}))
    data = quality_json("--config", str(config))  # the ledger the config names
    assert data["min_pairs"] == 20 and data["total"]["pairs"] == 29
    assert not any(w.startswith("only") for w in data["warnings"])  # enough in total ...
    assert any(w.startswith("groups with fewer than 20 graded pairs") for w in data["warnings"])  # ... not per group


@pytest.mark.parametrize("ledger_file", ["empty", "v2"])
def test_without_pairs_it_says_how_to_start_measuring(tmp_path: Path, ledger_file: str) -> None:
    path = tmp_path / "l.sqlite3"
    if ledger_file == "v2":
        shutil.copy(V2_LEDGER, path)  # an older ledger, read as it is: no graded_pairs table yet
    else:
        write_ledger(path, [], requests=3)
    proc = llmroute("quality", "--ledger", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "no graded pairs" in proc.stdout and "llmroute quality collect" in proc.stdout and "shadow" in proc.stdout
    data = quality_json("--ledger", str(path))
    assert data["total"]["pairs"] == 0 and data["total"]["retained"] is None and data["curve"] is None
    assert "llmroute quality collect" in data["warnings"][0]


def test_csv_and_plot(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    write_ledger(path, synthetic_pairs(150))
    proc = llmroute("quality", "--ledger", str(path), "--format", "csv", "--plot", str(tmp_path / "curve.png"))
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert [r["group"] for r in rows] == ["balanced", "quality_aware", "total"]
    assert {"pairs", "retained", "ci_low", "ci_high", "served_mean", "reference_mean", "shadow_cost_usd"} <= set(rows[0])
    assert (tmp_path / "curve.png").read_bytes().startswith(b"\x89PNG")
    page = llmroute("quality", "--ledger", str(path), "--plot", str(tmp_path / "curve.html"))
    assert page.returncode == 0 and "data:image/png;base64," in (tmp_path / "curve.html").read_text()
    bad = llmroute("quality", "--ledger", str(path), "--plot", str(tmp_path / "curve.txt"))
    assert bad.returncode == 2 and ".png" in bad.stderr and not (tmp_path / "curve.txt").exists()
    assert llmroute("quality", "--ledger", str(path), "--by", "provider").returncode == 2


def test_a_subcommand_runs_without_the_report(tmp_path: Path) -> None:
    from llmroute.cli import app
    from llmroute.cli.quality import quality_app

    @quality_app.command("probe-only")
    def probe() -> None:
        typer.echo("probe ran")

    try:
        result = CliRunner().invoke(app, ["quality", "probe-only"], env={"LLMROUTE_LEDGER": str(tmp_path / "none")})
    finally:
        quality_app.registered_commands[:] = [c for c in quality_app.registered_commands if c.name != "probe-only"]
    assert result.exit_code == 0, result.output
    assert result.output == "probe ran\n"  # the group's report did not run (it would fail: no ledger there)


def test_report_shows_the_cost_of_measurement_apart_from_serving(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    pairs = synthetic_pairs(40)
    write_ledger(path, pairs, requests=4)
    proc = llmroute("report", "--ledger", str(path), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["total"]["cost_usd"] == pytest.approx(4 * 0.25)  # serving spend: the requests only
    judge = 0.0005 * sum(p.grader == "judge" for p in pairs)
    assert data["measurement"] == pytest.approx({"pairs": 40, "shadow_cost_usd": 0.04, "judge_cost_usd": judge,
                                                 "total_usd": 0.04 + judge})
    table = llmroute("report", "--ledger", str(path))
    assert judge == pytest.approx(0.016)  # 32 of the 40 pairs were judged
    assert "cost of measurement (not in the spend above): $0.056 = $0.04 shadow calls + $0.016 judge, for 40 graded" \
           in table.stdout
    old = tmp_path / "v2.sqlite3"
    shutil.copy(V2_LEDGER, old)
    proc = llmroute("report", "--ledger", str(old), "--format", "json", "--since", "10000d")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["measurement"]["pairs"] == 0


def test_a_prompt_collected_again_counts_once_but_its_spend_counts_twice(tmp_path: Path) -> None:
    """`quality collect` run twice over the same prompts records each pair twice: only the latest is a measurement,
    or every interval would narrow with no new information; both runs were paid for."""
    path = tmp_path / "l.sqlite3"
    first = [pair(i, request_id=f"collect:p{i}", source="collect", strategy="collect", served_tier="candidate",
                  ts=time.time() - 600 + i, shadow_cost_usd=0.001, reference_grade=1.0, candidate_grade=0.0 if i % 4 == 0 else 1.0)
             for i in range(120)]
    # The second run grades the same prompts differently (a judge is not deterministic): the later grade counts.
    again = [pair(i, request_id=f"collect:p{i}", source="collect", strategy="collect", served_tier="candidate",
                  ts=time.time() - 300 + i, shadow_cost_usd=0.001, reference_grade=1.0, candidate_grade=0.0 if i % 2 == 0 else 1.0)
             for i in range(120)]
    write_ledger(path, first + again)
    data = quality_json("--ledger", str(path))
    assert data["total"]["pairs"] == 120 and data["total"]["graders"] == {"exact": 120}
    assert data["total"]["retained"] == pytest.approx(0.5)
    assert data["total"]["shadow_cost_usd"] == pytest.approx(0.001 * 240)
    plan = json.loads(llmroute("plan", "--monthly-tokens", "10M", "--ledger", str(path), "--format", "json").stdout)
    assert plan["quality_from"]["pairs"] == 120
