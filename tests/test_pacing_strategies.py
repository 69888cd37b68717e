"""A paced budget's share of strong calls (``RouteRequest.strong_share``) as each strategy honours it."""

from __future__ import annotations

import random
from typing import Any

import pytest

from llmroute import InMemoryState, load_config
from llmroute.strategies import QualityAware, RouteRequest, StrongShare, build_strategy
from llmroute.strategies.balanced import goes_strong
from llmroute.strategies.quality_aware import MIN_ADAPT_SAMPLES

PROVIDERS = {
    "cerebras": {"base_url": "http://127.0.0.1:9/v1", "model": "c", "price_per_m": {"input": 0.10, "output": 0.10},
                 "quality": 2},
    "runpod": {"base_url": "http://127.0.0.1:9/v1", "model": "r", "price_per_m": {"input": 0.02, "output": 0.02}},
    "spare": {"base_url": "http://127.0.0.1:9/v1", "model": "s", "price_per_m": {"input": 0.05, "output": 0.05}},
}
WORDS = ["invoice", "lead", "contract", "summary", "meeting", "customer", "risk", "revenue", "budget", "team"]


def strategy(name: str, **extra: Any) -> Any:
    config = load_config({"providers": PROVIDERS, **extra})
    return build_strategy(name, config, InMemoryState({n: 1000.0 for n in PROVIDERS}))


def paced(share: float, scope: str = "all") -> RouteRequest:
    return RouteRequest(input_tokens=100, output_tokens=100, strong_share=StrongShare(share, scope))


@pytest.mark.parametrize("share", [0.0, 0.2, 0.37, 0.5, 0.8123, 0.999, 1.0])
def test_balanced_splits_exactly_at_a_paced_share_in_every_window(share: float) -> None:
    balanced = strategy("balanced")
    firsts = [balanced.order(paced(share))[0] for _ in range(1000)]
    for size in (7, 100):
        for start in range(0, len(firsts) - size, 13):
            strong = firsts[start:start + size].count("cerebras")
            assert int(size * share) <= strong <= -int(-size * share // 1), (size, start, strong)
    assert set(firsts) <= {"cerebras", "runpod"}  # the pair only; the third provider stays a fallback


def test_balanced_fallback_order_under_pacing_keeps_every_provider() -> None:
    balanced = strategy("balanced")
    orders = {tuple(balanced.order(paced(0.5))) for _ in range(4)}
    assert orders == {("cerebras", "runpod", "spare"), ("runpod", "cerebras", "spare")}


def test_each_scope_keeps_its_own_exact_split_when_interleaved() -> None:
    """Two paced budgets' requests alternating: each budget's split stays exact (one counter per scope)."""
    balanced = strategy("balanced")
    picks: dict[str, list[str]] = {"a": [], "b": []}
    for _ in range(100):
        picks["a"].append(balanced.order(paced(0.5, "a"))[0])
        picks["b"].append(balanced.order(paced(0.3, "b"))[0])
    assert picks["a"].count("cerebras") == 50 and picks["b"].count("cerebras") == 30


def test_without_a_paced_share_balanced_keeps_its_weights() -> None:
    balanced = strategy("balanced", balanced_weights={"runpod": 80, "cerebras": 20})
    firsts = [balanced.order(RouteRequest(100, 100))[0] for _ in range(100)]
    assert firsts.count("runpod") == 80 and firsts.count("cerebras") == 20
    assert balanced.state.next_count("balanced:paced:all") == 0  # the paced counter was never touched


def test_bresenham_rule_counts_exactly_from_any_start() -> None:
    for share in (0.1, 1 / 3, 0.75):
        for start in (0, 17, 10_001):
            assert sum(goes_strong(n, share) for n in range(start, start + 300)) == pytest.approx(300 * share, abs=1)


def test_quality_aware_follows_a_paced_share_on_a_warmed_window() -> None:
    qa = strategy("quality_aware", quality_aware={"target": {"strong_share": 0.5}, "adapt_window": 400})
    assert isinstance(qa, QualityAware)
    rng = random.Random(5)

    def prompt() -> str:
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 40)))
        if rng.random() < 0.2:
            text += f" If {rng.randint(2, 90)} units cost ${rng.randint(3, 500)}, what do {rng.randint(2, 50)} cost?"
        return text

    for _ in range(400):  # warm the window on this traffic at the configured share
        qa.route(RouteRequest(100, 100, prompt=prompt()))
    for share in (0.1, 0.3, 0.7):
        decisions = [qa.route(RouteRequest(100, 100, prompt=prompt(), strong_share=StrongShare(share, "all"))).decision
                     for _ in range(600)]
        assert decisions.count("strong") / len(decisions) == pytest.approx(share, abs=0.06), share
    assert qa.strong_share == 0.5  # the configured share is untouched: the override is per request


def test_quality_aware_extreme_shares_and_a_cold_window() -> None:
    qa = strategy("quality_aware", quality_aware={"target": {"strong_share": 0.5}, "adapt_window": 400})
    assert len(qa.window._sorted) < MIN_ADAPT_SAMPLES  # cold: the model's own quantiles decide
    model_low = qa.threshold(0.1)
    assert model_low == qa.model.threshold_for_share(0.1) and model_low > qa.threshold(0.9)
    texts = [f"{w} " * (i % 9 + 1) + "what is 17 * 23?" * (i % 3) for i, w in enumerate(WORDS * 3)]
    for share, tier in ((0.0, "weak"), (1.0, "strong")):
        assert {qa.route(RouteRequest(100, 100, prompt=t, strong_share=StrongShare(share, "x"))).decision
                for t in texts} == {tier}


@pytest.mark.parametrize("name", ["cost_optimized", "latency_optimized", "quality_optimized"])
def test_other_strategies_ignore_a_paced_share(name: str) -> None:
    s = strategy(name)
    assert s.order(paced(0.0)) == s.order(paced(1.0)) == s.order(RouteRequest(100, 100))
