"""``llmroute demo``: a realistic workload through every strategy, with an outage part-way.

With no config it starts two emulated providers (the seed's Cerebras and RunPod
pair) and makes RunPod fail for the second quarter of each run; with a config
it sends the same workload to the real providers, with no injected fault.
The workload's answers are known (``workload.py``): the emulated pair answers
from them, so the demo knows the true quality each strategy kept.
"""

from __future__ import annotations

import asyncio
import math
import random
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

from ..breaker import CLOSED
from ..config import RouterConfig, load_config
from ..errors import LLMRouteError
from ..pricing import cost_usd, format_price_per_m, per_million
from ..result import RouteResult
from ..ledger import Ledger, open_store, price_rows
from ..router import LLMRouter
from ..strategies import RoutingStrategy
from .quality import measured_retained, quality_table, shadow_settings
from .workload import DemoRequest, truth, workload

if TYPE_CHECKING:
    from ..emulator import EmulatorThread, Labels

PHASES = ("before", "outage", "after")


@dataclass(frozen=True)
class Outage:
    """One provider failing for the second quarter of a run: ``begin``/``end`` switch the fault on and off."""

    provider: str
    begin: Callable[[], None]
    end: Callable[[], None]


@dataclass
class EmulatedPair:
    """The seed's two providers emulated on loopback, with a switch that takes runpod down."""

    emulators: dict[str, EmulatorThread]
    config: RouterConfig
    outage: Outage
    note: str
    labels: Labels | None = None
    """What the pair answers from (labelled mode), when it was started with them."""

    @classmethod
    def start(cls, speed: float, seed: int, labels: Labels | None = None, shadow_rate: float = 0.0,
              requests: int = 0) -> EmulatedPair:
        """The pair at ``speed``; with ``labels`` it answers from them, and ``shadow_rate`` > 0 measures quality."""
        from ..emulator import EmulatorSettings, EmulatorThread, get_profile

        emulators = {}
        for offset, name in enumerate(("cerebras", "runpod")):
            # No Retry-After on the outage's 503s: a cool-down's length in wall-clock time would decide which
            # requests skip the provider, and the figures would change with the machine's speed.
            emulators[name] = EmulatorThread(EmulatorSettings(get_profile(name), speed=speed, seed=seed + offset,
                                                              retry_after_s=0.0, labels=labels))
        runpod = emulators["runpod"]
        pace = ("emulated providers answering at once" if speed == float("inf") else
                f"emulated providers at {speed:g}x real speed (multiply latencies by {speed:g} for real time)")
        settings = shadow_settings(shadow_rate, requests) if shadow_rate > 0 else {}
        return cls(emulators, emulated_config({n: e.base_url for n, e in emulators.items()}, speed, **settings),
                   Outage("runpod", lambda: runpod.set_faults({"503": 1.0}), lambda: runpod.set_faults({})),
                   f"{pace}; runpod answers 503 for the second quarter of each run; seed {seed}", labels)

    def stop(self) -> None:
        for emulator in self.emulators.values():
            emulator.stop()


