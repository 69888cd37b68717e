"""Turning what a provider sent back into the right ``ProviderError``.

Providers disagree on error shapes: OpenAI and Cerebras send
``{"error": {"message", "type", "param", "code": "string"}}``; vLLM sends
``{"object": "error", "message", "type", "code": 400}`` (an integer code, flat
or nested); RunPod's worker may send any of these with HTTP 200.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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
MIN_SECRET_CHARS = 4
"""Shorter configured values are not scrubbed: replacing '1' everywhere would garble every message."""

_CONTEXT_LENGTH = re.compile(
    r"context[ _-]?(length|window)|maximum context|max_model_len|too many (input )?tokens|prompt is too long",
    re.IGNORECASE,
)


DEFAULT_MAX_RETRY_AFTER_S = 300.0


def parse_retry_after(headers: Mapping[str, str], max_s: float = DEFAULT_MAX_RETRY_AFTER_S) -> float | None:
    """Seconds to wait from ``retry-after-ms``, ``retry-after`` (seconds or an HTTP date), within ``[0, max_s]``.

    A provider's header is a hint, not an order: ``inf``, ``nan`` or a date in the year 3000 must neither
    break the answer nor cool the provider down for ever, so anything past ``max_s`` is ``max_s``.
    """
    value = headers.get("retry-after-ms")
    if value:
        seconds = _seconds(value, 1000)
        if seconds is not None:
            return min(seconds, max_s)
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = _seconds(value, 1)
    if seconds is None:
        try:
            seconds = max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError, OverflowError, IndexError):
            return None
    return min(seconds, max_s)


def _seconds(value: str, per_second: int) -> float | None:
    """A non-negative number of seconds, or None for anything else (text, ``nan``); ``inf`` stays ``inf``."""
    try:
        seconds = float(value) / per_second
    except ValueError:
        return None
    return None if math.isnan(seconds) else max(0.0, seconds)


@dataclass(slots=True)
class ErrorFields:
    """A provider's error object as it sent it: ``code`` keeps its JSON type (vLLM's is an integer)."""

    message: str
    code: str | int | None = None
    param: str | None = None
    type: str | None = None


def error_fields(body: Any) -> ErrorFields | None:
    """The error object in ``body`` in any known shape, else None."""
    if type(body) is not dict and not isinstance(body, Mapping):  # parsed JSON is a dict: skip the ABC check
        return None
    error = body.get("error")
    if isinstance(error, Mapping):
        return _fields(error)
    if isinstance(error, str) and error:
        return ErrorFields(error, _code(body.get("code")))
    if body.get("object") == "error":
        return _fields(body)
    if str(body.get("status", "")).upper() == "FAILED" or "err" in body:
        return ErrorFields(str(body.get("err") or body.get("output") or "worker failed"))
    return None


def _fields(error: Mapping[str, Any]) -> ErrorFields:
    param, kind = error.get("param"), error.get("type")
    return ErrorFields(
        str(error.get("message") or kind or "error"), _code(error.get("code")),
        param if isinstance(param, str) else None, kind if isinstance(kind, str) else None,
    )


def _code(code: Any) -> str | int | None:
    """A code as sent when it is a string or an integer; anything else as text."""
    if code is None or (isinstance(code, (str, int)) and not isinstance(code, bool)):
        return code
    return str(code)[:100]


class Classifier:
    """Builds provider errors for one provider, with every configured secret scrubbed from every message."""

    def __init__(self, provider: str, secrets: Iterable[str | None] = (),
                 max_retry_after_s: float = DEFAULT_MAX_RETRY_AFTER_S) -> None:
        self.provider = provider
        self.max_retry_after_s = max_retry_after_s
        # Longest first, so a secret that contains another is replaced whole.
        self._secrets = sorted({s for s in secrets if s and len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)
        self._longest = len(self._secrets[0]) if self._secrets else 0

    def scrub(self, message: str) -> str:
        """Secrets out first, then cut to ``MAX_MESSAGE_CHARS``, so no cut can leave part of one behind."""
        window = MAX_MESSAGE_CHARS + self._longest
        if len(message) > window:  # a secret across the final cut is still whole in the window; one across
            message = self._drop_partial(message[:window])  # the window's own edge is dropped
        for secret in self._secrets:
            if secret in message:
                message = message.replace(secret, "[redacted]")
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[:MAX_MESSAGE_CHARS] + "…"
        return message

    def _drop_partial(self, text: str) -> str:
        """``text`` without a trailing start of a secret (replacements shorten the text and could pull it in)."""
        for secret in self._secrets:
            for size in range(min(len(secret) - 1, len(text)), 0, -1):
                if text.endswith(secret[:size]):
                    return self._drop_partial(text[:-size])
        return text

    def _make(self, cls: type[ProviderError], message: str, fields: ErrorFields | None = None,
              **kw: Any) -> ProviderError:
        if fields is not None:
            code = self.scrub(fields.code) if isinstance(fields.code, str) else fields.code
            kw.update(code=code, param=fields.param and self.scrub(fields.param),
                      error_type=fields.type and self.scrub(fields.type))
        return cls(message=self.scrub(message), provider=self.provider, **kw)

    def from_status(self, status: int, body: Any, headers: Mapping[str, str]) -> ProviderError:
        """The error for a non-200 answer."""
        if status < 400:  # 1xx, 204, 3xx: no answer llmroute can use, and nothing the caller did wrong
            return self._make(MalformedResponse, f"unexpected HTTP {status} instead of 200", status=status,
                              kind="unexpected_status")
        fields = error_fields(body)
        message = fields.message if fields else (_plain(body, MAX_MESSAGE_CHARS + self._longest + 1) or f"HTTP {status}")
        code = fields.code if fields else None
        retry_after = parse_retry_after(headers, self.max_retry_after_s)
        if status == 429:
            return self._make(RateLimited, message, fields, status=status, kind="rate_limited", retry_after_s=retry_after)
        if status in (401, 403):
            return self._make(
                ProviderMisconfigured,
                f"provider rejected the configured credentials ({self.scrub(message)}); check its api_key",
                fields, status=status, kind="auth",
            )
        if status == 400 and (code == "context_length_exceeded" or _CONTEXT_LENGTH.search(message)):
            return self._make(ContextLengthExceeded, message, fields, status=status, kind="context_length",
                              retryable=False)
        if status == 408:
            return self._make(ProviderTimeout, message, fields, status=status, kind="timeout")
        if status >= 500:
            return self._make(ProviderServerError, message, fields, status=status, kind="server_error",
                              retry_after_s=retry_after)
        kind = {400: "bad_request", 404: "not_found", 422: "unprocessable"}.get(status, "client_error")
        return self._make(ClientRequestError, message, fields, status=status, kind=kind, retryable=False)

    def in_body(self, body: Any) -> ProviderError | None:
        """The error hidden in an HTTP 200 body, if any."""
        fields = error_fields(body)
        if fields is None:
            return None
        return self._make(ErrorInBody, f"error inside HTTP 200 body: {fields.message}", fields, status=200,
                          kind="error_in_body")

    def malformed(self, what: str, status: int | None = 200) -> ProviderError:
        return self._make(MalformedResponse, what, status=status, kind="malformed")


def _plain(body: Any, max_chars: int) -> str:
    """The start of a non-JSON body as text, at most ``max_chars`` (``scrub`` cuts it, after the secrets)."""
    if isinstance(body, (bytes, bytearray)):
        return body[:max_chars * 4].decode("utf-8", "replace")[:max_chars].strip()
    return ""
