"""Exceptions raised by llmroute.

One provider attempt that fails raises a ``ProviderError`` subclass; the router
decides from its ``retryable`` flag whether to move to the next provider.
Callers only ever see the last word: a client error at once, or
``AllProvidersFailed`` listing every attempt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .result import Attempt


class LLMRouteError(Exception):
    """Base class of every error llmroute raises on purpose."""


class ConfigError(LLMRouteError):
    """A config file that cannot be used. Names the file, the key path and the problem."""

    def __init__(self, problem: str, *, file: str | None = None, key: str | None = None) -> None:
        self.file = file
        self.key = key
        self.problem = problem
        where = ", ".join(p for p in (file, f"key '{key}'" if key else None) if p)
        super().__init__(f"{where}: {problem}" if where else problem)


@dataclass(eq=False)
class ProviderError(LLMRouteError):
    """One failed call to one provider.

    ``kind`` is a short stable label (``timeout``, ``connect``, ``tls``, ``rate_limited``,
    ``server_error``, ``error_in_body``, ``malformed``, ``too_large``, ``unexpected_status``,
    ``stream_cut``, ``bad_request``, ``context_length``, ``auth``, ``not_found``, ``unprocessable``,
    ``pool_exhausted``, ``bad_header``, ``internal``) used in attempt lists, metrics and the ledger.
    ``code``, ``param`` and ``error_type`` are the provider's own error fields, as it sent them
    (vLLM's ``code`` is an integer).
    """

    message: str
    provider: str = ""
    status: int | None = None
    kind: str = "provider_error"
    retryable: bool = True
    retry_after_s: float | None = None
    code: str | int | None = None
    elapsed_ms: float = 0.0
    param: str | None = None
    error_type: str | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)
        self.attempts: list[Attempt] = []

    def __str__(self) -> str:
        status = f" {self.status}" if self.status is not None else ""
        return f"{self.provider or 'provider'}: {self.kind}{status}: {self.message}"


class ProviderTimeout(ProviderError):
    """The provider did not answer within its timeout (or the overall deadline)."""


class ProviderConnectionError(ProviderError):
    """Connection refused, reset or closed before a full answer."""


class RateLimited(ProviderError):
    """HTTP 429; ``retry_after_s`` holds the provider's Retry-After when it sent one."""


class ProviderServerError(ProviderError):
    """HTTP 500/502/503/504 or any other 5xx."""


class ErrorInBody(ProviderError):
    """HTTP 200 whose body is an error object (RunPod's worker does this)."""


class MalformedResponse(ProviderError):
    """A body that is not the JSON an OpenAI-compatible server sends."""


class PoolExhausted(ProviderError):
    """No free connection to the provider within ``pool_timeout_s``: llmroute's own queue was full, which says
    nothing about the provider's health, so it never counts toward its breaker."""


LOCAL_KINDS = frozenset({"pool_exhausted", "internal", "bad_header"})
"""Attempt kinds that are not the provider's fault: they never feed its breaker or health."""


class StreamInterrupted(ProviderError):
    """A stream that stopped after some chunks had already reached the caller."""


class ClientRequestError(ProviderError):
    """HTTP 400/404/422: the request itself is at fault, so no other provider is tried."""


class ContextLengthExceeded(ClientRequestError):
    """HTTP 400 for a prompt longer than the provider's context window."""


class ProviderMisconfigured(ProviderError):
    """HTTP 401/403: the provider rejected llmroute's credentials; fix the config."""


class AllProvidersFailed(LLMRouteError):
    """Every provider in the cascade failed, or the overall deadline passed."""

    def __init__(self, attempts: list[Attempt], *, deadline_exceeded: bool = False) -> None:
        self.attempts = attempts
        self.deadline_exceeded = deadline_exceeded
        lines = [
            f"  {a.provider}: {a.kind}"
            + (f" {a.status}" if a.status is not None else "")
            + f" after {a.latency_ms:.0f} ms: {a.error}"
            for a in attempts
        ]
        head = "overall deadline passed" if deadline_exceeded else "all providers failed"
        super().__init__(f"{head} ({len(attempts)} attempts)\n" + "\n".join(lines))

    @property
    def retry_after_s(self) -> float | None:
        """The soonest Retry-After any provider asked for, for callers that want to wait."""
        values = [a.retry_after_s for a in self.attempts if a.retry_after_s is not None]
        return min(values) if values else None
