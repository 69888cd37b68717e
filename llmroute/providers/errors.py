"""Turning what a provider sent back into the right ``ProviderError``.

Providers disagree on error shapes: OpenAI and Cerebras send
``{"error": {"message", "type", "param", "code": "string"}}``; vLLM sends
``{"object": "error", "message", "type", "code": 400}`` (an integer code, flat
or nested); RunPod's worker may send any of these with HTTP 200.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from typing import Any

from ..errors import (
    ClientRequestError,
    ContextLengthExceeded,
    ErrorInBody,
    MalformedResponse,
    ProviderError,
    ProviderMisconfigured,
    ProviderServerError,
    ProviderTimeout,
    RateLimited,
)

MAX_MESSAGE_CHARS = 500

_CONTEXT_LENGTH = re.compile(
    r"context[ _-]?(length|window)|maximum context|max_model_len|too many (input )?tokens|prompt is too long",
    re.IGNORECASE,
)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms``, ``retry-after`` (seconds or an HTTP date)."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_fields(body: Any) -> tuple[str, str | None] | None:
    """(message, code) if ``body`` is an error object in any known shape, else None."""
    if not isinstance(body, Mapping):
        return None
    error = body.get("error")
    if isinstance(error, Mapping):
        code = error.get("code")
        return str(error.get("message") or error.get("type") or "error"), None if code is None else str(code)
    if isinstance(error, str) and error:
        return error, None if body.get("code") is None else str(body.get("code"))
    if body.get("object") == "error":
        code = body.get("code")
        return str(body.get("message") or body.get("type") or "error"), None if code is None else str(code)
    if str(body.get("status", "")).upper() == "FAILED" or "err" in body:
        return str(body.get("err") or body.get("output") or "worker failed"), None
    return None


class Classifier:
    """Builds provider errors for one provider, with its API key scrubbed from every message."""

    def __init__(self, provider: str, secret: str | None) -> None:
        self.provider = provider
        self._secret = secret

    def scrub(self, message: str) -> str:
        if self._secret and len(self._secret) >= 4:
            message = message.replace(self._secret, "[redacted]")
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[:MAX_MESSAGE_CHARS] + "…"
        return message

    def _make(self, cls: type[ProviderError], message: str, **kw: Any) -> ProviderError:
        return cls(message=self.scrub(message), provider=self.provider, **kw)

    def from_status(self, status: int, body: Any, headers: Mapping[str, str]) -> ProviderError:
        """The error for a non-200 answer."""
        fields = error_fields(body)
        message, code = fields if fields else (_plain(body) or f"HTTP {status}", None)
        retry_after = parse_retry_after(headers)
        if status == 429:
            return self._make(RateLimited, message, status=status, kind="rate_limited", retry_after_s=retry_after, code=code)
        if status in (401, 403):
            return self._make(
                ProviderMisconfigured,
                f"provider rejected the configured credentials ({message}); check its api_key",
                status=status, kind="auth", code=code,
            )
        if status == 400 and (code == "context_length_exceeded" or _CONTEXT_LENGTH.search(message)):
            return self._make(ContextLengthExceeded, message, status=status, kind="context_length", retryable=False, code=code)
        if status == 408:
            return self._make(ProviderTimeout, message, status=status, kind="timeout", code=code)
        if status >= 500:
            return self._make(ProviderServerError, message, status=status, kind="server_error", retry_after_s=retry_after, code=code)
        kind = {400: "bad_request", 404: "not_found", 422: "unprocessable"}.get(status, "client_error")
        return self._make(ClientRequestError, message, status=status, kind=kind, retryable=False, code=code)

    def in_body(self, body: Any) -> ProviderError | None:
        """The error hidden in an HTTP 200 body, if any."""
        fields = error_fields(body)
        if fields is None:
            return None
        message, code = fields
        return self._make(ErrorInBody, f"error inside HTTP 200 body: {message}", status=200, kind="error_in_body", code=code)

    def malformed(self, what: str, status: int | None = 200) -> ProviderError:
        return self._make(MalformedResponse, what, status=status, kind="malformed")


def _plain(body: Any) -> str:
    if isinstance(body, (bytes, bytearray)):
        return body[:200].decode("utf-8", "replace").strip()
    return ""
