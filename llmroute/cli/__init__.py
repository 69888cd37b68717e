"""The ``llmroute`` command line."""

from .common import app, main
from . import ledger, dashboard, keys, plan, quality, collect, router, status  # noqa: E402,F401  (they register on ``app``)

__all__ = ["app", "main"]
