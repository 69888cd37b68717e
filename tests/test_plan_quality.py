"""``llmroute plan`` states expected quality only where it was measured: the ledger's graded pairs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from llmroute.quality import QualityRouter
from llmroute.quality.retained import routed_estimate, split_estimate

from .conftest import provider
from .test_cli import llmroute
from .test_quality_report import synthetic_pairs, write_ledger


def config_file(tmp_path: Path, ledger: Path, **extra: Any) -> Path:
    """The seed's pair (cerebras strong, runpod weak), at 80/20, with its ledger at ``ledger``."""
    providers = {"cerebras": provider("http://127.0.0.1:1/v1", "cerebras"),
                 "runpod": provider("http://127.0.0.1:1/v1", "runpod")}
    providers.update(extra.pop("providers", {}))
    data = {"providers": providers, "balanced_weights": {"runpod": 80, "cerebras": 20},
            "ledger": {"path": str(ledger)}, **extra}
    path = tmp_path / "llmroute.yaml"
    path.write_text(json.dumps(data))
    return path


def plan_json(*args: str) -> dict[str, Any]:
    proc = llmroute("plan", "--monthly-tokens", "10B", *args, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_plan_takes_expected_quality_from_the_graded_pairs(tmp_path: Path) -> None:
    ledger = tmp_path / "l.sqlite3"
    pairs = [p for p in synthetic_pairs(300) if p.graded or p.request_id == "req-7"]
    for p in pairs:  # the shadow pair of this config
        p.reference_provider, p.candidate_provider = "cerebras", "runpod"
    write_ledger(ledger, pairs)
    data = plan_json("--config", str(config_file(tmp_path, ledger)))
    rows = {r["strategy"]: r for r in data["strategies"]}
    graded = [p for p in pairs if p.graded]
    candidate = [p.candidate_grade for p in graded]
    reference = [p.reference_grade for p in graded]
    balanced = rows["balanced"]["quality"]
    assert balanced["value"] == pytest.approx(0.2 + 0.8 * sum(candidate) / sum(reference))  # prompt-blind 20%
    expected = split_estimate(candidate, reference, 0.2)
    assert (balanced["ci_low"], balanced["ci_high"]) == pytest.approx((expected.low, expected.high))  # type: ignore[union-attr]
    assert balanced["pairs"] == len(graded) and balanced["grader"] == "judge+exact"
    assert balanced["source"] == "measured" and rows["balanced"]["expected_quality"] == balanced["value"]
    assert rows["cost_optimized"]["quality"]["value"] == pytest.approx(sum(candidate) / sum(reference))
    assert rows["quality_optimized"]["quality"]["value"] == 1.0
    scored = [p for p in graded if p.quality_score is not None]
    qa = rows["quality_aware"]["quality"]
    routed = routed_estimate([p.quality_score for p in scored], [p.candidate_grade for p in scored],
                             [p.reference_grade for p in scored], 0.2)
    assert routed is not None and (qa["value"], qa["ci_low"], qa["ci_high"], qa["pairs"]) == pytest.approx(
        (routed.value, routed.low, routed.high, len(scored)))
    assert data["quality_from"]["pairs"] == len(graded) and data["quality_from"]["ungraded"] == 1
    assert "benchmark_quality" not in rows["balanced"]
    table = llmroute("plan", "--monthly-tokens", "10B", "--config", str(config_file(tmp_path, ledger))).stdout
    line = next(line for line in table.splitlines() if line.startswith("balanced:"))
    assert re.search(rf"; expected quality {balanced['value']:.1%} \(95% CI \d+\.\d%–\d+\.\d%, {len(graded)} pairs, "
                     r"judge\+exact\)$", line), line
    assert "benchmark" not in table and "MMLU" not in table


def test_too_few_pairs_means_not_measured_and_how_to_measure(tmp_path: Path) -> None:
    ledger = tmp_path / "l.sqlite3"
    pairs = [p for p in synthetic_pairs(80) if p.graded][:60]
    write_ledger(ledger, pairs)
    config = config_file(tmp_path, ledger, shadow={"min_pairs": 61})
    proc = llmroute("plan", "--monthly-tokens", "10B", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith(("balanced:", "quality_aware:"))]
    assert len(rows) == 2 and all(r.endswith("; quality not measured on your traffic") for r in rows)
    assert "60 graded pairs of cerebras vs runpod" in proc.stdout and "shadow.min_pairs = 61" in proc.stdout
    assert "llmroute quality collect" in proc.stdout and "shadow: {rate: 0.05}" in proc.stdout
    data = plan_json("--config", str(config))
    assert all(r["quality"] is None and r["expected_quality"] is None for r in data["strategies"])
    # One pair fewer needed is enough for the prompt-blind splits; quality_aware needs that many scored pairs.
    config = config_file(tmp_path, ledger, shadow={"min_pairs": 60})
    rows = {r["strategy"]: r for r in plan_json("--config", str(config))["strategies"]}
    assert all(r["quality"] is not None for name, r in rows.items() if name != "quality_aware")
    scored = sum(p.quality_score is not None for p in pairs)
    assert rows["quality_aware"]["quality_note"] == (f"quality not measured: {scored} of the graded pairs carry "
                                                     "quality_aware's score (needs 60)")


def test_pairs_of_another_provider_pair_or_without_scores_do_not_count(tmp_path: Path) -> None:
    ledger = tmp_path / "l.sqlite3"
    pairs = [p for p in synthetic_pairs(300) if p.graded]
    for p in pairs:
        p.quality_score = None  # routed by prompt-blind strategies only
    write_ledger(ledger, pairs)
    slow = provider("http://127.0.0.1:1/v1", "runpod", latency_ms=1)  # the fastest: latency_optimized's pick
    data = plan_json("--config", str(config_file(tmp_path, ledger, providers={"third": slow})))
    rows = {r["strategy"]: r for r in data["strategies"]}
    assert rows["latency_optimized"]["quality"] is None
    assert "uses third, outside the measured pair cerebras vs runpod" in rows["latency_optimized"]["quality_note"]
    assert rows["quality_aware"]["quality"] is None and "carry quality_aware's score" in rows["quality_aware"]["quality_note"]
    assert rows["balanced"]["quality"] is None or rows["balanced"]["share"].keys() <= {"cerebras", "runpod"}
    # A shadow pair other than the pairs' providers: none of them measure it.
    other = plan_json("--config", str(config_file(tmp_path, ledger, shadow={"reference": "runpod", "candidate": "cerebras"})))
    assert other["quality_from"]["pairs"] == 0 and all(r["quality"] is None for r in other["strategies"])


def test_benchmark_quality_only_when_asked_and_labelled(tmp_path: Path) -> None:
    config = config_file(tmp_path, tmp_path / "missing.sqlite3")
    plain = llmroute("plan", "--monthly-tokens", "10B", "--config", str(config))
    assert plain.returncode == 0, plain.stderr
    assert "quality not measured on your traffic" in plain.stdout and "MMLU" not in plain.stdout
    assert "81.8%" not in plain.stdout  # the shipped curve's all-runpod figure, never shown as yours
    data = plan_json("--config", str(config), "--benchmark-quality")
    rows = {r["strategy"]: r for r in data["strategies"]}
    model = QualityRouter.load()
    line = model.validation["quality"]
    qa, balanced = rows["quality_aware"]["benchmark_quality"], rows["balanced"]["benchmark_quality"]
    assert qa["value"] == pytest.approx(model.expected_quality(0.2)) and qa["source"] == "benchmark"
    assert balanced["value"] == pytest.approx((0.8 * line[0] + 0.2 * line[-1]) / line[-1])
    assert qa["label"] == "MMLU/GSM8K, Mixtral-8x7B vs GPT-4"
    assert rows["quality_aware"]["quality"] is None  # the benchmark is not a measurement of this traffic
    table = llmroute("plan", "--monthly-tokens", "10B", "--config", str(config), "--benchmark-quality").stdout
    assert (f"; quality not measured on your traffic; benchmark quality {balanced['value']:.1%} of strong-only "
            "(MMLU/GSM8K, Mixtral-8x7B vs GPT-4: not your traffic)") in table
