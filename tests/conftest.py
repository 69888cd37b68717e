"""Shared fixtures: emulated providers on loopback, and configs that point at them."""

from __future__ import annotations

import logging
import math
import os
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from llmroute.emulator import EmulatorSettings, EmulatorThread, get_profile

# Every router records to the default ledger (the user's data directory): keep the tests' traffic out of
# the real one. Set before any router or gateway process starts, so child processes inherit it.
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="llmroute-tests-data-")
os.environ.pop("LLMROUTE_LEDGER", None)
# Providers honour the proxy variables, as curl and httpx do: the tests' loopback traffic must not go to a
# proxy the machine happens to have set.
for _name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
    os.environ.pop(_name, None)


@pytest.fixture(autouse=True)
def _restore_log_levels() -> Iterator[None]:
    """Commands run in-process (demo, quality collect) quiet the ``llmroute`` logger; later tests need it back."""
    levels = {name: logging.getLogger(name).level for name in ("llmroute", "llmroute.ledger")}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


STRICT = bool(os.environ.get("CI") or os.environ.get("LLMROUTE_TEST_STRICT"))
"""CI installs every system package the tests use: there, a missing one fails the run instead of skipping."""


def require(available: bool, what: str) -> None:
    """Skip a test whose system package is missing, or fail it where the run must be complete (``STRICT``)."""
    if not available:
        (pytest.fail if STRICT else pytest.skip)(f"{what} is not installed")


@asynccontextmanager
async def chat_upstream(handler: Callable[[Any], Awaitable[Any]]) -> AsyncIterator[str]:
    """A throwaway OpenAI-style upstream on loopback answering ``POST /v1/chat/completions`` with ``handler``
    (a stand-in for a paid provider): its base URL (``.../v1``) while the block runs."""
    from aiohttp import web

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    finally:
        await runner.cleanup()


class HeldUpstream:
    """A ``chat_upstream`` handler that answers nothing until ``released`` is set: each request it holds keeps
    one connection, and ``arrived`` (guarded by ``changed``) says how many reached it."""

    def __init__(self) -> None:
        import asyncio

        self.arrived = 0
        self.changed = asyncio.Condition()
        self.released = asyncio.Event()

    async def handler(self, request: Any) -> Any:
        import time

        from aiohttp import web

        body = await request.json()
        async with self.changed:
            self.arrived += 1
            self.changed.notify_all()
        await self.released.wait()
        return web.json_response({
            "id": "held", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}})


def emulator(profile: str, **settings: Any) -> EmulatorThread:
    settings.setdefault("speed", math.inf)
    return EmulatorThread(EmulatorSettings(get_profile(profile), **settings))


@pytest.fixture(scope="session")
def cerebras_emu() -> Iterator[EmulatorThread]:
    with emulator("cerebras") as emu:
        yield emu


@pytest.fixture(scope="session")
def runpod_emu() -> Iterator[EmulatorThread]:
    with emulator("runpod", seed=1) as emu:
        yield emu


@pytest.fixture
def emus(cerebras_emu: EmulatorThread, runpod_emu: EmulatorThread) -> Iterator[dict[str, EmulatorThread]]:
    """Both emulators, with any fault a test switched on cleared afterwards."""
    yield {"cerebras": cerebras_emu, "runpod": runpod_emu}
    cerebras_emu.set_faults({})
    runpod_emu.set_faults({})


def provider(base_url: str, profile: str, **overrides: Any) -> dict[str, Any]:
    p = get_profile(profile)
    return {
        "base_url": base_url, "model": p.model, "price_per_m": dict(p.price_per_m),
        "latency_ms": p.latency_ms, "quality": p.quality, "timeout_s": 5, **overrides,
    }


@pytest.fixture
def seed_config(emus: dict[str, EmulatorThread]) -> dict[str, Any]:
    """The seed's pair, pointed at the emulators (a fresh dict per test, free to edit)."""
    return {
        "providers": {
            "cerebras": provider(emus["cerebras"].base_url, "cerebras"),
            "runpod": provider(emus["runpod"].base_url, "runpod"),
        },
        "strategy": "balanced",
        "balanced_weights": {"runpod": 80, "cerebras": 20},
        "deadline_s": 20,
    }


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
