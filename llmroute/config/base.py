"""The base of the config's sections."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown keys are errors (a typo is not silently ignored), and so is infinity or NaN: one such value turns
    every cost, metric and report into inf or nan."""

    model_config = ConfigDict(extra="forbid", frozen=False, allow_inf_nan=False)
