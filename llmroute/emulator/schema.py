"""A JSON value that a JSON Schema accepts: what a provider's structured-output mode returns.

Covers what structured-output clients send (pydantic's and zod's schemas, OpenAI's strict
mode): types (one or a list), ``enum``/``const``, objects (``properties``, ``required``,
``additionalProperties``), arrays (``items``, ``prefixItems``, lengths, ``uniqueItems``),
numeric bounds and ``multipleOf``, string lengths, common ``format``s, ``pattern`` (generated from
the regular expression), ``anyOf``/``oneOf``/``allOf`` and local ``$ref`` (recursive too,
bounded). A schema nothing can satisfy, or one this cannot generate for, raises
``SchemaError`` naming where, so the server answers a 400 as a real provider does.
"""

from __future__ import annotations

import math
import random
import re
import uuid
from collections.abc import Callable
from typing import Any

from .pattern import sample

__all__ = ["SchemaError", "generate"]

MAX_DEPTH = 24
"""Nesting a generated value may reach (a recursive schema stops early; past this it is refused)."""
MAX_NODES = 20_000
"""Schema nodes visited for one value: bounds the work a hostile schema can cause."""
_SHALLOW = 4
"""Past this depth, optional parts are left out so that recursive schemas end."""

_PATTERN_TRIES = 8
"""Strings generated from a pattern before the simple candidates are tried (repeats vary between tries)."""
_WORDS = ("qualified", "lead", "budget", "renewal", "growth", "risk", "follow", "call", "team", "review")
_FORMATS: dict[str, Callable[[random.Random], str]] = {
    "date-time": lambda r: f"2025-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}T{r.randint(0, 23):02d}:00:00Z",
    "date": lambda r: f"2025-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
    "time": lambda r: f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:00",
    "email": lambda r: f"{r.choice(_WORDS)}@example.com",
    "uri": lambda r: f"https://example.com/{r.choice(_WORDS)}",
    "url": lambda r: f"https://example.com/{r.choice(_WORDS)}",
    "hostname": lambda r: "example.com",
    "ipv4": lambda r: f"192.0.2.{r.randint(1, 254)}",
    "ipv6": lambda r: "2001:db8::1",
    "uuid": lambda r: str(uuid.UUID(int=r.getrandbits(128), version=4)),
}
_TYPES = ("object", "array", "string", "integer", "number", "boolean", "null")


