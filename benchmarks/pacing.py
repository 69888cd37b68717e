"""Budget pacing against a plain cap, over a simulated month (time injected, no sleeps).

    PYTHONPATH=. python benchmarks/pacing.py --plot pacing.png     # or .html

January 2025 (31 days) in 5-minute steps: requests follow a business-hours daily cycle, double
from mid-month, and a 3-hour burst of 5x hits day 20. Prices are the seed's pair (weak $0.02,
strong $0.10 per 1M tokens); strong answers run 25% longer than weak ones, which the controller
is not told. The budget sits between all-weak and all-strong for the month's real traffic
(at an average strong share of 0.4), so the configured 0.8 cannot last. Rows:

- cap: share 0.8 until the budget is spent, then every request refused until the period ends;
- pacing (the default controller: feedforward over a 1-day horizon, smoothed) on a straight path
  and on the traffic's daily profile;
- the alternatives it was chosen over: the same without smoothing, and a PI controller on the
  relative error of spend against the path.
"""

from __future__ import annotations

import argparse
import html
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import numpy as np

from llmroute.budget_period import DAY_S, SpendPath, period_bounds
from llmroute.pacing import PacingController

WEAK_USD_PER_M = 0.02
STRONG_USD_PER_M = 0.10
WEAK_TOKENS = 800
STRONG_TOKENS = 1000  # longer answers: the controller's cost model does not know
MIN_SHARE, MAX_SHARE = 0.1, 0.9
CAP_SHARE = 0.8
BUSINESS_HOURS = [1.0] * 8 + [3.0] * 10 + [1.0] * 6  # 08:00-18:00 UTC three times as busy
MONTH_START = datetime(2025, 1, 1, tzinfo=UTC).timestamp()


