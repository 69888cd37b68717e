from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from llmroute import InMemoryState, RoutingStrategy, load_config
from llmroute.strategies import RouteRequest, build_strategy, smooth_weighted_schedule


def config(**extra: Any) -> Any:
    providers = {
        "cerebras": {"base_url": "http://x/v1", "model": "c", "price_per_m": {"input": 0.10, "output": 0.10},
                     "latency_ms": 945, "quality": 2},
        "runpod": {"base_url": "http://y/v1", "model": "r", "price_per_m": {"input": 0.02, "output": 0.02},
                   "latency_ms": 1200, "quality": 1},
    }
    providers.update(extra.pop("providers", {}))
    return load_config({"providers": providers, **extra})


def state_for(cfg: Any) -> InMemoryState:
    return InMemoryState({n: p.latency_ms for n, p in cfg.providers.items()}, alpha=cfg.latency_alpha)


REQ = RouteRequest(input_tokens=400, output_tokens=200)


def test_enum_values_are_the_seed_spellings() -> None:
    assert [s.value for s in RoutingStrategy] == ["cost_optimized", "latency_optimized", "quality_optimized", "balanced",
                                                  "quality_aware"]
    assert RoutingStrategy("balanced") is RoutingStrategy.BALANCED


@pytest.mark.parametrize("weights", [{"runpod": 80, "cerebras": 20}, {"runpod": 70, "cerebras": 30}, {"runpod": 1, "cerebras": 1}])
def test_balanced_split_is_exact_in_every_window_of_100(weights: dict[str, int]) -> None:
    cfg = config(balanced_weights=weights)
    strategy = build_strategy("balanced", cfg, state_for(cfg))
    firsts = [strategy.order(REQ)[0] for _ in range(1000)]
    total = sum(weights.values())
    for start in range(0, 901):
        window = Counter(firsts[start:start + 100])
        assert window["runpod"] == 100 * weights["runpod"] // total, start
        assert window["cerebras"] == 100 * weights["cerebras"] // total, start


def test_balanced_default_is_80_20_and_fallback_follows() -> None:
    cfg = config()
    strategy = build_strategy("balanced", cfg, state_for(cfg))
    orders = [strategy.order(REQ) for _ in range(100)]
    assert Counter(o[0] for o in orders) == {"runpod": 80, "cerebras": 20}
    assert all(sorted(o) == ["cerebras", "runpod"] for o in orders)


def test_balanced_spreads_picks_smoothly() -> None:
    schedule = smooth_weighted_schedule({"a": 4, "b": 1})
    assert len(schedule) == 5 and schedule.count("b") == 1
    # Three providers with fractional weights reduce to a small exact cycle.
    schedule = smooth_weighted_schedule({"a": 80, "b": 20 / 3, "c": 20 / 3})
    assert Counter(schedule) == {"a": 12, "b": 1, "c": 1}


def test_three_providers_all_take_part() -> None:
    third = {"base_url": "http://z/v1", "model": "z", "price_per_m": {"input": 0.5, "output": 1.5},
             "latency_ms": 300, "quality": 3}
    cfg = config(providers={"big": third}, balanced_weights={"runpod": 70, "cerebras": 20, "big": 10})
    state = state_for(cfg)
    for name in RoutingStrategy:
        order = build_strategy(name, cfg, state).order(REQ)
        assert sorted(order) == ["big", "cerebras", "runpod"], name
    assert build_strategy("quality_optimized", cfg, state).order(REQ) == ["big", "cerebras", "runpod"]
    assert build_strategy("latency_optimized", cfg, state).order(REQ) == ["big", "cerebras", "runpod"]
    assert build_strategy("cost_optimized", cfg, state).order(REQ) == ["runpod", "cerebras", "big"]
    firsts = Counter(build_strategy("balanced", cfg, state).order(REQ)[0] for _ in range(100))
    assert firsts == {"runpod": 70, "cerebras": 20, "big": 10}


def test_cost_optimized_uses_the_input_output_mix() -> None:
    # A is cheap for input, B is cheap for output: the request's mix decides.
    cfg = config(providers={
        "cerebras": {"base_url": "http://x/v1", "model": "a", "price_per_m": {"input": 0.05, "output": 0.50}},
        "runpod": {"base_url": "http://y/v1", "model": "b", "price_per_m": {"input": 0.30, "output": 0.10}},
    })
    strategy = build_strategy("cost_optimized", cfg, state_for(cfg))
    assert strategy.order(RouteRequest(input_tokens=5000, output_tokens=50))[0] == "cerebras"
    assert strategy.order(RouteRequest(input_tokens=50, output_tokens=5000))[0] == "runpod"


def test_latency_estimate_moves_with_measurements() -> None:
    cfg = config()
    state = state_for(cfg)
    strategy = build_strategy("latency_optimized", cfg, state)
    assert strategy.order(REQ)[0] == "cerebras"  # prior: 945 < 1200
    assert state.latency_estimate_ms("cerebras") == 945
    state.record_success("cerebras", 2000)
    assert state.latency_estimate_ms("cerebras") == 2000  # first sample replaces the prior
    state.record_success("runpod", 300)
    assert strategy.order(REQ)[0] == "runpod"
    for _ in range(20):
        state.record_success("runpod", 3000)
    assert 2000 < state.latency_estimate_ms("runpod") <= 3000
    assert strategy.order(REQ)[0] == "cerebras"


def test_ewma_formula() -> None:
    state = InMemoryState({"a": 100.0}, alpha=0.5)
    state.record_success("a", 200)
    state.record_success("a", 100)
    assert state.latency_estimate_ms("a") == pytest.approx(150.0)
    state.record_failure("a", "server_error", 5.0)  # fast errors do not make a provider look fast
    assert state.latency_estimate_ms("a") == pytest.approx(150.0)
    state.record_failure("a", "timeout", 350.0)  # a timeout does make it look slow
    assert state.latency_estimate_ms("a") == pytest.approx(250.0)
    assert state.snapshot()["a"].failures_by_kind == {"server_error": 1, "timeout": 1}


def test_quality_ties_broken_by_measured_latency() -> None:
    cfg = config(providers={"runpod": {"base_url": "http://y/v1", "model": "r",
                                       "price_per_m": {"input": 0.02, "output": 0.02}, "latency_ms": 1200, "quality": 2}})
    state = state_for(cfg)
    strategy = build_strategy("quality_optimized", cfg, state)
    assert strategy.order(REQ) == ["cerebras", "runpod"]
    state.record_success("cerebras", 1500)
    state.record_success("runpod", 400)
    assert strategy.order(REQ) == ["runpod", "cerebras"]


def test_unknown_strategy_lists_valid_names() -> None:
    cfg = config()
    with pytest.raises(ValueError, match="valid: cost_optimized, latency_optimized"):
        build_strategy("fastest", cfg, state_for(cfg))
