"""``llmroute plan``: what a month of traffic costs under each strategy, before sending any.

Each strategy's split comes from the strategy itself (its first choice for a
request of the given input/output mix, with latency priors as the estimate),
so the plan cannot drift from what the router does. quality_aware's split is its
target share of strong calls.

Expected quality is only stated where it was measured on the user's own traffic:
the ledger's graded pairs between the shadow reference and candidate (a prompt-blind
split keeps ``f + (1 - f) * candidate / reference``; quality_aware re-decides the
scores it logged), with a 95% interval and the pair count. The shipped model's
benchmark curve is shown only when asked for, labelled with what it measured.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .config import RouterConfig
from .pricing import format_price_per_m, format_usd, savings_pct
from .state import InMemoryState
from .strategies import Balanced, QualityAware, RouteRequest, RoutingStrategy, build_strategy

if TYPE_CHECKING:
    from .quality_report import MeasuredQuality

SHIPPED_MODEL_PAIR = {"weak": "Mixtral-8x7B", "strong": "GPT-4"}
"""The models behind the shipped model's training labels (RouteLLM's MMLU and GSM8K judgements). Its metadata
names the benchmarks but not the models, so they are stated here; a model whose ``meta`` has ``models``
(``{"weak": ..., "strong": ...}``) is described from that instead."""


@dataclass(frozen=True, slots=True)
class ExpectedQuality:
    """Quality a strategy is expected to keep, as a share of reference-only quality, and where that comes from."""

    value: float
    source: str
    """``measured`` (the ledger's graded pairs) or ``benchmark`` (the quality model's held-out curve)."""
    low: float | None = None
    high: float | None = None
    pairs: int | None = None
    grader: str | None = None
    label: str = ""
    """What it was measured on, in words."""

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "ci_low": self.low, "ci_high": self.high, "pairs": self.pairs,
                "grader": self.grader, "source": self.source, "label": self.label}


@dataclass(frozen=True, slots=True)
class PlanRow:
    strategy: str
    share: dict[str, float]
    """Fraction of tokens each provider serves."""
    cost_usd: dict[str, float]
    """Monthly US dollars per provider."""
    baseline_usd: float
    quality: ExpectedQuality | None = None
    """Measured on the user's traffic (the ledger's graded pairs); None when not measured."""
    quality_note: str | None = None
    """Why there is no measured quality, in words."""
    benchmark: ExpectedQuality | None = None
    """The shipped model's benchmark figure, only when asked for (``--benchmark-quality``)."""

    @property
    def expected_quality(self) -> float | None:
        return self.quality.value if self.quality is not None else None

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


def plan(config: RouterConfig, monthly_tokens: int, input_share: float = 0.5, *,
         measured: MeasuredQuality | None = None, benchmark: bool = False) -> tuple[str, list[PlanRow]]:
    """(baseline provider, one row per strategy). ``measured``: the ledger's graded pairs (``measured_quality``);
    ``benchmark``: also give the quality model's benchmark figure."""
    if not 0.0 <= input_share <= 1.0:
        raise ValueError("input share must be between 0 and 1")
    baseline = config.baseline()
    baseline_usd = provider_cost_usd(config, baseline, monthly_tokens, input_share)
    rows = []
    for name in RoutingStrategy:
        share = strategy_share(config, name, input_share)
        cost = {n: provider_cost_usd(config, n, monthly_tokens * s, input_share) for n, s in share.items()}
        quality, note = measured_quality_of(measured, name, share)
        rows.append(PlanRow(strategy=name.value, share=share, cost_usd=cost, baseline_usd=baseline_usd,
                            quality=quality, quality_note=note,
                            benchmark=benchmark_quality(config, name, share) if benchmark else None))
    return baseline, rows


