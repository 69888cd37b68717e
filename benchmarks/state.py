"""What sharing state through Redis costs a gateway: memory vs Redis state, side by side in one run.

    python benchmarks/state.py [--seconds 5] [--rounds 3]

Targets, all POST /v1/chat/completions with the same body, loaded by wrk:
  direct         the upstream itself: nginx returning a static chat completion
  state memory   `llmroute serve`, two providers (balanced 80/20) on that upstream, state per process
  state redis    the same with `state: {backend: redis}` against a local redis-server (every outcome,
                 latency sample and schedule step goes to the other replicas in the background)
  memory + budget, redis + budget   the same two with an all-traffic budget (`budgets:`): each request reserves
                 its worst case before routing and settles after (in Redis: locally within the replica's slice of
                 the budget; a new slice, one atomic Lua call, only when the slice runs out)

Each round loads every target at 1 and at 32 connections; rounds alternate targets so machine noise hits
all alike; the table shows medians over rounds. Needs nginx, wrk and redis-server (Debian packages).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from _util import machine, wrk
from gateway import BODY, cpu_s, free_port, nginx, process, wait_ready

TARGETS = ("direct", "state memory", "state redis", "memory + budget", "redis + budget")
BUDGET = "budgets: [{name: all, usd: 1000000, period: month}]\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for tool in ("nginx", "wrk", "redis-server"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (Debian: apt-get install nginx-light wrk redis-server)")
    tmp = Path(tempfile.mkdtemp(prefix="llmroute-bench-state-"))
    ports = {name: free_port() for name in (*TARGETS, "redis")}
    upstream = f"http://127.0.0.1:{ports['direct']}/v1"
    providers = (f"providers:\n  weak:\n    base_url: {upstream}\n    model: bench-model\n"
                 "    price_per_m: {input: 0.02, output: 0.02}\n"
                 f"  strong:\n    base_url: {upstream}\n    model: bench-model\n"
                 "    price_per_m: {input: 0.10, output: 0.10}\n"
                 "strategy: balanced\nbalanced_weights: {weak: 80, strong: 20}\n")
    (tmp / "memory.yaml").write_text(providers)
    redis_state = f"state: {{backend: redis, redis_url: 'redis://127.0.0.1:{ports['redis']}/0'}}\n"
    (tmp / "redis.yaml").write_text(providers + redis_state)
    (tmp / "memory-budget.yaml").write_text(providers + BUDGET)
    (tmp / "redis-budget.yaml").write_text(  # its own keys: not a replica of the gateway above
        providers + redis_state.replace("/0'}", "/0', key_prefix: 'budget:'}") + BUDGET)
    with ExitStack() as stack:
        stack.enter_context(process(nginx(tmp, ports["direct"])))
        stack.enter_context(process(["redis-server", "--port", str(ports["redis"]), "--bind", "127.0.0.1",
                                     "--save", "", "--appendonly", "no", "--dir", str(tmp)]))
        wait_ready(upstream + "/chat/completions")
        pids = {}
        for name, config in (("state memory", "memory.yaml"), ("state redis", "redis.yaml"),
                             ("memory + budget", "memory-budget.yaml"), ("redis + budget", "redis-budget.yaml")):
            pids[name] = stack.enter_context(process(
                [sys.executable, "-m", "llmroute.cli", "serve", "--config", str(tmp / config),
                 "--port", str(ports[name])], env={"LLMROUTE_LEDGER": "off"}, log=tmp / f"{name}.log"))
        for name in TARGETS:
            wait_ready(f"http://127.0.0.1:{ports[name]}/v1/chat/completions")
        results: dict[tuple[str, int], list[dict[str, float]]] = {}
        for _ in range(args.rounds):
            for connections in (1, 32):
                for name in TARGETS:
                    before = cpu_s(pids[name]) if name in pids else 0.0
                    r = wrk(f"http://127.0.0.1:{ports[name]}/v1/chat/completions", BODY,
                            connections=connections, seconds=args.seconds)
                    if name in pids:
                        r["cpu_us_per_request"] = (cpu_s(pids[name]) - before) * 1e6 / max(1, r["requests"])
                    results.setdefault((name, connections), []).append(r)
    report(results, args)


def report(results: dict[tuple[str, int], list[dict[str, float]]], args: argparse.Namespace) -> None:
    def med(name: str, connections: int, key: str) -> float:
        return statistics.median(r[key] for r in results[(name, connections)])

    print(f"machine: {machine()}")
    print(f"wrk, 1 thread, {args.seconds} s per run, {args.rounds} rounds, medians")
    print("| target | conns | requests/s | vs memory | p50 ms | p99 ms | gateway CPU µs/request | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for connections in (1, 32):
        base = med("state memory", connections, "rps")
        for name in TARGETS:
            rps = med(name, connections, "rps")
            cpu = f"{med(name, connections, 'cpu_us_per_request'):.0f}" if name != "direct" else "-"
            errors = sum(r["errors"] for r in results[(name, connections)])
            print(f"| {name} | {connections} | {rps:,.0f} | {rps / base:.2f}x | {med(name, connections, 'p50_ms'):.3f} | "
                  f"{med(name, connections, 'p99_ms'):.3f} | {cpu} | {errors} |")
    for connections in (1, 32):
        for plain, budgeted in (("state memory", "memory + budget"), ("state redis", "redis + budget")):
            print(f"{budgeted} / {plain} at {connections} connection(s): throughput "
                  f"{med(budgeted, connections, 'rps') / med(plain, connections, 'rps'):.2f}x, p50 added "
                  f"{med(budgeted, connections, 'p50_ms') - med(plain, connections, 'p50_ms'):+.3f} ms")


if __name__ == "__main__":
    main()
