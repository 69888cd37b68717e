"""RouteStream: a routed streaming completion, with fallback before the first chunk and optional resume after.

Before the first chunk a failing provider is replaced silently. After it, nothing
already sent can be taken back: by default the stream raises ``StreamInterrupted``.
With ``resume``, the answer continues on the next provider instead: it gets the
conversation plus the text already sent, as an assistant message, and is asked to
continue from there, so the client sees one unbroken stream. A hedged stream (``hedge`` in the config) races
the next provider after the delay; the first to send a chunk wins. Limits: the
continuation is a new generation by another model (it can repeat a word or change
style at the seam), the prompt is billed again on the second provider, and it
applies to chat streams (a completions stream resumes by appending the text to the
prompt).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from .cascade import Cascade
from .dispatch import CHAT_PATH, Dispatcher
from .errors import AllProvidersFailed, ProviderError, StreamInterrupted
from .ledger import RequestContext
from .providers import Deliver, OpenAICompatProvider
from .result import Attempt, RouteResult, request_headers
from .strategies import Route, RouteRequest, RoutingStrategy

_CHUNKS, _PAIRS = 0, 1  # what ``_run`` yields: chunk by chunk, or (a read's chunks, their payloads)

RESUME_PROMPT = ("Your previous reply was cut off. Continue it exactly where it stopped, without repeating "
                 "anything and without any preamble.")


class RouteStream:
    """An async iterator of OpenAI chunk dicts, with ``result`` filled in at the end."""

    def __init__(
        self, dispatch: Dispatcher, body: dict[str, Any], estimate: RouteRequest,
        strategy: RoutingStrategy | str | None, extra_headers: Mapping[str, str] | None,
        path: str = CHAT_PATH, context: RequestContext | None = None, resume: bool = False,
    ) -> None:
        self._dispatch = dispatch
        self._context = context
        self._body = body
        self._estimate = estimate
        self._strategy = strategy
        self._extra_headers = extra_headers
        self._path = path
        self._resume = resume
        self.result: RouteResult | None = None
        # Known once the first chunk arrived, before it is handed out: what a gateway puts in headers.
        self.provider: str | None = None
        self.strategy_name: str | None = None
        self.route: Route | None = None
        """The strategy's decision (quality_aware: score and tier), set when the stream opens."""
        self.attempts: list[Attempt] = []
        self.first_chunk_ms: float | None = None
        self.request_id: str | None = None
        """The request's id (the caller's ``x-request-id`` when given), set when the stream starts."""
        self.resumed = 0
        """How many times the answer moved to another provider mid-stream."""

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._run(_CHUNKS)

    def raw_batches(self) -> AsyncIterator[tuple[list[dict[str, Any]], list[bytes | None]]]:
        """The same chunks as ``async for``, in lists: those that one network read brought (never empty), each
        list with the upstream's ``data`` payload of each chunk beside it: its bytes as received if this stream
        did not change the chunk and they are one line, else None.

        For a relay that writes a read's chunks at once, passing an unchanged chunk on as received instead of
        encoding it again (see
        ``OpenAICompatProvider.stream_reads``). A chunk whose ``id`` was rewritten after a resume has None.
        """
        return self._run(_PAIRS)

    async def _discard(self, cascade: Cascade, opened: tuple[OpenAICompatProvider, tuple[Any, Any]]) -> None:
        """A hedged stream that also opened, too late: close it and bill its worker time or prompt."""
        provider, (upstream, _) = opened
        await upstream.aclose()
        cascade.attempts[-1].cost_usd = self._dispatch.pricers[provider.name].end(cascade.open_mark)

    def _opener(self, body: dict[str, Any], headers: dict[str, str], ratelimit: dict[str, str]) -> Any:
        async def open_stream(provider: OpenAICompatProvider, timeout_s: float) -> tuple[Any, Any]:
            ratelimit.clear()
            upstream = provider.stream_reads(
                self._path, {**body, "model": provider.model}, timeout_s=timeout_s,
                extra_headers=headers, ratelimit=ratelimit,
            )
            try:
                first = await anext(upstream)  # the first read's chunks (a list, never empty) and payloads
            except StopAsyncIteration:
                raise ProviderError(
                    message="stream ended with no chunk", provider=provider.name, kind="stream_cut",
                ) from None
            except BaseException:
                await upstream.aclose()
                raise
            return upstream, first

        return open_stream

    def _continuation(self, text: str) -> dict[str, Any]:
        """The request that asks the next provider to carry on from ``text``."""
        if self._path != CHAT_PATH:
            return {**self._body, "prompt": str(self._body["prompt"]) + text}
        messages = [*self._body["messages"], {"role": "assistant", "content": text},
                    {"role": "user", "content": RESUME_PROMPT}]
        return {**self._body, "messages": messages}

    async def _run(self, mode: int) -> AsyncIterator[Any]:
        dispatch = self._dispatch
        cascade, strategy_name, route = dispatch.plan(self._estimate, self._strategy)
        self.route = route
        request_id, headers = request_headers(self._extra_headers)
        self.request_id = request_id
        started = time.perf_counter()
        ratelimit: dict[str, str] = {}
        try:  # hedged or not: the first provider to send a chunk wins
            provider, (upstream, read) = await dispatch.attempt(
                cascade, strategy_name, self._estimate, self._opener(self._body, headers, ratelimit), self._discard)
        except (ProviderError, AllProvidersFailed, asyncio.CancelledError) as exc:
            dispatch.record_failure(cascade, strategy_name, request_id, started, exc, self._context, route=route)
            raise
        self.provider, self.strategy_name, self.attempts = provider.name, strategy_name, cascade.attempts
        self.first_chunk_ms = (time.perf_counter() - started) * 1000
        tally = Tally(started, self._path == CHAT_PATH, dispatch.shadow is not None, read[0][0].get("id"))
        earlier: list[Attempt] = []  # attempts of the segments before a resume
        counted = False  # ``read`` went through ``tally.count`` already (it came back refused by ``deliver``)
        sent: Deliver | None = None
        counting_for: Deliver | None = None  # the consumer's deliver, and ``counting`` it wrapped (kept here, not
        counting: Deliver | None = None  # in the tally: a closure over the tally held by the tally is a cycle)
        while True:
            try:
                while read is not None:
                    if not counted:
                        tally.count(*read)
                    if mode == _PAIRS:
                        sent = yield read
                    else:
                        for chunk in read[0]:
                            yield chunk
                    read = None  # not held while the next is awaited: pushed, that is the stream's whole life
                    try:
                        if sent is None:
                            read, counted = await upstream.__anext__(), False  # not anext(): no wrapper per read
                        else:  # events the consumer can take at once go to it from the socket's callback
                            if sent is not counting_for:
                                counting_for, counting = sent, tally.counting(sent)
                            # What comes back was offered to ``counting`` (stream_reads), so it is counted.
                            read, counted = await upstream.asend(counting), True
                    except StopAsyncIteration:
                        read = None
                break
            except ProviderError as exc:
                dispatch.state.record_failure(provider.name, exc.kind, (time.perf_counter() - started) * 1000,
                                            started_at=cascade.open_started_at)
                last_attempt = cascade.attempts[-1]
                last_attempt.ok, last_attempt.kind, last_attempt.error = False, "stream_interrupted", exc.message
                cascade.bill(tally.usage, self._estimate.input_tokens, tally.parts.segment())  # billed for what it generated
                await upstream.aclose()
                interrupted = StreamInterrupted(
                    message=f"stream failed after it started: {exc.message}", provider=provider.name,
                    status=exc.status, kind="stream_interrupted",
                )
                interrupted.attempts = earlier + cascade.attempts
                failed = {a.provider for a in interrupted.attempts if not a.ok}
                rest = [n for n in cascade.order if n not in failed]
                if not self._resume or not rest:
                    dispatch.record_failure(cascade, strategy_name, request_id, started, interrupted, self._context,
                                           provider=provider.name, ttft_ms=tally.ttft_ms, route=route)
                    raise interrupted from exc
                earlier = interrupted.attempts
                cascade = dispatch.cascade(rest, self._estimate)
                try:
                    provider, (upstream, read) = await cascade.run(  # stream() bounds the first event
                        self._opener(self._continuation(tally.parts.text()), headers, ratelimit), call_keeps_timeout=True)
                except (ProviderError, AllProvidersFailed) as again:
                    interrupted.attempts = earlier + cascade.attempts
                    dispatch.record_failure(cascade, strategy_name, request_id, started, interrupted, self._context,
                                           provider=provider.name, ttft_ms=tally.ttft_ms, route=route)
                    raise interrupted from again
                self.resumed += 1
                tally.new_segment()
                counted = False
                continue
            except BaseException as exc:  # the consumer stopped early or was cancelled: the tokens so far were billed
                cascade.bill(tally.usage, self._estimate.input_tokens, tally.parts.segment())  # billed for what it generated
                await upstream.aclose()
                dispatch.record_failure(cascade, strategy_name, request_id, started, exc, self._context,
                                       provider=provider.name, ttft_ms=tally.ttft_ms, route=route)
                raise
        await upstream.aclose()
        elapsed_ms = (time.perf_counter() - started) * 1000
        # The latency sample is the time to the first chunk: how long an answer runs says nothing of how fast
        # (or cold) the provider is, and would trip the cold-start detector on every long stream.
        cascade.succeeded(provider.name, _first_chunk_ms(cascade.attempts, provider.name, elapsed_ms), ratelimit)
        cascade.attempts[:0] = earlier
        self.result = dispatch.result(
            provider, cascade, strategy_name, request_id, started,
            text=tally.parts.text(), usage=tally.usage, finish_reason=tally.finish_reason,
            raw={k: v for k, v in tally.last.items() if k != "choices"}, ratelimit=dict(ratelimit),
            ttft_ms=tally.ttft_ms if tally.ttft_ms is not None else elapsed_ms, route=route,
            estimate=self._estimate, billed_text=tally.parts.segment() if earlier else None,
        )
        if earlier:  # a resumed answer: its tokens and cost are every segment's
            self.result.prompt_tokens = sum(a.prompt_tokens for a in self.result.attempts)
            self.result.completion_tokens = sum(a.completion_tokens for a in self.result.attempts)
            self.result.cost_usd = sum(a.cost_usd for a in self.result.attempts)
        dispatch.record_result(self.result, self._context)
        if dispatch.shadow is not None and not earlier:  # a resumed answer has two authors: nothing to compare
            tool_deltas = tally.tool_deltas
            message = {"content": self.result.text, "tool_calls": assemble_tool_calls(tool_deltas)} if tool_deltas else None
            dispatch.shadow.offer(self._path, self._body, self.result, self._context, message=message)


