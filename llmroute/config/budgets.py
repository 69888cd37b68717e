"""Config for ``budgets``: spend limits on a gateway key, a tag, or all traffic, per UTC period.

Kept apart from ``schema.py`` because it is one concept: how much may be spent, and what happens after.
The pacing keys are accepted now so that configs written for pacing load; pacing does not act on them yet.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from ..budget_period import SpendPath

DEFAULT_MAX_TOKENS = 4096
"""Output tokens reserved for a request that sets no ``max_tokens``, unless its budget says otherwise."""


class BudgetConfig(BaseModel):
    """One budget: at most one of ``key`` and ``tag``; with neither it covers all traffic."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str | None = Field(default=None, min_length=1, max_length=64,
                             description="shown in errors, /router/state and metrics (default: key:K, tag:T or all)")
    key: str | None = Field(default=None, min_length=1, description="a gateway key's name: its requests")
    tag: str | None = Field(default=None, min_length=1, description="requests carrying this tag (k=v or bare)")
    usd: float = Field(gt=0, description="US dollars per period")
    period: Literal["day", "week", "month"] = Field(default="month", description="UTC day, week from Monday, or month")
    on_exhausted: Literal["refuse", "cheapest"] = Field(
        default="refuse", description="refuse: 429 budget_exceeded; cheapest: serve on the cheapest provider only, "
        "while its worst case still fits")
    default_max_tokens: int = Field(default=DEFAULT_MAX_TOKENS, gt=0,
                                    description="output tokens reserved for a request that sets no max_tokens")
    pacing: bool = Field(default=False, description="accepted, not acted on yet")
    min_strong_share: float = Field(default=0.0, ge=0, le=1, description="pacing: accepted, not acted on yet")
    max_strong_share: float = Field(default=1.0, ge=0, le=1, description="pacing: accepted, not acted on yet")
    daily_profile: list[float] | None = Field(default=None, description="pacing: 24 hourly weights (UTC)")
    pacing_horizon_s: float = Field(default=86_400.0, gt=0, description="pacing: accepted, not acted on yet")
    pacing_headroom: float = Field(default=0.01, ge=0, lt=1, description="pacing: accepted, not acted on yet")

    @model_validator(mode="after")
    def _checks(self) -> BudgetConfig:
        if self.key is not None and self.tag is not None:
            raise ValueError("give key or tag, not both (neither: the budget covers all traffic)")
        if self.min_strong_share > self.max_strong_share:
            raise ValueError(f"min_strong_share {self.min_strong_share} is above max_strong_share {self.max_strong_share}")
        if self.daily_profile is not None:
            SpendPath(self.daily_profile)  # its ValueError names what is wrong
        return self

    @property
    def label(self) -> str:
        """The budget's name: given, or derived from what it covers."""
        if self.name is not None:
            return self.name
        if self.key is not None:
            return f"key:{self.key}"
        return f"tag:{self.tag}" if self.tag is not None else "all"


def _unique(budgets: list[BudgetConfig]) -> list[BudgetConfig]:
    seen: set[str] = set()
    keys: set[str] = set()
    for budget in budgets:
        if budget.label in seen:
            raise ValueError(f"two budgets are named '{budget.label}': give each a distinct name")
        seen.add(budget.label)
        if budget.key is not None:
            if budget.key in keys:
                raise ValueError(f"two budgets are for the key '{budget.key}': a key has one budget")
            keys.add(budget.key)
    return budgets


Budgets = Annotated[list[BudgetConfig], AfterValidator(_unique)]
"""``budgets``: names unique, one budget per key."""
