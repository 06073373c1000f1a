"""The dashboard chart's arithmetic and colours, as pure functions."""

from __future__ import annotations

import random
from datetime import date, timedelta
from decimal import Decimal

import pytest

from connector_sdk.portal.charts import (
    PALETTE,
    Series,
    axis_label,
    colors_for,
    contrast,
    nice_axis,
    sparkline,
    stacked_bars,
    values_table,
)


@pytest.mark.parametrize(
    ("tallest", "top"),
    [("440", "500"), ("401", "500"), ("99.5", "100"), ("101", "120"), ("0.03", "0.03"), ("7.2", "7.5"), ("1", "1")],
)
def test_the_axis_ends_at_a_round_number_just_above_the_tallest_bar(tallest: str, top: str) -> None:
    assert nice_axis(Decimal(tallest))[0] == Decimal(top)


def test_the_axis_is_never_more_than_a_quarter_above_the_tallest_bar_and_every_label_is_round() -> None:
    chance = random.Random(5)
    for _ in range(5000):
        tallest = Decimal(chance.randint(1, 10**9)) / Decimal(10) ** chance.randint(0, 12)
        top, steps = nice_axis(tallest)
        assert tallest <= top <= tallest * Decimal("1.25"), tallest
        step = top / steps
        mantissa = step.scaleb(-step.adjusted()).normalize()
        assert mantissa in (1, 2, Decimal("2.5"), 5), (tallest, step)
        assert 3 <= steps <= 8


@pytest.mark.parametrize("tallest", ["0.04", "0.3", "23", "7.2", "440", "0.004"])
def test_no_two_gridlines_print_the_same_amount(tallest: str) -> None:
    top, steps = nice_axis(Decimal(tallest))
    labels = [axis_label(top * i / steps, "$") for i in range(steps + 1)]
    assert len(set(labels)) == len(labels), labels


def test_neighbouring_palette_colours_differ_by_at_least_3_to_1() -> None:
    for first, second in zip(PALETTE, PALETTE[1:] + PALETTE[:1], strict=True):
        assert contrast(first, second) >= 3, (first, second)
    assert contrast("#ffffff", "#000000") == pytest.approx(21)
    assert contrast("#777777", "#777777") == 1


def test_a_label_keeps_its_colour_whatever_else_is_shown_and_in_whatever_order() -> None:
    every = ["Production Key", "Staging Key", "User key", "Key 3"]
    colours = colors_for(every)
    assert colors_for(reversed(every)) == colours
    assert len(set(colours.values())) == len(every)


def test_the_chart_is_one_tab_stop_and_its_table_lists_every_day() -> None:
    days = [date(2026, 11, 1) + timedelta(days=i) for i in range(30)]
    series = [Series("a", PALETTE[0], {days[3]: Decimal("440")}), Series("b", PALETTE[1], {days[3]: Decimal("1")})]
    svg = stacked_bars(days, series, money=lambda v: f"${v}", link=lambda d: f"/x?day={d}")
    assert svg.count('tabindex="0"') == 1 and svg.count('tabindex="-1"') == len(days)
    assert ">$500</text>" in svg
    table = values_table(days, series, money=lambda v: f"${v}", link=lambda d: f"/x?day={d}")
    assert table.count("<tr data-day=") == len(days) and "$441" in table


def test_a_sparkline_is_an_image_named_by_its_figures_with_one_point_per_day() -> None:
    days = [date(2026, 11, 1) + timedelta(days=i) for i in range(30)]
    values = [Decimal(0)] * 30
    values[11], values[29] = Decimal("12.50"), Decimal("3")
    svg = sparkline(days, values, money=lambda v: f"${v:.2f}")
    assert 'role="img"' in svg
    label = svg.split('aria-label="')[1].split('"')[0]
    assert label == "$15.50 from 01 Nov to 30 Nov 2026; highest $12.50 on 12 Nov; $3.00 on the last day."
    assert f"<title>{label}</title>" in svg, "the same words as a tooltip"
    points = svg.split('class="spark-line" points="')[1].split('"')[0].split()
    assert len(points) == 30
    heights = [float(p.split(",")[1]) for p in points]
    assert min(heights) == heights[11] and heights[0] == max(heights), "the tallest day is highest, an empty one flat"


def test_a_sparkline_of_nothing_says_so_and_a_key_name_cannot_break_out_of_it() -> None:
    days = [date(2026, 11, 1), date(2026, 11, 2)]
    quiet = sparkline(days, [Decimal(0), Decimal(0)], money=lambda v: f"${v}")
    assert 'aria-label="No spend from 01 Nov to 02 Nov 2026."' in quiet
    hostile = sparkline(days, [Decimal(1), Decimal(2)], money=lambda v: f'"><script>{v}')
    assert "<script>" not in hostile and "&lt;script&gt;" in hostile
    with pytest.raises(ValueError, match="one value per day"):
        sparkline(days, [Decimal(1)], money=str)
