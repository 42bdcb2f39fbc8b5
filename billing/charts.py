"""Server-rendered SVG charts for the admin dashboard (no chart library, nothing loaded
from the internet). Labels are escaped: they can hold user names."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe


def bar_chart_svg(
    points: list[tuple[str, int | Decimal]],
    *,
    title: str,
    width: int = 720,
    height: int = 240,
    value_format: Callable[[int | Decimal], str] = "{:,}".format,
    color: str = "#3553d6",
) -> SafeString:
    """Vertical bars, one per (label, value), with the value on hover and the maximum shown.

    Values may be ints (tokens) or Decimals (money); only the geometry uses floats."""
    left, bottom, top = 48, 40, 24
    plot_w, plot_h = width - left - 8, height - bottom - top
    highest = max((value for _, value in points), default=0)
    peak = highest or 1
    slot = plot_w / max(len(points), 1)
    bar_w = max(2.0, slot * 0.7)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="100%" role="img" aria-label="{escape(title)}" class="usage-chart">',
        f"<title>{escape(title)}</title>",
        f'<text x="{left}" y="16" font-size="12">{escape(title)} '
        f"(max {escape(value_format(highest))})</text>",
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 8}" y2="{top + plot_h}" '
        'stroke="#888"/>',
    ]
    step = max(1, len(points) // 10)
    for index, (label, value) in enumerate(points):
        bar_h = plot_h * float(value) / float(peak)
        x = left + index * slot + (slot - bar_w) / 2
        y = top + plot_h - bar_h
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" '
            f'height="{bar_h:.1f}" fill="{color}"><title>{escape(label)}: '
            f"{escape(value_format(value))}</title></rect>"
        )
        if index % step == 0:
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{height - bottom + 14}" font-size="10" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every interpolated text is escaped above
