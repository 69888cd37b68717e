"""How often shadow evaluation's 95% interval holds the true retained quality, over seeded runs.

    python benchmarks/quality_coverage.py [--runs 100] [--requests 500] [--rate 0.2]

Each run is the demo's setting without the outage: the emulated pair in labelled mode (each prompt
answered right or wrong by a seeded truth), a fresh workload and truth per seed, `--requests`
requests through a real `LLMRouter` over HTTP for each strategy below, shadow evaluation sampling
`--rate` of them, and a judge (the strong emulator, rating mode) grading both answers. The measured
figure is read back from the ledger's graded pairs with its bootstrap interval, exactly as
`llmroute quality` computes it; the truth is right answers among all the requests the strategy
served over right answers had the strong provider served them all. Coverage is the share of runs
whose interval holds the truth (target: at least 90%).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from pathlib import Path

from _util import machine

from llmroute.demo import EmulatedPair, run_strategy, true_retained
from llmroute.demo.quality import measured_retained
from llmroute.demo.workload import truth, workload
from llmroute.ledger import Ledger, open_store
from llmroute.strategies import RoutingStrategy

STRATEGIES = (RoutingStrategy.COST_OPTIMIZED, RoutingStrategy.BALANCED, RoutingStrategy.QUALITY_AWARE)


def one_run(seed: int, requests: int, rate: float, folder: Path) -> dict[str, dict[str, float]]:
    work = workload(requests, seed=seed)
    labels = truth(work, seed)
    pair = EmulatedPair.start(float("inf"), seed, labels=labels, shadow_rate=rate, requests=requests)
    out: dict[str, dict[str, float]] = {}
    ledger = Ledger(open_store(str(folder / f"run-{seed}.sqlite3")))
    try:
        reference = pair.config.quality_pair()[0]
        for strategy in STRATEGIES:
            started = time.time()
            run = asyncio.run(run_strategy(pair.config, strategy, work, concurrency=16, max_tokens=128,
                                           ledger=ledger, shadow_seed=seed))
            measured = measured_retained(ledger, strategy.value, started)
            out[strategy.value] = {"truth": true_retained(run.served, labels, reference) or 0.0, **measured}
    finally:
        ledger.close()
        pair.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--rate", type=float, default=0.2)
    args = parser.parse_args()
    logging.getLogger("llmroute").setLevel(logging.ERROR)  # cold-start notes and drift alarms are expected here
    results: dict[str, list[dict[str, float]]] = {s.value: [] for s in STRATEGIES}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="llmroute-coverage-") as tmp:
        for seed in range(args.runs):
            for name, figures in one_run(seed, args.requests, args.rate, Path(tmp)).items():
                results[name].append(figures)
    print(f"machine: {machine()}")
    print(f"{args.runs} seeded runs, {args.requests} requests per strategy and run, shadow rate {args.rate}, "
          f"judge in rating mode; {time.perf_counter() - started:.0f} s")
    print()
    print("| strategy | runs with an interval | interval holds the truth | mean graded pairs | mean width | "
          "mean truth | mean measured - truth |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, runs in results.items():
        measured = [r for r in runs if "value" in r]
        held = sum(r["low"] - 1e-9 <= r["truth"] <= r["high"] + 1e-9 for r in measured)
        print(f"| {name} | {len(measured)} | {held}/{len(measured)} ({held / max(1, len(measured)):.0%}) | "
              f"{statistics.fmean(r['graded'] for r in measured):.0f} | "
              f"{statistics.fmean(r['high'] - r['low'] for r in measured):.1%} | "
              f"{statistics.fmean(r['truth'] for r in measured):.1%} | "
              f"{statistics.fmean(r['value'] - r['truth'] for r in measured):+.1%} |")


if __name__ == "__main__":
    main()