@dataclass
class StrategyRun:
    strategy: str
    results: list[RouteResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    baseline_usd: float = 0.0
    split_by_phase: dict[str, Counter[str]] = field(default_factory=lambda: {p: Counter() for p in PHASES})
    """Which provider answered, before, during and after the outage (all under ``before`` without one)."""
    decisions_by_phase: dict[str, Counter[str]] = field(default_factory=lambda: {p: Counter() for p in PHASES})
    """quality_aware: the tier each prompt was scored into (``strong``/``weak``), whoever answered it."""
    served: list[tuple[str, str]] = field(default_factory=list)
    """(prompt, provider) of each answered request: with the labels, the true quality kept."""
    shadow: dict[str, Any] | None = None
    """Shadow evaluation's counts (sampled, completed, dropped by reason, spend) when it ran; every sampled
    request was graded or dropped before the run ended."""

    def summary(self, config: RouterConfig, labels: Labels | None = None) -> dict[str, Any]:
        latencies = sorted(r.latency_ms for r in self.results)
        tokens = sum(r.total_tokens for r in self.results)
        # fsum: the same answers give the same figure whatever order they arrived in.
        spend = math.fsum(r.cost_usd for r in self.results)
        return {
            "strategy": self.strategy,
            "requests": len(self.results) + len(self.errors),
            "split": dict(sorted(Counter(r.provider for r in self.results).items())),
            "split_by_phase": {p: dict(sorted(c.items())) for p, c in self.split_by_phase.items() if c},
            "strong_decisions": _strong_share(sum(self.decisions_by_phase.values(), Counter())),
            "strong_decisions_by_phase": {p: _strong_share(c) for p, c in self.decisions_by_phase.items() if c},
            "tokens": tokens,
            "cost_usd": spend,
            "blended_per_m": per_million(spend, tokens),
            "baseline_usd": self.baseline_usd,
            "savings_pct": 100 * (1 - spend / self.baseline_usd) if self.baseline_usd else 0.0,
            "p50_ms": _percentile(latencies, 50),
            "p95_ms": _percentile(latencies, 95),
            "fallbacks": sum(r.fallback for r in self.results),
            "errors": len(self.errors),
            "true_retained": None if labels is None else true_retained(self.served, labels, config.quality_pair()[0]),
        }


def true_retained(served: list[tuple[str, str]], labels: Labels, reference: str) -> float | None:
    """Right answers among those served over right answers had ``reference`` served every request.

    The truth the shadow estimate is checked against; None when the reference would have been right on nothing.
    """
    right = sum(bool(labels.is_correct(provider, prompt)) for prompt, provider in served)
    reference_right = sum(bool(labels.is_correct(reference, prompt)) for prompt, _ in served)
    return right / reference_right if reference_right else None


def _strong_share(decisions: Counter[str]) -> float | None:
    total = sum(decisions.values())
    return decisions["strong"] / total if total else None


def _percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return math.nan
    if len(sorted_values) == 1:
        return sorted_values[0]
    return statistics.quantiles(sorted_values, n=100, method="inclusive")[int(pct) - 1]


async def run_strategy(
    config: RouterConfig, strategy: RoutingStrategy, requests: list[DemoRequest], *,
    concurrency: int, max_tokens: int, outage: Outage | None = None,
    on_done: Callable[[], None] | None = None, ledger: Ledger | bool | None = None, shadow_seed: int | None = None,
) -> StrategyRun:
    """Send ``requests`` through a fresh router; the outage covers the second quarter of them.

    The run is reproducible: the outage starts and ends between requests (those in flight finish first),
    and after it requests go one at a time, each at the moment the provider's breaker lets a probe
    through, until the breaker has closed again. So which requests saw the outage, and which fell back,
    does not depend on how fast the machine is. With shadow evaluation in the config, the run ends when every
    sampled request is graded; ``shadow_seed`` seeds the sample. Shadowing pauses from the outage until the
    breaker has closed again: shadow calls to the failing provider would trip its breaker at moments that
    depend on timing (and never reset it under a strategy that does not send it traffic).
    """
    run = StrategyRun(strategy.value)
    baseline_price = config.providers[config.baseline()].routing_price
    limit = asyncio.Semaphore(concurrency)
    start_at, end_at = len(requests) // 4, len(requests) // 2
    tasks: list[asyncio.Task[None]] = []

    async def one(request: DemoRequest, phase: str) -> None:
        try:
            result = await router.chat(request.messages, max_tokens=max_tokens, tags=request.tags, **request.params)
        except LLMRouteError as exc:
            run.errors.append(str(exc).splitlines()[0])
        else:
            run.results.append(result)
            run.served.append((request.prompt, result.provider))
            run.split_by_phase[phase][result.provider] += 1
            if result.route_decision:
                run.decisions_by_phase[phase][result.route_decision] += 1
            run.baseline_usd += cost_usd(baseline_price, result.prompt_tokens, result.completion_tokens)
        finally:
            limit.release()
            if on_done:
                on_done()

    async def drain() -> None:
        await asyncio.gather(*tasks)
        tasks.clear()

    async with LLMRouter(strategy=strategy, config=config, ledger=ledger) as router:
        shadow = getattr(router, "shadow", None)
        if shadow is not None and shadow_seed is not None:
            shadow.rng = random.Random(f"{shadow_seed}:{strategy.value}")
        phase, paused_rate = PHASES[0], None
        for i, request in enumerate(requests):
            if outage and i in (start_at, end_at):
                await drain()
                if shadow is not None and i == start_at:
                    await shadow.drain()
                    shadow.rate, paused_rate = 0.0, shadow.rate
                (outage.begin if i == start_at else outage.end)()
                phase = PHASES[1] if i == start_at else PHASES[2]
            breaker = router.state.breaker(outage.provider) if outage and phase == PHASES[2] else None
            recovering = breaker is not None and breaker.state != CLOSED
            if shadow is not None and paused_rate is not None and phase == PHASES[2] and not recovering:
                shadow.rate, paused_rate = paused_rate, None
            if recovering:
                await drain()
                await asyncio.sleep(breaker.retry_in_s())  # the breaker's own schedule: its next probe
            await limit.acquire()
            tasks.append(asyncio.create_task(one(request, phase)))
            if recovering:
                await drain()
        await drain()
        if outage:
            outage.end()
        if shadow is not None:
            await shadow.drain()
            run.shadow = shadow.snapshot()
    return run


@contextmanager
def recording(config: RouterConfig, path: Path | None, *, measuring: bool) -> Iterator[Ledger | bool]:
    """The ledger an emulated run records to: ``path``, else a scratch one when measuring quality needs it, else none.

    An unusable ``path`` raises LLMRouteError; the ledger is closed (and a scratch one removed) on leaving.
    """
    with ExitStack() as stack:
        if path is None and measuring:
            path = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="llmroute-demo-"))) / "demo.sqlite"
        if path is None:
            yield False
            return
        ledger = Ledger(open_store(str(path)))
        stack.callback(ledger.close)
        ledger.store.put_prices(price_rows(config), time.time())
        yield ledger


