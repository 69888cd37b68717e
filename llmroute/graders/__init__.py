"""Graders: score a candidate answer against a reference, in [0, 1], or say why it cannot.

>>> get_grader("number").grade("How many?", "So 6 + 36 = 42.", "#### 42").score
1.0
"""

from .base import Grade, Grader
from .choice import ChoiceGrader
from .exact import ExactGrader
from .number import NumberGrader
from .registry import GRADERS, get_grader
from .structured import JsonGrader

__all__ = [
    "GRADERS",
    "ChoiceGrader",
    "ExactGrader",
    "Grade",
    "Grader",
    "JsonGrader",
    "NumberGrader",
    "get_grader",
]
