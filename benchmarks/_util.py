"""Helpers shared by the benchmarks: start an emulator process, run wrk, describe the machine."""

from __future__ import annotations

import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

CHAT_BODY = ('{"model":"m","max_tokens":64,"messages":[{"role":"user",'
             '"content":"Qualify this lead: TechCorp, 500 employees, SaaS industry"}]}')


def print_rounds(first_column: str, unit: str, results: dict[str, list[float]]) -> None:
    """A Markdown table: per row, the median of the rounds and each round."""
    print(f"| {first_column} | median {unit} | rounds |")
    print("|---|---:|---|")
    for name, values in results.items():
        print(f"| {name} | {statistics.median(values):,.0f} | {', '.join(f'{v:,.0f}' for v in values)} |")


def ledger_arguments() -> argparse.Namespace:
    """``--rows``, ``--rounds`` and ``--keep`` of the benchmarks that time reads over a large ledger."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", help="Ledger file to fill once and reuse across runs")
    return parser.parse_args()


@contextmanager
def filled_ledger(args: argparse.Namespace, fill: Callable[[Path, int], float]) -> Iterator[Path]:
    """The ledger to time: ``--keep``'s file (filled by ``fill`` the first time), else a filled temporary one.
    Prints the machine, the fill's rate when it ran, and the file's size."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.keep) if args.keep else Path(tmp) / "ledger.sqlite3"
        fill_s = fill(path, args.rows) if not path.exists() else 0.0
        print(f"machine: {machine()}; load average before timing: {os.getloadavg()[0]:.2f}")
        if fill_s:
            print(f"filled {args.rows:,} rows through the ledger writer in {fill_s:.1f} s "
                  f"({args.rows / fill_s:,.0f} rows/s)")
        print(f"ledger file: {path.stat().st_size / 1e6:,.0f} MB\n")
        yield path


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, {platform.system()} {platform.release()}"


@contextmanager
def emulator_process(profile: str = "cerebras", speed: str = "inf") -> Iterator[str]:
    """Run ``llmroute emulate`` in its own process; yield its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmroute.cli", "emulate", "--profile", profile, "--port", "0", "--speed", speed],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        match = re.search(r"at (http://\S+/v1)", line)
        if not match:
            raise RuntimeError(f"emulator did not start: {line!r}")
        yield match.group(1)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def wrk(url: str, body: str, *, connections: int, seconds: int, threads: int = 1,
        headers: dict[str, str] | None = None) -> dict[str, float]:
    """POST ``body`` to ``url`` with wrk; requests/s and latency percentiles in ms."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (Debian: apt-get install wrk)")
    script = (
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        + "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in (headers or {}).items())
        +        f"wrk.body = [[{body}]]\n"
        "done = function(summary, latency, requests)\n"
        '  io.write(string.format("RESULT %f %f %f %d %d\\n", summary.requests / (summary.duration / 1e6),'
        " latency:percentile(50) / 1000, latency:percentile(99) / 1000,"
        " summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write"
        " + summary.errors.timeout, summary.requests))\n"
        "end\n"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
        path = f.name
    try:
        out = subprocess.run(
            ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "-s", path, url],
            capture_output=True, text=True, check=True,
        ).stdout
    finally:
        os.unlink(path)
    rps, p50, p99, errors, total = re.search(r"RESULT (\S+) (\S+) (\S+) (\d+) (\d+)", out).groups()
    return {"rps": float(rps), "p50_ms": float(p50), "p99_ms": float(p99), "errors": int(errors), "requests": int(total)}
