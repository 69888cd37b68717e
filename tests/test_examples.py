"""Trying llmroute without keys: ``llmroute try``, ``examples/emulated.yaml`` and the quick-start snippets, as written."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from llmroute.config import load_config
from llmroute.playground import emulator_ports, playground_config

from .test_cli import REPO, llmroute

EXAMPLES = REPO / "examples"
ENV = {k: v for k, v in os.environ.items() if k not in ("LLMROUTE_LEDGER", "LLMROUTE_CONFIG")}


@dataclass
class Tried:
    process: subprocess.Popen[str]
    base_url: str
    """http://127.0.0.1:PORT/v1"""
    providers: dict[str, str]
    banner: str


def start_try(*args: str) -> Tried:
    proc = subprocess.Popen([sys.executable, "-m", "llmroute.cli", "try", "--port", "0", "--emulator-port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=ENV)
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:  # the banner ends with how to stop
        lines.append(line)
        if "Ctrl-C" in line:
            break
    banner = "".join(lines)
    gateway = re.search(r"gateway at (http://\S+/v1)", banner)
    if gateway is None:
        proc.kill()
        raise AssertionError(banner + (proc.stderr.read() if proc.stderr else ""))
    providers = dict(re.findall(r"^  (cerebras|runpod)\s+(http://\S+/v1)$", banner, flags=re.M))
    return Tried(proc, gateway.group(1), providers, banner)


@pytest.fixture
def tried() -> Iterator[Tried]:
    running = start_try("--speed", "inf")
    yield running
    if running.process.poll() is None:
        running.process.kill()
        running.process.wait(timeout=10)


def listening(url: str) -> bool:
    host, port = re.match(r"http://([^:/]+):(\d+)", url).groups()  # type: ignore[union-attr]
    with socket.socket() as s:
        return s.connect_ex((host, int(port))) == 0


def test_emulated_yaml_is_what_try_runs() -> None:
    """The documented config and the command agree: same providers, models, prices and ports, no keys."""
    documented = load_config(EXAMPLES / "emulated.yaml", env={})
    ports = emulator_ports(8001)
    started = playground_config({name: f"http://127.0.0.1:{port}/v1" for name, port in ports.items()})
    assert set(documented.providers) == set(started.providers) == {"cerebras", "runpod"}
    for name, provider in documented.providers.items():
        twin = started.providers[name]
        assert provider.base_url == twin.base_url == f"http://127.0.0.1:{ports[name]}/v1"
        assert (provider.model, provider.price_per_m, provider.quality) == (twin.model, twin.price_per_m, twin.quality)
        assert provider.api_key is None
    assert documented.strategy == started.strategy
    assert documented.weights() == started.weights()


def test_the_banner_tells_how_to_use_it(tried: Tried) -> None:
    assert set(tried.providers) == {"cerebras", "runpod"}
    assert f"curl -s {tried.base_url}/chat/completions" in tried.banner
    assert f'OpenAI(base_url="{tried.base_url}"' in tried.banner


def test_the_gateway_quickstart_runs_with_the_openai_client(tried: Tried, tmp_path: Path) -> None:
    snippet = (EXAMPLES / "quickstart_gateway.py").read_text()
    assert "http://127.0.0.1:8080/v1" in snippet
    script = tmp_path / "quickstart_gateway.py"
    script.write_text(snippet.replace("http://127.0.0.1:8080/v1", tried.base_url))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=ENV)
    assert proc.returncode == 0, proc.stderr
    text, served = proc.stdout.strip().splitlines()[-2:]
    assert text.strip()
    assert re.fullmatch(r"served by (cerebras|runpod) for \$ \d\.\d+(e-\d+)? fallback: false", served)


def test_the_library_quickstart_runs_against_the_same_emulators(tried: Tried, tmp_path: Path) -> None:
    config = (EXAMPLES / "emulated.yaml").read_text()
    for name, url in tried.providers.items():
        port = emulator_ports(8001)[name]
        config = config.replace(f"http://127.0.0.1:{port}/v1", url)
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "emulated.yaml").write_text(config)
    shutil.copy(EXAMPLES / "quickstart_library.py", tmp_path)
    proc = subprocess.run([sys.executable, "quickstart_library.py"], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path, env={**ENV, "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))})
    assert proc.returncode == 0, proc.stderr
    provider, cost, latency, fallback = proc.stdout.strip().splitlines()[-1].split()
    assert provider in ("cerebras", "runpod") and float(cost) > 0 and fallback == "False"
    assert (tmp_path / "llmroute-emulated.sqlite3").exists()  # emulated traffic in its own ledger


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_gateway_and_emulators(tried: Tried, sig: signal.Signals) -> None:
    urls = [tried.base_url, *tried.providers.values()]
    assert all(listening(url) for url in urls)
    tried.process.send_signal(sig)
    assert tried.process.wait(timeout=30) == 0
    assert "Traceback" not in (tried.process.stderr.read() if tried.process.stderr else "")
    assert not any(listening(url) for url in urls)


def test_try_on_a_busy_port_says_which(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "llmroute.cli", "try", "--port", str(port), "--emulator-port", "0"],
                              capture_output=True, text=True, timeout=60, cwd=REPO, env=ENV)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: cannot listen on 127.0.0.1:{port}: address already in use"]


def test_status_report_and_replay_speak_the_same_formats(tmp_path: Path) -> None:
    """One session as a user has it: try with a ledger, a few requests, then the data commands in every format."""
    ledger = tmp_path / "try.sqlite3"
    running = start_try("--speed", "inf", "--ledger", str(ledger))
    try:
        for _ in range(5):
            resp = httpx.post(running.base_url + "/chat/completions", timeout=30,
                              json={"model": "balanced", "messages": [{"role": "user", "content": "Qualify this lead"}]})
            assert resp.status_code == 200
        gateway = running.base_url.removesuffix("/v1")
        state = json.loads(llmroute("status", "--url", gateway, "--format", "json", env=ENV).stdout)
        assert json.loads(llmroute("status", "--url", gateway, "--json", env=ENV).stdout).keys() == state.keys()
        rows = list(csv.DictReader(io.StringIO(llmroute("status", "--url", gateway, "--format", "csv", env=ENV).stdout)))
        assert {r["provider"] for r in rows} == set(state["providers"]) == {"cerebras", "runpod"}
    finally:
        running.process.send_signal(signal.SIGTERM)
        assert running.process.wait(timeout=30) == 0
    report = list(csv.DictReader(io.StringIO(llmroute("report", "--ledger", str(ledger), "--format", "csv", env=ENV).stdout)))
    assert int(report[-1]["requests"]) == 5
    replay = ("replay", "--ledger", str(ledger), "--strategy", "cost_optimized")
    as_json = json.loads(llmroute(*replay, "--format", "json", env=ENV).stdout)
    assert json.loads(llmroute(*replay, "--json", env=ENV).stdout)["actual"] == as_json["actual"]
    rows = list(csv.DictReader(io.StringIO(llmroute(*replay, "--format", "csv", env=ENV).stdout)))
    assert [int(r["requests"]) for r in rows] == [as_json["actual"]["requests"], as_json["estimate"]["requests"]] == [5, 5]


def test_the_readme_shows_the_quickstarts_as_they_are_tested() -> None:
    """The README's "Try it without keys" snippets are the example files this module runs, word for word."""
    readme = (REPO / "README.md").read_text()
    section = re.search(r"^## Try it without keys\n(.*?)(?=^## )", readme, flags=re.S | re.M)
    if section is None:
        pytest.skip("the README has no 'Try it without keys' section yet")
    blocks = re.findall(r"```python\n(.*?)```", section.group(1), flags=re.S)
    assert len(blocks) == 2
    for block, name in zip(blocks, ("quickstart_gateway.py", "quickstart_library.py")):
        assert block.strip() in (EXAMPLES / name).read_text()
