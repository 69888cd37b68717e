"""Shadow evaluation against hostile providers: breakers that must close again, errors that echo what they
were sent, budgets that must hold, pairs of another provider pair. Real HTTP, real SQLite."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from llmroute import LLMRouter
from llmroute.config import load_config
from llmroute.emulator import EmulatorThread
from llmroute.ledger import open_store
from llmroute.ledger.pairs import GradedPair
from llmroute.quality.retained import share_for_quality
from llmroute.quality_report import load_pairs
from llmroute.strategies.quality_aware import load_quality_model

from .conftest import chat_upstream, provider

PROMPT = "Confidential: Initech merger terms, 40 employees"
UPSTREAM_KEY = "sk-upstream-secret-31415926"


class Upstream:
    """A provider stand-in the test steers: ``mode`` "ok" answers, "fail" sends a 500 that echoes the
    prompt and the key it was sent (as some providers do); ``completion_tokens`` is the usage it reports."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.requests: list[dict[str, Any]] = []
        self.completion_tokens = 3
        self.busy_s = 0.0
        """How long each answer takes (a slow self-hosted worker)."""
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        self.arrived.set()
        if self.mode == "hold":
            await self.release.wait()
        if self.busy_s:
            await asyncio.sleep(self.busy_s)
        if self.mode == "fail":
            echo = f"upstream broke on {json.dumps(body['messages'])} with {request.headers.get('Authorization')}"
            return web.json_response({"error": {"message": echo, "type": "server_error"}}, status=500)
        return web.json_response({
            "id": "chatcmpl-up", "object": "chat.completion", "created": 1, "model": body.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "upstream answer"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": self.completion_tokens,
                      "total_tokens": 10 + self.completion_tokens},
        })


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, str]]:
    stand_in = Upstream()
    async with chat_upstream(stand_in.handle) as base_url:
        yield stand_in, base_url
        stand_in.release.set()


def config_with(seed_config: dict[str, Any], tmp_path: Path, base_url: str, *, breaker: dict[str, Any] | None = None,
                **shadow: Any) -> dict[str, Any]:
    """runpod serves every request; the stand-in is the reference, reached only by shadow calls."""
    seed_config["providers"]["upstream"] = {**provider(base_url, "cerebras"), "model": "up", "api_key": UPSTREAM_KEY,
                                            **({"breaker": breaker} if breaker else {})}
    seed_config["balanced_weights"] = {"runpod": 100, "cerebras": 0, "upstream": 0}
    return {**seed_config, "ledger": {"path": str(tmp_path / "ledger.sqlite3"), "flush_interval_s": 0.01},
            "shadow": {"rate": 1.0, "grader": "exact", "reference": "upstream", "candidate": "runpod", **shadow}}


def stored_pairs(tmp_path: Path) -> list[GradedPair]:
    store = open_store(str(tmp_path / "ledger.sqlite3"), readonly=True)
    try:
        return load_pairs(store)
    finally:
        store.close()


async def ask(router: LLMRouter, count: int, **params: Any) -> list[Any]:
    params.setdefault("max_tokens", 20)
    return [await router.chat([{"role": "user", "content": f"{PROMPT} #{i}"}], **params) for i in range(count)]


async def test_a_breaker_opened_by_shadow_calls_closes_again_without_user_traffic(
    seed_config: dict[str, Any], tmp_path: Path, emus: dict[str, EmulatorThread], upstream: tuple[Upstream, str],
) -> None:
    stand_in, base_url = upstream
    config = config_with(seed_config, tmp_path, base_url, breaker={"failures": 2, "open_s": 0.05, "max_open_s": 0.05})
    async with LLMRouter(config=config) as router:
        stand_in.mode = "fail"
        await ask(router, 2)
        await router.shadow.drain()
        breaker = router.state.breaker("upstream")
        assert breaker.state == "open"
        stand_in.mode = "ok"
        while breaker.retry_in_s() > 0:  # the open period runs out; no user request goes to this provider
            await asyncio.sleep(breaker.retry_in_s())
        await ask(router, 1)  # its shadow call is the half-open probe
        await router.shadow.drain()
        assert breaker.state == "closed"
        assert router.shadow.completed == 3 and "circuit_open" not in router.shadow.dropped
    assert [p.reference_grade for p in stored_pairs(tmp_path)].count(1.0) == 1


