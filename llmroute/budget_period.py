"""Budget periods in UTC and the path a budget's spend should follow through one.

A period is a UTC day, a week starting Monday 00:00, or a calendar month: no time zone, so no
daylight-saving hour is ever missing or doubled, and every period is a whole number of days. The
path says which fraction of the budget should be spent by a moment: a straight line by default,
or a daily profile (24 hourly weights) that every day of the period follows, so a budget whose
traffic peaks in business hours is not "ahead" every morning and "behind" every night.

A leaf: it imports nothing from llmroute, so the config can check a daily profile with ``SpendPath``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal

Period = Literal["day", "week", "month"]
PERIODS: tuple[Period, ...] = ("day", "week", "month")
DAY_S = 86_400.0
HOUR_S = 3_600.0


def _checked_ts(now_ts: float) -> float:
    if not isinstance(now_ts, int | float) or not math.isfinite(now_ts):
        raise ValueError(f"a time must be a finite POSIX timestamp, got {now_ts!r}")
    return float(now_ts)


def period_bounds(period: Period, now_ts: float) -> tuple[float, float]:
    """(start, end) POSIX seconds of the period holding ``now_ts``; start inclusive, end exclusive."""
    now = datetime.fromtimestamp(_checked_ts(now_ts), tz=UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        start, end = day, day + timedelta(days=1)
    elif period == "week":
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
    elif period == "month":
        start = day.replace(day=1)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    else:
        raise ValueError(f"unknown budget period {period!r}: use one of {', '.join(PERIODS)}")
    return start.timestamp(), end.timestamp()


def seconds_left(period: Period, now_ts: float) -> float:
    """Seconds from ``now_ts`` to the end of its period (always > 0: the end belongs to the next one)."""
    return period_bounds(period, now_ts)[1] - now_ts


def retry_after_s(period: Period, now_ts: float) -> int:
    """``Retry-After`` for an exhausted budget: whole seconds until the period ends, rounded up, at least 1.

    Rounded up so a client that waits exactly this long arrives in the new period, not a moment before it.
    """
    return max(1, math.ceil(seconds_left(period, now_ts)))


class SpendPath:
    """Which fraction of a budget should be spent by a moment of its period.

    ``hourly_weights``: 24 positive weights, hour 0 being 00:00-01:00 UTC; each day gets an equal
    share of the budget and spends it through the day in proportion to the weights (linearly within
    an hour). ``None`` is the straight line. Weights must be positive: an hour with no budget would
    make any spend in it infinitely "ahead".
    """

    __slots__ = ("_cumulative", "_weights")

    def __init__(self, hourly_weights: Sequence[float] | None = None) -> None:
        weights = [1.0] * 24 if hourly_weights is None else [float(w) for w in hourly_weights]
        if len(weights) != 24:
            raise ValueError(f"a daily profile needs 24 hourly weights (00:00 to 23:00 UTC), got {len(weights)}")
        if not all(math.isfinite(w) and w > 0 for w in weights):
            raise ValueError("daily profile weights must be finite and greater than 0")
        total = sum(weights)
        self._weights = [w / total for w in weights]
        cumulative = [0.0]
        for w in self._weights:
            cumulative.append(cumulative[-1] + w)
        cumulative[-1] = 1.0
        self._cumulative = cumulative

    @property
    def hourly_weights(self) -> list[float]:
        """The weights normalised to sum to 1."""
        return list(self._weights)

    def _day_fraction(self, seconds_into_day: float) -> float:
        hour = min(int(seconds_into_day // HOUR_S), 23)
        return self._cumulative[hour] + self._weights[hour] * (seconds_into_day - hour * HOUR_S) / HOUR_S

    def fraction(self, start_ts: float, end_ts: float, now_ts: float) -> float:
        """Fraction of the budget the path has spent at ``now_ts`` in the period [start_ts, end_ts), in [0, 1]."""
        if now_ts <= start_ts:
            return 0.0
        if now_ts >= end_ts:
            return 1.0
        days = round((end_ts - start_ts) / DAY_S)
        elapsed = now_ts - start_ts
        whole_days = min(int(elapsed // DAY_S), days - 1)
        return (whole_days + self._day_fraction(elapsed - whole_days * DAY_S)) / days

    def time_at(self, start_ts: float, end_ts: float, fraction: float) -> float:
        """The moment the path reaches ``fraction`` of the budget (the inverse of ``fraction``); past 1: the end."""
        if fraction <= 0:
            return start_ts
        if fraction >= 1:
            return end_ts
        days = round((end_ts - start_ts) / DAY_S)
        whole_days = min(int(fraction * days), days - 1)
        rest = fraction * days - whole_days
        hour = 0
        while hour < 23 and self._cumulative[hour + 1] <= rest:
            hour += 1
        within = (rest - self._cumulative[hour]) / self._weights[hour]
        return start_ts + whole_days * DAY_S + (hour + min(max(within, 0.0), 1.0)) * HOUR_S

    def target_usd(self, budget_usd: float, period: Period, now_ts: float) -> float:
        """What the path says should be spent by ``now_ts``."""
        start, end = period_bounds(period, now_ts)
        return budget_usd * self.fraction(start, end, now_ts)
