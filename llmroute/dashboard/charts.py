"""The dashboard's charts as SVG strings, drawn on the server from the same figures the JSON API returns.

Pure functions (data in, SVG text out): no JavaScript chart library to ship, nothing fetched from elsewhere,
and a chart is an <img>, which can run nothing. Every text that reaches the SVG (provider, tag and strategy
names come from users) is escaped, and the drawing is bounded whatever the ledger holds: at most
``MAX_SERIES`` series (the rest summed into "other"), ``MAX_POINTS`` points per series (the latest kept) and a
clamped size. Only presentation attributes are used, no ``style``, so the page's strict CSP holds for charts too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

MAX_SERIES = 8
MAX_POINTS = 120
MAX_LABEL_CHARS = 40
MAX_TITLE_CHARS = 100
WIDTH_RANGE = (240, 1600)
HEIGHT_RANGE = (120, 900)
PALETTE = ("#2563eb", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#06b6d4", "#ec4899", "#84cc16", "#64748b")
INK, GRID, MUTED = "#1f2937", "#e5e7eb", "#6b7280"
FONT = "system-ui, -apple-system, Segoe UI, Roboto, sans-serif"
_PAD_L, _PAD_R, _PAD_T, _PAD_B = 68, 28, 30, 40
_LEGEND_ROW = 18
_MAX_BAR = 48
_MARKED_POINTS = 60


@dataclass(frozen=True, slots=True)
class BandPoint:
    """One point of a band chart: a value and its interval (low <= value <= high), e.g. retained quality."""

    label: str
    value: float
    low: float
    high: float


def _text(value: object, limit: int = MAX_LABEL_CHARS) -> str:
    """Escaped element text, cut so that no name can stretch a chart."""
    text = str(value)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return escape(text)


def _finite(value: object) -> float:
    """A drawable number: anything not a finite number counts as 0 rather than breaking the drawing."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) else 0.0


def _size(width: int, height: int) -> tuple[int, int]:
    return (min(max(int(width), WIDTH_RANGE[0]), WIDTH_RANGE[1]),
            min(max(int(height), HEIGHT_RANGE[0]), HEIGHT_RANGE[1]))


