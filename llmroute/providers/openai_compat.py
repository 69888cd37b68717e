"""One adapter for any OpenAI-compatible endpoint: Cerebras, RunPod's vLLM worker, plain vLLM.

A keep-alive connection pool per provider (``http.ConnectionPool``) carries the
requests. Every failure leaves as a ``ProviderError`` whose ``kind`` says what
happened; the router decides what to do about it.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..config import ProviderConfig
from ..errors import ProviderConnectionError, ProviderError, ProviderTimeout
from .errors import Classifier
from .http import ConnectionPool, InvalidResponse, ResponseTooLarge, UpstreamClosed
from .sse import SSEDecoder
from .tls import describe as describe_tls_error

RATELIMIT_PREFIX = "x-ratelimit-"


@dataclass(slots=True)
class ProviderResponse:
    body: dict[str, Any]
    """The JSON body as sent, unknown fields included."""
    status: int
    latency_ms: float
    ratelimit: dict[str, str] = field(default_factory=dict)
    raw_json: bytes = b""


def ratelimit_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The ``x-ratelimit-*`` headers (names already lower-cased by the client)."""
    return {k: v for k, v in headers.items() if k.startswith(RATELIMIT_PREFIX)}


class OpenAICompatProvider:
    """Calls ``{base_url}/chat/completions`` and ``{base_url}/completions``."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self.name = config.name
        self.model = config.model
        secret = config.api_key.get_secret_value() if config.api_key is not None else None
        self._classify = Classifier(self.name, secret)
        self._headers = {"content-type": "application/json", **config.headers}
        if secret:
            self._headers["authorization"] = f"Bearer {secret}"
        self._pool: ConnectionPool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"<OpenAICompatProvider {self.name} model={self.model!r} base_url={self.config.base_url!r}>"

    def _get_pool(self) -> ConnectionPool:
        loop = asyncio.get_running_loop()
        if self._pool is None or self._loop is not loop:
            self._pool = ConnectionPool(
                self.config.base_url, max_connections=self.config.max_connections,
                connect_timeout_s=self.config.connect_timeout_s, headers=self._headers,
                ca_bundle=self.config.ca_bundle, tls_verify=self.config.tls_verify,
                proxy=self.config.proxy_url, trust_env=self.config.proxy_from_env,
                max_response_bytes=self.config.max_response_bytes, name=self.name,
            )
            self._loop = loop
        return self._pool

    async def probe(self, path: str, timeout_s: float) -> int:
        """GET ``path`` (a health check); the HTTP status, or raises on a transport failure."""
        async with asyncio.timeout(timeout_s):
            return (await self._get_pool().get(path)).status

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
        self._pool = None

    async def request(
        self, path: str, body: dict[str, Any], *, timeout_s: float,
        extra_headers: Mapping[str, str] | None = None,
    ) -> ProviderResponse:
        """POST ``body`` to ``path`` (e.g. ``/chat/completions``) within ``timeout_s`` and return a checked answer."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s):
                resp = await self._get_pool().post(path, orjson.dumps(body), extra_headers)
        except BaseException as exc:
            raise self._transport_error(exc, started) from None
        return self._check(resp.status, resp.body, resp.headers, started)

    def _check(self, status: int, raw: bytes, headers: Mapping[str, str], started: float) -> ProviderResponse:
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
            if status == 200:
                raise self._classify.malformed(f"response is not valid JSON ({len(raw)} bytes)") from None
        if status != 200:
            raise self._classify.from_status(status, body if body is not None else raw, headers)
        error = self._classify.in_body(body)
        if error is not None:
            raise error
        if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
            raise self._classify.malformed("response has no 'choices' list")
        return ProviderResponse(
            body=body, status=status, latency_ms=_elapsed_ms(started), ratelimit=ratelimit_headers(headers), raw_json=raw,
        )

    async def stream(
        self, path: str, body: dict[str, Any], *, timeout_s: float,
        extra_headers: Mapping[str, str] | None = None, ratelimit: dict[str, str] | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield each SSE event's JSON until ``data: [DONE]``.

        ``ratelimit``, if given, is filled with the response's rate-limit headers
        before the first event. A stream that ends without ``[DONE]`` raises
        ``ProviderConnectionError(kind="stream_cut")``.
        """
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s):
                resp = await self._get_pool().post_stream(path, orjson.dumps(body), extra_headers)
        except BaseException as exc:
            raise self._transport_error(exc, started) from None
        try:
            if resp.status != 200:
                async with asyncio.timeout(timeout_s):
                    raw = await resp.read()
                self._check(resp.status, raw, resp.headers, started)  # raises
            if ratelimit is not None:
                ratelimit.update(ratelimit_headers(resp.headers))
            pieces = resp.__aiter__()
            decoder = SSEDecoder(self.config.max_sse_line_bytes)
            while True:
                try:
                    async with asyncio.timeout(timeout_s):  # what must not happen is silence
                        piece = await anext(pieces)
                except StopAsyncIteration:
                    break
                for data in decoder.feed(piece):
                    if data == b"[DONE]":
                        return
                    yield self._parse_event(data)
            if decoder.flush() == [b"[DONE]"]:
                return
            raise ProviderConnectionError(
                message="stream ended before data: [DONE]", provider=self.name, status=200, kind="stream_cut",
            )
        except ProviderError as exc:
            exc.elapsed_ms = _elapsed_ms(started)
            raise
        except GeneratorExit:
            raise
        except BaseException as exc:
            raise self._transport_error(exc, started) from None
        finally:
            await resp.aclose()

    def _parse_event(self, data: bytes) -> dict[str, Any]:
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise self._classify.malformed("stream event is not valid JSON") from None
        error = self._classify.in_body(event)
        if error is not None:
            error.kind = "error_in_stream"
            raise error
        if not isinstance(event, dict):
            raise self._classify.malformed("stream event is not a JSON object")
        return event

    def _transport_error(self, exc: BaseException, started: float) -> BaseException:
        """Map connection failures to provider errors; let cancellation and our own errors through."""
        elapsed = _elapsed_ms(started)
        if isinstance(exc, ProviderError):
            exc.elapsed_ms = elapsed
            return exc
        if not isinstance(exc, Exception):
            return exc  # CancelledError, KeyboardInterrupt, GeneratorExit
        if isinstance(exc, UpstreamClosed):
            return ProviderConnectionError(message=str(exc), provider=self.name, kind="disconnected", elapsed_ms=elapsed)
        if isinstance(exc, ResponseTooLarge):
            error = self._classify.malformed(str(exc), status=None)
            error.kind = "too_large"
            return error
        if isinstance(exc, InvalidResponse):
            return self._classify.malformed(str(exc), status=None)
        if isinstance(exc, TimeoutError):
            return ProviderTimeout(message="timed out", provider=self.name, kind="timeout", elapsed_ms=elapsed)
        if isinstance(exc, ssl.SSLError):
            return ProviderConnectionError(message=f"TLS error: {describe_tls_error(exc)}",
                                           provider=self.name, kind="tls", elapsed_ms=elapsed)
        if isinstance(exc, OSError):
            return ProviderConnectionError(message=f"cannot connect: {exc.strerror or exc.__class__.__name__}",
                                           provider=self.name, kind="connect", elapsed_ms=elapsed)
        return exc


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
