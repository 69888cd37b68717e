"""The grader interface: a prompt, a candidate and a reference in; a `Grade` out.

Graders are pure functions of their text inputs so that offline collection, shadow evaluation
and tests all score the same way. A grader never raises on an answer: a model that rambles,
returns nothing or returns garbage is a fact to record, not an error to crash on.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from collections.abc import Callable
from typing import Protocol, TypeVar, runtime_checkable

__all__ = ["Grade", "Grader", "Parsed", "as_text", "grade_parsed", "normalize_text", "unparsed"]

T = TypeVar("T")
Parsed = tuple[T | None, str | None]
"""A parser's result: the value read, or `None` and the reason it could not be read."""

_SPACE_RUN = re.compile(r"\s+")
# Sentence punctuation a model adds or drops without changing its answer ("Paris." vs "Paris").
_TRAILING_PUNCT = ".,;:!?\u3002\uff01\uff1f\u2026"


@dataclass(frozen=True, slots=True)
class Grade:
    """One score in [0, 1], or `None` with the reason when an answer could not be read.

    An unparsed answer is kept apart from a wrong one (score 0.0) so that reports can count
    ungraded pairs instead of silently folding them into quality.
    """

    score: float | None
    parsed: bool
    reason: str | None = None


def unparsed(reason: str) -> Grade:
    """The result for an answer or reference the grader could not read."""
    return Grade(score=None, parsed=False, reason=reason)


@runtime_checkable
class Grader(Protocol):
    """Scores `candidate` against `reference` for `prompt`; never raises on any input."""

    name: str

    def grade(self, prompt: str, candidate: str, reference: str) -> Grade: ...


def as_text(value: object) -> str | None:
    """Text from what a caller passed: `str` as is, `bytes` as UTF-8, anything else `None`.

    Graders run on stored rows and provider payloads, where a `None` or a number can turn up
    in place of an answer; that must come back as "not parsed", not as a TypeError.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    return None


def normalize_text(text: str) -> str:
    """Text as compared by `exact`: NFKC, case-folded, inner whitespace runs as one space,
    surrounding whitespace and trailing sentence punctuation removed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _SPACE_RUN.sub(" ", text).strip()
    return text.rstrip(_TRAILING_PUNCT).rstrip()


def grade_parsed(
    candidate: object,
    reference: object,
    parse: Callable[[str], Parsed[T]],
    agree: Callable[[T, T], float | Grade],
) -> Grade:
    """Parse both answers the same way, then score their agreement (or `agree`'s own Grade).

    The reference goes through the same parser as the candidate because it is often another
    provider's answer, not a clean gold label; either one failing to parse is reported by role.
    """
    values: list[T] = []
    for role, raw in (("candidate", candidate), ("reference", reference)):
        text = as_text(raw)
        if text is None:
            return unparsed(f"{role} is not text")
        value, reason = parse(text)
        if value is None:
            return unparsed(f"{role}: {reason or 'could not be parsed'}")
        values.append(value)
    score = agree(values[0], values[1])
    return score if isinstance(score, Grade) else Grade(score=float(score), parsed=True)