def run_all(
    config: RouterConfig, requests: list[DemoRequest], progress: Callable[[str], Callable[[], None]], *,
    concurrency: int, max_tokens: int, outage: Outage | None, ledger: Ledger | bool | None, seed: int,
    labels: Labels | None,
) -> list[dict[str, Any]]:
    """Every strategy's summary, one after the other; ``progress(name)`` gives the callback each answer calls.

    With shadow evaluation on and a ledger to keep the graded pairs in, each summary has ``measured``: the
    retained quality read back from the pairs; with ``labels``, ``true_retained``: the truth.
    """
    summaries = []
    for strategy in RoutingStrategy:
        started = time.time()
        run = asyncio.run(run_strategy(config, strategy, requests, concurrency=concurrency, max_tokens=max_tokens,
                                       outage=outage, on_done=progress(strategy.value), ledger=ledger,
                                       shadow_seed=seed))
        summaries.append(run.summary(config, labels))
        if run.shadow is not None and isinstance(ledger, Ledger):
            counts = {key: run.shadow[key] for key in ("sampled", "completed", "dropped")}
            summaries[-1]["measured"] = {**measured_retained(ledger, strategy.value, started), **counts}
    return summaries


def targets(config: RouterConfig) -> dict[str, str]:
    """What each strategy aims for, in words: the split ``llmroute plan`` expects, or the rule it follows."""
    from ..plan import plan

    rules = {RoutingStrategy.COST_OPTIMIZED: "cheapest first", RoutingStrategy.LATENCY_OPTIMIZED: "fastest first",
             RoutingStrategy.QUALITY_OPTIMIZED: "best first"}
    try:
        _, rows = plan(config, 10**6)
    except LLMRouteError:  # a config plan cannot price (no quality model for quality_aware): rules only
        rows = []
    shares = {row.strategy: row.share for row in rows}
    out = {}
    for strategy in RoutingStrategy:
        if strategy in rules:
            out[strategy.value] = rules[strategy]
        else:
            out[strategy.value] = split_text(shares.get(strategy.value, {}), display_order(config))
    strong, _ = config.quality_pair() if len(config.providers) > 1 else (None, None)
    share = shares.get(RoutingStrategy.QUALITY_AWARE.value, {}).get(strong or "")
    if share is not None:
        out[RoutingStrategy.QUALITY_AWARE.value] += f" (strong {share:.0%})"
    return out


