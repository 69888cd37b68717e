"""``llmroute demo``: reproducible with --seed, each strategy's target beside what it did, readable in 100 columns."""

from __future__ import annotations

import asyncio
import json
import math
import os
from pathlib import Path

import pytest

from rich.console import Console

from llmroute.demo import (EmulatedPair, Outage, demo_tables, emulated_config, recording, run_all, run_strategy,
                           true_retained, truth, workload)
from llmroute.demo.workload import ACCURACY
from llmroute.quality_report import load_pairs
from llmroute.strategies import RoutingStrategy

from .conftest import emulator
from .test_cli import llmroute

ENV = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
# Routed by rule or by count, not by measured time: the same seed must give the same figures.
REPRODUCIBLE = ("cost_optimized", "quality_optimized", "balanced", "quality_aware")


def figures(seed: int) -> dict[str, tuple[object, ...]]:
    proc = llmroute("demo", "--requests", "40", "--concurrency", "8", "--speed", "50", "--seed", str(seed),
                    "--format", "json", env=ENV)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["seed"] == seed
    return {s["strategy"]: (s["split_by_phase"], round(s["cost_usd"], 12), s["tokens"], s["fallbacks"], s["errors"])
            for s in data["strategies"] if s["strategy"] in REPRODUCIBLE}


def test_the_same_seed_gives_the_same_split_cost_and_fallbacks() -> None:
    first, second = figures(11), figures(11)
    assert first == second
    assert first["cost_optimized"][3] == 10  # every request of the outage quarter fell back, and only those
    assert figures(12) != first  # the seed matters: another workload, other completions


def test_each_strategy_is_shown_beside_its_target_in_100_columns() -> None:
    with emulator("cerebras", seed=0) as cerebras, emulator("runpod", seed=1) as runpod:
        cfg = emulated_config({"cerebras": cerebras.base_url, "runpod": runpod.base_url})
        outage = Outage("runpod", lambda: runpod.set_faults({"503": 1.0}), lambda: runpod.set_faults({}))
        summaries = [asyncio.run(run_strategy(cfg, strategy, workload(40, seed=3), concurrency=4, max_tokens=50,
                                              outage=outage, ledger=False)).summary(cfg)
                     for strategy in RoutingStrategy]
    by_name = {s["strategy"]: s for s in summaries}
    aware = by_name["quality_aware"]
    # The outage covers requests 10-19: the weak provider answers none of them, and all of the others it is chosen for.
    assert set(aware["split_by_phase"]["outage"]) == {"cerebras"}
    assert set(aware["strong_decisions_by_phase"]) == {"before", "outage", "after"}
    assert by_name["balanced"]["split_by_phase"]["before"] == {"runpod": 8, "cerebras": 2}

    console = Console(width=100, record=True, markup=False)
    for table in demo_tables(summaries, cfg, "note", outage=True):
        console.print(table)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "…" not in text  # no cell cut short
    aims = text.split("cost and latency")[0]  # the first table: strategy, target, before, outage, after, fallbacks
    rows = {cells[0]: cells[1:] for cells in ([c.strip() for c in line.split("│")[1:-1]]
                                              for line in aims.splitlines() if line.startswith("│"))}
    assert rows["balanced"][:2] == ["80/20", "80/20"]  # the target, then the split before the outage
    assert rows["quality_aware"][0] == "80/20 (strong 20%)"
    assert rows["quality_aware"][2] == "0/100"  # during the outage everything went to cerebras
    assert f"${by_name['cost_optimized']['cost_usd']:.6f}" in text
    assert f"scored {aware['strong_decisions']:.0%} of prompts as needing the strong tier" in " ".join(text.split())


