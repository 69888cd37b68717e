"""The ``llmroute`` command line: one module per command group, joined in ``root``."""

from .root import app, main

__all__ = ["app", "main"]
