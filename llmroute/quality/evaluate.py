"""Judging a QualityRouter on labelled prompts: the RouteLLM figures, per benchmark and overall."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .data import Example
from .metrics import GRID, Curve, curve, random_curve
from .model import QualityRouter
from .train import data_digest, prompt_fingerprint, prompt_fingerprints

OVERALL = "overall"


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One benchmark's (or all prompts') figures for the router and for random routing."""

    benchmark: str
    prompts: int
    router: Curve
    random: Curve

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark, "prompts": self.prompts,
            "weak_only_quality": self.router.weak_only, "strong_only_quality": self.router.strong_only,
            "calls_for_95": self.router.calls_for(0.95), "random_calls_for_95": self.random.calls_for(0.95),
            "apgr": self.router.apgr(), "random_apgr": self.random.apgr(),
            "quality_at_20": self.router.at(0.2), "random_quality_at_20": self.random.at(0.2),
        }


def evaluate(model: QualityRouter, examples: Sequence[Example]) -> list[Evaluation]:
    """Overall first, then each benchmark in name order."""
    scores = model.score_many(e.prompt for e in examples)
    groups = {OVERALL: list(range(len(examples)))}
    for benchmark in sorted({e.benchmark for e in examples}):
        groups[benchmark] = [i for i, e in enumerate(examples) if e.benchmark == benchmark]
    if len(groups) == 2:  # one benchmark: overall says it already
        del groups[next(k for k in groups if k != OVERALL)]
    results = []
    for name, rows in groups.items():
        weak = [examples[i].weak for i in rows]
        strong = [examples[i].strong for i in rows]
        results.append(Evaluation(name, len(rows), curve([scores[i] for i in rows], weak, strong), random_curve(weak, strong)))
    return results


def training_overlap(model: QualityRouter, examples: Sequence[Example]) -> tuple[bool, int | None]:
    """(the data is exactly what the model was trained on, how many of its prompts the model was trained on).

    The count needs a model that stores its prompts' fingerprints (any trained by this version); for
    older ones it is None and only the exact match can be told.
    """
    same = model.meta.get("data_sha256") == data_digest(examples)
    fingerprints = prompt_fingerprints(model.meta)
    if fingerprints is None:
        return same, len(examples) if same else None
    return same, sum(prompt_fingerprint(e.prompt) in fingerprints for e in examples)


def honesty_notes(model: QualityRouter, examples: Sequence[Example], results: Sequence[Evaluation]) -> list[str]:
    """What a reader must know before trusting the figures: in-sample data, or figures only in-sample data gives."""
    notes = []
    same, seen = training_overlap(model, examples)
    held_out = model.validation.get("apgr")
    cross_validated = f" (its cross-validated APGR: {held_out:.3f})" if isinstance(held_out, (int, float)) else ""
    if same:
        notes.append(f"{model.source} was trained on exactly this data: these figures are in-sample and overstate "
                     f"what it does on new prompts{cross_validated}")
    elif seen and seen == len(examples):
        notes.append(f"all {seen:,} of these prompts were in {model.source}'s training data: these figures are "
                     f"in-sample and overstate what it does on new prompts{cross_validated}")
    elif seen:
        notes.append(f"{seen:,} of these {len(examples):,} prompts were in {model.source}'s training data: "
                     "the figures are partly in-sample")
    apgr = results[0].router.apgr()
    if apgr > 1.0:
        why = ("a model that saw these prompts in training knows that" if same or seen else
               "on prompts a model was not trained on that is rare: check it was not trained on these")
        notes.append(f"APGR {apgr:.3f} is above 1: routing beat the strong model alone, which takes knowing where "
                     f"the weak model is right and the strong one wrong; {why}")
    elif not same and not seen and isinstance(held_out, (int, float)) and apgr > held_out + 0.25:
        notes.append(f"APGR {apgr:.3f} is far above the {held_out:.3f} {model.source} reached on held-out prompts "
                     "when trained: if this file came from its training data, the figures are in-sample")
    return notes


def curve_chart(results: Sequence[Evaluation], title: str, fmt: str = "png") -> bytes:
    """Quality against the share of strong calls, the router's curve beside random routing's (png, svg or pdf)."""
    from ..plots import pyplot, figure_bytes

    plt = pyplot()
    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 4), dpi=100, squeeze=False)
    x = [100 * f for f in GRID]
    for ax, result in zip(axes[0], results):
        ax.plot(x, result.router.quality, label="quality_aware router", color="tab:blue")
        ax.plot(x, result.random.quality, label="random split", color="tab:gray", linestyle="--")
        ax.axhline(0.95 * result.router.strong_only, color="tab:red", linewidth=0.8, linestyle=":",
                   label="95% of strong-only")
        calls = result.router.calls_for(0.95)
        if calls is not None:
            ax.axvline(100 * calls, color="tab:blue", linewidth=0.8, linestyle=":")
        ax.set_title(f"{result.benchmark} ({result.prompts} prompts)\nAPGR {result.router.apgr():.3f}, "
                     f"95% at {100 * calls:.0f}% strong" if calls is not None else result.benchmark, fontsize=9)
        ax.set_xlabel("strong-model calls (%)")
        ax.set_ylabel("mean quality")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return figure_bytes(fig, fmt)
