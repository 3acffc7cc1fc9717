"""Charts for the console, drawn in the browser by the vendored Chart.js (static/console/vendor, no CDN).

The server renders a placeholder and the chart's data as a JSON script block (`json_script`: data, never code, so
the pages need no inline JavaScript); static/console/charts.js finds every placeholder and draws it with a time
axis, labelled axes, a legend below the plot, hover values and, where there is nothing to draw, the reason.

    line(series, y_label=...)        numbers over time, one line per named series
    bars(labels, series, ...)        grouped bars over labelled bins or categories
    points(labels, series, ...)      values over labelled steps (a metric across versions), y fitted to the values
    sparkline(points)                a small line without axes (the home page's traffic)
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from django.utils.html import format_html, json_script
from django.utils.safestring import SafeString

_ids = itertools.count(1)

Series = Mapping[str, Iterable[tuple[datetime, float | None]]]


def _epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _render(spec: dict[str, Any], *, height: int, css_class: str = "mw-chart") -> SafeString:
    element_id = f"mw-chart-{next(_ids)}"
    return format_html(
        '<div class="{}" data-chart="{}" data-height="{}"><canvas role="img" aria-label="{}"></canvas></div>{}',
        css_class,
        element_id,
        height,
        spec.get("title") or spec.get("y_label") or "chart",
        json_script(spec, element_id),
    )


def line(
    series: Series,
    *,
    y_label: str,
    title: str = "",
    empty: str = "No data yet.",
    y_min: float | None = None,
    y_max: float | None = None,
    per_day: bool = False,
    height: int = 240,
) -> SafeString:
    """One line per named series over time. `empty` is what the chart says when no series has a point;
    `per_day` labels the axis and the hover values by day (points are days, not moments)."""
    datasets = [
        {"label": name, "points": [[_epoch_ms(t), v] for t, v in points if v is not None]}
        for name, points in series.items()
    ]
    spec = {
        "kind": "line",
        "title": title,
        "y_label": y_label,
        "y_min": y_min,
        "y_max": y_max,
        "per_day": per_day,
        "datasets": [d for d in datasets if d["points"]],
        "empty": empty,
    }
    return _render(spec, height=height)


def bars(
    labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    y_label: str,
    x_label: str = "",
    title: str = "",
    empty: str = "No data yet.",
    height: int = 200,
) -> SafeString:
    """Grouped bars: one bar per series over each labelled bin or category."""
    spec = {
        "kind": "bars",
        "title": title,
        "y_label": y_label,
        "x_label": x_label,
        "labels": list(labels),
        "datasets": [{"label": name, "values": list(values)} for name, values in series.items() if len(values)],
        "empty": empty,
    }
    return _render(spec, height=height)


def points(
    labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    y_label: str,
    x_label: str = "",
    empty: str = "No data yet.",
    height: int = 180,
) -> SafeString:
    """Values over labelled steps (a metric across versions) as points joined by a line, the y axis fitted to the
    values (not from zero), so that 0.979 against 0.986 is visible."""
    spec = {
        "kind": "points",
        "title": "",
        "y_label": y_label,
        "x_label": x_label,
        "labels": list(labels),
        "datasets": [{"label": name, "values": list(values)} for name, values in series.items() if len(values)],
        "empty": empty,
    }
    return _render(spec, height=height)


def sparkline(points: Iterable[tuple[datetime, float]], *, label: str, empty: str = "no traffic") -> SafeString:
    """A small line without axes; hovering shows the time and value."""
    spec = {
        "kind": "spark",
        "title": label,
        "y_label": label,
        "datasets": [{"label": label, "points": [[_epoch_ms(t), v] for t, v in points]}],
        "empty": empty,
    }
    if not any(v for _, v in spec["datasets"][0]["points"]):
        spec["datasets"] = []
    return _render(spec, height=36, css_class="mw-chart mw-spark")


def histogram(histogram: Mapping[str, Any]) -> SafeString:
    """A drift report's histogram: reference and current shares per labelled bin (numeric) or category."""
    reference, current = list(histogram.get("reference") or []), list(histogram.get("current") or [])
    if histogram.get("categories"):
        labels = [str(c) for c in histogram["categories"]]
        x_label = "category"
    else:
        edges = list(histogram.get("edges") or [])
        labels = [f"{low:.3g} – {high:.3g}" for low, high in itertools.pairwise(edges)] or [
            f"bin {i + 1}" for i in range(len(reference))
        ]
        x_label = "value bin"
    labels = labels[: len(reference)] + [f"bin {i + 1}" for i in range(len(labels), len(reference))]
    return bars(
        labels,
        {"reference": reference, "current": current} if reference else {},
        y_label="share of rows",
        x_label=x_label,
        empty="No histogram for this feature.",
        height=170,
    )
