"""Config for ``budgets``: spend limits on a gateway key, a tag, or all traffic, per UTC period.

Kept apart from ``schema.py`` because it is one concept: how much may be spent, and what happens after.
A budget with ``pacing: true`` also steers quality_aware's strong share and balanced's split for the requests it
covers, so its spend follows the period's path (``llmroute.pacing``); ``pacing_problems`` says why a config
cannot be paced, and ``pacing_prices`` what the pacer assumes a token costs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Literal, Protocol

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from ..budget_period import SpendPath
from .providers import ProviderConfig

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
    pacing: bool = Field(default=False, description="steer the share of strong calls in this budget's scope so "
                         "the period's spend follows its path instead of stopping at the limit")
    min_strong_share: float = Field(default=0.0, ge=0, le=1, description="pacing: lowest share of strong calls")
    max_strong_share: float = Field(default=1.0, ge=0, le=1, description="pacing: highest share of strong calls "
                                    "(and the share pacing starts from)")
    daily_profile: list[float] | None = Field(default=None, description="pacing: 24 positive hourly weights (UTC) "
                                              "the path follows within each day; default a straight line")
    pacing_horizon_s: float = Field(default=86_400.0, ge=1, description="pacing: bring spend back onto the path "
                                    "within this long (or by the period's end)")
    pacing_headroom: float = Field(default=0.01, ge=0, lt=1, description="pacing: fraction of the budget kept back "
                                   "for the noise of the period's last hours")
    pacing_update_s: float = Field(default=5.0, gt=0, le=3600, description="pacing: how often the share is "
                                   "re-planned from the spend so far (the gateway uses the smallest of its budgets')")

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


class PacedConfig(Protocol):
    """What pacing reads of a config (``RouterConfig`` is one): the schema imports this module to check its
    budgets, so this module names what it needs instead of importing the schema back."""

    @property
    def providers(self) -> Mapping[str, ProviderConfig]: ...

    @property
    def budgets(self) -> Sequence[BudgetConfig]: ...

    def quality_pair(self) -> tuple[str, str]:
        """(strong, weak): quality_aware's pair."""
        ...


def blended_usd_per_m(provider: ProviderConfig) -> float:
    """What pacing assumes one token of ``provider`` costs, per 1M: the mean of its input and output prices,
    as quality_aware's ``max_price_per_m`` blends them. Pacing re-plans from the real spend, so a traffic mix
    that is not half input and half output moves the path back within the horizon, not the period's end."""
    if provider.price_per_m is None:
        raise ValueError(f"the provider '{provider.name}' is billed per GPU second and has no price_per_m, so "
                         "pacing cannot price its tokens: give it price_per_m (its effective price per 1M tokens, "
                         "as `llmroute report` measures it)")
    return (provider.price_per_m.input + provider.price_per_m.output) / 2


def pacing_prices(config: PacedConfig) -> tuple[str, str, float, float]:
    """(strong, weak, strong US$ per 1M, weak US$ per 1M) of the pair pacing moves traffic between:
    quality_aware's pair (``quality_aware.strong``/``weak``, else the best tier and the cheapest other).
    Raises ``ValueError`` saying why the pair cannot be paced."""
    if len(config.providers) < 2:
        raise ValueError("pacing moves traffic between a strong and a weak provider, and only one is configured")
    strong, weak = config.quality_pair()
    strong_usd, weak_usd = blended_usd_per_m(config.providers[strong]), blended_usd_per_m(config.providers[weak])
    if strong_usd <= weak_usd:
        raise ValueError(f"the strong provider '{strong}' (${strong_usd:g} per 1M tokens) is not dearer than the weak "
                         f"'{weak}' (${weak_usd:g}), so the share of strong calls changes no cost; set "
                         "quality_aware.strong and quality_aware.weak")
    return strong, weak, strong_usd, weak_usd


def pacing_problems(config: PacedConfig) -> list[tuple[str, str]]:
    """(key, problem) for each paced budget the config cannot pace; empty when every one can."""
    problems = []
    for i, budget in enumerate(config.budgets):
        if budget.pacing:
            try:
                pacing_prices(config)
            except ValueError as exc:
                problems.append((f"budgets.{i}.pacing", f"the budget '{budget.label}' cannot be paced: {exc}"))
    return problems
