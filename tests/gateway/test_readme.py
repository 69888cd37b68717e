"""The README's curl examples work as written (only the port differs)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import RunningGateway

README = Path(__file__).resolve().parents[2] / "README.md"


def curl_blocks() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.S)
    return [b for b in blocks if b.lstrip().startswith("curl")]


def test_readme_has_curl_examples() -> None:
    assert len(curl_blocks()) >= 4


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_examples_run_in_order(gateway: RunningGateway) -> None:
    for block in curl_blocks():
        check(block.replace("http://127.0.0.1:8080", gateway.base_url))


def check(block: str) -> None:
    proc = subprocess.run(["bash", "-eo", "pipefail", "-c", block], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, block + proc.stderr
    out = proc.stdout
    if '"stream": true' in block:
        events = [line[6:] for line in out.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]" and json.loads(events[0])["object"] == "chat.completion.chunk"
    elif "grep -i '^x-llmroute'" in block:
        assert "x-llmroute-provider: cerebras" in out.lower()
    elif "/router/state" in block:
        state = json.loads(out.splitlines()[0])
        assert set(state["providers"]) == {"runpod", "cerebras"}
        assert out.splitlines()[1].startswith("llmroute_cost_usd_total")
    else:
        assert json.loads(out)["choices"][0]["message"]["content"]
