"""The sums behind `spend` and `top_spenders`: billed cost only, exact, each person apart.

Stores do not hold a row's kind yet (``NEW_ROW_FIELDS``), so the rows a connection reads back are given here: a
connection's store answers with billed rows and a usage row, as an OpenAI-style vendor would sync them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from connector_sdk.host import Host
from connector_sdk.mcp import reading
from connector_sdk.models import UsageRow

HOUR = datetime(2026, 3, 4, 10, tzinfo=UTC)


def row(n: int, **changes: Any) -> UsageRow:
    values: dict[str, Any] = {
        "row_id": f"r{n}",
        "connector": "fal",
        "connection": "fal-test",
        "account": "acme",
        "period_start": HOUR,
        "period_end": HOUR + timedelta(hours=1),
        "api_key_id": None,
        "api_key_label": "User key",
        "login_username": "alice",
        "model": "m",
        "unit": "image",
        "quantity": Decimal(2),
        "unit_price": Decimal("0.1"),
        "percent_discount": None,
        "list_cost": Decimal("0.2"),
        "discount": Decimal(0),
        "cost": Decimal("0.2"),
        "currency": "USD",
        "synced_at": HOUR,
    }
    return UsageRow(**(values | changes))


ROWS = [
    row(1),
    row(2, login_username="bob", cost=Decimal("0.1"), list_cost=Decimal("0.1")),
    row(3, login_username=None, cost=Decimal("0.3"), list_cost=Decimal("0.3")),
    row(4, kind="usage", quantity=Decimal(1_000_000), cost=None, list_cost=None, discount=None),
    row(5, api_key_id="k1", api_key_label="Production Key", login_username=None, cost=Decimal("1.1")),
]


@pytest.fixture
def answered(host: Host, connect: Callable[..., str], monkeypatch: pytest.MonkeyPatch) -> Host:
    connect()

    def iter_rows(name: str, *, since: datetime, until: datetime, **_: Any) -> Any:
        return (r for r in ROWS if name == "fal-test" and since <= r.period_start < until)

    monkeypatch.setattr(host.store, "iter_rows", iter_rows)
    return host


def test_usage_rows_never_add_money_and_each_person_is_summed_apart(answered: Host) -> None:
    period = {"since": "2026-03-04", "until": "2026-03-05", "days": None}

    answer = reading.spend(answered, **period, group_by=["key", "person"], filters=reading.Filters())

    assert [(t.currency, t.cost) for t in answer.totals] == [("USD", Decimal("1.7"))]
    assert {(line.group["key"], line.group["person"]): line.cost for line in answer.lines} == {
        ("Production Key", None): Decimal("1.1"),
        ("User key", None): Decimal("0.3"),
        ("User key", "alice"): Decimal("0.2"),
        ("User key", "bob"): Decimal("0.1"),
    }
    assert answer.usage_rows_left_out == 1
    assert any("usage rows" in note for note in answer.notes)


def test_ranking_people_leaves_out_spend_no_login_made(answered: Host) -> None:
    answer = reading.top_spenders(
        answered, by="person", n=10, since="2026-03-04", until="2026-03-05", days=None, filters=reading.Filters()
    )

    assert [(s.name, s.cost, s.previous_cost, s.change_percent) for s in answer.spenders] == [
        ("alice", Decimal("0.2"), Decimal(0), None),
        ("bob", Decimal("0.1"), Decimal(0), None),
    ]
    assert answer.previous_period.until == answer.period.since


def test_a_filter_by_person_keeps_only_that_login(answered: Host) -> None:
    answer = reading.spend(
        answered, since="2026-03-04", until="2026-03-05", days=None, group_by=[], filters=reading.Filters(person="bob")
    )

    assert [(t.currency, t.cost) for t in answer.totals] == [("USD", Decimal("0.1"))]
