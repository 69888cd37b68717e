"""Fault injection under load: what clients see when the primary provider breaks, and how fast llmroute reacts.

    python benchmarks/faults.py --requests 2000 --concurrency 50 [--litellm-venv .venv-litellm]

For each fault: an emulated RunPod (primary, cheapest, `cost_optimized`) and an
emulated Cerebras (healthy) behind `llmroute serve`. The fault is switched on at 25%
of the requests and off at 75%. The breaker's opening is timed from the gateway's
own log line. Reported per fault: client-visible errors, p50/p99 latency, time from
the fault's start to the breaker opening, and time from the fault's end to the first
answer from the primary again. With --litellm-venv, the same faults go through the
LiteLLM proxy too (RunPod first, Cerebras as its configured fallback), in the same run.
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
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import aiohttp
import httpx
from _util import machine

MASTER_KEY = "sk-faults-bench"
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
    Scenario("no fault (the harness's own figures)"),
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


def start(args: list[str], log: Path | None = None) -> tuple[subprocess.Popen[str], str]:
    err = open(log, "w") if log else subprocess.DEVNULL
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)
    line = proc.stdout.readline() if proc.stdout else ""
    match = re.search(r"(http://127\.0\.0\.1:\d+)", line)
    if not match:
        proc.kill()
        raise RuntimeError(f"did not start: {args}: {line!r}")
    return proc, match.group(1)


def emulator(profile: str, port: int) -> subprocess.Popen[str]:
    return start([sys.executable, "-m", "llmroute.cli", "emulate", "--profile", profile, "--port", str(port),
                  "--speed", str(SPEED), "--retry-after", "20"])[0]


def stop(proc: subprocess.Popen[str]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def set_faults(client: aiohttp.ClientSession, port: int, faults: dict[str, float]) -> None:
    async with client.post(f"http://127.0.0.1:{port}/_emulator/faults", json={"faults": faults}) as resp:
        await resp.read()


def breaker_opened_at(log: Path) -> list[float]:
    """Wall-clock times the gateway logged the primary's breaker opening."""
    times = []
    for line in log.read_text().splitlines():
        if "circuit breaker for runpod is now open" in line:
            stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            times.append(stamp.timestamp())
    return times


@dataclass
class Target:
    name: str
    url: str
    headers: dict[str, str]
    model: str


