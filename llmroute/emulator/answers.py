"""What an emulated provider answers: text, JSON for ``response_format``, or ``tool_calls``.

Structured answers are deterministic per prompt and seed (like temperature 0); labelled mode
(``labels.py``) answers known prompts, right or wrong, and judge prompts about them (``judging.py``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ..tokens import count_tokens
from .judging import judge_reply
from .labels import Labels
from .schema import Budget, SchemaError, generate

__all__ = ["Answer", "Refused", "compose", "last_user_text"]

_PIECE_CHARS = 12
"""A JSON answer or tool arguments stream in pieces of about this many characters."""


class Refused(ValueError):
    """A request a real provider would refuse with a 400 (``param`` names the field)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class Answer:
    pieces: tuple[str, ...]
    """The content as streamed (for tool calls: the arguments' pieces)."""
    tool_call: dict[str, Any] | None = None
    """``{"id", "type": "function", "function": {"name", "arguments"}}``, for a tool call."""

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def completion_tokens(self) -> int:
        return count_tokens(self.text)

    @property
    def finish_reason(self) -> str | None:
        """``tool_calls`` for a tool call; else None, and the length decides between stop and length."""
        return "tool_calls" if self.tool_call is not None else None

    def message(self) -> dict[str, Any]:
        if self.tool_call is None:
            return {"role": "assistant", "content": self.text}
        return {"role": "assistant", "content": None, "tool_calls": [self.tool_call]}

    def deltas(self) -> list[dict[str, Any]]:
        """Chat stream deltas as OpenAI sends them: a tool call's id and name first, then its arguments."""
        if self.tool_call is None:
            return [{"role": "assistant", "content": ""}, *({"content": p} for p in self.pieces)]
        head = {**self.tool_call, "index": 0, "function": {"name": self.tool_call["function"]["name"], "arguments": ""}}
        return [{"role": "assistant", "content": None, "tool_calls": [head]},
                *({"tool_calls": [{"index": 0, "function": {"arguments": p}}]} for p in self.pieces)]


def _sliced(text: str) -> tuple[str, ...]:
    return tuple(text[i:i + _PIECE_CHARS] for i in range(0, len(text), _PIECE_CHARS)) or ("",)


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def last_user_text(messages: Sequence[Any]) -> str:
    """The last user message's text (its text parts joined): what labels and seeds key on."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return "\n".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
            return content if isinstance(content, str) else ""
    return ""


def compose(body: dict[str, Any], prompt: str, *, profile: str, seed: int, labels: Labels | None,
            judge_noise: float, babble: Callable[[], list[str]]) -> Answer:
    """The answer to a checked request; ``Refused`` for a schema no answer can satisfy."""
    tool = _tool_call(body, seed, prompt) if body.get("tools") else None
    if tool is not None:
        return tool
    fmt = body.get("response_format")
    wants_json = isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")
    if labels is not None:
        verdict = judge_reply(labels, prompt, noise=judge_noise)
        if verdict is not None:
            return Answer(_sliced(verdict))
        gold = labels.answer_for(profile, prompt)
        if isinstance(gold, dict):
            return Answer(_sliced(_json(gold)))
        if isinstance(gold, str) and not wants_json:
            return Answer(_sliced(gold))
    if wants_json:
        spec = fmt.get("json_schema") if fmt["type"] == "json_schema" else None
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if schema is None:  # json_object: any object
            return Answer(_sliced(_json({"answer": "".join(babble()).strip()})))
        try:
            return Answer(_sliced(_json(generate(schema, _rng(seed, prompt)))))
        except SchemaError as exc:
            name = str(spec.get("name", "response"))[:64]
            raise Refused(f"Invalid schema for response_format '{name}': {exc}", "response_format") from None
    return Answer(tuple(babble()))


def _rng(seed: int, prompt: str) -> random.Random:
    """The same draws for the same prompt and seed, whatever came before: structured answers are deterministic."""
    return random.Random(f"{seed}\x00{prompt}")


def _tool_call(body: dict[str, Any], seed: int, prompt: str) -> Answer | None:
    """A call to one of ``tools`` when ``tool_choice`` asks for one (``auto``: unless a tool just answered)."""
    tools, rng, budget = body["tools"], _rng(seed, prompt), Budget()
    schemas = []
    for i, tool in enumerate(tools):  # every schema is checked, as a provider does, not only the one called
        function = tool["function"]
        schema = function.get("parameters") or {"type": "object", "properties": {}}
        try:  # one budget for all of them: many tools cannot add up to unbounded work
            schemas.append(_json(generate(schema, random.Random(rng.random()), budget)))
        except SchemaError as exc:
            raise Refused(f"Invalid schema for function '{function['name'][:64]}': {exc}",
                          f"tools[{i}].function.parameters") from None
    choice = body.get("tool_choice") or "auto"
    messages = body.get("messages") or [{}]
    if choice == "none" or (choice == "auto" and isinstance(messages[-1], dict) and messages[-1].get("role") == "tool"):
        return None
    names = [tool["function"]["name"] for tool in tools]
    index = names.index(choice["function"]["name"]) if isinstance(choice, dict) else rng.randrange(len(tools))
    call = {"id": f"call_{rng.getrandbits(96):024x}", "type": "function",
            "function": {"name": names[index], "arguments": schemas[index]}}
    return Answer(_sliced(schemas[index]), call)
