"""Quality-aware routing: labelled data and the metrics a router is judged by.

The learned router itself (``QualityRouter``) is not here yet.
"""

from .data import DataError, Example, load_examples
from .metrics import GRID, Curve, curve, random_curve

__all__ = ["GRID", "Curve", "DataError", "Example", "curve", "load_examples", "random_curve"]
