"""Small inline SVG charts for the admin: no JavaScript, no CDN. Every label goes through escaping."""

from __future__ import annotations

from datetime import datetime

from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

REFERENCE_COLOUR, CURRENT_COLOUR = "#0d6efd", "#fd7e14"
LINE_COLOURS = ("#0d6efd", "#fd7e14", "#198754", "#6f42c1", "#dc3545", "#20c997")


def histogram_svg(histogram: dict, width: int = 260, height: int = 80) -> SafeString:
    """Reference (blue) and current (orange) shares side by side per bin or category."""
    reference, current = histogram.get("reference") or [], histogram.get("current") or []
    if not reference:
        return mark_safe("")  # noqa: S308 (a constant)
    top = max([*reference, *current, 1e-9])
    slot = width / len(reference)
    bar = max(slot / 2 - 0.5, 0.5)
    parts = []
    labels = histogram.get("categories") or []
    for i, (r, c) in enumerate(zip(reference, current, strict=True)):
        x = i * slot
        title = escape(str(labels[i])) if i < len(labels) else f"bin {i + 1}"
        for offset, share, colour in ((0, r, REFERENCE_COLOUR), (bar, c, CURRENT_COLOUR)):
            h = share / top * (height - 2)
            parts.append(
                f'<rect x="{x + offset:.1f}" y="{height - h:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{colour}">'
                f"<title>{title}: {share:.3f}</title></rect>"
            )
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img"'
        f' aria-label="reference vs current">{"".join(parts)}</svg>'
    )
    return mark_safe(svg)  # noqa: S308 (numbers and escaped labels only)


def lines_svg(
    series: dict[str, list[tuple[datetime, float]]], width: int = 640, height: int = 160, y_max: float | None = None
) -> SafeString:
    """One polyline per named series over time, with a legend; y from 0 to y_max (or the data's maximum)."""
    points = [p for values in series.values() for p in values]
    if not points:
        return format_html("<p>{}</p>", "no data yet")
    t0 = min(t for t, _ in points).timestamp()
    t1 = max(t for t, _ in points).timestamp()
    top = y_max if y_max is not None else max(max(v for _, v in points), 1e-9)
    span = max(t1 - t0, 1.0)
    pad = 24
    parts = [
        f'<line x1="{pad}" y1="{height - pad}" x2="{width}" y2="{height - pad}" stroke="#999"/>',
        f'<text x="0" y="12" font-size="10">{top:.3g}</text>',
        f'<text x="0" y="{height - pad}" font-size="10">0</text>',
    ]
    for index, (name, values) in enumerate(series.items()):
        colour = LINE_COLOURS[index % len(LINE_COLOURS)]
        coords = " ".join(
            f"{pad + (t.timestamp() - t0) / span * (width - pad - 4):.1f},"
            f"{height - pad - min(v / top, 1.0) * (height - pad - 14):.1f}"
            for t, v in values
        )
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{coords}"/>')
        for point in coords.split():
            x, y = point.split(",")
            parts.append(f'<circle cx="{x}" cy="{y}" r="2.5" fill="{colour}"/>')
        parts.append(
            f'<text x="{pad + 90 * index}" y="{height - 6}" font-size="11" fill="{colour}">{escape(name)}</text>'
        )
    svg = f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">{"".join(parts)}</svg>'
    return mark_safe(svg)  # noqa: S308 (numbers and escaped labels only)
