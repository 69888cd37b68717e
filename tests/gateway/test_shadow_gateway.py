"""Shadow evaluation behind a real ``llmroute serve``: the client's bytes, state, metrics, ledger, logs."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from llmroute.emulator import EmulatorThread
from llmroute.ledger import open_store
from llmroute.ledger.pairs import GradedPair
from llmroute.quality_report import load_pairs

from ..conftest import free_port
from .conftest import RunningGateway, stop_gateway

GATEWAY_KEY = "gw-key-for-shadow-tests-1234"
PROVIDER_KEYS = {"fixed": "sk-fixed-provider-secret-5555", "cerebras": "sk-cerebras-provider-secret-7777"}
FIXED_BODY = orjson.dumps({
    "id": "chatcmpl-fixed", "object": "chat.completion", "created": 1700000000, "model": "fixed-model",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Qualified: yes"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
})
PROMPT = "Qualify this lead: Initech, 40 employees, fintech"


class FixedUpstream:
    """A provider that always sends the same bytes, so the client's answer can be compared byte for byte."""

    def __init__(self) -> None:
        self.requests = 0
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result()

    async def _start(self) -> int:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._answer)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return self._runner.addresses[0][1]

    async def _answer(self, request: web.Request) -> web.Response:
        self.requests += 1
        await request.read()
        return web.Response(body=FIXED_BODY, content_type="application/json")

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)


@pytest.fixture
def fixed() -> Iterator[FixedUpstream]:
    upstream = FixedUpstream()
    yield upstream
    upstream.stop()


def config_for(seed_config: dict[str, Any], fixed: FixedUpstream, tmp_path: Path, rate: float,
               **shadow: Any) -> dict[str, Any]:
    """``fixed`` answers every request; cerebras (an emulator) is the reference it is shadowed against."""
    providers = {
        "fixed": {"base_url": f"http://127.0.0.1:{fixed.port}/v1", "model": "fixed-model",
                  "price_per_m": {"input": 0.02, "output": 0.02}, "api_key": PROVIDER_KEYS["fixed"], "timeout_s": 5},
        "cerebras": {**seed_config["providers"]["cerebras"], "api_key": PROVIDER_KEYS["cerebras"]},
    }
    return {
        **seed_config, "providers": providers, "balanced_weights": {"fixed": 100, "cerebras": 0},
        "gateway": {"api_keys": [{"id": "team-a", "key": GATEWAY_KEY}]},
        "ledger": {"path": str(tmp_path / f"ledger-{rate}.sqlite3"), "flush_interval_s": 0.01},
        "shadow": {"rate": rate, "grader": "exact", "reference": "cerebras", "candidate": "fixed", **shadow},
    }