class SchemaError(ValueError):
    """A schema that no value satisfies, or that the emulator cannot generate a value for."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(f"{message} (at {path or '/'})")


def generate(schema: Any, rng: random.Random) -> Any:
    """A value ``schema`` accepts, drawn from ``rng`` (the same seed gives the same value)."""
    return _Generator(schema, rng).value(schema, "", 0)


class _Generator:
    def __init__(self, root: Any, rng: random.Random) -> None:
        self.root = root
        self.rng = rng
        self.nodes = 0

    def value(self, schema: Any, path: str, depth: int) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise SchemaError(f"schema needs more than {MAX_NODES} nodes to satisfy", path)
        if depth > MAX_DEPTH:
            raise SchemaError(f"schema nests deeper than {MAX_DEPTH} levels", path)
        if schema is True:
            return self.string({}, path)
        if schema is False:
            raise SchemaError("the schema `false` accepts nothing", path)
        if not isinstance(schema, dict):
            raise SchemaError(f"a schema must be an object or a boolean, got {type(schema).__name__}", path)
        if "$ref" in schema:
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            return self.value({**self.resolve(schema["$ref"], path), **rest}, path, depth + 1)
        if "allOf" in schema:
            return self.value(self.merge(schema, path), path, depth + 1)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            enum = schema["enum"]
            if not isinstance(enum, list) or not enum:
                raise SchemaError("`enum` must be a non-empty array", path)
            return self.rng.choice(enum)
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return self.one_of(schema, key, path, depth)
        kind = self.kind(schema, path, depth)
        if kind == "object":
            return self.object(schema, path, depth)
        if kind == "array":
            return self.array(schema, path, depth)
        if kind == "integer":
            return self.integer(schema, path)
        if kind == "number":
            return self.number(schema, path)
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "null":
            return None
        return self.string(schema, path)

    def resolve(self, ref: Any, path: str) -> Any:
        """A local reference (``#/$defs/Name``, ``#/definitions/Name``, ``#``); remote ones are refused."""
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise SchemaError(f"only local $ref is supported, got {str(ref)[:80]!r}", path)
        node = self.root
        for part in filter(None, ref[1:].split("/")):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                raise SchemaError(f"$ref {ref[:80]!r} points at nothing", path)
            node = node[part]
        return node

    def merge(self, schema: dict[str, Any], path: str) -> dict[str, Any]:
        """``allOf`` as one schema: properties and required lists joined, other keys from the last part."""
        parts = schema["allOf"]
        if not isinstance(parts, list):
            raise SchemaError("`allOf` must be an array", path)
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for i, part in enumerate(parts):
            if isinstance(part, dict) and "$ref" in part:
                part = {**self.resolve(part["$ref"], f"{path}/allOf/{i}"), **{k: v for k, v in part.items() if k != "$ref"}}
            if not isinstance(part, dict):
                raise SchemaError("each `allOf` part must be an object", f"{path}/allOf/{i}")
            properties = {**merged.get("properties", {}), **part.get("properties", {})}
            required = [*merged.get("required", []), *part.get("required", [])]
            merged.update(part)
            merged["properties"], merged["required"] = properties, required
        return merged

    def one_of(self, schema: dict[str, Any], key: str, path: str, depth: int) -> Any:
        options = schema[key]
        if not isinstance(options, list) or not options:
            raise SchemaError(f"`{key}` must be a non-empty array", path)
        rest = {k: v for k, v in schema.items() if k != key}
        order = list(range(len(options)))
        if depth >= _SHALLOW:  # deep in a recursive schema: the plainest branch first, so that it ends
            order.sort(key=lambda i: not (isinstance(options[i], dict) and options[i].get("type") == "null"))
        problems = []
        for i in order:
            option = options[i]
            try:
                return self.value({**rest, **option} if isinstance(option, dict) else option, f"{path}/{key}/{i}", depth + 1)
            except SchemaError as exc:
                problems.append(str(exc))
        raise SchemaError(f"no branch of `{key}` can be satisfied: {'; '.join(problems)[:300]}", path)

    def kind(self, schema: dict[str, Any], path: str, depth: int) -> str:
        kind = schema.get("type")
        if kind is None:
            if "properties" in schema or "required" in schema:
                return "object"
            return "array" if "items" in schema or "prefixItems" in schema else "string"
        kinds = kind if isinstance(kind, list) else [kind]
        if not kinds or any(k not in _TYPES for k in kinds):
            raise SchemaError(f"`type` must be one of {', '.join(_TYPES)} (or a list of them), got {kind!r}", path)
        if len(kinds) > 1 and "null" in kinds and depth < _SHALLOW:
            kinds = [k for k in kinds if k != "null"]
        return kinds[0]

    def object(self, schema: dict[str, Any], path: str, depth: int) -> dict[str, Any]:
        properties = schema.get("properties", {})
        required = schema.get("required", [])
        if not isinstance(properties, dict):
            raise SchemaError("`properties` must be an object", path)
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise SchemaError("`required` must be an array of strings", path)
        extra = schema.get("additionalProperties", True)
        missing = [name for name in required if name not in properties]
        if missing and extra is False:
            raise SchemaError(f"required {missing[0]!r} is not in `properties` and additionalProperties is false", path)
        out: dict[str, Any] = {}
        for name, sub in properties.items():
            if name in required or depth < _SHALLOW:
                out[name] = self.value(sub, f"{path}/properties/{name}", depth + 1)
        for name in missing:
            out[name] = self.value(extra if isinstance(extra, dict) else True, f"{path}/{name}", depth + 1)
        return out

    def array(self, schema: dict[str, Any], path: str, depth: int) -> list[Any]:
        low, high = _bounds(schema, "minItems", "maxItems", path)
        prefix = schema.get("prefixItems", [])
        items = schema.get("items", True)
        if isinstance(items, list):  # draft 4-2019 tuple form
            prefix, items = items, schema.get("additionalItems", True)
        if not isinstance(prefix, list):
            raise SchemaError("`prefixItems` must be an array", path)
        count = max(low, len(prefix)) if depth >= _SHALLOW else self.rng.randint(low, max(low, min(high, low + 3)))
        if items is False:
            count = min(count, len(prefix))
        if count > high:
            raise SchemaError(f"an array of {count} items cannot fit maxItems {high}", path)
        out: list[Any] = []
        for i in range(count * 4):
            if len(out) == count:
                break
            item = self.value(prefix[len(out)] if len(out) < len(prefix) else items, f"{path}/items", depth + 1)
            if not schema.get("uniqueItems") or item not in out:
                out.append(item)
        if len(out) < max(low, min(count, len(prefix))):
            raise SchemaError(f"cannot find {low} distinct items", path)
        return out

    def integer(self, schema: dict[str, Any], path: str) -> int:
        low, low_open, high, high_open = _range(schema, path)
        step = _step(schema, path) or 1
        first = (math.floor(low) + 1 if low_open else math.ceil(low)) if math.isfinite(low) else None
        last = (math.ceil(high) - 1 if high_open else math.floor(high)) if math.isfinite(high) else None
        first = first if first is not None else (min(0, last - 100) if last is not None else 0)
        last = last if last is not None else first + 100
        candidates = [k * step for k in range(math.ceil(first / step), math.floor(last / step) + 1)[:1000]]
        candidates = [int(c) for c in candidates if c == int(c)]
        if not candidates:
            raise SchemaError(f"no integer from {low} to {high} is a multiple of {step}", path)
        return self.rng.choice(candidates)

    def number(self, schema: dict[str, Any], path: str) -> float:
        low, low_open, high, high_open = _range(schema, path)
        step = _step(schema, path)
        if step is not None:
            first = math.ceil(low / step) if math.isfinite(low) else 0
            tried = [k * step for k in range(first, first + 10)]
        else:
            lo = low if math.isfinite(low) else (min(0.0, high - 1.0) if math.isfinite(high) else 0.0)
            hi = high if math.isfinite(high) else lo + 1.0
            tried = [round(self.rng.uniform(lo, hi), 3), (lo + hi) / 2]
        for value in tried:
            if (value > low if low_open else value >= low) and (value < high if high_open else value <= high):
                return float(value)
        raise SchemaError(f"no number from {low} to {high} fits" + (f" as a multiple of {step}" if step else ""), path)

    def string(self, schema: dict[str, Any], path: str) -> str:
        low, high = _bounds(schema, "minLength", "maxLength", path)
        fmt = schema.get("format")
        text = _FORMATS[fmt](self.rng) if fmt in _FORMATS else " ".join(self.rng.choices(_WORDS, k=self.rng.randint(1, 4)))
        pattern = schema.get("pattern")
        if pattern is None:
            return _fit(text, low, high)
        try:
            compiled = re.compile(pattern)
        except (re.error, TypeError) as exc:
            raise SchemaError(f"`pattern` is not a regular expression: {exc}", path) from None
        generated = [sample(pattern, self.rng) for _ in range(_PATTERN_TRIES)]
        for candidate in (*generated, text, *_WORDS, "a", "A", "0", "1", "abc", "123", ""):
            if candidate is not None and low <= len(candidate) <= high and compiled.search(candidate):
                return candidate
        raise SchemaError(f"cannot generate a string matching pattern {str(pattern)[:80]!r}", path)


def _fit(text: str, low: int, high: int) -> str:
    text = text[:high]
    return text + "x" * (low - len(text))


def _bounds(schema: dict[str, Any], low_key: str, high_key: str, path: str) -> tuple[int, int]:
    low, high = schema.get(low_key, 0), schema.get(high_key, 1 << 16)
    for key, value in ((low_key, low), (high_key, high)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise SchemaError(f"`{key}` must be an integer >= 0", path)
    if low > high:
        raise SchemaError(f"`{low_key}` {low} is greater than `{high_key}` {high}", path)
    if low > 1 << 16:
        raise SchemaError(f"`{low_key}` {low} is larger than the emulator generates", path)
    return low, high


def _range(schema: dict[str, Any], path: str) -> tuple[float, bool, float, bool]:
    """(low, low is exclusive, high, high is exclusive), for both drafts' forms of exclusive bounds."""
    def number(key: str) -> float | None:
        value = schema.get(key)
        if value is None or isinstance(value, bool):  # draft 4: exclusiveMinimum is a flag on minimum
            return None
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise SchemaError(f"`{key}` must be a finite number", path)
        return value

    minimum, maximum = number("minimum"), number("maximum")
    low, low_open = (-math.inf, False) if minimum is None else (minimum, schema.get("exclusiveMinimum") is True)
    high, high_open = (math.inf, False) if maximum is None else (maximum, schema.get("exclusiveMaximum") is True)
    exclusive_low, exclusive_high = number("exclusiveMinimum"), number("exclusiveMaximum")
    if exclusive_low is not None and exclusive_low >= low:
        low, low_open = exclusive_low, True
    if exclusive_high is not None and exclusive_high <= high:
        high, high_open = exclusive_high, True
    if low > high or (low == high and (low_open or high_open)):
        raise SchemaError(f"no number is both above {low} and below {high}", path)
    return low, low_open, high, high_open


def _step(schema: dict[str, Any], path: str) -> float | None:
    step = schema.get("multipleOf")
    if step is not None and (not isinstance(step, (int, float)) or isinstance(step, bool) or not step > 0
                             or not math.isfinite(step)):
        raise SchemaError("`multipleOf` must be a number > 0", path)
    return step
