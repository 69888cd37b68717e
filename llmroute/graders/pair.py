"""Grade a pair of answers (the candidate tier's and the reference tier's) with any grader.

One function for offline collection and shadow evaluation, so that both score a pair the same way:
- a text grader with a gold answer grades both answers against the gold;
- a text grader without one grades the candidate against the reference answer, and the reference
  as 1.0 when it parses (it is the yardstick), else unparsed;
- a `Judge` grades both answers in its mode (pairwise in both orders, or rating each).

Graders that set `blocking = True` (a model forward pass) run in a worker thread so that the event
loop is never held; one that has `grade_many(jobs)` gets both comparisons in one call (one batch).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from .base import Grade, Grader, unparsed
from .judge import Judge

__all__ = ["PairGrade", "grade_pair"]


@dataclass(frozen=True, slots=True)
class PairGrade:
    """Both answers' grades, and what grading them cost."""

    grader: str
    candidate: Grade
    """The candidate (weak) tier's answer."""
    reference: Grade
    """The reference (strong) tier's answer."""
    cost_usd: float
    """What grading itself cost (judge calls, failed ones included); 0.0 for local graders."""

    @property
    def graded(self) -> bool:
        """Both scores known."""
        return self.candidate.score is not None and self.reference.score is not None

    @property
    def note(self) -> str | None:
        """Why a grade is missing (both reasons when they differ), or None when graded."""
        reasons = [g.reason or "not graded" for g in (self.candidate, self.reference) if g.score is None]
        return "; ".join(dict.fromkeys(reasons)) or None


def _relabel(grade: Grade, first: str, second: str) -> Grade:
    """A grade whose reason names the grader's slots ("candidate", "reference") by what was in them."""
    reason = grade.reason
    if grade.parsed or reason is None:
        return grade
    for slot, role in (("candidate", first), ("reference", second)):
        if reason.startswith(slot):
            return unparsed(role + reason[len(slot):])
    return grade


def _grade_all(grader: Grader, jobs: Sequence[tuple[str, object, object]]) -> list[Grade]:
    grade_many = getattr(grader, "grade_many", None)
    if callable(grade_many):
        return list(grade_many(jobs))
    return [grader.grade(*job) for job in jobs]  # type: ignore[arg-type]


async def grade_pair(
    grader: Grader | Judge,
    prompt: str,
    candidate: str | None,
    reference: str | None,
    gold: str | None = None,
) -> PairGrade:
    """Grade both answers (see the module docstring); never raises but for cancellation."""
    if isinstance(grader, Judge):
        judged = await grader.judge(prompt, candidate, reference)
        return PairGrade(grader.name, judged.candidate, judged.reference, judged.cost_usd)
    name = str(getattr(grader, "name", type(grader).__name__))
    if gold is not None:
        jobs = [(prompt, candidate, gold), (prompt, reference, gold)]
        labels = [("candidate", "gold"), ("reference", "gold")]
    else:
        jobs = [(prompt, candidate, reference), (prompt, reference, reference)]
        labels = [("candidate", "reference"), ("reference", "reference")]
    try:
        if getattr(grader, "blocking", False):
            grades = await asyncio.to_thread(_grade_all, grader, jobs)
        else:
            grades = _grade_all(grader, jobs)
    except Exception as exc:  # graders never raise on answers; a broken model must not end the run
        failed = unparsed(f"{name} grader failed: {type(exc).__name__}: {exc}")
        return PairGrade(name, failed, failed, 0.0)
    cand, ref = (_relabel(g, *label) for g, label in zip(grades, labels))
    if gold is None and ref.parsed:
        ref = Grade(1.0, True)
    return PairGrade(name, cand, ref, 0.0)
