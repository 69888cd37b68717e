"""Emulator profiles: the latency, prices and wire quirks of a provider kind."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    model: str
    latency_ms: float
    latency_sigma: float
    price_per_m: dict[str, float]
    quality: int
    context_window: int
    error_style: str
    ratelimit_headers: bool
    completion_tokens: tuple[int, int]
    accuracy: float = 0.8
    """Labelled mode: the share of labelled prompts this profile answers right (unless a label says)."""


@cache
def profiles() -> dict[str, Profile]:
    """The shipped profiles, by name."""
    text = resources.files(__package__).joinpath("profiles.yaml").read_text(encoding="utf-8")
    data: dict[str, dict[str, Any]] = yaml.safe_load(text)
    return {
        name: Profile(name=name, **{**fields, "completion_tokens": tuple(fields["completion_tokens"])})
        for name, fields in data.items()
    }


def get_profile(name: str) -> Profile:
    try:
        return profiles()[name]
    except KeyError:
        raise ValueError(f"unknown profile '{name}' (known: {', '.join(profiles())})") from None
