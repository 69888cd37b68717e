"""Prometheus metrics, labelled by provider and strategy.

Label children are cached per label set: ``labels()`` costs more than the
increment itself, and this runs on every request. In one process, an answered
request's counters add up in a list and reach prometheus when ``/metrics`` is
scraped: an ``inc`` costs more than the rest of the bookkeeping. With several
workers every increment goes to the shared files at once, so a scrape answered
by any worker counts every request.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..result import RouteResult

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from ..evaluation.shadow import Shadow
    from ..providers.poolstats import PoolStats
    from ..quality.retained import Estimate
    from ..state import RouterState

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
POOL_WAIT_BUCKETS_S = (0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST
PACING_GAUGES = {
    "target_usd": "Pacing: what the budget's path says should be spent by now",
    "spend_usd": "Pacing: what the budget has spent this period, as pacing saw it",
    "share": "Pacing: the strong share it sets now",
    "projected_end_usd": "Pacing: the spend it projects at the end of the period",
}
"""The fields of a budget's ``pacing`` state exported as ``llmroute_budget_pacing_<field>``."""


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None, collect_registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._collect = collect_registry if collect_registry is not None else self.registry
        r = self.registry
        self.requests = Counter("llmroute_requests", "Requests answered, by final provider",
                                ["strategy", "provider", "endpoint"], registry=r)
        self.errors = Counter("llmroute_errors", "Requests that got an error response",
                              ["strategy", "code"], registry=r)
        self.rejected = Counter("llmroute_rejected_requests",
                                "Requests the gateway refused itself before any provider saw them",
                                ["status", "code"], registry=r)
        self.attempt_failures = Counter("llmroute_attempt_failures", "Failed provider attempts",
                                        ["provider", "kind"], registry=r)
        self.fallbacks = Counter("llmroute_fallbacks", "Requests answered by a provider other than the first choice",
                                 ["strategy", "provider"], registry=r)
        self.tokens = Counter("llmroute_tokens", "Tokens from provider usage", ["strategy", "provider", "type"], registry=r)
        self.cost = Counter("llmroute_cost_usd", "US dollars spent, from usage and configured prices",
                            ["strategy", "provider"], registry=r)
        self.latency = Histogram("llmroute_request_latency_seconds", "Request latency as the client saw it",
                                 ["strategy", "provider"], buckets=LATENCY_BUCKETS_S, registry=r)
        self.ttft = Histogram("llmroute_time_to_first_token_seconds", "Streams: time to the first token",
                              ["strategy", "provider"], buckets=LATENCY_BUCKETS_S, registry=r)
        self.ledger_written = Counter("llmroute_ledger_written", "Requests committed to the ledger", registry=r)
        self.ledger_dropped = Counter("llmroute_ledger_dropped",
                                      "Ledger entries not stored: queue full, store unavailable past ledger.retry_s, or a row refused",
                                      registry=r)
        self.breaker_state = Gauge("llmroute_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open",
                                   ["provider"], registry=r, multiprocess_mode="max")
        self.breaker_transitions = Counter("llmroute_breaker_transitions", "Circuit breaker changes of state",
                                           ["provider", "state"], registry=r)
        self.shadow_sampled = Counter("llmroute_shadow_sampled", "Answered requests sampled for shadow evaluation",
                                      registry=r)
        self.shadow_completed = Counter("llmroute_shadow_completed", "Shadow evaluations recorded as graded pairs",
                                        ["graded"], registry=r)
        self.shadow_dropped = Counter("llmroute_shadow_dropped", "Sampled requests not shadowed (queue_full, queue_bytes, "
                                      "budget, circuit_open, rate_limit_headroom, cooling_down, shutdown)", ["reason"],
                                      registry=r)
        self.shadow_cost = Counter("llmroute_shadow_cost_usd", "US dollars spent measuring quality, not serving",
                                   ["kind"], registry=r)
        self.quality_retained = Gauge("llmroute_quality_retained", "Retained quality over the latest graded pairs "
                                      "(served over reference), with its 95% interval", ["bound"], registry=r,
                                      multiprocess_mode="liveall")
        self.quality_retained_pairs = Gauge("llmroute_quality_retained_pairs", "Graded pairs behind "
                                            "llmroute_quality_retained", registry=r, multiprocess_mode="liveall")
        self.state_backend_up = Gauge("llmroute_state_backend_up", "Shared state backend (Redis) reachable: 1 yes, "
                                      "0 serving from local state", registry=r, multiprocess_mode="min")
        self.state_backend_lost = Counter("llmroute_state_backend_lost", "Times the shared state backend was "
                                          "lost and local state took over", registry=r)
        self.budget_spent = Gauge("llmroute_budget_spent_usd", "Spent in the budget's current period, reservations "
                                  "in flight included", ["budget"], registry=r, multiprocess_mode="max")
        self.budget_limit = Gauge("llmroute_budget_limit_usd", "The budget's limit per period", ["budget"], registry=r,
                                  multiprocess_mode="max")
        self.budget_left = Gauge("llmroute_budget_left_usd", "What the budget has left this period (limit less spent "
                                 "and reserved)", ["budget"], registry=r, multiprocess_mode="min")
        self.pacing = {field: Gauge(f"llmroute_budget_pacing_{field}", help_text, ["budget"], registry=r,
                                    multiprocess_mode="max") for field, help_text in PACING_GAUGES.items()}
        spend_labels = ["window", "dimension", "name"]
        self.spend_usd = Gauge("llmroute_spend_usd", "US dollars spent in the window (day: today UTC; period: "
                               "spend.period), per key, tag or provider, and all", spend_labels, registry=r,
                               multiprocess_mode="max")
        self.spend_tokens = Gauge("llmroute_spend_tokens", "Tokens in the window, per key, tag or provider, and all",
                                  spend_labels, registry=r, multiprocess_mode="max")
        self.spend_requests = Gauge("llmroute_spend_requests", "Requests in the window (providers: attempts answered "
                                    "or billed), per key, tag or provider, and all", spend_labels, registry=r,
                                    multiprocess_mode="max")
        self.pool_in_use = Gauge("llmroute_pool_in_use", "Connections to the provider in use now (set when scraped)",
                                 ["provider"], registry=r, multiprocess_mode="livesum")
        self.pool_waiting = Gauge("llmroute_pool_waiting", "Requests waiting for a free connection to the provider "
                                  "now (set when scraped)", ["provider"], registry=r, multiprocess_mode="livesum")
        self.pool_max = Gauge("llmroute_pool_max_connections", "The provider's max_connections, per worker",
                              ["provider"], registry=r, multiprocess_mode="max")
        self.pool_wait = Histogram("llmroute_pool_wait_seconds", "Waits for a free connection to the provider, by "
                                   "outcome (slot, timeout: went to the next provider, cancelled); a request that "
                                   "found one free is not counted", ["provider", "outcome"],
                                   buckets=POOL_WAIT_BUCKETS_S, registry=r)
        self._pools: Mapping[str, PoolStats] = {}
        self._children: dict[tuple[str, str, str], _Answered] = {}
        self._batched = self._collect is self.registry
        """One process: answered requests' counters wait in ``_Answered.pending`` until scraped (``flush``)."""

    def _for(self, strategy: str, provider: str, endpoint: str) -> _Answered:
        key = (strategy, provider, endpoint)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = _Answered(
                self.requests.labels(strategy, provider, endpoint),
                self.tokens.labels(strategy, provider, "prompt"),
                self.tokens.labels(strategy, provider, "completion"),
                self.cost.labels(strategy, provider),
                self.latency.labels(strategy, provider),
                [0, 0, 0, 0.0] if self._batched else None,
            )
        return children

    def observe(self, result: RouteResult, endpoint: str) -> None:
        children = self._for(result.strategy, result.provider, endpoint)
        pending = children.pending
        one_attempt = len(result.attempts) <= 1
        if pending is not None:
            pending[0] += 1
            pending[1] += result.prompt_tokens
            pending[2] += result.completion_tokens
            if one_attempt:
                pending[3] += result.cost_usd
        else:
            children.requests.inc()
            children.prompt.inc(result.prompt_tokens)
            children.completion.inc(result.completion_tokens)
            if one_attempt:
                children.cost.inc(result.cost_usd)
        if not one_attempt:  # what each attempt was billed goes to its provider, as in the ledger (GPU time of a failed one)
            for attempt in result.attempts:
                if attempt.cost_usd:
                    self.cost.labels(result.strategy, attempt.provider).inc(attempt.cost_usd)
        children.latency.observe(result.latency_ms / 1000)
        if result.ttft_ms is not None:
            self.ttft.labels(result.strategy, result.provider).observe(result.ttft_ms / 1000)
        if result.fallback:
            self.observe_failures(result.attempts)
            self.fallbacks.labels(result.strategy, result.provider).inc()

    def observe_failures(self, attempts: list[Any], strategy: str | None = None) -> None:
        """Failed attempts by kind; with ``strategy`` (a request that got no answer), what they were billed too."""
        for attempt in attempts:
            if not attempt.ok:
                self.attempt_failures.labels(attempt.provider, attempt.kind).inc()
                if strategy is not None and attempt.cost_usd:
                    self.cost.labels(strategy, attempt.provider).inc(attempt.cost_usd)

    def observe_rejected(self, status: int, code: str | None) -> None:
        self.rejected.labels(str(status), code or "").inc()

    def observe_error(self, strategy: str, code: str) -> None:
        self.errors.labels(strategy, code).inc()

    def watch_state_backend(self, state: RouterState) -> None:
        """Export whether a shared state's backend is reachable, and count the times it was lost."""
        def changed(up: bool) -> None:
            self.state_backend_up.set(1 if up else 0)
            if not up:
                self.state_backend_lost.inc()

        self.state_backend_up.set(0)
        state.on_backend_change = changed
    def observe_budgets(self, budgets: dict[str, dict[str, Any]]) -> None:
        """The budgets' spend, limits and what is left, as ``Budgets.snapshot`` reports them, and their pacing
        state where they have one (set when scraped)."""
        for name, budget in budgets.items():
            self.budget_spent.labels(name).set(budget["spent_usd"] + budget["reserved_usd"])
            self.budget_limit.labels(name).set(budget["usd"])
            if "left_usd" in budget:
                self.budget_left.labels(name).set(budget["left_usd"])
            pacing = budget.get("pacing")
            if isinstance(pacing, dict):
                for field, gauge in self.pacing.items():
                    value = pacing.get(field)
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        gauge.labels(name).set(value)

    def observe_spend(self, spend: dict[str, Any]) -> None:
        """Live spend, as ``LiveSpend.snapshot`` reports it (set when scraped). Names are bounded there
        (``spend.max_series`` per dimension); a name of a past period is dropped."""
        for gauge in (self.spend_usd, self.spend_tokens, self.spend_requests):
            gauge.clear()
        for window, key in (("day", "today"), ("period", "this_period")):
            view = spend[key]
            self._spend_series(window, "all", "all", view["all"])
            for dimension, series in (("key", view["keys"]), ("tag", view["tags"]), ("provider", view["providers"])):
                for name, sums in series.items():
                    self._spend_series(window, dimension, name, sums)

    def _spend_series(self, window: str, dimension: str, name: str, sums: dict[str, Any]) -> None:
        self.spend_usd.labels(window, dimension, name).set(sums["cost_usd"])
        self.spend_tokens.labels(window, dimension, name).set(sums["tokens"])
        self.spend_requests.labels(window, dimension, name).set(sums["requests"])

    def watch_shadow(self, shadow: Shadow) -> None:
        """Count what shadow evaluation does, and export its live retained-quality estimate."""
        shadow.on_sampled = self.shadow_sampled.inc
        shadow.on_completed = lambda graded: self.shadow_completed.labels("true" if graded else "false").inc()
        shadow.on_dropped = lambda reason: self.shadow_dropped.labels(reason).inc()
        counted = shadow.on_spend  # what already listens (live spend) keeps listening

        def on_spend(kind: str, usd: float) -> None:
            counted(kind, usd)
            self.shadow_cost.labels(kind).inc(usd)

        shadow.on_spend = on_spend
        shadow.on_estimate = self._estimate

    def _estimate(self, estimate: Estimate) -> None:
        for bound, value in (("estimate", estimate.value), ("low", estimate.low), ("high", estimate.high)):
            self.quality_retained.labels(bound).set(value)
        self.quality_retained_pairs.set(estimate.pairs)

    def watch_pools(self, pools: Mapping[str, PoolStats]) -> None:
        """Export each provider's pool: its waits as they end, slots in use and waiters when scraped."""
        self._pools = pools
        for name, stats in pools.items():
            self.pool_max.labels(name).set(stats.max_connections)
            stats.on_wait = self._pool_waited(name)

    def _pool_waited(self, provider: str) -> Callable[[float, str], None]:
        children: dict[str, Any] = {}

        def observe(waited_s: float, outcome: str) -> None:
            child = children.get(outcome)
            if child is None:
                child = children[outcome] = self.pool_wait.labels(provider, outcome)
            child.observe(waited_s)

        return observe

    def flush(self) -> None:
        """Hand the counters waiting in this process to prometheus (``render`` does, before every scrape)."""
        for children in self._children.values():
            pending = children.pending
            if pending is None or not pending[0]:
                continue
            requests, prompt_tokens, completion_tokens, cost_usd = pending
            pending[:] = (0, 0, 0, 0.0)
            children.requests.inc(requests)
            children.prompt.inc(prompt_tokens)
            children.completion.inc(completion_tokens)
            children.cost.inc(cost_usd)

    def render(self) -> bytes:
        self.flush()
        for name, stats in self._pools.items():  # read now, when scraped: nothing on the request path
            self.pool_in_use.labels(name).set(stats.in_use)
            self.pool_waiting.labels(name).set(stats.waiting)
        return generate_latest(self._collect)


class _Answered(NamedTuple):
    """The label children an answered request counts in, and (in one process) its counts not yet handed on:
    [requests, prompt tokens, completion tokens, cost_usd]."""

    requests: Any
    prompt: Any
    completion: Any
    cost: Any
    latency: Any
    pending: list[Any] | None


def multiprocess_registry() -> CollectorRegistry | None:
    """With several workers, /metrics must add up every worker's numbers."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry
