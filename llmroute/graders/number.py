"""`number`: the final number of an answer, as GSM8K grades it.

The number read is the first one after the last explicit marker ("#### 42", "\\boxed{42}",
"the answer is $1,234.50"), else the last number in the text, because chain-of-thought answers
work through intermediate numbers before the result. Thousands separators, currency signs,
unicode minus, exponents ("1e3") and simple fractions ("3/4") are understood. A number written
with separators that fit no reading ("1.234,5", "12,34", "3.14.15") is unparsed, not read as its
last group: guessing the locale would turn a format into a wrong score.
"""

from __future__ import annotations

import math
import re
import unicodedata

from .base import Grade, Parsed, grade_parsed

__all__ = ["NumberGrader", "read_number"]

# No nested quantifiers, and a number cannot start inside another one: linear on any input.
_NUMBER = re.compile(
    r"(?<![\w.])([-+\u2212]?)\s?\$?"
    r"(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|\.\d+)"
    r"(?:\s?/\s?(\d+(?:\.\d+)?)(?![\d.]))?"
)
_MARKER = re.compile(r"####|\\boxed\{|\b(?i:answer)\b")
_WINDOW_CHARS = 80  # how far after a marker its number may be
_MARKERS_TRIED = 20  # the last markers only: a text of nothing but markers stays cheap


def _value(match: re.Match[str]) -> float | None:
    sign, digits, denominator = match.groups()
    try:
        value = float(digits.replace(",", ""))
        if denominator is not None:
            value /= float(denominator)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    value = -value if sign in ("-", "\u2212") else value
    return value if math.isfinite(value) else None


def _glued(text: str, match: re.Match[str]) -> bool:
    """Whether another digit group is joined to the number by a "." or "," (as in "1.234,5")."""
    start, end = match.start(2), match.end()
    before = start >= 2 and text[start - 1] in ".," and text[start - 2].isdigit()
    after = end + 1 < len(text) and text[end] in ".," and text[end + 1].isdigit()
    return before or after


def _read(text: str, match: re.Match[str]) -> Parsed[float]:
    if _glued(text, match):
        return None, f"ambiguous number format near {text[max(0, match.start() - 8):match.end() + 8]!r}"
    value = _value(match)
    return (value, None) if value is not None else (None, "number out of range")


def read_number(text: str) -> Parsed[float]:
    """The final number of an answer, or why there is none."""
    text = unicodedata.normalize("NFKC", text)  # full-width digits and signs
    markers = [m.end() for m in _MARKER.finditer(text)]
    for start in reversed(markers[-_MARKERS_TRIED:]):
        match = _NUMBER.search(text, start, start + _WINDOW_CHARS)
        if match:
            return _read(text, match)
    last = None
    for last in _NUMBER.finditer(text):
        pass
    if last is None:
        return None, "no number found"
    return _read(text, last)


class NumberGrader:
    """1.0 when the final numbers agree within `rel_tol` (relative) or `abs_tol`, else 0.0."""

    name = "number"

    def __init__(self, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> None:
        for key, tol in (("rel_tol", rel_tol), ("abs_tol", abs_tol)):
            if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 <= tol < math.inf:
                raise ValueError(f"number grader: {key} must be a finite number >= 0, got {tol!r}")
        self.rel_tol = float(rel_tol)
        self.abs_tol = float(abs_tol)

    def grade(self, prompt: str, candidate: str, reference: str) -> Grade:
        return grade_parsed(candidate, reference, read_number, self._agree)

    def _agree(self, a: float, b: float) -> float:
        return float(math.isclose(a, b, rel_tol=self.rel_tol, abs_tol=self.abs_tol))
