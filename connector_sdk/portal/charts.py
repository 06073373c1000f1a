"""Daily spend as a stacked bar chart, drawn on the server as inline SVG (no script, nothing fetched)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from html import escape

from markupsafe import Markup

# Dark and light tones take turns, so each colour and the next differ by at least 3:1 in contrast (WCAG's figure for
# parts of a graphic): series stack in palette order, so neighbouring segments are neighbouring colours.
PALETTE = (
    "#3730a3",
    "#38bdf8",
    "#9a3412",
    "#4ade80",
    "#6b21a8",
    "#fbbf24",
    "#115e59",
    "#f9a8d4",
    "#1e3a8a",
    "#fb923c",
)


def color_for(index: int) -> str:
    """The palette colour of the ``index``-th series; the legend and the key table use the same one."""
    return PALETTE[index % len(PALETTE)]


def colors_for(labels: Iterable[str]) -> dict[str, str]:
    """A colour per label from its place among every label the connection has ever had (sorted), so a key keeps its
    colour whichever period is shown."""
    return {label: color_for(i) for i, label in enumerate(sorted(set(labels)))}


def contrast(first: str, second: str) -> float:
    """WCAG 2 contrast ratio of two ``#rrggbb`` colours (1 to 21)."""

    def luminance(color: str) -> float:
        channels = [int(color.lstrip("#")[i : i + 2], 16) / 255 for i in (0, 2, 4)]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    low, high = sorted((luminance(first), luminance(second)))
    return (high + 0.05) / (low + 0.05)


@dataclass(frozen=True)
class Series:
    label: str
    color: str
    values: dict[date, Decimal]


STEPS = (Decimal(1), Decimal(2), Decimal("2.5"), Decimal(5))
GRIDLINES = range(3, 9)


def nice_axis(tallest: Decimal) -> tuple[Decimal, int]:
    """The top of the y-axis and its number of gridline steps: each step 1, 2, 2.5 or 5 x 10^k, so every label is a
    round number, and the top the lowest such value at or above ``tallest`` (at most 25% above it)."""
    if tallest <= 0:
        return Decimal(4), 4
    best: tuple[Decimal, int] | None = None
    for exponent in range(tallest.adjusted() - 2, tallest.adjusted() + 2):
        for step in STEPS:
            size = step * Decimal(10) ** exponent
            for lines in GRIDLINES:
                top = size * lines
                if top >= tallest and (best is None or top < best[0]):
                    best = (top, lines)
    assert best is not None, "some step reaches any positive value"
    return best[0].normalize(), best[1]


def axis_label(value: Decimal, symbol: str) -> str:
    """A gridline's amount with as many places as it has (cents at least, at most four), so steps of half a cent
    or $2.50 never print two gridlines alike."""
    if value >= 1000:
        return f"{symbol}{value / 1000:,.1f}k".replace(".0k", "k")
    if value == value.to_integral_value():
        return f"{symbol}{value:,.0f}"
    exponent = value.normalize().as_tuple().exponent
    places = min(4, max(2, -exponent if isinstance(exponent, int) else 2))
    return f"{symbol}{value:,.{places}f}"


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
    ceiling, steps = nice_axis(max(totals, default=Decimal(0)))
    # One tab stop for the whole chart (its values are in the table after it), not one per day.
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" preserveAspectRatio="xMidYMid meet" '
        f'tabindex="0" aria-label="Daily spend, stacked by API key; the table below lists each day" '
        f'aria-describedby="chart-values">'
    ]
    for i in range(steps + 1):
        value = ceiling * i / steps
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
            parts.append(f'<a href="{escape(link(day))}" tabindex="-1">')
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
                f'<rect class="segment" x="{x:.1f}" y="{base:.1f}" width="{bar_w:.1f}" height="{max(h, 0.5):.1f}" '
                f'fill="{s.color}"/>'
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


def values_table(
    days: Sequence[date],
    series: Sequence[Series],
    *,
    money: Callable[[Decimal], str],
    link: Callable[[date], str] | None = None,
) -> Markup:
    """The chart's figures as a table, for the keyboard and screen readers: a row per day, a column per series."""
    head = "".join(f'<th scope="col" class="num">{escape(s.label)}</th>' for s in series)
    parts = [
        '<details class="chart-values" id="chart-values"><summary>The chart as a table</summary>'
        '<div class="table-scroll"><table class="table"><thead><tr><th scope="col">Day</th>'
        f'{head}<th scope="col" class="num">Total</th></tr></thead><tbody>'
    ]
    for day in days:
        values = [s.values.get(day, Decimal(0)) for s in series]
        name = escape(day.strftime("%a %d %b %Y"))
        cell = f'<a href="{escape(link(day))}">{name}</a>' if link is not None else name
        cells = "".join(f'<td class="num">{escape(money(v))}</td>' for v in values)
        parts.append(f'<tr data-day="{day.isoformat()}"><th scope="row">{cell}</th>{cells}')
        parts.append(f'<td class="num">{escape(money(sum(values, Decimal(0))))}</td></tr>')
    parts.append("</tbody></table></div></details>")
    return Markup("".join(parts))


def sparkline_text(days: Sequence[date], values: Sequence[Decimal], *, money: Callable[[Decimal], str]) -> str:
    """The words a sparkline stands for: the span, the total, the busiest day and the last one; a screen reader
    hears this instead of a line it cannot see."""
    if not days:
        return "No days to show."
    span = f"{days[0].strftime('%d %b')} to {days[-1].strftime('%d %b %Y')}"
    total = sum(values, Decimal(0))
    if not any(values):
        return f"No spend from {span}."
    peak = max(range(len(values)), key=lambda i: (values[i], i))
    return (
        f"{money(total)} from {span}; highest {money(values[peak])} on {days[peak].strftime('%d %b')}; "
        f"{money(values[-1])} on the last day."
    )


def sparkline(
    days: Sequence[date],
    values: Sequence[Decimal],
    *,
    money: Callable[[Decimal], str],
    width: int = 120,
    height: int = 28,
) -> Markup:
    """A day-by-day line of one key's spend, small enough for a table cell: an image with its figures as its name
    (``role="img"`` and ``aria-label``) and as a tooltip, the last day marked with a dot."""
    if len(days) != len(values):
        raise ValueError("a sparkline needs one value per day")
    words = escape(sparkline_text(days, values, money=money))
    pad = 3.0
    tallest = max(values, default=Decimal(0))
    step = (width - 2 * pad) / max(len(values) - 1, 1)

    def y(value: Decimal) -> float:
        # A credit (a negative day) sits on the baseline: the line shows spend, the words say the figures.
        share = max(float(value / tallest), 0.0) if tallest > 0 else 0.0
        return height - pad - share * (height - 2 * pad)

    points = [(pad + step * i, y(v)) for i, v in enumerate(values)]
    line = " ".join(f"{x:.1f},{py:.1f}" for x, py in points)
    parts = [
        f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{words}"><title>{words}</title>'
    ]
    if points:
        base = height - pad
        area = f"{points[0][0]:.1f},{base:.1f} {line} {points[-1][0]:.1f},{base:.1f}"
        parts.append(f'<polygon class="spark-area" points="{area}"/>')
        parts.append(f'<polyline class="spark-line" points="{line}"/>')
        last_x, last_y = points[-1]
        parts.append(f'<circle class="spark-dot" cx="{last_x:.1f}" cy="{last_y:.1f}" r="2.2"/>')
    parts.append("</svg>")
    return Markup("".join(parts))
