"""``llmroute demo``: a realistic workload through every strategy, with an outage part-way.

With no config it starts two emulated providers (the seed's Cerebras and RunPod
pair) and makes RunPod fail for the second quarter of each run; with a config
it sends the same workload to the real providers, with no injected fault.
"""

from __future__ import annotations

import asyncio
import math
import random
import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .config import RouterConfig, load_config
from .errors import LLMRouteError
from .pricing import cost_usd, per_million
from .result import RouteResult
from .ledger import Ledger
from .router import LLMRouter
from .strategies import RoutingStrategy

_COMPANIES = ["TechCorp", "Acme Logistics", "Northwind Health", "Bluewave Retail", "Quantum Analytics",
              "Greenfield Energy", "Summit Legal", "Atlas Manufacturing", "Helix Bio", "Orbit Media"]
_INDUSTRIES = ["SaaS", "logistics", "healthcare", "retail", "fintech", "energy", "legal services", "manufacturing"]
_DOCS = [
    "Master services agreement, 14 pages: 3-year term, auto-renewal, 60-day termination notice, "
    "liability capped at 12 months of fees, data processing addendum attached.",
    "Q3 board report: revenue up 18% year on year, gross margin 71%, net revenue retention 112%, "
    "two enterprise logos churned, hiring plan cut by 10%.",
    "Vendor security questionnaire: SOC 2 Type II, encryption at rest with AES-256, annual penetration "
    "test, no formal incident-response drill in the last year.",
    "Customer support transcript: user cannot export reports to CSV since the last release; workaround "
    "offered; customer threatens to escalate to their account manager.",
]
_CHAT = [
    "Draft a short follow-up email to a prospect who asked for pricing last week.",
    "What questions should I ask in a discovery call with a mid-market logistics company?",
    "Summarise the main objections SaaS buyers raise about usage-based pricing.",
    "Rewrite this sentence to sound more confident: we think our product might help your team.",
]


def workload(n: int, seed: int = 7) -> list[list[dict[str, str]]]:
    """``n`` chat requests: about half lead qualification, a third document analysis, the rest chat."""
    rng = random.Random(seed)
    requests = []
    for _ in range(n):
        roll = rng.random()
        if roll < 0.5:
            company, industry = rng.choice(_COMPANIES), rng.choice(_INDUSTRIES)
            prompt = (f"Qualify this lead: {company}, {rng.choice([12, 45, 120, 500, 2300, 9000])} employees, "
                      f"{industry} industry. Budget signal: {rng.choice(['none', 'approved', 'exploring'])}. "
                      "Answer with a score from 1 to 10, a one-line reason and the next step.")
            system = "You are a B2B sales assistant. Be concise."
        elif roll < 0.83:
            prompt = f"Analyse this document and list the three most important points and any risks:\n{rng.choice(_DOCS)}"
            system = "You are a careful analyst."
        else:
            prompt = rng.choice(_CHAT)
            system = "You are a helpful assistant."
        requests.append([{"role": "system", "content": system}, {"role": "user", "content": prompt}])
    return requests


@dataclass
class StrategyRun:
    strategy: str
    results: list[RouteResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    baseline_usd: float = 0.0

    def summary(self, config: RouterConfig) -> dict[str, Any]:
        latencies = sorted(r.latency_ms for r in self.results)
        tokens = sum(r.total_tokens for r in self.results)
        spend = sum(r.cost_usd for r in self.results)
        return {
            "strategy": self.strategy,
            "requests": len(self.results) + len(self.errors),
            "split": dict(Counter(r.provider for r in self.results)),
            "tokens": tokens,
            "cost_usd": spend,
            "blended_per_m": per_million(spend, tokens),
            "baseline_usd": self.baseline_usd,
            "savings_pct": 100 * (1 - spend / self.baseline_usd) if self.baseline_usd else 0.0,
            "p50_ms": _percentile(latencies, 50),
            "p95_ms": _percentile(latencies, 95),
            "fallbacks": sum(r.fallback for r in self.results),
            "errors": len(self.errors),
        }


def _percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return math.nan
    if len(sorted_values) == 1:
        return sorted_values[0]
    return statistics.quantiles(sorted_values, n=100, method="inclusive")[int(pct) - 1]


async def run_strategy(
    config: RouterConfig, strategy: RoutingStrategy, requests: list[list[dict[str, str]]], *,
    concurrency: int, max_tokens: int, outage: tuple[Callable[[], None], Callable[[], None]] | None = None,
    on_done: Callable[[], None] | None = None, ledger: Ledger | bool | None = None,
) -> StrategyRun:
    """Send ``requests`` through a fresh router; ``outage`` = (start, end) callbacks run at 25% and 50%."""
    run = StrategyRun(strategy.value)
    baseline_price = config.providers[config.baseline()].routing_price
    limit = asyncio.Semaphore(concurrency)
    start_at, end_at = len(requests) // 4, len(requests) // 2

    async def one(messages: list[dict[str, str]]) -> None:
        try:
            result = await router.chat(messages, max_tokens=max_tokens)
        except LLMRouteError as exc:
            run.errors.append(str(exc).splitlines()[0])
        else:
            run.results.append(result)
            run.baseline_usd += cost_usd(baseline_price, result.prompt_tokens, result.completion_tokens)
        finally:
            limit.release()
            if on_done:
                on_done()

    async with LLMRouter(strategy=strategy, config=config, ledger=ledger) as router:
        tasks = []
        for i, messages in enumerate(requests):
            if outage and i == start_at:
                outage[0]()
            if outage and i == end_at:
                outage[1]()
            await limit.acquire()
            tasks.append(asyncio.create_task(one(messages)))
        await asyncio.gather(*tasks)
        if outage:
            outage[1]()
    return run


def emulated_config(base_urls: dict[str, str], speed: float = 1.0) -> RouterConfig:
    """A config for the shipped emulator profiles at the given addresses.

    Emulators run ``speed`` times faster than real providers, so the breaker's clocks run faster too.
    """
    from .emulator import get_profile

    providers = {}
    for name, url in base_urls.items():
        profile = get_profile(name)
        providers[name] = {
            "base_url": url, "model": profile.model, "price_per_m": profile.price_per_m,
            "latency_ms": profile.latency_ms, "quality": profile.quality, "context_window": profile.context_window,
        }
    scale = 1.0 if speed == float("inf") or speed <= 0 else speed
    # A short run: probe a failed provider after 1 s (real time), so traffic returns soon after the outage.
    breaker = {"open_s": 1.0 / scale, "max_open_s": 5.0 / scale, "window_s": 10.0 / scale}
    return load_config({"providers": providers, "strategy": "balanced", "breaker": breaker})
