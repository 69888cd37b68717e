"""Request parameters the emulator checks as a real provider does: a wrong one is a 400 naming it."""

from __future__ import annotations

import re
from typing import Any

import orjson

__all__ = ["invalid_param"]

def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# name: (check, what it must be); None is always allowed (the parameter's default).
_PARAMS: dict[str, tuple[Any, str]] = {
    "max_tokens": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1"),
    "max_completion_tokens": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1"),
    "n": (lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 128, "an integer from 1 to 128"),
    "temperature": (lambda v: _number(v) and 0 <= v <= 2, "a number from 0 to 2"),
    "top_p": (lambda v: _number(v) and 0 <= v <= 1, "a number from 0 to 1"),
    "stream": (lambda v: isinstance(v, bool), "a boolean"),
    "stream_options": (lambda v: isinstance(v, dict), "an object"),
}


def invalid_param(body: dict[str, Any], *, chat: bool) -> tuple[str, str] | None:
    """(message, param) for a field of the wrong type or range, as a real provider refuses it with a 400."""
    for name, (check, must_be) in _PARAMS.items():
        value = body.get(name)
        if value is not None and not check(value):
            return f"'{name}' must be {must_be}, got {orjson.dumps(value)[:40].decode(errors='replace')}", name
    if chat and isinstance(body.get("messages"), list):
        for i, message in enumerate(body["messages"]):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                return f"messages[{i}] must be an object with a string 'role'", f"messages[{i}]"
            content = message.get("content")
            if content is not None and not isinstance(content, (str, list)):
                return f"messages[{i}].content must be a string or a list of parts", f"messages[{i}].content"
            for j, part in enumerate(content if isinstance(content, list) else ()):
                if not isinstance(part, dict) or (part.get("type") == "text" and not isinstance(part.get("text"), str)):
                    return f"messages[{i}].content[{j}] must be a part object with string text", f"messages[{i}].content[{j}]"
    return _invalid_structured(body) if chat else None


_FORMATS = ("text", "json_object", "json_schema")
_CHOICES = ("none", "auto", "required")
MAX_TOOLS = 128
"""Functions a request may offer, as OpenAI allows."""
_FUNCTION_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")


def _invalid_structured(body: dict[str, Any]) -> tuple[str, str] | None:
    """``response_format``, ``tools`` and ``tool_choice`` in the shapes OpenAI accepts."""
    fmt = body.get("response_format")
    if fmt is not None:
        if not isinstance(fmt, dict) or fmt.get("type") not in _FORMATS:
            return f"'response_format.type' must be one of {', '.join(_FORMATS)}", "response_format"
        if fmt["type"] == "json_schema":
            spec = fmt.get("json_schema")
            if not isinstance(spec, dict):
                return "'response_format.json_schema' must be an object", "response_format.json_schema"
            if not isinstance(spec.get("schema", {}), dict):
                return "'response_format.json_schema.schema' must be an object", "response_format.json_schema.schema"
    tools = body.get("tools")
    names: list[str] = []
    if tools is not None:
        if not isinstance(tools, list):
            return "'tools' must be an array", "tools"
        if len(tools) > MAX_TOOLS:
            return (f"Invalid 'tools': array too long. Expected an array with maximum length {MAX_TOOLS}, "
                    f"but got an array with length {len(tools)} instead."), "tools"
        for i, tool in enumerate(tools):
            function = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
                return f"tools[{i}] must be {{'type': 'function', 'function': {{...}}}}", f"tools[{i}]"
            if not isinstance(function.get("name"), str) or not _FUNCTION_NAME.fullmatch(function["name"]):
                return (f"Invalid 'tools[{i}].function.name': expected a string of 1 to 64 characters matching "
                        f"'^[a-zA-Z0-9_-]+$'"), f"tools[{i}].function.name"
            if not isinstance(function.get("parameters", {}), dict):
                return f"tools[{i}].function.parameters must be an object", f"tools[{i}].function.parameters"
            names.append(function["name"])
    choice = body.get("tool_choice")
    if choice is None:
        return None
    if not tools:
        return "'tool_choice' is only allowed when 'tools' are specified", "tool_choice"
    if isinstance(choice, str):
        return None if choice in _CHOICES else (f"'tool_choice' must be one of {', '.join(_CHOICES)} or a function",
                                                "tool_choice")
    function = choice.get("function") if isinstance(choice, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        return "'tool_choice' must name a function: {'type': 'function', 'function': {'name': ...}}", "tool_choice"
    if function["name"] not in names:
        return f"tool_choice names function '{function['name'][:64]}', which is not in 'tools'", "tool_choice"
    return None
