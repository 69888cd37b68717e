"""The dashboard's SVG charts: well-formed, names escaped, bounded whatever the data (no browser needed)."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest

from llmroute.dashboard import charts
from llmroute.dashboard.charts import BandPoint

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = "<script>alert(1)</script>&\"'"


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # well-formed XML, or this raises
    assert root.tag == f"{SVG}svg"
    return root


def texts(root: ET.Element) -> list[str]:
    return [node.text or "" for node in root.iter() if node.tag in (f"{SVG}text", f"{SVG}title")]


def every_chart(name: str, value: float = 1.0) -> list[str]:
    return [
        charts.stacked_bars(["2024-05-01", "2024-05-02"], {name: [value, 2.0], "b": [1, 1]}, title=name),
        charts.line_chart(["2024-05-01", "2024-05-02"], {name: [value, 2.0]}, title=name),
        charts.band_chart([BandPoint(name, value, 0.8, 0.95), BandPoint("d2", 0.92, 0.85, value)], title=name,
                          floor=0.9),
        charts.curve_chart([(0.0, 0.8), (0.5, value), (1.0, 1.0)], (value, 0.88), title=name, x_label=name,
                           y_label=name),
        charts.empty_chart(name, name),
    ]


def test_names_from_users_are_text_never_markup() -> None:
    for svg in every_chart(HOSTILE):
        root = parse(svg)
        assert "<script" not in svg and not list(root.iter(f"{SVG}script"))
        assert any(HOSTILE in text for text in texts(root)), svg[:200]
        assert "style=" not in svg and "<style" not in svg  # presentation attributes only: the CSP holds


def test_long_names_are_cut_and_sizes_clamped() -> None:
    long = "x" * 5000
    for svg in every_chart(long):
        assert all(len(text) <= charts.MAX_TITLE_CHARS for text in texts(parse(svg)))
    huge = parse(charts.line_chart(["a"], {"s": [1.0]}, title="t", width=10**9, height=-5))
    assert int(huge.get("width")) == charts.WIDTH_RANGE[1] and int(huge.get("height")) == charts.HEIGHT_RANGE[0]


def test_series_and_points_are_bounded() -> None:
    days = [f"d{i}" for i in range(10_000)]
    series = {f"provider-{i}": [1.0] * len(days) for i in range(50)}
    root = parse(charts.stacked_bars(days, series, title="many"))
    legend = [t for t in texts(root) if t.startswith("provider-") or t == "other"]
    assert len(legend) == charts.MAX_SERIES and "other" in legend
    assert len(list(root.iter(f"{SVG}rect"))) <= charts.MAX_POINTS * charts.MAX_SERIES + charts.MAX_SERIES + 1
    line = parse(charts.line_chart(days, {"s": [float(i) for i in range(len(days))]}, title="long"))
    points = next(line.iter(f"{SVG}polyline")).get("points", "").split()
    assert len(points) == charts.MAX_POINTS
    assert points[-1].startswith(f"{line_x_end(line)}")  # the latest points are the ones kept


def line_x_end(root: ET.Element) -> str:
    return f"{int(root.get('width')) - 28:.1f}"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, None, "text"])
def test_values_that_are_not_numbers_draw_as_zero(bad: object) -> None:
    for svg in every_chart("p", bad):  # type: ignore[arg-type]
        assert "nan" not in svg.lower() and "inf" not in svg.lower()
        parse(svg)


def test_nothing_to_draw_says_so() -> None:
    assert "no spend in this period" in charts.stacked_bars([], {}, title="t")
    assert "no data in this period" in charts.line_chart([], {"s": [1.0]}, title="t")
    assert "nothing measured yet" in charts.band_chart([], title="t")
    assert "nothing measured yet" in charts.curve_chart([], None, title="t")


def test_the_operating_point_and_the_floor_are_drawn() -> None:
    root = parse(charts.curve_chart([(0.0, 0.8), (1.0, 1.0)], (0.5, 0.9), title="c"))
    assert any(c.get("r") == "7" for c in root.iter(f"{SVG}circle"))
    assert "operating point now" in texts(root)
    band = parse(charts.band_chart([BandPoint("a", 0.9, 0.8, 0.95), BandPoint("b", 0.9, 0.8, 0.95)], title="b",
                                   floor=0.85))
    assert list(band.iter(f"{SVG}polygon")) and "target 85%" in texts(band)


@pytest.mark.parametrize(("value", "unit", "shown"), [
    (0, "$", "$0"), (0.00015, "$", "$0.00015"), (2.5, "$", "$2.5"), (1500, "$", "$1.5k"), (2e6, "", "2M"),
    (0.85, "%", "85%"), (-3, "$", "-$3"),
])
def test_axis_labels(value: float, unit: str, shown: str) -> None:
    assert charts.format_value(value, unit) == shown


def test_ticks_cover_the_range_with_round_steps() -> None:
    for low, high in ((0, 1), (0, 0.000017), (0.72, 0.83), (0, 12345), (5, 5)):
        ticks = charts.nice_ticks(low, high)
        assert ticks[0] <= low and ticks[-1] >= high and 2 <= len(ticks) <= 12