@dataclass(frozen=True)
class Traffic:
    """Expected requests per second at a moment: daily cycle, doubling from ``double_at``, one burst."""

    base_rps: float = 0.5
    double_at_day: float = 15.5
    burst_day: float = 20.4  # 09:36 UTC on the 21st
    burst_hours: float = 3.0
    burst_factor: float = 5.0
    profile: tuple[float, ...] = tuple(BUSINESS_HOURS)

    def rps(self, t: float) -> float:
        day = (t - MONTH_START) / DAY_S
        hour = int((t % DAY_S) // 3600)
        rate = self.base_rps * self.profile[hour] / (sum(self.profile) / 24)
        if day >= self.double_at_day:
            rate *= 2
        if self.burst_day <= day < self.burst_day + self.burst_hours / 24:
            rate *= self.burst_factor
        return rate


def request_cost_usd(strong: bool) -> float:
    return (STRONG_TOKENS * STRONG_USD_PER_M if strong else WEAK_TOKENS * WEAK_USD_PER_M) / 1e6


def cost_usd(strong: int, weak: int) -> float:
    return strong * request_cost_usd(True) + weak * request_cost_usd(False)


def month_budget(traffic: Traffic, step_s: float, share: float) -> float:
    """The month's cost at a constant share, from the expected traffic."""
    start, end = period_bounds("month", MONTH_START)
    requests = sum(traffic.rps(t) * step_s for t in np.arange(start, end, step_s))
    return requests * (share * request_cost_usd(True) + (1 - share) * request_cost_usd(False))


class Policy(Protocol):
    name: str

    def share(self) -> float: ...
    def update(self, spend_usd: float, tokens: float, now: float) -> None: ...


class Paced:
    def __init__(self, name: str, controller: PacingController) -> None:
        self.name, self.controller = name, controller

    def share(self) -> float:
        return self.controller.share

    def update(self, spend_usd: float, tokens: float, now: float) -> None:
        self.controller.update(spend_usd, tokens, now=now)


class Capped:
    """The plain cap: the configured share throughout; the budget's enforcement (in ``simulate``) is the stop."""

    name = "plain cap"

    def share(self) -> float:
        return CAP_SHARE

    def update(self, spend_usd: float, tokens: float, now: float) -> None:
        pass


class PI:
    """The alternative: share = s0 - kp * e - ki * integral(e dt), e = (spend - path) / budget."""

    name = "PI on the path error"

    def __init__(self, budget_usd: float, path: SpendPath, kp: float = 8.0, ki_per_day: float = 2.0) -> None:
        self.budget_usd, self.path, self.kp, self.ki = budget_usd, path, kp, ki_per_day / DAY_S
        self._share, self._integral, self._last = MAX_SHARE, 0.0, None

    def share(self) -> float:
        return self._share

    def update(self, spend_usd: float, tokens: float, now: float) -> None:
        start, end = period_bounds("month", now)
        error = (spend_usd - self.budget_usd * self.path.fraction(start, end, now)) / self.budget_usd
        step = 0.0 if self._last is None else error * (now - self._last)
        self._last = now
        self._integral += step
        raw = 0.5 - self.kp * error - self.ki * self._integral
        if not MIN_SHARE <= raw <= MAX_SHARE:  # anti-windup: no integrating while a bound holds
            self._integral -= step
        self._share = min(max(raw, MIN_SHARE), MAX_SHARE)


@dataclass
class Run:
    name: str
    times: list[float] = field(default_factory=list)
    spend: list[float] = field(default_factory=list)
    shares: list[float] = field(default_factory=list)
    served: int = 0
    refused: int = 0
    first_refusal_ts: float | None = None
    max_off_path: float = 0.0


def simulate(policy: Policy, traffic: Traffic, budget_usd: float, *, step_s: float = 300.0, seed: int = 1,
             path: SpendPath | None = None) -> Run:
    """Run one policy through the month; every random draw comes from ``seed``, so runs are repeatable."""
    rng = np.random.default_rng(seed)
    start, end = period_bounds("month", MONTH_START)
    path = path or SpendPath()
    run = Run(policy.name)
    spend = tokens = 0.0
    t = start
    while t < end:
        n = int(rng.poisson(traffic.rps(t) * step_s))
        share = policy.share()
        strong = int(rng.binomial(n, share)) if n else 0
        served = n  # the budget is enforced whatever the policy: a step admits the first requests that still fit
        if spend + cost_usd(strong, n - strong) > budget_usd:
            while served and spend + cost_usd(strong * served // n, served - strong * served // n) > budget_usd:
                served -= 1
            strong = strong * served // n
        if served < n:
            run.refused += n - served
            run.first_refusal_ts = run.first_refusal_ts or t
        spend += cost_usd(strong, served - strong)
        tokens += strong * STRONG_TOKENS + (served - strong) * WEAK_TOKENS
        run.served += served
        t += step_s
        policy.update(spend, tokens, t)
        run.times.append(t)
        run.spend.append(spend)
        run.shares.append(share if served else 0.0)
        run.max_off_path = max(run.max_off_path,
                               abs(spend - budget_usd * path.fraction(start, end, t)) / budget_usd)
    return run


def swing(run: Run) -> float:
    """Mean daily range of the share (max - min within each day): how much it flaps."""
    by_day: dict[int, list[float]] = {}
    for t, s in zip(run.times, run.shares):
        by_day.setdefault(int((t - 1 - MONTH_START) // DAY_S), []).append(s)
    return float(np.mean([max(v) - min(v) for v in by_day.values()]))


def controller(budget_usd: float, path: SpendPath, clock: Callable[[], float] | None = None,
               **kwargs: float) -> PacingController:
    """The pacing controller as the benchmark and its test configure it."""
    return PacingController(budget_usd, "month", weak_usd_per_m=WEAK_USD_PER_M, strong_usd_per_m=STRONG_USD_PER_M,
                            min_strong_share=MIN_SHARE, max_strong_share=MAX_SHARE, initial_share=CAP_SHARE,
                            path=path, **({"clock": clock} if clock else {}), **kwargs)


def runs(step_s: float, seed: int, budget_share: float) -> tuple[float, list[tuple[Run, SpendPath]]]:
    traffic = Traffic()
    budget = month_budget(traffic, step_s, budget_share)
    straight, profile = SpendPath(), SpendPath(BUSINESS_HOURS)
    policies: list[tuple[Policy, SpendPath]] = [
        (Capped(), straight),
        (Paced("pacing, straight path", controller(budget, straight)), straight),
        (Paced("pacing, daily profile", controller(budget, profile)), profile),
        (Paced("pacing, daily profile, unsmoothed", controller(budget, profile, share_tau_s=0.0)), profile),
        (PI(budget, profile), profile),
    ]
    return budget, [(simulate(p, traffic, budget, step_s=step_s, seed=seed, path=path), path) for p, path in policies]


def table(budget: float, results: list[tuple[Run, SpendPath]]) -> list[list[str]]:
    rows = []
    for run, _ in results:
        end = run.spend[-1]
        refused = f"{run.refused:,} ({run.refused / (run.served + run.refused):.1%})"
        stop = "-" if run.first_refusal_ts is None else f"day {(run.first_refusal_ts - MONTH_START) / DAY_S:.1f}"
        rows.append([run.name, f"${end:,.2f}", f"{end / budget - 1:+.1%}", refused, stop,
                     f"{run.max_off_path:.1%}", f"{swing(run):.3f}"])
    return rows


HEAD = ["policy", "end spend", "vs budget", "refused requests", "first refusal", "max off path", "daily share swing"]


def draw(budget: float, results: list[tuple[Run, SpendPath]]) -> Callable[[str], bytes]:
    from llmroute.plots import figure_bytes, pyplot

    def render(fmt: str) -> bytes:
        plt = pyplot()
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 8), dpi=100, sharex=True)
        start, end = period_bounds("month", MONTH_START)
        for run, path in results[:3]:
            days = [(t - MONTH_START) / DAY_S for t in run.times]
            ax1.plot(days, run.spend, label=run.name)
            ax2.plot(days, run.shares, label=run.name, linewidth=0.8)
        grid = np.linspace(start, end, 31 * 24 + 1)
        ax1.plot((grid - MONTH_START) / DAY_S, [budget * SpendPath().fraction(start, end, t) for t in grid],
                 color="grey", linestyle="--", label="straight path")
        ax1.axhline(budget, color="black", linewidth=0.8, label="budget")
        ax1.set_ylabel("spend this month (US$)")
        ax1.legend(fontsize=8)
        ax2.set_ylabel("share of strong calls")
        ax2.set_xlabel("day of the month (traffic doubles on day 15.5; 5x burst on day 20.4)")
        ax2.legend(fontsize=8)
        ax1.set_title("Budget pacing vs a plain cap: a month simulated")
        fig.tight_layout()
        return figure_bytes(fig, fmt)

    return render


def main() -> None:
    from _util import machine

    from llmroute.plots import write_chart

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", type=Path, help="write the chart here (.png, .svg, .pdf or .html)")
    parser.add_argument("--step-s", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--budget-share", type=float, default=0.4,
                        help="the budget: the month's cost at this constant strong share")
    args = parser.parse_args()
    budget, results = runs(args.step_s, args.seed, args.budget_share)
    print(f"machine: {machine()}")
    print(f"budget ${budget:,.2f}; all-weak ${month_budget(Traffic(), args.step_s, 0.0):,.2f}, "
          f"all-strong ${month_budget(Traffic(), args.step_s, 1.0):,.2f} (expected traffic); step {args.step_s:g} s")
    rows = table(budget, results)
    print("| " + " | ".join(HEAD) + " |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if args.plot:
        cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
        head = "".join(f"<th>{html.escape(h)}</th>" for h in HEAD)
        write_chart(args.plot, draw(budget, results), "Budget pacing vs a plain cap",
                    f"<table><tr>{head}</tr>{cells}</table>")
        print(f"chart: {args.plot}")


if __name__ == "__main__":
    main()
