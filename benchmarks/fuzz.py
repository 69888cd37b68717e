"""Hostile-input run against a real gateway: schemathesis over /openapi.json, then a gzip bomb.

    python benchmarks/fuzz.py [--examples 1000] [--workers 1] [--bomb-mib 1024]

Starts both emulators and `llmroute serve` on loopback, then:
  1. `schemathesis run` over the gateway's own OpenAPI document (every operation, positive and negative
     requests, the examples, coverage and fuzzing phases): how many requests, which statuses, how many 5xx,
     how many failed checks, and how many tracebacks the gateway logged;
  2. a gzip body of about 1 MB that would inflate to --bomb-mib MiB, sent while another client polls /health:
     how long the 413 took and the slowest /health answer meanwhile;
  3. the gateway's peak RSS.
Needs schemathesis (pip install schemathesis). Everything stays on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import httpx
import yaml
from _util import emulator_process, machine

ROOT = Path(__file__).resolve().parent.parent
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,"
          "negative_data_rejection")


def start_gateway(config: dict[str, object], tmp: Path) -> tuple[subprocess.Popen[str], str, Path]:
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    log = tmp / "gateway.log"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-m", "llmroute.cli", "serve", "--config", str(path), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=open(log, "w"), text=True, env=env)
    line = proc.stdout.readline() if proc.stdout else ""
    match = re.search(r"listening on (http://\S+) ", line)
    if not match:
        proc.kill()
        raise RuntimeError(f"gateway did not start: {line!r}\n{log.read_text()}")
    return proc, match.group(1), log


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def schemathesis_run(base_url: str, examples: int, workers: int, tmp: Path) -> dict[str, object]:
    har = tmp / "fuzz.har"
    cmd = [
        str(Path(sys.executable).with_name("schemathesis")), "run", f"{base_url}/openapi.json",
        "--checks", CHECKS, "--max-examples", str(examples), "--workers", str(workers),
        "--phases", "examples,coverage,fuzzing", "--request-timeout", "30", "--report", "har",
        "--report-har-path", str(har), "--generation-deterministic",  # the same requests on every run
    ]
    started = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    statuses: Counter[int] = Counter()
    not_openai: list[str] = []
    for entry in json.loads(har.read_text())["log"]["entries"] if har.exists() else []:
        response = entry["response"]
        statuses[response["status"]] += 1
        if response["status"] >= 400:
            text = response.get("content", {}).get("text", "")
            try:
                error = json.loads(text)["error"]
                ok = set(error) == {"message", "type", "param", "code"}
            except (ValueError, KeyError, TypeError):
                ok = False
            if not ok:
                not_openai.append(f"{response['status']}: {text[:120]!r}")
    summary = next((line.strip() for line in out.stdout.splitlines() if " generated, " in line), "")
    failures = re.findall(r"❌ (ST\d+ [^:]+): (\d+)", out.stdout)
    tool_errors = re.findall(r"🚫 ([^:\n]+ Error): (\d+)", out.stdout)
    return {"requests": sum(statuses.values()), "statuses": dict(sorted(statuses.items())),
            "server_errors": sum(n for s, n in statuses.items() if s >= 500), "not_openai_shaped": not_openai,
            "cases": summary, "failed_checks": failures, "schemathesis_errors": tool_errors,
            "exit_code": out.returncode, "seconds": round(elapsed, 1),
            "tail": out.stdout[-1500:] if out.returncode else ""}


async def bomb_run(base_url: str, expanded_mib: int) -> dict[str, object]:
    """A gzip body inflating to ``expanded_mib`` MiB (one member per MiB) while /health is polled."""
    payload = gzip.compress(bytes(1 << 20)) * expanded_mib
    health_ms: list[float] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as bomber, \
            httpx.AsyncClient(base_url=base_url, timeout=60) as poller:
        started = time.perf_counter()
        sent = asyncio.create_task(bomber.post("/v1/chat/completions", content=payload,
                                               headers={"content-type": "application/json",
                                                        "content-encoding": "gzip"}))
        while not sent.done():
            t = time.perf_counter()
            await poller.get("/health")
            health_ms.append((time.perf_counter() - t) * 1000)
        resp = await sent
        total_ms = (time.perf_counter() - started) * 1000
    return {"compressed_bytes": len(payload), "inflates_to_mib": expanded_mib, "status": resp.status_code,
            "answered_ms": round(total_ms, 1), "health_polls": len(health_ms),
            "health_worst_ms": round(max(health_ms), 1) if health_ms else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=1000, help="most examples per operation and phase")
    parser.add_argument("--workers", type=int, default=1,
                        help="schemathesis workers; above 1, Python 3.11.7's ast module can fail in hypothesis")
    parser.add_argument("--bomb-mib", type=int, default=1024)
    args = parser.parse_args()
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="llmroute-fuzz-") as tmp_dir:
        tmp = Path(tmp_dir)
        providers = {}
        for name, model in (("cerebras", "llama3.1-8b"), ("runpod", "meta-llama/Meta-Llama-3.1-8B-Instruct")):
            url = stack.enter_context(emulator_process(name))
            providers[name] = {"base_url": url, "model": model, "price_per_m": {"input": 0.1, "output": 0.1},
                               "timeout_s": 10}
        config = {"providers": providers, "strategy": "balanced", "balanced_weights": {"runpod": 80, "cerebras": 20},
                  "ledger": {"path": str(tmp / "ledger.sqlite3")}}
        proc, base_url, log = start_gateway(config, tmp)
        try:
            fuzz = schemathesis_run(base_url, args.examples, args.workers, tmp)
            bomb = asyncio.run(bomb_run(base_url, args.bomb_mib))
            rss = peak_rss_mib(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        text = log.read_text(errors="replace")
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f}")
    version = subprocess.run([sys.executable, "-m", "pip", "show", "schemathesis"], capture_output=True, text=True)
    print(f"schemathesis {version.stdout.split('Version: ')[-1].split()[0]}, --examples {args.examples} "
          f"--workers {args.workers} (deterministic generation)")
    print(json.dumps({"fuzz": fuzz, "gzip_bomb": bomb, "gateway_peak_rss_mib": round(rss, 1),
                      "gateway_log": {"lines": len(text.splitlines()), "tracebacks": text.count("Traceback"),
                                      "unexpected_errors_in_handlers": text.count("unexpected error"),
                                      "aiohttp_errors": text.count("Error handling request")}}, indent=2))


if __name__ == "__main__":
    main()
