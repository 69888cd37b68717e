"""Live spend in the library: a router without a ledger counts its requests (streams and failures included)
per tag and provider, routers sharing a state share one view, a new UTC day starts empty while the period
goes on, and the metrics export spend, budget left and pacing state."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmroute import LLMRouter
from llmroute.budget_period import period_bounds
from llmroute.config.spend import SpendConfig
from llmroute.emulator import EmulatorThread
from llmroute.errors import AllProvidersFailed
from llmroute.gateway.metrics import Metrics
from llmroute.ledger import RequestContext
from llmroute.result import Attempt
from llmroute.spend import OTHER, LiveSpend
from llmroute.state import InMemoryState


async def test_a_router_without_a_ledger_counts_answers_streams_and_failures(
    seed_config: dict[str, Any], emus: dict[str, EmulatorThread],
) -> None:
    async with LLMRouter(config=seed_config, ledger=False) as router:
        shared = LLMRouter(config=seed_config, ledger=False, state=router.state)  # as the gateway's cheapest router
        answered = [await router.chat([{"role": "user", "content": "hi"}], max_tokens=5, tags={"team": "sales"})
                    for _ in range(3)]
        stream = router.stream([{"role": "user", "content": "hi"}], max_tokens=5, tags={"team": "ops"})
        async for _ in stream:
            pass
        answered.append(stream.result)
        answered.append(await shared.chat([{"role": "user", "content": "hi"}], max_tokens=5, tags={"team": "ops"}))
        emus["runpod"].set_faults({"500": 1.0})
        emus["cerebras"].set_faults({"500": 1.0})
        with pytest.raises(AllProvidersFailed):
            await router.chat([{"role": "user", "content": "hi"}], max_tokens=5, tags={"team": "ops"})
        view = router.spend.snapshot()["today"] if router.spend else {}
        await shared.aclose()
    cost = sum(a.cost_usd for r in answered for a in r.attempts)
    assert shared.spend is router.spend
    assert view["all"]["requests"] == 6 and view["all"]["cost_usd"] == pytest.approx(cost, abs=1e-8)
    assert view["tags"]["team=sales"]["requests"] == 3 and view["tags"]["team=ops"]["requests"] == 3
    assert view["keys"] == {}
    by_provider: dict[str, float] = {}
    for result in answered:
        for a in result.attempts:
            by_provider[a.provider] = by_provider.get(a.provider, 0.0) + a.cost_usd
    for name, usd in by_provider.items():
        assert view["providers"][name]["cost_usd"] == pytest.approx(usd, abs=1e-8)


def attempt(provider: str, usd: float) -> Attempt:
    return Attempt(provider, "m", True, 10.0, prompt_tokens=3, completion_tokens=4, cost_usd=usd)


def test_a_new_day_starts_empty_and_the_period_goes_on() -> None:
    day_start, day_end = period_bounds("day", 1_700_000_000.0)
    now = [day_end - 1.0]
    spend = LiveSpend(InMemoryState({}), SpendConfig(period="month"), clock=lambda: now[0])
    spend.record([attempt("a", 0.5)], RequestContext(key_id="k", tags=["t"]), 7)
    now[0] = day_end + 1.0  # past midnight UTC, same month
    spend.record([attempt("a", 0.25)], RequestContext(key_id="k", tags=["t"]), 7)
    view = spend.snapshot()
    assert view["today"]["start_ts"] == day_end
    assert view["today"]["keys"]["k"] == {"cost_usd": 0.25, "tokens": 7, "requests": 1}
    assert view["this_period"]["keys"]["k"] == {"cost_usd": 0.75, "tokens": 14, "requests": 2}
    assert view["this_period"]["providers"]["a"]["cost_usd"] == 0.75


def test_names_are_capped_and_cut() -> None:
    spend = LiveSpend(InMemoryState({}), SpendConfig(max_series=2))
    for i in range(50):
        spend.record([attempt("a", 0.01)], RequestContext(tags=[f"user-chosen-{i}" + "x" * 500]), 7)
    tags = spend.snapshot()["today"]["tags"]
    assert len(tags) == 3 and tags[OTHER]["requests"] == 48
    assert all(len(name) <= 200 for name in tags)


def test_metrics_export_spend_budget_left_and_pacing() -> None:
    metrics = Metrics()
    spend = LiveSpend(InMemoryState({}), SpendConfig())
    spend.record([attempt("a", 0.5)], RequestContext(key_id='we"ird\nkey', tags=["t"]), 7)
    metrics.observe_spend(spend.snapshot())
    pacing = {"target_usd": 10.0, "spend_usd": 12.0, "share": 0.15, "projected_end_usd": 310.0, "bound": "min"}
    metrics.observe_budgets({"all": {"usd": 300.0, "spent_usd": 12.0, "reserved_usd": 0.5, "left_usd": 287.5,
                                     "pacing": pacing}})
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(metrics.render().decode()) for s in family.samples}
    assert samples[("llmroute_spend_usd", (("dimension", "key"), ("name", 'we"ird\nkey'), ("window", "day")))] == 0.5
    assert samples[("llmroute_spend_requests", (("dimension", "all"), ("name", "all"), ("window", "period")))] == 1
    assert samples[("llmroute_budget_left_usd", (("budget", "all"),))] == 287.5
    assert samples[("llmroute_budget_pacing_target_usd", (("budget", "all"),))] == 10.0
    assert samples[("llmroute_budget_pacing_share", (("budget", "all"),))] == 0.15
    assert samples[("llmroute_budget_pacing_projected_end_usd", (("budget", "all"),))] == 310.0
