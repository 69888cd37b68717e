"""LLMRouter: the public face of routing: configuration, start-up and shutdown, and the entry points that turn a
call into a request for its ``Dispatcher``."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .breaker import log_transition
from .config import RouterConfig, load_config
from .dispatch import CHAT_PATH, COMPLETIONS_PATH, Dispatcher
from .errors import ConfigError
from .health import HealthMonitor
from .ledger import Ledger, RequestContext, open_ledger
from .pricing import Pricer
from .providers import OpenAICompatProvider
from .result import RouteResult
from .spend import LiveSpend, live_spend
from .state import InMemoryState, RouterState
from .strategies import RouteRequest, RoutingStrategy, StrategyBase, StrongShare
from .stream import RouteStream
from .tokens import estimate_message_tokens, estimate_tokens

if TYPE_CHECKING:
    from .evaluation.shadow import Shadow
    from .ledger.pairs import GradedPair

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
        self._owns_ledger = ledger is None or ledger is True
        self.ledger: Ledger | None = open_ledger(self.config) if self._owns_ledger else (ledger or None)
        self.health = HealthMonitor(self.providers, self.state, self.pricers, self.ledger)
        self.dispatch = Dispatcher(self.config, self.state, self.providers, self.pricers,
                                   default_strategy=self.default_strategy, health=self.health, ledger=self.ledger,
                                   spend=self.spend)
        """The cascade, hedging, billing and recording of every request, streamed or not (one per router)."""
        min_quality = self.config.quality_aware.target.min_quality
        if (self.default_strategy is RoutingStrategy.QUALITY_AWARE or self.config.quality_aware.model is not None
                or min_quality is not None):
            self.strategy(RoutingStrategy.QUALITY_AWARE)  # load the model now: a bad file fails here, not on a request
        self.shadow: Shadow | None = None
        """Shadow evaluation (``shadow.rate`` above 0): a sample of answers graded against the other tier."""
        if self.config.shadow.rate > 0 and len(self.providers) > 1:
            from .evaluation.shadow import Shadow

            self.shadow = self.dispatch.shadow = Shadow(self.config, self.providers, self.pricers, self.state,
                                                        self.ledger)
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
        return self.dispatch.strategy(name)

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
            self.dispatch.ledger = self.health.ledger = None
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
        return await self.dispatch.request(CHAT_PATH, body, estimate, strategy, extra_headers, context)

    async def completion_request(
        self, body: Mapping[str, Any], *, strategy: RoutingStrategy | str | None = None,
        extra_headers: Mapping[str, str] | None = None, context: RequestContext | None = None,
        strong_share: StrongShare | None = None, prompt_tokens: int | None = None,
    ) -> RouteResult:
        """An OpenAI legacy completions body (``prompt`` a string); ``prompt_tokens`` as for ``chat_request``."""
        prompt = str(body["prompt"])
        estimate = self._estimate(estimate_tokens(prompt) if prompt_tokens is None else prompt_tokens, body,
                                  prompt=prompt, strong_share=strong_share)
        return await self.dispatch.request(COMPLETIONS_PATH, body, estimate, strategy, extra_headers, context)

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
        return RouteStream(self.dispatch, upstream, estimate, strategy, extra_headers, path, context,
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

    @staticmethod
    def _count_shadow_spend(shadow: Shadow, spend: LiveSpend) -> None:
        """Shadow evaluation's calls count in live spend's ``all`` (as they do in all-traffic budgets)."""
        counted = shadow.on_spend

        def on_spend(kind: str, usd: float) -> None:
            counted(kind, usd)
            spend.add(usd)

        shadow.on_spend = on_spend


def build_state(config: RouterConfig) -> RouterState:
    """The state the config asks for: per process, or shared by replicas through Redis."""
    kwargs: dict[str, Any] = {
        "alpha": config.latency_alpha, "breakers": config.breaker_settings(), "on_breaker_change": log_transition,
        "cold_starts": config.cold_start_settings(),
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
