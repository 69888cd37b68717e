"""Rate-limit awareness: header parsing, and routing away before a provider answers 429."""

from __future__ import annotations

from typing import Any

import pytest

from llmroute import LLMRouter
from llmroute.ratelimit import RateLimitWindow, parse_reset_s

from .conftest import emulator, provider


@pytest.mark.parametrize(("text", "seconds"), [
    ("59.5", 59.5), ("0", 0.0), ("1m30s", 90.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m", 3720.0), ("2s", 2.0),
])
def test_reset_forms(text: str, seconds: float) -> None:
    assert parse_reset_s(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "1x", "-"])
def test_unreadable_resets(text: str) -> None:
    assert parse_reset_s(text) is None


def test_cerebras_and_openai_headers_give_headroom() -> None:
    window = RateLimitWindow()
    window.update({"x-ratelimit-remaining-tokens-minute": "1000", "x-ratelimit-reset-tokens-minute": "30.0",
                   "x-ratelimit-remaining-requests-day": "50", "x-ratelimit-reset-requests-day": "3600"}, now=0.0)
    assert window.headroom(900, now=1.0) and not window.headroom(1001, now=1.0)
    assert window.headroom(5000, now=31.0)  # the bucket has refilled
    window.spend(600)  # sent, not yet answered
    assert not window.headroom(500, now=1.0)
    openai = RateLimitWindow()
    openai.update({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1m30s",
                   "x-ratelimit-remaining-tokens": "90000", "x-ratelimit-reset-tokens": "6ms"}, now=0.0)
    assert not openai.headroom(10, now=89.0) and openai.headroom(10, now=91.0)


async def test_router_moves_off_a_provider_before_its_bucket_overflows(seed_config: dict[str, Any]) -> None:
    # Cerebras (the emulator enforces 2,000 tokens a minute, charging prompt + max_tokens) comes first
    # for latency; each request charges about 310 tokens, so the sixth would get a 429.
    with emulator("cerebras", tokens_per_minute=2000) as limited:
        seed_config["providers"]["cerebras"] = provider(limited.base_url, "cerebras")
        seed_config["strategy"] = "quality_optimized"
        async with LLMRouter(config=seed_config, ledger=False) as router:
            results = [await router.generate("Qualify this lead: TechCorp", max_tokens=300) for _ in range(12)]
    served = [r.provider for r in results]
    assert served[0] == "cerebras" and "runpod" in served
    assert limited.emulator.stats.get("429", 0) == 0  # it never had to say no
    # Each request moved off cerebras says so: a skipped attempt with its reason, and fallback set.
    assert [r.fallback for r in results] == [p == "runpod" for p in served]
    assert all([(a.provider, a.kind) for a in r.attempts] == [("cerebras", "rate_limit_headroom"), ("runpod", "ok")]
               for r in results if r.provider == "runpod")
    assert served.count("cerebras") == 6  # 6 x ~310 tokens fit in 2,000; the rest went elsewhere at once