def display_order(config: RouterConfig) -> list[str]:
    """Providers by balanced weight, heaviest first: the order every split in the demo is written in."""
    weights = config.weights()
    return sorted(config.providers, key=lambda n: (-weights[n], n))


def split_text(counts: dict[str, float], order: list[str]) -> str:
    """'80/20': each provider's share in %, in ``order``; '-' when nothing was served."""
    total = sum(counts.values())
    if not total:
        return "-"
    return "/".join(f"{100 * counts.get(n, 0) / total:.0f}" for n in order)


def demo_tables(summaries: list[dict[str, Any]], config: RouterConfig, note: str, outage: bool) -> list[Table]:
    """What each strategy aimed for beside what it did, then cost and latency; each fits in 100 columns."""
    order = display_order(config)
    aims = targets(config)
    phases = PHASES if outage else PHASES[:1]
    headers = {"before": "before" if outage else "split", "outage": "outage", "after": "after"}
    caption = f"splits: % of answers from {'/'.join(order)}" + (", before, during and after the outage" if outage else "")
    aware = next((s for s in summaries if s["strategy"] == RoutingStrategy.QUALITY_AWARE.value), None)
    if aware and aware["strong_decisions"] is not None:
        by_phase = aware["strong_decisions_by_phase"]
        caption += (f"; quality_aware scored {aware['strong_decisions']:.0%} of prompts as needing the strong tier"
                    + (" (" + ", ".join(f"{p} {by_phase[p]:.0%}" for p in phases if p in by_phase) + ")"
                       if outage else "")
                    + "; while the weak tier is down, its prompts go to the strong one too")
    did = Table(title="llmroute demo: what each strategy aimed for, and did", title_justify="left",
                caption=caption, caption_justify="left")
    for column in ("strategy", "target", *(headers[p] for p in phases), "fallbacks"):
        did.add_column(column, justify="left" if column in ("strategy", "target") else "right", no_wrap=True)
    for s in summaries:
        cells = [split_text(s["split_by_phase"].get(p, {}), order) for p in phases]
        did.add_row(s["strategy"], aims.get(s["strategy"], "-"), *cells, str(s["fallbacks"]))
    cost = Table(title=f"cost and latency (saved: against sending every request to {config.baseline()})",
                 title_justify="left", caption=note, caption_justify="left")
    for column in ("strategy", "requests", "cost", "$/1M", "saved", "p50 ms", "p95 ms", "errors"):
        cost.add_column(column, justify="left" if column == "strategy" else "right", no_wrap=True)
    for s in summaries:
        cost.add_row(
            s["strategy"], str(s["requests"]), f"${s['cost_usd']:.6f}", format_price_per_m(s["blended_per_m"]),
            f"{round(s['savings_pct'])}%", f"{s['p50_ms']:,.0f}", f"{s['p95_ms']:,.0f}",
            Text(str(s["errors"]), style="red") if s["errors"] else "0",
        )
    return [did, cost]


def emulated_config(base_urls: dict[str, str], speed: float = 1.0, **settings: Any) -> RouterConfig:
    """A config for the shipped emulator profiles at the given addresses, plus any top-level ``settings``.

    Emulators run ``speed`` times faster than real providers, so the breaker's clocks run faster too.
    """
    from ..emulator import get_profile

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
    return load_config({"providers": providers, "strategy": "balanced", "breaker": breaker, **settings})