def measured_quality_of(measured: MeasuredQuality | None, name: RoutingStrategy, share: dict[str, float],
                        ) -> tuple[ExpectedQuality | None, str | None]:
    """The split's retained quality from the graded pairs, or why it is not known."""
    if measured is None or not measured.enough:
        return None, "quality not measured on your traffic"
    reference, candidate = measured.reference, measured.candidate
    others = sorted(set(share) - {reference, candidate})
    if others:
        return None, f"quality not measured: uses {', '.join(others)}, outside the measured pair {reference} vs {candidate}"
    f = share.get(reference, 0.0)
    if name is RoutingStrategy.QUALITY_AWARE:
        estimate = measured.routed(f)
        if estimate is None:
            return None, (f"quality not measured: {measured.scored} of the graded pairs carry quality_aware's score "
                          f"(needs {measured.min_pairs})")
    else:
        estimate = measured.split(f)
        if estimate is None:
            return None, "quality not measured on your traffic"
    label = f"graded pairs in the ledger: {reference} (reference) vs {candidate}"
    return ExpectedQuality(estimate.value, "measured", estimate.low, estimate.high, estimate.pairs,
                           measured.grader_label, label), None


def benchmark_quality(config: RouterConfig, name: RoutingStrategy, share: dict[str, float]) -> ExpectedQuality | None:
    """The quality model's held-out curve at this split: benchmarks and models that may not be yours."""
    if len(config.providers) < 2:
        return None
    strong, weak = config.quality_pair()
    if set(share) - {strong, weak}:
        return None  # a third provider's quality was never measured
    from .strategies.quality_aware import load_quality_model

    model = load_quality_model(config.quality_aware.model)
    f = share.get(strong, 0.0)
    label = benchmark_label(model)
    if name is RoutingStrategy.QUALITY_AWARE:
        value = model.expected_quality(f)
        return None if value is None else ExpectedQuality(value, "benchmark", label=label)
    line = model.validation.get("quality")
    if not line or line[-1] <= 0:
        return None
    # Ignoring the prompt: the random line.
    return ExpectedQuality((line[0] + f * (line[-1] - line[0])) / line[-1], "benchmark", label=label)


def benchmark_label(model: Any) -> str:
    """``MMLU/GSM8K, Mixtral-8x7B vs GPT-4``: what a quality model's held-out curve was measured on."""
    from .quality.model import DEFAULT_MODEL

    benchmarks = model.validation.get("benchmarks") or {}
    names = "/".join(b.upper() for b, _ in sorted(benchmarks.items(), key=lambda kv: -kv[1].get("examples", 0)))
    models = model.meta.get("models")
    if not isinstance(models, dict) and str(model.source).endswith(DEFAULT_MODEL):
        models = SHIPPED_MODEL_PAIR
    pair = f"{models.get('weak')} vs {models.get('strong')}" if isinstance(models, dict) else "models not recorded"
    return f"{names or 'held-out data'}, {pair}"


def describe(row: PlanRow, monthly_tokens: int) -> str:
    """One line in the seed's words: split, cost breakdown, savings, blended price."""
    split = " / ".join(f"{s:.0%} {n}" for n, s in sorted(row.share.items(), key=lambda kv: -kv[1]))
    parts = [format_usd(row.cost_usd[n]) for n, _ in sorted(row.share.items(), key=lambda kv: -kv[1])]
    cost = f"{' + '.join(parts)} = {format_usd(row.total_usd)}" if len(parts) > 1 else format_usd(row.total_usd)
    blended = format_price_per_m(row.total_usd * 1e6 / monthly_tokens)
    q = row.quality
    if q is not None:
        quality = (f"; expected quality {q.value:.1%} (95% CI {q.low:.1%}–{q.high:.1%}, {q.pairs:,} pairs, "
                   f"{q.grader})")
    else:
        quality = f"; {row.quality_note}" if row.quality_note else ""
    if row.benchmark is not None:
        quality += (f"; benchmark quality {row.benchmark.value:.1%} of strong-only "
                    f"({row.benchmark.label}: not your traffic)")
    return (
        f"{row.strategy}: {split}: {cost}/month; savings {format_usd(row.savings_usd)}/month "
        f"({row.savings_pct:.0f}%); blended {blended} per 1M tokens{quality}"
    )
