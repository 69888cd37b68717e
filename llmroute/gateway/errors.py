"""OpenAI-shaped error responses: every error the gateway returns looks like one from OpenAI."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from ..errors import AllProvidersFailed, ClientRequestError, ProviderError
from ..result import Attempt

WARNING_HEADER = "x-llmroute-warning"
"""Set when the gateway did something other than what the request seemed to ask (a misspelt strategy)."""

# Failures that mean "try again later" rather than "the providers are broken": a refused or dropped
# connection is a provider restarting; auth, malformed answers and TLS failures do not heal by waiting.
_TRANSIENT = frozenset({"rate_limited", "cooling_down", "timeout", "circuit_open", "rate_limit_headroom", "connect",
                        "disconnected", "pool_exhausted"})
# Kinds whose message is llmroute's own words about the connection, safe and useful to show (a TLS failure's reason).
_SHOW_REASON = frozenset({"tls", "connect"})


class BadRequest(Exception):
    """A request the gateway rejects itself, before any provider sees it."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def quote_input(value: str, limit: int = 64) -> str:
    """A client's string as it may appear in an error message or a header: quoted, cut to ``limit``
    characters, and printable ASCII only (control characters, non-ASCII and the surrogates that stand
    for invalid UTF-8 in a header are escaped), so quoting it can never fail or inject anything."""
    text = value if len(value) <= limit else value[:limit] + "..."
    if not (text.isascii() and text.isprintable()):
        text = text.encode("unicode_escape").decode("ascii")
    return f"'{text}'"


def error_body(message: str, error_type: str, code: str | int | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_response(
    status: int, message: str, error_type: str = "invalid_request_error", code: str | int | None = None,
    param: str | None = None, headers: dict[str, str] | None = None,
) -> web.Response:
    try:
        body = orjson.dumps(error_body(message, error_type, code, param))
    except TypeError:  # a surrogate from a client's invalid UTF-8 that no caller quoted: escape, never fail here
        body = orjson.dumps(error_body(_printable(message), _printable(error_type),  # type: ignore[arg-type]
                                       code if isinstance(code, int) else _printable(code), _printable(param)))
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)


def _printable(value: str | None) -> str | None:
    return None if value is None else value.encode("utf-8", "backslashreplace").decode("utf-8")


def summarise(attempts: list[Attempt]) -> str:
    """'runpod: server_error 503 (3 ms); cerebras: tls, TLS error: certificate verify failed: ... (4 ms)':
    no bodies, no secrets; a connection failure's reason, which llmroute wrote itself."""
    return "; ".join(
        f"{a.provider}: {a.kind}" + (f" {a.status}" if a.status is not None else "")
        + (f", {a.error}" if a.kind in _SHOW_REASON and a.error else "") + f" ({a.latency_ms:.0f} ms)"
        for a in attempts
    )


def attempts_header(attempts: list[Attempt]) -> str:
    """'runpod:503,cerebras:200': each provider tried, with its status, or its failure kind when the status
    says nothing (a malformed 200, a skip): 'runpod:malformed,cerebras:200'."""
    return ",".join([
        f"{a.provider}:{a.status if a.status is not None and (a.ok or a.status != 200) else a.kind}" for a in attempts
    ])


def decision_headers(quality_score: float | None, decision: str | None) -> dict[str, str]:
    """quality_aware's score and chosen tier; nothing for strategies that do not score prompts."""
    if quality_score is None:
        return {}
    return {"x-llmroute-quality-score": f"{quality_score:.4f}", "x-llmroute-route-decision": decision or ""}


def all_failed_response(exc: AllProvidersFailed) -> web.Response:
    """503 when waiting should help (rate limits, cool-downs, timeouts, 503s), else 502."""
    transient = all(a.kind in _TRANSIENT or a.status == 503 for a in exc.attempts)
    status = 503 if transient or exc.deadline_exceeded else 502
    # Any float, inf and nan included, gives 1 s to a day: min/max keep their first argument when a
    # comparison with nan is false, so nan becomes 1.
    retry_after_s = min(86400.0, max(1.0, exc.retry_after_s or 1.0))
    headers = {
        "Retry-After": str(round(retry_after_s)),
        "x-llmroute-attempts": attempts_header(exc.attempts),
    }
    head = "overall deadline passed" if exc.deadline_exceeded else "all providers failed"
    return error_response(
        status, f"{head}: {summarise(exc.attempts)}", "upstream_error",
        "deadline_exceeded" if exc.deadline_exceeded else "all_providers_failed", headers=headers,
    )


def provider_client_error_response(exc: ClientRequestError) -> web.Response:
    """The provider's own verdict on a bad request, passed back with its status and its fields as it sent them
    (``param``; ``code`` with its JSON type, vLLM's integer included)."""
    return error_response(
        exc.status or 400, exc.message, exc.error_type or "invalid_request_error",
        exc.code if exc.code is not None else exc.kind, exc.param,
        headers={"x-llmroute-provider": exc.provider, "x-llmroute-attempts": attempts_header(exc.attempts)},
    )


def provider_error_response(exc: ProviderError) -> web.Response:
    if isinstance(exc, ClientRequestError):
        return provider_client_error_response(exc)
    return error_response(502, str(exc), "upstream_error", exc.kind)
