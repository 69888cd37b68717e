"""A string that a regular expression matches, for a JSON Schema ``pattern`` (an ID, a postcode, a phone).

Built from the pattern's parse tree (the standard library's own regex parser): literals, classes,
ranges, categories, alternation, groups and repeats. Anchors are satisfied by construction;
lookarounds and backreferences are not generated, and the caller checks the result with ``re``
and refuses a pattern when it does not match.
"""

from __future__ import annotations

import random
from typing import Any

try:  # the parser the re module itself uses (Python 3.11+)
    from re import _constants as C
    from re import _parser as parser
except ImportError:  # pragma: no cover - a Python without it: only the simple candidates are tried
    parser = None

__all__ = ["sample"]

_MAX_REPEAT = 3
"""Extra repeats generated above a repeat's minimum (``+`` and ``*`` are unbounded)."""
_MAX_CHARS = 10_000
_CATEGORIES = {"CATEGORY_DIGIT": "0123456789", "CATEGORY_WORD": "abcxyzABC_019", "CATEGORY_SPACE": " ",
               "CATEGORY_NOT_DIGIT": "abcXYZ", "CATEGORY_NOT_WORD": "-. ", "CATEGORY_NOT_SPACE": "abc123"}


class _Unsupported(Exception):
    pass


def sample(pattern: str, rng: random.Random) -> str | None:
    """A string ``pattern`` may match, or None when it uses what this does not generate."""
    if parser is None:
        return None
    try:
        out: list[str] = []
        _emit(parser.parse(pattern), rng, out)
    except Exception:  # a parse error, an opcode not generated (_Unsupported), a pattern nested too deep
        return None
    text = "".join(out)
    return text if len(text) <= _MAX_CHARS else None


def _emit(items: Any, rng: random.Random, out: list[str]) -> None:
    for op, arg in items:
        name = str(op)
        if name == "LITERAL":
            out.append(chr(arg))
        elif name == "NOT_LITERAL":
            out.append("a" if arg != ord("a") else "b")
        elif name == "ANY":
            out.append("a")
        elif name == "IN":
            out.append(_one_of(arg, rng))
        elif name == "AT":
            continue
        elif name == "BRANCH":
            _emit(rng.choice(arg[1]), rng, out)
        elif name == "SUBPATTERN":
            _emit(arg[-1], rng, out)
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, high, body = arg
            high = low + _MAX_REPEAT if high is C.MAXREPEAT else high
            for _ in range(rng.randint(low, max(low, min(high, low + _MAX_REPEAT)))):
                _emit(body, rng, out)
        elif name == "ATOMIC_GROUP":
            _emit(arg, rng, out)
        else:  # lookarounds, backreferences, conditionals
            raise _Unsupported(name)


def _one_of(items: Any, rng: random.Random) -> str:
    """One character a class ``[...]`` accepts; a negated class gets a character none of its items name."""
    if items and str(items[0][0]) == "NEGATE":
        banned = set()
        for op, arg in items[1:]:
            if str(op) == "LITERAL":
                banned.add(chr(arg))
            elif str(op) == "RANGE":
                banned.update(chr(c) for c in range(arg[0], min(arg[1], arg[0] + 256) + 1))
            elif str(op) == "CATEGORY":
                banned.update(_CATEGORIES.get(str(arg), ""))
        for candidate in "aZ0_-. x~":
            if candidate not in banned:
                return candidate
        raise _Unsupported("negated class")
    op, arg = rng.choice(items)
    if str(op) == "LITERAL":
        return chr(arg)
    if str(op) == "RANGE":
        return chr(rng.randint(arg[0], arg[1]))
    if str(op) == "CATEGORY" and str(arg) in _CATEGORIES:
        return rng.choice(_CATEGORIES[str(arg)])
    raise _Unsupported(str(op))
