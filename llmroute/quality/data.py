"""Labelled routing data: one JSON object a line, with the prompt and both models' scores.

    {"id": "mmlu/anatomy/0", "benchmark": "mmlu", "subject": "anatomy", "prompt": "...",
     "scores": {"weak": 1.0, "strong": 0.0}}

A bad line is an error that names the file, the line and what is wrong; nothing is skipped silently.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def json_object_line(line: str, where: str) -> dict[str, Any]:
    """A JSONL line that must hold one object; ``DataError`` naming ``where`` otherwise."""
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    return row


def parse_example(line: str, where: str) -> Example | None:
    """The example on a line; None for a line ``llmroute quality collect`` could not grade (``ungraded``
    with its reason and no ``scores``): a fact about that prompt, not a bad line, and no score to learn from."""
    row = json_object_line(line, where)
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


def jsonl_lines(file: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each non-blank line of a JSONL file, for errors that name the line.

    Split on ``\n`` only (a prompt may hold U+2028, which JSON leaves unescaped) and decoded a line at a time,
    so bytes that are not UTF-8 name their line; a leading byte order mark (Windows editors write one) is skipped.
    """
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{file}: file not found") from None
    except OSError as exc:
        raise DataError(f"{file}: cannot read: {exc.strerror or type(exc).__name__}") from None
    for number, raw in enumerate(data.removeprefix(b"\xef\xbb\xbf").split(b"\n"), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{file}, line {number}: not UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                            f"{exc.start + 1}); save the file as UTF-8") from None
        if line.strip():
            yield number, line


def load_examples(path: str | Path) -> list[Example]:
    """Every example in a JSONL file; raises ``DataError`` at the first bad line."""
    return [example for example, _ in load_lines(path)]


def load_lines(path: str | Path, ungraded: list[str] | None = None) -> list[tuple[Example, str]]:
    """Each example with its line as written (``router split`` copies lines, unknown fields included).

    Lines marked ``ungraded`` are left out; pass a list as ``ungraded`` to get where each one was."""
    file = Path(path)
    examples, skipped = [], []
    for number, line in jsonl_lines(file):
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
