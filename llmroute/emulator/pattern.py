"""A string that a regular expression matches, for a JSON Schema ``pattern`` (an ID, a postcode, a phone).

Built from the pattern's parse tree (the standard library's own regex parser): literals, classes,
ranges, categories, alternation, groups, repeats and anchors (``^ $ \\A \\Z \\b \\B``). The string is
right by construction and its anchors are checked where they were emitted, so it is never run
through a backtracking matcher: a pattern like ``(a+)+$`` cannot stall the emulator. What this
does not generate (lookarounds, backreferences, conditionals, atomic groups and possessive
repeats, which JSON Schema's ECMA-262 dialect lacks) raises ``PatternError``, as providers with
constrained decoding refuse them. Work is bounded by characters and steps, whatever the repeats.
"""

from __future__ import annotations

import random
import re
from typing import Any

from re import _constants as C
from re import _parser as parser

__all__ = ["PatternError", "parse", "sample"]

_MAX_REPEAT = 3
"""Extra repeats generated above a repeat's minimum (``+`` and ``*`` are unbounded)."""
_STEPS_PER_CHAR = 4
"""Parse-tree steps allowed per character of the budget (repeats of empty groups take steps, not chars)."""
_CATEGORIES = {"CATEGORY_DIGIT": "0123456789", "CATEGORY_WORD": "abcxyzABC_019", "CATEGORY_SPACE": " ",
               "CATEGORY_NOT_DIGIT": "abcXYZ", "CATEGORY_NOT_WORD": "-. ", "CATEGORY_NOT_SPACE": "abc123"}
_OUTSIDE = "aZ0_-. x~b9"
"""Characters tried for a negated class or literal: one of them is outside it."""
_REPEATS = ("MAX_REPEAT", "MIN_REPEAT")


class PatternError(ValueError):
    """A pattern this cannot generate a string for (the message says why).

    ``retry`` says whether another draw may succeed (this one put an anchor where it cannot hold, or
    repeated past the length allowed).
    """

    def __init__(self, message: str, *, retry: bool = False) -> None:
        super().__init__(message)
        self.retry = retry


def parse(pattern: str) -> Any:
    """The parse tree of ``pattern``, for ``sample``; ``PatternError`` when it is not a regular expression."""
    try:
        return parser.parse(pattern)
    except RecursionError:
        raise PatternError("pattern nests too deeply") from None
    except (re.error, OverflowError, ValueError, TypeError) as exc:
        raise PatternError(f"not a regular expression: {exc}") from None


def sample(tree: Any, rng: random.Random, *, max_chars: int) -> str:
    """A string the parsed pattern ``tree`` matches, of at most ``max_chars`` characters.

    ``PatternError`` when there is none; with ``retry`` set, another draw may find one.
    """
    return _Emitter(rng, max_chars, tree.state.flags).run(tree)


