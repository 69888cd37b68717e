"""One ledger row: what a request cost, what it would have cost, and what happened on the way.

Entries are built on the request path, so building one is a handful of
attribute reads; serialising attempts and tags happens on the writer thread.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..result import Attempt, RouteResult

# Column order shared by every store.
COLUMNS = (
    "ts", "request_id", "endpoint", "route", "strategy", "provider", "model", "status",
    "prompt_tokens", "completion_tokens", "cached_tokens", "cost_usd", "cost_basis",
    "latency_ms", "ttft_ms", "fallback", "attempts", "key_id", "user_id", "tags", "error",
    "quality_score", "route_decision",
)


@dataclass(slots=True)
class RequestContext:
    """Who asked and how: what the gateway (or a library caller) knows beyond the request body."""

    route: str | None = None
    """What the client named: the gateway request's ``model``, or the strategy."""
    endpoint: str = "chat"
    key_id: str | None = None
    user: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass(slots=True)
class LedgerEntry:
    """A request as the ledger stores it.

    ``cost_usd`` is everything the request was billed: the answer plus any
    failed attempt that burned tokens or GPU time. ``None`` means the price is
    unknown (``cost_basis`` says why), never free.
    """

    ts: float
    request_id: str
    endpoint: str
    route: str | None
    strategy: str
    provider: str | None
    model: str | None
    status: str
    """``ok``, ``failed`` (every provider failed), ``client_error`` or ``interrupted``."""
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_usd: float | None
    cost_basis: str
    """``tokens`` (price_per_m), ``gpu_seconds`` (price_per_gpu_second) or ``unknown``."""
    latency_ms: float
    ttft_ms: float | None
    fallback: bool
    attempts: list[Attempt]
    key_id: str | None = None
    user_id: str | None = None
    tags: list[str] = field(default_factory=list)
    error: str | None = None
    quality_score: float | None = None
    """quality_aware: the model's probability that the prompt needed the strong provider."""
    route_decision: str | None = None
    """quality_aware: the tier the score chose, ``strong`` or ``weak``."""

    def _attempts_json(self) -> str | None:
        """None when the first attempt answered: the row itself is that attempt (most rows, and the cheapest)."""
        attempts = self.attempts
        if len(attempts) == 1 and attempts[0].ok and self.status == "ok":
            return None
        return orjson.dumps(attempts).decode()

    def row(self) -> tuple[Any, ...]:
        """Values in ``COLUMNS`` order, attempts and tags as JSON text. Spelt out: this runs per request."""
        return (
            self.ts, self.request_id, self.endpoint, self.route, self.strategy, self.provider, self.model,
            self.status, self.prompt_tokens, self.completion_tokens, self.cached_tokens, self.cost_usd,
            self.cost_basis, self.latency_ms, self.ttft_ms, self.fallback, self._attempts_json(),
            self.key_id, self.user_id, orjson.dumps(self.tags).decode() if self.tags else None, self.error,
            self.quality_score, self.route_decision,
        )


def _billed(attempts: Sequence[Attempt]) -> tuple[float | None, str]:
    """Total billed cost of the attempts and its basis; None if any billed attempt has no known price."""
    total = 0.0
    basis = "tokens"
    for attempt in attempts:
        if attempt.cost_basis == "unknown":
            return None, "unknown"
        if attempt.cost_basis == "gpu_seconds":
            basis = "gpu_seconds"
        total += attempt.cost_usd
    return total, basis


def entry_from_result(result: RouteResult, context: RequestContext | None) -> LedgerEntry:
    ctx = context or RequestContext()
    cost, basis = _billed(result.attempts)
    failed = next((a for a in result.attempts if not a.ok), None)
    return LedgerEntry(
        ts=time.time(), request_id=result.request_id or "", endpoint=ctx.endpoint,
        route=ctx.route or result.strategy, strategy=result.strategy, provider=result.provider, model=result.model,
        status="ok", prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
        cached_tokens=result.cached_prompt_tokens, cost_usd=cost, cost_basis=basis,
        latency_ms=result.latency_ms, ttft_ms=result.ttft_ms, fallback=result.fallback,
        attempts=result.attempts, key_id=ctx.key_id, user_id=ctx.user, tags=ctx.tags,
        error=f"{failed.provider}: {failed.kind}" if failed else None,
        quality_score=result.quality_score, route_decision=result.route_decision,
    )


def entry_from_failure(
    *, request_id: str, strategy: str, status: str, attempts: list[Attempt], latency_ms: float,
    error: str, context: RequestContext | None, provider: str | None = None, model: str | None = None,
    ttft_ms: float | None = None, quality_score: float | None = None, route_decision: str | None = None,
) -> LedgerEntry:
    """A request that got no complete answer. Its billed attempts still count."""
    ctx = context or RequestContext()
    cost, basis = _billed(attempts)
    prompt = sum(a.prompt_tokens for a in attempts)
    completion = sum(a.completion_tokens for a in attempts)
    return LedgerEntry(
        ts=time.time(), request_id=request_id, endpoint=ctx.endpoint, route=ctx.route or strategy,
        strategy=strategy, provider=provider, model=model, status=status, prompt_tokens=prompt,
        completion_tokens=completion, cached_tokens=0, cost_usd=cost, cost_basis=basis, latency_ms=latency_ms,
        ttft_ms=ttft_ms, fallback=len(attempts) > 1, attempts=attempts, key_id=ctx.key_id, user_id=ctx.user,
        tags=ctx.tags, error=error[:500], quality_score=quality_score, route_decision=route_decision,
    )


def parse_tags(header: str | None = None, metadata: Any = None) -> list[str]:
    """Tags from ``x-llmroute-tags: team=sales,urgent`` and a body's ``metadata`` object, as ``k=v`` strings."""
    tags: list[str] = []
    if header:
        tags.extend(t.strip() for t in header.split(",") if t.strip())
    if isinstance(metadata, Mapping):
        tags.extend(f"{k}={v}" for k, v in metadata.items() if isinstance(v, (str, int, float, bool)))
    return [t[:200] for t in tags[:32]]
