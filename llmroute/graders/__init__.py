"""Graders: score a candidate answer against a reference, in [0, 1], or say why it cannot.

>>> get_grader("number").grade("How many?", "So 6 + 36 = 42.", "#### 42").score
1.0
"""

from .base import Grade, Grader
from .choice import ChoiceGrader
from .exact import ExactGrader
from .judge import Ask, Judge, Judgement, JudgeReply
from .number import NumberGrader
from .pair import PairGrade, grade_pair
from .registry import EXTRA_GRADERS, GRADERS, get_grader
from .similarity import MissingExtra, SimilarityGrader
from .structured import JsonGrader

__all__ = [
    "EXTRA_GRADERS",
    "GRADERS",
    "Ask",
    "ChoiceGrader",
    "ExactGrader",
    "Grade",
    "Grader",
    "JsonGrader",
    "Judge",
    "JudgeReply",
    "Judgement",
    "MissingExtra",
    "NumberGrader",
    "PairGrade",
    "SimilarityGrader",
    "get_grader",
    "grade_pair",
]