def test_the_cli_table_fits_when_columns_is_100() -> None:
    proc = llmroute("demo", "--requests", "16", "--speed", "inf", env={**ENV, "COLUMNS": "100"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines and max(len(line) for line in lines) <= 100
    for word in ("quality_aware", "latency_optimized", "target", "before", "outage", "after", "fallbacks", "saved",
                 "quality kept", "measured", "95% CI", "true"):
        assert word in proc.stdout
    assert "…" not in proc.stdout


def test_the_emulated_pair_answers_from_the_demos_truth() -> None:
    work = workload(120, seed=5)
    labels = truth(work, seed=5)
    assert {r.task for r in work} == set(ACCURACY)
    pair = EmulatedPair.start(math.inf, 5, labels)
    try:
        runs = {s: asyncio.run(run_strategy(pair.config, s, work, concurrency=8, max_tokens=300, ledger=False))
                for s in (RoutingStrategy.COST_OPTIMIZED, RoutingStrategy.QUALITY_OPTIMIZED)}
    finally:
        pair.stop()
    for run in runs.values():
        assert len(run.results) == len(work) and len(run.served) == len(work)
        for result, (prompt, provider) in zip(run.results, run.served):
            # each answer is right exactly when the truth says its provider is right on that prompt
            assert labels.grade(prompt, result.text) is labels.is_correct(provider, prompt), (prompt, result.text)
    structured = [r for r in work if r.task != "chat"]
    by_prompt = {p: r.text for p, r in zip((p for p, _ in runs[RoutingStrategy.QUALITY_OPTIMIZED].served),
                                            runs[RoutingStrategy.QUALITY_OPTIMIZED].results)}
    assert all(isinstance(json.loads(by_prompt[r.prompt]), dict) for r in structured)  # response_format honoured
    cheap = runs[RoutingStrategy.COST_OPTIMIZED]
    assert {p for _, p in cheap.served} == {"runpod"}  # no outage: the cheap one served everything
    expected = (sum(bool(labels.is_correct("runpod", r.prompt)) for r in work)
                / sum(bool(labels.is_correct("cerebras", r.prompt)) for r in work))
    assert true_retained(cheap.served, labels, "cerebras") == expected < 1
    assert runs[RoutingStrategy.QUALITY_OPTIMIZED].summary(pair.config, labels)["true_retained"] == 1.0


def test_the_truth_is_reproducible_by_seed() -> None:
    def right(seed: int) -> list[bool | None]:
        work = workload(60, seed)
        labels = truth(work, seed)
        return [labels.is_correct("runpod", r.prompt) for r in work]

    assert right(4) == right(4) and right(4) != right(6)


def test_shadow_evaluation_in_the_demo_measures_what_the_truth_says(tmp_path: Path) -> None:
    """Shadow pairs, judged by the labelled emulator, read back from the ledger: every grade is the truth, the
    measured ratio is the truth's over the shadowed requests, and the fallbacks are those of a run without it."""
    work = workload(80, seed=9)
    labels = truth(work, seed=9)
    measured_pair = EmulatedPair.start(math.inf, 9, labels, shadow_rate=1.0, requests=len(work))
    plain_pair = EmulatedPair.start(math.inf, 9, labels)
    strategies = (RoutingStrategy.COST_OPTIMIZED, RoutingStrategy.BALANCED, RoutingStrategy.QUALITY_OPTIMIZED)
    try:
        with recording(measured_pair.config, tmp_path / "demo.sqlite", measuring=True) as ledger:
            summaries = {s["strategy"]: s for s in run_all(
                measured_pair.config, work, lambda name: lambda: None, concurrency=8, max_tokens=300,
                outage=measured_pair.outage, ledger=ledger, seed=9, labels=labels) if s["strategy"] in
                {x.value for x in strategies}}
            reader = ledger.store.reader()
            pairs = load_pairs(reader)
            reader.close()
        plain = {s: asyncio.run(run_strategy(plain_pair.config, s, work, concurrency=8, max_tokens=300,
                                             outage=plain_pair.outage, ledger=False)).summary(plain_pair.config)
                 for s in strategies}
    finally:
        measured_pair.stop()
        plain_pair.stop()
    for strategy in strategies:
        summary, mine = summaries[strategy.value], [p for p in pairs if p.strategy == strategy.value]
        measured = summary["measured"]
        assert measured["sampled"] == measured["completed"] == measured["graded"] == len(mine) > len(work) // 2
        for p in mine:  # each grade is what the truth says of that answer
            assert p.served_grade == float(labels.is_correct(p.served_provider, p.prompt))
            assert p.reference_grade == float(labels.is_correct("cerebras", p.prompt))
        right = sum(labels.is_correct(p.served_provider, p.prompt) for p in mine)
        assert measured["value"] == pytest.approx(right / sum(labels.is_correct("cerebras", p.prompt) for p in mine))
        assert measured["low"] <= measured["value"] <= measured["high"] and measured["shadow_cost_usd"] > 0
        assert summary["true_retained"] is not None
        # measuring changes nothing a client sees: the same split and fallbacks as without it
        assert (summary["split_by_phase"], summary["fallbacks"]) == (plain[strategy]["split_by_phase"],
                                                                      plain[strategy]["fallbacks"])
    assert summaries["quality_optimized"]["measured"]["value"] == 1.0
    assert summaries["cost_optimized"]["measured"]["value"] < 1.0
