"""Judging a QualityRouter on labelled prompts: the RouteLLM figures, per benchmark and overall."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .data import Example
from .metrics import GRID, Curve, curve, random_curve
from .model import QualityRouter

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


def curve_chart(results: Sequence[Evaluation], title: str) -> bytes:
    """PNG: quality against the share of strong calls, the router's curve beside random routing's."""
    from ..plots import _pyplot

    plt = _pyplot()
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
    out = io.BytesIO()
    fig.savefig(out, format="png")
    plt.close(fig)
    return out.getvalue()