def post(gw: RunningGateway, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(gw.base_url + "/v1/chat/completions", json=body, timeout=10,
                      headers={"Authorization": f"Bearer {GATEWAY_KEY}", "x-llmroute-tags": "task=lead"})


def shadow_state(gw: RunningGateway) -> dict[str, Any]:
    return httpx.get(gw.base_url + "/router/state", headers={"Authorization": f"Bearer {GATEWAY_KEY}"}).json()["shadow"]


def wait_for(check: Callable[[], Any], timeout_s: float = 20.0) -> Any:
    """Poll a real condition (not a clock) until it holds, failing after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def pairs_in(path: Path) -> list[GradedPair]:
    store = open_store(str(path), readonly=True)
    try:
        return load_pairs(store)
    finally:
        store.close()


def test_client_bytes_unchanged_pairs_recorded_nothing_leaked(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any], fixed: FixedUpstream,
    emus: dict[str, EmulatorThread], tmp_path: Path,
) -> None:
    bodies = {}
    for rate in (0.0, 1.0):
        gw = gateway_factory(config_for(seed_config, fixed, tmp_path, rate))
        answers = [post(gw, {"model": "balanced", "messages": [{"role": "user", "content": f"{PROMPT} {i}"}],
                             "max_tokens": 20}) for i in range(3)]
        assert all(a.status_code == 200 for a in answers)
        bodies[rate] = [a.content for a in answers]
        if rate:
            # The live estimate catches up within a few seconds of the last pair, traffic or not.
            state = wait_for(lambda: (s := shadow_state(gw))["retained"] and s["retained"]["pairs"] == 3 and s)
            assert (state["sampled"], state["completed"], state["dropped"], state["rate"]) == (3, 3, {}, 1.0)
            assert 0 < state["spent_today_usd"] <= state["cap_usd_per_day"]
            metrics = httpx.get(gw.base_url + "/metrics", headers={"Authorization": f"Bearer {GATEWAY_KEY}"}).text
            assert "llmroute_shadow_sampled_total 3.0" in metrics
            assert 'llmroute_shadow_completed_total{graded="true"} 3.0' in metrics
            assert 'llmroute_quality_retained{bound="low"}' in metrics
            assert "llmroute_shadow_cost_usd_total" in metrics
        else:
            assert shadow_state(gw) == {"rate": 0.0}
        assert stop_gateway(gw) == 0
    # What the client got is the provider's answer, byte for byte, whether shadowed or not.
    assert bodies[0.0] == bodies[1.0] == [FIXED_BODY] * 3
    pairs = pairs_in(tmp_path / "ledger-1.0.sqlite3")
    assert len(pairs) == 3
    for pair in pairs:
        assert (pair.served_provider, pair.served_tier, pair.key_id) == ("fixed", "candidate", "team-a")
        assert "task=lead" in pair.tags and pair.prompt is None and pair.candidate_answer is None
    assert pairs_in(tmp_path / "ledger-0.0.sqlite3") == []
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("ledger-*"))
    logs = "".join(p.read_text() for p in tmp_path.glob("gateway-*.log"))
    assert b"Initech" not in stored and b"Qualified: yes" not in stored
    for key in (*PROVIDER_KEYS.values(), GATEWAY_KEY):
        assert key.encode() not in stored and key not in logs


def test_a_streamed_request_is_shadowed_from_its_assembled_answer(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any],
    emus: dict[str, EmulatorThread], tmp_path: Path,
) -> None:
    seed_config["balanced_weights"] = {"runpod": 100, "cerebras": 0}
    seed_config["ledger"] = {"path": str(tmp_path / "ledger.sqlite3"), "flush_interval_s": 0.01}
    seed_config["shadow"] = {"rate": 1.0, "grader": "exact", "store_text": True}
    gw = gateway_factory(seed_config)
    text = []
    with httpx.stream("POST", gw.base_url + "/v1/chat/completions", timeout=10,
                      json={"model": "balanced", "stream": True, "max_tokens": 30,
                            "messages": [{"role": "user", "content": PROMPT}]}) as answer:
        for line in answer.iter_lines():
            if line.startswith("data: {"):
                for choice in orjson.loads(line[6:]).get("choices") or ():
                    text.append(choice["delta"].get("content") or "")
    wait_for(lambda: httpx.get(gw.base_url + "/router/state").json()["shadow"]["completed"] == 1)
    assert stop_gateway(gw) == 0
    [pair] = pairs_in(tmp_path / "ledger.sqlite3")
    assert pair.served_provider == "runpod" and pair.candidate_answer == "".join(text) != ""
    assert pair.prompt == PROMPT and pair.reference_answer


def test_workers_share_the_daily_budget(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any],
    emus: dict[str, EmulatorThread], tmp_path: Path,
) -> None:
    seed_config["ledger"] = {"path": str(tmp_path / "ledger.sqlite3")}
    seed_config["shadow"] = {"rate": 0.5, "max_usd_per_day": 3.0}
    gw = gateway_factory(seed_config, "--workers", "2", port=free_port())
    state = httpx.get(gw.base_url + "/router/state").json()["shadow"]
    assert (state["workers"], state["cap_usd_per_day"]) == (2, 1.5)
