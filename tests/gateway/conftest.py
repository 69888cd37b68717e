"""A real ``llmroute serve`` process in front of the emulated providers."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml


@dataclass
class RunningGateway:
    base_url: str
    """http://127.0.0.1:PORT (append /v1 for OpenAI clients)."""
    process: subprocess.Popen[str]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text()


def start_gateway(tmp_path: Path, config: dict[str, Any], *args: str, env: dict[str, str] | None = None,
                  port: int = 0) -> RunningGateway:
    path = tmp_path / f"gateway-{len(list(tmp_path.glob('gateway-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(config))
    log_path = path.with_suffix(".log")
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmroute.cli", "serve", "--config", str(path), "--port", str(port),
         "--log-level", "info", *args],
        stdout=subprocess.PIPE, stderr=log, text=True, env={**os.environ, **(env or {})},
    )
    line = proc.stdout.readline() if proc.stdout else ""
    match = re.search(r"listening on (http://\S+) ", line)
    if not match:
        proc.kill()
        raise RuntimeError(f"gateway did not start: {line!r}\n{log_path.read_text()}")
    return RunningGateway(match.group(1), proc, log_path)


def stop_gateway(gateway: RunningGateway) -> int:
    gateway.process.send_signal(signal.SIGTERM)
    return gateway.process.wait(timeout=20)


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[Callable[..., RunningGateway]]:
    started: list[RunningGateway] = []

    def factory(config: dict[str, Any], *args: str, **kw: Any) -> RunningGateway:
        gateway = start_gateway(tmp_path, config, *args, **kw)
        started.append(gateway)
        return gateway

    yield factory
    for gateway in started:
        if gateway.process.poll() is None:
            stop_gateway(gateway)


@pytest.fixture
def gateway(gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any]) -> RunningGateway:
    """The seed's pair behind a gateway, balanced 80/20 by default."""
    return gateway_factory(seed_config)