async def run_scenario(s: Scenario, target: Target, ports: dict[str, int], requests: int, concurrency: int,
                       log: Path | None) -> dict[str, object]:
    procs = {name: emulator(name, port) for name, port in ports.items()}
    out = Outcome()
    fault_started = fault_ended = 0.0
    fault_started_wall = 0.0
    stop_flap = asyncio.Event()
    try:
        # aiohttp, not httpx: httpx's pool alone put a 2 s tail on this load (wrk against the same gateway: 0.1 s).
        connector = aiohttp.TCPConnector(limit=concurrency + 10)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as client:
            async def flap() -> None:
                on = True
                while not stop_flap.is_set():
                    await set_faults(client, ports["runpod"], (s.primary or {}) if on else {})
                    on = not on
                    await asyncio.sleep(s.flap_s or 1)

            body = {"model": target.model, "max_tokens": 40, "stream": s.stream,
                    "messages": [{"role": "user", "content": "Qualify this lead: TechCorp, 500 employees"}]}
            headers = {**target.headers, **({"x-llmroute-resume": "true"} if s.resume else {})}
            queue: asyncio.Queue[int] = asyncio.Queue()
            for i in range(requests):
                queue.put_nowait(i)
            flapper: asyncio.Task[None] | None = None

            async def switch_on() -> None:
                nonlocal fault_started, fault_started_wall, flapper
                fault_started, fault_started_wall = time.monotonic(), time.time()  # before: it bites at once
                if s.kill_primary:
                    await asyncio.to_thread(stop, procs["runpod"])
                elif s.flap_s:
                    flapper = asyncio.ensure_future(flap())
                elif s.primary:
                    await set_faults(client, ports["runpod"], s.primary)
                if s.secondary:
                    await set_faults(client, ports["cerebras"], s.secondary)

            async def switch_off() -> None:
                nonlocal fault_ended
                stop_flap.set()
                if flapper is not None:
                    await flapper
                if s.kill_primary:
                    procs["runpod"] = await asyncio.to_thread(emulator, "runpod", ports["runpod"])
                else:
                    await set_faults(client, ports["runpod"], {})
                await set_faults(client, ports["cerebras"], {})
                fault_ended = time.monotonic()

            async def worker() -> None:
                while True:
                    try:
                        i = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        # Past the planned requests, keep the load on until the primary serves again (up to 5 s),
                        # so the time for traffic to return is measured even when it outlasts the run; these
                        # extra requests honour Retry-After, as a client should.
                        back = any(t > fault_ended for t in out.primary_answers[-50:])
                        if back or not fault_ended or time.monotonic() > fault_ended + 5:
                            return
                        i = requests
                    if i == requests // 4:
                        await switch_on()
                    if i == 3 * requests // 4:
                        await switch_off()
                    started = time.monotonic()
                    try:
                        async with client.post(target.url + "/chat/completions", json=body, headers=headers) as resp:
                            text = await resp.text()
                        retry_after = resp.headers.get("Retry-After")
                        ok = resp.status == 200 and not (s.stream and '"error"' in text)
                        status = str(resp.status)
                        provider = resp.headers.get("x-llmroute-provider") or _litellm_provider(resp.headers, ports)
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        ok, status, provider, retry_after = False, type(exc).__name__, None, None
                    ended = time.monotonic()
                    out.latencies_ms.append((ended - started) * 1000)
                    key = status if ok else f"error {status}"
                    out.statuses[key] = out.statuses.get(key, 0) + 1
                    out.errors += not ok
                    if ok and provider == "runpod":
                        out.primary_answers.append(ended)
                    if i == requests and not ok and retry_after:  # the extra load behaves like a polite client
                        await asyncio.sleep(min(float(retry_after), 5.0))

            await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                stop(proc)
    opened = [t for t in breaker_opened_at(log) if t >= fault_started_wall] if log else []
    returned = next((t for t in out.primary_answers if t > fault_ended), None)
    lat = sorted(out.latencies_ms)
    return {
        "scenario": s.name, "target": target.name, "requests": len(out.latencies_ms), "errors": out.errors,
        "p50_ms": statistics.median(lat), "p99_ms": lat[int(0.99 * (len(lat) - 1))],
        "to_open_ms": (opened[0] - fault_started_wall) * 1000 if opened else None,
        "to_return_ms": (returned - fault_ended) * 1000 if returned else None,
        "statuses": out.statuses,
    }


def _litellm_provider(headers: Mapping[str, str], ports: dict[str, int]) -> str | None:
    """LiteLLM names the deployment that answered in x-litellm-model-api-base."""
    base = headers.get("x-litellm-model-api-base", "")
    return next((name for name, port in ports.items() if f":{port}" in base), None)


