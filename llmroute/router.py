"""LLMRouter: select providers with a strategy, call them through the cascade, return a result."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .breaker import log_transition
from .cascade import Cascade, race
from .config import RouterConfig, load_config
from .errors import AllProvidersFailed, ClientRequestError, ConfigError, ProviderError, StreamInterrupted
from .health import HealthMonitor
from .ledger import Ledger, RequestContext, entry_from_failure, entry_from_result, open_ledger
from .pricing import Pricer, per_million
from .providers import OpenAICompatProvider, ProviderResponse
from .result import Attempt, RouteResult, request_headers
from .spend import LiveSpend, live_spend
from .state import ColdStartSettings, InMemoryState, RouterState
from .stream import RouteStream, bill_attempt
from .strategies import Route, RouteRequest, RoutingStrategy, StrategyBase, StrongShare, build_strategy
from .tokens import estimate_message_tokens, estimate_tokens

if TYPE_CHECKING:
    from .evaluation.shadow import Shadow
    from .ledger.pairs import GradedPair

CHAT_PATH = "/chat/completions"
COMPLETIONS_PATH = "/completions"
MEASURED_DAYS = 30
"""Graded pairs older than this are not read back at start-up (the live estimate, quality targets)."""
MEASURED_PAIRS = 50_000
"""At most this many of the latest graded pairs are read back at start-up: an interval over 50,000 pairs is
already a fraction of a point wide, and a busy ledger must not make start-up slow."""

log = logging.getLogger("llmroute")

Messages = Sequence[Mapping[str, Any]]


class LLMRouter:
    """Routes OpenAI-style requests across the configured providers.

    ``strategy`` is the default for every call (the config's ``strategy`` if not
    given); any call may name another with ``strategy=``.
    """

    def __init__(
        self,
        strategy: RoutingStrategy | str | None = None,
        config: str | os.PathLike[str] | Mapping[str, Any] | RouterConfig | None = None,
        *,
        state: RouterState | None = None,
        ledger: Ledger | bool | None = None,
    ) -> None:
        """``ledger``: None records where the config says (by default SQLite in the user's data
        directory), False records nothing, or pass an open ``Ledger`` (which the caller then closes)."""
        self.config = load_config(config)
        self.default_strategy = RoutingStrategy(strategy or self.config.strategy)
        self.state = state or build_state(self.config)
        self.spend: LiveSpend | None = live_spend(self.state, self.config.spend)
        """Spend today and this period per key, tag and provider (one per state: routers sharing it share it)."""
        self.providers = {name: OpenAICompatProvider(p) for name, p in self.config.providers.items()}
        self.pricers = {name: Pricer(p) for name, p in self.config.providers.items()}
        self.health = HealthMonitor(self)
        self._owns_ledger = ledger is None or ledger is True
        self.ledger: Ledger | None = open_ledger(self.config) if self._owns_ledger else (ledger or None)
        self._strategies: dict[RoutingStrategy, StrategyBase] = {}
        min_quality = self.config.quality_aware.target.min_quality
        if (self.default_strategy is RoutingStrategy.QUALITY_AWARE or self.config.quality_aware.model is not None
                or min_quality is not None):
            self.strategy(RoutingStrategy.QUALITY_AWARE)  # load the model now: a bad file fails here, not on a request
        self.shadow: Shadow | None = None
        """Shadow evaluation (``shadow.rate`` above 0): a sample of answers graded against the other tier."""
        if self.config.shadow.rate > 0 and len(self.providers) > 1:
            from .evaluation.shadow import Shadow

            self.shadow = Shadow(self.config, self.providers, self.pricers, self.state, self.ledger)
            if self.spend is not None:
                self._count_shadow_spend(self.shadow, self.spend)
        if self.shadow is not None or min_quality is not None:
            pairs = self._graded_pairs()
            if self.shadow is not None:
                self.shadow.seed(pairs, spent_today_usd=self._shadow_spent_today_usd())
            if min_quality is not None:
                self._measure_quality_target(pairs, min_quality)

    def strategy(self, name: RoutingStrategy | str | None = None) -> StrategyBase:
        """The strategy object for ``name`` (the default if None), built once."""
        built = self._strategies.get(name if name is not None else self.default_strategy)  # a str finds its StrEnum
        if built is not None:
            return built
        key = RoutingStrategy(name) if name is not None else self.default_strategy
        built = self._strategies.get(key)
        if built is None:
            built = self._strategies[key] = build_strategy(key, self.config, self.state)
        return built

    async def __aenter__(self) -> LLMRouter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Finish (or, past a bound, cancel) shadow work, stop health checks, close provider connections and
        commit what the ledger has queued."""
        if self.shadow is not None:
            await self.shadow.aclose()
        await self.health.aclose()
        if self.spend is not None:
            self.spend.flush()  # before the state closes: a shared one sends it on
        await self.state.aclose()
        for provider in self.providers.values():
            await provider.aclose()
        if self.ledger is not None and self._owns_ledger:
            ledger, self.ledger = self.ledger, None
            await asyncio.to_thread(ledger.close)

    # -- public calls -------------------------------------------------------------

    async def generate(self, prompt: str, max_tokens: int = 500, **params: Any) -> RouteResult:
        """The seed's call: one user prompt in, one routed answer out."""
        return await self.chat([{"role": "user", "content": prompt}], max_tokens=max_tokens, **params)

    async def chat(
        self, messages: Messages, *, strategy: RoutingStrategy | str | None = None,
        extra_headers: Mapping[str, str] | None = None, tags: Mapping[str, str] | None = None, **params: Any,
    ) -> RouteResult:
        """A full chat-completions request; ``params`` are passed to the provider as they are.

        ``tags`` label the request in the ledger (``{"team": "sales"}``), for ``llmroute report --by tag``.
        """
        return await self.chat_request({**params, "messages": list(messages)}, strategy=strategy,
                                       extra_headers=extra_headers, context=_context(tags, params, "chat"))

    async def complete(
        self, prompt: str, *, strategy: RoutingStrategy | str | None = None,
        extra_headers: Mapping[str, str] | None = None, tags: Mapping[str, str] | None = None, **params: Any,
    ) -> RouteResult:
        """A legacy ``/completions`` request."""
        return await self.completion_request({**params, "prompt": prompt}, strategy=strategy,
                                             extra_headers=extra_headers, context=_context(tags, params, "completions"))

    def stream(
        self, messages: Messages | None = None, *, prompt: str | None = None,
        strategy: RoutingStrategy | str | None = None, extra_headers: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None, resume: bool | None = None, **params: Any,
    ) -> RouteStream:
        """Stream a chat completion. Iterate for chunks; ``.result`` is set when it ends.

        ``resume`` (default: the config's ``stream_resume``) continues an answer on the next provider
        when one fails mid-stream, instead of raising ``StreamInterrupted``.
        """
        if messages is None:
            if prompt is None:
                raise TypeError("stream() needs messages or prompt")
            messages = [{"role": "user", "content": prompt}]
        return self.stream_request({**params, "messages": list(messages)}, strategy=strategy,
                                   extra_headers=extra_headers, context=_context(tags, params, "chat"), resume=resume)

    # -- request bodies as they arrive (the gateway's entry points) -----------------

    async def chat_request(
        self, body: Mapping[str, Any], *, strategy: RoutingStrategy | str | None = None,
        extra_headers: Mapping[str, str] | None = None, context: RequestContext | None = None,
        strong_share: StrongShare | None = None, prompt_tokens: int | None = None,
    ) -> RouteResult:
        """An OpenAI chat-completions body, every field passed through; ``model`` is set per provider.

        ``context`` (route, gateway key id, user, tags) goes to the ledger only. ``strong_share``: a paced
        budget's share of strong calls, for the strategies that have one (quality_aware, balanced).
        ``prompt_tokens``: the prompt's estimate if the caller made it already (``tokens.prompt_estimate``).
        """
        if prompt_tokens is None:
            prompt_tokens = estimate_message_tokens(body["messages"])
        estimate = self._estimate(prompt_tokens, body, messages=body["messages"], strong_share=strong_share)
        return await self._call(CHAT_PATH, body, estimate, strategy, extra_headers, context)

    async def completion_request(
        self, body: Mapping[str, Any], *, strategy: RoutingStrategy | str | None = None,
        extra_headers: Mapping[str, str] | None = None, context: RequestContext | None = None,
        strong_share: StrongShare | None = None, prompt_tokens: int | None = None,
    ) -> RouteResult:
        """An OpenAI legacy completions body (``prompt`` a string); ``prompt_tokens`` as for ``chat_request``."""
        prompt = str(body["prompt"])
        estimate = self._estimate(estimate_tokens(prompt) if prompt_tokens is None else prompt_tokens, body,
                                  prompt=prompt, strong_share=strong_share)
        return await self._call(COMPLETIONS_PATH, body, estimate, strategy, extra_headers, context)

    def stream_request(
        self, body: Mapping[str, Any], *, strategy: RoutingStrategy | str | None = None,
        extra_headers: Mapping[str, str] | None = None, path: str = CHAT_PATH,
        context: RequestContext | None = None, resume: bool | None = None, strong_share: StrongShare | None = None,
        prompt_tokens: int | None = None,
    ) -> RouteStream:
        """Stream a chat (or, with ``path=COMPLETIONS_PATH``, a completions) body.

        Usage is always requested upstream, so cost is known whatever the caller asked. ``prompt_tokens`` as
        for ``chat_request``.
        """
        upstream = {**body, "stream": True, "stream_options": {**(body.get("stream_options") or {}), "include_usage": True}}
        if path == CHAT_PATH:
            if prompt_tokens is None:
                prompt_tokens = estimate_message_tokens(body["messages"])
            estimate = self._estimate(prompt_tokens, body, messages=body["messages"], strong_share=strong_share)
        else:
            prompt = str(body["prompt"])
            estimate = self._estimate(estimate_tokens(prompt) if prompt_tokens is None else prompt_tokens, body,
                                      prompt=prompt, strong_share=strong_share)
        return RouteStream(self, upstream, estimate, strategy, extra_headers, path, context,
                           resume=self.config.stream_resume if resume is None else resume)

    # -- measured quality -----------------------------------------------------------

    def _graded_pairs(self) -> list[GradedPair]:
        """The ledger's recent graded pairs; none (and a warning) when they cannot be read."""
        if self.ledger is None:
            return []
        from .quality_report import load_pairs

        try:
            reader = self.ledger.store.reader()
            try:
                # No text: start-up needs grades and costs, and 30 days of stored prompts and answers can be large.
                return load_pairs(reader, since_ts=time.time() - MEASURED_DAYS * 86400, with_text=False,
                                  latest=MEASURED_PAIRS)
            finally:
                reader.close()
        except Exception as exc:  # an older store, a locked file: measure from scratch, loudly
            log.warning("graded pairs could not be read from the ledger (%s: %s); today's shadow spend and the "
                        "measured quality start from zero", type(exc).__name__, str(exc).split("\n")[0])
            return []

    def _shadow_spent_today_usd(self) -> float:
        """What shadow evaluation spent today (UTC) by the ledger, so a restart does not reset the daily cap."""
        if self.ledger is None:
            return 0.0
        from .evaluation.shadow_budget import utc_day
        from .report import measurement_spend

        try:
            reader = self.ledger.store.reader()
            try:
                day_start = utc_day() * 86400.0
                return float(measurement_spend(reader, day_start, day_start + 86400.0, source="shadow")["total_usd"])
            finally:
                reader.close()
        except Exception as exc:
            log.warning("today's shadow spend could not be read from the ledger (%s); the daily cap starts from "
                        "zero in this process", type(exc).__name__)
            return 0.0

    def _measure_quality_target(self, pairs: list[GradedPair], min_quality: float) -> None:
        """quality_aware's ``min_quality`` from this traffic's graded pairs when there are enough, judged by the
        interval's lower bound; else the model's benchmark curve, and the log says quality is not measured."""
        from .evaluation.measured import measured_share
        from .strategies.quality_aware import QualityAware

        strategy = self.strategy(RoutingStrategy.QUALITY_AWARE)
        assert isinstance(strategy, QualityAware)
        needed = self.config.shadow.min_pairs
        strong, weak = self.config.quality_pair()
        measured = measured_share(pairs, min_quality, needed, providers=(strong, weak))
        if measured is None:
            log.warning("quality_aware: quality not measured on your traffic (fewer than %d graded pairs of %s against "
                     "%s with quality scores in the ledger, or none reaching %.1f%%); strong share %.1f%% from the "
                     "model's benchmark curve. Measure it with shadow evaluation (shadow.rate) or llmroute quality "
                     "collect", needed, weak, strong, min_quality * 100, strategy.strong_share * 100)
            return
        strategy.set_strong_share(measured.share, measured=True)
        estimate = measured.estimate
        figures = (f"retained quality {estimate.value:.1%} (95% CI {estimate.low:.1%}-{estimate.high:.1%})"
                   if estimate is not None else "retained quality unknown")
        log.info("quality_aware: strong share %.1f%% measured for min_quality %.1f%% from %d graded pairs (%s) by the "
                 "interval's lower bound: %s", measured.share * 100, min_quality * 100, measured.pairs,
                 ", ".join(measured.graders), figures)

    # -- internals ----------------------------------------------------------------

    def _estimate(self, input_tokens: int, params: Mapping[str, Any], *, prompt: str | None = None,
                  messages: Messages | None = None, strong_share: StrongShare | None = None) -> RouteRequest:
        output = params.get("max_completion_tokens") or params.get("max_tokens")
        if not isinstance(output, int) or output <= 0:
            output = self.config.expected_output_tokens  # the provider judges bad values itself
        return RouteRequest(input_tokens=input_tokens, output_tokens=output, prompt=prompt, messages=messages,
                            strong_share=strong_share)

    def _cascade(self, estimate: RouteRequest, strategy: RoutingStrategy | str | None) -> tuple[Cascade, str, Route]:
        chosen = self.strategy(strategy)
        route = chosen.route(estimate)
        cascade = self._cascade_for(route.order, estimate, retry_rounds=self.config.retry_rounds)
        return cascade, chosen.name.value, route

    def _cascade_for(self, order: list[str], estimate: RouteRequest, *, retry_rounds: int = 0,
                     deadline_s: float | None = None, note_reorder: bool = True) -> Cascade:
        """A cascade over ``order``: a strategy's, a resumed stream's remaining providers, or a hedge's."""
        return Cascade(
            self.providers, self.state, order, deadline_s=deadline_s or self.config.deadline_s,
            retry_rounds=retry_rounds, pricers=self.pricers, max_retry_wait_s=self.config.max_retry_wait_s,
            tokens_needed=estimate.input_tokens + estimate.output_tokens, note_reorder=note_reorder,
        )

    def _hedge_delay_s(self, strategy_name: str, cascade: Cascade) -> float | None:
        """How long to wait before hedging this request; None when its strategy does not hedge."""
        hedge = self.config.hedge
        if strategy_name not in hedge.strategies or len(cascade.order) < 2:
            return None
        if hedge.after_ms == "p95":
            p95_ms = self.state.latency_p95_ms(cascade.order[0], hedge.min_samples)
            return p95_ms / 1000 if p95_ms is not None else 0.5
        return float(hedge.after_ms) / 1000

    def _hedge_cascade(self, primary: Cascade, estimate: RouteRequest) -> Cascade:
        """The hedge's cascade: the same order without the provider the primary is waiting on."""
        return self._cascade_for([n for n in primary.order if n != primary.current], estimate,
                                 deadline_s=max(0.001, primary.remaining_s()), note_reorder=False)

    def _bill_hedge_loser(self, attempts: list[Attempt], estimate: RouteRequest) -> None:
        """The cancelled side of a hedge was billed too: its worker time, or at least the prompt it read."""
        for attempt in attempts:
            if attempt.kind != "cancelled":
                continue
            attempt.kind = "hedge_cancelled"
            price = self.config.providers[attempt.provider].price_per_m
            if attempt.cost_basis == "tokens" and price is not None:
                attempt.prompt_tokens = estimate.input_tokens
                attempt.cost_usd = estimate.input_tokens * price.input / 1e6

    def _record_failure(
        self, cascade: Cascade, strategy_name: str, request_id: str, started: float, exc: BaseException,
        context: RequestContext | None, *, provider: str | None = None, ttft_ms: float | None = None,
        route: Route | None = None,
    ) -> None:
        attempts = getattr(exc, "attempts", None) or cascade.attempts
        if self.spend is not None:
            self.spend.record(attempts, context, sum(a.prompt_tokens + a.completion_tokens for a in attempts))
        if self.ledger is None:
            return
        if isinstance(exc, StreamInterrupted):
            status = "interrupted"
        elif isinstance(exc, ClientRequestError):
            status = "client_error"
        elif isinstance(exc, (AllProvidersFailed, ProviderError)):
            status = "failed"
        else:
            status = "cancelled"
        self.ledger.record(entry_from_failure(
            request_id=request_id, strategy=strategy_name, status=status, attempts=attempts,
            latency_ms=(time.perf_counter() - started) * 1000, error=str(exc).split("\n")[0] or type(exc).__name__,
            context=context, provider=provider, ttft_ms=ttft_ms,
            quality_score=route.quality_score if route else None, route_decision=route.decision if route else None,
        ))

    async def _call(
        self, path: str, body: dict[str, Any], estimate: RouteRequest,
        strategy: RoutingStrategy | str | None, extra_headers: Mapping[str, str] | None,
        context: RequestContext | None = None,
    ) -> RouteResult:
        self.health.ensure_started()
        cascade, strategy_name, route = self._cascade(estimate, strategy)
        request_id, headers = request_headers(extra_headers)
        started = time.perf_counter()

        def call(provider: OpenAICompatProvider, timeout_s: float) -> Coroutine[Any, Any, ProviderResponse]:
            return provider.request(path, {**body, "model": provider.model}, timeout_s=timeout_s, extra_headers=headers)

        try:
            delay_s = self._hedge_delay_s(strategy_name, cascade)
            if delay_s is None:
                provider, response = await cascade.run(call, call_keeps_timeout=True)  # request() applies timeout_s
            else:
                cascade, provider, response = await race(
                    cascade, lambda c: self._hedge_cascade(c, estimate), call, delay_s, call_keeps_timeout=True)
                self._bill_hedge_loser(cascade.attempts, estimate)
        except (ProviderError, AllProvidersFailed, asyncio.CancelledError) as exc:
            self._record_failure(cascade, strategy_name, request_id, started, exc, context, route=route)
            raise
        self.state.record_success(provider.name, response.latency_ms, cascade.open_started_at)
        if response.ratelimit:
            self.state.ratelimit(provider.name).update(response.ratelimit)
        choice = response.body["choices"][0] if response.body["choices"] else {}
        text = (choice.get("message") or {}).get("content") if path == CHAT_PATH else choice.get("text")
        result = self._result(
            provider, cascade, strategy_name, request_id, started,
            text=text or "", usage=response.body.get("usage"), finish_reason=choice.get("finish_reason"),
            raw=response.body, ratelimit=response.ratelimit, raw_json=response.raw_json, route=route,
            estimate=estimate,
        )
        self._record_result(result, context)
        if self.shadow is not None:  # off: this one comparison is all shadow costs a request
            self.shadow.offer(path, body, result, context)
        return result

    def _record_result(self, result: RouteResult, context: RequestContext | None) -> None:
        """An answered request's ledger row, and its live spend (counted from the same attempts)."""
        if self.ledger is not None:
            self.ledger.record(entry_from_result(result, context))
        if self.spend is not None:
            self.spend.record(result.attempts, context, result.prompt_tokens + result.completion_tokens)

    @staticmethod
    def _count_shadow_spend(shadow: Shadow, spend: LiveSpend) -> None:
        """Shadow evaluation's calls count in live spend's ``all`` (as they do in all-traffic budgets)."""
        counted = shadow.on_spend

        def on_spend(kind: str, usd: float) -> None:
            counted(kind, usd)
            spend.add(usd)

        shadow.on_spend = on_spend

    def _result(
        self, provider: OpenAICompatProvider, cascade: Cascade, strategy_name: str, request_id: str,
        started: float, *, text: str, usage: Mapping[str, Any] | None, estimate: RouteRequest,
        finish_reason: str | None, raw: dict[str, Any], ratelimit: dict[str, str], ttft_ms: float | None = None,
        raw_json: bytes | None = None, route: Route | None = None, billed_text: str | None = None,
    ) -> RouteResult:
        """The answer and its bill. Without ``usage`` the tokens are estimated: the request's estimated
        prompt, and ``billed_text`` (this provider's part of the answer; default ``text``)."""
        attempts = cascade.attempts
        last = attempts[-1]
        cached = bill_attempt(last, self.pricers[provider.name], cascade.open_mark, usage, estimate.input_tokens,
                              text if billed_text is None else billed_text)
        prompt_tokens, completion_tokens, cost = last.prompt_tokens, last.completion_tokens, last.cost_usd
        failed = [a for a in attempts if not a.ok and a.kind != "hedge_cancelled"]
        return RouteResult(
            text=text, provider=provider.name, model=str(raw.get("model") or provider.model),
            strategy=strategy_name, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
            cost_usd=cost, latency_ms=(time.perf_counter() - started) * 1000,
            cost_per_m=per_million(cost, prompt_tokens + completion_tokens),
            fallback=bool(failed), original_error=_describe(failed[0]) if failed else None,
            attempts=attempts, ttft_ms=ttft_ms, finish_reason=finish_reason, cached_prompt_tokens=cached,
            request_id=request_id, raw=raw, ratelimit=ratelimit, raw_json=raw_json,
            quality_score=route.quality_score if route else None, route_decision=route.decision if route else None,
        )


