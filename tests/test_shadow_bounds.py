"""Shadow work's memory is bounded in bytes (``shadow.max_queued_bytes``), not only in jobs."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from llmroute import LLMRouter
from llmroute.config import load_config
from llmroute.emulator import EmulatorThread
from llmroute.evaluation.shadow import job_bytes
from llmroute.result import RouteResult
from llmroute.tokens import count_tokens

from .gateway.conftest import RunningGateway, gateway_factory, stop_gateway
from .gateway.test_shadow_gateway import GATEWAY_KEY, FixedUpstream, config_for, fixed, post, shadow_state, wait_for
from .test_shadow import Gate, gate, gated_config, stored_pairs

__all__ = ["fixed", "gate", "gateway_factory"]  # fixtures used here by name

LARGE_CHARS = 20_000
"""A large prompt: 20 kB of ASCII held in memory as long as its job waits (and under the emulator's context)."""


def prompt(i: int, chars: int = 0) -> list[dict[str, Any]]:
    text = f"Qualify this lead #{i}: " + ("abcdefghijklmnop " * (chars // 17 + 1))[:chars]
    return [{"role": "user", "content": text}]


async def test_large_prompts_dropped_by_bytes_where_the_job_count_would_admit_them(
    seed_config: dict[str, Any], tmp_path: Path, emus: dict[str, EmulatorThread], gate: tuple[Gate, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    upstream, base_url = gate
    limit = 200_000
    config = gated_config(seed_config, tmp_path, base_url, max_in_flight=1, max_queued=16, max_queued_bytes=limit)
    sizes = [0, 0, 0, LARGE_CHARS, LARGE_CHARS, LARGE_CHARS, LARGE_CHARS, LARGE_CHARS, 0]
    dropped_at: list[int] = []
    async with LLMRouter(config=config) as router:
        shadow = router.shadow
        for i, chars in enumerate(sizes):  # one at a time: each offer sees the jobs before it still held
            before = shadow.dropped.get("queue_bytes", 0)
            await router.chat(prompt(i, chars), max_tokens=20)
            if shadow.dropped.get("queue_bytes", 0) > before:
                dropped_at.append(i)
            assert 0 < shadow.held_bytes <= limit
        state = shadow.snapshot()
        admitted = len(sizes) - len(dropped_at)
        # The job count alone would have admitted every one: 1 in flight and 16 queued hold 17.
        assert state["sampled"] == len(sizes) and state["in_flight"] + state["queued"] == admitted
        assert admitted < len(sizes) <= shadow.max_in_flight + shadow.max_queued
        assert shadow.dropped == {"queue_bytes": len(dropped_at)}
        # Only large prompts were refused, and a small one still fits after them: size decides, not count.
        assert dropped_at and all(sizes[i] == LARGE_CHARS for i in dropped_at)
        assert sizes[-1] == 0 and len(sizes) - 1 not in dropped_at
        # What is admitted really holds no more than the bound: each large prompt is LARGE_CHARS bytes of text.
        assert (admitted - sizes.count(0)) * LARGE_CHARS <= limit
        assert "shadow evaluation dropped sampled requests (queue_bytes 1)" in caplog.text
        upstream.open.set()
        await shadow.drain()
        assert shadow.held_bytes == 0 and shadow.snapshot()["held_bytes"] == 0
        assert shadow.completed == admitted
    assert len(stored_pairs(tmp_path)) == admitted


def answered(text: str, prompt_tokens: int) -> RouteResult:
    """A served answer as the router builds it: the text, the parsed body and the raw JSON it came as."""
    raw = {"id": "chatcmpl-1", "object": "chat.completion", "model": "m",
           "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
           "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": count_tokens(text)}}
    return RouteResult(text=text, provider="runpod", model="m", strategy="balanced", prompt_tokens=prompt_tokens,
                       completion_tokens=count_tokens(text), cost_usd=0.0, latency_ms=1.0, cost_per_m=0.0, raw=raw,
                       raw_json=orjson.dumps(raw))


def held(strings: list[str], result: RouteResult) -> int:
    """Bytes the job's strings really take: the prompt's, and the answer three times over."""
    return (sum(sys.getsizeof(s) for s in strings) + 2 * sys.getsizeof(result.text) + len(result.raw_json or b""))


IMAGE = "data:image/png;base64," + "iVBORw0KGgo" * 100_000


@pytest.mark.parametrize(("strings", "body", "billed_tokens"), [
    pytest.param(["hello " * 50_000], lambda s: {"messages": [{"role": "user", "content": s[0]}]}, 50_000,
                 id="ascii"),
    pytest.param(["😀" * 100_000], lambda s: {"messages": [{"role": "user", "content": s[0]}]}, 100_000,
                 id="emoji"),
    # An image is billed a few hundred tokens however many bytes its data takes.
    pytest.param(["what is in this picture?", IMAGE], lambda s: {"messages": [{"role": "user", "content": [
        {"type": "text", "text": s[0]}, {"type": "image_url", "image_url": {"url": s[1], "detail": "low"}}]}]},
        85, id="image"),
    pytest.param(["once upon a time " * 10_000], lambda s: {"prompt": s[0]}, 40_000, id="completions"),
])
def test_the_size_estimate_covers_what_the_job_holds(strings: list[str], body: Callable[[list[str]], dict[str, Any]],
                                                   billed_tokens: int) -> None:
    for answer in ("Qualified: yes", "ja " * 2_000, "答案" * 3_000, "😀" * 2_000):
        result = answered(answer, billed_tokens)
        assert job_bytes(body(strings), result) >= held(strings, result)


def test_gateway_counts_and_shows_queue_bytes_drops(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any], fixed: FixedUpstream,
    emus: dict[str, EmulatorThread], tmp_path: Path,
) -> None:
    # The provider bills 12 prompt tokens whatever it is sent: the size must come from the request too.
    gw = gateway_factory(config_for(seed_config, fixed, tmp_path, 1.0, max_queued_bytes=100_000))
    small = post(gw, {"model": "balanced", "messages": prompt(0), "max_tokens": 20})
    large = post(gw, {"model": "balanced", "messages": prompt(1, 200_000), "max_tokens": 20})
    assert small.status_code == large.status_code == 200  # the client is answered either way
    state = wait_for(lambda: (s := shadow_state(gw))["completed"] == 1 and s)
    assert (state["sampled"], state["dropped"]) == (2, {"queue_bytes": 1})
    assert state["max_queued_bytes"] == 100_000
    metrics = httpx.get(gw.base_url + "/metrics", headers={"Authorization": f"Bearer {GATEWAY_KEY}"}).text
    assert 'llmroute_shadow_dropped_total{reason="queue_bytes"} 1.0' in metrics
    assert wait_for(lambda: shadow_state(gw)["held_bytes"] == 0)
    assert stop_gateway(gw) == 0


def test_the_default_bound_holds_two_bodies_at_the_gateway_limit() -> None:
    p = {"base_url": "http://127.0.0.1:9/v1", "model": "m", "price_per_m": {"input": 0.1, "output": 0.1}}
    config = load_config({"providers": {"a": p, "b": p}, "shadow": {"rate": 0.5}})
    largest = "x" * config.gateway.max_body_bytes
    charged = job_bytes({"messages": [{"role": "user", "content": largest}]}, answered("ok", 1))
    assert charged <= config.shadow.max_queued_bytes < 3 * charged
