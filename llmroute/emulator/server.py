"""An OpenAI-compatible server that behaves like a paid provider, for tests, demos and benchmarks."""

from __future__ import annotations

import asyncio
import math
import random
import socket
import struct
import threading
import time
import uuid
import weakref
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from ..tokens import count_message_tokens, count_tokens
from .answers import Answer, Refused, compose, last_user_text
from .faults import BAD_USAGE, HEADER, FaultPlan, check_fault
from .labels import Labels
from .params import invalid_param
from .profiles import Profile

_WORDS = (
    "the lead is qualified based on company size industry fit budget and timing "
    "TechCorp operates in SaaS with 500 employees and a clear need for automation "
    "recommend a follow up call with the head of operations within two weeks "
    "the document describes revenue growth risks obligations and renewal terms "
    "key findings include strong retention moderate churn and expansion potential"
).split()

HANG_S = 3600.0


@dataclass
class EmulatorSettings:
    profile: Profile
    speed: float = 1.0
    """Latency is divided by this; ``inf`` answers at once."""
    latency_ms: float | None = None
    """Override of the profile's median latency."""
    retry_after_s: float = 1.0
    api_key: str | None = None
    seed: int = 0
    faults: FaultPlan = field(default_factory=FaultPlan)
    tokens_per_minute: int | None = None
    """Enforce a Cerebras-style token bucket: each request charges prompt + max_tokens; over it, 429."""
    prompt_cache: bool = False
    """Report repeated message prefixes as ``usage.prompt_tokens_details.cached_tokens``, as OpenAI does."""
    labels: Labels | None = None
    """Labelled mode: answer these prompts right or wrong, and judge prompts about them, by their truth."""
    judge_noise: float = 0.0
    """Labelled mode: the probability that a judge verdict is flipped (seeded per prompt)."""