async def run_llmroute(s: Scenario, ports: dict[str, int], requests: int, concurrency: int, tmp: Path) -> dict[str, object]:
    config = tmp / "faults.yaml"
    config.write_text(
        "providers:\n"
        f"  runpod: {{base_url: 'http://127.0.0.1:{ports['runpod']}/v1', model: m, "
        f"price_per_m: {{input: 0.02, output: 0.02}}, latency_ms: 60, timeout_s: {TIMEOUT_S}, connect_timeout_s: 0.5}}\n"
        f"  cerebras: {{base_url: 'http://127.0.0.1:{ports['cerebras']}/v1', model: m, "
        f"price_per_m: {{input: 0.1, output: 0.1}}, latency_ms: 50, timeout_s: {TIMEOUT_S}, connect_timeout_s: 0.5, "
        "quality: 2}\n"
        "strategy: cost_optimized\nretry_rounds: 0\ndeadline_s: 5\n"
        "breaker: {open_s: 1.0, max_open_s: 2.0}\nledger: {enabled: false}\n"
    )
    log = tmp / f"gateway-{time.time_ns()}.log"
    gateway, url = start([sys.executable, "-m", "llmroute.cli", "serve", "--config", str(config), "--port", "0",
                          "--log-level", "info"], log=log)
    try:
        return await run_scenario(s, Target("llmroute", url + "/v1", {}, "cost_optimized"), ports, requests,
                                  concurrency, log)
    finally:
        stop(gateway)


def start_litellm(venv: Path, ports: dict[str, int], tmp: Path) -> tuple[subprocess.Popen[str], str]:
    """The LiteLLM proxy with the same two upstreams, RunPod first, Cerebras as its configured fallback."""
    config = tmp / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        + "".join(f"  - model_name: {name}\n    litellm_params:\n      model: openai/m\n"
                  f"      api_base: http://127.0.0.1:{port}/v1\n      api_key: none\n      timeout: {TIMEOUT_S}\n"
                  for name, port in ports.items())
        + "router_settings:\n  num_retries: 0\n  fallbacks: [{runpod: [cerebras]}]\n  allowed_fails: 3\n"
        "  cooldown_time: 1\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        [str(venv / "bin" / "litellm"), "--config", str(config), "--port", str(port), "--num_workers", "1"],
        env={**os.environ, "LITELLM_MASTER_KEY": MASTER_KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
             "LITELLM_LOG": "ERROR"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health/liveliness", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop(proc)
    raise RuntimeError("LiteLLM did not start")


def ms(value: object) -> str:
    return "-" if value is None else f"{value:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--only", help="run the scenarios whose name contains this")
    parser.add_argument("--litellm-venv", help="also send the faults through the LiteLLM proxy installed here")
    parser.add_argument("--litellm-requests", type=int, default=300)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="llmroute-faults-"))
    ports = {"runpod": free_port(), "cerebras": free_port()}
    litellm = start_litellm(Path(args.litellm_venv), ports, tmp) if args.litellm_venv else None
    print(f"machine: {machine()}")
    print(f"{args.requests} requests per fault at concurrency {args.concurrency} (LiteLLM: {args.litellm_requests}); "
          f"fault on from 25% to 75% of them; emulators at {SPEED:g}x speed; per-attempt timeout {TIMEOUT_S:g} s; "
          "llmroute breaker open_s 1 s\n")
    print("| fault on the primary | proxy | requests | client-visible errors | p50 ms | p99 ms "
          "| fault to breaker open, ms | fault end to traffic back, ms | answers |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    try:
        for scenario in SCENARIOS:
            if args.only and args.only not in scenario.name:
                continue
            runs = [asyncio.run(run_llmroute(scenario, ports, args.requests, args.concurrency, tmp))]
            if litellm is not None:
                target = Target("LiteLLM", litellm[1] + "/v1", {"Authorization": f"Bearer {MASTER_KEY}"}, "runpod")
                runs.append(asyncio.run(run_scenario(scenario, target, ports, args.litellm_requests,
                                                     min(args.concurrency, 20), None)))
            for r in runs:
                answers = ", ".join(f"{k}: {v}" for k, v in sorted(r["statuses"].items()))  # type: ignore[union-attr]
                print(f"| {r['scenario']} | {r['target']} | {r['requests']} | {r['errors']} | {ms(r['p50_ms'])} | {ms(r['p99_ms'])} "
                      f"| {ms(r['to_open_ms'])} | {ms(r['to_return_ms'])} | {answers} |", flush=True)
    finally:
        if litellm is not None:
            stop(litellm[0])


if __name__ == "__main__":
    main()
