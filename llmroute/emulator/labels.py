"""Labelled mode: emulated providers that answer known prompts right or wrong, by a truth tests can read.

A labels file has one JSON object a line::

    {"prompt": "Capital of France?", "answer": "Paris", "wrong": ["Lyon", "Marseille"],
     "correct": {"cerebras": true, "runpod": false}}

``prompt`` is matched against the last user message of a request; ``answer`` is the gold answer
(text, or a JSON object for a structured task); ``wrong`` (optional) is the wrong answer, or a
list to choose from; ``correct`` (optional) says per profile whether it answers right. A profile
without an entry in ``correct`` is right with its accuracy (``accuracy`` given here, else the
profile's), decided per prompt by a hash of the seed, the profile and the prompt: the same seed
gives the same answers, as at temperature 0.

``Labels.is_correct`` is the truth; everything that needs it (the emulator, its judge, the demo,
tests) asks it, so the truth is never derived twice.
"""

from __future__ import annotations

import hashlib
import json
import math
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..graders.base import normalize_text
from ..graders.judge import quote
from ..graders.structured import agree, read_object
from .profiles import profiles

__all__ = ["Label", "Labels", "unit_hash"]

Gold = str | dict[str, Any]
_SUFFIXES_TRIED = 200
"""Line starts tried when a text holds a labelled prompt after other lines (a system prompt first)."""
_DONT_KNOW = "I do not know."
_NFC_GROWTH = 4
"""A text longer than this many times the longest labelled prompt cannot be one, even before NFC."""


@dataclass(frozen=True, slots=True)
class Label:
    prompt: str
    answer: Gold
    wrong: tuple[Gold, ...] = ()
    correct: Mapping[str, bool] = field(default_factory=dict)


