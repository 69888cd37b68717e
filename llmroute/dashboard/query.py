"""A view's query string: the period (as ``llmroute report`` reads it) and the requests view's filters."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

from ..quality_report import BY as QUALITY_BY
from ..report import window

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
"""Most requests one page of the requests view holds, whatever the client asks for."""
FILTERS = ("key", "tag", "provider", "strategy", "status")
MAX_FILTER_CHARS = 512
"""Longer than any stored value (``ledger.max_text_chars`` cuts text to 512 by default)."""


class BadQuery(ValueError):
    """A query parameter the view cannot use: a 400 naming it."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.message, self.param = message, param

    def __reduce__(self) -> tuple[type[BadQuery], tuple[str, str]]:  # raised in the dashboard's process, re-raised here
        return BadQuery, (self.message, self.param)


@dataclass(frozen=True, slots=True)
class Query:
    lo: float
    hi: float
    by: str = "strategy"
    filters: tuple[tuple[str, str], ...] = ()
    limit: int = DEFAULT_LIMIT
    before: tuple[float, int] | None = None
    """The requests view's page: rows older than this (ts, id), from the previous page's ``next_before``."""

    @property
    def window(self) -> dict[str, float]:
        return {"from_ts": self.lo, "to_ts": self.hi}


def parse_query(params: Mapping[str, str], now: float | None = None) -> Query:
    """The period (``since``, or ``from``/``to``; default the last 30 days, as the report's), ``by`` for the
    quality view, and the requests view's filters, page size and page. ``now`` is whole seconds, so that
    answers cached for a second agree."""
    now = float(math.floor(time.time())) if now is None else now
    try:
        lo, hi = window(params.get("since") or None, params.get("from") or None, params.get("to") or None, now)
    except ValueError as exc:
        param = "since" if params.get("since") else ("from" if params.get("from") else "to")
        raise BadQuery(str(exc).replace("--", ""), param) from None
    by = params.get("by") or "strategy"
    if by not in QUALITY_BY:
        raise BadQuery(f"by must be one of {', '.join(QUALITY_BY)}", "by")
    filters = []
    for name in FILTERS:
        value = params.get(name)
        if value:
            if len(value) > MAX_FILTER_CHARS:
                raise BadQuery(f"{name} is longer than {MAX_FILTER_CHARS} characters", name)
            filters.append((name, value))
    return Query(lo, hi, by, tuple(filters), _whole(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),  # type: ignore[arg-type]
                 _cursor(params.get("before")))


def _cursor(text: str | None) -> tuple[float, int] | None:
    """``TS_ID`` as the requests view hands it out in ``next_before``."""
    if not text:
        return None
    ts, _, row_id = text.partition("_")
    try:
        at, number = float(ts), int(row_id)
    except ValueError:
        raise BadQuery("before must be a next_before value from the previous page", "before") from None
    if not math.isfinite(at):
        raise BadQuery("before must be a next_before value from the previous page", "before")
    return at, number


def _whole(params: Mapping[str, str], name: str, default: int | None, lo: int, hi: int) -> int | None:
    """A whole number in [lo, hi] (a larger one is cut to ``hi``: a page is bounded, not refused)."""
    text = params.get(name)
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadQuery(f"{name} must be a whole number", name) from None
    if value < lo:
        raise BadQuery(f"{name} must be at least {lo}", name)
    return min(value, hi)
