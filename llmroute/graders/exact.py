"""`exact`: the answer is right only if it says the same thing, up to formatting noise."""

from __future__ import annotations

from .base import Grade, Parsed, grade_parsed, normalize_text

__all__ = ["ExactGrader"]


def _read(text: str) -> Parsed[str]:
    # Two empty answers agreeing says nothing about quality, so empty is unparsed, not equal.
    norm = normalize_text(text)
    return (norm, None) if norm else (None, "empty answer")


class ExactGrader:
    """1.0 when candidate and reference are equal after `normalize_text`, else 0.0."""

    name = "exact"

    def grade(self, prompt: str, candidate: str, reference: str) -> Grade:
        return grade_parsed(candidate, reference, _read, lambda a, b: float(a == b))
