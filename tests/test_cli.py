"""The command line, run as a user runs it: a subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
SECRET = "csk-ThisKeyMustNotBePrinted-991"
ENV = {**os.environ, "CEREBRAS_API_KEY": SECRET, "RUNPOD_API_KEY": "rp-" + SECRET, "RUNPOD_ENDPOINT_ID": "ep42"}


def llmroute(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llmroute.cli", *args], capture_output=True, text=True,
                          env=env or ENV, timeout=timeout, cwd=REPO)


def test_check_config_prints_routing_table_without_secrets() -> None:
    proc = llmroute("check-config", "examples/llmroute.yaml")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "cerebras" in out and "runpod" in out and "OK" in out
    assert "https://api.runpod.ai/v2/ep42/openai/v1" in out
    assert "set from $CEREBRAS_API_KEY" in out
    assert re.search(r"balanced \(default\): runpod 80 / cerebras 20 .*runpod → cerebras", out)
    assert re.search(r"cost_optimized\s+│\s+runpod → cerebras", out)
    assert re.search(r"quality_aware: strong_share 0.2 → 20% to cerebras, score threshold 0\.\d{3}", out)
    assert "score ≥ threshold: cerebras → runpod; else: runpod → cerebras" in out
    assert SECRET not in out and SECRET not in proc.stderr


def test_check_config_errors_name_file_key_problem(tmp_path: Path) -> None:
    env = {k: v for k, v in ENV.items() if k != "RUNPOD_API_KEY"}
    proc = llmroute("check-config", "examples/llmroute.yaml", env=env)
    assert proc.returncode == 2
    assert "examples/llmroute.yaml" in proc.stderr
    assert "providers.runpod.api_key" in proc.stderr and "RUNPOD_API_KEY is not set" in proc.stderr
    assert "Traceback" not in proc.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "examples/llmroute.yaml").read_text().replace("{input: 0.02", "{input: -1"))
    proc = llmroute("check-config", str(bad))
    assert proc.returncode == 2 and "providers.runpod.price_per_m.input" in proc.stderr
    assert SECRET not in proc.stderr


def test_plan_prints_the_seed_analysis() -> None:
    proc = llmroute("plan", "--monthly-tokens", "10B", "--config", "examples/llmroute.yaml")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "100% cerebras (baseline): $1,000/month" in out
    assert "balanced: 80% runpod / 20% cerebras: $160 + $200 = $360/month; savings $640/month (64%); " \
           "blended $0.036 per 1M tokens" in out
    assert "cost_optimized: 100% runpod: $200/month" in out


def test_plan_without_config_and_json() -> None:
    proc = llmroute("plan", "--monthly-tokens", "10M", "--json", env={k: v for k, v in os.environ.items()})
    data = json.loads(proc.stdout)
    balanced = next(s for s in data["strategies"] if s["strategy"] == "balanced")
    assert data["monthly_tokens"] == 10_000_000
    assert balanced["total_usd"] == pytest.approx(0.36)
    assert balanced["savings_pct"] == pytest.approx(64)


@pytest.mark.parametrize("bad", ["ten", "-3M", "0"])
def test_plan_rejects_bad_amounts(bad: str) -> None:
    proc = llmroute("plan", "--monthly-tokens", bad)
    assert proc.returncode == 2
    assert "--monthly-tokens" in proc.stderr and "Traceback" not in proc.stderr


def test_emulate_serves_until_stopped() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "llmroute.cli", "emulate", "--profile", "runpod", "--port", "0",
                             "--speed", "inf"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        match = re.search(r"at (http://\S+/v1)", line)
        assert match, line + proc.stderr.read()
        base = match.group(1)
        resp = httpx.post(base + "/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        assert resp.status_code == 200 and resp.json()["model"] == "meta-llama/Meta-Llama-3.1-8B-Instruct"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_emulate_rejects_bad_options() -> None:
    proc = llmroute("emulate", "--profile", "openai")
    assert proc.returncode == 2 and "unknown profile 'openai'" in proc.stderr
    proc = llmroute("emulate", "--fault", "503:7")
    assert proc.returncode == 2 and "between 0 and 1" in proc.stderr


def test_demo_runs_every_strategy_with_an_outage() -> None:
    proc = llmroute("demo", "--requests", "80", "--speed", "10", "--json", env={k: v for k, v in os.environ.items()})
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    rows = {s["strategy"]: s for s in data["strategies"]}
    assert list(rows) == ["cost_optimized", "latency_optimized", "quality_optimized", "balanced", "quality_aware"]
    for row in rows.values():
        assert row["requests"] == 80 and row["errors"] == 0
        assert row["p95_ms"] >= row["p50_ms"] > 0
    # RunPod is cheapest, so cost_optimized uses it outside the outage and falls back during it.
    assert rows["cost_optimized"]["split"]["runpod"] > rows["cost_optimized"]["split"].get("cerebras", 0)
    assert rows["cost_optimized"]["fallbacks"] > 0
    assert rows["cost_optimized"]["savings_pct"] > 30
    assert rows["quality_optimized"]["split"] == {"cerebras": 80}
    assert rows["quality_optimized"]["savings_pct"] == pytest.approx(0, abs=1e-9)
    assert rows["balanced"]["split"]["runpod"] >= 24  # 80% of the 60 requests outside the outage, less cool-downs


def test_demo_table_output() -> None:
    proc = llmroute("demo", "--requests", "40", "--speed", "500", env={k: v for k, v in os.environ.items()})
    assert proc.returncode == 0, proc.stderr
    for word in ("cost_optimized", "latency_optimized", "quality_optimized", "balanced", "saved", "p95 ms", "target"):
        assert word in proc.stdout


def test_demo_with_a_config_sends_to_those_providers(tmp_path: Path) -> None:
    import yaml

    from .conftest import emulator, provider

    with emulator("cerebras") as c, emulator("runpod") as r:
        config = {"providers": {"cerebras": provider(c.base_url, "cerebras", api_key="${CEREBRAS_API_KEY}"),
                                "runpod": provider(r.base_url, "runpod", api_key="${RUNPOD_API_KEY}")}}
        path = tmp_path / "real.yaml"
        path.write_text(yaml.safe_dump(config))
        proc = llmroute("demo", "--config", str(path), "--requests", "20", "--json")
        assert proc.returncode == 0, proc.stderr
        served = c.emulator.stats["requests"] + r.emulator.stats["requests"]
    data = json.loads(proc.stdout)
    assert served == 5 * 20  # every request of every strategy reached the configured providers
    assert "no injected fault" in data["note"]
    assert all(s["errors"] == 0 and s["fallbacks"] == 0 for s in data["strategies"])
    assert SECRET not in proc.stdout + proc.stderr
