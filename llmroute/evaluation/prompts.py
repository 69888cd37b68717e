"""Prompts to evaluate, as ``quality collect`` reads them: one JSON object a line.

    {"id": "lead-17", "prompt": "Qualify this lead: ...", "reference": "hot", "tags": ["task=lead"]}
    {"messages": [{"role": "system", "content": "..."}, {"role": "user", "content": "..."}],
     "params": {"tools": [...], "max_tokens": 200}}

``prompt`` or ``messages``; optional ``reference`` (the gold answer), ``tags``, ``id``, ``benchmark``
and ``params`` (request fields both tiers get, such as ``tools`` or ``response_format``). A bad line is
an error naming the file and the line, raised before anything is sent or paid.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..quality.data import DataError, json_object_line, jsonl_lines
from ..quality.features import prompt_text

__all__ = ["DEFAULT_MAX_TOKENS", "PromptLine", "load_prompts", "parse_prompt_line"]

DEFAULT_MAX_TOKENS = 512
"""``max_tokens`` of a prompt that sets none: every call needs one, or its worst case has no bound."""
_FORBIDDEN_PARAMS = ("messages", "prompt", "model", "stream", "stream_options", "n")


@dataclass(frozen=True, slots=True)
class PromptLine:
    """One prompt to evaluate, as read from the input file."""

    key: str
    """What resume matches on: ``id:<id>``, or ``sha256:<hash>`` of the request and gold answer."""
    id: str
    messages: list[dict[str, Any]]
    prompt: str
    """The text a grader and the quality model read (``prompt``, or the last user turn of ``messages``)."""
    gold: str | None
    tags: list[str]
    benchmark: str
    params: dict[str, Any]
    given_messages: bool

    def body(self, max_tokens: int) -> dict[str, Any]:
        """The request both tiers get: temperature 0 unless the line says otherwise, and a ``max_tokens``."""
        body: dict[str, Any] = {"messages": self.messages, "temperature": 0, **self.params}
        if "max_tokens" not in body and "max_completion_tokens" not in body:
            body["max_tokens"] = max_tokens
        return body


def _tags(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        return list(value)
    if isinstance(value, dict) and all(isinstance(v, (str, int, float, bool)) for v in value.values()):
        return [f"{k}={v}" for k, v in value.items()]
    raise DataError(f"{where}: 'tags' must be a list of strings or an object of values, got {_short(value)}")


def _messages(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: 'messages' must be a non-empty list")
    for i, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise DataError(f"{where}: messages[{i}] must be an object with a string 'role'")
        content = message.get("content")
        if not isinstance(content, (str, list, type(None))):
            raise DataError(f"{where}: messages[{i}].content must be a string or a list of parts")
        for j, part in enumerate(content if isinstance(content, list) else ()):
            # What every provider refuses with a 400: caught here, before anything is sent.
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise DataError(f"{where}: messages[{i}].content[{j}] must be an object with a string 'type'")
            if part["type"] == "text" and not isinstance(part.get("text"), str):
                raise DataError(f"{where}: messages[{i}].content[{j}] is a text part without a string 'text'")
    return value


def parse_prompt_line(line: str, where: str) -> PromptLine:
    """One input line; raises ``DataError`` naming ``where`` and what is wrong."""
    row = json_object_line(line, where)
    if ("prompt" in row) == ("messages" in row):
        raise DataError(f"{where}: give 'prompt' or 'messages' (exactly one)")
    if "prompt" in row:
        if not isinstance(row["prompt"], str) or not row["prompt"].strip():
            raise DataError(f"{where}: 'prompt' must be a non-empty string")
        messages = [{"role": "user", "content": row["prompt"]}]
    else:
        messages = _messages(row["messages"], where)
        if not prompt_text(messages).strip():
            # The grader, the judge and the quality model read this text, and `router train` refuses a label without it.
            raise DataError(f"{where}: 'messages' has no text to grade: it needs a user or system turn with text")
    gold = row.get("reference")
    if isinstance(gold, (int, float)) and not isinstance(gold, bool) and math.isfinite(gold):
        gold = str(gold)
    if gold is not None and not isinstance(gold, str):
        raise DataError(f"{where}: 'reference' (the gold answer) must be a string or a number, got {_short(gold)}")
    params = row.get("params") or {}
    if not isinstance(params, dict):
        raise DataError(f"{where}: 'params' must be an object of request fields")
    for name in _FORBIDDEN_PARAMS:
        if name in params:
            raise DataError(f"{where}: params.{name} is set by quality collect; remove it")
    for name in ("max_tokens", "max_completion_tokens"):
        value = params.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise DataError(f"{where}: params.{name} must be an integer >= 1")
    given_id = row.get("id")
    if given_id is not None and (isinstance(given_id, bool) or not isinstance(given_id, (str, int)) or given_id == ""):
        raise DataError(f"{where}: 'id' must be a non-empty string or an integer")
    tags = _tags(row.get("tags"), where)
    benchmark = row.get("benchmark")
    if benchmark is not None and not isinstance(benchmark, str):
        raise DataError(f"{where}: 'benchmark' must be a string")
    if given_id is not None:
        key, line_id = f"id:{given_id}", str(given_id)
    else:
        digest = hashlib.sha256(orjson.dumps({"m": messages, "p": params, "r": gold}, option=orjson.OPT_SORT_KEYS))
        line_id = digest.hexdigest()[:16]
        key = f"sha256:{line_id}"
    return PromptLine(key=key, id=line_id, messages=messages, prompt=prompt_text(messages) or "", gold=gold,
                      tags=tags, benchmark=benchmark or (tags[0] if tags else "collected"), params=params,
                      given_messages="messages" in row)


def load_prompts(path: str | Path) -> list[PromptLine]:
    """Every prompt of a JSONL file; ``DataError`` at the first bad line (before anything is sent)."""
    file = Path(path)
    lines: list[PromptLine] = []
    seen: dict[str, int] = {}
    for number, raw in jsonl_lines(file):
        where = f"{file}, line {number}"
        parsed = parse_prompt_line(raw, where)
        if parsed.key in seen:
            what = f"id {parsed.id!r}" if parsed.key.startswith("id:") else "the same request"
            raise DataError(f"{file}, line {number}: {what} as line {seen[parsed.key]}; each prompt needs its own id")
        seen[parsed.key] = number
        lines.append(parsed)
    if not lines:
        raise DataError(f"{file}: no prompts (the file is empty)")
    return lines


def _short(value: Any) -> str:
    return orjson.dumps(value, default=str)[:40].decode(errors="replace")
