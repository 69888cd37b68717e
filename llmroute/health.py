"""Background care of providers: active health checks, and keep-warm pings for endpoints that scale to zero.

A health check (``GET {base_url}/models`` by default) closes an open breaker when
the provider answers again, and opens it after ``failures`` failed checks in a row,
so neither needs a user request to find out. A keep-warm ping is a one-token chat
request sent when the provider has been idle for ``keep_warm_s``; it costs money,
so it is priced and recorded in the ledger like any request (status ``keep_warm``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .errors import LOCAL_KINDS, PoolExhausted, ProviderError
from .ledger import RequestContext, entry_from_failure
from .pricing import usage_tokens
from .result import Attempt

if TYPE_CHECKING:
    from .ledger import Ledger
    from .pricing import Pricer
    from .providers import OpenAICompatProvider
    from .state import RouterState

log = logging.getLogger("llmroute.health")

PING = {"messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}


class HealthMonitor:
    """The background tasks for the providers the config asks them for; a ping is recorded in ``ledger``."""

    def __init__(self, providers: Mapping[str, OpenAICompatProvider], state: RouterState,
                 pricers: Mapping[str, Pricer], ledger: Ledger | None) -> None:
        self.providers = providers
        self.state = state
        self.pricers = pricers
        self.ledger = ledger
        self._tasks: list[asyncio.Task[None]] = []
        self.started = False

    def ensure_started(self) -> None:
        """Start the background tasks the config asks for, once, on the running loop."""
        if self.started:
            return
        self.started = True
        for name, provider in self.providers.items():
            config = provider.config
            if config.health_check is not None:
                self._tasks.append(asyncio.ensure_future(self._check_loop(provider)))
            if config.cold_start.keep_warm_s is not None:
                self._tasks.append(asyncio.ensure_future(self._keep_warm_loop(provider)))

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def check(self, provider: OpenAICompatProvider) -> str | None:
        """One health check: None if healthy, else what went wrong. Raises ``PoolExhausted`` when every
        connection stayed busy: a provider that busy is no evidence either way."""
        settings = provider.config.health_check
        assert settings is not None
        try:
            status = await provider.probe(settings.path, settings.timeout_s)
        except TimeoutError:
            return f"no answer within {settings.timeout_s:g} s"
        except PoolExhausted:
            raise
        except (OSError, ProviderError) as exc:
            return f"{type(exc).__name__}: {exc}"[:200]
        return None if 200 <= status < 300 else f"HTTP {status}"

    async def _check_loop(self, provider: OpenAICompatProvider) -> None:
        settings = provider.config.health_check
        assert settings is not None
        failed = 0
        breaker = self.state.breaker(provider.name)
        while True:
            try:
                problem = await self.check(provider)
            except PoolExhausted:
                await asyncio.sleep(settings.interval_s)
                continue
            if problem is None:
                failed = 0
                if breaker.state != "closed":
                    breaker.force(True, "health check passed")
            else:
                failed += 1
                log.warning("health check of %s failed (%d in a row): %s", provider.name, failed, problem)
                if failed >= settings.failures and breaker.state != "open":
                    breaker.force(False, f"{failed} health checks failed: {problem}")
            await asyncio.sleep(settings.interval_s)

    async def _keep_warm_loop(self, provider: OpenAICompatProvider) -> None:
        keep_warm_s = provider.config.cold_start.keep_warm_s
        assert keep_warm_s is not None
        while True:
            stats = self.state.snapshot().get(provider.name)
            last = stats.last_success if stats is not None else 0.0
            idle_s = time.monotonic() - last if last else keep_warm_s
            if idle_s >= keep_warm_s:
                await self.ping(provider)
                await asyncio.sleep(keep_warm_s)
            else:
                await asyncio.sleep(keep_warm_s - idle_s)

    async def ping(self, provider: OpenAICompatProvider) -> Attempt:
        """A one-token request that keeps a scale-to-zero worker warm; priced and recorded."""
        pricer = self.pricers[provider.name]
        mark = pricer.begin()
        started = time.perf_counter()
        attempt = Attempt(provider=provider.name, model=provider.model, ok=False, latency_ms=0.0,
                          kind="keep_warm", cost_basis=pricer.basis)
        try:
            response = await provider.request("/chat/completions", {**PING, "model": provider.model},
                                              timeout_s=provider.config.timeout_s)
        except ProviderError as exc:
            attempt.error, attempt.status = exc.message, exc.status
            attempt.cost_usd = pricer.end(mark)
            if exc.kind not in LOCAL_KINDS:
                self.state.record_failure(provider.name, exc.kind, (time.perf_counter() - started) * 1000, exc.status)
        except BaseException:  # cancelled (shutdown): still pair the pricing mark
            pricer.end(mark)
            raise
        else:
            attempt.ok, attempt.status = True, 200
            attempt.prompt_tokens, attempt.completion_tokens, _ = usage_tokens(response.body.get("usage"))
            attempt.cost_usd = pricer.end(mark, attempt.prompt_tokens, attempt.completion_tokens)
            self.state.record_success(provider.name, response.latency_ms)
        attempt.latency_ms = (time.perf_counter() - started) * 1000
        if self.ledger is not None:
            self.ledger.record(entry_from_failure(
                request_id=f"keep-warm-{time.time_ns():x}", strategy="keep_warm", status="keep_warm",
                attempts=[attempt], latency_ms=attempt.latency_ms, error=attempt.error or "keep-warm ping",
                context=RequestContext(route="keep_warm", endpoint="keep_warm"), provider=provider.name,
                model=provider.model,
            ))
        return attempt
