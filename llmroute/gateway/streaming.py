"""SSE pass-through: fall back before the first byte, then relay each event as it arrives."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..errors import StreamInterrupted
from ..result import Attempt, RouteResult
from .errors import WARNING_HEADER, attempts_header, decision_headers, error_body
from .sse_writer import ClientTooSlow, EventWriter, encode_event, open_stream

if TYPE_CHECKING:
    from ..ledger import RequestContext
    from ..router import LLMRouter
    from ..strategies import StrongShare
    from .metrics import Metrics

log = logging.getLogger("llmroute.gateway")

async def stream_response(
    router: LLMRouter, metrics: Metrics, request: web.Request, body: dict[str, Any], path: str, strategy: str,
    endpoint: str, *, write_timeout_s: float, extra_headers: dict[str, str] | None = None,
    context: RequestContext | None = None, warning: str | None = None,
    settle: Callable[[RouteResult | None, list[Attempt]], None] | None = None,
    strong_share: StrongShare | None = None, prompt_tokens: int | None = None,
) -> web.StreamResponse | None:
    """Stream one completion to the client, routed by ``router`` and counted in ``metrics`` (``extra_headers``:
    forwarded upstream; ``write_timeout_s``: the most one write to the client may wait; ``warning``: an
    ``x-llmroute-warning`` for its headers; ``settle(result, attempts)``: told the stream's result (None when
    it produced none) and every attempt it made, billed, however it ends; ``strong_share``: a paced budget's
    share of strong calls for the strategy).

    Nothing is sent until a provider produced its first chunk, so every failure
    before that falls back (or becomes an ordinary JSON error). Usage is always
    requested upstream for cost; the usage-only chunk is passed on only to a
    client that asked for it. If the client goes away, aiohttp cancels this
    handler, and closing the router's stream closes the upstream connection.
    """
    wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    resume_header = request.headers.get("x-llmroute-resume")
    resume = None if resume_header is None else resume_header.strip().lower() in ("1", "true", "yes", "on")
    stream = router.stream_request(
        body, strategy=strategy, extra_headers=extra_headers, path=path, context=context,
        resume=resume, strong_share=strong_share, prompt_tokens=prompt_tokens,
    )
    chunks = stream.raw_batches()  # the chunks of one upstream read at a time: one write to the client for them
    settled = settle is None
    failed: list[Attempt] = []

    def end() -> None:  # once, before [DONE]: a client that sends its next request at once finds it settled
        nonlocal settled
        if not settled:
            settled = True
            settle(stream.result, stream.attempts or failed)  # type: ignore[misc]

    try:
        try:
            first = await anext(chunks)  # the whole cascade happens here
        except BaseException as exc:
            failed = getattr(exc, "attempts", None) or []  # no stream opened: the failed attempts are the bill
            await chunks.aclose()  # type: ignore[attr-defined]
            raise
        held = [first]  # the first read, for the relay to take: no frame keeps it for the stream's life
        del first
        return await _respond(metrics, request, stream, chunks, held, wants_usage, strategy, endpoint, warning,
                              write_timeout_s, end)
    finally:
        end()


async def _respond(
    metrics: Metrics, request: web.Request, stream: Any, chunks: Any, held: list[Any], wants_usage: bool, strategy: str,
    endpoint: str, warning: str | None, timeout_s: float, end: Callable[[], None],
) -> web.StreamResponse | None:
    fallback = any(not a.ok for a in stream.attempts)
    headers = {
        "Content-Type": "text/event-stream",
        "Cache-Control": "no-cache",
        "x-llmroute-provider": stream.provider or "",
        "x-llmroute-strategy": stream.strategy_name or strategy,
        "x-llmroute-latency-ms": f"{stream.first_chunk_ms or 0.0:.2f}",
        "x-llmroute-fallback": "true" if fallback else "false",
        "x-llmroute-attempts": attempts_header(stream.attempts),
        "x-request-id": stream.request_id or "",
        **(decision_headers(stream.route.quality_score, stream.route.decision) if stream.route else {}),
        **({WARNING_HEADER: warning} if warning else {}),
    }
    writer: EventWriter | Any = None
    try:
        # A request that frames its own answers (the hot path's) opens its own writer; else aiohttp's response.
        open_events = getattr(request, "open_events", None)
        writer = open_events(headers, timeout_s) if open_events is not None else \
            await open_stream(request, headers, timeout_s)
        await _relay(metrics, writer, chunks, held, wants_usage, strategy, end)
    except ClientTooSlow as exc:
        await _cut_off(metrics, request, chunks, exc, strategy)
        return writer.response if writer is not None else web.StreamResponse(status=499)
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
    if stream.result is not None:
        metrics.observe(stream.result, endpoint)
    return writer.response


async def _relay(
    metrics: Metrics, writer: Any, chunks: Any, held: list[Any], wants_usage: bool, strategy: str,
    end: Callable[[], None],
) -> None:
    """The chunks to the client, then ``end()`` (the stream's result is known), then ``[DONE]``.

    The chunks come in batches, those of one upstream read; a batch's events go to the client in one write.
    After the first, batches go to the client from the upstream's read callback (``deliver``, sent into the
    routed stream) while its socket has room; only a batch that could wait comes back here, to be sent within
    the write deadline.
    """
    write = writer.write

    def deliver(batch: list[dict[str, Any]], payloads: list[bytes | None]) -> bool:
        data = events_of(batch, payloads, wants_usage)
        return not data or write(data)

    send = chunks.asend
    try:
        while True:
            data = events_of(*held.pop(), wants_usage)  # popped: no frame keeps a batch while the next is awaited
            if data and not write(data):
                await writer.send_bounded(data)
            del data
            held.append(await send(deliver))
    except StopAsyncIteration:
        pass
    except StreamInterrupted as exc:
        metrics.observe_failures(exc.attempts, strategy)
        metrics.observe_error(strategy, "StreamInterrupted")
        message = f"{exc.provider}: {exc.message}; the answer above is incomplete"
        await writer.send_bounded(encode_event(error_body(message, "upstream_error", "stream_interrupted")))
    end()
    await writer.close()  # after an error event too: a clean end, not a dropped connection


def events_of(batch: list[dict[str, Any]], payloads: list[bytes | None], wants_usage: bool) -> bytes:
    """A batch's events as the client gets them. A chunk that goes out as it came (it has its payload bytes, and no
    ``usage`` to hide) is those bytes, not encoded again; the others are encoded."""
    events = []
    for chunk, payload in zip(batch, payloads, strict=True):
        if payload is not None and (wants_usage or "usage" not in chunk):
            events.append(b"data: " + payload + b"\n\n")  # one line (stream_reads): framing intact
        elif wants_usage or chunk.get("choices") or not chunk.get("usage"):
            if not wants_usage and "usage" in chunk:
                chunk = {k: v for k, v in chunk.items() if k != "usage"}
            events.append(encode_event(chunk))
    return b"".join(events)  # one event: itself, not a copy


async def _cut_off(metrics: Metrics, request: web.Request, chunks: Any, slow: ClientTooSlow, strategy: str) -> None:
    """Drop the client's connection, and end the routed stream with ``slow`` as the reason: the provider's
    stream is closed and the request recorded with what it cost so far."""
    log.warning("stream cut off: %s", slow)
    metrics.observe_error(strategy, "ClientTooSlow")
    try:
        await chunks.athrow(slow)  # first: once the connection is dropped, aiohttp cancels this handler
    except (ClientTooSlow, StopAsyncIteration):
        pass
    if request.transport is not None:
        request.transport.abort()  # what is buffered for the client is discarded
