"""Budget pacing through the real gateway, against the emulated providers: the share follows spend against the
path (time injected through the pacing gate's clock, so no sleeps), requests in a paced budget's scope follow
the share, tokens are counted as requests finish, /router/state shows the plan, and a config that cannot be
paced stops the gateway with a clear error."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from llmroute.budget_period import period_bounds
from llmroute.config import parse_config
from llmroute.errors import ConfigError
from llmroute.evaluation import measured_share
from llmroute.gateway.app import Gateway
from llmroute.gateway.pacing import PacingGate
from llmroute.pacing import PacingState
from llmroute.router import LLMRouter

from ..test_quality_report import synthetic_pairs, write_ledger
from .conftest import RunningGateway, start_gateway

HOUR_S, DAY_S = 3600.0, 86_400.0
PACING_KEYS = {f.name for f in fields(PacingState)} | {"ahead_usd"}


class Clock:
    """The pacing gate's clock, set by the test: time moves only when the test says so."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def serving(config: dict[str, Any], clock: Clock) -> AsyncIterator[tuple[Gateway, httpx.AsyncClient]]:
    """The gateway app on loopback, its pacing gate on ``clock``; a client for it."""
    router = LLMRouter(config=parse_config(config))
    gateway = Gateway(router)
    gateway.pacing = PacingGate(router, gateway.budgeting.budgets, clock=clock)
    runner = web.AppRunner(gateway.app(), access_log=None, shutdown_timeout=0.1)
    await runner.setup()  # on_startup: the budgets read the ledger, the pacing gate plans once at clock.now
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runner.addresses[0][1]}", timeout=10) as client:
            yield gateway, client
    finally:
        await runner.cleanup()


def paced_config(seed_config: dict[str, Any], tmp_path: Path, *budgets: dict[str, Any]) -> dict[str, Any]:
    """cerebras ($0.10/M, quality 2) is the strong provider, runpod ($0.02/M) the weak one."""
    return {**seed_config, "ledger": {"path": str(tmp_path / "ledger.sqlite3"), "flush_interval_s": 0.01},
            "budgets": list(budgets)}


async def strong_count(client: httpx.AsyncClient, n: int, tags: str | None = None, key: str | None = None) -> int:
    """Send ``n`` requests one after another; how many the strong provider served."""
    strong = 0
    headers = {**({"x-llmroute-tags": tags} if tags else {}), **({"Authorization": f"Bearer {key}"} if key else {})}
    for i in range(n):
        r = await client.post("/v1/chat/completions", headers=headers,
                              json={"model": "balanced", "max_tokens": 16,
                                    "messages": [{"role": "user", "content": f"Summarise lead {i}"}]})
        assert r.status_code == 200, r.text
        strong += r.headers["x-llmroute-provider"] == "cerebras"
    return strong


