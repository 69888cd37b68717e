"""Fault injection under load: what clients see when the primary provider breaks, and how fast llmroute reacts.

    python benchmarks/faults.py --requests 2000 --concurrency 50

For each fault: an emulated RunPod (primary, cheapest, `cost_optimized`) and an
emulated Cerebras (healthy) behind `llmroute serve`. The fault is switched on at 25%
of the requests and off at 75%. A poller reads /router/state every 10 ms to time the
breaker. Reported per fault: client-visible errors, p50/p99 latency, time from the
fault's start to the breaker opening, and time from the fault's end to the first
answer from the primary again.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from _util import machine

SPEED = 20.0  # emulators answer in about 50-60 ms instead of about 1 s
TIMEOUT_S = 1.0  # per-attempt timeout in this run, so a hang costs 1 s, not 30 s


@dataclass
class Scenario:
    name: str
    primary: dict[str, float] | None = None  # emulator faults on RunPod during the window
    secondary: dict[str, float] | None = None
    kill_primary: bool = False
    stream: bool = False
    resume: bool = False
    flap_s: float | None = None


SCENARIOS = [
    Scenario("connection refused", kill_primary=True),
    Scenario("hang (timeout)", {"hang": 1.0}),
    Scenario("429 with Retry-After", {"429": 1.0}),
    Scenario("500", {"500": 1.0}),
    Scenario("503", {"503": 1.0}),
    Scenario("error inside a 200 body", {"error_in_body": 1.0}),
    Scenario("malformed JSON", {"malformed": 1.0}),
    Scenario("connection reset", {"reset": 1.0}),
    Scenario("stream cut before the first token", {"stream_cut_first": 1.0}, stream=True),
    Scenario("stream cut after the first token", {"stream_cut": 1.0}, stream=True),
    Scenario("stream cut after the first token, resume on", {"stream_cut": 1.0}, stream=True, resume=True),
    Scenario("both providers down (503)", {"503": 1.0}, {"503": 1.0}),
    Scenario("primary flapping (503, 0.5 s on / 0.5 s off)", {"503": 1.0}, flap_s=0.5),
]


@dataclass
class Outcome:
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    primary_answers: list[float] = field(default_factory=list)  # monotonic times of answers from the primary


def start(args: list[str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    line = proc.stdout.readline() if proc.stdout else ""
    match = re.search(r"(http://127\.0\.0\.1:\d+)", line)
    if not match:
        proc.kill()
        raise RuntimeError(f"did not start: {args}: {line!r}")
    return proc, match.group(1)


def emulator(profile: str, port: int = 0) -> tuple[subprocess.Popen[str], str]:
    return start([sys.executable, "-m", "llmroute.cli", "emulate", "--profile", profile, "--port", str(port),
                  "--speed", str(SPEED), "--retry-after", "20"])


def stop(proc: subprocess.Popen[str]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


async def set_faults(client: httpx.AsyncClient, base: str, faults: dict[str, float]) -> None:
    await client.post(base + "/_emulator/faults", json={"faults": faults})


async def run_scenario(s: Scenario, requests: int, concurrency: int, tmp: Path) -> dict[str, object]:
    runpod, runpod_url = emulator("runpod")
    cerebras, cerebras_url = emulator("cerebras")
    port = int(runpod_url.rsplit(":", 1)[1])
    config = tmp / "faults.yaml"
    config.write_text(
        "providers:\n"
        f"  runpod: {{base_url: '{runpod_url}/v1', model: m, price_per_m: {{input: 0.02, output: 0.02}}, "
        f"latency_ms: 60, timeout_s: {TIMEOUT_S}, connect_timeout_s: 0.5}}\n"
        f"  cerebras: {{base_url: '{cerebras_url}/v1', model: m, price_per_m: {{input: 0.1, output: 0.1}}, "
        f"latency_ms: 50, timeout_s: {TIMEOUT_S}, connect_timeout_s: 0.5, quality: 2}}\n"
        "strategy: cost_optimized\nretry_rounds: 0\ndeadline_s: 5\n"
        "breaker: {open_s: 1.0, max_open_s: 2.0}\nledger: {enabled: false}\n"
    )
    gateway, gateway_url = start([sys.executable, "-m", "llmroute.cli", "serve", "--config", str(config), "--port", "0"])
    procs = {"runpod": runpod, "cerebras": cerebras, "gateway": gateway}
    out = Outcome()
    opened_at: float | None = None
    fault_started = fault_ended = 0.0
    done = asyncio.Event()
    try:
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=concurrency + 10)) as client:
            async def poll_breaker() -> None:
                nonlocal opened_at
                while not done.is_set():
                    try:
                        state = (await client.get(gateway_url + "/router/state")).json()
                        if opened_at is None and fault_started and state["providers"]["runpod"]["breaker"]["state"] == "open":
                            opened_at = time.monotonic()
                    except httpx.HTTPError:
                        pass
                    await asyncio.sleep(0.01)

            async def flap() -> None:
                on = True
                while not done.is_set() and not fault_ended:
                    await set_faults(client, runpod_url, s.primary or {} if on else {})
                    on = not on
                    await asyncio.sleep(s.flap_s or 1)

            body = {"max_tokens": 40, "stream": s.stream,
                    "messages": [{"role": "user", "content": "Qualify this lead: TechCorp, 500 employees"}]}
            headers = {"x-llmroute-resume": "true"} if s.resume else {}
            queue: asyncio.Queue[int] = asyncio.Queue()
            for i in range(requests):
                queue.put_nowait(i)
            flapper: asyncio.Task[None] | None = None

            async def worker() -> None:
                nonlocal fault_started, fault_ended, flapper
                while True:
                    try:
                        i = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        return
                    if i == requests // 4:
                        fault_started = time.monotonic()
                        if s.kill_primary:
                            await asyncio.to_thread(stop, procs["runpod"])
                        elif s.flap_s:
                            flapper = asyncio.ensure_future(flap())
                        else:
                            await set_faults(client, runpod_url, s.primary or {})
                        if s.secondary:
                            await set_faults(client, cerebras_url, s.secondary)
                    if i == 3 * requests // 4:
                        fault_ended = time.monotonic()
                        if s.kill_primary:
                            procs["runpod"], _ = await asyncio.to_thread(emulator, "runpod", port)
                        else:
                            await set_faults(client, runpod_url, {})
                        await set_faults(client, cerebras_url, {})
                    started = time.monotonic()
                    try:
                        resp = await client.post(gateway_url + "/v1/chat/completions", json=body, headers=headers)
                        ok = resp.status_code == 200 and not (s.stream and '"error"' in resp.text)
                        status = str(resp.status_code) if not ok or not s.stream else "200"
                        provider = resp.headers.get("x-llmroute-provider")
                    except httpx.HTTPError as exc:
                        ok, status, provider = False, type(exc).__name__, None
                    ended = time.monotonic()
                    out.latencies_ms.append((ended - started) * 1000)
                    out.statuses[status if ok else f"error {status}"] = out.statuses.get(status if ok else f"error {status}", 0) + 1
                    out.errors += not ok
                    if ok and provider == "runpod":
                        out.primary_answers.append(ended)

            poller = asyncio.ensure_future(poll_breaker())
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            done.set()
            await poller
            if flapper is not None:
                await flapper
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                stop(proc)
    returned = next((t for t in out.primary_answers if t > fault_ended), None)
    lat = sorted(out.latencies_ms)
    return {
        "scenario": s.name, "requests": requests, "errors": out.errors,
        "p50_ms": statistics.median(lat), "p99_ms": lat[int(0.99 * (len(lat) - 1))],
        "to_open_ms": (opened_at - fault_started) * 1000 if opened_at else None,
        "to_return_ms": (returned - fault_ended) * 1000 if returned else None,
        "statuses": out.statuses,
    }


def ms(value: object) -> str:
    return "-" if value is None else f"{value:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--only", help="run the scenarios whose name contains this")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="llmroute-faults-"))
    print(f"machine: {machine()}")
    print(f"{args.requests} requests per fault at concurrency {args.concurrency}; fault on from 25% to 75% of them; "
          f"emulators at {SPEED:g}x speed; per-attempt timeout {TIMEOUT_S:g} s; breaker open_s 1 s\n")
    print("| fault on the primary | client-visible errors | p50 ms | p99 ms | fault to breaker open, ms "
          "| fault end to traffic back, ms | answers |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for scenario in SCENARIOS:
        if args.only and args.only not in scenario.name:
            continue
        r = asyncio.run(run_scenario(scenario, args.requests, args.concurrency, tmp))
        answers = ", ".join(f"{k}: {v}" for k, v in sorted(r["statuses"].items()))  # type: ignore[union-attr]
        print(f"| {r['scenario']} | {r['errors']} | {ms(r['p50_ms'])} | {ms(r['p99_ms'])} | {ms(r['to_open_ms'])} "
              f"| {ms(r['to_return_ms'])} | {answers} |", flush=True)


if __name__ == "__main__":
    main()
