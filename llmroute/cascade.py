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
from typing import TypeVar

from .errors import LOCAL_KINDS, AllProvidersFailed, ContextLengthExceeded, ProviderError, ProviderTimeout
from .pricing import Pricer
from .providers import OpenAICompatProvider
from .result import Attempt
from .state import RouterState, now

log = logging.getLogger("llmroute")

T = TypeVar("T")
_NOT_RETRIED = frozenset({"auth", "pool_exhausted"})
"""Failures not retried on the same provider within one request: a rejected key stays rejected, and a full
pool is a reason to go elsewhere, not to queue for it again (that doubled the wait, then failed anyway)."""
Call = Callable[[OpenAICompatProvider, float], Awaitable[T]]


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


async def race(primary: Cascade, make_secondary: Callable[[Cascade], Cascade], call: Call[T], delay_s: float,
               *, call_keeps_timeout: bool = False,
               discard: Callable[[Cascade, tuple[OpenAICompatProvider, T]], Awaitable[None]] | None = None,
               ) -> tuple[Cascade, OpenAICompatProvider, T]:
    """Hedge: if ``primary`` has no answer after ``delay_s``, run a second cascade beside it and take
    whichever answers first; the other is cancelled, and its attempt stays in the winner's list.
    ``discard`` releases an answer that arrived together with the winner's (an open stream)."""
    first = asyncio.ensure_future(primary.run(call, call_keeps_timeout=call_keeps_timeout))
    done, _ = await asyncio.wait({first}, timeout=delay_s)
    if done:
        return (primary, *first.result())
    secondary = make_secondary(primary)
    tasks = {first: primary, asyncio.ensure_future(secondary.run(call, call_keeps_timeout=call_keeps_timeout)): secondary}
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
    won.attempts = lost.attempts + won.attempts  # the answer's attempt stays last
    return (won, *winner.result())


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
