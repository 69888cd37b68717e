"""What the gateway relies on in a request body, checked before any provider sees it.

A malformed request must get a 400 naming the field, not a provider's 5xx: a provider's 5xx counts
toward its breaker, so a few malformed requests could otherwise open every breaker and take the gateway
down for everyone. The checks are the fields llmroute itself reads or that providers reject with a 5xx
(types of ``messages`` and their parts, sizes, sampling parameters); everything else passes through
for the provider to judge. Plain ``isinstance`` checks: a few microseconds on a typical body, where a
pydantic model per request would cost far more.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import BadRequest


@dataclass(frozen=True, slots=True)
class Limits:
    """The ``gateway.max_*`` config keys the checks read."""

    max_json_depth: int
    max_model_chars: int
    max_user_chars: int


def invalid(param: str, message: str) -> BadRequest:
    return BadRequest(400, f"'{param}' {message}", param=param, code="invalid_value")


def check_depth(raw: bytes, body: Any, max_depth: int) -> None:
    """Refuse JSON nested deeper than ``max_depth`` (it would fail to encode on its way upstream).

    Counting brackets in the raw bytes (in C) proves most bodies shallow at once; only a body with at
    least ``max_depth`` of them is walked, and the walk stops at the first container too deep.
    """
    if raw.count(b"[") + raw.count(b"{") >= max_depth and not _within(body, max_depth - 1):
        raise BadRequest(400, f"request body is nested more than {max_depth} levels deep", code="too_deeply_nested")


def _within(container: dict[str, Any] | list[Any], levels: int) -> bool:
    """Whether ``container`` holds containers no more than ``levels`` deep."""
    for value in container.values() if type(container) is dict else container:
        kind = type(value)
        if (kind is dict or kind is list) and (levels == 0 or not _within(value, levels - 1)):
            return False
    return True


def chat_body(body: Mapping[str, Any], limits: Limits) -> None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest(400, "'messages' is required: a non-empty list of message objects", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest(400, f"messages[{i}] must be an object with a 'role' string", param=f"messages[{i}]")
        content = message.get("content")
        if content is None or isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise invalid(f"messages[{i}].content", "must be a string, null or a list of content parts")
        for j, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise invalid(f"messages[{i}].content[{j}]", "must be an object with a 'type' string")
            if ("text" in part or part["type"] == "text") and not isinstance(part.get("text"), str):
                raise invalid(f"messages[{i}].content[{j}].text", "must be a string")
    _common(body, limits)
    for name in ("max_completion_tokens", "max_tokens"):
        _positive_int(body, name)


def completions_body(body: Mapping[str, Any], limits: Limits) -> None:
    if not isinstance(body.get("prompt"), str):
        raise BadRequest(400, "'prompt' is required and must be a string", param="prompt")
    _common(body, limits)
    _positive_int(body, "max_tokens")


def _common(body: Mapping[str, Any], limits: Limits) -> None:
    """Fields both endpoints share. Absent and null mean the default, as in OpenAI's API."""
    _string(body, "model", limits.max_model_chars)
    _string(body, "user", limits.max_user_chars)
    _positive_int(body, "n")
    _number(body, "temperature", 0.0, 2.0)
    _number(body, "top_p", 0.0, 1.0)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise invalid("stream", "must be true or false")
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise invalid("stream_options", "must be an object")
        include_usage = options.get("include_usage")
        if include_usage is not None and not isinstance(include_usage, bool):
            raise invalid("stream_options.include_usage", "must be true or false")


def _string(body: Mapping[str, Any], name: str, max_chars: int) -> None:
    value = body.get(name)
    if value is None:
        return
    if not isinstance(value, str):
        raise invalid(name, "must be a string")
    if len(value) > max_chars:
        raise invalid(name, f"is {len(value)} characters; the limit is {max_chars}")


MAX_INT = 2**63 - 1
"""Largest integer a count may be: what every provider's JSON parser can hold."""


def _positive_int(body: Mapping[str, Any], name: str) -> None:
    value = body.get(name)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_INT):
        raise invalid(name, f"must be an integer from 1 to {MAX_INT}")


def _number(body: Mapping[str, Any], name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        raise invalid(name, f"must be a number from {low:g} to {high:g}")
