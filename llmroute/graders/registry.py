"""Graders by name, as config and the command line spell them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import Grader
from .choice import ChoiceGrader
from .exact import ExactGrader
from .number import NumberGrader
from .structured import JsonGrader

__all__ = ["GRADERS", "get_grader"]

GRADERS: dict[str, Callable[..., Grader]] = {
    "exact": ExactGrader,
    "choice": ChoiceGrader,
    "number": NumberGrader,
    "json": JsonGrader,
}


def get_grader(name: str, **options: Any) -> Grader:
    """A grader built with `options` (e.g. `fields=[...]` for json, `rel_tol=` for number).

    A bad name or option is a config mistake, so it raises ValueError naming what is valid.
    """
    if name == "judge":
        raise ValueError(
            "grader 'judge' needs a provider, so it is not built by name: use "
            "llmroute.graders.Judge(ask, mode=..., rubric=...), where ask sends the judge's messages"
        )
    factory = GRADERS.get(name) if isinstance(name, str) else None
    if factory is None:
        raise ValueError(f"unknown grader {name!r}; valid graders: {', '.join(sorted(GRADERS))}")
    try:
        return factory(**options)
    except TypeError as exc:
        raise ValueError(f"grader {name!r}: bad options {sorted(options)}: {exc}") from None