class _Emitter:
    def __init__(self, rng: random.Random, max_chars: int, flags: int) -> None:
        self.rng = rng
        self.max_chars = max_chars
        self.steps = _STEPS_PER_CHAR * max_chars + 1000
        self.flags = flags
        self.out: list[str] = []
        self.size = 0
        self.anchors: list[tuple[int, Any, int]] = []
        """(position, AT code, flags there): checked once the whole string is known."""

    def run(self, tree: Any) -> str:
        try:
            self.emit(tree, self.flags)
        except RecursionError:
            raise PatternError("pattern nests too deeply") from None
        text = "".join(self.out)
        for at, code, flags in self.anchors:
            if not _holds(code, at, text, flags):
                raise PatternError(f"{str(code).lower().replace('_', ' ')} cannot hold where it stands", retry=True)
        return text

    def put(self, char: str) -> None:
        self.size += 1
        if self.size > self.max_chars:
            raise PatternError(f"the strings drawn are longer than {self.max_chars} characters", retry=True)
        self.out.append(char)

    def emit(self, items: Any, flags: int) -> None:
        for op, arg in items:
            self.steps -= 1
            if self.steps < 0:
                raise PatternError("pattern repeats too much to generate")
            name = str(op)
            if name == "LITERAL":
                self.put(chr(arg))
            elif name == "NOT_LITERAL":
                self.put(_outside([(C.LITERAL, arg)], flags))
            elif name == "ANY":
                self.put("a")
            elif name == "IN":
                self.put(self.one_of(arg, flags))
            elif name == "AT":
                self.anchors.append((self.size, arg, flags))
            elif name == "BRANCH":
                self.emit(self.rng.choice(arg[1]), flags)
            elif name == "SUBPATTERN":
                _, add, remove, body = arg
                self.emit(body, (flags | add) & ~remove)
            elif name in _REPEATS:
                low, high, body = arg
                high = low + _MAX_REPEAT if high is C.MAXREPEAT else high
                for _ in range(self.rng.randint(low, max(low, min(high, low + _MAX_REPEAT)))):
                    self.steps -= 1
                    if self.steps < 0:
                        raise PatternError("pattern repeats too much to generate")
                    self.emit(body, flags)
            else:  # lookarounds, backreferences, conditionals, atomic groups, possessive repeats
                raise PatternError(f"{name.lower().replace('_', ' ')} is not supported in `pattern`")

    def one_of(self, items: Any, flags: int) -> str:
        """One character a class ``[...]`` accepts; a negated class gets one that none of its items name."""
        if items and str(items[0][0]) == "NEGATE":
            return _outside(items[1:], flags)
        op, arg = self.rng.choice(items)
        if str(op) == "LITERAL":
            return chr(arg)
        if str(op) == "RANGE":
            low, high = arg
            char = self.rng.randint(low, high)
            if 0xD800 <= char <= 0xDFFF:  # a lone surrogate is not text: no JSON answer can hold it
                char = low if low < 0xD800 else high if high > 0xDFFF else None
                if char is None:
                    raise PatternError("a class of surrogates only cannot be written as text")
            return chr(char)
        if str(op) == "CATEGORY" and str(arg) in _CATEGORIES:
            return self.rng.choice(_CATEGORIES[str(arg)])
        raise PatternError(f"{str(op).lower()} in a class is not supported in `pattern`")


def _outside(items: Any, flags: int) -> str:
    for candidate in _OUTSIDE:
        variants = {candidate, candidate.lower(), candidate.upper()} if flags & C.SRE_FLAG_IGNORECASE else {candidate}
        if not any(_names(op, arg, ch) for op, arg in items for ch in variants):
            return candidate
    raise PatternError("a negated class that excludes every character tried is not supported in `pattern`")


def _names(op: Any, arg: Any, char: str) -> bool:
    """Whether a class item names ``char`` (an unknown item is taken to name it: refused, not guessed)."""
    name = str(op)
    if name == "LITERAL":
        return ord(char) == arg
    if name == "RANGE":
        return arg[0] <= ord(char) <= arg[1]
    if name == "CATEGORY" and str(arg) in _CATEGORIES:
        positive = str(arg).replace("_NOT_", "_")
        inside = char in _CATEGORIES[positive] or {
            "CATEGORY_DIGIT": char.isdigit(), "CATEGORY_WORD": char.isalnum() or char == "_",
            "CATEGORY_SPACE": char.isspace()}[positive]
        return inside != ("_NOT_" in str(arg))
    return True


def _word(text: str, at: int, flags: int) -> bool:
    if not 0 <= at < len(text):
        return False
    char = text[at]
    return (char.isalnum() or char == "_") and (char.isascii() or not flags & C.SRE_FLAG_ASCII)


def _holds(code: Any, at: int, text: str, flags: int) -> bool:
    """Whether the anchor ``code`` holds at position ``at`` of ``text`` (as ``re`` reads it under ``flags``)."""
    multiline = bool(flags & C.SRE_FLAG_MULTILINE)
    name = str(code)
    if name == "AT_BEGINNING_STRING" or (name == "AT_BEGINNING" and not multiline):
        return at == 0
    if name == "AT_BEGINNING":
        return at == 0 or text[at - 1] == "\n"
    if name == "AT_END_STRING":
        return at == len(text)
    if name == "AT_END":
        return at == len(text) or (text[at] == "\n" and (multiline or at == len(text) - 1))
    if name in ("AT_BOUNDARY", "AT_NON_BOUNDARY"):
        boundary = _word(text, at - 1, flags) != _word(text, at, flags)
        return boundary == (name == "AT_BOUNDARY")
    return False
