"""`llmroute status` against a real gateway: budgets and shadow evaluation beside the providers, and `--watch`
refreshing until Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from .conftest import RunningGateway

CHAT = "/v1/chat/completions"
BODY = {"model": "balanced", "max_tokens": 20, "messages": [{"role": "user", "content": "Qualify this lead: Initech"}]}


def status(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"} | {"COLUMNS": "160"}
    return subprocess.Popen([sys.executable, "-m", "llmroute.cli", "status", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_status_shows_budgets_and_shadow_and_watch_refreshes(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any], tmp_path: Path,
) -> None:
    seed_config["ledger"] = {"path": str(tmp_path / "ledger.sqlite3"), "flush_interval_s": 0.01}
    seed_config["budgets"] = [{"name": "everything", "usd": 5, "period": "month"}]
    seed_config["shadow"] = {"rate": 1.0, "grader": "exact"}
    gw = gateway_factory(seed_config)
    assert httpx.post(gw.base_url + CHAT, json=BODY).status_code == 200

    once = status("--url", gw.base_url)
    out, err = once.communicate(timeout=60)
    assert once.returncode == 0, err
    assert "budgets (this period)" in out and "everything" in out and "month" in out
    assert "shadow evaluation at rate 1" in out

    watching = status("--url", gw.base_url, "--watch", "0.2")
    try:
        # Piped, each refresh is printed after the last: read until one shows the spend of requests sent meanwhile.
        assert watching.stdout is not None
        seen: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = watching.stdout.readline()
            if not line:
                break
            seen.append(line)
            if "budgets (this period)" in line and len(seen) < 40:
                for _ in range(3):  # spend moves while it watches
                    assert httpx.post(gw.base_url + CHAT, json=BODY).status_code == 200
            if sum("budgets (this period)" in s for s in seen) >= 3:
                break
        renders = sum("budgets (this period)" in s for s in seen)
        rows = [s for s in seen if "everything" in s]
        assert renders >= 3 and rows[0] != rows[-1], "".join(seen)  # the later render shows more spent
    finally:
        watching.send_signal(signal.SIGINT)
    _, err = watching.communicate(timeout=30)
    assert watching.returncode == 0 and "Traceback" not in err, err

    refused = status("--url", gw.base_url, "--watch", "1", "--format", "json")
    _, err = refused.communicate(timeout=60)
    assert refused.returncode == 2 and "--watch refreshes a table" in err
