"""The fallback cascade: try providers in a strategy's order until one answers.

Retryable failures (timeouts, connection errors, 429, 5xx, errors inside 200
bodies, malformed answers, 401/403, a full connection pool) move on to the next
provider; each of ``retry_rounds`` tries the failed ones again, except a
rejected key or a full pool. A client error goes back to the caller at once,
except a context-length 400, which moves on to a provider with a larger
configured context window. One deadline bounds
everything, waits for ``Retry-After`` included.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from .errors import LOCAL_KINDS, AllProvidersFailed, ContextLengthExceeded, ProviderError, ProviderTimeout
from .pricing import Pricer, usage_tokens
from .providers import OpenAICompatProvider
from .result import Attempt
from .state import RouterState, now
from .tokens import estimate_tokens

log = logging.getLogger("llmroute")

T = TypeVar("T")
_NOT_RETRIED = frozenset({"auth", "pool_exhausted"})
"""Failures not retried on the same provider within one request: a rejected key stays rejected, and a full
pool is a reason to go elsewhere, not to queue for it again (that doubled the wait, then failed anyway)."""
Call = Callable[[OpenAICompatProvider, float], Awaitable[T]]
TOKENS_ESTIMATED = "tokens_estimated"
"""``cost_basis`` of an attempt priced from estimated tokens: the provider reported no usage."""


class Cascade:
    """One request's walk through the providers. Collects an ``Attempt`` per call."""

    def __init__(
        self, providers: Mapping[str, OpenAICompatProvider], state: RouterState, order: list[str],
        *, deadline_s: float, retry_rounds: int, pricers: Mapping[str, Pricer], max_retry_wait_s: float = 1.0,
        tokens_needed: int = 0, note_reorder: bool = True,
    ) -> None:
        """``note_reorder``: record the providers moved to the back as skipped attempts (a hedge's second
        cascade does not, as the first one already did)."""
        self.providers = providers
        self.state = state
        self.pricers = pricers
        self.open_mark = 0.0
        """The ``Pricer.begin`` mark of the attempt that answered; the caller ends it."""
        self.current: str | None = None
        """The provider being called right now (a hedge goes to another)."""
        self.open_started_at = 0.0
        """When (``time.monotonic()``) the attempt that answered began, for the breaker."""
        self.deadline = time.monotonic() + deadline_s
        self.retry_rounds = retry_rounds
        self.max_retry_wait_s = max_retry_wait_s
        self.attempts: list[Attempt] = []
        self.tokens_needed = tokens_needed
        self._noted: set[str] = set()
        """Providers already recorded as skipped, so a deferral and a skip later in the walk make one attempt."""
        # Providers cooling down from a Retry-After, or about to hit their rate limit, go last: a reroute the
        # caller must be able to see, so each becomes an attempt with its reason.
        wall = now()
        later: list[str] = []
        for name in order:
            wait_s = state.cooldown_until(name) - wall
            if wait_s > 0:
                later.append(name)
                if note_reorder:
                    self._skip(name, "cooling_down", f"deferred: asked to wait {wait_s:.1f} s (Retry-After)", wait_s)
                continue
            window = state.ratelimit(name)
            if (window.tokens or window.requests) and not window.headroom(tokens_needed):  # none known: headroom
                later.append(name)
                if note_reorder:
                    self._skip(name, "rate_limit_headroom",
                               f"deferred: fewer than the {tokens_needed} tokens needed left in its rate limit")
        self.order = [n for n in order if n not in later] + later if later else order

    def _skip(self, name: str, kind: str, reason: str, retry_after_s: float | None = None) -> None:
        """Record a provider passed over without a call (``cooling_down``, ``circuit_open``, ``rate_limit_headroom``)."""
        if name in self._noted:
            return
        self._noted.add(name)
        provider = self.providers[name]
        self.attempts.append(Attempt(provider=name, model=provider.model, ok=False, latency_ms=0.0, kind=kind,
                                     error=reason, retry_after_s=retry_after_s))

    def remaining_s(self) -> float:
        return self.deadline - time.monotonic()

    def bill(self, usage: Mapping[str, Any] | None, input_tokens: int, text: str) -> int:
        """End the answering attempt's pricing mark: price it from ``usage`` (else from ``input_tokens`` and
        ``text``, its part of the answer); returns its cached prompt tokens."""
        attempt = self.attempts[-1]
        return bill_attempt(attempt, self.pricers[attempt.provider], self.open_mark, usage, input_tokens, text)

    def succeeded(self, provider: str, latency_ms: float, ratelimit: Mapping[str, str]) -> None:
        """Tell the state that ``provider`` answered: its latency sample, breaker and rate-limit headers."""
        self.state.record_success(provider, latency_ms, self.open_started_at)
        if ratelimit:
            self.state.ratelimit(provider).update(ratelimit)

    def adopt(self, winner: Cascade) -> None:
        """Carry on as ``winner``, a hedge that answered first beside this one: its answer, order and deadline,
        after this cascade's attempts (the answer's stays last)."""
        self.attempts = self.attempts + winner.attempts
        self.order, self.current, self.deadline = winner.order, winner.current, winner.deadline
        self.open_mark, self.open_started_at = winner.open_mark, winner.open_started_at

    async def run(self, call: Call[T], *, call_keeps_timeout: bool = False) -> tuple[OpenAICompatProvider, T]:
        """Return the first provider that answered and its answer, or raise.

        ``call(provider, timeout_s)`` must finish within ``timeout_s``; unless
        ``call_keeps_timeout`` says it enforces that itself, the cascade does.
        """
        queue = self.order
        min_context: int | None = None
        for round_number in range(self.retry_rounds + 1):
            retry_next: list[str] = []
            for name in queue:
                provider = self.providers[name]
                if min_context is not None and (provider.config.context_window or 0) <= min_context:
                    continue
                if self.remaining_s() <= 0:
                    raise AllProvidersFailed(self.attempts, deadline_exceeded=True)
                if not self._breaker_allows(provider):
                    continue  # open: not tried again in this request either
                wait_s = self.state.cooldown_until(name) - now()
                if wait_s > 0 and not await self._wait_cooldown(provider, wait_s):
                    retry_next.append(name)
                    continue
                try:
                    return provider, await self._attempt(provider, call, call_keeps_timeout)
                except ContextLengthExceeded as exc:
                    window = provider.config.context_window or 0
                    if not any((p.config.context_window or 0) > window for p in self.providers.values()):
                        exc.attempts = self.attempts
                        raise
                    min_context = window
                except ProviderError as exc:
                    if not exc.retryable:
                        exc.attempts = self.attempts
                        raise
                    if exc.kind not in _NOT_RETRIED:
                        retry_next.append(name)
            queue = retry_next
            if not queue:
                break
            if round_number < self.retry_rounds:
                log.info("retrying %d provider(s), round %d", len(queue), round_number + 2)
        raise AllProvidersFailed(self.attempts, deadline_exceeded=self.remaining_s() <= 0)

    def _breaker_allows(self, provider: OpenAICompatProvider) -> bool:
        """An open breaker skips the provider at once (a comparison, no I/O), noting when it will probe."""
        breaker = self.state.breaker(provider.name)
        if breaker.allow():
            return True
        retry_s = breaker.retry_in_s()
        self._skip(provider.name, "circuit_open",
                   f"skipped: circuit open ({breaker.last_reason}); next probe in {retry_s:.1f} s", retry_s)
        return False

    async def _wait_cooldown(self, provider: OpenAICompatProvider, wait_s: float) -> bool:
        """Honour a provider's Retry-After (``wait_s`` from now): wait if it is short and fits in the deadline,
        else skip it."""
        if wait_s <= self.max_retry_wait_s and wait_s < self.remaining_s():
            await asyncio.sleep(wait_s)
            return True
        self._skip(provider.name, "cooling_down", f"skipped: asked to wait {wait_s:.1f} s (Retry-After)", wait_s)
        return False

    async def _attempt(self, provider: OpenAICompatProvider, call: Call[T], call_keeps_timeout: bool) -> T:
        """One call. Every ``pricer.begin`` meets exactly one ``end`` here (or, for the answer, in the caller),
        whatever is raised: a leaked mark would split a GPU worker's time with a request that is not there."""
        started_at = time.monotonic()
        timeout_s = min(provider.config.timeout_s, self.deadline - started_at)
        pricer = self.pricers[provider.name]
        self.state.ratelimit(provider.name).spend(self.tokens_needed)
        self.current = provider.name
        mark = pricer.begin()
        started = time.perf_counter()
        try:
            if call_keeps_timeout:
                value = await call(provider, timeout_s)
            else:
                async with asyncio.timeout(timeout_s):
                    value = await call(provider, timeout_s)
        except TimeoutError:
            error: ProviderError = ProviderTimeout(
                message=f"no answer within {timeout_s:.1f} s", provider=provider.name, kind="timeout",
            )
            self._failed(provider, error, started, pricer.end(mark), started_at)
            raise error from None
        except ProviderError as exc:
            self._failed(provider, exc, started, pricer.end(mark), started_at)
            raise
        except asyncio.CancelledError:  # the caller went away: not the provider's fault, but it may be billed
            self.attempts.append(Attempt(
                provider=provider.name, model=provider.model, ok=False, latency_ms=_ms_since(started),
                kind="cancelled", error="the caller cancelled the request", cost_usd=pricer.end(mark),
                cost_basis=pricer.basis,
            ))
            raise
        except Exception as exc:  # a bug on this side: log it, bill the time, try the next provider
            error = ProviderError(message=provider.scrub(f"internal error: {type(exc).__name__}: {exc}"),
                                  provider=provider.name, kind="internal")
            self._failed(provider, error, started, pricer.end(mark), started_at)
            raise error from None
        except BaseException:  # KeyboardInterrupt, SystemExit, GeneratorExit: still pair the mark
            pricer.end(mark)
            raise
        self.attempts.append(Attempt(
            provider=provider.name, model=provider.model, ok=True, latency_ms=_ms_since(started), status=200,
            cost_basis=pricer.basis,
        ))
        self.open_mark = mark
        self.open_started_at = started_at
        return value

    def _failed(self, provider: OpenAICompatProvider, error: ProviderError, started: float, cost: float,
                started_at: float) -> None:
        elapsed = _ms_since(started)
        error.provider = provider.name
        error.elapsed_ms = elapsed
        self.attempts.append(Attempt(
            provider=provider.name, model=provider.model, ok=False, latency_ms=elapsed, status=error.status,
            kind=error.kind, error=error.message, retry_after_s=error.retry_after_s, cost_usd=cost,
            cost_basis=self.pricers[provider.name].basis,
        ))
        if error.kind not in LOCAL_KINDS:  # a full pool or a bug here says nothing about the provider
            self.state.record_failure(provider.name, error.kind, elapsed, error.status, started_at)
        if error.retry_after_s:
            self.state.set_cooldown(provider.name, now() + error.retry_after_s)
        if error.kind == "internal":
            log.error("calling provider %s failed inside llmroute: %s", provider.name, error.message)
        elif error.kind in LOCAL_KINDS:
            log.warning("provider %s not tried: %s", provider.name, error)
        elif error.kind == "auth":
            log.error("provider %s is misconfigured: %s", provider.name, error.message)
        else:
            log.warning("provider %s failed: %s", provider.name, error)


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def bill_attempt(
    attempt: Attempt, pricer: Pricer, mark: float, usage: Mapping[str, Any] | None, input_tokens: int, text: str,
) -> int:
    """Price the attempt that produced ``text`` from the provider's ``usage``; returns its cached prompt tokens.

    A provider that sends no usage (absent, null or empty) still billed the request: its tokens are
    estimated (the request's estimated prompt, the text received) and priced, and a token-priced
    attempt's ``cost_basis`` becomes ``tokens_estimated`` so the ledger and reports say so.
    """
    if usage:
        prompt, completion, cached = usage_tokens(usage)
    else:
        prompt, completion, cached = input_tokens, estimate_tokens(text), 0
        if attempt.cost_basis == "tokens":
            attempt.cost_basis = TOKENS_ESTIMATED
    attempt.prompt_tokens, attempt.completion_tokens = prompt, completion
    attempt.cost_usd = pricer.end(mark, prompt, completion, cached)
    return cached
