"""What an open dashboard costs the gateway: throughput with and without a dashboard polling, side by side.

    flock BENCH_LOCK python benchmarks/dashboard_load.py [--seconds 5] [--rounds 3] [--ledger FILE] [--pollers 1]

One `llmroute serve` (ledger on) in front of a static nginx upstream, loaded by wrk at 32 connections. In
alternating rounds, nothing else touches the gateway, or ``--pollers`` dashboards poll it the way the page does:
every `refresh_s` (5 s) each one asks for every view (overview, quality, providers, budgets, requests), more
than the page asks for (it fetches the headline views and the one on screen). ``--ledger`` starts from a copy
of an existing ledger (for instance the 1M-row one `benchmarks/dashboard.py --keep` leaves), so the views read
a large history; without it the ledger holds only what the run itself writes.

A round with a dashboard measures one that is open: its first pass over the rows the previous round wrote with
no dashboard open (a catch-up, its time printed) ends before the load starts. ``--count-catch-up`` starts the load
with the dashboard instead, so that pass falls inside the measured round, as a dashboard opened under load pays.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from _util import machine, wrk
from gateway import BODY, cpu_s, free_port, nginx, process, wait_ready

ADMIN_KEY = "sk-dashboard-bench-admin"
VIEWS = ("overview", "quality", "providers", "budgets", "requests")
TARGET = 0.95


def poll(base_url: str, stop: threading.Event, refresh_s: float, counts: list[int], caught_up: threading.Event) -> None:
    """A dashboard: every view every ``refresh_s``, until ``stop``. ``caught_up`` is set once every view has
    answered (the first pass reads what the gateway wrote while no dashboard was open)."""
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as client:
        while not stop.is_set():
            for view in VIEWS:
                if client.get(f"/dashboard/api/{view}").status_code == 200:
                    counts[0] += 1
            caught_up.set()
            stop.wait(refresh_s)  # the page's refresh interval, not a synchronisation


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pollers", type=int, default=1)
    parser.add_argument("--refresh-s", type=float, default=5.0)
    parser.add_argument("--ledger", help="start from a copy of this SQLite ledger")
    parser.add_argument("--count-catch-up", action="store_true",
                        help="start the load with the dashboard: its first pass over the rows the previous round "
                             "wrote falls inside the measured round")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        ports = {"direct": free_port(), "llmroute": free_port()}
        ledger = tmp / "ledger.sqlite3"
        if args.ledger:
            shutil.copyfile(args.ledger, ledger)
        (tmp / "llmroute.yaml").write_text(
            f"providers:\n  upstream:\n    base_url: http://127.0.0.1:{ports['direct']}/v1\n    model: bench-model\n"
            "    price_per_m: {input: 0.02, output: 0.02}\n"
            f"gateway:\n  api_keys: [{{id: bench, key: {ADMIN_KEY}}}]\n"
        )
        url = f"http://127.0.0.1:{ports['llmroute']}"
        with process(nginx(tmp, ports["direct"])), process(
                [sys.executable, "-m", "llmroute.cli", "serve", "--config", str(tmp / "llmroute.yaml"),
                 "--port", str(ports["llmroute"])], env={"LLMROUTE_LEDGER": str(ledger)},
                log=tmp / "llmroute.log") as pid:
            auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
            wait_ready(f"{url}/v1/chat/completions", auth)
            began = time.perf_counter()  # a fresh dashboard reads the history once; polling then refreshes
            with httpx.Client(base_url=url, headers=auth, timeout=300) as client:
                for view in VIEWS:
                    client.get(f"/dashboard/api/{view}").raise_for_status()
            first_s = time.perf_counter() - began
            results: dict[str, list[dict[str, float]]] = {"alone": [], "dashboard": []}
            polled = [0]
            catch_up_s: list[float] = []
            for _ in range(args.rounds):
                for mode in ("alone", "dashboard"):
                    stop = threading.Event()
                    ready = [threading.Event() for _ in range(args.pollers if mode == "dashboard" else 0)]
                    pollers = [threading.Thread(target=poll, args=(url, stop, args.refresh_s, polled, caught_up))
                               for caught_up in ready]
                    began = time.perf_counter()
                    for thread in pollers:
                        thread.start()
                    for caught_up in ready if not args.count_catch_up else ():
                        caught_up.wait()  # an open dashboard: the load starts once it has caught up
                    if ready and not args.count_catch_up:
                        catch_up_s.append(time.perf_counter() - began)
                    before = cpu_s(pid)
                    run = wrk(f"{url}/v1/chat/completions", BODY, connections=32, seconds=args.seconds,
                              headers=auth)
                    run["cpu_us"] = (cpu_s(pid) - before) / max(1, run["requests"]) * 1e6
                    stop.set()
                    for thread in pollers:
                        thread.join()
                    results[mode].append(run)
        print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f} at the end")
        caught_up = (f"each round with a dashboard started its load once the dashboard's first pass over the rows "
                     f"written since had ended ({', '.join(f'{t:.2f}' for t in catch_up_s)} s)" if catch_up_s else
                     "each round with a dashboard includes its first pass over the rows written since")
        print(f"ledger: {'a copy of ' + args.ledger if args.ledger else 'fresh'}; {args.pollers} dashboard(s) "
              f"polling every view every {args.refresh_s:g} s; {polled[0]} view answers served; the first answers "
              f"of a fresh dashboard took {first_s:.1f} s before the rounds; {caught_up}\n")
        print("| gateway | requests/s | p50 ms | p99 ms | gateway CPU µs/request |")
        print("|---|---:|---:|---:|---:|")
        med = {mode: {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50_ms", "p99_ms", "cpu_us")}
               for mode, runs in results.items()}
        for mode, m in med.items():
            print(f"| {mode} | {m['rps']:,.0f} | {m['p50_ms']:.3f} | {m['p99_ms']:.3f} | {m['cpu_us']:.0f} |")
        ratio = med["dashboard"]["rps"] / med["alone"]["rps"]
        print(f"\nthroughput with a dashboard open / without: {ratio:.2f}x (target >= {TARGET})")


if __name__ == "__main__":
    main()
