"""One adapter for any OpenAI-compatible endpoint: Cerebras, RunPod's vLLM worker, plain vLLM.

A pooled ``aiohttp`` session per provider keeps connections alive between
requests. Every failure leaves as a ``ProviderError`` whose ``kind`` says what
happened; the router decides what to do about it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from ..config import ProviderConfig
from ..errors import ProviderConnectionError, ProviderError, ProviderTimeout
from .errors import Classifier

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
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith(RATELIMIT_PREFIX)}


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
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"<OpenAICompatProvider {self.name} model={self.model!r} base_url={self.config.base_url!r}>"

    def _get_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            connector = aiohttp.TCPConnector(
                limit=self.config.max_connections, keepalive_timeout=60, ttl_dns_cache=300,
            )
            self._session = aiohttp.ClientSession(
                connector=connector, json_serialize=lambda o: orjson.dumps(o).decode(),
            )
            self._loop = loop
        return self._session

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    def _timeout(self, timeout_s: float, *, streaming: bool) -> aiohttp.ClientTimeout:
        connect = min(self.config.connect_timeout_s, timeout_s)
        if streaming:
            # A stream may legitimately run long; what must not happen is silence.
            return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=timeout_s)
        return aiohttp.ClientTimeout(total=timeout_s, sock_connect=connect)

    def _post(
        self, path: str, body: dict[str, Any], timeout_s: float, extra_headers: Mapping[str, str] | None,
        *, streaming: bool,
    ) -> Any:
        """The aiohttp request context manager for one call."""
        return self._get_session().post(
            self.config.base_url + path,
            data=orjson.dumps(body),
            headers={**self._headers, **extra_headers} if extra_headers else self._headers,
            timeout=self._timeout(timeout_s, streaming=streaming),
        )

    async def request(
        self, path: str, body: dict[str, Any], *, timeout_s: float,
        extra_headers: Mapping[str, str] | None = None,
    ) -> ProviderResponse:
        """POST ``body`` to ``path`` (e.g. ``/chat/completions``) and return a checked answer."""
        started = time.perf_counter()
        try:
            async with self._post(path, body, timeout_s, extra_headers, streaming=False) as resp:
                raw = await resp.read()
                return self._check(resp.status, raw, resp.headers, started)
        except ProviderError as exc:
            exc.elapsed_ms = _elapsed_ms(started)
            raise
        except BaseException as exc:
            raise self._transport_error(exc, started) from None

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
            async with self._post(path, body, timeout_s, extra_headers, streaming=True) as resp:
                if resp.status != 200:
                    self._check(resp.status, await resp.read(), resp.headers, started)  # raises
                if ratelimit is not None:
                    ratelimit.update(ratelimit_headers(resp.headers))
                data_lines: list[bytes] = []
                async for line in resp.content:
                    line = line.rstrip(b"\r\n")
                    if line.startswith(b"data:"):
                        data_lines.append(line[5:].strip())
                        continue
                    if line or not data_lines:
                        continue  # comments, event names, keep-alives
                    data = b"\n".join(data_lines)
                    data_lines = []
                    if data == b"[DONE]":
                        return
                    yield self._parse_event(data)
                if data_lines and b"\n".join(data_lines) == b"[DONE]":
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
        """Map aiohttp/asyncio failures to provider errors; let cancellation through."""
        elapsed = _elapsed_ms(started)
        if isinstance(exc, asyncio.CancelledError) or not isinstance(exc, Exception):
            return exc
        if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
            what = "connect timeout" if isinstance(exc, aiohttp.ConnectionTimeoutError) else "timed out"
            return ProviderTimeout(message=what, provider=self.name, kind="timeout", elapsed_ms=elapsed)
        if isinstance(exc, aiohttp.ClientConnectorError):
            return ProviderConnectionError(
                message=f"cannot connect: {exc.os_error.strerror or exc.os_error}", provider=self.name,
                kind="connect", elapsed_ms=elapsed,
            )
        if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError)):
            return ProviderConnectionError(
                message=f"connection lost: {type(exc).__name__}", provider=self.name,
                kind="disconnected", elapsed_ms=elapsed,
            )
        if isinstance(exc, aiohttp.ClientError):
            return ProviderConnectionError(
                message=f"HTTP client error: {type(exc).__name__}", provider=self.name,
                kind="connect", elapsed_ms=elapsed,
            )
        return exc


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
