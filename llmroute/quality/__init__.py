"""Quality-aware routing: a local model that says which prompts need the strong model.

    from llmroute.quality import QualityRouter
    router = QualityRouter.load()          # the model shipped in the package; never downloads
    router.score("Prove that ...")         # probability the strong model is needed
    router.score_many(prompts)

Training (``train``) needs scikit-learn (``llmroute[train]``); scoring needs nothing beyond llmroute.
"""

from .data import DataError, Example, load_examples
from .metrics import GRID, Curve, curve, random_curve
from .model import ModelError, QualityRouter

__all__ = ["GRID", "Curve", "DataError", "Example", "ModelError", "QualityRouter", "curve", "load_examples",
           "random_curve"]
