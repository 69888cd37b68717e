"""Config for ``spend``: the live view of what was spent today and this period, per key, tag and provider.

Kept apart from ``schema.py`` because it is one concept: spend as it happens, budget or not.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_SERIES_LIMIT = 2_000
"""Highest ``max_series`` accepted: each series holds six shared totals, and the state keeps at most 100,000."""


class SpendConfig(BaseModel):
    """``spend``: live spend per gateway key, tag and provider, in ``/router/state``, ``llmroute status`` and
    Prometheus."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = Field(default=True, description="count live spend (a few dict operations per request)")
    period: Literal["day", "week", "month"] = Field(
        default="month", description="the longer window shown beside today: UTC day, week from Monday, or month")
    max_series: int = Field(default=500, gt=0, le=MAX_SERIES_LIMIT,
                            description="names kept per dimension (keys, tags, providers) and period; past it new "
                            "names count under '(other)'")
    seed_from_ledger: bool = Field(default=True, description="at start, read today's and this period's spend "
                                   "from the ledger, so a restart does not zero the view")
