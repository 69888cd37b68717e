"""One call to one named provider, outside any routing decision: what measuring quality needs.

Offline collection, shadow evaluation and the LLM judge each ask one given provider one
question. They must play by the same rules as user traffic (an open breaker is not called, a
Retry-After is honoured, the outcome feeds the provider's breaker and latency, the bill is priced
as the ledger prices it), so the call goes through a one-provider ``Cascade`` rather than a
second copy of its logic. What they must not do is take capacity a user request needs: with
``spare_headroom`` a provider whose rate-limit bucket is nearly empty is not called at all.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..cascade import Cascade
from ..errors import AllProvidersFailed, ProviderError
from ..pricing import Pricer
from ..providers import OpenAICompatProvider
from ..ratelimit import RateLimitWindow
from ..result import Attempt
from ..state import RouterState
from ..tokens import estimate_message_tokens, estimate_tokens, message_text

__all__ = ["CallOutcome", "HEADROOM_RESERVE", "answer_text", "call_once", "has_spare_headroom"]

CHAT_PATH = "/chat/completions"
COMPLETIONS_PATH = "/completions"
DEFAULT_OUTPUT_TOKENS = 256
"""Output tokens assumed for a request that sets no ``max_tokens``, for the rate-limit check."""
HEADROOM_RESERVE = 1.0
"""With ``spare_headroom``, a call goes only if every token bucket keeps (1 + this) times the call's
own size, and every request bucket at least two requests: after the measurement, a user request
of the same size still fits. Buckets are known only by what is left (providers' ``limit`` headers
are not kept), so the reserve is relative to the request, not a share of the limit."""


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """What one call gave: the answer's text, or why there is none; what it cost."""

    provider: str
    text: str | None
    """``answer_text()`` of the first choice; None when the call failed or was not sent."""
    cost_usd: float
    """What was billed, priced like the ledger does (0.0 if nothing)."""
    error: str | None
    """``"kind: message"`` when it failed or was not sent (``circuit_open``, ``rate_limit_headroom``, ...)."""
    latency_ms: float
    usage: dict | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def answer_text(message: Mapping[str, Any]) -> str:
    """The text a grader compares: the message's content, or its tool calls as canonical JSON.

    Two providers asked for the same tool call differ in call ids, key order and the spacing of
    ``arguments`` (a JSON string); none of that is the answer. Tool calls become
    ``{"tool_calls": [{"name": ..., "arguments": ...}]}`` with ``arguments`` parsed when it is
    JSON and keys sorted, so the json grader compares what was called with what. Content sent
    beside tool calls (a preamble) is left out. The legacy ``function_call`` counts as one call.
    """
    calls: list[Any] = []
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list):
        calls = [call.get("function") if isinstance(call, Mapping) else call for call in tool_calls]
    elif isinstance(message.get("function_call"), Mapping):
        calls = [message["function_call"]]
    if calls:
        return json.dumps({"tool_calls": [_canonical_call(call) for call in calls]},
                          sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    content = message_text(message.get("content"))
    if not content and isinstance(message.get("refusal"), str):
        return message["refusal"]
    return content


def _canonical_call(function: Any) -> dict[str, Any]:
    if not isinstance(function, Mapping):
        return {"name": None, "arguments": None}
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            pass  # kept as the model wrote it: a broken call is still an answer to grade
    return {"name": function.get("name"), "arguments": arguments}


def has_spare_headroom(window: RateLimitWindow, tokens_needed: int, now: float | None = None) -> bool:
    """Whether a call of ``tokens_needed`` leaves a user request of the same size room (``HEADROOM_RESERVE``)."""
    now = time.monotonic() if now is None else now
    reserve = tokens_needed * (1 + HEADROOM_RESERVE)
    if any(b.remaining < reserve and now < b.resets_at for b in window.tokens):
        return False
    return not any(b.remaining < 2 and now < b.resets_at for b in window.requests)


def request_tokens(body: Mapping[str, Any], default_output_tokens: int = DEFAULT_OUTPUT_TOKENS) -> tuple[int, int]:
    """(estimated prompt tokens, output tokens asked for) of a chat or completions body."""
    messages = body.get("messages")
    if isinstance(messages, list):
        prompt = estimate_message_tokens(m for m in messages if isinstance(m, Mapping))
    else:
        prompt = estimate_tokens(str(body.get("prompt") or ""))
    output = body.get("max_completion_tokens") or body.get("max_tokens")
    if not isinstance(output, int) or isinstance(output, bool) or output <= 0:
        output = default_output_tokens
    return prompt, output


async def call_once(
    provider: OpenAICompatProvider, pricer: Pricer, state: RouterState, body: dict, *,
    timeout_s: float, spare_headroom: bool = False, default_output_tokens: int = DEFAULT_OUTPUT_TOKENS,
) -> CallOutcome:
    """Send ``body`` (chat if it has ``messages``, else completions) to ``provider`` once; never raises.

    Not sent when its breaker is open (``circuit_open``), when it asked to wait (``cooling_down``)
    or, with ``spare_headroom``, when its rate limit has no room to spare (``rate_limit_headroom``).
    The outcome updates ``state`` as a routed request's would. Cancellation still propagates.
    """
    started = time.perf_counter()
    try:
        return await _call(provider, pricer, state, body, timeout_s, spare_headroom, default_output_tokens, started)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a bug on this side must not end a whole evaluation run
        message = provider.scrub(f"{type(exc).__name__}: {exc}")
        return CallOutcome(provider.name, None, 0.0, f"internal: {message}", _ms_since(started))


async def _call(provider: OpenAICompatProvider, pricer: Pricer, state: RouterState, body: dict, timeout_s: float,
                spare_headroom: bool, default_output_tokens: int, started: float) -> CallOutcome:
    name = provider.name
    prompt_tokens, output_tokens = request_tokens(body, default_output_tokens)
    tokens_needed = prompt_tokens + output_tokens
    if spare_headroom and not has_spare_headroom(state.ratelimit(name), tokens_needed):
        return CallOutcome(name, None, 0.0, f"rate_limit_headroom: fewer than {tokens_needed} tokens to spare "
                           "in its rate limit", _ms_since(started))
    path = CHAT_PATH if "messages" in body else COMPLETIONS_PATH
    cascade = Cascade({name: provider}, state, [name], deadline_s=timeout_s, retry_rounds=0,
                      pricers={name: pricer}, max_retry_wait_s=0.0, tokens_needed=tokens_needed, note_reorder=False)

    async def send(p: OpenAICompatProvider, left_s: float) -> Any:
        return await p.request(path, {**body, "model": p.model}, timeout_s=left_s)

    try:
        _, response = await cascade.run(send, call_keeps_timeout=True)
    except (ProviderError, AllProvidersFailed) as exc:
        attempts = exc.attempts or cascade.attempts
        return CallOutcome(name, None, sum(a.cost_usd for a in attempts), _describe(attempts, exc),
                           _ms_since(started))
    cascade.succeeded(name, response.latency_ms, response.ratelimit)
    choice = response.body["choices"][0]
    if path == CHAT_PATH:
        message = choice.get("message")
        text = answer_text(message) if isinstance(message, Mapping) else ""
    else:
        text = choice.get("text") or ""
    usage = response.body.get("usage")
    cascade.bill(usage, prompt_tokens, text)
    return CallOutcome(name, text, sum(a.cost_usd for a in cascade.attempts), None, _ms_since(started),
                       usage if isinstance(usage, dict) else None)


def _describe(attempts: list[Attempt], exc: BaseException) -> str:
    if attempts:
        last = attempts[-1]
        status = f" (HTTP {last.status})" if last.status is not None else ""
        return f"{last.kind}: {last.error or 'failed'}{status}"
    if isinstance(exc, ProviderError):
        return f"{exc.kind}: {exc.message}"
    return f"failed: {str(exc).splitlines()[0]}"


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
