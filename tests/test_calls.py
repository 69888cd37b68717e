"""call_once: one call to a named provider, over real HTTP, playing by the cascade's rules."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from llmroute.breaker import OPEN
from llmroute.config import load_config
from llmroute.emulator import EmulatorThread
from llmroute.evaluation import CallOutcome, answer_text, call_once
from llmroute.evaluation.calls import has_spare_headroom, request_tokens
from llmroute.graders import get_grader
from llmroute.pricing import Pricer, cost_usd
from llmroute.providers import OpenAICompatProvider
from llmroute.ratelimit import RateLimitWindow
from llmroute.state import InMemoryState

from .conftest import emulator, provider

BODY = {"messages": [{"role": "user", "content": "Qualify this lead: TechCorp, 500 employees, SaaS."}], "max_tokens": 64}


class Parts:
    """A provider, its pricer and a state, built from a config the way the router builds them."""

    def __init__(self, providers: dict[str, Any], **extra: Any) -> None:
        self.config = load_config({"providers": providers, **extra})
        self.providers = {n: OpenAICompatProvider(p) for n, p in self.config.providers.items()}
        self.pricers = {n: Pricer(p) for n, p in self.config.providers.items()}
        self.state = InMemoryState({n: p.latency_ms for n, p in self.config.providers.items()},
                                   breakers=self.config.breaker_settings())

    async def call(self, name: str, body: dict[str, Any] | None = None, **kw: Any) -> CallOutcome:
        kw.setdefault("timeout_s", 5.0)
        return await call_once(self.providers[name], self.pricers[name], self.state, body or BODY, **kw)

    async def aclose(self) -> None:
        for p in self.providers.values():
            await p.aclose()


@pytest.fixture
async def parts(seed_config: dict[str, Any]) -> AsyncIterator[Parts]:
    built = Parts(seed_config["providers"])
    yield built
    await built.aclose()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def upstream() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Start throwaway upstreams (a broken paid provider) on loopback: returns each one's base URL."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", handler)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}/v1"

    yield start
    for runner in runners:
        await runner.cleanup()


def answer(message: dict[str, Any], usage: dict[str, int] | None = None) -> web.Response:
    body: dict[str, Any] = {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
    if usage is not None:
        body["usage"] = usage
    return web.json_response(body)


# -- answered ---------------------------------------------------------------------------


async def test_an_answer_is_its_text_priced_from_usage_and_recorded_as_a_success(
        parts: Parts, emus: dict[str, EmulatorThread]) -> None:
    sent = emus["cerebras"].emulator.stats["requests"]
    outcome = await parts.call("cerebras")
    assert outcome.ok and outcome.error is None
    assert emus["cerebras"].emulator.stats["requests"] == sent + 1
    assert isinstance(outcome.text, str) and outcome.text.strip()
    assert outcome.usage is not None and outcome.usage["completion_tokens"] > 0
    price = parts.config.providers["cerebras"].price_per_m
    assert price is not None
    assert outcome.cost_usd == pytest.approx(cost_usd(price, outcome.usage["prompt_tokens"], outcome.usage["completion_tokens"]))
    assert outcome.cost_usd > 0
    stats = parts.state.snapshot()["cerebras"]
    assert stats.successes == 1 and stats.failures == 0
    # Cerebras sends x-ratelimit-*: the state now knows its buckets, as after a routed request.
    assert parts.state.ratelimit("cerebras").tokens
    assert emus["cerebras"].emulator.last_body["model"] == parts.config.providers["cerebras"].model


async def test_the_text_is_what_the_provider_sent(parts: Parts, upstream: Callable[[Handler], Awaitable[str]]) -> None:
    async def handler(request: web.Request) -> web.Response:
        return answer({"role": "assistant", "content": "Paris."}, {"prompt_tokens": 1_000_000, "completion_tokens": 0})

    base = await upstream(handler)
    built = Parts({"fixed": provider(base, "cerebras", price_per_m={"input": 0.5, "output": 2.0})})
    try:
        outcome = await built.call("fixed")
    finally:
        await built.aclose()
    assert outcome.text == "Paris."
    assert outcome.cost_usd == pytest.approx(0.5)  # a million prompt tokens at $0.5 per million


async def test_a_completions_body_goes_to_completions(parts: Parts, emus: dict[str, EmulatorThread]) -> None:
    outcome = await parts.call("runpod", {"prompt": "Once upon a time", "max_tokens": 16})
    assert outcome.ok and outcome.text
    assert "prompt" in emus["runpod"].emulator.last_body


# -- not sent -----------------------------------------------------------------------------


async def test_an_open_breaker_is_not_called(parts: Parts, emus: dict[str, EmulatorThread]) -> None:
    parts.state.breaker("runpod").force(False, "test: provider down")
    assert parts.state.breaker("runpod").state == OPEN
    sent = emus["runpod"].emulator.stats["requests"]
    outcome = await parts.call("runpod")
    assert outcome.error is not None and outcome.error.startswith("circuit_open:")
    assert outcome.text is None and outcome.cost_usd == 0.0
    assert emus["runpod"].emulator.stats["requests"] == sent


async def test_a_provider_cooling_down_is_not_called(parts: Parts, emus: dict[str, EmulatorThread]) -> None:
    import time

    parts.state.set_cooldown("cerebras", time.time() + 30)
    sent = emus["cerebras"].emulator.stats["requests"]
    outcome = await parts.call("cerebras")
    assert outcome.error is not None and outcome.error.startswith("cooling_down:")
    assert emus["cerebras"].emulator.stats["requests"] == sent


async def test_spare_headroom_leaves_a_nearly_empty_bucket_to_user_traffic() -> None:
    """A real token bucket: the emulator enforces 2,000 tokens a minute and says what is left."""
    with emulator("cerebras", tokens_per_minute=2000) as emu:
        built = Parts({"cerebras": provider(emu.base_url, "cerebras")})
        try:
            first = await built.call("cerebras", timeout_s=5.0)  # learns the bucket from the headers
            assert first.ok
            left = built.state.ratelimit("cerebras").tokens[0].remaining
            prompt_tokens, _ = request_tokens(BODY)
            # A request that fits what is left, but not twice: a user request could still take it, a measurement not.
            size = int(left * 0.6) - prompt_tokens
            body = {**BODY, "max_tokens": size}
            assert not has_spare_headroom(built.state.ratelimit("cerebras"), prompt_tokens + size)
            sent = emu.emulator.stats["requests"]
            spared = await built.call("cerebras", body, spare_headroom=True)
            assert spared.error is not None and spared.error.startswith("rate_limit_headroom:")
            assert emu.emulator.stats["requests"] == sent
            # Without the flag it is sent, as the cascade would send it.
            taken = await built.call("cerebras", body)
            assert taken.ok
            assert emu.emulator.stats["requests"] == sent + 1
            # A small request still has room to spare.
            small = await built.call("cerebras", {**BODY, "max_tokens": 8}, spare_headroom=True)
            assert small.ok, small.error
        finally:
            await built.aclose()


def test_spare_headroom_keeps_a_request_bucket_slot() -> None:
    window = RateLimitWindow()
    window.update({"x-ratelimit-remaining-requests-day": "1", "x-ratelimit-reset-requests-day": "60"})
    assert window.headroom(10)  # the cascade would still send one
    assert not has_spare_headroom(window, 10)
    window.update({"x-ratelimit-remaining-requests-day": "2", "x-ratelimit-reset-requests-day": "60"})
    assert has_spare_headroom(window, 10)


# -- failures ---------------------------------------------------------------------------


@pytest.mark.parametrize("fault, kind", [("500", "server_error"), ("malformed", "malformed"), ("401", "auth")])
async def test_a_failure_is_an_error_recorded_against_the_provider(
        parts: Parts, emus: dict[str, EmulatorThread], fault: str, kind: str) -> None:
    emus["runpod"].set_faults({fault: 1.0})
    outcome = await parts.call("runpod")
    assert outcome.text is None
    assert outcome.error is not None and outcome.error.startswith(f"{kind}:")
    stats = parts.state.snapshot()["runpod"]
    assert stats.failures == 1 and stats.failures_by_kind == {kind: 1}


async def test_a_hanging_upstream_times_out_without_raising(
        upstream: Callable[[Handler], Awaitable[str]]) -> None:
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(status=504)

    base = await upstream(hang)
    built = Parts({"slow": provider(base, "runpod")})
    try:
        outcome = await built.call("slow", timeout_s=0.3)
    finally:
        release.set()
        await built.aclose()
    assert outcome.error is not None and outcome.error.startswith("timeout:")
    assert outcome.text is None
    assert built.state.snapshot()["slow"].failures_by_kind == {"timeout": 1}


async def test_garbage_in_a_200_is_malformed(upstream: Callable[[Handler], Awaitable[str]]) -> None:
    async def garbage(request: web.Request) -> web.Response:
        return web.json_response({"choices": "none today"})

    built = Parts({"broken": provider(await upstream(garbage), "runpod")})
    try:
        outcome = await built.call("broken")
    finally:
        await built.aclose()
    assert outcome.error is not None and outcome.error.startswith("malformed:")


async def test_a_gpu_priced_failure_still_costs_its_worker_time(upstream: Callable[[Handler], Awaitable[str]]) -> None:
    async def slow_500(request: web.Request) -> web.Response:
        await asyncio.sleep(0.05)  # the worker was busy this long before failing: that time is billed
        return web.json_response({"error": {"message": "worker crashed"}}, status=500)

    config = provider(await upstream(slow_500), "runpod", price_per_gpu_second=0.001)
    config.pop("price_per_m")
    built = Parts({"gpu": config})
    try:
        outcome = await built.call("gpu")
    finally:
        await built.aclose()
    assert outcome.error is not None and outcome.error.startswith("server_error:")
    assert outcome.cost_usd > 0


async def test_a_secret_echoed_in_an_error_is_scrubbed(upstream: Callable[[Handler], Awaitable[str]]) -> None:
    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": f"bad key {request.headers['authorization']}"}}, status=500)

    built = Parts({"echo": provider(await upstream(echo), "runpod", api_key="sk-very-secret-value")})
    try:
        outcome = await built.call("echo")
    finally:
        await built.aclose()
    assert outcome.error is not None and "sk-very-secret-value" not in outcome.error


# -- tool calls ------------------------------------------------------------------------


async def test_two_providers_tool_calls_compare_equal_when_they_call_the_same(
        upstream: Callable[[Handler], Awaitable[str]]) -> None:
    """Different call ids, key order and spacing: the same call, so the json grader scores 1."""

    def tool_answer(call_id: str, arguments: str) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            return answer({"role": "assistant", "content": None, "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": "qualify", "arguments": arguments}}]},
                {"prompt_tokens": 10, "completion_tokens": 5})
        return handler

    a = await upstream(tool_answer("call_1", '{"label": "hot", "score": 80}'))
    b = await upstream(tool_answer("call_zz", '{ "score":80,\n "label":"hot" }'))
    c = await upstream(tool_answer("call_2", '{"label": "cold", "score": 80}'))
    built = Parts({"a": provider(a, "cerebras"), "b": provider(b, "runpod"), "c": provider(c, "runpod")})
    try:
        first, second, third = [await built.call(n) for n in ("a", "b", "c")]
    finally:
        await built.aclose()
    assert first.text == second.text
    assert json.loads(first.text or "") == {"tool_calls": [{"name": "qualify", "arguments": {"label": "hot", "score": 80}}]}
    grader = get_grader("json")
    assert grader.grade("", second.text or "", first.text or "").score == 1.0
    assert grader.grade("", third.text or "", first.text or "").score == 0.0


def test_answer_text_of_content_parts_refusals_and_broken_calls() -> None:
    assert answer_text({"role": "assistant", "content": "hello"}) == "hello"
    assert answer_text({"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}) == "a b"
    assert answer_text({"content": None, "refusal": "I can't help with that."}) == "I can't help with that."
    assert answer_text({"content": None}) == ""
    # Arguments that are not JSON stay as written; a preamble beside the calls is left out.
    text = answer_text({"content": "Let me check.", "tool_calls": [
        {"id": "1", "function": {"name": "f", "arguments": "{broken"}}, "not a call"]})
    assert json.loads(text) == {"tool_calls": [{"name": "f", "arguments": "{broken"}, {"name": None, "arguments": None}]}
    legacy = answer_text({"content": None, "function_call": {"name": "f", "arguments": '{"x": 1}'}})
    assert json.loads(legacy) == {"tool_calls": [{"name": "f", "arguments": {"x": 1}}]}


async def test_an_unexpected_error_inside_is_an_internal_error_not_an_exception(parts: Parts) -> None:
    outcome = await call_once(parts.providers["cerebras"], parts.pricers["cerebras"], parts.state,
                              {"messages": [{"role": "user", "content": object()}]}, timeout_s=5.0)  # not JSON-able
    assert outcome.text is None and outcome.error is not None and outcome.error.startswith("bad_request:")
