"""Budget pacing: steer the share of strong calls so a period's spend ends at its budget, with no cliff.

A plain cap (``SpendCap``) serves at full quality until the money is gone, then refuses until the
period ends. ``PacingController`` instead re-plans, at each update, the blended price per token
that would bring spend back onto the budget's path (``SpendPath``) within a horizon, given the
volume seen so far, and turns that price into a share of strong calls:

    blended price per token = weak + share * (strong - weak)
    share wanted = (path target at now + horizon - spend) / expected tokens until then, as a price

The expected volume is a time-decayed ratio of tokens to path time, so traffic that doubles moves
the plan within about ``volume_halflife_s``; the share then moves towards the wanted one with a
time constant (``share_tau_s``) so noise does not make it flap. Re-planning from the real spend
each time makes it self-correcting: a model error shows up as spend off the path and is taken
back over the next horizon; as the period ends the horizon shrinks to what is left, so the end
lands on the budget. Everything is a pure function of the inputs and the times passed in: no
sleeps, no randomness, no clock read unless ``now`` is omitted.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from .budget_period import DAY_S, Period, SpendPath, period_bounds, retry_after_s

Clock = Callable[[], float]


def _finite(name: str, value: float, low: float = 0.0) -> float:
    if not isinstance(value, int | float) or not math.isfinite(value) or value < low:
        raise ValueError(f"{name} must be a finite number >= {low:g}, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class PacingState:
    """One update's view: what the path wants, what was spent, the share chosen and where it leads.

    ``tokens_per_day`` is the volume expected on an average day of the period (the smoothed rate).
    ``bound`` names the limit holding the share back (``min_strong_share``, ``max_strong_share`` or
    ``quality_floor``), or is None. When ``quality_floor`` binds, pacing will not trade quality for
    money: ``projected_end_usd`` may exceed the budget and ``exhausts_at_ts`` says when the budget
    runs out at this volume; from then the budget's own rule (refuse or cheapest) applies.
    """

    period: str
    period_start_ts: float
    period_end_ts: float
    budget_usd: float
    target_usd: float
    spend_usd: float
    share: float
    wanted_share: float | None
    tokens_per_day: float | None
    projected_end_usd: float | None
    bound: str | None
    quality_floor_share: float | None
    exhausts_at_ts: float | None

    @property
    def ahead_usd(self) -> float:
        """Spend above the path (negative: behind it)."""
        return self.spend_usd - self.target_usd

    def to_dict(self) -> dict[str, object]:
        """Plain values for ``/router/state`` and metrics."""
        out = asdict(self)
        out["ahead_usd"] = self.ahead_usd
        return out


class PacingController:
    """Moves the share of strong calls between bounds so spend follows the budget's path.

    Call ``update`` every few seconds (off the request path) with the spend and tokens counted
    since the period started, for the same scope as the budget (shared counters when replicas
    share the budget); read ``share`` on the request path. Prices are US$ per 1M tokens, blended
    over input and output as the caller sees fit.
    """

    def __init__(
        self,
        budget_usd: float,
        period: Period,
        *,
        weak_usd_per_m: float,
        strong_usd_per_m: float,
        min_strong_share: float = 0.0,
        max_strong_share: float = 1.0,
        initial_share: float | None = None,
        path: SpendPath | None = None,
        horizon_s: float = DAY_S,
        volume_halflife_s: float = DAY_S,
        share_tau_s: float = 1800.0,
        headroom: float = 0.01,
        clock: Clock = time.time,
    ) -> None:
        self.budget_usd = _finite("budget_usd", budget_usd)
        period_bounds(period, 0.0)  # an unknown period fails here, not at the first update
        self.period = period
        self._weak = _finite("weak_usd_per_m", weak_usd_per_m) / 1e6
        self._strong = _finite("strong_usd_per_m", strong_usd_per_m) / 1e6
        if self._strong <= self._weak:
            raise ValueError("pacing needs the strong price above the weak one: otherwise the share changes no cost")
        self.min_strong_share = _finite("min_strong_share", min_strong_share)
        self.max_strong_share = _finite("max_strong_share", max_strong_share)
        if not self.min_strong_share <= self.max_strong_share <= 1:
            raise ValueError("need 0 <= min_strong_share <= max_strong_share <= 1")
        self.path = path or SpendPath()
        self.horizon_s = _finite("horizon_s", horizon_s, low=1.0)
        self._decay_s = _finite("volume_halflife_s", volume_halflife_s, low=1.0) / math.log(2)
        self.share_tau_s = _finite("share_tau_s", share_tau_s)
        if not 0 <= _finite("headroom", headroom) < 1:
            raise ValueError("headroom is a fraction of the budget: 0 <= headroom < 1")
        self._aim_usd = self.budget_usd * (1 - headroom)
        self._clock = clock
        start = self.max_strong_share if initial_share is None else _finite("initial_share", initial_share)
        self._share = min(max(start, self.min_strong_share), self.max_strong_share)
        self._start = self._end = math.nan
        self._last_ts: float | None = None
        self._last_path_s = 0.0
        self._last_tokens = 0.0
        self._tokens_sum = 0.0  # decayed tokens
        self._path_sum = 0.0  # decayed path seconds
        self._state: PacingState | None = None

    @property
    def share(self) -> float:
        """The share of strong calls to use now (an attribute read: cheap on the request path)."""
        return self._share

    @property
    def state(self) -> PacingState | None:
        """The last update's state; None before the first."""
        return self._state

    def blended_usd_per_token(self, share: float) -> float:
        return self._weak + share * (self._strong - self._weak)

    def _path_s(self, now: float) -> float:
        """Position on the path in 'path seconds': the period's length times the path's fraction."""
        return self.path.fraction(self._start, self._end, now) * (self._end - self._start)

    def _observe_volume(self, now: float, tokens: float) -> None:
        start, end = period_bounds(self.period, now)
        if start != self._start:  # a new period: the caller's counters start again from zero
            self._start, self._end = start, end
            self._last_path_s, self._last_tokens = 0.0, 0.0
        path_s = self._path_s(now)
        new_tokens = tokens - self._last_tokens if tokens >= self._last_tokens else tokens
        step = path_s - self._last_path_s
        if step <= 0:
            return  # no path time passed (same moment, or a clock step back): nothing to learn yet
        keep = math.exp(-step / self._decay_s)
        self._tokens_sum = self._tokens_sum * keep + new_tokens
        self._path_sum = self._path_sum * keep + step
        self._last_path_s, self._last_tokens = path_s, tokens

    def update(self, spend_usd: float, tokens: float, now: float | None = None,
               quality_floor_share: float | None = None) -> PacingState:
        """Re-plan from the period's spend and token totals so far; returns (and keeps) the new state.

        ``quality_floor_share``: the share that keeps measured quality at its target, when one is
        measured; the share never goes below it (not even for ``max_strong_share``).
        """
        now = self._clock() if now is None else _finite("now", now, low=-math.inf)
        spend_usd = _finite("spend_usd", spend_usd)
        tokens = _finite("tokens", tokens)
        floor = None if quality_floor_share is None else min(_finite("quality_floor_share", quality_floor_share), 1.0)
        self._observe_volume(now, tokens)
        dt = 0.0 if self._last_ts is None else max(0.0, now - self._last_ts)
        self._last_ts = now

        lower = self.min_strong_share if floor is None else max(self.min_strong_share, floor)
        upper = max(self.max_strong_share, lower)
        path_now = self._path_s(now)
        length = self._end - self._start
        rate = self._tokens_sum / self._path_sum if self._path_sum > 0 else None  # tokens per path second
        horizon_end = min(now + self.horizon_s, self._end)
        planned_tokens = None if rate is None else rate * (self._path_s(horizon_end) - path_now)
        wanted: float | None = None
        if spend_usd >= self.budget_usd:
            wanted = -math.inf
        elif planned_tokens:
            room_usd = self._aim_usd * self._path_s(horizon_end) / length - spend_usd
            wanted = (room_usd / planned_tokens - self._weak) / (self._strong - self._weak)
        goal = self._share if wanted is None else min(max(wanted, lower), upper)
        alpha = 1.0 if self.share_tau_s == 0 else 1.0 - math.exp(-dt / self.share_tau_s)
        self._share = min(max(self._share + alpha * (goal - self._share), lower), upper)

        bound = None
        if wanted is not None and wanted < lower:
            bound = "quality_floor" if floor is not None and floor > self.min_strong_share else "min_strong_share"
        elif wanted is not None and wanted > upper:
            bound = "max_strong_share"
        projected = exhausts = None
        if rate is not None:
            per_token = self.blended_usd_per_token(self._share)
            projected = spend_usd + rate * (length - path_now) * per_token
            if spend_usd >= self.budget_usd:
                exhausts = now
            elif projected > self.budget_usd:
                fraction = (path_now + (self.budget_usd - spend_usd) / (rate * per_token)) / length
                exhausts = self.path.time_at(self._start, self._end, fraction)
        self._state = PacingState(
            period=self.period, period_start_ts=self._start, period_end_ts=self._end,
            budget_usd=self.budget_usd, target_usd=self._aim_usd * path_now / length, spend_usd=spend_usd,
            share=self._share, wanted_share=None if wanted is None or math.isinf(wanted) else wanted,
            tokens_per_day=None if rate is None else rate * DAY_S,
            projected_end_usd=projected, bound=bound, quality_floor_share=floor, exhausts_at_ts=exhausts,
        )
        return self._state


class SpendCap:
    """The cliff pacing replaces: serve at full quality until spend reaches the budget, then refuse."""

    def __init__(self, budget_usd: float, period: Period) -> None:
        self.budget_usd = _finite("budget_usd", budget_usd)
        period_bounds(period, 0.0)
        self.period = period

    def allows(self, spend_usd: float) -> bool:
        return spend_usd < self.budget_usd

    def retry_after_s(self, now_ts: float) -> int:
        """What a refusal's ``Retry-After`` says: the seconds until the period (and the budget) starts again."""
        return retry_after_s(self.period, now_ts)
