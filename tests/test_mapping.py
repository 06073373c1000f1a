"""How fal's usage items become normalized rows: pure logic, no network."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import requests

from connector_sdk.errors import ResponseError
from connector_sdk.http import ApiClient
from connector_sdk.models import STORED_FIELDS, Page, SyncWindow, UsageRow, nanos, rows_from_stored, stored_rows
from connector_sdk.paging import HourlyPages, follow_cursor
from connectors.fal.mapping import USER_KEY_LABEL, UsageReader, parse_usage_page
from connectors.fal.simulator import FalSimulator
from tests.helpers import ALIASES, CONTEXT, H0, item, page


def rows_of(body: dict[str, Any]):
    return [row for _hour, rows in parse_usage_page(body, CONTEXT, ALIASES) for row in rows]


def test_api_key_usage_is_labelled_with_the_alias_from_keys() -> None:
    (row,) = rows_of(page((H0, [item()])))
    assert (row.api_key_id, row.api_key_label, row.login_username) == ("k-prod", "Production Key", None)
    assert (row.period_start, row.period_end) == (H0, H0 + timedelta(hours=1))
    assert (row.connection, row.account, row.connector) == ("c1", "acme-ai", "fal")


def test_a_key_that_keys_does_not_list_keeps_the_detail_fal_gives() -> None:
    structured = {"detail": "Admin Key", "api_key_id": "k-admin"}
    (row,) = rows_of(page((H0, [item(auth_method_structured=structured)])))
    assert (row.api_key_id, row.api_key_label) == ("k-admin", "Admin Key")


@pytest.mark.parametrize(
    "structured",
    [{"detail": "User token"}, {"detail": "None"}, {"detail": "alice", "login_username": "alice"}],
)
def test_activity_without_an_api_key_is_the_user_key(structured: dict[str, str]) -> None:
    (row,) = rows_of(page((H0, [item(auth_method_structured=structured, auth_method="User token")])))
    assert row.api_key_id is None
    assert row.api_key_label == USER_KEY_LABEL == "User key"
    assert row.login_username == structured.get("login_username")


def test_team_members_stay_apart_under_the_user_key() -> None:
    alice = item(auth_method_structured={"detail": "alice", "login_username": "alice"})
    bob = item(auth_method_structured={"detail": "bob", "login_username": "bob"})
    rows = rows_of(page((H0, [alice, bob])))
    assert len({r.row_id for r in rows}) == 2
    assert {r.api_key_label for r in rows} == {"User key"}


def test_usage_billed_at_two_discounts_gives_two_rows_with_exact_money() -> None:
    discounted = item(
        quantity=4,
        percent_discount=20,
        cost_subtotal=Decimal("0.4"),
        cost_discount=Decimal("0.08"),
        cost_total=Decimal("0.32"),
        cost=Decimal("0.32"),
    )
    full = item(quantity=1, cost_subtotal=Decimal("0.1"), cost_total=Decimal("0.1"), cost=Decimal("0.1"))
    a, b = rows_of(page((H0, [discounted, full])))
    assert a.row_id != b.row_id
    assert (a.percent_discount, a.list_cost, a.discount, a.cost) == (
        20,
        Decimal("0.4"),
        Decimal("0.08"),
        Decimal("0.32"),
    )
    assert (b.percent_discount, b.cost) == (None, Decimal("0.1"))
    assert a.cost + b.cost == Decimal("0.42")


def test_cost_total_is_preferred_and_cost_is_the_fallback() -> None:
    (current,) = rows_of(page((H0, [item(cost_total=Decimal("0.3"), cost=Decimal("9"))])))
    assert current.cost == Decimal("0.3")
    legacy = item(cost_total=..., cost_subtotal=..., cost_discount=..., cost=Decimal("0.3"))
    (old,) = rows_of(page((H0, [legacy])))
    assert (old.cost, old.list_cost, old.discount) == (Decimal("0.3"), Decimal("0.3"), Decimal(0))


def test_row_ids_are_stable_whatever_the_decimal_spelling() -> None:
    (a,) = rows_of(page((H0, [item(unit_price=Decimal("0.10"))])))
    (b,) = rows_of(page((H0, [item(unit_price=Decimal("0.1"), quantity=7)])))
    assert a.row_id == b.row_id


def test_unknown_extra_fields_are_accepted() -> None:
    (row,) = rows_of(page((H0, [item(brand_new_field={"x": 1})])))
    assert row.cost == Decimal("0.4")


@pytest.mark.parametrize(
    ("broken", "named"),
    [
        (item(quantity="4"), "time_series[0].results[0].quantity"),
        (item(cost_total=..., cost=...), "time_series[0].results[0].cost_total"),
        (item(endpoint_id=...), "time_series[0].results[0].endpoint_id"),
        (item(auth_method_structured=...), "time_series[0].results[0].auth_method_structured"),
        (item(currency=3), "time_series[0].results[0].currency"),
    ],
)
def test_a_malformed_item_fails_naming_its_field(broken: dict[str, Any], named: str) -> None:
    with pytest.raises(ResponseError, match=named.replace("[", r"\[").replace("]", r"\]")):
        rows_of(page((H0, [broken])))


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"time_series": [], "has_more": False}, "next_cursor"),
        ({"time_series": {}, "next_cursor": None}, "time_series"),
        ({"time_series": [{"bucket": 7, "results": []}], "next_cursor": None}, "bucket"),
        ({"time_series": [{"bucket": "2026-03-01T10:30:00Z", "results": []}], "next_cursor": None}, "whole hour"),
        ({"time_series": [{"bucket": H0.isoformat(), "results": None}], "next_cursor": None}, "results"),
    ],
)
def test_a_malformed_page_fails_naming_its_field(body: dict[str, Any], named: str) -> None:
    with pytest.raises(ResponseError, match=named):
        parse_usage_page(body, CONTEXT, ALIASES)


def feed_all(window: SyncWindow, api_pages: list[dict[str, Any]]) -> list[Page]:
    pages = HourlyPages(window, what="test")
    out = [p for body in api_pages if (p := pages.feed(parse_usage_page(body, CONTEXT, ALIASES))) is not None]
    return [*out, pages.finish()]


def test_a_bucket_continued_on_the_next_page_is_committed_whole() -> None:
    window = SyncWindow(start=H0, end=H0 + timedelta(hours=4))
    h1 = H0 + timedelta(hours=1)
    first = page((H0, [item()]), (h1, [item(endpoint_id="a")]), cursor="c2")
    second = page((h1, [item(endpoint_id="b")]), (H0 + timedelta(hours=2), [item()]))
    pages = feed_all(window, [first, second])
    assert [(p.covers_from, p.complete_through) for p in pages] == [
        (H0, h1),
        (h1, H0 + timedelta(hours=2)),
        (H0 + timedelta(hours=2), window.end),
    ]
    assert [r.model for r in pages[1].rows] == ["a", "b"]


def test_pages_cover_the_window_even_without_usage() -> None:
    window = SyncWindow(start=H0, end=H0 + timedelta(hours=3))
    (only,) = feed_all(window, [page()])
    assert (only.covers_from, only.complete_through, only.rows) == (H0, window.end, [])


def test_buckets_out_of_order_or_outside_the_window_are_refused() -> None:
    window = SyncWindow(start=H0, end=H0 + timedelta(hours=3))
    backwards = page((H0 + timedelta(hours=1), [item()]), (H0, [item()]))
    with pytest.raises(ResponseError, match="ascending"):
        feed_all(window, [backwards])
    with pytest.raises(ResponseError, match="outside"):
        feed_all(window, [page((H0 + timedelta(hours=5), [item()]))])


def test_the_same_item_twice_in_an_hour_adds_up_instead_of_overwriting() -> None:
    window = SyncWindow(start=H0, end=H0 + timedelta(hours=1))
    (only,) = feed_all(window, [page((H0, [item(), item()]))])
    (row,) = only.rows
    assert (row.quantity, row.cost) == (8, Decimal("0.8"))


def test_a_repeated_cursor_is_an_error_not_a_loop() -> None:
    answers = iter([{"next_cursor": "a"}, {"next_cursor": "b"}, {"next_cursor": "a"}])
    with pytest.raises(ResponseError, match="repeated cursor 'a'"):
        list(follow_cursor(lambda _cursor: next(answers), what="test"))


# -- the fast reader: the same rows as the exact one, or no opinion -----------------------------------------------
def read_fast(body: dict[str, Any]) -> Any:
    return UsageReader(CONTEXT, ALIASES)(ApiClient.encode(body))


@pytest.mark.parametrize(
    "options",
    [{}, {"legacy_cost": True}, {"discounts": False, "user_traffic": False}, {"n_keys": 6, "n_models": 20}],
    ids=["discounts-and-users", "legacy-cost", "plain", "bigger"],
)
def test_the_fast_reader_gives_the_exact_reader_s_rows_for_every_page_fal_serves(
    sim: FalSimulator, options: dict[str, Any]
) -> None:
    key = sim.add_account("fast-team", **options)
    params: dict[str, Any] = {
        "start": (sim.now - timedelta(days=3)).strftime("%Y-%m-%dT%H:00:00Z"),
        "end": sim.now.strftime("%Y-%m-%dT%H:00:00Z"),
        "timeframe": "hour",
        "expand": ["time_series", "auth_method", "auth_method_structured"],
        "limit": 50,
    }
    reader, pages = UsageReader(CONTEXT, ALIASES), 0
    while True:
        content = requests.get(
            f"{sim.base_url}/models/usage", params=params, headers={"Authorization": f"Key {key}"}, timeout=10
        ).content
        exact = parse_usage_page(json.loads(content, parse_float=Decimal), CONTEXT, ALIASES)
        fast = reader(content)
        assert fast is not None
        assert [(hour, rows_from_stored(stored)) for hour, stored in fast.buckets] == exact
        assert [(hour, stored_rows(rows)) for hour, rows in exact] == fast.buckets, "and stored the same way"
        pages += 1
        if fast.next_cursor is None:
            break
        params["cursor"] = fast.next_cursor
    assert pages > 3


@pytest.mark.parametrize(
    "odd",
    [
        item(quantity="4"),
        item(cost_total=Decimal("1E+40")),
        item(percent_discount=True),
        item(cost_total=..., cost=...),
        item(quantity=None),
        item(cost=Decimal("1E-40")),
        item(unit_price=[1]),
    ],
    ids=["number-as-string", "out-of-range", "boolean", "no-cost", "null-quantity", "tiny-legacy-cost", "list"],
)
def test_the_fast_reader_leaves_what_it_cannot_vouch_for_to_the_exact_reader(odd: dict[str, Any]) -> None:
    assert read_fast(page((H0, [item(), odd]))) is None
    with pytest.raises(ResponseError, match=r"results\[1\]"):
        rows_of(page((H0, [item(), odd])))


@pytest.mark.parametrize(
    "numbers",
    [
        {"cost_total": Decimal("1E-7"), "cost": Decimal("1E-7"), "cost_subtotal": Decimal("1E-7")},
        {"quantity": Decimal("2.50"), "unit_price": Decimal("0.0100")},
        {"cost_total": Decimal("123456789012345678901234567.5")},
        {"cost_total": Decimal("0.0000000000123"), "cost_subtotal": ...},
        {"quantity": 10**29, "cost_discount": ..., "percent_discount": 0},
        {"cost_total": ..., "cost_subtotal": ..., "cost_discount": Decimal("0.05")},
        {"unit_price": Decimal("-0.0"), "percent_discount": Decimal("12.5")},
    ],
    ids=["exponent", "trailing-zeros", "long", "past-nine-decimals", "big-integer", "legacy-cost", "odd-signs"],
)
def test_the_fast_reader_takes_every_number_the_exact_reader_takes_and_stores_the_same(
    numbers: dict[str, Any],
) -> None:
    body = page((H0, [item(), item(endpoint_id="fal-ai/other", **numbers)]))
    fast = read_fast(body)
    assert fast is not None
    exact = parse_usage_page(json.loads(ApiClient.encode(body), parse_float=Decimal), CONTEXT, ALIASES)
    assert [(hour, rows_from_stored(stored)) for hour, stored in fast.buckets] == exact
    # Stored exactly, plainly: the text reads back to the amount, and the cost's nano-units are there when whole.
    for values, row in zip(fast.buckets[0][1], exact[0][1], strict=True):
        stored = dict(zip(STORED_FIELDS, values, strict=True))
        for name in ("quantity", "unit_price", "list_cost", "discount", "cost"):
            assert stored[name] is None or ("E" not in stored[name] and Decimal(stored[name]) == getattr(row, name))
        assert stored["cost_nanos"] == nanos(row.cost)


def test_a_trusted_row_is_the_row_validation_would_build() -> None:
    (row,) = rows_of(page((H0, [item()])))
    assert UsageRow.trusted(dict(row)) == row == UsageRow(**dict(row))
    assert UsageRow.trusted(dict(row)).model_dump() == row.model_dump()