class Emulator:
    """The request handlers and their counters."""

    def __init__(self, settings: EmulatorSettings) -> None:
        self.settings = settings
        self.profile = settings.profile
        self._rng = random.Random(settings.seed)
        self.stats: dict[str, int] = {"requests": 0, "ok": 0, "connections": 0}
        self._peers: weakref.WeakSet[Any] = weakref.WeakSet()
        self.last_body: dict[str, Any] | None = None
        """The last request body, as received: lets tests check what a client passed through."""
        self.stream_abandoned = threading.Event()
        """Set when a client went away in the middle of a stream."""
        self._bucket_started = time.monotonic()
        self._seen_prefixes: dict[int, int] = {}
        """hash of a message-list prefix -> its prompt tokens, for prompt caching."""
        self._bucket_tokens = 0

    # -- app ----------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/health", self.health)
        app.router.add_get("/_emulator/stats", self.get_stats)
        app.router.add_post("/_emulator/faults", self.set_faults)
        return app

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "profile": self.profile.name})

    async def models(self, request: web.Request) -> web.Response:
        model = {"id": self.profile.model, "object": "model", "created": 1700000000, "owned_by": self.profile.name}
        return _json({"object": "list", "data": [model]})

    async def get_stats(self, request: web.Request) -> web.Response:
        return _json({**self.stats, "faults": self.settings.faults.rates})

    async def set_faults(self, request: web.Request) -> web.Response:
        """``{"faults": {"503": 1.0}, "times": 3}`` switches faults on (for 3 requests); ``{"faults": {}}`` clears them."""
        try:
            body = orjson.loads(await request.read())
            rates = {check_fault(str(k)): float(v) for k, v in (body.get("faults") or {}).items()}
            times = None if body.get("times") is None else int(body["times"])
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
            return self._error(400, f"bad fault request: {exc}", "invalid_request_error")
        self.settings.faults.set(rates, times)
        return _json({"faults": rates, "times": times})

    # -- completions --------------------------------------------------------------

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, chat=False)

    async def _handle(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        self.stats["requests"] += 1
        transport = request.transport
        if transport is not None and transport not in self._peers:
            self._peers.add(transport)  # counts connections, to show clients keep them alive
            self.stats["connections"] += 1
        if self.settings.api_key is not None and request.headers.get("authorization") != f"Bearer {self.settings.api_key}":
            return self._count("401", self._error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"))
        try:
            fault = self.settings.faults.choose(request.headers.get(HEADER))
        except ValueError as exc:
            return self._error(400, str(exc), "invalid_request_error")
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return self._error(400, "request body is not valid JSON", "invalid_request_error")
        if not isinstance(body, dict):
            return self._error(400, "request body must be a JSON object", "invalid_request_error")
        self.last_body = body
        invalid = invalid_param(body, chat=chat)
        if invalid is not None:
            return self._count("400", self._error(400, invalid[0], "invalid_request_error", param=invalid[1]))
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                return self._error(400, "'messages' must be a non-empty list", "invalid_request_error", param="messages")
            prompt_tokens = count_message_tokens(m for m in messages if isinstance(m, dict))
            cached_tokens = self._cached(messages) if self.settings.prompt_cache else 0
        else:
            prompt = body.get("prompt")
            if not isinstance(prompt, str):
                return self._error(400, "'prompt' must be a string", "invalid_request_error", param="prompt")
            prompt_tokens = count_tokens(prompt)
            cached_tokens = 0
        if prompt_tokens > self.profile.context_window and fault is None:
            fault = "context_length"
        if fault is not None:
            self.stats[fault] = self.stats.get(fault, 0) + 1
            early = await self._early_fault(request, fault, prompt_tokens, stream=body.get("stream") is True)
            if early is not None:
                return early
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 512
        limited = self._charge_bucket(prompt_tokens + int(max_tokens))
        if limited is not None:
            return limited
        low, high = self.profile.completion_tokens
        target = max(1, min(int(max_tokens), self._rng.randint(low, high)))
        try:
            answer = compose(body, last_user_text(messages) if chat else prompt, profile=self.profile.name,
                             seed=self.settings.seed, labels=self.settings.labels,
                             judge_noise=self.settings.judge_noise, babble=lambda: self._completion(target))
        except Refused as exc:
            return self._count("400", self._error(400, str(exc), "invalid_request_error", param=exc.param))
        completion_tokens = answer.completion_tokens
        latency_s = self._latency_s()
        headers = self._ratelimit_headers(prompt_tokens + completion_tokens)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return await self._stream(
                request, body, chat, answer, prompt_tokens, completion_tokens, latency_s, headers,
                include_usage, fault, cached_tokens,
            )
        if latency_s:
            await asyncio.sleep(latency_s)
        if fault in ("stream_cut", "stream_cut_first"):
            _reset(request)
            return web.Response()
        finish = answer.finish_reason or ("length" if completion_tokens >= int(max_tokens) else "stop")
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
        if chat:
            choice["message"] = "str" if fault == "bad_message" else answer.message()
        else:
            choice["text"] = 5 if fault == "bad_message" else answer.text
        payload = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}" if chat else f"cmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": self.profile.model,
            "choices": [5] if fault == "bad_choices" else [choice],
            "usage": _usage(prompt_tokens, completion_tokens, cached_tokens, fault),
            "system_fingerprint": f"emulated-{self.profile.name}",
        }
        self.stats["ok"] += 1
        return _json(payload, headers=headers)

    async def _early_fault(self, request: web.Request, fault: str, prompt_tokens: int,
                           stream: bool = False) -> web.StreamResponse | None:
        """Faults that happen before any answer; None for those that happen during one."""
        # Retry-After runs at the emulator's speed, like its latency.
        retry_s = 0.0 if math.isinf(self.settings.speed) else self.settings.retry_after_s / self.settings.speed
        retry = {"Retry-After": f"{retry_s:.3g}"}
        if fault == "429":
            return self._error(429, "Requests per minute limit exceeded", "rate_limit_error", "rate_limit_exceeded", headers=retry)
        if fault in ("500", "502", "504"):
            return self._error(int(fault), "upstream worker error", "server_error")
        if fault == "503":
            return self._error(503, "service unavailable: no workers ready", "server_error", headers=retry)
        if fault == "hang":
            await asyncio.sleep(HANG_S)
            return web.Response(status=504)
        if fault == "reset":
            _reset(request)
            return web.Response()
        if fault == "error_in_body":
            return _json(self._error_body(500, "worker failed while generating", "InternalServerError"))
        if fault == "malformed":
            return web.Response(body=b'{"id": "chatcmpl-broken", "choices": [{"index": 0, "mess', content_type="application/json")
        if fault in ("huge_body", "huge_sse"):
            return await _endless(request, fault, stream=stream)
        if fault == "204":
            return web.Response(status=204)
        if fault == "302":
            return web.Response(status=302, headers={"Location": "/elsewhere"})
        if fault == "context_length":
            message = (
                f"This model's maximum context length is {self.profile.context_window} tokens. "
                f"However, you requested {prompt_tokens} tokens in the messages."
            )
            return self._error(400, message, "invalid_request_error", "context_length_exceeded", param="messages")
        if fault in ("400", "401", "404", "422"):
            status = int(fault)
            message = {400: "invalid request", 401: "Incorrect API key provided.",
                       404: f"The model `{self.profile.model}` does not exist.", 422: "unprocessable request"}[status]
            return self._error(status, message, "invalid_request_error")
        return None

    async def _stream(self, request: web.Request, *args: Any) -> web.StreamResponse:
        """Stream an answer; a client that leaves early is counted and signalled."""
        try:
            return await self._stream_events(request, *args)
        except (asyncio.CancelledError, ConnectionError):
            self.stats["streams_abandoned"] = self.stats.get("streams_abandoned", 0) + 1
            self.stream_abandoned.set()
            raise

    async def _stream_events(
        self, request: web.Request, body: dict[str, Any], chat: bool, answer: Answer,
        prompt_tokens: int, completion_tokens: int, latency_s: float, headers: dict[str, str],
        include_usage: bool, fault: str | None, cached_tokens: int = 0,
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache", **headers,
        })
        ttft_s = latency_s * 0.3
        deltas: list[Any] = answer.deltas() if chat else list(answer.pieces)
        per_piece_s = (latency_s - ttft_s) / max(1, len(deltas) - chat)
        if ttft_s:
            await asyncio.sleep(ttft_s)
        await response.prepare(request)
        if fault == "stream_cut_first":
            _reset(request)
            return response
        cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        base = {"id": cid, "object": "chat.completion.chunk" if chat else "text_completion",
                "created": created, "model": self.profile.model}

        def chunk(delta: Any, finish: str | None = None) -> bytes:
            if chat:
                choice: dict[str, Any] = {"index": 0, "delta": "str" if fault == "bad_message" else delta or {},
                                          "finish_reason": finish, "logprobs": None}
            else:
                choice = {"index": 0, "text": 5 if fault == "bad_message" else delta or "",
                          "finish_reason": finish, "logprobs": None}
            event: dict[str, Any] = {**base, "choices": [5] if fault == "bad_choices" else [choice]}
            if fault == "bad_usage":  # continuous usage on every chunk, spoilt from the first
                event["usage"] = _usage(prompt_tokens, 0, 0, fault)
            return b"data: " + orjson.dumps(event) + b"\n\n"

        cut_at = (len(deltas) + chat) // 2 if fault == "stream_cut" else None
        for i, delta in enumerate(deltas):
            if cut_at is not None and i == cut_at:
                _reset(request)
                return response
            if per_piece_s and (i or not chat):  # a chat stream's first delta (the role) comes with the first byte
                await asyncio.sleep(per_piece_s)
            await response.write(chunk(delta))
        limit = int(body.get("max_completion_tokens") or body.get("max_tokens") or 1 << 30)
        finish = answer.finish_reason or ("length" if completion_tokens >= limit else "stop")
        await response.write(chunk(None, finish=finish))
        if include_usage:
            usage_event = {**base, "choices": [], "usage": _usage(prompt_tokens, completion_tokens, cached_tokens, fault)}
            await response.write(b"data: " + orjson.dumps(usage_event) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        self.stats["ok"] += 1
        return response

    # -- helpers ------------------------------------------------------------------

    def _latency_s(self) -> float:
        if math.isinf(self.settings.speed):
            return 0.0
        median = self.settings.latency_ms if self.settings.latency_ms is not None else self.profile.latency_ms
        sample = median * math.exp(self._rng.gauss(0.0, self.profile.latency_sigma))
        return sample / 1000 / self.settings.speed

    def _completion(self, target_tokens: int) -> list[str]:
        """Word pieces (each with its leading space) adding up to ``target_tokens``."""
        pieces: list[str] = []
        total = 0
        while total < target_tokens:
            word = self._rng.choice(_WORDS)
            piece = word if not pieces else " " + word
            pieces.append(piece)
            total += count_tokens(piece)
        return pieces

    def _charge_bucket(self, tokens: int) -> web.Response | None:
        """With ``tokens_per_minute`` set: charge the request, or answer 429 as Cerebras does when it would overflow."""
        limit = self.settings.tokens_per_minute
        if limit is None:
            return None
        elapsed = time.monotonic() - self._bucket_started
        if elapsed >= 60:
            self._bucket_started, self._bucket_tokens, elapsed = time.monotonic(), 0, 0.0
        if self._bucket_tokens + tokens > limit:
            self.stats["429"] = self.stats.get("429", 0) + 1
            headers = {**self._ratelimit_headers(0), "Retry-After": f"{60 - elapsed:.3g}"}
            return self._error(429, "Tokens per minute limit exceeded", "rate_limit_error", "rate_limit_exceeded",
                               headers=headers)
        self._bucket_tokens += tokens
        return None

    def _ratelimit_headers(self, tokens: int) -> dict[str, str]:
        if not self.profile.ratelimit_headers:
            return {}
        elapsed = time.monotonic() - self._bucket_started
        if elapsed >= 60:
            self._bucket_started, self._bucket_tokens, elapsed = time.monotonic(), 0, 0.0
        if self.settings.tokens_per_minute is None:
            self._bucket_tokens += tokens
        limit_tokens, limit_requests = self.settings.tokens_per_minute or 1_000_000, 1_000_000
        return {
            "x-ratelimit-limit-requests-day": str(limit_requests),
            "x-ratelimit-limit-tokens-minute": str(limit_tokens),
            "x-ratelimit-remaining-requests-day": str(max(0, limit_requests - self.stats["requests"])),
            "x-ratelimit-remaining-tokens-minute": str(max(0, limit_tokens - self._bucket_tokens)),
            "x-ratelimit-reset-requests-day": f"{86400 - time.time() % 86400:.2f}",
            "x-ratelimit-reset-tokens-minute": f"{60 - elapsed:.2f}",
        }

    def _error_body(self, status: int, message: str, error_type: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
        if self.profile.error_style == "vllm":
            return {"object": "error", "message": message, "type": error_type, "param": param, "code": status}
        return {"error": {"message": message, "type": error_type, "param": param, "code": code or str(status)}}

    def _error(
        self, status: int, message: str, error_type: str, code: str | None = None,
        param: str | None = None, headers: dict[str, str] | None = None,
    ) -> web.Response:
        return _json(self._error_body(status, message, error_type, code, param), status=status, headers=headers)

    def _cached(self, messages: list[Any]) -> int:
        """Tokens of the longest message prefix seen before; remembers this request's prefixes."""
        cached = 0
        tokens = 0
        key = 0
        for message in messages:
            key = hash((key, orjson.dumps(message, option=orjson.OPT_SORT_KEYS)))
            tokens += count_message_tokens([message]) if isinstance(message, dict) else 0
            if key in self._seen_prefixes:
                cached = tokens
            elif len(self._seen_prefixes) < 100_000:
                self._seen_prefixes[key] = tokens
        return min(cached, tokens)

    def _count(self, key: str, response: web.Response) -> web.Response:
        self.stats[key] = self.stats.get(key, 0) + 1
        return response


def _usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0, fault: str | None = None) -> dict[str, Any]:
    usage: dict[str, Any] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                             "total_tokens": prompt_tokens + completion_tokens}
    if cached_tokens:
        usage["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    if fault in BAD_USAGE:
        key, value = BAD_USAGE[fault]
        usage[key] = value
    return usage


def _json(payload: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json", headers=headers)


def _reset(request: web.Request) -> None:
    """Close the connection with a TCP RST, as a crashed worker or proxy does."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


HUGE_BYTES = 2 * 1024**3
_HUGE_PIECE = 1024 * 1024


async def _endless(request: web.Request, fault: str, *, stream: bool) -> web.StreamResponse:
    """An answer no client should read to its end: written a MiB at a time until the client hangs up."""
    sse = stream or fault == "huge_sse"
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream" if sse else "application/json"})
    if not sse:
        response.content_length = HUGE_BYTES
    await response.prepare(request)
    if stream:  # one line that never ends
        head, piece = b"data: ", b"y" * _HUGE_PIECE
    elif sse:  # valid events, far too many of them, to a request that asked for JSON
        event = b'data: {"choices": [{"index": 0, "delta": {"content": "' + b"x" * 1000 + b'"}}]}\n\n'
        head, piece = b"", event * (_HUGE_PIECE // len(event))
    else:
        head, piece = b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "', b"x" * _HUGE_PIECE
    try:
        await response.write(head)
        for _ in range(HUGE_BYTES // len(piece)):
            await response.write(piece)
    except (ConnectionError, asyncio.CancelledError):
        pass
    return response
