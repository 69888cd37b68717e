"""Budget periods, spend paths and the pacing controller; the month simulation is benchmarks/pacing.py, run small."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from llmroute.budget_period import (
    DAY_S,
    SpendPath,
    period_bounds,
    retry_after_s,
    seconds_left,
)
from llmroute.pacing import PacingController, SpendCap

BUSINESS = [1.0] * 8 + [3.0] * 10 + [1.0] * 6


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def bench():  # type: ignore[no-untyped-def]
    """The benchmark's simulation, loaded from its file so the test runs the same code, only smaller."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "pacing.py"
    spec = importlib.util.spec_from_file_location("pacing_benchmark", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("period", "now", "start", "end"), [
    ("month", ts(2024, 1, 31, 23, 59, 59), ts(2024, 1, 1), ts(2024, 2, 1)),
    ("month", ts(2024, 2, 1), ts(2024, 2, 1), ts(2024, 3, 1)),  # the first instant belongs to the new month
    ("month", ts(2024, 12, 31, 23, 59, 59) + 0.5, ts(2024, 12, 1), ts(2025, 1, 1)),  # Dec -> Jan
    ("month", ts(2025, 1, 1), ts(2025, 1, 1), ts(2025, 2, 1)),
    ("month", ts(2024, 2, 29, 12), ts(2024, 2, 1), ts(2024, 3, 1)),  # leap year: 29 days
    ("month", ts(2023, 2, 28, 23, 59, 59), ts(2023, 2, 1), ts(2023, 3, 1)),  # common year: 28 days
    ("week", ts(2024, 3, 3, 23, 59, 59), ts(2024, 2, 26), ts(2024, 3, 4)),  # Sunday, across Feb 29
    ("week", ts(2024, 3, 4), ts(2024, 3, 4), ts(2024, 3, 11)),  # Monday 00:00 starts the week
    ("week", ts(2024, 12, 31, 8), ts(2024, 12, 30), ts(2025, 1, 6)),  # a week across the year end
    ("day", ts(2024, 2, 29, 23, 59, 59), ts(2024, 2, 29), ts(2024, 3, 1)),
    ("day", ts(2024, 3, 1), ts(2024, 3, 1), ts(2024, 3, 2)),
])
def test_period_bounds_at_edges(period: str, now: float, start: float, end: float) -> None:
    assert period_bounds(period, now) == (start, end)  # type: ignore[arg-type]


def test_month_lengths_follow_the_calendar() -> None:
    lengths = {m: (lambda b: (b[1] - b[0]) / DAY_S)(period_bounds("month", ts(2024, m, 15))) for m in range(1, 13)}
    assert lengths == {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}


