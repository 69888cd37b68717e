"""The official openai package against a running gateway: sync, async, streaming, and a fallback mid-run."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import openai
import pytest

from llmroute.emulator import EmulatorThread

from .conftest import RunningGateway

LEAD = "Qualify this lead: TechCorp, 500 employees, SaaS industry"


def client(gateway: RunningGateway, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=kw.pop("api_key", "unused"), max_retries=0, **kw)


def test_sync_client_chat_and_metadata_headers(gateway: RunningGateway) -> None:
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="llama3.1-8b", messages=[{"role": "user", "content": LEAD}], max_tokens=50,
    )
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert completion.usage.completion_tokens > 0
    headers = raw.headers
    assert headers["x-llmroute-provider"] == "runpod"  # balanced starts on the 80
    assert headers["x-llmroute-strategy"] == "balanced"  # an unknown model uses the default
    assert headers["x-llmroute-fallback"] == "false"
    assert headers["x-llmroute-attempts"] == "runpod:200"
    cost = (completion.usage.prompt_tokens + completion.usage.completion_tokens) * 0.02 / 1e6
    assert float(headers["x-llmroute-cost-usd"]) == pytest.approx(cost, abs=1e-9)
    assert float(headers["x-llmroute-latency-ms"]) > 0


def test_model_names_a_strategy_and_header_overrides(gateway: RunningGateway) -> None:
    c = client(gateway)
    raw = c.chat.completions.with_raw_response.create(model="quality_optimized", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-llmroute-provider"] == "cerebras" and raw.headers["x-llmroute-strategy"] == "quality_optimized"
    raw = c.chat.completions.with_raw_response.create(
        model="quality_optimized", messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-llmroute-strategy": "cost_optimized"},
    )
    assert raw.headers["x-llmroute-provider"] == "runpod" and raw.headers["x-llmroute-strategy"] == "cost_optimized"
    with pytest.raises(openai.BadRequestError) as info:
        c.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}],
                                  extra_headers={"x-llmroute-strategy": "fastest"})
    assert "unknown x-llmroute-strategy 'fastest'" in info.value.message


def test_async_client_balanced_split_is_exact(gateway: RunningGateway) -> None:
    async def run() -> Counter[str]:
        c = openai.AsyncOpenAI(base_url=gateway.base_url + "/v1", api_key="unused", max_retries=0)
        async with c:
            raws = await asyncio.gather(*(
                c.chat.completions.with_raw_response.create(model="balanced", messages=[{"role": "user", "content": "hi"}],
                                                            max_tokens=5)
                for _ in range(100)))
        return Counter(r.headers["x-llmroute-provider"] for r in raws)

    assert asyncio.run(run()) == {"runpod": 80, "cerebras": 20}


def test_streaming_passes_chunks_and_hides_usage_unless_asked(gateway: RunningGateway) -> None:
    c = client(gateway)
    chunks = list(c.chat.completions.create(model="cost_optimized", messages=[{"role": "user", "content": LEAD}],
                                            max_tokens=40, stream=True))
    assert len(chunks) > 3
    assert all(chunk.usage is None for chunk in chunks)  # the upstream was asked for usage; the client was not
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    with_usage = list(c.chat.completions.create(
        model="cost_optimized", messages=[{"role": "user", "content": LEAD}], max_tokens=40, stream=True,
        stream_options={"include_usage": True}))
    assert with_usage[-1].usage is not None and with_usage[-1].usage.completion_tokens > 0
    text = "".join(ch.choices[0].delta.content or "" for ch in with_usage if ch.choices)
    assert text


def test_async_streaming(gateway: RunningGateway) -> None:
    async def run() -> str:
        c = openai.AsyncOpenAI(base_url=gateway.base_url + "/v1", api_key="unused", max_retries=0)
        async with c:
            stream = await c.chat.completions.create(model="latency_optimized", messages=[{"role": "user", "content": LEAD}],
                                                     max_tokens=30, stream=True)
            return "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])

    assert asyncio.run(run())


def test_fallback_mid_run(gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any],
                          emus: dict[str, EmulatorThread]) -> None:
    seed_config["breaker"] = {"open_s": 0.2}
    c = client(gateway_factory(seed_config))

    def ask(stream: bool) -> tuple[str, bool]:
        if stream:
            with c.chat.completions.with_streaming_response.create(
                    model="cost_optimized", messages=[{"role": "user", "content": "hi"}], stream=True) as resp:
                list(resp.iter_lines())
                headers = resp.headers
        else:
            headers = c.chat.completions.with_raw_response.create(
                model="cost_optimized", messages=[{"role": "user", "content": "hi"}]).headers
        return headers["x-llmroute-provider"], headers["x-llmroute-fallback"] == "true"

    providers, fallbacks = [], 0
    for i in range(40):
        if i == 20:
            emus["runpod"].set_faults({"503": 1.0})
        provider, fell_back = ask(stream=i % 3 == 0)
        providers.append(provider)
        fallbacks += fell_back
    emus["runpod"].set_faults({})
    assert providers[:20] == ["runpod"] * 20
    assert set(providers[20:40]) == {"cerebras"}  # every request still answered
    assert fallbacks >= 1
    # Once RunPod recovers, the breaker's probe finds it healthy and traffic returns.
    deadline = time.monotonic() + 10
    while ask(stream=False)[0] != "runpod":
        assert time.monotonic() < deadline, "traffic did not return to runpod"
    assert [ask(stream=bool(i % 2))[0] for i in range(5)] == ["runpod"] * 5


def test_completions_and_models(gateway: RunningGateway, emus: dict[str, EmulatorThread]) -> None:
    c = client(gateway)
    completion = c.completions.create(model="quality_optimized", prompt="San Francisco is a", max_tokens=12)
    assert completion.choices[0].text and completion.usage.completion_tokens > 0
    assert emus["cerebras"].emulator.last_body["prompt"] == "San Francisco is a"
    streamed = list(c.completions.create(model="quality_optimized", prompt="Once", max_tokens=12, stream=True))
    assert "".join(ch.choices[0].text for ch in streamed if ch.choices)
    ids = {m.id for m in c.models.list()}
    assert ids == {"cost_optimized", "latency_optimized", "quality_optimized", "balanced", "quality_aware"}


def test_tools_response_format_and_unknown_fields_pass_through(gateway: RunningGateway, emus: dict[str, EmulatorThread]) -> None:
    tools = [{"type": "function", "function": {"name": "score_lead", "parameters": {"type": "object", "properties": {}}}}]
    client(gateway).chat.completions.create(
        model="quality_optimized", messages=[{"role": "user", "content": LEAD}], tools=tools, tool_choice="auto",
        response_format={"type": "json_object"}, extra_body={"guided_json": {"type": "object"}, "top_k": 5},
    )
    seen = emus["cerebras"].emulator.last_body
    assert seen["tools"] == tools and seen["tool_choice"] == "auto"
    assert seen["response_format"] == {"type": "json_object"}
    assert seen["guided_json"] == {"type": "object"} and seen["top_k"] == 5
    assert seen["model"] == "llama3.1-8b"  # the provider's own model name replaces the strategy name
