"""Counterfactual replay: what logged traffic would have cost, and likely waited, under another strategy.

Each logged request keeps its token counts. The strategy under test picks a
provider for it exactly as the router would (same classes, a state seeded with
the latencies the ledger observed); the cost is those tokens at that provider's
price, and the latency a draw from that provider's observed latencies. Failed
requests are left out of both sides: their cost depends on outages a replay
cannot know. The ledger keeps no prompts, so quality_aware is replayed from the
scores it logged: only requests it routed can be re-decided (under another
target, say), and both sides then count only those.
"""

from __future__ import annotations

import random
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from .config import RouterConfig
from .errors import LLMRouteError
from .ledger import Store
from .pricing import cost_usd, per_million
from .report import percentile
from .state import InMemoryState
from .strategies import QualityAware, RouteRequest, RoutingStrategy, build_strategy


@dataclass(slots=True)
class Outcome:
    """One side of the comparison: what happened, or what the replay estimates."""

    label: str
    requests: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    split: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def p50_ms(self) -> float | None:
        return percentile(sorted(self.latencies_ms), 0.5) if self.latencies_ms else None

    @property
    def p95_ms(self) -> float | None:
        return percentile(sorted(self.latencies_ms), 0.95) if self.latencies_ms else None

    @property
    def blended_per_m(self) -> float:
        return per_million(self.cost_usd, self.tokens)

    def to_dict(self) -> dict[str, object]:
        return {"label": self.label, "requests": self.requests, "tokens": self.tokens, "cost_usd": self.cost_usd,
                "blended_per_m": self.blended_per_m, "split": dict(self.split), "p50_ms": self.p50_ms,
                "p95_ms": self.p95_ms}


@dataclass(slots=True)
class Replay:
    actual: Outcome
    estimate: Outcome
    latency_source: dict[str, str]
    """Per provider: ``observed (N samples)`` or ``config prior`` when the ledger has none."""
    skipped: int = 0
    """quality_aware: successful requests left out because the ledger has no quality score for them."""


def observed_latencies(store: Store, lo: float, hi: float) -> dict[str, list[float]]:
    """Latencies of requests each provider answered first time (no fallback in them)."""
    out: dict[str, list[float]] = defaultdict(list)
    for provider, latency in store.fetch(
            "SELECT provider, latency_ms FROM requests WHERE status = 'ok' AND NOT fallback AND ts >= ? AND ts < ?",
            (lo, hi)):
        out[provider].append(float(latency))
    return out


def replay(
    store: Store, config: RouterConfig, strategy: RoutingStrategy, lo: float, hi: float, *,
    effective_per_m: dict[str, float] | None = None, seed: int = 0,
) -> Replay:
    """Run the logged requests in ``[lo, hi)`` through ``strategy``. ``effective_per_m`` prices GPU-second providers."""
    observed = observed_latencies(store, lo, hi)
    priors = {n: statistics.median(observed[n]) if observed.get(n) else p.latency_ms
              for n, p in config.providers.items()}
    chosen = build_strategy(strategy, config, InMemoryState(priors, alpha=config.latency_alpha))
    rng = random.Random(seed)
    actual, estimate = Outcome("actual"), Outcome(f"replayed: {strategy.value}")
    rows = store.fetch("SELECT provider, prompt_tokens, completion_tokens, cached_tokens, cost_usd, latency_ms, "
                       "quality_score FROM requests WHERE status = 'ok' AND ts >= ? AND ts < ? ORDER BY ts, id", (lo, hi))
    skipped = 0
    if isinstance(chosen, QualityAware):
        scored = [r for r in rows if r[6] is not None]
        skipped = len(rows) - len(scored)
        if rows and not scored:
            raise LLMRouteError(f"quality_aware is replayed from the quality scores it logged, and none of the "
                                f"{len(rows):,} requests in this period has one (they were routed by other strategies)")
        rows = scored
    for provider, prompt, completion, cached, cost, latency, score in rows:
        tokens = int(prompt) + int(completion)
        actual.requests += 1
        actual.tokens += tokens
        actual.cost_usd += float(cost or 0.0)
        actual.split[provider] += 1
        actual.latencies_ms.append(float(latency))
        if isinstance(chosen, QualityAware):
            pick = chosen.decide(float(score)).order[0]
        else:
            pick = chosen.order(RouteRequest(input_tokens=int(prompt), output_tokens=int(completion)))[0]
        estimate.requests += 1
        estimate.tokens += tokens
        estimate.split[pick] += 1
        estimate.cost_usd += _price(config, pick, int(prompt), int(completion), int(cached), effective_per_m or {})
        samples = observed.get(pick)
        estimate.latencies_ms.append(rng.choice(samples) if samples else priors[pick])
    source = {n: f"observed ({len(observed[n])} samples)" if observed.get(n) else "config prior (no observations)"
              for n in config.providers}
    return Replay(actual, estimate, source, skipped)


def _price(config: RouterConfig, provider: str, prompt: int, completion: int, cached: int,
           effective_per_m: dict[str, float]) -> float:
    p = config.providers[provider]
    if p.gpu_priced and provider in effective_per_m:
        return (prompt + completion) * effective_per_m[provider] / 1e6
    return cost_usd(p.routing_price, prompt, completion, cached)
