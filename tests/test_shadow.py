"""Shadow evaluation in the router: emulated providers over real HTTP, a real SQLite ledger."""

from __future__ import annotations

import asyncio
import logging
import random
import threading
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
from llmroute.state import InMemoryState
from llmroute.strategies.quality_aware import QualityAware, load_quality_model

from .conftest import chat_upstream, emulator, provider

PROMPT = "Qualify this lead: TechCorp, 500 employees, SaaS industry"
KEYS = {"cerebras": "sk-cerebras-secret-0123456789", "runpod": "rp-runpod-secret-9876543210"}


def shadow_config(seed_config: dict[str, Any], tmp_path: Path, **shadow: Any) -> dict[str, Any]:
    """The seed pair, cerebras the reference and runpod the candidate, every answer shadowed."""
    config = {**seed_config, "ledger": {"path": str(tmp_path / "ledger.sqlite3"), "flush_interval_s": 0.01}}
    config["shadow"] = {"rate": 1.0, "grader": "exact", "reference": "cerebras", "candidate": "runpod", **shadow}
    return config


def stored_pairs(tmp_path: Path) -> list[GradedPair]:
    store = open_store(str(tmp_path / "ledger.sqlite3"), readonly=True)
    try:
        return load_pairs(store)
    finally:
        store.close()


def ledger_bytes(tmp_path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in tmp_path.glob("ledger.sqlite3*"))


async def ask(router: LLMRouter, count: int, **params: Any) -> list[Any]:
    params.setdefault("max_tokens", 20)
    return await asyncio.gather(*(router.chat([{"role": "user", "content": f"{PROMPT} #{i}"}], **params)
                                  for i in range(count)))


# -- the budget primitive and the measured share (no shadow calls) -------------------------------


def test_reserve_never_passes_the_limit_under_threads() -> None:
    state = InMemoryState({})
    granted: list[float] = []

    def spend() -> None:
        for _ in range(500):
            if state.reserve("day", 0.003, 1.0):
                granted.append(0.003)

    threads = [threading.Thread(target=spend) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) <= 1.0 + 1e-9
    assert len(granted) == int(1.0 / 0.003)
    state.settle("day", 0.003, 0.001)  # what one call really cost frees the rest of its reservation
    assert state.spent("day") == pytest.approx(len(granted) * 0.003 - 0.002)
    assert state.reserve("day", 0.0015, 1.0)


def test_quality_aware_takes_a_share_it_is_given(seed_config: dict[str, Any]) -> None:
    config = load_config({**seed_config, "quality_aware": {"target": {"strong_share": 0.2}}})
    strategy = QualityAware(config, InMemoryState({}))
    before = strategy.threshold()
    strategy.set_strong_share(0.6)
    assert strategy.strong_share == 0.6
    assert strategy.threshold() < before
    assert strategy.threshold() == strategy.model.threshold_for_share(0.6)
    with pytest.raises(ValueError):
        strategy.set_strong_share(1.5)


# -- shadow calls ------------------------------------------------------------------------------------


async def test_off_by_default_and_many_answers_not_eligible(seed_config: dict[str, Any], tmp_path: Path,
                                                         emus: dict[str, EmulatorThread]) -> None:
    async with LLMRouter(config={**seed_config, "ledger": {"enabled": False}}) as router:
        assert router.shadow is None
    async with LLMRouter(config=shadow_config(seed_config, tmp_path)) as router:
        await ask(router, 3, n=2)
        await router.shadow.drain()
        assert router.shadow.sampled == 0


