"""Whatever pages a run commits, in whatever order, and whether or not they commit at all, the spend a store reports is
the sum of the rows it holds. SQLite keeps its daily totals as pages are written (a day a run replaces whole is
counted from the rows the run wrote); these tests hold it, and PostgreSQL, to the rows."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from connector_sdk.errors import StoreError
from connector_sdk.models import RunOutcome, SyncWindow, UsageRow
from connector_sdk.stores import Store
from connector_sdk.stores.sqlite import SQLiteStore
from tests.store_fixtures import hour, page, usage_row
from tests.store_fixtures import store_fixture as store_fixture
from tests.store_fixtures import store_url_fixture as store_url_fixture

DAYS = 4
SPAN = SyncWindow(start=hour(0), end=hour(24 * DAYS))


def add(store: Store, name: str = "acme") -> None:
    store.add_connection(name=name, connector="fal", config={}, credential=b"sealed", account="acme-ai", now=hour(0))


SOURCES = [(key, model) for key in ("k1", "k2", "k3", None) for model in ("fal-ai/a", "fal-ai/b", "fal-ai/c")]


def random_rows(rng: random.Random, start: int, end: int) -> list[UsageRow]:
    """Rows in hours ``[start, end)``, each of a source and model of its own: a few labels and currencies, now and
    then a usage row (no money), a cost with more than nine decimals, or an item repeated (the same id twice)."""
    rows = []
    for at in range(start, end):
        for key, model in rng.sample(SOURCES, rng.randrange(0, 5)):
            cost = rng.choice(["0.04", "1.5", "0.0000000004", "12", "0.1151688", "3.0000000000017"])
            row = usage_row(
                at=at,
                key=key,
                user=None if key else "alice",
                label=rng.choice(["prod", "staging", "User key"]),
                model=model,
                cost=cost,
                currency=rng.choice(["USD", "USD", "EUR"]),
            )
            if rng.random() < 0.1:
                row = row.model_copy(update={"kind": "usage", "cost": None, "list_cost": None, "discount": None})
            rows.append(row)
            if rng.random() < 0.01:
                rows.append(row)  # the vendor repeated it: upserted, so stored once
    return rows


def spend_of_rows(store: Store) -> tuple[dict[tuple[str, str], Decimal], dict[tuple[str, str], Decimal]]:
    """Cost per (label, currency) and per (day, currency) of the billed rows the store holds."""
    by_label: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    by_day: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for row in store.iter_rows("acme"):
        if row.kind == "cost" and row.cost is not None and row.currency is not None:
            by_label[row.api_key_label, row.currency] += row.cost
            by_day[row.period_start.strftime("%Y-%m-%d"), row.currency] += row.cost
    return dict(by_label), dict(by_day)


def assert_spend_is_the_rows(store: Store) -> None:
    by_label, by_day = spend_of_rows(store)
    reported = {(line.api_key_label, line.currency): line.cost for line in store.report("acme", **window())}
    assert reported == {key: cost for key, cost in by_label.items() if cost or key in reported}
    for currency in ("USD", "EUR"):
        daily = store.daily_spend("acme", currency=currency, **window())
        assert {day: cost for day, cost in daily.items() if cost} == {
            day: cost for (day, in_currency), cost in by_day.items() if in_currency == currency and cost
        }


def window() -> dict[str, object]:
    return {"since": SPAN.start - timedelta(days=1), "until": SPAN.end + timedelta(days=1)}


def pages_of(rng: random.Random, start: int, end: int) -> list[tuple[int, int]]:
    """``[start, end)`` cut into consecutive pages of a few hours each."""
    cuts, at = [], start
    while at < end:
        size = min(end - at, rng.randrange(1, 30))
        cuts.append((at, at + size))
        at += size
    return cuts


@pytest.mark.parametrize("seed", range(16))
def test_the_spend_reported_is_the_sum_of_the_rows_stored_after_any_runs(store: Store, seed: int) -> None:
    rng = random.Random(seed)
    add(store)
    for run in range(3):
        run_id = f"run-{run}"
        first = rng.randrange(0, 24 * DAYS - 1)
        last = rng.randrange(first + 1, 24 * DAYS + 1)
        if rng.random() < 0.7:  # most runs replace a whole day or more, whose totals they keep as they go
            first, last = rng.randrange(0, 24), rng.randrange(48, 24 * DAYS + 1)
        store.start_run("acme", run_id, SyncWindow(start=hour(first), end=hour(last)), now=hour(0))
        cuts = pages_of(rng, first, last)
        if rng.random() < 0.3 and len(cuts) > 1:
            cuts.insert(rng.randrange(len(cuts)), rng.choice(cuts))  # a page over hours the run already wrote
        for start, end in cuts:
            rows = random_rows(rng, start, end)
            if rng.random() < 0.1 and end < 24 * DAYS:
                rows += random_rows(rng, end, end + 1)  # a row past the page's end: upserted all the same
            store.commit_page("acme", run_id, page(rows, start, end), watermark=hour(end))
            assert_spend_is_the_rows(store)  # a report while the run goes on
        store.finish_run(run_id, RunOutcome.SUCCEEDED, None, now=hour(0))
        assert_spend_is_the_rows(store)


def test_a_run_that_writes_whole_days_counts_them_as_its_pages_commit(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "store.db")
    add(store)
    store.start_run("acme", "run-1", SPAN, now=hour(0))
    rows = [usage_row(at=at, cost="0.25", key=label, label=label) for at in range(48) for label in ("prod", "staging")]
    for start in range(0, 48, 5):
        end = min(start + 5, 48)
        chunk = [row for row in rows if hour(start) <= row.period_start < hour(end)]
        store.commit_page("acme", "run-1", page(chunk, start, end), watermark=hour(end))
    db = store._db()
    # Both days are whole: counted and clean before the run ends, so a report reads their totals, not their rows.
    assert db.execute("SELECT day FROM usage_daily_dirty").fetchall() == []
    counted = db.execute("SELECT day, api_key_label, row_count, cost_units, cost_nanos FROM usage_daily ORDER BY 1, 2")
    day0, day1 = hour(0).strftime("%Y-%m-%d"), hour(24).strftime("%Y-%m-%d")
    assert counted.fetchall() == [(day, label, 24, 6, 0) for day in (day0, day1) for label in ("prod", "staging")]
    assert_spend_is_the_rows(store)
    store.close()


def test_a_page_that_fails_to_commit_leaves_its_days_to_the_recount(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "store.db")
    add(store)
    store.start_run("acme", "run-1", SPAN, now=hour(0))
    store.commit_page("acme", "run-1", page([usage_row(at=h, cost="1") for h in range(12)], 0, 12), watermark=hour(12))

    def fail(*_args: object) -> None:
        raise StoreError("the disk is full")

    store._enqueue = fail  # type: ignore[method-assign]  # fails after the page's rows are written, in its transaction
    with pytest.raises(StoreError):
        store.commit_page("acme", "run-1", page([usage_row(at=h, cost="5") for h in range(12, 24)], 12, 24),
                          watermark=hour(24))  # fmt: skip
    del store._enqueue
    # The failed page's hours again, and the rest of the day: the day is whole, but its sums saw a rolled-back page.
    store.commit_page("acme", "run-1", page([usage_row(at=h, cost="2") for h in range(12, 24)], 12, 24),
                      watermark=hour(24))  # fmt: skip
    assert_spend_is_the_rows(store)
    store.finish_run("run-1", RunOutcome.SUCCEEDED, None, now=hour(0))
    assert store.daily_spend("acme", currency="USD", **window()) == {hour(0).strftime("%Y-%m-%d"): Decimal(36)}
    store.close()


def test_rows_whose_shared_values_cannot_be_written_into_a_statement_are_stored_exactly(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "store.db")
    add(store)
    store.start_run("acme", "run-1", SPAN, now=hour(0))
    accounts = ["O'Brien & Co", "tab\there", "nul\x00byte", "plain"]
    rows = [usage_row(at=i, cost="1").model_copy(update={"account": account}) for i, account in enumerate(accounts)]
    store.commit_page("acme", "run-1", page(rows, 0, 4), watermark=hour(4))
    assert [row.account for row in store.iter_rows("acme")] == accounts
    assert list(store.iter_rows("acme")) == rows
    store.close()


def test_hours_a_run_writes_twice_are_counted_once(store: Store) -> None:
    add(store)
    store.start_run("acme", "run-1", SPAN, now=hour(0))
    for start, end, cost in [(0, 6, "1"), (0, 6, "2"), (6, 24, "3"), (24, 30, "4"), (3, 4, "5"), (30, 48, "6")]:
        rows = [usage_row(at=at, cost=cost) for at in range(start, end)]
        store.commit_page("acme", "run-1", page(rows, start, end), watermark=hour(end))
        assert_spend_is_the_rows(store)
    day0, day1 = hour(0).strftime("%Y-%m-%d"), hour(24).strftime("%Y-%m-%d")
    expected = {day0: Decimal(2 * 5 + 5 + 3 * 18), day1: Decimal(4 * 6 + 6 * 18)}
    assert store.daily_spend("acme", currency="USD", **window()) == expected
    store.finish_run("run-1", RunOutcome.SUCCEEDED, None, now=hour(0))
    assert store.daily_spend("acme", currency="USD", **window()) == expected


@pytest.mark.parametrize("seed", range(4))
def test_a_report_over_every_connection_adds_up_each_connections_lines(store: Store, seed: int) -> None:
    # The daily totals are read per connection in the report's order (an index, nothing sorted) and added up after:
    # connections that share labels, models and currencies must come out as one line each.
    rng = random.Random(seed)
    for name in ("acme", "beta", "gamma"):
        add(store, name)
        store.start_run(name, f"{name}-run", SPAN, now=hour(0))
        for start, end in pages_of(rng, 0, 24 * DAYS):
            store.commit_page(name, f"{name}-run", page(random_rows(rng, start, end), start, end), watermark=hour(end))
        if name != "gamma":  # gamma's days stay uncounted: its whole days are read from the rows
            store.finish_run(f"{name}-run", RunOutcome.SUCCEEDED, None, now=hour(0))

    expected: dict[tuple[str, str, str], tuple[int, Decimal, set[str]]] = {}
    for name in ("acme", "beta", "gamma"):
        for line in store.report(name, **window()):
            count, cost, models = expected.get((line.connector, line.api_key_label, line.currency)) or (0, 0, set())
            expected[line.connector, line.api_key_label, line.currency] = (
                count + line.row_count,
                cost + line.cost,
                models | set(line.models),
            )
    everyone = {
        (line.connector, line.api_key_label, line.currency): (line.row_count, line.cost, set(line.models))
        for line in store.report(None, **window())
    }
    assert everyone == expected and len(everyone) > 3
