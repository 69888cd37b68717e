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

import itertools
import math
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from .pattern import PatternError, parse, sample

__all__ = ["Budget", "SchemaError", "generate"]

MAX_DEPTH = 24
"""Nesting a generated value may reach (a recursive schema stops early; past this it is refused)."""
MAX_NODES = 20_000
"""Schema nodes visited for one request: bounds the work a hostile schema (or 128 of them) can cause."""
MAX_CHARS = 1 << 20
"""Characters of strings and constants in one request's generated values: bounds the answer's memory."""
_INT64 = (-(1 << 63), (1 << 63) - 1)
"""Integers are answered within 64 bits, as JSON libraries read them."""
_SHALLOW = 4
"""Past this depth, optional parts are left out so that recursive schemas end."""

_PATTERN_TRIES = 8
"""Strings generated from a pattern before it is refused (repeats and branches vary between tries)."""
_PATTERN_CHARS = 10_000
"""Longest string generated from a pattern."""
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


@dataclass(slots=True)
class Budget:
    """What generating may still spend; one per request, shared by all its schemas (every tool's)."""

    nodes: int = MAX_NODES
    chars: int = MAX_CHARS


def generate(schema: Any, rng: random.Random, budget: Budget | None = None) -> Any:
    """A value ``schema`` accepts, drawn from ``rng`` (the same seed gives the same value)."""
    return _Generator(schema, rng, budget or Budget()).value(schema, "", 0)


