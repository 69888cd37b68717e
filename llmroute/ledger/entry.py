"""One ledger row: what a request cost, what it would have cost, and what happened on the way.

Entries are built on the request path, so building one is a handful of
attribute reads; serialising attempts and tags happens on the writer thread.
"""

from __future__ import annotations

import math
import operator
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
_TEXT_COLUMNS = tuple(i for i, name in enumerate(COLUMNS) if name not in (
    "ts", "prompt_tokens", "completion_tokens", "cached_tokens", "cost_usd", "latency_ms", "ttft_ms", "fallback",
    "quality_score"))
_text_values = operator.itemgetter(*_TEXT_COLUMNS)
_ROW_OVERHEAD_BYTES = 400
"""A row's tuple, numbers and list slots, before its text: what the queue's byte bound adds per row."""

MAX_TEXT_CHARS = 512
"""Default longest text a ledger column keeps (``ledger.max_text_chars``)."""
MAX_TAGS = 32
_BIGINT_MAX = 2**63 - 1


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
    """``tokens`` (price_per_m), ``gpu_seconds`` (price_per_gpu_second), ``tokens_estimated`` (price_per_m of
    estimated tokens: the provider sent no usage) or ``unknown``."""
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

    def _attempts_json(self, limit: int) -> str | None:
        """None when the first attempt answered: the row itself is that attempt (most rows, and the cheapest)."""
        attempts = self.attempts
        if len(attempts) == 1 and attempts[0].ok and self.status == "ok":
            return None
        try:
            text = orjson.dumps(attempts).decode()
        except TypeError:  # an integer past 64 bits, or a value JSON cannot hold: keep the attempt, not the value
            text = ""
        if not text or len(text) > limit * (len(attempts) + 1):
            text = orjson.dumps([_plain(a, limit) for a in attempts], default=str).decode()
        return text

    def row(self, max_text_chars: int = MAX_TEXT_CHARS) -> tuple[Any, ...]:
        """Values in ``COLUMNS`` order, attempts and tags as JSON text, each one storable.

        Whatever a provider or a caller put in the entry, the row fits the columns: counts are whole
        numbers within BIGINT, floats are finite, text is cut to ``max_text_chars``. One bad value
        must never cost the rows batched with it. Spelt out: this runs per request.
        """
        n = max_text_chars
        tags = self.tags
        return (
            finite_float(self.ts, 0.0), cut_text(self.request_id, n) or "", cut_text(self.endpoint, n) or "",
            cut_text(self.route, n), cut_text(self.strategy, n) or "", cut_text(self.provider, n),
            cut_text(self.model, n), cut_text(self.status, n) or "", _count(self.prompt_tokens),
            _count(self.completion_tokens), _count(self.cached_tokens), finite_float(self.cost_usd, None),
            cut_text(self.cost_basis, n) or "", finite_float(self.latency_ms, 0.0), finite_float(self.ttft_ms, None),
            bool(self.fallback), self._attempts_json(n), cut_text(self.key_id, n), cut_text(self.user_id, n),
            tags_json(tags, n), cut_text(self.error, n), finite_float(self.quality_score, None),
            cut_text(self.route_decision, n),
        )


def tags_json(tags: Sequence[Any], limit: int) -> str | None:
    """Tags as JSON text (at most ``MAX_TAGS``, each cut to ``limit``); None for none."""
    return orjson.dumps([cut_text(t, limit) for t in tags[:MAX_TAGS]]).decode() if tags else None


def row_bytes(row: tuple[Any, ...]) -> int:
    """A cheap estimate of a row's memory while it waits in the queue (its text dominates)."""
    return _ROW_OVERHEAD_BYTES + sum(map(len, filter(None, _text_values(row))))


def cut_text(value: Any, limit: int) -> str | None:
    """Text cut to ``limit`` characters, without NUL; None stays None, anything else becomes its ``str``."""
    if type(value) is not str:
        if value is None:
            return None
        value = str(value)
    if len(value) > limit:
        value = value[:limit]
    if "\x00" in value:  # Postgres text refuses NUL characters (a JSON string may carry \u0000)
        value = value.replace("\x00", "\ufffd")
    return value


def _count(value: Any) -> int:
    """A token count as a whole number in [0, BIGINT max]: a provider's ``1e308`` or ``-5`` must not break a batch."""
    if type(value) is int and 0 <= value <= _BIGINT_MAX:
        return value
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return 0
    if number != number or number <= 0:  # NaN or negative
        return 0
    return _BIGINT_MAX if number >= _BIGINT_MAX else int(number)


def _plain(attempt: Attempt, limit: int) -> dict[str, Any]:
    """An attempt with every value storable: counts clamped, text cut."""
    values = {k: cut_text(v, limit) if isinstance(v, str) else v for k, v in attempt.to_dict().items()}
    values["latency_ms"] = finite_float(attempt.latency_ms, 0.0)
    values["cost_usd"] = finite_float(attempt.cost_usd, None)
    values["prompt_tokens"] = _count(attempt.prompt_tokens)
    values["completion_tokens"] = _count(attempt.completion_tokens)
    values["status"] = attempt.status if type(attempt.status) is int and 0 <= attempt.status < 1000 else None
    return values


def finite_float(value: Any, default: float | None) -> float | None:
    """A finite float (SQLite stores NaN as NULL, which a NOT NULL column refuses); ``default`` otherwise."""
    if type(value) is float and -math.inf < value < math.inf:
        return value
    if value is None:
        return default
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return default
    return number if math.isfinite(number) else default


# A row's basis is its least certain attempt's: an estimated token count is less certain than a worker-time
# attribution, which is less certain than the provider's own usage.
_BASIS_RANK = {"tokens": 0, "gpu_seconds": 1, "tokens_estimated": 2}


def _billed(attempts: Sequence[Attempt]) -> tuple[float | None, str]:
    """Total billed cost of the attempts and its basis; None if any billed attempt has no known price.

    ``tokens_estimated``: some attempt's provider sent no usage, so its tokens were estimated and priced.
    """
    total = 0.0
    basis = "tokens"
    for attempt in attempts:
        if attempt.cost_basis == "unknown":
            return None, "unknown"
        if _BASIS_RANK.get(attempt.cost_basis, 0) > _BASIS_RANK[basis]:
            basis = attempt.cost_basis
        total += attempt.cost_usd
    return total, basis


def entry_from_result(result: RouteResult, context: RequestContext | None) -> LedgerEntry:
    ctx = context or RequestContext()
    cost, basis = _billed(result.attempts)
    # One attempt is the one that answered: nothing failed, and no generator to find so.
    failed = next((a for a in result.attempts if not a.ok), None) if len(result.attempts) > 1 else None
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
    if not header and not metadata:  # the usual request: no tags, nothing to build
        return []
    tags: list[str] = []
    if header:
        tags.extend(t.strip() for t in header.split(",") if t.strip())
    if isinstance(metadata, Mapping):
        tags.extend(f"{k}={v}" for k, v in metadata.items() if isinstance(v, (str, int, float, bool)))
    return [t[:200] for t in tags[:32]]
