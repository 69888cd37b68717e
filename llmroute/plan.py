"""``llmroute plan``: what a month of traffic costs under each strategy, before sending any.

Each strategy's split comes from the strategy itself (its first choice for a
request of the given input/output mix, with latency priors as the estimate),
so the plan cannot drift from what the router does. quality_aware's split is its
target share of strong calls. Expected quality (as a share of strong-only quality)
comes from the quality model's held-out evaluation: a split that ignores the prompt
keeps the random-routing line, quality_aware keeps its measured curve.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from .config import RouterConfig
from .pricing import format_price_per_m, format_usd, savings_pct
from .state import InMemoryState
from .strategies import Balanced, QualityAware, RouteRequest, RoutingStrategy, build_strategy


@dataclass(frozen=True, slots=True)
class PlanRow:
    strategy: str
    share: dict[str, float]
    """Fraction of tokens each provider serves."""
    cost_usd: dict[str, float]
    """Monthly US dollars per provider."""
    baseline_usd: float
    expected_quality: float | None = None
    """Share of strong-only quality kept, from the quality model's held-out curve; None if unknown."""

    @property
    def total_usd(self) -> float:
        return sum(self.cost_usd.values())

    @property
    def savings_usd(self) -> float:
        return self.baseline_usd - self.total_usd

    @property
    def savings_pct(self) -> float:
        return savings_pct(self.baseline_usd, self.total_usd)


def provider_cost_usd(config: RouterConfig, provider: str, tokens: float, input_share: float) -> float:
    price = config.providers[provider].routing_price
    return tokens * (input_share * price.input + (1 - input_share) * price.output) / 1e6


def strategy_share(config: RouterConfig, name: RoutingStrategy, input_share: float) -> dict[str, float]:
    state = InMemoryState({n: p.latency_ms for n, p in config.providers.items()})
    strategy = build_strategy(name, config, state)
    if isinstance(strategy, QualityAware):
        if strategy.strong == strategy.weak:
            return {strategy.strong: 1.0}
        return {n: s for n, s in ((strategy.strong, strategy.strong_share), (strategy.weak, 1 - strategy.strong_share)) if s}
    if isinstance(strategy, Balanced):
        counts = Counter(strategy.schedule)
    else:
        request = RouteRequest(input_tokens=round(1000 * input_share), output_tokens=round(1000 * (1 - input_share)))
        counts = Counter([strategy.order(request)[0]])
    total = sum(counts.values())
    return {n: counts[n] / total for n in config.providers if counts[n]}


def plan(config: RouterConfig, monthly_tokens: int, input_share: float = 0.5) -> tuple[str, list[PlanRow]]:
    """(baseline provider, one row per strategy)."""
    if not 0.0 <= input_share <= 1.0:
        raise ValueError("input share must be between 0 and 1")
    baseline = config.baseline()
    baseline_usd = provider_cost_usd(config, baseline, monthly_tokens, input_share)
    rows = []
    for name in RoutingStrategy:
        share = strategy_share(config, name, input_share)
        cost = {n: provider_cost_usd(config, n, monthly_tokens * s, input_share) for n, s in share.items()}
        rows.append(PlanRow(strategy=name.value, share=share, cost_usd=cost, baseline_usd=baseline_usd,
                            expected_quality=expected_quality(config, name, share)))
    return baseline, rows


def expected_quality(config: RouterConfig, name: RoutingStrategy, share: dict[str, float]) -> float | None:
    """Held-out quality kept by a split between quality_aware's strong and weak providers."""
    if len(config.providers) < 2:
        return None
    strong, weak = config.quality_pair()
    if set(share) - {strong, weak}:
        return None  # a third provider's quality was never measured
    from .strategies.quality_aware import load_quality_model

    model = load_quality_model(config.quality_aware.model)
    f = share.get(strong, 0.0)
    if name is RoutingStrategy.QUALITY_AWARE:
        return model.expected_quality(f)
    line = model.validation.get("quality")
    if not line or line[-1] <= 0:
        return None
    return (line[0] + f * (line[-1] - line[0])) / line[-1]  # ignoring the prompt: the random line


def describe(row: PlanRow, monthly_tokens: int) -> str:
    """One line in the seed's words: split, cost breakdown, savings, blended price."""
    split = " / ".join(f"{s:.0%} {n}" for n, s in sorted(row.share.items(), key=lambda kv: -kv[1]))
    parts = [format_usd(row.cost_usd[n]) for n, _ in sorted(row.share.items(), key=lambda kv: -kv[1])]
    cost = f"{' + '.join(parts)} = {format_usd(row.total_usd)}" if len(parts) > 1 else format_usd(row.total_usd)
    blended = format_price_per_m(row.total_usd * 1e6 / monthly_tokens)
    quality = f"; expected quality {row.expected_quality:.1%} of strong-only" if row.expected_quality is not None else ""
    return (
        f"{row.strategy}: {split}: {cost}/month; savings {format_usd(row.savings_usd)}/month "
        f"({row.savings_pct:.0f}%); blended {blended} per 1M tokens{quality}"
    )