def unit_hash(*parts: object) -> float:
    """A number in [0, 1) fixed by ``parts``: a seeded coin that does not depend on the order of requests."""
    digest = hashlib.blake2b("\x00".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class Labels:
    """Known prompts with their gold answers, and which profile answers each one right."""

    def __init__(self, labels: Iterable[Label], *, seed: int = 0, accuracy: Mapping[str, float] | None = None) -> None:
        self.seed = seed
        self.accuracy = dict(accuracy or {})
        for name, value in self.accuracy.items():
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise ValueError(f"accuracy of {name!r} must be a number from 0 to 1, got {value!r}")
        self._by_prompt: dict[str, Label] = {}
        for label in labels:
            key = _key(label.prompt)
            if key in self._by_prompt:
                raise ValueError(f"prompt labelled twice: {key[:80]!r}")
            self._by_prompt[key] = label
        # A judge prompt shows the question with brackets defanged (graders.judge.quote): find it that way too.
        self._quoted = {quoted: label for key, label in self._by_prompt.items() if (quoted := quote(key)) != key}
        self._longest = max(map(len, [*self._by_prompt, *self._quoted]), default=0) * _NFC_GROWTH
        # Wrong answers made up for a label without `wrong`: other labels' answers, as a plausible mistake.
        self._texts = sorted({label.answer for label in self._by_prompt.values() if isinstance(label.answer, str)})
        self._values: dict[str, list[Any]] = {}
        for label in self._by_prompt.values():
            if isinstance(label.answer, dict):
                for key, value in label.answer.items():
                    if isinstance(value, (str, int, float, bool)) and value not in self._values.setdefault(key, []):
                        self._values[key].append(value)

    def __len__(self) -> int:
        return len(self._by_prompt)

    def __iter__(self) -> Iterator[Label]:
        return iter(self._by_prompt.values())

    @classmethod
    def load(cls, path: str | Path, *, seed: int = 0, accuracy: Mapping[str, float] | None = None) -> Labels:
        """Read a labels file; a bad line is a ValueError naming the file and the line."""
        labels = []
        with open(path, "rb") as lines:
            for number, raw in enumerate(lines, 1):
                try:
                    line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
                    if line.strip():
                        labels.append(parse_label(json.loads(line)))
                except RecursionError:
                    raise ValueError(f"{path}: line {number}: JSON nested too deeply") from None
                except (ValueError, TypeError) as exc:  # UnicodeDecodeError and JSONDecodeError too
                    raise ValueError(f"{path}: line {number}: {exc}") from None
        try:
            return cls(labels, seed=seed, accuracy=accuracy)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None

    def find(self, text: str) -> Label | None:
        """The label whose prompt is ``text``, or ends it after a line break (a system prompt before it).

        Prompts match as Unicode text (NFC), whatever normal form the file or the client wrote.
        """
        text = text.strip()
        found = self._lookup(text)
        start = text.find("\n")
        for _ in range(_SUFFIXES_TRIED):
            if found is not None or start < 0:
                break
            if len(text) - start <= self._longest:  # a longer tail cannot be a labelled prompt: not copied
                found = self._lookup(text[start + 1:])
            start = text.find("\n", start + 1)
        return found

    def _lookup(self, text: str) -> Label | None:
        if len(text) > self._longest:
            return None
        text = _key(text)
        found = self._by_prompt.get(text)
        return found if found is not None or not self._quoted else self._quoted.get(text)

    def is_correct(self, profile: str, prompt: str) -> bool | None:
        """Whether ``profile`` answers ``prompt`` right: the truth. None for a prompt that is not labelled."""
        label = self.find(prompt)
        if label is None:
            return None
        if profile in label.correct:
            return label.correct[profile]
        return unit_hash(self.seed, "correct", profile, label.prompt.strip()) < self.accuracy_of(profile)

    def accuracy_of(self, profile: str) -> float:
        if profile in self.accuracy:
            return self.accuracy[profile]
        known = profiles()
        if profile not in known:
            raise ValueError(f"no accuracy for {profile!r}: give one (known profiles: {', '.join(known)})")
        return known[profile].accuracy

    def answer_for(self, profile: str, prompt: str) -> Gold | None:
        """What ``profile`` answers to ``prompt``: the gold answer when it is right, a wrong one otherwise."""
        label = self.find(prompt)
        if label is None:
            return None
        if self.is_correct(profile, prompt):
            return label.answer
        if label.wrong:
            return label.wrong[int(unit_hash(self.seed, "wrong", profile, label.prompt) * len(label.wrong))]
        return self._made_up_wrong(label, profile)

    def grade(self, prompt: str, answer: str) -> bool | None:
        """Whether ``answer`` is right for ``prompt``: normalised text, or field equality with a JSON gold.

        None for a prompt that is not labelled.
        """
        label = self.find(prompt)
        if label is None:
            return None
        return matches(label.answer, answer)

    def _made_up_wrong(self, label: Label, profile: str) -> Gold:
        """A plausible mistake: another label's answer, or, for JSON, the first field changed."""
        pick = unit_hash(self.seed, "made-up", profile, label.prompt)
        if isinstance(label.answer, str):
            others = [t for t in self._texts if normalize_text(t) != normalize_text(label.answer)]
            return others[int(pick * len(others))] if others else _DONT_KNOW
        if not label.answer:
            return {"answer": _DONT_KNOW}
        key, value = next(iter(label.answer.items()))
        others = [v for v in self._values.get(key, []) if not agree(v, value, 1e-9)]
        if others:
            wrong: Any = others[int(pick * len(others))]
        elif isinstance(value, bool):
            wrong = not value
        elif isinstance(value, (int, float)) and math.isfinite(value):
            wrong = value + 1
        elif isinstance(value, str):
            wrong = f"not {value}"
        else:
            wrong = None if value is not None else _DONT_KNOW
        return {**label.answer, key: wrong}


def _key(prompt: str) -> str:
    return unicodedata.normalize("NFC", prompt.strip())


def matches(gold: Gold, answer: str) -> bool:
    """Whether ``answer`` says what ``gold`` does."""
    if isinstance(gold, str):
        return normalize_text(answer) == normalize_text(gold)
    value, _ = read_object(answer)
    return value is not None and all(key in value and agree(value[key], gold[key], 1e-9) for key in gold)


def parse_label(record: Any) -> Label:
    """One line of a labels file; a ValueError says what is wrong with it."""
    if not isinstance(record, dict):
        raise ValueError("expected a JSON object")
    prompt, answer = record.get("prompt"), record.get("answer")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("'prompt' must be a non-empty string")
    if not isinstance(answer, (str, dict)):
        raise ValueError("'answer' must be a string or a JSON object")
    try:  # it is answered as JSON: what cannot be sent is refused here, not at the first request
        orjson.dumps([answer, record.get("wrong")])
    except orjson.JSONEncodeError as exc:
        raise ValueError(f"'answer' or 'wrong' cannot be sent as JSON: {exc}") from None
    wrong = record.get("wrong", [])
    wrong = [wrong] if isinstance(wrong, (str, dict)) else wrong
    if not isinstance(wrong, list) or not all(isinstance(w, (str, dict)) for w in wrong):
        raise ValueError("'wrong' must be a string, a JSON object or a list of them")
    if any(matches(answer, json.dumps(w) if isinstance(w, dict) else w) for w in wrong):
        raise ValueError("a 'wrong' answer says the same as 'answer'")
    correct = record.get("correct", {})
    if not isinstance(correct, dict) or not all(isinstance(v, bool) for v in correct.values()):
        raise ValueError("'correct' must map profile names to true or false")
    unknown = set(record) - {"prompt", "answer", "wrong", "correct", "tags", "id"}
    if unknown:
        raise ValueError(f"unknown key(s): {', '.join(sorted(unknown))}")
    return Label(prompt, answer, tuple(wrong), correct)