class _Generator:
    def __init__(self, root: Any, rng: random.Random, budget: Budget) -> None:
        self.root = root
        self.rng = rng
        self.budget = budget

    def spend(self, chars: int, path: str) -> None:
        self.budget.chars -= chars
        if self.budget.chars < 0:
            raise SchemaError(f"the values this schema needs are longer than the {MAX_CHARS} characters "
                              "the emulator answers", path)

    def constant(self, value: Any, path: str) -> Any:
        try:
            self.spend(len(orjson.dumps(value)), path)
        except orjson.JSONEncodeError as exc:  # an integer past 64 bits
            raise SchemaError(f"cannot answer the constant: {exc}", path) from None
        return value

    def value(self, schema: Any, path: str, depth: int) -> Any:
        self.budget.nodes -= 1
        if self.budget.nodes < 0:
            raise SchemaError(f"schemas need more than {MAX_NODES} nodes to satisfy", path)
        if depth > MAX_DEPTH:
            raise SchemaError(f"schema nests deeper than {MAX_DEPTH} levels", path)
        if schema is True:
            return self.string({}, path)
        if schema is False:
            raise SchemaError("the schema `false` accepts nothing", path)
        if not isinstance(schema, dict):
            raise SchemaError(f"a schema must be an object or a boolean, got {type(schema).__name__}", path)
        if "$ref" in schema:
            return self.value(self.dereferenced(schema, path), path, depth + 1)
        if "allOf" in schema:
            return self.value(self.merge(schema, path), path, depth + 1)
        if "const" in schema:
            return self.constant(schema["const"], path)
        if "enum" in schema:
            enum = schema["enum"]
            if not isinstance(enum, list) or not enum:
                raise SchemaError("`enum` must be a non-empty array", path)
            return self.constant(self.rng.choice(enum), path)
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
        """A local reference (``#/$defs/Name``, ``#/definitions/Name``, ``#/anyOf/0``, ``#``); remote ones are refused."""
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise SchemaError(f"only local $ref is supported, got {str(ref)[:80]!r}", path)
        node = self.root
        for part in filter(None, ref[1:].split("/")):
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise SchemaError(f"$ref {ref[:80]!r} points at nothing", path)
        return node

    def dereferenced(self, schema: dict[str, Any], path: str) -> Any:
        """The schema a ``$ref`` points at, with the keywords beside the ``$ref`` applied too."""
        target = self.resolve(schema["$ref"], path)
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        if not rest:
            return target
        if target is True:
            return rest
        if not isinstance(target, dict):  # `false` accepts nothing; anything else is not a schema
            return target
        return {**target, **rest}

    def merge(self, schema: dict[str, Any], path: str) -> dict[str, Any]:
        """``allOf`` as one schema: properties and required lists joined, other keys from the last part."""
        parts = schema["allOf"]
        if not isinstance(parts, list):
            raise SchemaError("`allOf` must be an array", path)
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        properties: dict[str, Any] = {}
        required: list[Any] = []
        for i, part in enumerate([merged, *parts]):
            where = f"{path}/allOf/{i - 1}" if i else path
            if isinstance(part, dict) and "$ref" in part:
                part = self.dereferenced(part, where)
            if part is True:
                continue
            if not isinstance(part, dict):
                raise SchemaError("each `allOf` part must be a schema object", where)
            more, needed = part.get("properties", {}), part.get("required", [])
            if not isinstance(more, dict) or not isinstance(needed, list):
                raise SchemaError("`properties` must be an object and `required` an array", where)
            properties.update(more)
            required.extend(needed)
            merged.update(part)
        merged["properties"], merged["required"] = properties, list(dict.fromkeys(map(str, required)))
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
        needed = set(required)
        for name, sub in properties.items():
            if name in needed or depth < _SHALLOW:
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
        first = (math.floor(low) + 1 if low_open else math.ceil(low)) if math.isfinite(low) else None
        last = (math.ceil(high) - 1 if high_open else math.floor(high)) if math.isfinite(high) else None
        first = first if first is not None else (min(0, last - 100) if last is not None else 0)
        last = last if last is not None else first + 100
        first, last = max(first, _INT64[0]), min(last, _INT64[1])
        step = _step(schema, path)
        if first <= last:
            if step is None or float(step).is_integer():  # exact integer arithmetic, whatever the size
                size = 1 if step is None else int(step)
                k0, k1 = -(-first // size), last // size
                if k0 <= k1:
                    return self.rng.randint(k0, min(k1, k0 + 999)) * size
            else:
                # A fractional step: integers n with n / step whole, as validators check it.
                if step > 1:
                    tried = (k * step for k in range(math.ceil(first / step), math.floor(last / step) + 1))
                else:
                    tried = (float(n) for n in range(first, last + 1))
                candidates = [int(v) for v in itertools.islice(tried, 1000)
                              if v.is_integer() and first <= v <= last and _is_multiple(v, step)]
                if candidates:
                    return self.rng.choice(candidates)
        raise SchemaError(f"no 64-bit integer from {low} to {high}"
                          + (f" is a multiple of {step}" if step is not None else ""), path)

    def number(self, schema: dict[str, Any], path: str) -> float:
        low, low_open, high, high_open = _range(schema, path)
        step = _step(schema, path)
        if step is not None:
            # Multiples near a bound (upward from the low one, downward from the high one), else near 0.
            start, direction = (low, 1) if math.isfinite(low) else (high, -1) if math.isfinite(high) else (0, 1)
            quotient = start / step
            if not math.isfinite(quotient):
                raise SchemaError(f"`multipleOf` {step} is too small for bounds near {start}", path)
            first = math.ceil(quotient) if direction > 0 else math.floor(quotient)
            tried = [(first + i * direction) * step for i in range(10)]
        else:
            lo = low if math.isfinite(low) else (min(0.0, high - 1.0) if math.isfinite(high) else 0.0)
            hi = high if math.isfinite(high) else lo + 1.0
            tried = [round(self.rng.uniform(lo, hi), 3), lo / 2 + hi / 2]
        for value in tried:
            if (math.isfinite(value) and (value > low if low_open else value >= low)
                    and (value < high if high_open else value <= high)
                    and (step is None or _is_multiple(value, step))):
                return float(value)
        raise SchemaError(f"no number from {low} to {high} fits" + (f" as a multiple of {step}" if step else ""), path)

    def string(self, schema: dict[str, Any], path: str) -> str:
        low, high = _bounds(schema, "minLength", "maxLength", path)
        fmt = schema.get("format")
        if fmt is not None and not isinstance(fmt, str):
            raise SchemaError("`format` must be a string", path)
        pattern = schema.get("pattern")
        if pattern is None:
            if fmt in _FORMATS:
                text = _FORMATS[fmt](self.rng)
            else:
                text = " ".join(self.rng.choices(_WORDS, k=self.rng.randint(1, 4)))
            self.spend(max(low, min(len(text), high)), path)
            return _fit(text, low, high)
        if not isinstance(pattern, str):
            raise SchemaError("`pattern` must be a string", path)
        try:
            tree = parse(pattern)
        except PatternError as exc:
            raise SchemaError(f"`pattern` {pattern[:80]!r}: {exc}", path) from None
        why = f"no draw was {low} characters or longer"
        for _ in range(_PATTERN_TRIES):
            try:
                text = sample(tree, self.rng, max_chars=min(high, self.budget.chars, _PATTERN_CHARS))
            except PatternError as exc:
                why = str(exc)
                if not exc.retry:
                    break
                continue
            if len(text) >= low:
                self.spend(len(text), path)
                return text
        raise SchemaError(f"cannot generate a string matching pattern {pattern[:80]!r}: {why}", path)


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


def _is_multiple(value: float, step: float) -> bool:
    """``value / step`` is a whole number, as JSON Schema validators check ``multipleOf``."""
    quotient = value / step
    return math.isfinite(quotient) and quotient.is_integer()


def _range(schema: dict[str, Any], path: str) -> tuple[float, bool, float, bool]:
    """(low, low is exclusive, high, high is exclusive), for both drafts' forms of exclusive bounds."""
    def number(key: str) -> float | None:
        value = schema.get(key)
        if value is None or isinstance(value, bool):  # draft 4: exclusiveMinimum is a flag on minimum
            return None
        try:
            finite = isinstance(value, (int, float)) and math.isfinite(value)
        except OverflowError:  # an integer past what a JSON number holds
            finite = False
        if not finite:
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
    if step is None:
        return None
    try:
        if isinstance(step, (int, float)) and not isinstance(step, bool) and step > 0 and math.isfinite(step):
            return step
    except OverflowError:  # an integer past what a JSON number holds
        pass
    raise SchemaError("`multipleOf` must be a finite number > 0", path)
