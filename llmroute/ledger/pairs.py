"""One graded pair: a request answered by both tiers, and how a grader scored each answer.

Pairs come from shadow evaluation (a sample of live requests also sent to the other tier) and from
``llmroute quality collect``. They are what retained quality is measured from, so a pair whose
grade is missing keeps a ``note`` saying why, and is counted as ungraded rather than scored.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from .entry import MAX_TAGS, MAX_TEXT_CHARS, cut_text, finite_float, tags_json

PAIR_COLUMNS = (
    "ts", "request_id", "route", "strategy", "tags", "key_id", "quality_score", "route_decision",
    "served_provider", "reference_provider", "candidate_provider", "served_tier", "grader",
    "reference_grade", "candidate_grade", "note", "shadow_cost_usd", "judge_cost_usd", "source",
    "prompt", "reference_answer", "candidate_answer",
)
_NUMBERS = {"ts", "quality_score", "reference_grade", "candidate_grade", "shadow_cost_usd", "judge_cost_usd"}
_text_values = operator.itemgetter(*(i for i, name in enumerate(PAIR_COLUMNS) if name not in _NUMBERS))
_ROW_OVERHEAD_BYTES = 400

MAX_PAIR_TEXT_CHARS = 32_768
"""Longest prompt or answer a pair keeps (with ``shadow.store_text``). Larger than ``ledger.max_text_chars``,
which bounds labels and errors: ``router train --from-ledger`` needs the whole prompt to learn from, and
a cut answer would be graded differently. Bounded so that one pair cannot fill the writer's queue."""

TIERS = ("reference", "candidate")


@dataclass(slots=True)
class GradedPair:
    """A request's two answers, graded. ``reference`` is the strong tier, ``candidate`` the cheap one."""

    ts: float
    request_id: str
    route: str | None
    strategy: str
    tags: list[str]
    key_id: str | None
    quality_score: float | None
    """quality_aware's score for the prompt (None when another strategy routed it)."""
    route_decision: str | None
    served_provider: str
    reference_provider: str
    candidate_provider: str
    served_tier: str
    """Which tier answered the client: ``reference`` or ``candidate``; the other one was the shadow call."""
    grader: str
    reference_grade: float | None
    candidate_grade: float | None
    note: str | None
    """Why a grade is missing (a failed shadow call, an answer the grader could not parse)."""
    shadow_cost_usd: float | None
    """What the call to the other tier cost: measurement, not serving."""
    judge_cost_usd: float | None
    """What grading cost (judge calls); 0 for local graders."""
    source: str = "shadow"
    """``shadow`` (live traffic) or ``collect`` (``llmroute quality collect``)."""
    prompt: str | None = None
    reference_answer: str | None = None
    candidate_answer: str | None = None
    # Text only with ``shadow.store_text``: prompts are often confidential.

    @property
    def served_grade(self) -> float | None:
        """The grade of the answer the client got."""
        if self.served_tier == "reference":
            return self.reference_grade
        if self.served_tier == "candidate":
            return self.candidate_grade
        return None

    @property
    def graded(self) -> bool:
        """Both grades known: the pair counts toward retained quality."""
        return self.reference_grade is not None and self.candidate_grade is not None

    def row(self, max_text_chars: int = MAX_TEXT_CHARS, max_pair_text_chars: int = MAX_PAIR_TEXT_CHARS,
            ) -> tuple[Any, ...]:
        """Values in ``PAIR_COLUMNS`` order, each storable whatever a grader or provider put in the pair.

        Grades are finite and within [0, 1] (else None: ungraded, never a made-up score), costs finite
        and not negative (else unknown), labels cut to ``max_text_chars`` and the prompt and answers to
        ``max_pair_text_chars``; text is valid UTF-8 without NUL, which Postgres refuses.
        """
        n, big = max_text_chars, max_pair_text_chars
        return (
            finite_float(self.ts, 0.0), _text(self.request_id, n) or "", _text(self.route, n),
            _text(self.strategy, n) or "", _tags(self.tags, n), _text(self.key_id, n),
            finite_float(self.quality_score, None), _text(self.route_decision, n),
            _text(self.served_provider, n) or "", _text(self.reference_provider, n) or "",
            _text(self.candidate_provider, n) or "", _text(self.served_tier, n) or "", _text(self.grader, n) or "",
            _grade(self.reference_grade), _grade(self.candidate_grade), _text(self.note, n),
            _cost(self.shadow_cost_usd), _cost(self.judge_cost_usd), _text(self.source, n) or "shadow",
            _text(self.prompt, big), _text(self.reference_answer, big), _text(self.candidate_answer, big),
        )

    @classmethod
    def from_row(cls, values: Sequence[Any]) -> GradedPair:
        """A pair as ``row`` stored it (``PAIR_COLUMNS`` order)."""
        data = dict(zip(PAIR_COLUMNS, values))
        tags = data["tags"]
        data["tags"] = [str(t) for t in orjson.loads(tags)] if tags else []
        return cls(**data)


def pair_row_bytes(row: tuple[Any, ...]) -> int:
    """A cheap estimate of a pair row's memory while it waits in the writer's queue."""
    return _ROW_OVERHEAD_BYTES + sum(map(len, filter(None, _text_values(row))))


def _text(value: Any, limit: int) -> str | None:
    value = cut_text(value, limit)
    if value is None or value.isascii():
        return value
    try:
        value.encode()
    except UnicodeEncodeError:  # a lone surrogate (JSON "\ud800"): neither SQLite nor Postgres stores it
        value = value.encode("utf-8", "replace").decode()
    return value


def _tags(tags: Any, limit: int) -> str | None:
    if not isinstance(tags, (list, tuple)):
        tags = [tags] if tags else []
    return tags_json([_text(t, limit) for t in tags[:MAX_TAGS]], limit)


def _grade(value: Any) -> float | None:
    number = finite_float(value, None) if type(value) is not bool else float(value)
    if number is None:
        return None
    return min(max(number, 0.0), 1.0)


def _cost(value: Any) -> float | None:
    number = finite_float(value, None)
    return number if number is not None and number >= 0 else None


__all__ = ["MAX_PAIR_TEXT_CHARS", "PAIR_COLUMNS", "TIERS", "GradedPair", "pair_row_bytes"]
