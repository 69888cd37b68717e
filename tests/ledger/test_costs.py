"""Costs to the micro-dollar, as the ledger records them: real requests to emulated providers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from llmroute import LLMRouter, StreamInterrupted
from llmroute.ledger import Ledger, open_store

from ..conftest import emulator, provider


def ledger_at(tmp_path: Path) -> Ledger:
    return Ledger(open_store(str(tmp_path / "ledger.sqlite3")), flush_interval_s=0.01)


def rows(ledger: Ledger, where: str = "1 = 1") -> list[dict[str, Any]]:
    assert ledger.flush()
    names = ["request_id", "provider", "status", "prompt_tokens", "completion_tokens", "cached_tokens", "cost_usd",
             "cost_basis", "fallback", "attempts", "tags", "user_id", "ttft_ms", "latency_ms", "ts"]
    return [dict(zip(names, r)) for r in ledger.store.fetch(f"SELECT {', '.join(names)} FROM requests WHERE {where} ORDER BY id")]


async def test_input_and_output_priced_separately(tmp_path: Path) -> None:
    ledger = ledger_at(tmp_path)
    with emulator("cerebras") as emu:
        config = {"providers": {"p": provider(emu.base_url, "cerebras", price_per_m={"input": 0.25, "output": 2.0})}}
        async with LLMRouter(config=config, ledger=ledger) as router:
            result = await router.generate("Qualify this lead: TechCorp, 500 employees, SaaS industry", max_tokens=80,
                                           tags={"team": "sales"}, user="alice")
    expected = (result.prompt_tokens * 0.25 + result.completion_tokens * 2.0) / 1e6
    assert result.prompt_tokens > 0 and result.completion_tokens > 0
    assert result.cost_usd == pytest.approx(expected, abs=1e-12)
    [row] = rows(ledger)
    assert row["request_id"] == result.request_id and row["status"] == "ok" and row["provider"] == "p"
    assert (row["prompt_tokens"], row["completion_tokens"]) == (result.prompt_tokens, result.completion_tokens)
    assert row["cost_usd"] == pytest.approx(expected, abs=1e-12) and row["cost_basis"] == "tokens"
    assert row["tags"] == '["team=sales"]' and row["user_id"] == "alice"
    ledger.close()


async def test_cached_prompt_tokens_priced_when_reported_and_priced(tmp_path: Path) -> None:
    ledger = ledger_at(tmp_path)
    history = [{"role": "system", "content": "You qualify B2B leads. " * 40},
               {"role": "user", "content": "TechCorp, 500 employees, SaaS"}]
    with emulator("cerebras", prompt_cache=True) as emu:
        priced = provider(emu.base_url, "cerebras", price_per_m={"input": 1.0, "output": 3.0, "cached_input": 0.1})
        unpriced = provider(emu.base_url, "cerebras", price_per_m={"input": 1.0, "output": 3.0})
        for name, p in (("with_cached_price", priced), ("without_cached_price", unpriced)):
            async with LLMRouter(config={"providers": {name: p}}, ledger=ledger) as router:
                first = await router.chat(history, max_tokens=20)
                second = await router.chat([*history, {"role": "assistant", "content": first.text},
                                            {"role": "user", "content": "And Acme, 20 employees?"}], max_tokens=20)
            assert second.cached_prompt_tokens > 0 and second.cached_prompt_tokens < second.prompt_tokens
            cached_price = 0.1 if name == "with_cached_price" else 1.0
            expected = ((second.prompt_tokens - second.cached_prompt_tokens) * 1.0
                        + second.cached_prompt_tokens * cached_price + second.completion_tokens * 3.0) / 1e6
            assert second.cost_usd == pytest.approx(expected, abs=1e-12)
            stored = rows(ledger, f"request_id = '{second.request_id}'")[0]
            assert stored["cached_tokens"] == second.cached_prompt_tokens
            assert stored["cost_usd"] == pytest.approx(expected, abs=1e-12)
    ledger.close()


async def test_stream_cut_after_tokens_is_billed_and_recorded(tmp_path: Path) -> None:
    ledger = ledger_at(tmp_path)
    with emulator("runpod") as emu:
        config = {"providers": {"runpod": provider(emu.base_url, "runpod", price_per_m={"input": 2.0, "output": 4.0})}}
        emu.set_faults({"stream_cut": 1.0})
        async with LLMRouter(config=config, ledger=ledger) as router:
            received: list[str] = []
            with pytest.raises(StreamInterrupted):
                async for chunk in router.stream(prompt="Summarise this contract in three points.", max_tokens=200):
                    for choice in chunk.get("choices") or ():
                        received.append((choice.get("delta") or {}).get("content") or "")
    assert "".join(received)
    [row] = rows(ledger)
    assert row["status"] == "interrupted" and row["provider"] == "runpod"
    assert row["completion_tokens"] > 0 and row["prompt_tokens"] > 0
    expected = (row["prompt_tokens"] * 2.0 + row["completion_tokens"] * 4.0) / 1e6
    assert row["cost_usd"] == pytest.approx(expected, abs=1e-12) and row["cost_usd"] > 0
    assert '"kind":"stream_interrupted"' in row["attempts"]
    ledger.close()


async def test_failed_requests_are_recorded_with_every_attempt(tmp_path: Path) -> None:
    ledger = ledger_at(tmp_path)
    with emulator("cerebras") as a, emulator("runpod") as b:
        a.set_faults({"503": 1.0})
        b.set_faults({"500": 1.0})
        config = {"providers": {"cerebras": provider(a.base_url, "cerebras"), "runpod": provider(b.base_url, "runpod")},
                  "retry_rounds": 0}
        async with LLMRouter(config=config, ledger=ledger) as router:
            with pytest.raises(Exception, match="all providers failed"):
                await router.generate("hi")
    [row] = rows(ledger)
    assert row["status"] == "failed" and row["provider"] is None and row["cost_usd"] == 0.0
    assert '"status":503' in row["attempts"] and '"status":500' in row["attempts"]
    ledger.close()


async def test_gpu_second_pricing_shares_busy_time_among_concurrent_requests(tmp_path: Path) -> None:
    ledger = ledger_at(tmp_path)
    price_per_s = 0.00076
    with emulator("runpod", speed=1.0, latency_ms=120.0) as emu:
        gpu = provider(emu.base_url, "runpod", price_per_gpu_second=price_per_s, idle_share=0.2)
        del gpu["price_per_m"]
        async with LLMRouter(config={"providers": {"runpod": gpu}}, ledger=ledger) as router:
            started = time.monotonic()
            results = await asyncio.gather(*(router.generate(f"lead {i}", max_tokens=30) for i in range(6)))
            wall_s = time.monotonic() - started
    billed_s = sum(r.cost_usd for r in results) / (price_per_s / (1 - 0.2))
    longest_s = max(r.latency_ms for r in results) / 1000
    # Six concurrent requests share one busy period: billed time is the union, not the sum of latencies.
    assert longest_s * 0.9 <= billed_s <= wall_s
    assert sum(r.latency_ms for r in results) / 1000 > 3 * billed_s
    stored = rows(ledger)
    assert {r["cost_basis"] for r in stored} == {"gpu_seconds"}
    assert sum(r["cost_usd"] for r in stored) == pytest.approx(sum(r.cost_usd for r in results), rel=1e-9)
    ledger.close()


async def test_a_timed_out_gpu_attempt_is_billed_for_its_worker_time(tmp_path: Path) -> None:
    ledger = ledger_at(tmp_path)
    with emulator("runpod") as slow, emulator("cerebras") as fast:
        slow.set_faults({"hang": 1.0})
        gpu = provider(slow.base_url, "runpod", price_per_gpu_second=0.001, timeout_s=0.3)
        config = {"providers": {"runpod": gpu, "cerebras": provider(fast.base_url, "cerebras")},
                  "strategy": "cost_optimized"}
        async with LLMRouter(config=config, ledger=ledger) as router:
            result = await router.generate("hi", max_tokens=10)
    assert result.provider == "cerebras" and result.fallback
    timed_out = result.attempts[0]
    assert timed_out.kind == "timeout" and timed_out.cost_basis == "gpu_seconds"
    assert timed_out.cost_usd == pytest.approx(timed_out.latency_ms / 1000 * 0.001, rel=0.05)
    [row] = rows(ledger)
    assert row["cost_basis"] == "gpu_seconds"
    assert row["cost_usd"] == pytest.approx(timed_out.cost_usd + result.cost_usd, abs=1e-12)
    ledger.close()
