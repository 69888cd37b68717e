"""Hostile inputs and interruptions against ``quality collect`` and the quality commands, through the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from llmroute.cli import app
from llmroute.emulator import EmulatorThread
from llmroute.evaluation.collect import calls_path
from llmroute.quality.data import load_lines

from .conftest import emulator, provider

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def pair() -> Iterator[dict[str, EmulatorThread]]:
    """Emulators of our own: their request counts belong to this test alone."""
    with emulator("cerebras", seed=3) as strong, emulator("runpod", seed=4) as weak:
        yield {"cerebras": strong, "runpod": weak}


def write_config(path: Path, emus: dict[str, EmulatorThread], **extra: Any) -> Path:
    providers = {name: provider(emus[name].base_url, name) for name in ("cerebras", "runpod")}
    path.write_text(yaml.safe_dump({"providers": providers, "ledger": {"path": str(path.with_suffix(".sqlite3"))},
                                    **extra}))
    return path


def sent(emus: dict[str, EmulatorThread]) -> int:
    return sum(emu.emulator.stats["requests"] for emu in emus.values())


def collect(*args: str) -> Any:
    return runner.invoke(app, ["quality", "collect", *args])


# -- input: every bad line is an error naming it, before anything is sent ---------------------------


@pytest.mark.parametrize("raw, says", [
    (b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n', "line 2: not UTF-8 (byte 0xe9 at column 16)"),
    (b'{"prompt": "ok"}\n{"messages": [{"role": "user", "content": [1, 2]}]}\n',
     "line 2: messages[0].content[0] must be an object with a string 'type'"),
    (b'{"prompt": "ok"}\n{"messages": [{"role": "user", "content": [{"type": "text", "text": 7}]}]}\n',
     "line 2: messages[0].content[0] is a text part without a string 'text'"),
    (b'{"prompt": "ok"}\n{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}\n',
     "line 2: 'messages' has no text to grade"),
    (b'{"prompt": "ok"}\n{"messages": [{"role": "assistant", "content": "only an answer"}]}\n',
     "line 2: 'messages' has no text to grade"),
])
def test_a_bad_line_names_its_line_and_nothing_is_sent(tmp_path: Path, pair: dict[str, EmulatorThread], raw: bytes,
                                                      says: str) -> None:
    data = tmp_path / "p.jsonl"
    data.write_bytes(raw)
    out = tmp_path / "labels.jsonl"
    result = collect("--data", str(data), "--out", str(out), "--config", str(write_config(tmp_path / "c.yaml", pair)))
    assert result.exit_code == 2, result.output
    assert f"{data}, {says}" in " ".join(result.output.split())
    assert sent(pair) == 0 and not out.exists() and not calls_path(out).exists()


def test_a_byte_order_mark_and_crlf_line_ends_are_read(tmp_path: Path, pair: dict[str, EmulatorThread]) -> None:
    """What a Windows editor saves is a valid file; every label it gives is routing data `router train` reads."""
    data = tmp_path / "p.jsonl"
    data.write_bytes(b"\xef\xbb\xbf" + b"".join(
        json.dumps({"id": f"q{i}", "messages": [{"role": "user", "content": [{"type": "text", "text": f"Lead {i}?"}]}],
                    "reference": "hot"}).encode() + b"\r\n" for i in range(3)))
    out = tmp_path / "labels.jsonl"
    result = collect("--data", str(data), "--out", str(out), "--config", str(write_config(tmp_path / "c.yaml", pair)),
                     "--no-ledger", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["labelled"] == 3
    assert [e.prompt for e, _ in load_lines(out)] == ["Lead 0?", "Lead 1?", "Lead 2?"]


@pytest.mark.parametrize("blocked", ["labels.jsonl", "labels.jsonl.calls"])
def test_an_out_that_cannot_be_written_is_an_error_before_anything_is_sent(
        tmp_path: Path, pair: dict[str, EmulatorThread], blocked: str) -> None:
    (tmp_path / blocked).mkdir()  # a directory where the labels or the calls log go: no write can succeed
    data = tmp_path / "p.jsonl"
    data.write_text('{"prompt": "What is 2+2?", "reference": "4"}\n')
    result = collect("--data", str(data), "--out", str(tmp_path / "labels.jsonl"), "--config",
                     str(write_config(tmp_path / "c.yaml", pair)), "--no-ledger")
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: --out") and "Traceback" not in result.output
    assert sent(pair) == 0


def test_ctrl_c_says_it_was_interrupted_not_that_the_cap_was_reached(tmp_path: Path) -> None:
    """The cap ($5) is far away: the summary must say what stopped the run and how many prompts are really left."""
    prompts = 24
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps({"id": i, "prompt": f"Qualify lead {i}.", "reference": "hot"}) + "\n"
                            for i in range(prompts)))
    out = tmp_path / "labels.jsonl"
    with emulator("cerebras", speed=1.0, latency_ms=150) as strong, emulator("runpod", speed=1.0, latency_ms=150) as weak:
        config = write_config(tmp_path / "c.yaml", {"cerebras": strong, "runpod": weak})
        command = [sys.executable, "-m", "llmroute.cli", "quality", "collect", "--data", str(data), "--out", str(out),
                   "--config", str(config), "--concurrency", "4", "--max-tokens", "32", "--no-ledger", "--format", "json"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while (not out.exists() or out.read_text().count("\n") < 3) and proc.poll() is None:
                assert time.monotonic() < deadline, "no label written"
                time.sleep(0.02)  # polling a file another process writes: there is no event to wait on
            proc.send_signal(signal.SIGINT)
            stdout, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 130
    report = json.loads(stdout)
    written = out.read_text().count("\n")
    assert report["interrupted"] is True and report["capped"] is False
    assert report["left"] == prompts - written > 0  # the calls cancelled in flight are left too
    table = subprocess.run(command[:-2] + ["--max-usd", "0"], env=env, capture_output=True, text=True, timeout=60)
    assert table.returncode == 0, table.stderr  # nothing left within a cap of $0: this one is stopped by the cap
    assert "would pass --max-usd 0" in " ".join(table.stderr.split())
