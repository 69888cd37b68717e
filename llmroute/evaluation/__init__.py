"""Measuring quality: calls to a named provider outside routing, and offline collection of graded pairs.

Sits between the cascade and the router: the router may import it; it never imports the router,
the gateway or the CLI.
"""

from .calls import CallOutcome, answer_text, call_once
from .drift import DriftWatch
from .measured import MeasuredShare, measured_share

__all__ = ["CallOutcome", "DriftWatch", "MeasuredShare", "answer_text", "call_once", "measured_share"]
