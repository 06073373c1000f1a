"""Daily spend as a stacked bar chart, drawn on the server as inline SVG (no script, nothing fetched)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from html import escape

from markupsafe import Markup

PALETTE = (
    "#4f46e5",
    "#0ea5e9",
    "#10b981",
    "#f59e0b",
    "#ef4444",
    "#8b5cf6",
    "#14b8a6",
    "#f97316",
    "#64748b",
    "#ec4899",
)


def color_for(index: int) -> str:
    """The palette colour of the ``index``-th series; the legend and the key table use the same one."""
    return PALETTE[index % len(PALETTE)]


@dataclass(frozen=True)
class Series:
    label: str
    color: str
    values: dict[date, Decimal]


def nice_ceiling(value: Decimal) -> Decimal:
    """The smallest of 1, 2, 2.5, 5 x 10^k at or above ``value``: round numbers for the axis."""
    if value <= 0:
        return Decimal(1)
    exponent = value.adjusted()
    for _ in range(2):
        scale = Decimal(10) ** exponent
        for step in (Decimal(1), Decimal(2), Decimal("2.5"), Decimal(5), Decimal(10)):
            if step * scale >= value:
                return step * scale
        exponent += 1
    return value


def axis_label(value: Decimal, symbol: str) -> str:
    if value >= 1000:
        return f"{symbol}{value / 1000:,.1f}k".replace(".0k", "k")
    if value >= 10 or value == value.to_integral_value():
        return f"{symbol}{value:,.0f}"
    return f"{symbol}{value:,.2f}"


def stacked_bars(
    days: Sequence[date],
    series: Sequence[Series],
    *,
    money: Callable[[Decimal], str],
    symbol: str = "$",
    link: Callable[[date], str] | None = None,
    width: int = 960,
    height: int = 260,
) -> Markup:
    """An SVG of one bar per day, its segments the series stacked in order, each with a tooltip."""
    left, right, top, bottom = 56, 8, 12, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [sum((s.values.get(d, Decimal(0)) for s in series), Decimal(0)) for d in days]
    # Four gridline steps of a round size, so every axis label is a round number.
    ceiling = nice_ceiling(max(totals, default=Decimal(0)) / 4) * 4
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" preserveAspectRatio="xMidYMid meet" '
        f'aria-label="Daily spend, stacked by API key">'
    ]
    for i in range(5):
        value = ceiling * i / 4
        y = top + plot_h - float(value / ceiling) * plot_h
        parts.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="axis" x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">')
        parts.append(f"{escape(axis_label(value, symbol))}</text>")
    slot = plot_w / max(len(days), 1)
    bar_w = max(2.0, min(slot * 0.7, 40.0))
    label_every = max(1, round(len(days) / 10))
    for index, (day, total) in enumerate(zip(days, totals, strict=True)):
        x = left + slot * index + (slot - bar_w) / 2
        if link is not None:
            parts.append(f'<a href="{escape(link(day))}">')
        parts.append(f"<g><title>{escape(day.strftime('%a %d %b %Y'))}: {escape(money(total))}")
        for s in series:
            if s.values.get(day):
                parts.append(f"\n{escape(s.label)}: {escape(money(s.values[day]))}")
        parts.append("</title>")
        parts.append(
            f'<rect class="hit" x="{left + slot * index:.1f}" y="{top}" width="{slot:.1f}" height="{plot_h}"/>'
        )
        base = float(top + plot_h)
        for s in series:
            value = s.values.get(day, Decimal(0))
            if value <= 0:
                continue
            h = float(value / ceiling) * plot_h
            base -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{base:.1f}" width="{bar_w:.1f}" height="{max(h, 0.5):.1f}" fill="{s.color}"/>'
            )
        parts.append("</g>")
        if link is not None:
            parts.append("</a>")
        if index % label_every == 0:
            cx = left + slot * index + slot / 2
            parts.append(f'<text class="axis" x="{cx:.1f}" y="{height - 8}" text-anchor="middle">')
            parts.append(f"{escape(day.strftime('%d %b'))}</text>")
    parts.append(f'<line class="baseline" x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}"/>')
    parts.append("</svg>")
    return Markup("".join(parts))
