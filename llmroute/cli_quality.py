"""``llmroute quality``: retained quality measured on your own traffic, from the ledger's graded pairs."""

from __future__ import annotations

import typer

from .cli import app

quality_app = typer.Typer(help="Measure the quality routing keeps, on your own prompts and traffic.")
app.add_typer(quality_app, name="quality")
