"""Rows in stored form: the values a store writes, made from row objects or straight from a vendor's text, and the
row objects made back from them, with no money lost or changed on the way."""

from __future__ import annotations

import decimal
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import ValidationError

from connector_sdk.models import (
    STORED_FIELDS,
    Page,
    UsageRow,
    amount_text,
    instant,
    iso,
    merge_duplicates,
    merge_stored_duplicates,
    nanos,
    nanos_of_text,
    rows_from_stored,
    stored_rows,
)
from tests.store_fixtures import daily_cost_row, hour, quantity_row, usage_row

AMOUNTS = st.decimals(allow_nan=False, allow_infinity=False) | st.builds(
    lambda m, e: Decimal(f"{m}E{e}"), st.integers(-(10**20), 10**20), st.integers(-30, 20)
)


@given(AMOUNTS)
@example(Decimal("1E-7"))
@example(Decimal("0.00000010"))
@example(Decimal("-0"))
@example(Decimal("9223372036.854775807"))
@example(Decimal("9223372036.854775808"))
def test_an_amount_is_stored_as_exact_plain_text_with_its_nano_units_when_they_are_whole(value: Decimal) -> None:
    text = amount_text(value)
    assert "E" not in text and Decimal(text) == value
    units = nanos_of_text(text)
    assert units == nanos(value)
    exact = decimal.Context(prec=200).scaleb(value, 9)
    if exact == exact.to_integral_value() and -(2**63) < exact < 2**63:
        assert units == int(exact)
    else:
        assert units is None


def rows() -> list[UsageRow]:
    return [
        usage_row(at=0, cost="0.0000001"),
        usage_row(at=1, key=None, user="alice", label="User key", percent_discount="20", cost="1.50"),
        quantity_row(at=2),
        daily_cost_row(day=0, line_item="Compute", workspace_id="proj-1"),
        usage_row(at=3, cost="12345678901234567890.123456789012"),
    ]


def test_rows_come_back_from_their_stored_form_as_they_were() -> None:
    stored = stored_rows(rows())
    assert all(len(values) == len(STORED_FIELDS) for values in stored)
    assert rows_from_stored(stored) == rows()
    by_name = dict(zip(STORED_FIELDS, stored[0], strict=True))
    assert by_name["cost"] == "0.0000001" and by_name["cost_nanos"] == 100
    assert by_name["period_start"] == "2026-01-05T00:00:00Z"
    assert dict(zip(STORED_FIELDS, stored[4], strict=True))["cost_nanos"] is None  # too many digits for 64 bits


def test_a_page_gives_either_form_of_its_rows_and_the_periods_they_cover() -> None:
    from_rows = Page(rows=rows(), covers_from=hour(0), complete_through=hour(24))
    from_stored = Page(stored=stored_rows(rows()), covers_from=hour(0), complete_through=hour(24))
    for built in (from_rows, from_stored):
        assert built.rows == rows()
        assert built.stored() == stored_rows(rows())
        assert built.row_count == len(rows())
        assert built.periods() == {(row.period_start, row.period_end) for row in rows()}


def test_a_page_validates_rows_that_are_not_row_objects_yet() -> None:
    (row,) = Page(rows=[dict(usage_row(at=0))], covers_from=hour(0), complete_through=hour(1)).rows  # type: ignore[list-item]
    assert row == usage_row(at=0)
    with pytest.raises(ValidationError):
        Page(rows=[{**dict(usage_row(at=0)), "period_start": hour(0) + timedelta(minutes=5)}], covers_from=hour(0),
             complete_through=hour(1))  # type: ignore[list-item]  # fmt: skip
    with pytest.raises(ValueError, match="rows or stored rows"):
        Page(covers_from=hour(0), complete_through=hour(1))


def test_repeated_items_add_up_in_stored_form_as_row_objects_do() -> None:
    first = usage_row(at=0, cost="0.1")
    again = first.model_copy(update={"quantity": Decimal(3), "cost": Decimal("0.000000000025")})
    other = usage_row(at=0, key="k2", cost="1")
    assert rows_from_stored(merge_stored_duplicates(stored_rows([first, other, again]))) == merge_duplicates(
        [first, other, again]
    )
    unique = stored_rows([first, other])
    assert merge_stored_duplicates(unique) is unique


def test_stored_instants_are_utc() -> None:
    (row,) = rows_from_stored(stored_rows([usage_row(at=5)]))
    assert row.period_start == datetime(2026, 1, 5, 5, tzinfo=UTC)


@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 1, 1)))
def test_a_stored_instant_reads_back_as_the_aware_utc_second_it_was(moment: datetime) -> None:
    second = moment.replace(microsecond=0, tzinfo=UTC)
    assert instant(iso(second)) == second and instant(iso(second)).utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "text",
    [
        "2026-01-02",
        "2026-01-02T03:04:05.1Z",
        "2026-01-02T03:04:05+00:00",
        "2026-01-02 03:04:05Z",
        "2026-13-02T03:04:05Z",
    ],
)
def test_only_the_form_iso_writes_is_an_instant(text: str) -> None:
    with pytest.raises(ValueError):
        instant(text)
