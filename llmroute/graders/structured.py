"""`json`: field-by-field agreement of structured outputs (a label and a few fields).

The object is read from the whole answer, else from a ``` fence (```json or bare), else from
the first `{` that starts a valid object, so a model that wraps its JSON in prose still counts.
The score is the share of compared fields that agree: a lead labelled right with one field off
out of four scores 0.75, which an all-or-nothing check would call a failure.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from .base import Grade, Parsed, grade_parsed, normalize_text, unparsed

__all__ = ["JsonGrader", "read_object"]

_DECODER = json.JSONDecoder()
_STARTS_TRIED = 20  # fences, and `{` positions outside them, tried: a text of 1 MB of either stays cheap
_MISSING = object()


def _decode(text: str, start: int = 0, *, whole: bool = False) -> Any:
    """A JSON value at `start` (all of `text` if `whole`), or `_MISSING`.

    Deep nesting and over-long integers are unparsed answers, not RecursionError or ValueError.
    """
    try:
        value, end = _DECODER.raw_decode(text, start)
    except (ValueError, RecursionError):
        return _MISSING
    return _MISSING if whole and text[end:].strip() else value


def read_object(text: str) -> Parsed[dict[str, Any]]:
    """The JSON object an answer gives, or why there is none."""
    found: list[Any] = [_decode(text.strip(), whole=True)]
    for fenced in itertools.islice(text.split("```", 2 * _STARTS_TRIED + 1)[1:-1:2], _STARTS_TRIED):
        body = fenced[4:] if fenced[:4].lower() == "json" else fenced
        found.append(_decode(body.strip(), whole=True))
    start = text.find("{")
    for _ in range(_STARTS_TRIED):
        if start < 0 or any(isinstance(value, dict) for value in found):
            break
        found.append(_decode(text, start))
        start = text.find("{", start + 1)
    values = [value for value in found if value is not _MISSING]
    for value in values:
        if isinstance(value, dict):
            return value, None
    if values:
        return None, f"expected a JSON object, got {type(values[0]).__name__}"
    return None, "no JSON object found"


def _number(value: Any) -> float | None:
    """A JSON number, or a string holding one ("0.8"): models often quote their numbers."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip().replace(",", ""))
        except ValueError:
            return None
    return None


def agree(a: Any, b: Any, rel_tol: float) -> bool:
    """Whether two JSON values say the same: strings as `exact`, numbers within `rel_tol`,
    containers element by element. NaN agrees with nothing, as it carries no answer.

    Containers are walked with a stack, not recursion: two answers nested as deep as the JSON
    parser allows compare like any others instead of raising RecursionError.
    """
    pending = [(a, b)]
    while pending:
        a, b = pending.pop()
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            if a.keys() != b.keys():
                return False
            pending.extend((a[k], b[k]) for k in a)
        elif isinstance(a, list) and isinstance(b, list):
            if len(a) != len(b):
                return False
            pending.extend(zip(a, b))
        elif not _agree_scalar(a, b, rel_tol):
            return False
    return True


def _agree_scalar(a: Any, b: Any, rel_tol: float) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a is b
    x, y = _number(a), _number(b)
    if x is not None and y is not None and not (isinstance(a, str) and isinstance(b, str)):
        return math.isclose(x, y, rel_tol=rel_tol, abs_tol=1e-12)
    if isinstance(a, str) and isinstance(b, str):
        return normalize_text(a) == normalize_text(b)
    return False


class JsonGrader:
    """The share of `fields` (default: every field of the reference) on which the answers agree.

    `tolerances` maps a field to the relative tolerance its numbers may differ by (default
    1e-9). A field absent from both answers agrees; absent from one, it does not.
    """

    name = "json"

    def __init__(
        self,
        fields: Sequence[str] | None = None,
        tolerances: Mapping[str, float] | None = None,
    ) -> None:
        if isinstance(fields, str) or (
            fields is not None and not all(isinstance(f, str) for f in fields)
        ):
            raise ValueError(f"json grader: fields must be a list of names, got {fields!r}")
        self.fields = list(fields) if fields is not None else None
        self.tolerances = dict(tolerances or {})
        for key, tol in self.tolerances.items():
            if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 <= tol < math.inf:
                raise ValueError(f"json grader: tolerance for {key!r} must be >= 0, got {tol!r}")

    def grade(self, prompt: str, candidate: str, reference: str) -> Grade:
        return grade_parsed(candidate, reference, read_object, self._score)

    def _score(self, cand: dict[str, Any], ref: dict[str, Any]) -> float | Grade:
        fields = self.fields if self.fields is not None else list(ref)
        if not fields:
            return unparsed("reference: no fields to compare")
        agreed = sum(
            agree(cand[f], ref[f], self.tolerances.get(f, 1e-9))
            if f in cand and f in ref
            else f not in cand and f not in ref
            for f in fields
        )
        return agreed / len(fields)
