"""Dispatcher: one request's way from a strategy's route to a billed, recorded answer, hedged or not.

The router builds one per instance and hands it to every ``RouteStream``, so the non-streaming path and
the stream path share one implementation of the cascade, hedging, billing and recording, and neither
reaches back into the router. A hedge (``hedge`` in the config) races a second cascade over the rest of
the order once the first has been waiting ``after_ms``; the first to answer wins, and the cancelled side
is billed what it cost (its worker time, or at least the prompt it read).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from .cascade import Call, Cascade
from .config import RouterConfig
from .errors import AllProvidersFailed, ClientRequestError, ProviderError, StreamInterrupted
from .health import HealthMonitor
from .ledger import Ledger, RequestContext, entry_from_failure, entry_from_result
from .pricing import Pricer, per_million
from .providers import OpenAICompatProvider, ProviderResponse
from .result import Attempt, RouteResult, request_headers
from .spend import LiveSpend
from .state import RouterState
from .strategies import Route, RouteRequest, RoutingStrategy, StrategyBase, build_strategy

if TYPE_CHECKING:
    from .evaluation.shadow import Shadow

CHAT_PATH = "/chat/completions"
COMPLETIONS_PATH = "/completions"

T = TypeVar("T")
Discard = Callable[[Cascade, tuple[OpenAICompatProvider, T]], Awaitable[None]]
"""Releases an answer that arrived together with a hedge's winner (an open stream)."""


