"""A judge that knows the truth: labelled mode's answer to an LLM-as-judge prompt.

Judge prompts follow MT-bench: a pairwise prompt holds ``[User Question]`` and two answers between
``[The Start of Assistant A's Answer]``/``[The End of ...]`` markers and asks for ``[[A]]``, ``[[B]]``
or ``[[C]]`` (a tie); a rating prompt holds ``[Question]`` and one answer and asks for
``Rating: [[N]]``. A labelled question is judged from its gold answer: the right answer wins, two
right or two wrong answers tie; a right answer rates 10, a wrong one 1. ``noise`` flips a verdict
with that probability (seeded per prompt), to stand in for a judge that errs.
"""

from __future__ import annotations

from .labels import Labels, unit_hash

__all__ = ["judge_reply"]

_PAIRWISE = ("[User Question]", "[The Start of Assistant A's Answer]", "[The End of Assistant A's Answer]",
             "[The Start of Assistant B's Answer]", "[The End of Assistant B's Answer]")
_RATING = ("[Question]", "[The Start of Assistant's Answer]", "[The End of Assistant's Answer]")


def _between(text: str, markers: tuple[str, ...]) -> list[str] | None:
    """The texts between consecutive ``markers`` found in order, or None when one is missing."""
    parts, at = [], text.find(markers[0])
    if at < 0:
        return None
    at += len(markers[0])
    for marker in markers[1:]:
        end = text.find(marker, at)
        if end < 0:
            return None
        parts.append(text[at:end].strip())
        at = end + len(marker)
    return parts


def judge_reply(labels: Labels, prompt: str, *, noise: float = 0.0) -> str | None:
    """The judge's reply to ``prompt``, or None when it is not a judge prompt about a labelled question."""
    pair = _between(prompt, _PAIRWISE)
    if pair is not None:
        question, answer_a, _, answer_b = pair
        right_a, right_b = labels.grade(question, answer_a), labels.grade(question, answer_b)
        if right_a is None or right_b is None:
            return None
        verdict = "C" if right_a == right_b else ("A" if right_a else "B")
        if noise and unit_hash(labels.seed, "judge", prompt) < noise:
            verdict = {"A": "B", "B": "A"}.get(verdict) or ("A" if unit_hash(labels.seed, "tie", prompt) < 0.5 else "B")
        reasons = {"A": "Assistant A answers correctly and Assistant B does not.",
                   "B": "Assistant B answers correctly and Assistant A does not.",
                   "C": "Both assistants are equally good." if right_a else "Neither assistant answers correctly."}
        return f"{reasons[verdict]}\n\n[[{verdict}]]"
    rated = _between(prompt, _RATING)
    if rated is not None:
        question, answer = rated
        right = labels.grade(question, answer)
        if right is None:
            return None
        if noise and unit_hash(labels.seed, "judge", prompt) < noise:
            right = not right
        return ("The answer is correct and complete. Rating: [[10]]" if right
                else "The answer is incorrect. Rating: [[1]]")
    return None
