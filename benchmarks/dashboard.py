"""How long each dashboard view's data takes over a large ledger.

    flock BENCH_LOCK python benchmarks/dashboard.py --rows 1000000 --rounds 3 [--keep FILE]

Fills a SQLite ledger through the real writer with requests spread over 30 days (three providers, one
priced per GPU-second; seven keys; tag sets; four strategies; 3% of requests with failed or skipped
attempts stored; 30% streamed with a TTFT), and one graded pair per 50 requests. Then each view's data
function is timed as the API computes it, two ways:

- cold: a fresh ``DashboardData`` (no finished day summed yet): what ``llmroute dashboard`` pays once, on its
  first answer;
- refresh: the same view asked again, as the page's polling does every few seconds (finished days are checked
  and reused; the window's first partial day and today are read again). This is what a user waits on, and what
  the 1 s target applies to.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _util import filled_ledger, ledger_arguments

from llmroute.config import parse_config
from llmroute.dashboard.data import DashboardData
from llmroute.ledger import GradedPair, Ledger, LedgerEntry, open_store, price_rows
from llmroute.result import Attempt

CONFIG = {
    "providers": {
        "cerebras": {"base_url": "http://127.0.0.1:1/v1", "model": "llama3.1-8b",
                     "price_per_m": {"input": 0.1, "output": 0.1}},
        "runpod": {"base_url": "http://127.0.0.1:1/v1", "model": "llama-8b",
                   "price_per_m": {"input": 0.02, "output": 0.02}},
        "gpu": {"base_url": "http://127.0.0.1:1/v1", "model": "llama-8b", "price_per_gpu_second": 0.0004},
    },
    "ledger": {"enabled": False},
}
VIEWS = ("overview", "quality", "providers", "budgets", "requests")
PROVIDERS = ("runpod", "runpod", "runpod", "cerebras", "gpu")
STRATEGIES = ("balanced", "cost_optimized", "quality_aware", "latency_optimized")
TAG_SETS = (["team=sales"], ["team=ops"], ["team=support", "urgent"], [])
FAILURES = ("timeout", "http_5xx", "rate_limited", "circuit_open", "cooling_down")


def fill(path: Path, rows: int) -> float:
    rng = random.Random(0)
    config = parse_config(CONFIG)
    store = open_store(str(path))
    store.put_prices(price_rows(config), time.time())
    ledger = Ledger(store, queue_size=100_000, batch_size=5000)
    start = time.time() - 30 * 86400
    began = time.perf_counter()
    for i in range(rows):
        provider = PROVIDERS[i % len(PROVIDERS)]
        strategy = STRATEGIES[i % len(STRATEGIES)]
        prompt, completion = rng.randint(50, 2000), rng.randint(20, 600)
        latency = rng.lognormvariate(6.9, 0.4)
        per_m = {"runpod": 0.02, "cerebras": 0.1, "gpu": 0.03}[provider]
        attempts = [Attempt(provider=provider, model="m", ok=True, latency_ms=latency, status=200,
                            prompt_tokens=prompt, completion_tokens=completion)]
        if rng.random() < 0.03:
            other = "cerebras" if provider != "cerebras" else "runpod"
            kind = FAILURES[i % len(FAILURES)]
            attempts.insert(0, Attempt(provider=other, model="m", ok=False, latency_ms=rng.uniform(0, 900),
                                       status=503 if kind == "http_5xx" else None, kind=kind,
                                       error=f"{other}: {kind}"))
        failed = rng.random() < 0.01
        ts = start + i * (30 * 86400 / rows)
        entry = LedgerEntry(
            ts=ts, request_id=f"{i:032x}", endpoint="chat", route=strategy, strategy=strategy,
            provider=provider, model="m", status="failed" if failed else "ok", prompt_tokens=prompt,
            completion_tokens=completion, cached_tokens=0, cost_usd=(prompt + completion) * per_m / 1e6,
            cost_basis="gpu_seconds" if provider == "gpu" else "tokens", latency_ms=latency,
            ttft_ms=latency * 0.3 if i % 10 < 3 else None, fallback=len(attempts) > 1, attempts=attempts,
            key_id=f"key-{i % 7}", user_id=f"user-{i % 101}", tags=TAG_SETS[i % len(TAG_SETS)],
            error=f"{provider}: timeout" if failed else None,
            quality_score=rng.random() if strategy == "quality_aware" else None,
            route_decision=("strong" if rng.random() < 0.3 else "weak") if strategy == "quality_aware" else None,
        )
        while ledger.pending >= 90_000:  # let the writer catch up rather than drop rows
            time.sleep(0.01)
        ledger.record(entry)
        if i % 50 == 0:
            reference = rng.random() < 0.6
            ledger.record_pair(GradedPair(
                ts=ts, request_id=f"{i:032x}", route=strategy, strategy=strategy, tags=TAG_SETS[i % len(TAG_SETS)],
                key_id=f"key-{i % 7}", quality_score=entry.quality_score, route_decision=entry.route_decision,
                served_provider="cerebras" if reference else "runpod", reference_provider="cerebras",
                candidate_provider="runpod", served_tier="reference" if reference else "candidate", grader="exact",
                reference_grade=float(rng.random() < 0.85), candidate_grade=float(rng.random() < 0.78), note=None,
                shadow_cost_usd=0.0001, judge_cost_usd=None, source="shadow", prompt=None, reference_answer=None,
                candidate_answer=None))
    ledger.close()
    return time.perf_counter() - began


def main() -> None:
    args = ledger_arguments()
    with filled_ledger(args, fill) as path:
        print("| view | cold median s | cold rounds s | refresh median s | refresh rounds s |")
        print("|---|---:|---|---:|---|")
        config = parse_config(CONFIG)
        worst = 0.0
        for view in VIEWS:
            cold, warm = [], []
            for _ in range(args.rounds):
                data = DashboardData.from_ledger(str(path), config)  # a fresh cache: every round computes
                try:
                    began = time.perf_counter()
                    answer = data.compute(view, {"since": "60d"})
                    cold.append(time.perf_counter() - began)
                    began = time.perf_counter()
                    again = data.compute(view, {"since": "60d"})
                    warm.append(time.perf_counter() - began)
                finally:
                    data.close()
                if view == "overview":
                    assert answer["period"]["requests"] == again["period"]["requests"] == args.rows
            worst = max(worst, statistics.median(warm))
            print(f"| {view} | {statistics.median(cold):.2f} | {', '.join(f'{t:.2f}' for t in cold)} "
                  f"| {statistics.median(warm):.2f} | {', '.join(f'{t:.2f}' for t in warm)} |")
        opened = []
        for _ in range(args.rounds):  # a page opening on a fresh dashboard asks for every view at once
            data = DashboardData.from_ledger(str(path), config)
            try:
                began = time.perf_counter()
                with ThreadPoolExecutor(max_workers=5) as pool:
                    list(pool.map(data.compute, VIEWS, [{"since": "60d"}] * len(VIEWS)))
                opened.append(time.perf_counter() - began)
            finally:
                data.close()
        print(f"\nevery view at once on a fresh dashboard (a page opening): median {statistics.median(opened):.2f} s "
              f"({', '.join(f'{t:.2f}' for t in opened)})")
        print(f"load average after: {os.getloadavg()[0]:.2f}; slowest refresh {worst:.2f} s (target 1 s)")
        sys.exit(0)


if __name__ == "__main__":
    main()
