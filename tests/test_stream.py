"""Streaming through the router: chunks as they arrive, silent fallback before the first one."""

from __future__ import annotations

from typing import Any

import pytest

from llmroute import AllProvidersFailed, LLMRouter, StreamInterrupted, SyncRouter

from .test_router import SEED_PROMPT, primary_first


async def collect(router: LLMRouter, **kw: Any) -> tuple[list[dict[str, Any]], Any]:
    stream = router.stream(prompt=SEED_PROMPT, max_tokens=60, **kw)
    chunks = [chunk async for chunk in stream]
    return chunks, stream.result


async def test_stream_yields_chunks_and_a_costed_result(seed_config: dict[str, Any]) -> None:
    async with LLMRouter(strategy="quality_optimized", config=seed_config) as router:
        chunks, result = await collect(router)
    text = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c.get("choices"))
    assert len(chunks) > 3
    assert result.text == text
    assert result.provider == "cerebras" and not result.fallback
    assert result.completion_tokens > 0  # usage was requested upstream though the caller did not ask
    assert result.cost_usd == pytest.approx((result.prompt_tokens + result.completion_tokens) * 0.10 / 1e6, abs=1e-12)
    assert result.ttft_ms is not None and 0 < result.ttft_ms <= result.latency_ms
    assert result.finish_reason in ("stop", "length")


@pytest.mark.parametrize("fault", ["503", "429", "stream_cut_first", "error_in_body", "reset"])
@pytest.mark.parametrize("primary", ["runpod", "cerebras"])
async def test_stream_falls_back_before_first_chunk(seed_config: dict[str, Any], fault: str, primary: str) -> None:
    config = primary_first(seed_config, primary)
    config["providers"][primary]["headers"] = {"x-emulator-fault": fault}
    async with LLMRouter(config=config) as router:
        chunks, result = await collect(router)
    secondary = "cerebras" if primary == "runpod" else "runpod"
    assert result.provider == secondary and result.fallback
    assert [a.provider for a in result.attempts] == [primary, secondary]
    assert {c["model"] for c in chunks} == {router.config.providers[secondary].model}  # nothing leaked from the primary


async def test_stream_cut_after_first_chunk_raises(seed_config: dict[str, Any]) -> None:
    config = primary_first(seed_config, "runpod")
    config["providers"]["runpod"]["headers"] = {"x-emulator-fault": "stream_cut"}
    async with LLMRouter(config=config) as router:
        stream = router.stream(prompt=SEED_PROMPT, max_tokens=60)
        received = []
        with pytest.raises(StreamInterrupted) as info:
            async for chunk in stream:
                received.append(chunk)
    assert received  # the caller did get the first part
    assert info.value.provider == "runpod"
    assert [(a.provider, a.ok, a.kind) for a in info.value.attempts] == [("runpod", False, "stream_interrupted")]
    assert stream.result is None
    assert router.state.snapshot()["runpod"].failures == 1


async def test_stream_all_fail(seed_config: dict[str, Any]) -> None:
    for p in seed_config["providers"].values():
        p["headers"] = {"x-emulator-fault": "500"}
    seed_config["retry_rounds"] = 0
    async with LLMRouter(config=seed_config) as router:
        with pytest.raises(AllProvidersFailed) as info:
            await collect(router)
    assert len(info.value.attempts) == 2


def test_sync_wrapper(seed_config: dict[str, Any]) -> None:
    with SyncRouter(strategy="cost_optimized", config=seed_config) as router:
        result = router.generate(SEED_PROMPT, max_tokens=30)
        assert result.provider == "runpod" and result["result"]
        chat = router.chat([{"role": "user", "content": "hello"}], strategy="quality_optimized")
        assert chat.provider == "cerebras"
        chunks = list(router.stream(prompt="hello", max_tokens=20))
        assert chunks and router.last_result is not None
        assert router.last_result.text == "".join(
            (c["choices"][0]["delta"].get("content") or "") for c in chunks if c.get("choices"))
        # Connections are pooled across calls on the router's own loop.
        assert router.router.providers["runpod"]._pool._idle  # a kept-alive connection waits for the next call


def test_streamed_tool_call_fragments_assemble_in_index_order() -> None:
    """Shadow evaluation grades a streamed tool call as the whole call: fragments joined per index, ten and up too."""
    from llmroute.stream import assemble_tool_calls

    deltas = [{"index": i, "id": f"call_{i}", "function": {"name": f"f{i}", "arguments": ""}} for i in (0, 1, 2, 10)]
    deltas += [{"index": 10, "function": {"arguments": '{"a": '}}, {"index": 2, "function": {"arguments": "{}"}},
               {"index": 10, "function": {"arguments": "1}"}}, "not a delta", {"index": 1, "function": None}]
    calls = assemble_tool_calls(deltas)
    assert [c["function"]["name"] for c in calls] == ["f0", "f1", "f2", "f10"]
    assert calls[3]["function"]["arguments"] == '{"a": 1}' and calls[2]["function"]["arguments"] == "{}"