@pytest.mark.parametrize("failing", ["shadow call", "judge"])
async def test_a_provider_error_echoing_the_prompt_and_key_stores_neither(
    seed_config: dict[str, Any], tmp_path: Path, emus: dict[str, EmulatorThread], upstream: tuple[Upstream, str],
    failing: str,
) -> None:
    stand_in, base_url = upstream
    config = config_with(seed_config, tmp_path, base_url)
    if failing == "judge":  # the emulator is the reference; the stand-in only judges
        config["shadow"].update(reference="cerebras", grader="judge")
        config["judge"] = {"provider": "upstream", "max_tokens": 20}
    stand_in.mode = "fail"
    async with LLMRouter(config=config) as router:
        await ask(router, 2)
        await router.shadow.drain()
    assert any(PROMPT in json.dumps(body) for body in stand_in.requests)  # the stand-in was sent it, and echoed it
    pairs = stored_pairs(tmp_path)
    assert len(pairs) == 2
    for pair in pairs:
        assert pair.reference_grade is None and "server_error (HTTP 500)" in pair.note
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("ledger.sqlite3*"))
    assert b"Initech" not in stored and UPSTREAM_KEY.encode() not in stored


def scored_pairs(count: int, reference: str, candidate: str, *, source: str = "shadow",
                 strategy: str = "quality_aware", weak_fails_above: float = 0.6) -> list[GradedPair]:
    """Graded pairs with quality scores, where the candidate fails the prompts scored above ``weak_fails_above``."""
    pairs = []
    for i in range(count):
        score = (i * 7919 % count) / count
        pairs.append(GradedPair(
            ts=time.time() - 60, request_id=f"{source}-{reference}-{i}", route=None, strategy=strategy, tags=[],
            key_id=None, quality_score=score, route_decision="weak", served_provider=candidate,
            reference_provider=reference, candidate_provider=candidate, served_tier="candidate", grader="exact",
            reference_grade=1.0, candidate_grade=0.0 if score > weak_fails_above else 1.0, note=None,
            shadow_cost_usd=1e-6, judge_cost_usd=None, source=source,
        ))
    return pairs


async def write_pairs(config: dict[str, Any], pairs: list[GradedPair]) -> None:
    router = LLMRouter(config=config)
    for pair in pairs:
        router.ledger.record_pair(pair)
    await router.aclose()


async def test_pairs_of_another_provider_pair_are_not_mixed_in(seed_config: dict[str, Any], tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="llmroute")
    config = {**seed_config, "ledger": {"path": str(tmp_path / "ledger.sqlite3")}}
    assert load_config(config).quality_pair() == ("cerebras", "runpod")
    # Measured before the config changed: another reference, on which the candidate always failed.
    await write_pairs(config, scored_pairs(300, "retired-strong", "runpod", weak_fails_above=-1))
    config["quality_aware"] = {"target": {"min_quality": 0.9}}
    async with LLMRouter(config={**config, "shadow": {"rate": 1.0, "min_pairs": 100}}) as router:
        assert router.strategy("quality_aware").strong_share == load_quality_model(None).share_for_quality(0.9)
        assert "quality not measured on your traffic" in caplog.text
        await router.shadow.drain()
        assert router.shadow.estimate is None  # the live window holds this pair's pairs only
    caplog.clear()
    await write_pairs(config, scored_pairs(150, "cerebras", "runpod"))
    async with LLMRouter(config=config) as router:
        assert "from 150 graded pairs" in caplog.text


async def test_quality_collect_pairs_measure_min_quality(seed_config: dict[str, Any], tmp_path: Path) -> None:
    config = {**seed_config, "ledger": {"path": str(tmp_path / "ledger.sqlite3")}}
    pairs = scored_pairs(200, "cerebras", "runpod", source="collect", strategy="collect")
    await write_pairs(config, pairs)
    config["quality_aware"] = {"target": {"min_quality": 0.9}}
    async with LLMRouter(config=config) as router:
        expected = share_for_quality([p.quality_score for p in pairs], [p.candidate_grade for p in pairs],
                                     [p.reference_grade for p in pairs], 0.9)
        assert expected is not None
        assert router.strategy("quality_aware").strong_share == expected


def spent_in_ledger(tmp_path: Path) -> float:
    return sum((p.shadow_cost_usd or 0.0) + (p.judge_cost_usd or 0.0) for p in stored_pairs(tmp_path))


async def ask_one_by_one(router: LLMRouter, count: int, **params: Any) -> None:
    """Each shadow call alone on the provider: a GPU-second bill is then the call's whole time."""
    for i in range(count):
        await router.chat([{"role": "user", "content": f"{PROMPT} #{i}"}], max_tokens=20, **params)
        await router.shadow.drain()


