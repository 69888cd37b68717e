"""`choice`: the multiple-choice letter (A to J, as in MMLU and MMLU-Pro).

Answers are read in order of how explicit they are: the whole answer is a letter ("B", "(b)",
"**B**"); a stated answer ("The answer is C.", "Answer: D) because", "\\boxed{E}"); an answer that
opens with a labelled option ("D) because ..."); a single bold or bracketed letter. When one
level names two different letters the answer is ambiguous and unparsed: guessing would turn a
hedge into a score. Every pattern is bounded, so a 1 MB answer is read in linear time.
"""

from __future__ import annotations

import re
import unicodedata

from .base import Grade, Parsed, grade_parsed

__all__ = ["ChoiceGrader"]

_LETTER = r"(?:\(([A-Ja-j])\)|\[([A-Ja-j])\]|\*\*([A-Ja-j])\*\*|([A-J]))(?![A-Za-z0-9])"
# "B", "(b)", "[c]", "**B**", "B.", "b)": an answer that is nothing but the letter.
_WHOLE = re.compile(r"[\s*(\[]{0,4}([A-Ja-j])[\s*)\].:]{0,4}")
_STATED = re.compile(
    r"(?:\b(?i:answer|option|choice)\b(?:\s{1,4}(?i:is|would be|should be|will be))?"
    r"[\s:=\-]{0,4}(?i:option\s{1,4})?|\\boxed\{)" + _LETTER
)
_OPENING = re.compile(r"[\s*]{0,4}[(\[]?([A-J])(?:[).:\]]|\*\*)")
_MARKED = re.compile(r"\*\*([A-J])\*\*|\(([A-J])\)|\[([A-J])\]")
# "The answer is A or C": a stated letter followed by another one is a hedge ("B, I think" is not).
_HEDGE = re.compile(
    r"\s{0,4}(?:(?i:or|and)|/|,)\s{0,4}[(\[]?(?!I\s{1,4}[a-z])([A-J])(?![A-Za-z0-9'\u2019])"
)


def _first_group(match: re.Match[str]) -> str:
    return next(g for g in match.groups() if g).upper()


def _one(letters: set[str], what: str) -> Parsed[str]:
    if len(letters) == 1:
        return letters.pop(), None
    return None, f"ambiguous: {what} " + ", ".join(sorted(letters))


def read_choice(text: str) -> Parsed[str]:
    """The letter an answer chooses, or why there is none."""
    text = unicodedata.normalize("NFKC", text)  # full-width letters and brackets
    whole = _WHOLE.fullmatch(text)
    if whole:
        return whole.group(1).upper(), None
    stated: set[str] = set()
    for match in _STATED.finditer(text):
        stated.add(_first_group(match))
        hedge = _HEDGE.match(text, match.end())
        if hedge:
            stated.add(hedge.group(1))
    if stated:
        return _one(stated, "states")
    opening = _OPENING.match(text)
    if opening:
        return opening.group(1), None
    marked = {_first_group(m) for m in _MARKED.finditer(text)}
    if marked:
        return _one(marked, "marks")
    return None, "no choice letter found"


class ChoiceGrader:
    """1.0 when both answers choose the same letter, else 0.0."""

    name = "choice"

    def grade(self, prompt: str, candidate: str, reference: str) -> Grade:
        return grade_parsed(candidate, reference, read_choice, lambda a, b: float(a == b))
