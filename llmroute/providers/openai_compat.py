"""One adapter for any OpenAI-compatible endpoint: Cerebras, RunPod's vLLM worker, plain vLLM.

A keep-alive connection pool per provider (``http.ConnectionPool``) carries the
requests. Every failure leaves as a ``ProviderError`` whose ``kind`` says what
happened; the router decides what to do about it. Answers are checked here, once:
anything but the shape an OpenAI-compatible server sends is ``malformed``, so
nothing downstream (prices, metrics, the ledger) has to distrust it.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..config import ProviderConfig
from ..config.loading import redact_url
from ..errors import ClientRequestError, PoolExhausted, ProviderConnectionError, ProviderError, ProviderTimeout
from ..pricing import InvalidUsage, usage_tokens
from .errors import Classifier
from .events import Deliver, DeliverFailed, EventParser, EventPush, offer
from .http import ConnectionPool, InvalidHeader, InvalidResponse, PoolTimeout, ResponseTooLarge, UpstreamClosed
from .poolstats import PoolStats
from .sse import SSEDecoder
from .tls import describe as describe_tls_error
from .tls import warn_unverified
from .watchdog import SilenceWatchdog

RATELIMIT_PREFIX = "x-ratelimit-"
_BATCH_BYTES = 64 * 1024
"""Event bytes per batch that ``stream_reads`` yields; more than one read of a plain stream ever carries."""
_NOT_SECRET_HEADERS = frozenset({"content-type", "accept", "user-agent", "accept-encoding", "connection"})


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


def configured_secrets(config: ProviderConfig) -> Iterator[str]:
    """Every value in a provider's config that an upstream could echo back and must never be shown:
    the API key, header values (and the credentials after an ``Authorization`` scheme), and the base URL's
    user, password and query values."""
    if config.api_key is not None:
        yield config.api_key.get_secret_value()
    for name, value in config.headers.items():
        if name.lower() not in _NOT_SECRET_HEADERS:
            yield value
            yield value.partition(" ")[2]  # "Bearer sk-..." -> "sk-..."
    yield from config.url_secrets  # every ${VAR} value in base_url, as substituted
    url = urllib.parse.urlsplit(config.base_url)
    yield from (url.username or "", url.password or "")
    if config.proxy is not None:
        proxy = urllib.parse.urlsplit(config.proxy.get_secret_value())
        yield from (proxy.username or "", proxy.password or "")
    for _, value in urllib.parse.parse_qsl(url.query):
        yield value
        yield urllib.parse.quote(value, safe="")
    for pair in url.query.split("&"):  # as sent: decoding turns "+" into a space, and an echo is of the raw URL
        yield pair.partition("=")[2]


def shape_problem(body: dict[str, Any], *, stream: bool) -> str | None:
    """What makes an answer (or, with ``stream``, a chunk) unusable, or None: a few type checks, no schema."""
    choices = body.get("choices")
    if not isinstance(choices, list) and (choices is not None or not stream):
        return "'choices' is not a list"
    if not choices and not stream:  # a chunk may have none (Azure's prefilter chunk, the usage chunk); an answer not
        return "'choices' is empty"
    for choice in choices or ():
        if not isinstance(choice, dict):
            return "a choice is not an object"
        message = choice.get("delta" if stream else "message")
        if message is not None and (not isinstance(message, dict) or not _text(message.get("content"))):
            return f"a choice's {'delta' if stream else 'message'} is not an object with text content"
        if not _text(choice.get("text")) or not _text(choice.get("finish_reason")):
            return "a choice's text or finish_reason is not a string"
    try:
        usage_tokens(body.get("usage"))
    except InvalidUsage as exc:
        return str(exc)
    return None


def chunk_problem(chunk: dict[str, Any]) -> str | None:
    """``shape_problem(chunk, stream=True)``, written out for the one check every streamed event pays."""
    choices = chunk.get("choices")
    if type(choices) is list:
        for choice in choices:
            if type(choice) is not dict:
                return "a choice is not an object"
            delta = choice.get("delta")
            if delta is not None and (type(delta) is not dict or not _text(delta.get("content"))):
                return "a choice's delta is not an object with text content"
            text, finish_reason = choice.get("text"), choice.get("finish_reason")
            if (text is not None and type(text) is not str) or (finish_reason is not None
                                                                  and type(finish_reason) is not str):
                return "a choice's text or finish_reason is not a string"
        if chunk.get("usage") is None:
            return None
    return shape_problem(chunk, stream=True)  # anything rarer: the full check says what is wrong


def _text(value: Any) -> bool:
    return value is None or isinstance(value, str)


class OpenAICompatProvider:
    """Calls ``{base_url}/chat/completions`` and ``{base_url}/completions``."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self.name = config.name
        self.model = config.model
        secret = config.api_key.get_secret_value() if config.api_key is not None else None
        self._classify = Classifier(self.name, configured_secrets(config), config.max_retry_after_s)
        self._headers = {"content-type": "application/json", **config.headers}
        if secret:
            self._headers["authorization"] = f"Bearer {secret}"
        self._pool: ConnectionPool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.pool_stats = PoolStats(self.name, config.max_connections)
        """Slots in use, waiters and waits of this provider's connection pool (whichever loop made it)."""
        if not config.tls_verify:
            warn_unverified(self.name)  # once, when the router is built: at start-up for the gateway

    def __repr__(self) -> str:
        return f"<OpenAICompatProvider {self.name} model={self.model!r} base_url={redact_url(self.config.base_url, every_query_value=True)!r}>"

    def scrub(self, text: str) -> str:
        """``text`` without any of this provider's configured secrets, cut to a message's length."""
        return self._classify.scrub(text)

    def _get_pool(self) -> ConnectionPool:
        loop = asyncio.get_running_loop()
        if self._pool is None or self._loop is not loop:
            self._pool = ConnectionPool(
                self.config.base_url, max_connections=self.config.max_connections,
                connect_timeout_s=self.config.connect_timeout_s, headers=self._headers,
                ca_bundle=self.config.ca_bundle, tls_verify=self.config.tls_verify,
                proxy=self.config.proxy_url, trust_env=self.config.proxy_from_env,
                max_response_bytes=self.config.max_response_bytes, stats=self.pool_stats,
            )
            self._loop = loop
        return self._pool

    async def probe(self, path: str, timeout_s: float) -> int:
        """GET ``path`` (a health check); the HTTP status, or raises on a transport failure, or
        ``PoolExhausted`` when no connection came free (a busy provider, not a failed check)."""
        started = time.perf_counter()
        pool = self._get_pool()
        try:
            left_s = await self._slot(pool, timeout_s, started)
        except PoolTimeout as exc:
            raise self._transport_error(exc, started) from None
        async with asyncio.timeout(left_s):
            return (await pool.post(path, b"", method=b"GET", slot_held=True)).status

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
        self._pool = None

    async def _slot(self, pool: ConnectionPool, timeout_s: float, started: float) -> float:
        """Wait for a connection slot (at most ``pool_timeout_s``); the time left of ``timeout_s`` for the answer.

        The wait is outside the answer's timeout, so a full pool is ``pool_exhausted``, never a provider timeout.
        """
        await pool.acquire_slot(min(self.config.pool_timeout_s, timeout_s))
        return max(timeout_s - (time.perf_counter() - started), 0.0)

    async def request(
        self, path: str, body: dict[str, Any], *, timeout_s: float,
        extra_headers: Mapping[str, str] | None = None,
    ) -> ProviderResponse:
        """POST ``body`` to ``path`` (e.g. ``/chat/completions``) within ``timeout_s`` and return a checked answer."""
        started = time.perf_counter()
        try:
            data = orjson.dumps(body)
            pool = self._get_pool()
            if pool.try_slot():  # the usual case: no wait, so nothing to take off timeout_s
                left_s = timeout_s
            else:
                left_s = await self._slot(pool, timeout_s, started)
            # The pool watches the deadline: one timer for every answer awaited, not one per request.
            resp = await pool.post(path, data, extra_headers, slot_held=True, timeout_s=left_s)
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
        if not isinstance(body, dict):
            raise self._classify.malformed("response is not a JSON object")
        problem = shape_problem(body, stream=False)
        if problem is not None:
            raise self._classify.malformed(f"response has the wrong shape: {problem}")
        return ProviderResponse(
            body=body, status=status, latency_ms=_elapsed_ms(started), ratelimit=ratelimit_headers(headers), raw_json=raw,
        )

    async def stream(
        self, path: str, body: dict[str, Any], *, timeout_s: float,
        extra_headers: Mapping[str, str] | None = None, ratelimit: dict[str, str] | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield each SSE event's JSON until ``data: [DONE]``, one at a time: ``stream_reads`` event by event."""
        reads = self.stream_reads(path, body, timeout_s=timeout_s, extra_headers=extra_headers, ratelimit=ratelimit)
        try:
            async for batch, _ in reads:
                for event in batch:
                    yield event
        finally:
            await reads.aclose()

    async def stream_reads(
        self, path: str, body: dict[str, Any], *, timeout_s: float,
        extra_headers: Mapping[str, str] | None = None, ratelimit: dict[str, str] | None = None,
    ) -> AsyncIterator[tuple[list[dict[str, Any]], list[bytes | None]]]:
        """Yield the SSE events until ``data: [DONE]``, per network read: their JSON, and beside it each
        event's ``data`` payload exactly as received when it is one line (no CR or LF; else None).

        The payload lets a relay pass an event it does not change on as the upstream's bytes (valid JSON of the
        right shape: each was parsed and checked) rather than encode it again; one with a line end in it, an
        event of several ``data:`` lines, must be encoded again or it would break the client's framing.

        One read often carries several events, and a stream's Python cost is per resume of this generator
        (and of each layer above it), not per event. A list is never empty, and holds at most about
        ``_BATCH_BYTES`` of events (a compressed read can inflate to many). Events that came before a broken
        one are yielded before its error is raised.

        A consumer that can take events at once sends a ``Deliver`` in (``asend``) instead of pulling: from then
        on each read's events go to it from the socket's read callback (``events.EventPush``), and the generator
        yields only a batch that ``deliver`` refused; the consumer sends ``deliver`` (or None, to pull) again with
        its next ``asend``.

        The first event must arrive within ``timeout_s`` (slot wait included); after it, ``timeout_s``
        bounds each silence. ``ratelimit``, if given, is filled with the response's rate-limit headers
        before the first event. A stream that ends without ``[DONE]`` raises
        ``ProviderConnectionError(kind="stream_cut")``.
        """
        started = time.perf_counter()
        try:
            data = orjson.dumps(body)
            pool = self._get_pool()
            left_s = await self._slot(pool, timeout_s, started)
            async with asyncio.timeout(left_s):
                resp = await pool.post_stream(path, data, extra_headers, slot_held=True)
            del data  # the request's bytes: not kept for the stream's life
        except BaseException as exc:
            raise self._transport_error(exc, started) from None
        first_by = started + timeout_s
        try:
            if resp.status != 200:
                async with asyncio.timeout(max(first_by - time.perf_counter(), 0.0)):
                    raw = await resp.read()
                self._check(resp.status, raw, resp.headers, started)  # raises
            if ratelimit is not None:
                ratelimit.update(ratelimit_headers(resp.headers))
            decoder = SSEDecoder(self.config.max_sse_line_bytes)
            # What must not happen is silence: no *event* for timeout_s, however many bytes dripped meanwhile.
            # One watchdog per stream bounds it; per batch only its deadline moves (see watchdog.py).
            loop = asyncio.get_running_loop()
            watchdog = SilenceWatchdog(timeout_s, loop.time() + max(first_by - time.perf_counter(), 0.0),
                                       resp.expire_waiting)
            take, more, decoded, pushable = resp.take, resp.more, resp.decoded, resp.pushable
            parser = EventParser(decoder.feed, self._parse_event)
            parse_into = parser.parse_into
            deliver: Deliver | None = None  # what the consumer sent in: events it can take at once
            try:
                while True:
                    raws = take()
                    if not raws:
                        waiter = more()  # raises the read's failure (a silence past timeout_s: TimeoutError)
                        if waiter is None:
                            break
                        if deliver is None or not pushable:  # a content-encoded body is pulled, batch by batch
                            await waiter
                            continue
                        push = EventPush(parser, deliver, watchdog.extend, waiter, lambda: resp.push_to(None))
                        resp.push_to(push)
                        try:
                            await waiter  # woken when the stream needs this task (events.py)
                        finally:
                            resp.push_to(None)
                        if push.pending is not None:
                            pending, push.pending = push.pending, None
                            deliver = yield pending
                            del pending
                            watchdog.extend()
                        if push.failure is not None:
                            raise push.failure
                        if push.done:
                            return
                        continue
                    # Pulled. Once the consumer sent ``deliver`` in, every batch is offered to it first and only one
                    # it refuses is yielded: so the consumer knows that what comes back from its ``asend`` was
                    # offered (and counted, if its ``deliver`` counts), and what comes from ``__anext__`` was not.
                    batch: list[dict[str, Any]] = []
                    payloads: list[bytes | None] = []
                    size = 0
                    done = False
                    try:
                        for raw in raws:
                            for piece in decoded(raw):
                                if parse_into(piece, batch, payloads):
                                    done = True
                                    break
                                size += len(piece)
                                if size >= _BATCH_BYTES and batch:
                                    if not offer(deliver, batch, payloads):
                                        deliver = yield batch, payloads
                                    watchdog.extend()
                                    batch, payloads, size = [], [], 0
                            if done:
                                break
                    except DeliverFailed:
                        raise
                    except Exception:
                        # What came before the failure is the stream's, as if read one by one.
                        if batch and not offer(deliver, batch, payloads):
                            yield batch, payloads
                        raise
                    if batch:
                        if not offer(deliver, batch, payloads):
                            deliver = yield batch, payloads
                        watchdog.extend()  # the caller's time with the events does not count
                    if done:
                        return
                    del batch, payloads  # not held while the stream is pushed: that can be its whole life
            finally:
                watchdog.close()
            if [data.strip() for data in decoder.flush()] == [b"[DONE]"]:
                return
            raise ProviderConnectionError(
                message="stream ended before data: [DONE]", provider=self.name, status=200, kind="stream_cut",
            )
        except DeliverFailed as exc:  # the consumer's own failure: not the provider's, so not mapped to one
            raise exc.__cause__ from None  # type: ignore[misc]
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
        if type(event) is dict and "error" not in event and "err" not in event and "status" not in event \
                and event.get("object") != "error":  # none of the error shapes ``in_body`` knows: skip it
            problem = chunk_problem(event)
            if problem is not None:
                raise self._classify.malformed(f"stream event has the wrong shape: {problem}")
            return event
        error = self._classify.in_body(event)
        if error is not None:
            error.kind = "error_in_stream"
            raise error
        if not isinstance(event, dict):
            raise self._classify.malformed("stream event is not a JSON object")
        problem = shape_problem(event, stream=True)
        if problem is not None:
            raise self._classify.malformed(f"stream event has the wrong shape: {problem}")
        return event

    def _transport_error(self, exc: BaseException, started: float) -> BaseException:
        """Map connection failures to provider errors; let cancellation and our own errors through."""
        elapsed = _elapsed_ms(started)
        if isinstance(exc, ProviderError):
            exc.elapsed_ms = elapsed
            return exc
        if not isinstance(exc, Exception):
            return exc  # CancelledError, KeyboardInterrupt, GeneratorExit
        if isinstance(exc, PoolTimeout):
            return PoolExhausted(message=str(exc), provider=self.name, kind="pool_exhausted", elapsed_ms=elapsed)
        if isinstance(exc, InvalidHeader):  # the caller's header: every provider would refuse it alike
            return ClientRequestError(message=f"request {exc}; it cannot be sent upstream", provider=self.name,
                                      kind="bad_header", retryable=False, param=exc.name, elapsed_ms=elapsed)
        if isinstance(exc, orjson.JSONEncodeError):
            return ClientRequestError(message=f"request body cannot be sent as JSON: {exc}", provider=self.name,
                                      kind="bad_request", retryable=False, elapsed_ms=elapsed)
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