async def test_pairs_both_directions_without_text_or_keys(seed_config: dict[str, Any], tmp_path: Path,
                                                        emus: dict[str, EmulatorThread],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for name, key in KEYS.items():
        seed_config["providers"][name]["api_key"] = key
    seed_config["balanced_weights"] = {"runpod": 50, "cerebras": 50}
    before = {name: emu.emulator.stats["requests"] for name, emu in emus.items()}
    async with LLMRouter(config=shadow_config(seed_config, tmp_path)) as router:
        results = await ask(router, 10)
        await router.shadow.drain()
        assert router.shadow.sampled == router.shadow.completed == 10
    served = {r.provider for r in results}
    assert served == {"cerebras", "runpod"}
    # Every request reached both tiers: the one that answered, and the shadow call to the other.
    assert sum(emu.emulator.stats["requests"] - before[name] for name, emu in emus.items()) == 20
    pairs = stored_pairs(tmp_path)
    assert sorted(p.request_id for p in pairs) == sorted(r.request_id for r in results)
    by_id = {r.request_id: r for r in results}
    for pair in pairs:
        result = by_id[pair.request_id]
        assert pair.served_provider == result.provider
        assert pair.served_tier == ("reference" if result.provider == "cerebras" else "candidate")
        assert (pair.reference_provider, pair.candidate_provider, pair.grader) == ("cerebras", "runpod", "exact")
        assert pair.strategy == "balanced" and pair.source == "shadow"
        assert pair.reference_grade == 1.0 and pair.candidate_grade is not None
        assert pair.shadow_cost_usd and pair.shadow_cost_usd > 0
        assert pair.prompt is None and pair.reference_answer is None and pair.candidate_answer is None
    stored = ledger_bytes(tmp_path)
    assert b"TechCorp" not in stored  # store_text is off: not a word of the prompt...
    assert not any(r.text.encode() in stored for r in results)  # ...nor of an answer
    for key in KEYS.values():
        assert key.encode() not in stored
        assert key not in caplog.text


async def test_store_text_keeps_the_prompt_and_both_answers(seed_config: dict[str, Any], tmp_path: Path,
                                                           emus: dict[str, EmulatorThread]) -> None:
    seed_config["balanced_weights"] = {"runpod": 100, "cerebras": 0}
    async with LLMRouter(config=shadow_config(seed_config, tmp_path, store_text=True)) as router:
        [result] = await ask(router, 1)
        await router.shadow.drain()
    [pair] = stored_pairs(tmp_path)
    assert pair.prompt == f"{PROMPT} #0"
    assert pair.served_tier == "candidate" and pair.candidate_answer == result.text
    assert pair.reference_answer and pair.reference_answer != result.text


async def test_a_stream_is_shadowed_from_its_assembled_answer(seed_config: dict[str, Any], tmp_path: Path,
                                                             emus: dict[str, EmulatorThread]) -> None:
    seed_config["balanced_weights"] = {"runpod": 100, "cerebras": 0}
    async with LLMRouter(config=shadow_config(seed_config, tmp_path, store_text=True)) as router:
        stream = router.stream([{"role": "user", "content": PROMPT}], max_tokens=30)
        parts = [chunk["choices"][0]["delta"].get("content") or "" async for chunk in stream if chunk.get("choices")]
        await router.shadow.drain()
    [pair] = stored_pairs(tmp_path)
    assert pair.request_id == stream.request_id and pair.served_provider == "runpod"
    assert pair.candidate_answer == "".join(parts) != ""
    assert pair.reference_answer  # the reference was asked without streaming, and answered
    assert pair.shadow_cost_usd and pair.shadow_cost_usd > 0


async def test_open_breaker_or_no_headroom_is_not_shadowed(seed_config: dict[str, Any], tmp_path: Path,
                                                           emus: dict[str, EmulatorThread]) -> None:
    seed_config["balanced_weights"] = {"runpod": 100, "cerebras": 0}
    cerebras = emus["cerebras"].emulator
    async with LLMRouter(config=shadow_config(seed_config, tmp_path)) as router:
        before = cerebras.stats["requests"]
        router.state.breaker("cerebras").force(False, "test: taken out")
        await ask(router, 3)
        await router.shadow.drain()
        assert router.shadow.dropped == {"circuit_open": 3}
        router.state.breaker("cerebras").force(True, "test: back")
        # A rate limit with room for a user request but none to spare for measuring.
        router.state.ratelimit("cerebras").update({"x-ratelimit-remaining-tokens-minute": "60",
                                                   "x-ratelimit-reset-tokens-minute": "60s"})
        await ask(router, 2)
        await router.shadow.drain()
        assert router.shadow.dropped == {"circuit_open": 3, "rate_limit_headroom": 2}
        assert cerebras.stats["requests"] == before  # measurement never took the reference's capacity
    assert stored_pairs(tmp_path) == []


class Gate:
    """A provider stand-in that holds every answer until the test opens it (a deterministic slow upstream)."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.arrived = 0
        self.arrival = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.arrived += 1
        self.arrival.set()
        await self.open.wait()
        return web.json_response({
            "id": "chatcmpl-gate", "object": "chat.completion", "created": 1, "model": "gate",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "gated answer"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
        })


@pytest.fixture
async def gate() -> AsyncIterator[tuple[Gate, str]]:
    gate = Gate()
    async with chat_upstream(gate.handle) as base_url:
        yield gate, base_url
        gate.open.set()


def gated_config(seed_config: dict[str, Any], tmp_path: Path, base_url: str, **shadow: Any) -> dict[str, Any]:
    """runpod serves; the reference is the gate."""
    seed_config["providers"]["gate"] = {**provider(base_url, "cerebras"), "model": "gate"}
    seed_config["balanced_weights"] = {"runpod": 100, "cerebras": 0, "gate": 0}
    return shadow_config(seed_config, tmp_path, reference="gate", **shadow)


async def test_a_full_queue_drops_and_counts(seed_config: dict[str, Any], tmp_path: Path,
                                             emus: dict[str, EmulatorThread], gate: tuple[Gate, str],
                                             caplog: pytest.LogCaptureFixture) -> None:
    upstream, base_url = gate
    config = gated_config(seed_config, tmp_path, base_url, max_in_flight=1, max_queued=2)
    async with LLMRouter(config=config) as router:
        results = await ask(router, 6)  # answered at once: shadow work never holds a client up
        assert all(r.provider == "runpod" for r in results)
        shadow = router.shadow
        state = shadow.snapshot()
        assert (state["sampled"], state["in_flight"], state["queued"]) == (6, 1, 2)
        assert shadow.dropped == {"queue_full": 3}
        assert "shadow evaluation dropped sampled requests (queue_full 1)" in caplog.text
        upstream.open.set()
        await shadow.drain()
        assert shadow.completed == 3 and upstream.arrived == 3
    assert len(stored_pairs(tmp_path)) == 3


async def test_closing_cancels_work_in_flight_within_a_bound(seed_config: dict[str, Any], tmp_path: Path,
                                                             emus: dict[str, EmulatorThread],
                                                             gate: tuple[Gate, str]) -> None:
    upstream, base_url = gate
    config = gated_config(seed_config, tmp_path, base_url, max_in_flight=2, max_queued=4)
    router = LLMRouter(config=config)
    await ask(router, 4)
    await upstream.arrival.wait()
    await router.shadow.aclose(timeout_s=0.05)  # the gate never opens: both calls in flight are cancelled
    assert router.shadow.dropped == {"shutdown": 2}
    await router.aclose()
    pairs = stored_pairs(tmp_path)
    assert len(pairs) == 2
    assert all(p.reference_grade is None and p.note and p.note.startswith("cancelled") for p in pairs)


async def test_the_daily_budget_holds_under_concurrency(seed_config: dict[str, Any], tmp_path: Path,
                                                        emus: dict[str, EmulatorThread]) -> None:
    seed_config["balanced_weights"] = {"runpod": 50, "cerebras": 50}
    budget = 3e-4  # a few shadow calls and their judge calls (both orders), for 40 sampled requests
    config = shadow_config(seed_config, tmp_path, grader="judge", max_usd_per_day=budget, max_in_flight=8,
                           max_queued=64)
    config["judge"] = {"provider": "cerebras", "max_tokens": 40}
    async with LLMRouter(config=config) as router:
        await ask(router, 40)
        await router.shadow.drain()
        shadow = router.shadow
        assert shadow.dropped.get("budget", 0) > 0
        assert shadow.completed > 0
        assert shadow.spent_today_usd() <= budget
    pairs = stored_pairs(tmp_path)
    spent = sum((p.shadow_cost_usd or 0) + (p.judge_cost_usd or 0) for p in pairs)
    assert 0 < spent <= budget
    assert any(p.judge_cost_usd for p in pairs)  # judge spend counts against the same cap

    async with LLMRouter(config=config) as router:  # a restart picks up today's spend from the ledger
        assert router.shadow.spent_today_usd() == pytest.approx(spent)
        assert router.shadow.budget_left_usd() == pytest.approx(budget - spent)


async def test_a_failing_or_garbled_judge_leaves_pairs_ungraded(seed_config: dict[str, Any], tmp_path: Path,
                                                                emus: dict[str, EmulatorThread]) -> None:
    seed_config["balanced_weights"] = {"runpod": 100, "cerebras": 0}
    with emulator("cerebras") as judge_emu:
        seed_config["providers"]["judge"] = provider(judge_emu.base_url, "cerebras")
        config = shadow_config(seed_config, tmp_path, grader="judge")
        config["judge"] = {"provider": "judge", "max_tokens": 30}
        async with LLMRouter(config=config) as router:
            await ask(router, 2)  # the emulator's reply is words, not a verdict: unparsed
            await router.shadow.drain()
            judge_emu.set_faults({"500": 1.0})
            await ask(router, 2)  # the judge fails outright
            await router.shadow.drain()
    pairs = stored_pairs(tmp_path)
    assert len(pairs) == 4
    for pair in pairs:
        assert pair.grader == "judge"
        assert pair.reference_grade is None and pair.candidate_grade is None and pair.note
        assert pair.shadow_cost_usd and pair.shadow_cost_usd > 0  # the shadow call is still accounted for
    assert sum(1 for p in pairs if p.judge_cost_usd) >= 2  # a garbled verdict was still paid for


async def test_drift_alarm_and_live_estimate(seed_config: dict[str, Any], tmp_path: Path,
                                             emus: dict[str, EmulatorThread],
                                             caplog: pytest.LogCaptureFixture) -> None:
    seed_config["balanced_weights"] = {"runpod": 100, "cerebras": 0}
    config = shadow_config(seed_config, tmp_path, min_pairs=5, window=50, alert_below=0.95)
    estimates = []
    async with LLMRouter(config=config) as router:
        router.shadow.on_estimate = estimates.append
        await ask(router, 8)  # the two emulators never answer alike: exact agreement is about 0
        await router.shadow.drain()
        estimate = router.shadow.estimate
        assert estimate is not None and estimate.pairs == 8 and estimates[-1] == estimate
        assert estimate.high < 0.95
        assert router.shadow.snapshot()["retained"]["pairs"] == 8
    assert "quality drift" in caplog.text


async def test_sampling_follows_the_rate(seed_config: dict[str, Any], tmp_path: Path,
                                         emus: dict[str, EmulatorThread]) -> None:
    async with LLMRouter(config=shadow_config(seed_config, tmp_path, rate=0.3)) as router:
        router.shadow.rng = random.Random(7)
        for i in range(30):
            await router.chat([{"role": "user", "content": f"q{i}"}], max_tokens=5)
        await router.shadow.drain()
        replica = random.Random(7)
        assert router.shadow.sampled == sum(replica.random() < 0.3 for _ in range(30)) > 0


# -- min_quality from the measured curve ---------------------------------------------------------


def synthetic_pairs(count: int) -> list[GradedPair]:
    """quality_aware pairs where the weak tier fails the hardest prompts (score above 0.6)."""
    rng = random.Random(3)
    pairs = []
    for i in range(count):
        score = rng.random()
        pairs.append(GradedPair(
            ts=time.time() - 60, request_id=f"r{i}", route=None, strategy="quality_aware", tags=[], key_id=None,
            quality_score=score, route_decision="weak", served_provider="runpod", reference_provider="cerebras",
            candidate_provider="runpod", served_tier="candidate", grader="exact", reference_grade=1.0,
            candidate_grade=0.0 if score > 0.6 else 1.0, note=None, shadow_cost_usd=1e-6, judge_cost_usd=None,
        ))
    return pairs


async def write_pairs(config: dict[str, Any], pairs: list[GradedPair]) -> None:
    router = LLMRouter(config={**config, "quality_aware": {"target": {"strong_share": 0.2}}})
    for pair in pairs:
        router.ledger.record_pair(pair)
    await router.aclose()


@pytest.mark.parametrize("count", [40, 200])
async def test_min_quality_from_the_measured_lower_bound(seed_config: dict[str, Any], tmp_path: Path, count: int,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="llmroute")
    config = {**seed_config, "ledger": {"path": str(tmp_path / "ledger.sqlite3")}}
    pairs = synthetic_pairs(count)
    await write_pairs(config, pairs)
    config = {**config, "strategy": "quality_aware", "quality_aware": {"target": {"min_quality": 0.9}},
              "shadow": {"min_pairs": 100}}
    async with LLMRouter(config=config) as router:
        strategy = router.strategy("quality_aware")
        model_share = load_quality_model(None).share_for_quality(0.9)
        if count < 100:
            assert strategy.strong_share == model_share
            assert "quality not measured on your traffic" in caplog.text
        else:
            expected = share_for_quality([p.quality_score for p in pairs], [p.candidate_grade for p in pairs],
                                         [p.reference_grade for p in pairs], 0.9)
            assert expected is not None and expected != model_share
            assert strategy.strong_share == expected
            assert strategy.model_threshold == strategy.model.threshold_for_share(expected)
            assert f"from {count} graded pairs" in caplog.text and "lower bound" in caplog.text



async def test_start_up_reads_a_bounded_number_of_pairs_but_all_of_todays_spend(
        seed_config: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A busy ledger must not make start-up slow, nor let a restart forget what measuring spent today."""
    import llmroute.router

    monkeypatch.setattr(llmroute.router, "MEASURED_PAIRS", 10)
    config = shadow_config(seed_config, tmp_path, max_usd_per_day=1.0)
    pairs = synthetic_pairs(60)
    for i, pair in enumerate(pairs):
        pair.source, pair.ts, pair.shadow_cost_usd, pair.judge_cost_usd = "shadow", time.time() - 600 + i, 0.01, 0.002
    await write_pairs({k: v for k, v in config.items() if k != "shadow"}, pairs)
    store = open_store(str(tmp_path / "ledger.sqlite3"), readonly=True)
    try:
        latest = load_pairs(store, latest=10)
    finally:
        store.close()
    assert [p.request_id for p in latest] == [p.request_id for p in pairs[-10:]]
    async with LLMRouter(config=config) as router:
        assert router.shadow.spent_today_usd() == pytest.approx(60 * 0.012)
        assert router.shadow.budget_left_usd() == pytest.approx(1.0 - 60 * 0.012)
        assert router.shadow.drift.estimate is None or router.shadow.drift.estimate.pairs <= 10
