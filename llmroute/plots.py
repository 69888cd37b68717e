"""Charts for reports: spend per day by provider, and cumulative savings. Needs matplotlib (``llmroute[plot]``)."""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import LLMRouteError


def pyplot():  # type: ignore[no-untyped-def]
    """matplotlib's pyplot, drawing off-screen; missing matplotlib is an error that names the extra to install."""
    try:
        import matplotlib
    except ImportError:
        raise LLMRouteError("plots need matplotlib: pip install 'llmroute[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf", ".html": "html", ".htm": "html"}


def chart_format(path: Path) -> str:
    """The format a chart file's name asks for; anything else is refused before any work is done."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise LLMRouteError(f"--plot {path}: use a file name ending in .png, .svg, .pdf or .html")
    return fmt


def figure_bytes(fig: Any, fmt: str) -> bytes:
    """A matplotlib figure as PNG, SVG or PDF bytes; the figure is closed."""
    plt = pyplot()
    out = io.BytesIO()
    fig.savefig(out, format=fmt)
    plt.close(fig)
    return out.getvalue()


def spend_chart(daily: list[tuple[str, str, float, float]], title: str, fmt: str = "png") -> bytes:
    """Chart bytes in ``fmt`` (png, svg or pdf). ``daily`` rows are (day, provider, cost_usd, baseline_usd)."""
    plt = pyplot()
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
    return figure_bytes(fig, fmt)


def write_chart(path: Path, draw: Callable[[str], bytes], title: str, table_html: str = "") -> None:
    """Write the chart in the format the file name asks for (see ``chart_format``).

    ``draw(fmt)`` renders it as png, svg or pdf; an .html page is self-contained: the chart inline as
    a PNG, then ``table_html``.
    """
    fmt = chart_format(path)
    if fmt != "html":
        path.write_bytes(draw(fmt))
        return
    image = base64.b64encode(draw("png")).decode()
    path.write_text(
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<h1>{html.escape(title)}</h1><img alt='{html.escape(title)}' "
        f"src='data:image/png;base64,{image}'>{table_html}", encoding="utf-8")