def split_of(share: float, n: int) -> set[int]:
    """What an exact split of ``n`` consecutive requests at ``share`` may hold: floor or ceil of n * share."""
    return {int(n * share), -int(-n * share // 1)}


def month_start() -> float:
    """The current month's start: the pacing clock stays in the period the budgets' totals are kept for."""
    return period_bounds("month", time.time())[0]


async def test_share_falls_when_spend_runs_ahead_and_rises_when_behind(
        seed_config: dict[str, Any], tmp_path: Path) -> None:
    start = month_start()
    clock = Clock(start + 1)
    config = paced_config(seed_config, tmp_path, {"name": "all", "usd": 0.01, "period": "month", "pacing": True,
                                                  "min_strong_share": 0.2, "max_strong_share": 0.8,
                                                  "pacing_horizon_s": 60})
    async with serving(config, clock) as (gateway, client):
        ctl = gateway.pacing.paced[0].controller
        assert ctl.state is not None and ctl.share == 0.8  # planned once at start-up, from the top of its bounds
        assert await strong_count(client, 40) == 32

        clock.now = start + HOUR_S  # an hour into the month, with 40 requests' spend: far ahead of the path
        state = gateway.pacing.update()["all"]
        assert state.spend_usd > 0 and state.spend_usd > 2 * state.target_usd, state
        assert 0.2 <= state.share < 0.35 and state.bound == "min_strong_share", state
        assert await strong_count(client, 100) in split_of(state.share, 100)
        body = (await client.get("/router/state")).json()
        pacing = body["budgets"]["all"]["pacing"]
        assert set(pacing) == PACING_KEYS and pacing["share"] == state.share and pacing["spend_usd"] == state.spend_usd

        clock.now = start + 20 * DAY_S  # twenty days in, the same spend is far behind the path
        state = gateway.pacing.update()["all"]
        assert state.spend_usd < state.target_usd / 2 and state.share == pytest.approx(0.8), state
        assert state.bound == "max_strong_share"
        assert await strong_count(client, 100) in split_of(state.share, 100)


async def test_tokens_are_counted_when_requests_finish_streamed_or_not(
        seed_config: dict[str, Any], tmp_path: Path) -> None:
    clock = Clock(month_start() + DAY_S)
    config = paced_config(seed_config, tmp_path, {"name": "all", "usd": 5, "pacing": True})
    async with serving(config, clock) as (gateway, client):
        paced = gateway.pacing.paced[0]
        state = gateway.router.state

        def counted() -> float:
            return state.spent(paced.tokens_key(clock.now))

        assert counted() == 0
        r = await client.post("/v1/chat/completions", json={"max_tokens": 16, "messages": [
            {"role": "user", "content": "Qualify this lead: Initech, 40 employees"}]})
        assert r.status_code == 200
        assert counted() == r.json()["usage"]["total_tokens"] > 0
        usage: dict[str, int] = {}
        async with client.stream("POST", "/v1/completions", json={
                "prompt": "Write a haiku about invoices", "max_tokens": 16, "stream": True,
                "stream_options": {"include_usage": True}}) as s:
            async for line in s.aiter_lines():
                if line.startswith("data: {"):
                    usage = orjson.loads(line[6:]).get("usage") or usage
        assert usage and counted() == r.json()["usage"]["total_tokens"] + usage["total_tokens"]
        gateway.pacing.update()
        assert gateway.pacing.paced[0].controller.state.tokens_per_day is not None  # the volume reached the plan


async def test_a_request_under_several_paced_budgets_gets_the_lowest_share(
        seed_config: dict[str, Any], tmp_path: Path) -> None:
    clock = Clock(month_start() + DAY_S)
    config = paced_config(seed_config, tmp_path,
                          {"name": "all", "usd": 5, "pacing": True, "max_strong_share": 0.8},
                          {"tag": "team=sales", "usd": 1, "pacing": True, "max_strong_share": 0.3},
                          {"key": "bot", "usd": 1, "pacing": True, "max_strong_share": 0.5},
                          {"tag": "team=ops", "usd": 1})  # not paced: no share of its own
    config["gateway"] = {"api_keys": [{"id": "bot", "key": "gw-bot-key-123456"},
                                      {"id": "app", "key": "gw-app-key-123456"}]}
    async with serving(config, clock) as (_, client):
        assert await strong_count(client, 50, tags="team=sales", key="gw-app-key-123456") == 15
        assert await strong_count(client, 50, key="gw-bot-key-123456") == 25
        assert await strong_count(client, 50, tags="team=sales", key="gw-bot-key-123456") == 15
        assert await strong_count(client, 50, key="gw-app-key-123456") == 40
        assert await strong_count(client, 50, tags="team=ops", key="gw-app-key-123456") == 40


async def test_measured_quality_is_a_floor_pacing_never_goes_below(
        seed_config: dict[str, Any], tmp_path: Path) -> None:
    pairs = [p for p in synthetic_pairs(400) if p.graded]
    for p in pairs:  # graded on this config's pair; their cost is not this test's (the budget would count it)
        p.reference_provider, p.candidate_provider = "cerebras", "runpod"
        p.shadow_cost_usd = p.judge_cost_usd = 0.0
    write_ledger(tmp_path / "ledger.sqlite3", pairs)
    measured = measured_share(pairs, 0.9, 100, providers=("cerebras", "runpod"))
    assert measured is not None and 0.05 < measured.share < 0.95
    start = month_start()
    clock = Clock(start + 1)
    config = paced_config(seed_config, tmp_path, {"name": "all", "usd": 0.01, "pacing": True,
                                                  "pacing_horizon_s": 60})
    config["quality_aware"] = {"target": {"min_quality": 0.9}}
    async with serving(config, clock) as (gateway, client):
        await strong_count(client, 40)
        clock.now = start + HOUR_S
        state = gateway.pacing.update()["all"]
        assert state.spend_usd > 2 * state.target_usd  # ahead, as above: without a floor the share would go to 0
        assert state.quality_floor_share == pytest.approx(measured.share) and state.bound == "quality_floor"
        assert state.share >= measured.share
        assert await strong_count(client, 100) in split_of(state.share, 100)


@pytest.mark.parametrize(("change", "why"), [
    (lambda c: (c["providers"].pop("runpod"), c.pop("balanced_weights")), "only one is configured"),
    (lambda c: c.update(quality_aware={"strong": "runpod", "weak": "cerebras"}), "is not dearer than the weak"),
    (lambda c: c["providers"]["runpod"].update(price_per_m=None, price_per_gpu_second=0.0004),
     "billed per GPU second"),
])
def test_a_budget_that_cannot_be_paced_is_a_clear_error(
        seed_config: dict[str, Any], tmp_path: Path, change: Callable[[dict[str, Any]], Any], why: str) -> None:
    config = paced_config(seed_config, tmp_path, {"usd": 1}, {"tag": "team=sales", "usd": 5, "pacing": True})
    change(config)
    with pytest.raises(ConfigError) as err:  # when the config is read: check-config says so too
        parse_config(config)
    assert err.value.key == "budgets.1.pacing" and "the budget 'tag:team=sales' cannot be paced" in str(err.value)
    assert why in str(err.value)


def test_served_gateway_shows_the_plan_and_refuses_an_unpaceable_config(
        seed_config: dict[str, Any], tmp_path: Path, gateway_factory: Callable[..., RunningGateway]) -> None:
    gateway = gateway_factory(paced_config(seed_config, tmp_path, {"name": "all", "usd": 3, "pacing": True,
                                                                   "min_strong_share": 0.1, "max_strong_share": 0.6}))
    body = httpx.get(gateway.base_url + "/router/state", timeout=10).json()
    pacing = body["budgets"]["all"]["pacing"]
    assert set(pacing) == PACING_KEYS and pacing["share"] == 0.6 and pacing["budget_usd"] == 3
    bad = paced_config(seed_config, tmp_path, {"name": "all", "usd": 3, "pacing": True})
    bad["quality_aware"] = {"strong": "runpod", "weak": "cerebras"}
    with pytest.raises(RuntimeError) as err:
        start_gateway(tmp_path, bad)
    assert "key 'budgets.0.pacing'" in str(err.value) and "the budget 'all' cannot be paced" in str(err.value)
