"""``llmroute quality collect``: send your own prompts to both tiers, grade them, write routing labels."""

from __future__ import annotations

from .cli_quality import quality_app  # noqa: F401  (commands register on it)
