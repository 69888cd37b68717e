"""Gateway throughput and added latency, side by side in one run.

    python benchmarks/gateway.py [--seconds 5] [--rounds 3] [--workers 1] [--litellm-venv .venv-litellm]

Targets, all POST /v1/chat/completions with the same body, loaded by wrk:
  (a) direct     the upstream itself: nginx returning a static chat completion
  (b) llmroute   `llmroute serve` with the upstream as its only provider
  (c) litellm    the LiteLLM proxy with the same upstream (if --litellm-venv has it; see setup_litellm.sh)
  (d) forwarder  benchmarks/forwarder.py: read the body, POST it upstream with aiohttp's pooled client, return
      it; on aiohttp's server (`forwarder`) and on uvicorn with uvloop and httptools (`forwarder uvicorn`)
  (e) llmroute+quality_aware  two providers on the same upstream, each request scored by the quality model;
      the same process with `x-llmroute-strategy: cost_optimized` is the baseline without scoring
  (f) llmroute shadow R  two providers on the same upstream with the ledger on and shadow evaluation at rate R
      (0, 0.1, 1.0; exact grader): what measuring quality on live traffic costs the client
      (`--shadow-only` runs just these three and the direct upstream)

Each round loads every target at 1 and at 32 connections; rounds alternate
targets so machine noise hits all alike; the table shows medians over rounds.
Added latency is a target's p50 (or p99) minus the direct upstream's, at the
same connection count. Needs nginx and wrk (Debian packages).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from collections.abc import Iterator

import httpx
from _util import CHAT_BODY, machine, wrk

HERE = Path(__file__).resolve().parent
BODY = CHAT_BODY.replace('"model":"m"', '"model":"bench"')  # the name LiteLLM's config routes
MASTER_KEY = "sk-bench-master-key"
COMPLETION = (
    '{"id":"chatcmpl-static","object":"chat.completion","created":1700000000,"model":"bench-model",'
    '"choices":[{"index":0,"message":{"role":"assistant","content":"The lead is qualified: 500 employees, '
    'SaaS, clear budget. Next step: a discovery call."},"finish_reason":"stop","logprobs":null}],'
    '"usage":{"prompt_tokens":24,"completion_tokens":21,"total_tokens":45}}'
)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, headers: dict[str, str] | None = None, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.post(url, content=BODY, headers={"content-type": "application/json", **(headers or {})},
                          timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not become ready")


@contextmanager
def process(args: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> Iterator[int]:
    out = open(log, "w") if log else subprocess.DEVNULL
    proc = subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        yield proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system, every thread) used by the process group ``pid`` leads (a target and its
    worker processes): steadier than wall time on a shared machine."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[2]) == pid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def nginx(tmp: Path, port: int) -> list[str]:
    conf = tmp / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path {tmp};
  server {{
    listen 127.0.0.1:{port};
    location = /v1/chat/completions {{ default_type application/json; return 200 '{COMPLETION}'; }}
    location = /v1/models {{ default_type application/json; return 200 '{{"object":"list","data":[]}}'; }}
  }}
}}
""")
    return ["nginx", "-c", str(conf), "-p", str(tmp)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--litellm-venv", default=".venv-litellm")
    parser.add_argument("--shadow-only", action="store_true", help="only the direct upstream and shadow rates")
    args = parser.parse_args()
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (Debian: apt-get install nginx-light wrk)")
    tmp = Path(tempfile.mkdtemp(prefix="llmroute-bench-"))
    ports = {name: free_port() for name in ("direct", "llmroute", "llmroute+ledger", "llmroute+quality_aware",
                                            "litellm", "forwarder", "forwarder uvicorn", *SHADOW_TARGETS)}
    upstream = f"http://127.0.0.1:{ports['direct']}/v1"
    (tmp / "llmroute.yaml").write_text(
        f"providers:\n  upstream:\n    base_url: {upstream}\n    model: bench-model\n"
        "    price_per_m: {input: 0.02, output: 0.02}\n"
    )
    (tmp / "quality_aware.yaml").write_text(
        f"providers:\n  weak:\n    base_url: {upstream}\n    model: bench-model\n"
        "    price_per_m: {input: 0.02, output: 0.02}\n"
        f"  strong:\n    base_url: {upstream}\n    model: bench-model\n    quality: 2\n"
        "    price_per_m: {input: 0.10, output: 0.10}\n"
        "strategy: quality_aware\n"
    )
    for name, rate in SHADOW_TARGETS.items():
        (tmp / f"{name}.yaml").write_text(
            f"providers:\n  weak:\n    base_url: {upstream}\n    model: bench-model\n"
            "    price_per_m: {input: 0.02, output: 0.02}\n"
            f"  strong:\n    base_url: {upstream}\n    model: bench-model\n    quality: 2\n"
            "    price_per_m: {input: 0.10, output: 0.10}\n"
            f"strategy: balanced\nshadow: {{rate: {rate}, grader: exact, max_usd_per_day: 1000, max_in_flight: 32, "
            "max_queued: 1024}\n"
        )
    (tmp / "litellm.yaml").write_text(
        "model_list:\n  - model_name: bench\n    litellm_params:\n      model: openai/bench-model\n"
        f"      api_base: {upstream}\n      api_key: none\n"
    )
    litellm_bin = Path(args.litellm_venv) / "bin" / "litellm"
    targets = {"direct": {}, "llmroute": {}, "llmroute+ledger": {}, "llmroute+quality_aware": {},
               "llmroute 2 providers, cost_optimized": {"x-llmroute-strategy": "cost_optimized"}, "forwarder": {},
               "forwarder uvicorn": {},
               **{name: {} for name in SHADOW_TARGETS}}
    if args.shadow_only:
        targets = {"direct": {}, **{name: {} for name in SHADOW_TARGETS}}
    ports["llmroute 2 providers, cost_optimized"] = ports["llmroute+quality_aware"]
    with ExitStack() as stack:
        stack.enter_context(process(nginx(tmp, ports["direct"])))
        wait_ready(upstream + "/chat/completions")
        # Without and with the cost ledger (SQLite in the temporary folder), to measure what recording costs.
        pids: dict[str, int] = {}
        servers = [("llmroute", "off", "llmroute.yaml"),
                   ("llmroute+ledger", str(tmp / "ledger.sqlite3"), "llmroute.yaml"),
                   ("llmroute+quality_aware", "off", "quality_aware.yaml"),
                   *((name, str(tmp / f"{name}.sqlite3"), f"{name}.yaml") for name in SHADOW_TARGETS)]
        for name, ledger, config in servers:
            if name not in targets:
                continue
            pids[name] = stack.enter_context(process(
                [sys.executable, "-m", "llmroute.cli", "serve", "--config", str(tmp / config),
                 "--port", str(ports[name]), "--workers", str(args.workers)],
                env={"LLMROUTE_LEDGER": ledger}, log=tmp / f"{name}.log"))
        if not args.shadow_only:
            pids["llmroute 2 providers, cost_optimized"] = pids["llmroute+quality_aware"]
            for name, fwd_stack in (("forwarder", "aiohttp"), ("forwarder uvicorn", "uvicorn")):
                pids[name] = stack.enter_context(process(
                    [sys.executable, str(HERE / "forwarder.py"), upstream, str(ports[name]), str(args.workers),
                     "--stack", fwd_stack], log=tmp / f"{name.replace(' ', '-')}.log"))
        if args.shadow_only:
            pass
        elif litellm_bin.exists():
            stack.enter_context(process(
                [str(litellm_bin), "--config", str(tmp / "litellm.yaml"), "--port", str(ports["litellm"]),
                 "--num_workers", str(args.workers)],
                env={"LITELLM_MASTER_KEY": MASTER_KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                     "LITELLM_LOG": "ERROR"}, log=tmp / "litellm.log"))
            targets["litellm"] = {"Authorization": f"Bearer {MASTER_KEY}"}
        else:
            print(f"(LiteLLM skipped: {litellm_bin} not found; run benchmarks/setup_litellm.sh)")
        for name, headers in targets.items():
            wait_ready(f"http://127.0.0.1:{ports[name]}/v1/chat/completions", headers)
        results: dict[tuple[str, int], list[dict[str, float]]] = {}
        for _ in range(args.rounds):
            for connections in (1, 32):
                for name, headers in targets.items():
                    before = cpu_s(pids[name]) if name in pids else 0.0
                    r = wrk(f"http://127.0.0.1:{ports[name]}/v1/chat/completions", BODY,
                            connections=connections, seconds=args.seconds, headers=headers)
                    if name in pids:
                        r["cpu_us_per_request"] = (cpu_s(pids[name]) - before) * 1e6 / max(1, r["requests"])
                    results.setdefault((name, connections), []).append(r)
        if not args.shadow_only:
            report(results, targets, args)
        shadow_report(results, tmp)


SHADOW_TARGETS = {"llmroute shadow 0": 0.0, "llmroute shadow 0.1": 0.1, "llmroute shadow 1.0": 1.0}


def shadow_report(results: dict[tuple[str, int], list[dict[str, float]]], tmp: Path) -> None:
    """Shadow evaluation's cost to clients: throughput and latency at each rate against rate 0."""
    import sqlite3

    def med(name: str, connections: int, key: str) -> float:
        return statistics.median(r[key] for r in results[(name, connections)])

    print(f"machine: {machine()}")
    print("| shadow rate | conns | requests/s | vs rate 0 | p50 ms | p99 ms | gateway CPU µs/request | graded pairs | "
          "errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    time.sleep(2)  # let the last shadow calls finish before counting pairs (reported, not asserted)
    for connections in (1, 32):
        base = med("llmroute shadow 0", connections, "rps")
        for name, rate in SHADOW_TARGETS.items():
            try:
                with sqlite3.connect(tmp / f"{name}.sqlite3") as db:
                    pairs = db.execute("SELECT count(*) FROM graded_pairs").fetchone()[0]
            except sqlite3.Error:
                pairs = 0
            rps = med(name, connections, "rps")
            errors = sum(r["errors"] for r in results[(name, connections)])
            print(f"| {rate} | {connections} | {rps:,.0f} | {rps / base:.2f}x | {med(name, connections, 'p50_ms'):.3f} | "
                  f"{med(name, connections, 'p99_ms'):.3f} | {med(name, connections, 'cpu_us_per_request'):.0f} | "
                  f"{pairs:,} (both conns) | {errors} |")


def report(results: dict[tuple[str, int], list[dict[str, float]]], targets: dict[str, dict[str, str]],
           args: argparse.Namespace) -> None:
    def med(name: str, connections: int, key: str) -> float:
        return statistics.median(r[key] for r in results[(name, connections)])

    print(f"machine: {machine()}")
    print(f"wrk, 1 thread, {args.seconds} s per run, {args.rounds} rounds, medians; workers per proxy: {args.workers}")
    print()
    print("| target | conns | requests/s | p50 ms | p99 ms | added p50 ms | added p99 ms | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for connections in (1, 32):
        base50, base99 = med("direct", connections, "p50_ms"), med("direct", connections, "p99_ms")
        for name in targets:
            p50, p99 = med(name, connections, "p50_ms"), med(name, connections, "p99_ms")
            errors = sum(r["errors"] for r in results[(name, connections)])
            added = "" if name == "direct" else f"{p50 - base50:.3f} | {p99 - base99:.3f}"
            print(f"| {name} | {connections} | {med(name, connections, 'rps'):,.0f} | {p50:.3f} | {p99:.3f} | "
                  f"{added or '- | -'} | {errors} |")
    print()
    ours32 = med("llmroute", 32, "rps")
    for forwarder in ("forwarder", "forwarder uvicorn"):
        print(f"llmroute / {forwarder} throughput at 32 connections: {ours32 / med(forwarder, 32, 'rps'):.2f}x "
              "(target >= 1.0)")
        print(f"llmroute p99 / {forwarder} p99 at 32 connections: "
              f"{med('llmroute', 32, 'p99_ms') / med(forwarder, 32, 'p99_ms'):.2f}x (target <= 1.25)")
    for connections in (1, 32):
        line = ", ".join(f"{name} {med(name, connections, 'cpu_us_per_request'):.0f} µs"
                         for name in ("llmroute", "forwarder", "forwarder uvicorn"))
        print(f"CPU per request at {connections} connection(s) (every process of the target): {line}")
    print(f"llmroute added p50 at 1 connection: {med('llmroute', 1, 'p50_ms') - med('direct', 1, 'p50_ms'):.3f} ms "
          "(target <= 0.35)")
    print(f"llmroute with the ledger / without, throughput at 32 connections: "
          f"{med('llmroute+ledger', 32, 'rps') / ours32:.2f}x (target >= 0.90)")
    unscored = "llmroute 2 providers, cost_optimized"
    print(f"quality_aware / cost_optimized on the same two providers, throughput at 32 connections: "
          f"{med('llmroute+quality_aware', 32, 'rps') / med(unscored, 32, 'rps'):.2f}x")
    for connections in (1, 32):
        plain, scored = (med(n, connections, "cpu_us_per_request") for n in (unscored, "llmroute+quality_aware"))
        print(f"gateway CPU per request at {connections} connection(s): {plain:.0f} µs cost_optimized, "
              f"{scored:.0f} µs quality_aware (scoring each prompt)")
    for connections in (1, 32):
        plain, ledger = med("llmroute", connections, "cpu_us_per_request"), med("llmroute+ledger", connections,
                                                                                "cpu_us_per_request")
        print(f"gateway CPU per request at {connections} connection(s): {plain:.0f} µs without the ledger, "
              f"{ledger:.0f} µs with it: capacity with / without {plain / ledger:.2f}x")
    if "litellm" in targets:
        print(f"llmroute / LiteLLM throughput at 32 connections: {ours32 / med('litellm', 32, 'rps'):.1f}x (target >= 50)")


if __name__ == "__main__":
    main()
