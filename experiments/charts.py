"""A line chart as inline SVG, drawn on the server: the admin needs no JavaScript and no CDN."""

from __future__ import annotations

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

COLOURS = ["#6c757d", "#0d6efd", "#fd7e14", "#198754", "#6f42c1", "#dc3545", "#20c997", "#d63384"]
WIDTH, HEIGHT, PAD = 640, 220, 40


def line_chart(days: list[str], series: dict[str, list[float | None]], *, title: str) -> SafeString:
    """One polyline per series over the days; gaps (None) are skipped. Values are labelled at the axis ends."""
    values = [v for points in series.values() for v in points if v is not None]
    if not days or not values:
        return format_html("<p>{}: no data yet</p>", title)
    low, high = min(values), max(values)
    if high == low:
        low, high = low - 0.5 * (abs(low) or 1), high + 0.5 * (abs(high) or 1)

    def x(i: int) -> float:
        return PAD + (WIDTH - 2 * PAD) * (i / max(len(days) - 1, 1))

    def y(v: float) -> float:
        return HEIGHT - PAD - (HEIGHT - 2 * PAD) * (v - low) / (high - low)

    lines, legend = [], []
    for n, (name, points) in enumerate(series.items()):
        colour = COLOURS[n % len(COLOURS)]
        coords = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(points) if v is not None)
        lines.append((colour, coords))
        legend.append((PAD + 120 * n, HEIGHT - 16, colour, PAD + 120 * n + 14, HEIGHT - 7, name))
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="{t}"'
        ' style="background:#fff;border:1px solid #ddd">'
        '<text x="{p}" y="16" font-size="12">{t}</text>'
        '<line x1="{p}" y1="{b}" x2="{r}" y2="{b}" stroke="#999"/>'
        '<line x1="{p}" y1="{p}" x2="{p}" y2="{b}" stroke="#999"/>'
        '<text x="2" y="{ty}" font-size="10">{hi}</text><text x="2" y="{b}" font-size="10">{lo}</text>'
        '<text x="{p}" y="{dy}" font-size="10">{first}</text>'
        '<text x="{r}" y="{dy}" font-size="10" text-anchor="end">{last}</text>{lines}{legend}</svg>',
        w=WIDTH, h=HEIGHT, t=title, p=PAD, b=HEIGHT - PAD, r=WIDTH - PAD, ty=PAD + 4, dy=HEIGHT - PAD + 14,
        hi=f"{high:.4g}", lo=f"{low:.4g}", first=days[0], last=days[-1],
        lines=format_html_join(
            "", '<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>', lines
        ),
        legend=format_html_join(
            "", '<rect x="{}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}" font-size="11">{}</text>',
            legend,
        ),
    )  # fmt: skip
