"""Charts for reports: spend per day by provider, and cumulative savings. Needs matplotlib (``llmroute[plot]``)."""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict
from pathlib import Path

from .errors import LLMRouteError


def _pyplot():  # type: ignore[no-untyped-def]
    try:
        import matplotlib
    except ImportError:
        raise LLMRouteError("plots need matplotlib: pip install 'llmroute[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def spend_chart(daily: list[tuple[str, str, float, float]], title: str) -> bytes:
    """PNG bytes. ``daily`` rows are (day, provider, cost_usd, baseline_usd)."""
    plt = _pyplot()
    days = sorted({d for d, *_ in daily})
    providers = sorted({p for _, p, *_ in daily})
    cost: dict[tuple[str, str], float] = defaultdict(float)
    saved_per_day: dict[str, float] = defaultdict(float)
    for day, provider, usd, baseline_usd in daily:
        cost[(day, provider)] += usd
        saved_per_day[day] += baseline_usd - usd
    fig, ax = plt.subplots(figsize=(10, 5), dpi=100)
    x = range(len(days))
    bottom = [0.0] * len(days)
    for provider in providers:
        heights = [cost[(d, provider)] for d in days]
        ax.bar(x, heights, bottom=bottom, label=f"spend: {provider}")
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set_ylabel("spend per day (US$)")
    ax.set_xticks(list(x), days, rotation=45, ha="right", fontsize=8)
    running, cumulative = 0.0, []
    for day in days:
        running += saved_per_day[day]
        cumulative.append(running)
    ax2 = ax.twinx()
    ax2.plot(list(x), cumulative, color="black", marker="o", label="cumulative savings")
    ax2.set_ylabel("cumulative savings vs baseline (US$)")
    ax2.set_ylim(bottom=min(0.0, *cumulative), top=max(0.0, *cumulative) * 1.1 or 1.0)
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], loc="upper left", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    plt.close(fig)
    return out.getvalue()


def write_chart(path: Path, png: bytes, title: str, table_html: str = "") -> None:
    """A .png file, or a self-contained .html page with the chart inline and the report table."""
    suffix = path.suffix.lower()
    if suffix == ".png":
        path.write_bytes(png)
    elif suffix in (".html", ".htm"):
        image = base64.b64encode(png).decode()
        path.write_text(
            f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<h1>{html.escape(title)}</h1><img alt='spend per day and cumulative savings' "
            f"src='data:image/png;base64,{image}'>{table_html}", encoding="utf-8")
    else:
        raise LLMRouteError(f"--plot {path}: use a .png or .html file name")
