"""The dashboard chart's arithmetic and colours, as pure functions."""

from __future__ import annotations

import random
from datetime import date, timedelta
from decimal import Decimal

import pytest

from connector_sdk.portal.charts import PALETTE, Series, colors_for, contrast, nice_axis, stacked_bars, values_table


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
