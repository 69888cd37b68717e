"""Config for measuring quality: ``shadow`` (live pairs), ``graders`` (which grader where) and ``judge``.

Kept apart from ``schema.py`` because it is one concept: how llmroute proves the quality it keeps.
The key names are fixed by the docs so that scripts can write configs.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..graders import EXTRA_GRADERS, GRADERS, get_grader
from ..graders.judge import check_rubric

GRADER_NAMES = frozenset(GRADERS) | frozenset(EXTRA_GRADERS) | {"judge"}
"""Every grader a config may name (similarity and judge are built where their parts are)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ShadowConfig(_Section):
    """``shadow``: send a sample of answered requests to the other tier too, and grade the pair."""

    rate: float = Field(default=0.0, ge=0, le=1, description="share of eligible requests sampled; 0: off")
    grader: str = Field(default="judge", description="default grader: exact | choice | number | json | similarity | judge")
    max_usd_per_day: float = Field(default=5.0, ge=0, description="shadow and judge spend cap per UTC day "
                                   "(split evenly between gateway workers)")
    max_in_flight: int = Field(default=8, gt=0, description="shadow evaluations running at once")
    max_queued: int = Field(default=64, ge=0, description="sampled requests waiting for a slot; past it they are "
                            "dropped, counted and logged")
    max_queued_bytes: int = Field(default=32 * 1024 * 1024, gt=0, description="memory the shadow work queued and "
                                  "in flight may hold (request bodies and served answers, estimated from their "
                                  "tokens at 16 bytes each); a sampled request that would pass it is dropped")
    store_text: bool = Field(default=False, description="keep the prompt and both answers with each graded pair "
                             "(prompts are often confidential: off by default)")
    reference: str | None = None
    """The tier graded as the reference (default: quality_aware's strong provider)."""
    candidate: str | None = None
    """The tier whose quality is measured against it (default: quality_aware's weak provider)."""
    min_pairs: int = Field(default=100, gt=1, description="graded pairs before a measured figure is used "
                           "(plan, quality_aware min_quality, the drift alarm)")
    window: int = Field(default=1000, gt=1, description="most recent pairs the live retained-quality metric uses")
    alert_below: float | None = Field(default=None, gt=0, le=1, description="drift alarm: warn when the interval's "
                                      "upper bound falls below this (default: quality_aware.target.min_quality, "
                                      "else 0.95)")

    @model_validator(mode="after")
    def _known_grader(self) -> ShadowConfig:
        check_grader(self.grader, {})
        return self


class GraderRule(_Section):
    """One ``graders`` entry: requests with this tag, route or strategy are graded by ``grader``.

    Keys other than ``tag``, ``route``, ``strategy`` and ``grader`` are the grader's options
    (``fields`` and ``tolerances`` for json, ``rel_tol`` for number).
    """

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    tag: str | None = None
    """``key=value`` as in the ledger's tags (a request's tags include its gateway key's)."""
    route: str | None = None
    """The route a client named (the gateway request's ``model``)."""
    strategy: str | None = None
    grader: str

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def matches(self, route: str | None, strategy: str | None, tags: list[str] | tuple[str, ...]) -> bool:
        return ((self.tag is None or self.tag in tags) and (self.route is None or self.route == route)
                and (self.strategy is None or self.strategy == strategy))

    @model_validator(mode="after")
    def _valid(self) -> GraderRule:
        if self.tag is None and self.route is None and self.strategy is None:
            raise ValueError("needs at least one of tag, route or strategy to match on")
        check_grader(self.grader, self.options)
        return self


class JudgeConfig(_Section):
    """``judge``: the LLM that grades answers when the grader is ``judge``."""

    provider: str | None = None
    """A configured provider (default: the shadow reference, i.e. quality_aware's strong provider)."""
    mode: Literal["pairwise", "rating"] = "pairwise"
    """pairwise: which of two answers is better, asked in both orders; rating: each answer 1-10."""
    rubric: str | None = None
    """Replaces the built-in prompt; pairwise uses {question}, {answer_a}, {answer_b}; rating {question}, {answer}."""
    max_tokens: int = Field(default=512, gt=0, description="longest judge reply")
    timeout_s: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _valid_rubric(self) -> JudgeConfig:
        if self.rubric is not None:
            check_rubric(self.rubric, self.mode)
        return self


def check_grader(name: str, options: dict[str, Any]) -> None:
    """Build the grader once so a bad name, option or missing extra fails when the config loads.

    Building is cheap (the similarity model loads on first use); the judge is built where its provider is.
    """
    if name not in GRADER_NAMES:
        raise ValueError(f"grader {name!r} is unknown; valid graders: {', '.join(sorted(GRADER_NAMES))}")
    if name != "judge":
        get_grader(name, **options)


def grader_for(rules: list[GraderRule], default: str, route: str | None, strategy: str | None,
               tags: list[str] | tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    """(grader name, options) for a request: the first matching rule, else ``default`` with no options."""
    for rule in rules:
        if rule.matches(route, strategy, tags):
            return rule.grader, rule.options
    return default, {}
