"""How long ``llmroute report`` takes over a large ledger.

    python benchmarks/report.py --rows 1000000 --rounds 3

Fills a SQLite ledger with synthetic requests spread over 30 days (two
providers 80/20, tags, keys, fallbacks) through the real writer, then times the
report, as the CLI runs it, for several groupings.
"""

from __future__ import annotations

import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _util import filled_ledger, ledger_arguments

from llmroute.config import parse_config
from llmroute.ledger import Ledger, LedgerEntry, open_store, price_rows
from llmroute.report import build_report
from llmroute.result import Attempt

PRICES = {"providers": {
    "cerebras": {"base_url": "http://127.0.0.1:1/v1", "model": "llama3.1-8b", "price_per_m": {"input": 0.1, "output": 0.1}},
    "runpod": {"base_url": "http://127.0.0.1:1/v1", "model": "llama-8b", "price_per_m": {"input": 0.02, "output": 0.02}},
}}


def fill(path: Path, rows: int) -> float:
    rng = random.Random(0)
    store = open_store(str(path))
    store.put_prices(price_rows(parse_config(PRICES)), time.time())
    ledger = Ledger(store, queue_size=100_000, batch_size=5000)
    start = time.time() - 30 * 86400
    began = time.perf_counter()
    for i in range(rows):
        runpod = i % 5 != 0
        provider = "runpod" if runpod else "cerebras"
        prompt, completion = rng.randint(50, 2000), rng.randint(20, 600)
        attempt = Attempt(provider=provider, model="m", ok=True, latency_ms=1.0, status=200)
        entry = LedgerEntry(
            ts=start + i * (30 * 86400 / rows), request_id=f"{i:032x}", endpoint="chat", route="balanced",
            strategy="balanced", provider=provider, model="m", status="ok", prompt_tokens=prompt,
            completion_tokens=completion, cached_tokens=0,
            cost_usd=(prompt + completion) * (0.02 if runpod else 0.1) / 1e6, cost_basis="tokens",
            latency_ms=rng.lognormvariate(7.0 if runpod else 6.8, 0.3), ttft_ms=None, fallback=rng.random() < 0.01,
            attempts=[attempt], key_id=f"key-{i % 7}", tags=[f"team={('sales', 'ops', 'support')[i % 3]}"],
        )
        while ledger.pending >= 90_000:  # let the writer catch up rather than drop rows
            time.sleep(0.01)
        ledger.record(entry)
    ledger.close()
    return time.perf_counter() - began


def main() -> None:
    args = ledger_arguments()
    with filled_ledger(args, fill) as path:
        store = open_store(str(path), readonly=True)
        prices = store.prices()
        lo, hi = 0.0, time.time() + 1
        print("| report | median s | rounds s |")
        print("|---|---:|---|")
        for by in ("provider", "day", "tag", "key"):
            times = []
            for _ in range(args.rounds):
                began = time.perf_counter()
                total = build_report(store, by, lo, hi, prices["cerebras"], prices).total
                times.append(time.perf_counter() - began)
            assert total.requests == args.rows
            print(f"| --by {by} | {statistics.median(times):.2f} | {', '.join(f'{t:.2f}' for t in times)} |")
        store.close()
        print("\nThe whole command, as a user runs it (process start and imports included):\n")
        print("| command | median s | rounds s |")
        print("|---|---:|---|")
        for by in ("provider", "tag"):
            times = []
            for _ in range(args.rounds):
                began = time.perf_counter()
                subprocess.run([sys.executable, "-m", "llmroute.cli", "report", "--ledger", str(path), "--by", by,
                                "--since", "60d", "--format", "json"], check=True, capture_output=True)
                times.append(time.perf_counter() - began)
            print(f"| llmroute report --by {by} | {statistics.median(times):.2f} | "
                  f"{', '.join(f'{t:.2f}' for t in times)} |")


if __name__ == "__main__":
    main()