def format_value(value: float, unit: str) -> str:
    """A short axis label: ``$1.2k``, ``85%``, ``1.5M``, ``$0.00012``."""
    if unit == "%":
        return f"{value * 100:.0f}%" if abs(value) <= 10 else f"{value:.0f}%"
    sign, size = ("-" if value < 0 else ""), abs(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if size >= limit:
            body = f"{size / limit:.1f}".rstrip("0").rstrip(".") + suffix
            break
    else:
        if size >= 10:
            body = f"{size:.0f}"
        else:  # ticks are round numbers: as many decimals as the smallest needs, at most 8
            body = f"{size:.8f}".rstrip("0").rstrip(".") if size else "0"
    return f"{sign}{unit}{body}" if unit == "$" else f"{sign}{body}{unit}"


def nice_ticks(low: float, high: float, count: int = 4) -> list[float]:
    """Round tick values covering [low, high] (1, 2 or 5 times a power of ten apart)."""
    if not high > low:
        high = low + 1.0
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks, value = [], first
    while value < high + step * 0.999 and len(ticks) < 12:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _limit_series(series: Mapping[str, Sequence[float]]) -> dict[str, list[float]]:
    """At most MAX_SERIES series in their given order; past that the largest are kept and the rest summed
    into "other"."""
    if len(series) <= MAX_SERIES:
        return {str(name): [_finite(v) for v in values] for name, values in series.items()}
    ranked = sorted(series.items(), key=lambda item: -sum(abs(_finite(v)) for v in item[1]))
    kept = {str(name): [_finite(v) for v in values] for name, values in ranked[: MAX_SERIES - 1]}
    rest = ranked[MAX_SERIES - 1:]
    if rest:
        length = max(len(values) for _, values in rest)
        kept["other"] = [sum(_finite(values[i]) for _, values in rest if i < len(values)) for i in range(length)]
    return kept


class _Canvas:
    """Axes, grid and legend shared by every chart: a y scale over [y_low, y_high] and x slots or an x scale."""

    def __init__(self, title: str, width: int, height: int, legend: Sequence[str] = ()) -> None:
        self.width, self.height = _size(width, height)
        self.legend = list(legend)
        self.title = title
        self.left, self.top = _PAD_L, _PAD_T
        self.right = self.width - _PAD_R
        self.bottom = self.height - _PAD_B - (_LEGEND_ROW if self.legend else 0)
        self.parts: list[str] = []

    def y_axis(self, low: float, high: float, unit: str) -> None:
        ticks = nice_ticks(low, high)
        self.y_low, self.y_high = ticks[0], ticks[-1]
        for tick in ticks:
            y = self.y(tick)
            self.parts.append(f'<line x1="{self.left}" x2="{self.right}" y1="{y:.1f}" y2="{y:.1f}" '
                              f'stroke="{GRID}" stroke-width="1"/>')
            self.parts.append(f'<text x="{self.left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" '
                              f'fill="{MUTED}">{_text(format_value(tick, unit))}</text>')

    def y(self, value: float) -> float:
        span = self.y_high - self.y_low or 1.0
        return self.bottom - (value - self.y_low) / span * (self.bottom - self.top)

    def x_labels(self, labels: Sequence[str], xs: Sequence[float]) -> None:
        """Labels under the x axis, thinned so they never overlap (about one per 70 px)."""
        if not labels:
            return
        every = max(1, math.ceil(len(labels) / max(1, (self.right - self.left) // 70)))
        for index in range(0, len(labels), every):
            self.parts.append(f'<text x="{xs[index]:.1f}" y="{self.bottom + 16}" text-anchor="middle" '
                              f'font-size="11" fill="{MUTED}">{_text(labels[index])}</text>')

    def svg(self) -> str:
        legend = []
        x = self.left
        for index, name in enumerate(self.legend):
            label = _text(name)
            legend.append(f'<rect x="{x}" y="{self.height - 16}" width="10" height="10" '
                          f'fill="{PALETTE[index % len(PALETTE)]}"/>'
                          f'<text x="{x + 14}" y="{self.height - 7}" font-size="11" fill="{INK}">{label}</text>')
            x += 24 + 7 * len(label)
        title = _text(self.title, MAX_TITLE_CHARS)
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" height="{self.height}" '
                f'viewBox="0 0 {self.width} {self.height}" role="img" aria-label={quoteattr(title)} '
                f'font-family={quoteattr(FONT)}><title>{title}</title>'
                f'<rect width="100%" height="100%" fill="#ffffff"/>'
                f'<text x="{self.left}" y="18" font-size="13" font-weight="600" fill="{INK}">{title}</text>'
                + "".join(self.parts) + "".join(legend) + "</svg>")


def _spread(canvas: _Canvas, count: int) -> list[float]:
    """x positions of ``count`` points across the plot (one point in the middle)."""
    if count == 1:
        return [(canvas.left + canvas.right) / 2]
    step = (canvas.right - canvas.left) / max(1, count - 1)
    return [canvas.left + i * step for i in range(count)]


def empty_chart(title: str, message: str, *, width: int = 640, height: int = 220) -> str:
    """A chart frame that says why there is nothing to draw (no data yet, nothing measured)."""
    canvas = _Canvas(title, width, height)
    canvas.parts.append(f'<text x="{canvas.width / 2:.0f}" y="{canvas.height / 2:.0f}" text-anchor="middle" '
                        f'font-size="13" fill="{MUTED}">{_text(message)}</text>')
    return canvas.svg()


def line_chart(labels: Sequence[str], series: Mapping[str, Sequence[float]], *, title: str, unit: str = "$",
               width: int = 640, height: int = 240) -> str:
    """One line per series over shared x labels (e.g. cumulative savings per day)."""
    labels = [str(label) for label in labels][-MAX_POINTS:]
    lines = {name: values[-len(labels):] for name, values in _limit_series(series).items()} if labels else {}
    if not any(lines.values()):
        return empty_chart(title, "no data in this period", width=width, height=height)
    canvas = _Canvas(title, width, height, list(lines))
    values = [v for vs in lines.values() for v in vs]
    canvas.y_axis(min(0.0, *values), max(values), unit)
    xs = _spread(canvas, len(labels))
    for index, points in enumerate(lines.values()):
        colour = PALETTE[index % len(PALETTE)]
        path = " ".join(f"{xs[i]:.1f},{canvas.y(v):.1f}" for i, v in enumerate(points))
        canvas.parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" '
                            f'stroke-width="2" stroke-linejoin="round"/>')
        if len(points) <= _MARKED_POINTS:  # a line of one point draws nothing: mark each point
            canvas.parts.extend(f'<circle cx="{xs[i]:.1f}" cy="{canvas.y(v):.1f}" r="3" fill="{colour}"/>'
                                for i, v in enumerate(points))
    canvas.x_labels(labels, xs)
    return canvas.svg()


def stacked_bars(labels: Sequence[str], series: Mapping[str, Sequence[float]], *, title: str, unit: str = "$",
                 width: int = 640, height: int = 240) -> str:
    """One bar per label (a day), stacked by series (a provider)."""
    labels = [str(label) for label in labels][-MAX_POINTS:]
    stacks = {name: (values[-len(labels):] + [0.0] * len(labels))[: len(labels)]
              for name, values in _limit_series(series).items()} if labels else {}
    totals = [sum(max(0.0, values[i]) for values in stacks.values()) for i in range(len(labels))]
    if not any(totals):
        return empty_chart(title, "no spend in this period", width=width, height=height)
    canvas = _Canvas(title, width, height, list(stacks))
    canvas.y_axis(0.0, max(totals), unit)
    slot = (canvas.right - canvas.left) / len(labels)
    bar = min(_MAX_BAR, max(1.0, slot * 0.7))
    xs = [canvas.left + slot * (i + 0.5) for i in range(len(labels))]
    for i, x in enumerate(xs):
        base = 0.0
        for index, values in enumerate(stacks.values()):
            value = max(0.0, values[i])
            if value <= 0:
                continue
            y_top, y_base = canvas.y(base + value), canvas.y(base)
            canvas.parts.append(f'<rect x="{x - bar / 2:.1f}" y="{y_top:.1f}" width="{bar:.1f}" '
                                f'height="{max(0.5, y_base - y_top):.1f}" fill="{PALETTE[index % len(PALETTE)]}"/>')
            base += value
    canvas.x_labels(labels, xs)
    return canvas.svg()


def band_chart(points: Sequence[BandPoint], *, title: str, unit: str = "%", floor: float | None = None,
               width: int = 640, height: int = 240) -> str:
    """A value with its interval as a shaded band (retained quality and its bootstrap interval), with an
    optional dashed floor (the quality target)."""
    points = list(points)[-MAX_POINTS:]
    if not points:
        return empty_chart(title, "nothing measured yet", width=width, height=height)
    values = [(_finite(p.value), _finite(p.low), _finite(p.high)) for p in points]
    canvas = _Canvas(title, width, height)
    bounds = [b for v in values for b in v] + ([_finite(floor)] if floor is not None else [])
    canvas.y_axis(min(bounds), max(bounds), unit)
    xs = _spread(canvas, len(points))
    if len(points) > 1:
        upper = " ".join(f"{x:.1f},{canvas.y(high):.1f}" for x, (_, _, high) in zip(xs, values))
        lower = " ".join(f"{x:.1f},{canvas.y(low):.1f}" for x, (_, low, _) in reversed(list(zip(xs, values))))
        canvas.parts.append(f'<polygon points="{upper} {lower}" fill="{PALETTE[0]}" fill-opacity="0.18"/>')
        line = " ".join(f"{x:.1f},{canvas.y(value):.1f}" for x, (value, _, _) in zip(xs, values))
        canvas.parts.append(f'<polyline points="{line}" fill="none" stroke="{PALETTE[0]}" stroke-width="2"/>')
    for x, (value, low, high) in zip(xs, values):
        canvas.parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{canvas.y(low):.1f}" y2="{canvas.y(high):.1f}" '
                            f'stroke="{PALETTE[0]}" stroke-opacity="0.5"/>'
                            f'<circle cx="{x:.1f}" cy="{canvas.y(value):.1f}" r="3" fill="{PALETTE[0]}"/>')
    if floor is not None:
        y = canvas.y(_finite(floor))
        canvas.parts.append(f'<line x1="{canvas.left}" x2="{canvas.right}" y1="{y:.1f}" y2="{y:.1f}" '
                            f'stroke="{PALETTE[3]}" stroke-dasharray="5 4"/>'
                            f'<text x="{canvas.right}" y="{y - 4:.1f}" text-anchor="end" font-size="11" '
                            f'fill="{PALETTE[3]}">target {_text(format_value(_finite(floor), unit))}</text>')
    canvas.x_labels([p.label for p in points], xs)
    return canvas.svg()


def curve_chart(points: Sequence[tuple[float, float]], operating: tuple[float, float] | None, *, title: str,
                x_label: str = "cost", y_label: str = "retained quality", x_unit: str = "%", y_unit: str = "%",
                width: int = 640, height: int = 260) -> str:
    """A cost/quality curve (x: cost, y: quality, named in the legend), with the current operating point
    marked."""
    curve = sorted((_finite(x), _finite(y)) for x, y in list(points)[:MAX_POINTS])
    if not curve:
        return empty_chart(title, "nothing measured yet", width=width, height=height)
    marked = (_finite(operating[0]), _finite(operating[1])) if operating is not None else None
    canvas = _Canvas(title, width, height, [y_label, "operating point now"] if marked else [y_label])
    ys = [y for _, y in curve] + ([marked[1]] if marked else [])
    canvas.y_axis(min(ys), max(ys), y_unit)
    x_ticks = nice_ticks(min(0.0, *(x for x, _ in curve)), max([x for x, _ in curve] + ([marked[0]] if marked else [])))
    x_low, x_high = x_ticks[0], x_ticks[-1]

    def x_of(value: float) -> float:
        return canvas.left + (value - x_low) / ((x_high - x_low) or 1.0) * (canvas.right - canvas.left)

    path = " ".join(f"{x_of(x):.1f},{canvas.y(y):.1f}" for x, y in curve)
    canvas.parts.append(f'<polyline points="{path}" fill="none" stroke="{PALETTE[0]}" stroke-width="2"/>')
    for x, y in curve:
        canvas.parts.append(f'<circle cx="{x_of(x):.1f}" cy="{canvas.y(y):.1f}" r="2.5" fill="{PALETTE[0]}"/>')
    if marked is not None:
        mx, my = x_of(marked[0]), canvas.y(marked[1])
        canvas.parts.append(f'<circle cx="{mx:.1f}" cy="{my:.1f}" r="7" fill="none" stroke="{PALETTE[1]}" '
                            f'stroke-width="3"/><circle cx="{mx:.1f}" cy="{my:.1f}" r="3" fill="{PALETTE[1]}"/>')
    canvas.x_labels([format_value(t, x_unit) for t in x_ticks], [x_of(t) for t in x_ticks])
    canvas.parts.append(f'<text x="{canvas.right}" y="{canvas.bottom + 30}" text-anchor="end" font-size="11" '
                        f'fill="{MUTED}">{_text(x_label, MAX_TITLE_CHARS)}</text>')
    return canvas.svg()
