"""From Anthropic's answers to rows: pure functions, checked without a server."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from connector_sdk.errors import ResponseError
from connector_sdk.models import SyncContext
from connectors.anthropic.mapping import (
    ALL_KEYS_LABEL,
    DEFAULT_WORKSPACE_NAME,
    USER_KEY_LABEL,
    AnthropicKey,
    Directory,
    analytics_cost_rows,
    cost_report_rows,
    dollars_from_cents,
    usage_rows,
)

CONTEXT = SyncContext(
    connector="anthropic", connection="an", account="Acme", synced_at=datetime(2026, 3, 10, tzinfo=UTC)
)
START, END = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC)
DIRECTORY = Directory(
    workspaces={"wrkspc_1": "Production"},
    keys={"apikey_1": AnthropicKey("apikey_1", "Backend", "archived", "wrkspc_1", None)},
)


def usage_page(**result: Any) -> dict[str, Any]:
    bucket = {"starting_at": "2026-03-01T05:00:00Z", "ending_at": "2026-03-01T06:00:00Z", "results": [result]}
    return {"data": [bucket], "has_more": False, "next_page": None}


@pytest.mark.parametrize(
    ("cents", "dollars"),
    [("123.45", "1.2345"), ("0.0003", "0.000003"), ("7", "0.07"), (Decimal("12.5"), "0.125"), (250, "2.5")],
)
def test_cents_become_exact_dollars(cents: Any, dollars: str) -> None:
    assert dollars_from_cents(cents, "amount") == Decimal(dollars)


@pytest.mark.parametrize("bad", ["12,50", "", None, True, "1e999999999", 1.5])
def test_an_amount_that_is_not_cents_is_a_clear_error(bad: Any) -> None:
    with pytest.raises(ResponseError, match="amount"):
        dollars_from_cents(bad, "amount")


def test_cache_writes_are_read_from_the_object_by_ttl_and_zero_quantities_make_no_row() -> None:
    page = usage_page(
        api_key_id="apikey_1",
        workspace_id="wrkspc_1",
        model="claude-sonnet-4-20250514",
        uncached_input_tokens=1500,
        cache_read_input_tokens=0,
        cache_creation={"ephemeral_1h_input_tokens": 1000, "ephemeral_5m_input_tokens": 500},
        cache_creation_input_tokens=999_999,  # a flat field the report does not have: never read
        output_tokens=500,
        server_tool_use=None,
    )
    rows = usage_rows(page, CONTEXT, DIRECTORY, start=START, end=END)
    assert {row.unit: row.quantity for row in rows} == {
        "uncached_input_tokens": 1500,
        "cache_creation.ephemeral_1h_input_tokens": 1000,
        "cache_creation.ephemeral_5m_input_tokens": 500,
        "output_tokens": 500,
    }
    assert {(row.kind, row.cost, row.api_key_label, row.workspace_name) for row in rows} == {
        ("usage", None, "Backend", "Production")
    }


def test_workbench_use_is_the_user_key_and_the_default_workspace_is_named() -> None:
    page = usage_page(
        api_key_id=None, workspace_id=None, model="m", output_tokens=3, server_tool_use={"web_search_requests": 2}
    )
    rows = usage_rows(page, CONTEXT, DIRECTORY, start=START, end=END)
    assert {(row.unit, row.api_key_label, row.workspace_id, row.workspace_name) for row in rows} == {
        ("output_tokens", USER_KEY_LABEL, None, DEFAULT_WORKSPACE_NAME),
        ("web_search_requests", USER_KEY_LABEL, None, DEFAULT_WORKSPACE_NAME),
    }


def test_a_key_and_a_workspace_in_no_listing_keep_their_ids() -> None:
    assert DIRECTORY.key_label("apikey_gone") == "apikey_gone"
    assert DIRECTORY.workspace_name("wrkspc_gone") == "wrkspc_gone"


def test_a_bucket_outside_the_window_or_not_an_hour_is_refused() -> None:
    with pytest.raises(ResponseError, match="outside the requested window"):
        usage_rows(usage_page(output_tokens=1), CONTEXT, DIRECTORY, start=END, end=END.replace(day=4))
    page = usage_page(output_tokens=1)
    page["data"][0]["ending_at"] = "2026-03-02T05:00:00Z"
    with pytest.raises(ResponseError, match="hourly"):
        usage_rows(page, CONTEXT, DIRECTORY, start=START, end=END)


def test_analytics_cost_has_billed_list_and_discount_exactly_by_day() -> None:
    row = {
        "starting_at": "2026-03-02T00:00:00Z",
        "ending_at": "2026-03-03T00:00:00Z",
        "group": {"api_key_id": "apikey_1", "workspace_id": "wrkspc_1", "model": "claude-opus-4-1-20250805"},
        "cost": {"amount": "1234.5678", "list_amount": "1371.742", "currency": "USD", "requests": 12},
    }
    by_day = analytics_cost_rows({"data": [row], "has_more": False}, CONTEXT, DIRECTORY, start=START, end=END)
    [cost] = by_day[datetime(2026, 3, 2, tzinfo=UTC)]
    assert (cost.cost, cost.list_cost, cost.discount) == (
        Decimal("12.345678"),
        Decimal("13.71742"),
        Decimal("1.371742"),
    )
    assert (cost.kind, cost.currency, cost.unit, cost.quantity, cost.api_key_label) == (
        "cost",
        "USD",
        "requests",
        12,
        "Backend",
    )


def test_cost_report_rows_are_every_keys_per_workspace_and_description() -> None:
    result = {
        "amount": "123.78912",
        "currency": "USD",
        "workspace_id": None,
        "description": "Claude Sonnet 4 Usage - Input Tokens",
        "model": "claude-sonnet-4-20250514",
    }
    bucket = {"starting_at": "2026-03-01T00:00:00Z", "ending_at": "2026-03-02T00:00:00Z", "results": [result]}
    [row] = cost_report_rows({"data": [bucket]}, CONTEXT, DIRECTORY, start=START, end=END)
    assert (row.api_key_id, row.api_key_label, row.workspace_name) == (None, ALL_KEYS_LABEL, DEFAULT_WORKSPACE_NAME)
    assert (row.cost, row.list_cost, row.discount, row.line_item) == (
        Decimal("1.2378912"),
        None,
        None,
        "Claude Sonnet 4 Usage - Input Tokens",
    )
    result["currency"] = "EUR"
    with pytest.raises(ResponseError, match="not USD"):
        cost_report_rows({"data": [bucket]}, CONTEXT, DIRECTORY, start=START, end=END)
