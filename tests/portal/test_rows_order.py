"""The order the dashboard's rows table asks the store for (`rows_page(order=...)`), on SQLite and PostgreSQL:
every column both ways, ties in hour order, costs compared as numbers, paging consistent with the order."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from connector_sdk.models import SyncWindow, UsageRow
from connector_sdk.stores import Store
from connector_sdk.stores.base import ROW_ORDERS
from tests.store_fixtures import hour, page, usage_row
from tests.store_fixtures import store_fixture as store_fixture
from tests.store_fixtures import store_url_fixture as store_url_fixture

SORT_KEYS = {
    "hour": lambda r: (),
    "key": lambda r: (r.api_key_label,),
    "model": lambda r: (r.model,),
    "cost": lambda r: (r.cost,),
}


def expected(rows: list[UsageRow], order: str) -> list[UsageRow]:
    column = order.removeprefix("-")
    # Text compared byte by byte (PostgreSQL's "C" collation, SQLite's default), then the hour, then the row id.
    return sorted(
        rows,
        key=lambda r: (*SORT_KEYS[column](r), r.period_start, r.row_id),
        reverse=order.startswith("-"),
    )


@pytest.fixture
def rows(store: Store) -> list[UsageRow]:
    store.add_connection(name="acme", connector="fal", config={}, credential=b"sealed", account="acme-ai", now=hour(0))
    store.start_run("acme", "run-1", SyncWindow(start=hour(0), end=hour(48)), now=hour(0))
    chance = random.Random(13)
    made = {}
    for at in range(48):
        for label in chance.sample(["prod", "User key", "staging", "Batch"], 2):
            # Costs of 1 to 4 digits before the point: "10" sorts before "9" as text, after it as a number.
            cost = str(Decimal(chance.randint(1, 99_999)) / Decimal(10) ** chance.randint(1, 4))
            row = usage_row(at=at, label=label, key=label, model=chance.choice(["fal-ai/a", "fal-ai/B"]), cost=cost)
            made[row.row_id] = row
    store.commit_page("acme", "run-1", page(list(made.values()), 0, 48), watermark=hour(48))
    return list(made.values())


@pytest.mark.parametrize("order", [*ROW_ORDERS, *(f"-{o}" for o in ROW_ORDERS)])
def test_rows_page_orders_by_each_column_both_ways_and_pages_through_that_order(
    store: Store, rows: list[UsageRow], order: str
) -> None:
    want = expected(rows, order)
    got, total = store.rows_page("acme", offset=0, limit=1000, order=order)
    assert total == len(rows)
    assert [r.row_id for r in got] == [r.row_id for r in want]
    paged = [
        r for offset in range(0, len(rows), 7) for r in store.rows_page("acme", offset=offset, limit=7, order=order)[0]
    ]
    assert paged == got
    filtered, count = store.rows_page("acme", api_key_label="prod", since=hour(10), limit=1000, order=order)
    assert filtered == [r for r in want if r.api_key_label == "prod" and r.period_start >= hour(10)]
    assert count == len(filtered)


def test_the_default_order_is_the_hour_and_an_unknown_order_is_refused(store: Store, rows: list[UsageRow]) -> None:
    assert store.rows_page("acme", limit=1000)[0] == list(store.iter_rows("acme"))
    with pytest.raises(ValueError, match="unknown row order 'price'"):
        store.rows_page("acme", order="price")