class Tally:
    """What a stream's events add up to, counted as each batch passes: the text, usage, finish reason, time to
    the first token and the last chunk; after a resume, each chunk's ``id`` set to the stream's first one.

    The routed stream counts the batches it pulls, and ``counting(deliver)`` counts those the socket's read
    callback hands straight to a consumer (``providers/events.py``): one count, whichever way a batch went.
    """

    __slots__ = ("_chat", "_keep_tools", "_started", "_stream_id", "finish_reason", "last", "parts", "resumed",
                 "tool_deltas", "ttft_ms", "usage")

    def __init__(self, started: float, chat: bool, keep_tools: bool, stream_id: Any) -> None:
        self._started = started
        self._chat = chat
        self._keep_tools = keep_tools  # streamed tool-call fragments are kept for shadow evaluation only
        self._stream_id = stream_id
        self.resumed = False
        self.parts = TextParts()
        self.usage: Mapping[str, Any] | None = None
        self.finish_reason: str | None = None
        self.ttft_ms: float | None = None
        self.last: dict[str, Any] = {}
        self.tool_deltas: list[Any] = []

    def new_segment(self) -> None:
        """The text from here on is another provider's (a resume): its usage is its own."""
        self.resumed = True
        self.usage = None
        self.parts.new_segment()

    def count(self, batch: list[dict[str, Any]], payloads: list[bytes | None]) -> None:
        if self.resumed and self._stream_id is not None:
            stream_id = self._stream_id
            for n, chunk in enumerate(batch):
                if chunk.get("id") != stream_id:
                    chunk["id"] = stream_id  # one stream, as the client sees it
                    payloads[n] = None  # changed: its bytes as received are no longer it
        chat = self._chat
        for chunk in batch:
            for choice in chunk.get("choices") or ():
                if chat:
                    delta = choice.get("delta") or {}
                    content = delta.get("content")
                    if self._keep_tools and delta.get("tool_calls"):
                        self.tool_deltas.extend(delta["tool_calls"])
                else:
                    content = choice.get("text")
                if content:
                    if self.ttft_ms is None:
                        self.ttft_ms = (time.perf_counter() - self._started) * 1000
                    self.parts.append(content)
                finish_reason = choice.get("finish_reason")
                if finish_reason:
                    self.finish_reason = finish_reason
            if chunk.get("usage"):
                self.usage = chunk["usage"]
        self.last = batch[-1]

    def counting(self, deliver: Deliver) -> Deliver:
        """``deliver``, counting each batch before it."""
        count = self.count

        def counting(batch: list[dict[str, Any]], payloads: list[bytes | None]) -> bool:
            count(batch, payloads)
            return deliver(batch, payloads)

        return counting


