"""Graders by name, as config and the command line spell them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import Grader
from .choice import ChoiceGrader
from .exact import ExactGrader
from .number import NumberGrader
from .similarity import SimilarityGrader
from .structured import JsonGrader

__all__ = ["EXTRA_GRADERS", "GRADERS", "get_grader"]

GRADERS: dict[str, Callable[..., Grader]] = {
    "exact": ExactGrader,
    "choice": ChoiceGrader,
    "number": NumberGrader,
    "json": JsonGrader,
}
"""The text graders: pure Python, always installed, cheap to build."""

EXTRA_GRADERS: dict[str, Callable[..., Grader]] = {
    "similarity": SimilarityGrader,
}
"""Graders that need an optional extra; building one without it raises a ValueError naming it."""


def get_grader(name: str, **options: Any) -> Grader:
    """A grader built with `options` (e.g. `fields=[...]` for json, `rel_tol=` for number).

    A bad name or option is a config mistake, so it raises ValueError naming what is valid.
    The judge is not built here: it needs a provider to ask (`Judge(ask, ...)`).
    """
    valid = ", ".join(sorted(GRADERS) + sorted(EXTRA_GRADERS))
    if name == "judge":
        raise ValueError(
            "grader 'judge' needs a provider, so it is not built by name: use "
            "llmroute.graders.Judge(ask, mode=..., rubric=...), where ask sends the judge's messages; "
            f"valid graders: {valid}"
        )
    factory = (GRADERS.get(name) or EXTRA_GRADERS.get(name)) if isinstance(name, str) else None
    if factory is None:
        raise ValueError(f"unknown grader {name!r}; valid graders: {valid} (and judge, built with Judge(ask, ...))")
    try:
        return factory(**options)
    except TypeError as exc:
        raise ValueError(f"grader {name!r}: bad options {sorted(options)}: {exc}") from None
