"""Rows of any vendor: billed cost or usage only, over any whole-hour period, with nulls where a vendor has nothing."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from connector_sdk.models import NEW_ROW_FIELDS, ROW_FIELDS, UsageRow, merge_duplicates

DAY_START = datetime(2026, 3, 4, tzinfo=UTC)


def row(**changes: Any) -> UsageRow:
    values: dict[str, Any] = {
        "row_id": "r1",
        "connector": "fal",
        "connection": "c",
        "account": "acme",
        "period_start": DAY_START,
        "period_end": DAY_START + timedelta(hours=1),
        "api_key_id": "k1",
        "api_key_label": "Production",
        "login_username": None,
        "model": "m",
        "unit": "image",
        "quantity": Decimal(2),
        "unit_price": Decimal("0.5"),
        "percent_discount": None,
        "list_cost": Decimal(1),
        "discount": Decimal(0),
        "cost": Decimal(1),
        "currency": "USD",
        "synced_at": DAY_START,
    }
    return UsageRow(**(values | changes))


def test_a_row_written_before_the_new_fields_is_a_cost_row_without_workspace_or_line_item() -> None:
    old = row()
    assert (old.kind, old.workspace_id, old.workspace_name, old.line_item) == ("cost", None, None, None)


def test_a_daily_cost_row_without_prices_is_valid() -> None:
    daily = row(
        period_end=DAY_START + timedelta(days=1),
        unit=None,
        quantity=None,
        unit_price=None,
        list_cost=None,
        discount=None,
        workspace_id="proj_1",
        workspace_name="Research",
        line_item="gpt-4o, input",
    )
    assert daily.period_end - daily.period_start == timedelta(days=1)
    assert daily.export()["unit_price"] is None


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"period_end": DAY_START + timedelta(minutes=30)}, "whole UTC hours"),
        ({"period_start": DAY_START + timedelta(hours=1)}, "end after it starts"),
        ({"period_start": DAY_START.replace(tzinfo=None)}, "whole UTC hours"),
        ({"kind": "usage"}, "quantities only"),
        ({"cost": None}, "needs its cost"),
        ({"kind": "refund"}, "kind"),
    ],
)
def test_rows_that_break_the_rules_are_refused(changes: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        row(**changes)


def test_a_usage_row_carries_a_quantity_and_no_money() -> None:
    usage = row(kind="usage", unit="input_tokens", cost=None, list_cost=None, discount=None, unit_price=None)
    assert usage.cost is None and usage.quantity == 2


def test_the_natural_key_of_an_old_style_row_is_unchanged_and_new_dimensions_tell_rows_apart() -> None:
    common: dict[str, Any] = {
        "connection": "c",
        "period_start": DAY_START,
        "api_key_id": "k1",
        "login_username": None,
        "model": "m",
        "unit": "image",
        "unit_price": Decimal("0.5"),
        "percent_discount": None,
    }
    # The id every stored fal row already has, as the first release spelled it: the next sync must replace it.
    first_release = "\x1f".join(("c", "2026-03-04T00:00:00Z", "key:k1", "m", "image", "0.5", ""))
    assert UsageRow.natural_key_id(**common) == hashlib.sha256(first_release.encode()).hexdigest()[:32]
    ids = {
        UsageRow.natural_key_id(**common),
        UsageRow.natural_key_id(**common, kind="usage"),
        UsageRow.natural_key_id(**common, workspace_id="proj_1"),
        UsageRow.natural_key_id(**common, line_item="m, input"),
        UsageRow.natural_key_id(**common, line_item=""),
        UsageRow.natural_key_id(**(common | {"unit_price": None})),
    }
    assert len(ids) == 6


def test_trusted_rows_from_an_older_reader_get_the_new_fields_defaults() -> None:
    full = row()
    old_values = {name: full.__dict__[name] for name in ROW_FIELDS if name not in NEW_ROW_FIELDS}
    assert UsageRow.trusted(old_values) == full


def test_the_stored_and_exported_columns_are_every_field_with_the_new_ones_last() -> None:
    assert tuple(UsageRow.model_fields) == ROW_FIELDS
    assert ROW_FIELDS[-len(NEW_ROW_FIELDS) :] == NEW_ROW_FIELDS
    assert list(row().export())[-4:] == ["kind", "workspace_id", "workspace_name", "line_item"]


def test_merging_duplicates_keeps_nulls_null() -> None:
    usage = row(kind="usage", unit="seconds", cost=None, list_cost=None, discount=None, unit_price=None)
    merged = merge_duplicates([usage, usage.model_copy(update={"quantity": Decimal(3)})])
    assert len(merged) == 1
    assert (merged[0].quantity, merged[0].cost, merged[0].list_cost) == (Decimal(5), None, None)
