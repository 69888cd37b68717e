"""A broken upstream under load: what clients see when the primary answers with the wrong shape.

    python benchmarks/upstream_faults.py --requests 1000 --concurrency 50 [--only usage] [--extra-fault NAME[:stream]]

For each case an emulated RunPod (the primary, cheapest, ``cost_optimized``) answers every request with the
case's broken answer (valid JSON of the wrong shape, bad ``usage``, 204, 302, malformed stream chunks); an
emulated Cerebras is healthy. A fresh ``llmroute serve`` (SQLite ledger on) takes the load, while a poller
asks its ``/health`` every 10 ms. Reported per case, in one run: requests, client-visible errors, answers
that fell back, ledger rows written (every request must have one), the gateway's RSS peak (VmHWM), and the
event loop's worst stall (the slowest ``/health`` answer).

``--extra-fault`` runs any other emulator fault the same way (repeatable), e.g. ``--extra-fault hang``.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from _util import machine
from faults import emulator, free_port, set_faults, start, stop

TIMEOUT_S = 2.0


@dataclass
class Case:
    name: str
    fault: str
    stream: bool = False


CASES = [
    Case("healthy (the harness's own figures)", ""),
    Case("choices: [5]", "bad_choices"),
    Case("message is a string", "bad_message"),
    Case('usage.prompt_tokens: "x"', "bad_usage"),
    Case("usage.completion_tokens: -5", "negative_usage"),
    Case("usage.completion_tokens: 1e308", "overflow_usage"),
    Case("HTTP 204", "204"),
    Case("HTTP 302", "302"),
    Case("stream: first chunk choices: [5]", "bad_choices", stream=True),
    Case('stream: delta: "str"', "bad_message", stream=True),
    Case("stream: bad usage on every chunk", "bad_usage", stream=True),
    Case("stream: usage chunk -5 after the answer", "negative_usage", stream=True),
    Case("stream: usage chunk 1e308 after the answer", "overflow_usage", stream=True),
    Case("JSON body that never ends (2 GiB)", "huge_body"),
    Case("endless SSE answer to a non-stream request", "huge_sse"),
    Case("stream: one SSE line that never ends", "huge_body", stream=True),
]


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def ledger_rows(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT count(*) FROM requests").fetchone()[0]
    finally:
        db.close()


async def load(url: str, case: Case, requests: int, concurrency: int) -> dict[str, object]:
    body = {"model": "cost_optimized", "max_tokens": 40, "stream": case.stream,
            "messages": [{"role": "user", "content": "Qualify this lead: TechCorp, 500 employees"}]}
    errors = fallbacks = 0
    latencies: list[float] = []
    stalls: list[float] = []
    done = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=concurrency + 10)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as client:
        async def poll_health() -> None:
            while not done.is_set():
                started = time.monotonic()
                async with client.get(url + "/health") as resp:
                    await resp.read()
                stalls.append((time.monotonic() - started) * 1000)
                await asyncio.sleep(0.01)

        queue = list(range(requests))

        async def worker() -> None:
            nonlocal errors, fallbacks
            while queue:
                queue.pop()
                started = time.monotonic()
                try:
                    async with client.post(url + "/v1/chat/completions", json=body) as resp:
                        text = await resp.text()
                    ok = resp.status == 200 and not (case.stream and ('"error"' in text or not text.endswith("[DONE]\n\n")))
                    fallbacks += resp.headers.get("x-llmroute-fallback") == "true"
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                latencies.append((time.monotonic() - started) * 1000)
                errors += not ok

        poller = asyncio.ensure_future(poll_health())
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        done.set()
        await poller
    lat = sorted(latencies)
    return {"requests": len(lat), "errors": errors, "fallbacks": fallbacks, "p50_ms": statistics.median(lat),
            "p99_ms": lat[int(0.99 * (len(lat) - 1))], "stall_ms": max(stalls, default=0.0)}


async def run_case(case: Case, ports: dict[str, int], requests: int, concurrency: int, tmp: Path) -> dict[str, object]:
    ledger = tmp / f"ledger-{time.time_ns()}.sqlite3"
    config = tmp / "upstream-faults.yaml"
    config.write_text(
        "providers:\n"
        f"  runpod: {{base_url: 'http://127.0.0.1:{ports['runpod']}/v1', model: m, "
        f"price_per_m: {{input: 0.02, output: 0.02}}, latency_ms: 60, timeout_s: {TIMEOUT_S}}}\n"
        f"  cerebras: {{base_url: 'http://127.0.0.1:{ports['cerebras']}/v1', model: m, "
        f"price_per_m: {{input: 0.1, output: 0.1}}, latency_ms: 50, timeout_s: {TIMEOUT_S}, quality: 2}}\n"
        "strategy: cost_optimized\nretry_rounds: 0\ndeadline_s: 5\n"
        f"ledger: {{path: '{ledger}'}}\n"
    )
    procs = {name: emulator(name, port) for name, port in ports.items()}
    gateway, url = start([sys.executable, "-m", "llmroute.cli", "serve", "--config", str(config), "--port", "0",
                          "--log-level", "warning"], log=tmp / "gateway.log")
    try:
        async with aiohttp.ClientSession() as client:
            await set_faults(client, ports["runpod"], {case.fault: 1.0} if case.fault else {})
        result = await load(url, case, requests, concurrency)
        result["rss_mb"] = peak_rss_mb(gateway.pid)
    finally:
        stop(gateway)
        for proc in procs.values():
            stop(proc)
    result["ledger_rows"] = ledger_rows(ledger)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--only", help="run the cases whose name or fault contains this")
    parser.add_argument("--extra-fault", action="append", default=[], help="another emulator fault, NAME[:stream]")
    args = parser.parse_args()
    cases = CASES + [Case(f"extra: {spec}", spec.split(":")[0], spec.endswith(":stream")) for spec in args.extra_fault]
    tmp = Path(tempfile.mkdtemp(prefix="llmroute-upstream-faults-"))
    ports = {"runpod": free_port(), "cerebras": free_port()}
    print(f"machine: {machine()}")
    print(f"{args.requests} requests per case at concurrency {args.concurrency}; the primary broken for all of them; "
          f"per-attempt timeout {TIMEOUT_S:g} s; /health polled every 10 ms\n")
    print("| broken answer from the primary | requests | client-visible errors | fell back | ledger rows "
          "| p50 ms | p99 ms | RSS peak MB | worst /health ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for case in cases:
        if args.only and args.only not in case.name and args.only not in case.fault:
            continue
        r = asyncio.run(run_case(case, ports, args.requests, args.concurrency, tmp))
        print(f"| {case.name} | {r['requests']} | {r['errors']} | {r['fallbacks']} | {r['ledger_rows']} "
              f"| {r['p50_ms']:,.0f} | {r['p99_ms']:,.0f} | {r['rss_mb']:,.0f} | {r['stall_ms']:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
