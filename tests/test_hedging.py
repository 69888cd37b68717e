"""Hedged requests: a slow first provider gets company after a delay; the first answer wins; both are billed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from llmroute import LLMRouter
from llmroute.ledger import Ledger, open_store

from .conftest import emulator, provider


async def test_slow_first_choice_is_hedged_and_the_fast_answer_wins(seed_config: dict[str, Any], tmp_path: Path) -> None:
    ledger = Ledger(open_store(str(tmp_path / "h.sqlite3")), flush_interval_s=0.01)
    with emulator("cerebras", speed=1.0, latency_ms=3000.0) as slow, emulator("runpod") as fast:
        seed_config["providers"] = {
            "cerebras": provider(slow.base_url, "cerebras", price_per_m={"input": 1.0, "output": 1.0}),
            "runpod": provider(fast.base_url, "runpod")}
        seed_config["strategy"] = "quality_optimized"  # cerebras (tier 2) first
        seed_config["hedge"] = {"strategies": ["quality_optimized"], "after_ms": 100}
        async with LLMRouter(config=seed_config, ledger=ledger) as router:
            started = time.perf_counter()
            result = await router.generate("Qualify this lead: TechCorp", max_tokens=20)
            elapsed_s = time.perf_counter() - started
    assert result.provider == "runpod"
    assert 0.1 <= elapsed_s < 1.5  # the hedge fired after 100 ms; nobody waited for the 3 s answer
    kinds = [(a.provider, a.kind) for a in result.attempts]
    assert kinds == [("cerebras", "hedge_cancelled"), ("runpod", "ok")]
    cancelled = result.attempts[0]
    assert cancelled.prompt_tokens > 0 and cancelled.cost_usd == pytest.approx(cancelled.prompt_tokens * 1.0 / 1e6)
    assert not result.fallback  # the hedge is not a failure
    assert ledger.flush()
    [(cost, attempts)] = ledger.store.fetch("SELECT cost_usd, attempts FROM requests")
    assert cost == pytest.approx(result.cost_usd + cancelled.cost_usd, abs=1e-12)  # both were billed
    assert '"hedge_cancelled"' in attempts
    ledger.close()


async def test_no_hedge_when_the_first_answers_in_time(seed_config: dict[str, Any]) -> None:
    seed_config["strategy"] = "quality_optimized"
    seed_config["hedge"] = {"strategies": ["quality_optimized"], "after_ms": 2000}
    async with LLMRouter(config=seed_config, ledger=False) as router:
        result = await router.generate("hi", max_tokens=5)
    assert [a.kind for a in result.attempts] == ["ok"] and result.provider == "cerebras"


async def test_hedge_delay_follows_the_measured_p95(seed_config: dict[str, Any]) -> None:
    seed_config["hedge"] = {"strategies": ["latency_optimized"], "after_ms": "p95", "min_samples": 5}
    async with LLMRouter(config=seed_config, ledger=False) as router:
        cascade, _, _ = router.dispatch.plan(router._estimate(10, {}), "latency_optimized")
        assert router.dispatch.hedge_delay_s("latency_optimized", cascade) == 0.5  # too few samples yet
        for latency in (10, 20, 30, 40, 200):
            router.state.record_success(cascade.order[0], latency)
        assert router.dispatch.hedge_delay_s("latency_optimized", cascade) == pytest.approx(0.04)
        assert router.dispatch.hedge_delay_s("balanced", cascade) is None  # balanced does not hedge here


async def test_a_stream_is_hedged_on_its_first_chunk(seed_config: dict[str, Any]) -> None:
    with emulator("cerebras", speed=1.0, latency_ms=3000.0) as slow, emulator("runpod") as fast:
        seed_config["providers"] = {"cerebras": provider(slow.base_url, "cerebras"),
                                    "runpod": provider(fast.base_url, "runpod")}
        seed_config["strategy"] = "quality_optimized"
        seed_config["hedge"] = {"strategies": ["quality_optimized"], "after_ms": 100}
        async with LLMRouter(config=seed_config, ledger=False) as router:
            started = time.perf_counter()
            stream = router.stream(prompt="Summarise this contract.", max_tokens=30)
            text = "".join([(c.get("delta") or {}).get("content") or ""
                            async for chunk in stream for c in chunk.get("choices") or ()])
            elapsed_s = time.perf_counter() - started
    assert text and stream.result is not None and stream.result.provider == "runpod"
    assert elapsed_s < 1.5
    assert [(a.provider, a.kind) for a in stream.result.attempts] == [("cerebras", "hedge_cancelled"), ("runpod", "ok")]
