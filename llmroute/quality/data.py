"""Labelled routing data: one JSON object a line, with the prompt and both models' scores.

    {"id": "mmlu/anatomy/0", "benchmark": "mmlu", "subject": "anatomy", "prompt": "...",
     "scores": {"weak": 1.0, "strong": 0.0}}

A bad line is an error that names the file, the line and what is wrong; nothing is skipped silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import orjson

from ..errors import LLMRouteError


class DataError(LLMRouteError):
    """Routing data that cannot be used: names the file, the line and the problem."""


@dataclass(frozen=True, slots=True)
class Example:
    id: str
    benchmark: str
    prompt: str
    weak: float
    strong: float
    subject: str | None = None


def _score(value: object, where: str, which: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(f"{where}: scores.{which} must be a number, got {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise DataError(f"{where}: scores.{which} must be in [0, 1], got {value}")
    return float(value)


def parse_example(line: str, where: str) -> Example | None:
    """The example on a line; None for a line ``llmroute quality collect`` could not grade (``ungraded``
    with its reason and no ``scores``): a fact about that prompt, not a bad line, and no score to learn from."""
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if row.get("ungraded") and row.get("scores") is None:
        return None
    for key in ("prompt", "scores"):
        if key not in row:
            raise DataError(f"{where}: missing field '{key}'")
    prompt, scores = row["prompt"], row["scores"]
    if not isinstance(prompt, str) or not prompt.strip():
        raise DataError(f"{where}: 'prompt' must be a non-empty string")
    if not isinstance(scores, dict) or "weak" not in scores or "strong" not in scores:
        raise DataError(f"{where}: 'scores' must be an object with 'weak' and 'strong'")
    benchmark = row.get("benchmark") or "unknown"
    return Example(
        id=str(row.get("id") or where), benchmark=str(benchmark), prompt=prompt,
        weak=_score(scores["weak"], where, "weak"), strong=_score(scores["strong"], where, "strong"),
        subject=str(row["subject"]) if row.get("subject") is not None else None,
    )


def load_examples(path: str | Path) -> list[Example]:
    """Every example in a JSONL file; raises ``DataError`` at the first bad line."""
    return [example for example, _ in load_lines(path)]


def load_lines(path: str | Path, ungraded: list[str] | None = None) -> list[tuple[Example, str]]:
    """Each example with its line as written (``router split`` copies lines, unknown fields included).

    Lines marked ``ungraded`` are left out; pass a list as ``ungraded`` to get where each one was."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{file}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{file}: cannot read: {type(exc).__name__}") from None
    # split("\n"), not splitlines(): a prompt may hold U+2028 or other separators JSON leaves unescaped.
    examples, skipped = [], []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        example = parse_example(line, f"{file}, line {number}")
        if example is None:
            skipped.append(f"{file}, line {number}")
        else:
            examples.append((example, line))
    if ungraded is not None:
        ungraded.extend(skipped)
    if not examples:
        why = f"all {len(skipped):,} lines are ungraded" if skipped else "the file is empty"
        raise DataError(f"{file}: no examples ({why})")
    return examples