def test_bad_period_or_time_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="day, week, month"):
        period_bounds("year", 0.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        period_bounds("day", math.nan)


@pytest.mark.parametrize(("period", "now", "expected"), [
    ("month", ts(2025, 1, 31, 23, 59, 59) + 0.2, 1),  # 0.8 s left: rounded up, so the client lands in February
    ("month", ts(2025, 1, 31, 23, 59, 59) + 0.999, 1),  # never 0
    ("month", ts(2025, 1, 1), 31 * 86_400),
    ("month", ts(2024, 2, 28, 12), 36 * 3600),  # Feb 29 still to come
    ("week", ts(2024, 3, 3, 23), 3600),
    ("day", ts(2024, 3, 1, 6, 30), 17 * 3600 + 1800),
])
def test_retry_after_is_the_time_to_the_period_end(period: str, now: float, expected: int) -> None:
    assert retry_after_s(period, now) == expected  # type: ignore[arg-type]
    assert SpendCap(1.0, period).retry_after_s(now) == expected  # type: ignore[arg-type]
    assert expected - 1 < seconds_left(period, now) <= expected  # type: ignore[arg-type]


@pytest.mark.parametrize("weights", [None, BUSINESS])
@pytest.mark.parametrize("month", [(2024, 2), (2024, 12), (2025, 2)])
def test_path_spends_the_whole_budget_by_the_period_end(weights: list[float] | None, month: tuple[int, int]) -> None:
    path = SpendPath(weights)
    start, end = period_bounds("month", ts(*month, 10))
    assert path.fraction(start, end, start) == 0.0
    assert path.target_usd(300.0, "month", end - 1e-3) == pytest.approx(300.0, abs=1e-6)
    assert path.fraction(start, end, end) == 1.0
    samples = [path.fraction(start, end, t) for t in range(int(start), int(end) + 1, 1800)]
    assert samples == sorted(samples)  # never spends backwards
    days = round((end - start) / DAY_S)
    for day in range(days + 1):  # each day gets an equal share, whatever the profile
        assert path.fraction(start, end, start + day * DAY_S) == pytest.approx(day / days)


def test_daily_profile_front_loads_business_hours() -> None:
    path = SpendPath(BUSINESS)
    start, end = period_bounds("day", ts(2024, 5, 1, 10))
    assert path.fraction(start, end, ts(2024, 5, 1, 8)) == pytest.approx(8 / 44)  # night hours: light
    assert path.fraction(start, end, ts(2024, 5, 1, 12)) == pytest.approx(20 / 44)  # 4 busy hours: 3 each
    assert path.fraction(start, end, ts(2024, 5, 1, 12, 30)) == pytest.approx(21.5 / 44)  # linear within an hour
    assert SpendPath().fraction(start, end, ts(2024, 5, 1, 12)) == pytest.approx(0.5)


@pytest.mark.parametrize("weights", [None, BUSINESS])
def test_time_at_inverts_the_path(weights: list[float] | None) -> None:
    path = SpendPath(weights)
    start, end = period_bounds("month", ts(2024, 2, 10))
    for t in (start + 1, ts(2024, 2, 3, 9, 15), ts(2024, 2, 29, 17, 59), end - 1):
        assert path.time_at(start, end, path.fraction(start, end, t)) == pytest.approx(t, abs=1e-3)


@pytest.mark.parametrize("weights", [[1.0] * 23, [1.0] * 23 + [0.0], [1.0] * 23 + [math.inf]])
def test_bad_daily_profile_is_refused(weights: list[float]) -> None:
    with pytest.raises(ValueError, match="24 hourly weights|greater than 0"):
        SpendPath(weights)


def make(budget: float = 100.0, **kwargs: object) -> PacingController:
    options: dict[str, object] = {"weak_usd_per_m": 0.02, "strong_usd_per_m": 0.10, "min_strong_share": 0.1,
                                  "max_strong_share": 0.9, "share_tau_s": 0.0, "headroom": 0.0}
    options.update(kwargs)
    return PacingController(budget, "month", **options)  # type: ignore[arg-type]


T0 = ts(2025, 1, 1)


def feed(ctl: PacingController, hours: int, tokens_per_h: float, usd_per_token: float,
         start: tuple[float, float] = (0.0, 0.0), floor: float | None = None) -> tuple[float, float]:
    """Hourly updates at a constant volume and price; returns the (spend, tokens) totals reached."""
    spend, tokens = start
    for _ in range(hours):
        spend += tokens_per_h * usd_per_token
        tokens += tokens_per_h
        ctl.update(spend, tokens, now=T0 + tokens / tokens_per_h * 3600, quality_floor_share=floor)
    return spend, tokens


def test_share_settles_where_the_budget_lasts() -> None:
    # 1e9 tokens a day for 31 days at $0.06/1M (share 0.5) is $1,860: that budget wants share 0.5.
    ctl = make(budget=1860.0)
    feed(ctl, 72, 1e9 / 24, 0.06e-6)
    assert ctl.share == pytest.approx(0.5, abs=0.01)
    state = ctl.state
    assert state is not None and state.bound is None
    assert state.projected_end_usd == pytest.approx(1860.0, rel=0.01)
    assert state.tokens_per_day == pytest.approx(1e9, rel=1e-6)


def test_headroom_aims_below_the_budget() -> None:
    exact, kept_back = make(budget=1860.0), make(budget=1860.0, headroom=0.1)
    for ctl in (exact, kept_back):
        feed(ctl, 72, 1e9 / 24, 0.06e-6)
    assert kept_back.state.target_usd == pytest.approx(0.9 * exact.state.target_usd)  # type: ignore[union-attr]
    assert kept_back.share < exact.share


def test_share_stays_within_its_bounds() -> None:
    ctl = make(budget=100.0)
    spend = tokens = 0.0
    for hour in range(1, 400):
        spend += (50.0 if hour % 37 == 0 else 0.01) * (1 + hour % 5)  # jumps, and long cheap stretches
        tokens += 1e6 * (1 + hour % 7)
        ctl.update(spend, tokens, now=T0 + hour * 3600)
        assert 0.1 <= ctl.share <= 0.9
    assert ctl.state is not None and ctl.state.bound == "min_strong_share"  # $100 spent long ago: held down


def test_spend_running_ahead_or_behind_moves_the_share_the_right_way() -> None:
    budget = 1860.0
    even, ahead, behind = make(budget=budget), make(budget=budget), make(budget=budget)
    for ctl in (even, ahead, behind):
        feed(ctl, 48, 1e9 / 24, 0.06e-6)
    spend, tokens = 48 * 1e9 / 24 * 0.06e-6, 48 * 1e9 / 24
    now = T0 + 49 * 3600
    even.update(spend + 2.5, tokens + 1e9 / 24, now=now)
    ahead.update(spend + 2.5 + 40.0, tokens + 1e9 / 24, now=now)  # a $40 jump: well ahead of the path
    behind.update(spend + 0.5, tokens + 1e9 / 24, now=now)  # the same tokens cost less than planned
    assert ahead.share < even.share < behind.share
    assert ahead.state is not None and ahead.state.ahead_usd > even.state.ahead_usd  # type: ignore[union-attr]


def test_more_traffic_lowers_the_share_before_the_money_is_gone() -> None:
    ctl = make(budget=1860.0, share_tau_s=1800.0)
    spend, tokens = feed(ctl, 24 * 10, 1e9 / 24, 0.06e-6)
    before = ctl.share
    # traffic doubles; the price per token follows the share the controller hands out
    for hour in range(1, 25):
        tokens += 2e9 / 24
        spend += 2e9 / 24 * ctl.blended_usd_per_token(ctl.share)
        ctl.update(spend, tokens, now=T0 + (240 + hour) * 3600)
    assert ctl.share < before - 0.1
    assert ctl.state is not None and ctl.state.spend_usd < 1860.0


def test_quality_floor_is_never_crossed_and_says_when_money_runs_out() -> None:
    ctl = make(budget=100.0)
    feed(ctl, 24, 1e9 / 24, 0.09e-6, floor=0.6)  # spending at share ~0.9 on a budget for ~0.02
    state = ctl.state
    assert state is not None
    assert ctl.share == pytest.approx(0.6) and state.share == pytest.approx(0.6)
    assert state.bound == "quality_floor" and state.quality_floor_share == 0.6
    assert state.wanted_share is not None and state.wanted_share < 0.6
    assert state.projected_end_usd is not None and state.projected_end_usd > 100.0
    # at share 0.6 ($0.068/1M) and 1e9 tokens a day, the $100 - $90 left lasts 10/68 of a day
    now = T0 + 24 * 3600
    assert state.exhausts_at_ts == pytest.approx(now + 10 / 68 * DAY_S, rel=1e-6)
    # a floor above max_strong_share still wins: pacing never trades quality away
    ctl.update(state.spend_usd, 1e9, now=now + 60, quality_floor_share=0.95)
    assert ctl.share == pytest.approx(0.95)
    # once the budget is spent, the state says so (the budget's own rule then refuses or serves cheapest)
    ctl.update(120.0, 1.1e9, now=now + 120, quality_floor_share=0.6)
    assert ctl.state is not None and ctl.state.exhausts_at_ts == now + 120 and ctl.share == pytest.approx(0.6)


def test_without_a_floor_the_minimum_binds_instead() -> None:
    ctl = make(budget=100.0)
    feed(ctl, 24, 1e9 / 24, 0.09e-6)
    assert ctl.share == pytest.approx(0.1)
    assert ctl.state is not None and ctl.state.bound == "min_strong_share"


def test_state_is_plain_json_and_uses_the_injected_clock() -> None:
    now = [T0 + 3600.0]
    ctl = make(clock=lambda: now[0])
    assert ctl.state is None and ctl.share == 0.9  # starts at the top until spend says otherwise
    state = ctl.update(1.0, 1e7)
    assert state.period_start_ts == T0 and state.period_end_ts == ts(2025, 2, 1)
    assert state.target_usd == pytest.approx(100.0 / (31 * 24))
    loaded = json.loads(json.dumps(state.to_dict()))
    assert {"target_usd", "spend_usd", "share", "projected_end_usd", "bound", "ahead_usd"} <= loaded.keys()
    now[0] = ts(2025, 2, 1, 1)  # the next period: the caller's counters start again
    state = ctl.update(0.5, 1e7)
    assert state.period_start_ts == ts(2025, 2, 1) and state.target_usd == pytest.approx(100.0 / (28 * 24))


@pytest.mark.parametrize("bad", [
    {"weak_usd_per_m": 0.10, "strong_usd_per_m": 0.10},
    {"min_strong_share": 0.8, "max_strong_share": 0.5},
    {"max_strong_share": 1.5},
    {"budget": math.nan},
    {"headroom": 1.0},
])
def test_bad_settings_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        make(**bad)


def test_bad_update_is_refused_and_changes_nothing() -> None:
    ctl = make()
    ctl.update(1.0, 1e6, now=T0 + 60)
    before = ctl.state
    for spend, tokens in ((math.nan, 1.0), (-1.0, 1.0), (1.0, math.inf)):
        with pytest.raises(ValueError):
            ctl.update(spend, tokens, now=T0 + 120)
    assert ctl.state is before


def test_spend_cap_refuses_at_the_budget() -> None:
    cap = SpendCap(10.0, "day")
    assert cap.allows(9.99) and not cap.allows(10.0)


@pytest.fixture(scope="module")
def month() -> tuple[object, float, dict[str, object]]:
    sim = bench()
    traffic = sim.Traffic(base_rps=0.05)
    budget = sim.month_budget(traffic, 1800.0, 0.4)
    straight, profile = SpendPath(), SpendPath(sim.BUSINESS_HOURS)
    runs = {
        "straight": sim.simulate(sim.Paced("s", sim.controller(budget, straight)), traffic, budget, step_s=1800.0,
                                 path=straight),
        "profile": sim.simulate(sim.Paced("p", sim.controller(budget, profile)), traffic, budget, step_s=1800.0,
                                path=profile),
        "cap": sim.simulate(sim.Capped(), traffic, budget, step_s=1800.0),
    }
    return sim, budget, runs


@pytest.mark.parametrize("name", ["straight", "profile"])
def test_pacing_ends_the_simulated_month_within_5_percent_without_refusing(month, name: str) -> None:  # type: ignore[no-untyped-def]
    _, budget, runs = month
    run = runs[name]
    assert run.refused == 0
    assert abs(run.spend[-1] / budget - 1) <= 0.05
    assert all(0.1 <= s <= 0.9 for s in run.shares)
    assert max(run.shares) > 0.5 and min(run.shares[len(run.shares) // 2:]) < 0.4  # it did steer


def test_the_plain_cap_runs_out_early_and_refuses(month) -> None:  # type: ignore[no-untyped-def]
    sim, budget, runs = month
    cap = runs["cap"]
    assert cap.refused > 0 and cap.spend[-1] <= budget
    assert cap.first_refusal_ts < sim.MONTH_START + 28 * DAY_S


def test_the_simulation_and_controller_are_deterministic(month) -> None:  # type: ignore[no-untyped-def]
    sim, budget, runs = month
    traffic = sim.Traffic(base_rps=0.05)
    again = sim.simulate(sim.Paced("p", sim.controller(budget, SpendPath(sim.BUSINESS_HOURS))), traffic, budget,
                         step_s=1800.0, path=SpendPath(sim.BUSINESS_HOURS))
    assert again.shares == runs["profile"].shares and again.spend == runs["profile"].spend