class Dispatcher:
    """The cascade, hedging, billing and recording of requests, for the router and its streams.

    ``shadow`` (set by the router when shadow evaluation is on) is offered each answered request;
    ``ledger`` and ``spend`` record every request, answered or not.
    """

    def __init__(
        self, config: RouterConfig, state: RouterState, providers: Mapping[str, OpenAICompatProvider],
        pricers: Mapping[str, Pricer], *, default_strategy: RoutingStrategy, health: HealthMonitor,
        ledger: Ledger | None, spend: LiveSpend | None,
    ) -> None:
        self.config = config
        self.state = state
        self.providers = providers
        self.pricers = pricers
        self.default_strategy = default_strategy
        self.health = health
        self.ledger = ledger
        self.spend = spend
        self.shadow: Shadow | None = None
        """Shadow evaluation, when on (the router sets it): each answer is offered to it, never awaited."""
        self._strategies: dict[RoutingStrategy, StrategyBase] = {}

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

    # -- the way out: route, cascade, hedge ------------------------------------------

    def plan(self, estimate: RouteRequest, strategy: RoutingStrategy | str | None) -> tuple[Cascade, str, Route]:
        """A new request's cascade, its strategy's name and the strategy's decision (starts health checks)."""
        self.health.ensure_started()
        chosen = self.strategy(strategy)
        route = chosen.route(estimate)
        return self.cascade(route.order, estimate, retry_rounds=self.config.retry_rounds), chosen.name.value, route

    def cascade(self, order: list[str], estimate: RouteRequest, *, retry_rounds: int = 0,
                deadline_s: float | None = None, note_reorder: bool = True) -> Cascade:
        """A cascade over ``order``: a strategy's, a resumed stream's remaining providers, or a hedge's."""
        return Cascade(
            self.providers, self.state, order, deadline_s=deadline_s or self.config.deadline_s,
            retry_rounds=retry_rounds, pricers=self.pricers, max_retry_wait_s=self.config.max_retry_wait_s,
            tokens_needed=estimate.input_tokens + estimate.output_tokens, note_reorder=note_reorder,
        )

    def hedge_delay_s(self, strategy_name: str, cascade: Cascade) -> float | None:
        """How long to wait before hedging this request; None when its strategy does not hedge."""
        hedge = self.config.hedge
        if strategy_name not in hedge.strategies or len(cascade.order) < 2:
            return None
        if hedge.after_ms == "p95":
            p95_ms = self.state.latency_p95_ms(cascade.order[0], hedge.min_samples)
            return p95_ms / 1000 if p95_ms is not None else 0.5
        return float(hedge.after_ms) / 1000

    def hedge_cascade(self, primary: Cascade, estimate: RouteRequest) -> Cascade:
        """The hedge's cascade: the same order without the provider the primary is waiting on."""
        return self.cascade([n for n in primary.order if n != primary.current], estimate,
                            deadline_s=max(0.001, primary.remaining_s()), note_reorder=False)

    def attempt(self, cascade: Cascade, strategy_name: str, estimate: RouteRequest, call: Call[T],
                discard: Discard[T] | None = None) -> Awaitable[tuple[OpenAICompatProvider, T]]:
        """Run ``call`` through ``cascade``, hedged when the strategy says so; awaited for the provider that
        answered and its answer. ``call(provider, timeout_s)`` keeps its own timeout. After a hedge,
        ``cascade`` has become the winner (``Cascade.adopt``). Not hedged, this is ``cascade.run`` itself:
        no extra coroutine on the common path."""
        delay_s = self.hedge_delay_s(strategy_name, cascade)
        if delay_s is None:
            return cascade.run(call, call_keeps_timeout=True)
        return self.race(cascade, estimate, call, delay_s, discard)

    async def race(self, primary: Cascade, estimate: RouteRequest, call: Call[T], delay_s: float,
                   discard: Discard[T] | None = None) -> tuple[OpenAICompatProvider, T]:
        """Hedge: if ``primary`` has no answer after ``delay_s``, run a second cascade beside it and take
        whichever answers first; the other is cancelled, billed (``bill_hedge_loser``) and its attempts kept.
        ``discard`` releases an answer that arrived together with the winner's (an open stream)."""
        first = asyncio.ensure_future(primary.run(call, call_keeps_timeout=True))
        done, _ = await asyncio.wait({first}, timeout=delay_s)
        if done:
            answer = first.result()
            self.bill_hedge_loser(primary.attempts, estimate)
            return answer
        secondary = self.hedge_cascade(primary, estimate)
        tasks = {first: primary, asyncio.ensure_future(secondary.run(call, call_keeps_timeout=True)): secondary}
        pending = set(tasks)
        winner: asyncio.Future[tuple[OpenAICompatProvider, T]] | None = None
        try:
            while pending and winner is None:
                finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                winner = next((t for t in finished if not t.cancelled() and t.exception() is None), None)
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if winner is None:
            errors = [t.exception() for t in tasks]
            merged = primary.attempts + secondary.attempts
            for error in errors:
                error.attempts = merged  # type: ignore[union-attr]
            raise next((e for e in errors if not isinstance(e, AllProvidersFailed)), errors[0])  # type: ignore[misc]
        won = tasks[winner]
        lost = secondary if won is primary else primary
        other = next(t for t in tasks if t is not winner)
        if other.done() and not other.cancelled() and other.exception() is None:  # both answered at once
            lost.attempts[-1].ok, lost.attempts[-1].kind = False, "cancelled"
            if discard is not None:
                await discard(lost, other.result())
        if won is primary:
            primary.attempts = secondary.attempts + primary.attempts  # the answer's attempt stays last
        else:
            primary.adopt(secondary)
        self.bill_hedge_loser(primary.attempts, estimate)
        return winner.result()

    def bill_hedge_loser(self, attempts: list[Attempt], estimate: RouteRequest) -> None:
        """The cancelled side of a hedge was billed too: its worker time, or at least the prompt it read."""
        for attempt in attempts:
            if attempt.kind != "cancelled":
                continue
            attempt.kind = "hedge_cancelled"
            price = self.config.providers[attempt.provider].price_per_m
            if attempt.cost_basis == "tokens" and price is not None:
                attempt.prompt_tokens = estimate.input_tokens
                attempt.cost_usd = estimate.input_tokens * price.input / 1e6

    # -- the non-streaming request, whole ----------------------------------------------

    async def request(
        self, path: str, body: Mapping[str, Any], estimate: RouteRequest, strategy: RoutingStrategy | str | None,
        extra_headers: Mapping[str, str] | None, context: RequestContext | None = None,
    ) -> RouteResult:
        """One non-streaming request: routed, sent (hedged if so configured), billed and recorded."""
        cascade, strategy_name, route = self.plan(estimate, strategy)
        request_id, headers = request_headers(extra_headers)
        started = time.perf_counter()

        def call(provider: OpenAICompatProvider, timeout_s: float) -> Coroutine[Any, Any, ProviderResponse]:
            return provider.request(path, {**body, "model": provider.model}, timeout_s=timeout_s, extra_headers=headers)

        try:
            provider, response = await self.attempt(cascade, strategy_name, estimate, call)
        except (ProviderError, AllProvidersFailed, asyncio.CancelledError) as exc:
            self.record_failure(cascade, strategy_name, request_id, started, exc, context, route=route)
            raise
        cascade.succeeded(provider.name, response.latency_ms, response.ratelimit)
        choice = response.body["choices"][0] if response.body["choices"] else {}
        text = (choice.get("message") or {}).get("content") if path == CHAT_PATH else choice.get("text")
        result = self.result(
            provider, cascade, strategy_name, request_id, started,
            text=text or "", usage=response.body.get("usage"), finish_reason=choice.get("finish_reason"),
            raw=response.body, ratelimit=response.ratelimit, raw_json=response.raw_json, route=route,
            estimate=estimate,
        )
        self.record_result(result, context)
        if self.shadow is not None:  # off: this one comparison is all shadow costs a request
            self.shadow.offer(path, body, result, context)
        return result

    # -- the bill and the record ---------------------------------------------------------

    def result(
        self, provider: OpenAICompatProvider, cascade: Cascade, strategy_name: str, request_id: str,
        started: float, *, text: str, usage: Mapping[str, Any] | None, estimate: RouteRequest,
        finish_reason: str | None, raw: dict[str, Any], ratelimit: dict[str, str], ttft_ms: float | None = None,
        raw_json: bytes | None = None, route: Route | None = None, billed_text: str | None = None,
    ) -> RouteResult:
        """The answer and its bill. Without ``usage`` the tokens are estimated: the request's estimated
        prompt, and ``billed_text`` (this provider's part of the answer; default ``text``)."""
        attempts = cascade.attempts
        cached = cascade.bill(usage, estimate.input_tokens, text if billed_text is None else billed_text)
        last = attempts[-1]
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

    def record_result(self, result: RouteResult, context: RequestContext | None) -> None:
        """An answered request's ledger row, and its live spend (counted from the same attempts)."""
        if self.ledger is not None:
            self.ledger.record(entry_from_result(result, context))
        if self.spend is not None:
            self.spend.record(result.attempts, context, result.prompt_tokens + result.completion_tokens)

    def record_failure(
        self, cascade: Cascade, strategy_name: str, request_id: str, started: float, exc: BaseException,
        context: RequestContext | None, *, provider: str | None = None, ttft_ms: float | None = None,
        route: Route | None = None,
    ) -> None:
        """A request that got no (whole) answer: its live spend and its ledger row, with what was billed."""
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


def _describe(attempt: Attempt) -> str:
    status = f" {attempt.status}" if attempt.status is not None else ""
    return f"{attempt.provider}: {attempt.kind}{status}: {attempt.error}"