@pytest.mark.parametrize("provider_kind", ["slow and priced by GPU second", "ignores max_tokens"])
async def test_the_daily_budget_holds_whatever_the_provider_bills(
    seed_config: dict[str, Any], tmp_path: Path, emus: dict[str, EmulatorThread], upstream: tuple[Upstream, str],
    provider_kind: str,
) -> None:
    stand_in, base_url = upstream
    if provider_kind == "ignores max_tokens":
        stand_in.completion_tokens = 100_000  # whatever max_tokens said: 0.1 US$ a call at 1 US$ per 1M
        cap = 0.25
        config = config_with(seed_config, tmp_path, base_url, max_usd_per_day=cap)
        config["providers"]["upstream"]["price_per_m"] = {"input": 1.0, "output": 1.0}
    else:
        stand_in.busy_s = 0.2  # each answer keeps the worker 0.2 s: 0.002 US$, far past the latency prior's guess
        cap = 0.005
        config = config_with(seed_config, tmp_path, base_url, max_usd_per_day=cap)
        settings = config["providers"]["upstream"]
        del settings["price_per_m"]
        settings.update(price_per_gpu_second=0.01, latency_ms=20, timeout_s=0.3)
    async with LLMRouter(config=config) as router:
        await ask_one_by_one(router, 6)
        assert router.shadow.completed >= 1 and router.shadow.dropped.get("budget", 0) >= 1
        assert router.shadow.spent_today_usd() <= cap
    assert 0 < spent_in_ledger(tmp_path) <= cap


async def test_a_request_without_max_tokens_is_shadowed_with_the_cap_its_budget_reserved(
    seed_config: dict[str, Any], tmp_path: Path, emus: dict[str, EmulatorThread], upstream: tuple[Upstream, str],
) -> None:
    stand_in, base_url = upstream
    async with LLMRouter(config=config_with(seed_config, tmp_path, base_url)) as router:
        [result] = [await router.chat([{"role": "user", "content": PROMPT}])]
        await router.shadow.drain()
    expected = max(load_config(seed_config).expected_output_tokens, 2 * result.completion_tokens)
    assert stand_in.requests[-1]["max_tokens"] == expected
    [pair] = stored_pairs(tmp_path)
    assert pair.reference_grade is not None


async def test_a_shadow_call_cancelled_at_shutdown_still_records_its_cost(
    seed_config: dict[str, Any], tmp_path: Path, emus: dict[str, EmulatorThread], upstream: tuple[Upstream, str],
) -> None:
    stand_in, base_url = upstream
    stand_in.mode = "hold"
    router = LLMRouter(config=config_with(seed_config, tmp_path, base_url))
    await ask(router, 1)
    await stand_in.arrived.wait()
    await router.shadow.aclose(timeout_s=0.01)  # the upstream never answers: the call is cancelled mid-way
    spent = router.shadow.spent_today_usd()
    await router.aclose()
    [pair] = stored_pairs(tmp_path)
    assert pair.note and pair.note.startswith("cancelled")
    assert spent > 0 and pair.shadow_cost_usd == pytest.approx(spent)  # a restart reads back what was spent


async def test_a_streamed_tool_call_is_shadowed_as_the_call_it_assembles_to(
    seed_config: dict[str, Any], tmp_path: Path, emus: dict[str, EmulatorThread],
) -> None:
    seed_config["balanced_weights"] = {"runpod": 100, "cerebras": 0}
    config = {**seed_config, "ledger": {"path": str(tmp_path / "ledger.sqlite3"), "flush_interval_s": 0.01},
              "shadow": {"rate": 1.0, "grader": "json", "store_text": True}}
    tools = [{"type": "function", "function": {"name": "qualify", "parameters": {
        "type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}}}]
    async with LLMRouter(config=config) as router:
        stream = router.stream([{"role": "user", "content": PROMPT}], tools=tools, tool_choice="required",
                               max_tokens=60)
        fragments: list[Any] = []
        async for chunk in stream:
            for choice in chunk.get("choices") or ():
                fragments.extend(choice["delta"].get("tool_calls") or ())
        await router.shadow.drain()
    assert fragments  # the client got its tool call in pieces
    [pair] = stored_pairs(tmp_path)
    assert pair.served_tier == "candidate"
    served = json.loads(pair.candidate_answer)
    assert [call["name"] for call in served["tool_calls"]] == ["qualify"]
    assert "label" in served["tool_calls"][0]["arguments"]
    assert pair.candidate_grade is not None and pair.reference_grade is not None