class TextParts:
    """The text streamed so far, kept for the result, the bill and a resume; folded as it grows.

    A list of one small string per chunk costs about 60 bytes a chunk besides the text (the string object
    and its slot): for an open stream that is most of what it keeps. Every ``FOLD`` pieces become one string,
    so what an open stream keeps stays about its text's size, and the joins stay linear.
    """

    FOLD = 32
    __slots__ = ("_blocks", "_pieces", "_segment_from")

    def __init__(self) -> None:
        self._blocks: list[str] = []
        self._pieces: list[str] = []
        self._segment_from = 0  # where the current provider's text starts in ``_blocks``

    def append(self, piece: str) -> None:
        pieces = self._pieces
        pieces.append(piece)
        if len(pieces) >= self.FOLD:
            self._blocks.append("".join(pieces))
            pieces.clear()

    def _fold(self) -> None:
        if self._pieces:
            self._blocks.append("".join(self._pieces))
            self._pieces.clear()

    def new_segment(self) -> None:
        """The text from here on is another provider's (after a resume)."""
        self._fold()
        self._segment_from = len(self._blocks)

    def text(self) -> str:
        self._fold()
        return "".join(self._blocks)

    def segment(self) -> str:
        """The current provider's part of the text."""
        self._fold()
        return "".join(self._blocks[self._segment_from:])


def _first_chunk_ms(attempts: list[Attempt], provider: str, default_ms: float) -> float:
    """The opening attempt's latency (from its request to its first chunk)."""
    for attempt in reversed(attempts):
        if attempt.ok and attempt.provider == provider:
            return attempt.latency_ms
    return default_ms


def assemble_tool_calls(deltas: list[Any]) -> list[dict[str, Any]]:
    """Streamed tool-call fragments as whole calls: by ``index``, name and arguments concatenated."""
    calls: dict[Any, dict[str, str]] = {}
    for delta in deltas:
        if not isinstance(delta, Mapping):
            continue
        call = calls.setdefault(delta.get("index", 0), {"name": "", "arguments": ""})
        function = delta.get("function")
        if isinstance(function, Mapping):
            for field in ("name", "arguments"):
                if isinstance(function.get(field), str):
                    call[field] += function[field]
    order = sorted(calls, key=lambda index: (not isinstance(index, int), index if isinstance(index, int) else str(index)))
    return [{"type": "function", "function": calls[index]} for index in order]