def build_state(config: RouterConfig) -> RouterState:
    """The state the config asks for: per process, or shared by replicas through Redis."""
    kwargs: dict[str, Any] = {
        "alpha": config.latency_alpha, "breakers": config.breaker_settings(), "on_breaker_change": log_transition,
        "cold_starts": {name: ColdStartSettings(p.cold_start.idle_s, p.cold_start.factor, p.cold_start.warm_s)
                        for name, p in config.providers.items()},
    }
    priors = {name: p.latency_ms for name, p in config.providers.items()}
    if config.state.backend == "redis":
        try:
            from .state_redis import RedisState
        except ImportError as exc:
            raise ConfigError("state.backend redis needs the Redis client: pip install 'llmroute[redis]'") from exc
        return RedisState(config.state, priors, **kwargs)
    return InMemoryState(priors, **kwargs)


def _context(tags: Mapping[str, str] | None, params: Mapping[str, Any], endpoint: str) -> RequestContext | None:
    user = params.get("user")
    return RequestContext(endpoint=endpoint, user=user if isinstance(user, str) else None,
                          tags=[f"{k}={v}" for k, v in (tags or {}).items()])


def _describe(attempt: Any) -> str:
    status = f" {attempt.status}" if attempt.status is not None else ""
    return f"{attempt.provider}: {attempt.kind}{status}: {attempt.error}"
