"""The store contract, run against every backend: SQLite and PostgreSQL must be indistinguishable through it."""

from __future__ import annotations

import itertools
import random
import sqlite3
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from connector_sdk.errors import ConfigError, StoreError, UnknownConnection
from connector_sdk.models import ConnectionState, RunOutcome, SyncWindow, UsageRow
from connector_sdk.scheduler import is_due
from connector_sdk.stores import Store, open_store
from connector_sdk.stores.migrations import LATEST_VERSION
from tests.store_fixtures import daily_cost_row, hour, page, quantity_row, set_schema_version, usage_row
from tests.store_fixtures import store_fixture as store_fixture
from tests.store_fixtures import store_url_fixture as store_url_fixture

SECOND = timedelta(seconds=1)
WINDOW = SyncWindow(start=hour(0), end=hour(24))


def add(store: Store, name: str = "acme", **overrides: Any) -> None:
    values: dict[str, Any] = {
        "connector": "fal",
        "config": {"backfill_days": 3, "base_url": "https://api.fal.ai"},
        "credential": b"sealed-key",
        "account": "acme-ai",
        "now": hour(0),
    }
    store.add_connection(name=name, **(values | overrides))


def commit(store: Store, rows: list[UsageRow], start: int, end: int, *, name: str = "acme", run: str = "run-1") -> None:
    store.commit_page(name, run, page(rows, start, end), watermark=hour(end))


def stored(store: Store, name: str | None = "acme") -> list[UsageRow]:
    return list(store.iter_rows(name))


def by_position(rows: list[UsageRow]) -> list[UsageRow]:
    return sorted(rows, key=lambda row: (row.period_start, row.row_id))


# -- connections -----------------------------------------------------------------------------------------------
def test_a_new_connection_is_connected_and_due_at_once(store: Store) -> None:
    add(store)
    connection = store.get_connection("acme")
    assert connection.connector == "fal"
    assert connection.config == {"backfill_days": 3, "base_url": "https://api.fal.ai"}
    assert connection.state == ConnectionState.CONNECTED
    assert connection.reason is None
    assert connection.account == "acme-ai"
    assert connection.created_at == connection.next_sync_at == hour(0)
    assert connection.watermark is connection.last_sync_at is connection.last_success_at is None
    assert store.status_history("acme")[0].new == ConnectionState.CONNECTED


def test_timestamps_come_back_as_aware_utc(store: Store) -> None:
    add(store)
    assert store.get_connection("acme").created_at.utcoffset() == timedelta(0)


def test_connections_are_listed_by_name(store: Store) -> None:
    for name in ("zeta", "Alpha", "beta"):
        add(store, name)
    assert [c.name for c in store.list_connections()] == ["Alpha", "beta", "zeta"]


def test_the_connections_of_an_account_are_those_of_its_connector_and_account_in_any_state(store: Store) -> None:
    add(store, "zeta")
    add(store, "alpha")
    add(store, "other-team", account="other-ai")
    add(store, "openai", connector="openai")  # an OpenAI organization named like the fal team: another account
    store.set_state("alpha", ConnectionState.DISCONNECTED, "the admin disconnected it", now=hour(1))

    assert [c.name for c in store.account_connections("fal", "acme-ai")] == ["alpha", "zeta"]
    assert [c.name for c in store.account_connections("openai", "acme-ai")] == ["openai"]
    assert store.account_connections("fal", "nobody") == []
    (alpha, _zeta) = store.account_connections("fal", "acme-ai")
    assert alpha == store.get_connection("alpha")


def test_a_taken_name_is_refused_and_nothing_changes(store: Store) -> None:
    add(store)
    before = store.get_connection("acme")
    with pytest.raises(ConfigError, match="already exists"):
        add(store, connector="other", credential=b"other-key", now=hour(5))
    assert store.get_connection("acme") == before
    assert store.get_credential("acme") == b"sealed-key"
    assert len(store.status_history("acme")) == 1
    assert len(store.list_connections()) == 1


UNKNOWN_NAME_CALLS: dict[str, Callable[[Store], object]] = {
    "get_connection": lambda s: s.get_connection("nope"),
    "get_credential": lambda s: s.get_credential("nope"),
    "set_credential": lambda s: s.set_credential("nope", b"x"),
    "delete_connection": lambda s: s.delete_connection("nope"),
    "set_state": lambda s: s.set_state("nope", ConnectionState.ERROR, "x", now=hour(1)),
    "status_history": lambda s: s.status_history("nope"),
    "set_next_sync": lambda s: s.set_next_sync("nope", hour(1)),
    "acquire_lease": lambda s: s.acquire_lease("nope", "w1", now=hour(1), ttl_seconds=60),
    "renew_lease": lambda s: s.renew_lease("nope", "w1", now=hour(1), ttl_seconds=60),
    "release_lease": lambda s: s.release_lease("nope", "w1"),
    "lease_holder": lambda s: s.lease_holder("nope", now=hour(1)),
    "start_run": lambda s: s.start_run("nope", "run-1", WINDOW, now=hour(1)),
    "commit_page": lambda s: s.commit_page("nope", "run-1", page([], 0, 1), watermark=hour(1)),
    "list_runs": lambda s: s.list_runs("nope"),
    "iter_rows": lambda s: list(s.iter_rows("nope")),
    "count_rows": lambda s: s.count_rows("nope"),
    "rows_page": lambda s: s.rows_page("nope"),
    "daily_spend_by_label": lambda s: s.daily_spend_by_label("nope", since=hour(0), until=hour(1), currency="USD"),
    "report": lambda s: s.report("nope", since=hour(0), until=hour(1)),
    "delete_rows": lambda s: s.delete_rows("nope"),
}


@pytest.mark.parametrize("call", UNKNOWN_NAME_CALLS.values(), ids=UNKNOWN_NAME_CALLS.keys())
def test_every_method_refuses_an_unknown_connection(store: Store, call: Callable[[Store], object]) -> None:
    add(store)
    with pytest.raises(UnknownConnection):
        call(store)
    assert [c.name for c in store.list_connections()] == ["acme"]


# -- credentials -----------------------------------------------------------------------------------------------
def test_credentials_round_trip_as_exact_bytes(store: Store) -> None:
    every_byte = bytes(range(256))
    add(store, credential=every_byte)
    assert store.get_credential("acme") == every_byte


def test_a_credential_is_replaced_with_the_account_if_given(store: Store) -> None:
    add(store)
    store.set_credential("acme", b"new-key")
    assert store.get_credential("acme") == b"new-key"
    assert store.get_connection("acme").account == "acme-ai"
    store.set_credential("acme", b"newer-key", account="acme-labs")
    assert store.get_credential("acme") == b"newer-key"
    assert store.get_connection("acme").account == "acme-labs"


def test_a_credential_set_to_none_is_deleted(store: Store) -> None:
    add(store)
    store.set_credential("acme", None)
    assert store.get_credential("acme") is None


def test_next_sync_is_set_and_cleared(store: Store) -> None:
    add(store)
    store.set_next_sync("acme", hour(3))
    assert store.get_connection("acme").next_sync_at == hour(3)
    store.set_next_sync("acme", None)
    assert store.get_connection("acme").next_sync_at is None


# -- state -----------------------------------------------------------------------------------------------------
def test_due_connections_are_those_the_scheduler_would_pick_never_scheduled_first_then_longest_waiting(
    store: Store,
) -> None:
    plan = {
        "a-never": (ConnectionState.CONNECTED, None),
        "b-late": (ConnectionState.CONNECTED, hour(1)),
        "c-now": (ConnectionState.ERROR, hour(3)),
        "d-later": (ConnectionState.CONNECTED, hour(3) + SECOND),
        "e-no-key": (ConnectionState.RECONNECT_REQUIRED, None),
        "f-gone": (ConnectionState.DISCONNECTED, hour(0)),
        "g-late": (ConnectionState.ERROR, hour(1)),
        "h-never": (ConnectionState.ERROR, None),
    }
    for name, (state, at) in plan.items():
        add(store, name)
        store.set_state(name, state, None, now=hour(0))
        store.set_next_sync(name, at)
    now = hour(3) + timedelta(microseconds=999_999)
    due = [c.name for c in store.due_connections(now)]
    assert due == ["a-never", "h-never", "b-late", "g-late", "c-now"]
    assert sorted(due) == [c.name for c in store.list_connections() if is_due(c, now)]
    assert [c.name for c in store.due_connections(now, limit=2)] == ["a-never", "h-never"]
    assert store.due_connections(now, limit=0) == []
    (first,) = store.due_connections(now, limit=1)
    assert first == store.get_connection("a-never")


def test_set_state_returns_the_change_once(store: Store) -> None:
    add(store)
    change = store.set_state("acme", ConnectionState.ERROR, "timed out", now=hour(1))
    assert change is not None
    assert (change.connection, change.at, change.old, change.new, change.reason) == (
        "acme",
        hour(1),
        ConnectionState.CONNECTED,
        ConnectionState.ERROR,
        "timed out",
    )
    assert store.set_state("acme", ConnectionState.ERROR, "timed out", now=hour(2)) is None
    connection = store.get_connection("acme")
    assert (connection.state, connection.reason) == (ConnectionState.ERROR, "timed out")


def test_status_history_records_each_transition_in_order(store: Store) -> None:
    add(store)
    store.set_state("acme", ConnectionState.SYNCING, None, now=hour(1))
    store.set_state("acme", ConnectionState.RECONNECT_REQUIRED, "key revoked", now=hour(2))
    history = store.status_history("acme")
    assert [(h.at, h.old, h.new, h.reason) for h in history] == [
        (hour(0), None, ConnectionState.CONNECTED, None),
        (hour(1), ConnectionState.CONNECTED, ConnectionState.SYNCING, None),
        (hour(2), ConnectionState.SYNCING, ConnectionState.RECONNECT_REQUIRED, "key revoked"),
    ]
    assert {h.connection for h in history} == {"acme"}


def test_a_new_reason_for_the_same_state_updates_only_the_reason(store: Store) -> None:
    add(store)
    store.set_state("acme", ConnectionState.ERROR, "timed out", now=hour(1))
    assert store.set_state("acme", ConnectionState.ERROR, "rate limited", now=hour(2)) is None
    assert store.get_connection("acme").reason == "rate limited"
    assert len(store.status_history("acme")) == 2


# -- leases ----------------------------------------------------------------------------------------------------
def test_a_lease_is_exclusive_while_it_lasts(store: Store) -> None:
    add(store)
    assert store.acquire_lease("acme", "w1", now=hour(0), ttl_seconds=60)
    assert not store.acquire_lease("acme", "w2", now=hour(0) + 59 * SECOND, ttl_seconds=60)
    assert store.lease_holder("acme", now=hour(0) + 59 * SECOND) == "w1"


def test_a_lease_is_re_entrant_for_its_owner_and_extended(store: Store) -> None:
    add(store)
    assert store.acquire_lease("acme", "w1", now=hour(0), ttl_seconds=60)
    assert store.acquire_lease("acme", "w1", now=hour(0) + 30 * SECOND, ttl_seconds=60)
    assert store.lease_holder("acme", now=hour(0) + 89 * SECOND) == "w1"


def test_an_expired_lease_is_free_for_another_owner(store: Store) -> None:
    add(store)
    store.acquire_lease("acme", "w1", now=hour(0), ttl_seconds=60)
    assert store.lease_holder("acme", now=hour(0) + 60 * SECOND) is None
    assert store.acquire_lease("acme", "w2", now=hour(0) + 60 * SECOND, ttl_seconds=60)
    assert store.lease_holder("acme", now=hour(0) + 61 * SECOND) == "w2"


def test_renewing_extends_only_the_owners_lease(store: Store) -> None:
    add(store)
    store.acquire_lease("acme", "w1", now=hour(0), ttl_seconds=60)
    assert store.renew_lease("acme", "w1", now=hour(0) + 50 * SECOND, ttl_seconds=60)
    assert not store.acquire_lease("acme", "w2", now=hour(0) + 100 * SECOND, ttl_seconds=60)
    assert not store.renew_lease("acme", "w2", now=hour(0) + 100 * SECOND, ttl_seconds=60)
    assert store.lease_holder("acme", now=hour(0) + 109 * SECOND) == "w1"


def test_a_lease_taken_over_cannot_be_renewed_by_its_old_owner(store: Store) -> None:
    add(store)
    store.acquire_lease("acme", "w1", now=hour(0), ttl_seconds=60)
    store.acquire_lease("acme", "w2", now=hour(0) + 61 * SECOND, ttl_seconds=60)
    assert not store.renew_lease("acme", "w1", now=hour(0) + 62 * SECOND, ttl_seconds=60)


def test_only_the_owner_releases_a_lease(store: Store) -> None:
    add(store)
    store.acquire_lease("acme", "w1", now=hour(0), ttl_seconds=60)
    store.release_lease("acme", "w2")
    assert store.lease_holder("acme", now=hour(0)) == "w1"
    store.release_lease("acme", "w1")
    assert store.lease_holder("acme", now=hour(0)) is None
    assert store.acquire_lease("acme", "w2", now=hour(0), ttl_seconds=60)


def test_a_connection_without_a_lease_has_no_holder(store: Store) -> None:
    add(store)
    assert store.lease_holder("acme", now=hour(0)) is None


# -- runs ------------------------------------------------------------------------------------------------------
def test_a_started_run_is_running_and_stamps_the_last_sync(store: Store) -> None:
    add(store)
    run = store.start_run("acme", "run-1", WINDOW, now=hour(1))
    assert (run.run_id, run.connection, run.outcome) == ("run-1", "acme", RunOutcome.RUNNING)
    assert (run.started_at, run.finished_at) == (hour(1), None)
    assert (run.window_start, run.window_end) == (WINDOW.start, WINDOW.end)
    assert (run.rows_written, run.pages, run.message) == (0, 0, None)
    assert store.get_connection("acme").last_sync_at == hour(1)


def test_a_failed_run_is_closed_without_a_last_success(store: Store) -> None:
    add(store)
    store.start_run("acme", "run-1", WINDOW, now=hour(1))
    run = store.finish_run("run-1", RunOutcome.FAILED, "vendor said 500", now=hour(2))
    assert (run.outcome, run.message, run.finished_at) == (RunOutcome.FAILED, "vendor said 500", hour(2))
    assert store.get_connection("acme").last_success_at is None


def test_a_succeeded_run_sets_the_last_success(store: Store) -> None:
    add(store)
    store.start_run("acme", "run-1", WINDOW, now=hour(1))
    run = store.finish_run("run-1", RunOutcome.SUCCEEDED, None, now=hour(2))
    assert run.outcome == RunOutcome.SUCCEEDED
    assert store.get_connection("acme").last_success_at == hour(2)


def test_finishing_an_unknown_run_is_a_store_error(store: Store) -> None:
    with pytest.raises(StoreError):
        store.finish_run("no-such-run", RunOutcome.SUCCEEDED, None, now=hour(1))


def test_runs_are_listed_newest_first(store: Store) -> None:
    add(store)
    add(store, "other")
    for n in range(3):
        store.start_run("acme", f"run-{n}", WINDOW, now=hour(n))
    store.start_run("other", "other-run", WINDOW, now=hour(9))
    assert [r.run_id for r in store.list_runs("acme")] == ["run-2", "run-1", "run-0"]
    assert [r.run_id for r in store.list_runs("acme", limit=2)] == ["run-2", "run-1"]


def test_runs_started_in_the_same_second_are_listed_in_the_order_they_started(store: Store) -> None:
    # Times are kept to the second, and a retry can start in the second its cut attempt started.
    add(store)
    for run_id in ("run-b", "run-c", "run-a"):
        store.start_run("acme", run_id, WINDOW, now=hour(1))
    assert [r.run_id for r in store.list_runs("acme")] == ["run-a", "run-c", "run-b"]


# -- committing pages ------------------------------------------------------------------------------------------
def test_rows_round_trip_exactly(store: Store) -> None:
    add(store)
    store.start_run("acme", "run-1", WINDOW, now=hour(0))
    rows = [
        usage_row(at=0, quantity="3", unit_price="0.1"),
        usage_row(at=0, model="fal-ai/llm", unit="tokens", quantity="123456789", unit_price="0.000000125"),
        usage_row(at=1, quantity="7.5", unit_price="0.04", percent_discount="20"),
        usage_row(at=1, key=None, label="(user)", user="ada", quantity="1", unit_price="12.345678901234567890"),
    ]
    commit(store, rows, 0, 2)
    back = stored(store)
    assert back == by_position(rows)
    assert [r.export() for r in back] == [r.export() for r in by_position(rows)]
    assert {r.percent_discount for r in back} == {None, Decimal("20")}
    assert all(isinstance(r.cost, Decimal) and r.period_start.utcoffset() == timedelta(0) for r in back)


def test_values_that_look_like_sql_placeholders_are_stored_as_written(store: Store) -> None:
    # Both stores run one SQL core written with ? placeholders, which a backend may translate to its driver's style:
    # a value is never part of that text, whatever it holds.
    name = "50% off?"
    add(store, name, config={"note": "%s, %(x)s and ? are text"}, account="acme?%")
    store.start_run(name, "run-?", WINDOW, now=hour(0))
    rows = [usage_row(name, at=0, label="100% ?", model="fal-ai/%s?")]
    store.commit_page(name, "run-?", page(rows, 0, 1), watermark=hour(1))
    store.add_sink(
        name, "hook %s", kind="webhook", config={"url": "https://x.example/?a=%20"}, secret=None, now=hour(0)
    )
    store.enqueue(name, "hook %s", '{"text": "?%s"}', now=hour(0))
    connection = store.get_connection(name)
    assert (connection.config, connection.account) == ({"note": "%s, %(x)s and ? are text"}, "acme?%")
    assert stored(store, name) == rows
    assert [line.api_key_label for line in store.report(name, since=hour(0), until=hour(1))] == ["100% ?"]
    assert [sink.config for sink in store.list_sinks(name)] == [{"url": "https://x.example/?a=%20"}]
    assert [item.payload for item in store.pending(name, "hook %s", now=hour(0))] == ['{"text": "?%s"}']


def test_a_page_replaces_the_rows_of_its_hours(store: Store) -> None:
    add(store)
    store.start_run("acme", "run-1", WINDOW, now=hour(0))
    kept, revised, dropped = usage_row(at=0), usage_row(at=1, quantity="2"), usage_row(at=1, model="fal-ai/gone")
    commit(store, [kept, revised, dropped], 0, 2)
    revision = usage_row(at=1, quantity="5")
    commit(store, [kept, revision], 0, 2)
    assert stored(store) == by_position([kept, revision])
    assert revision.row_id == revised.row_id


def test_committing_the_same_page_twice_stores_it_once(store: Store) -> None:
    add(store)
    store.start_run("acme", "run-1", WINDOW, now=hour(0))
    rows = [usage_row(at=0), usage_row(at=1, model="fal-ai/other")]
    commit(store, rows, 0, 2)
    commit(store, rows, 0, 2)
    assert stored(store) == by_position(rows)
    assert store.count_rows("acme") == 2


def test_a_page_leaves_rows_outside_its_hours_and_connection_alone(store: Store) -> None:
    add(store)
    add(store, "other")
    store.start_run("acme", "run-1", WINDOW, now=hour(0))
    store.start_run("other", "run-2", WINDOW, now=hour(0))
    before, inside, after = usage_row(at=0), usage_row(at=1), usage_row(at=2)
    neighbour = usage_row("other", at=1)
    commit(store, [before, inside, after], 0, 3)
    commit(store, [neighbour], 0, 3, name="other", run="run-2")
    commit(store, [], 1, 2)
    assert stored(store) == by_position([before, after])
    assert stored(store, "other") == [neighbour]


def test_an_empty_page_still_counts_and_moves_the_watermark(store: Store) -> None:
    add(store)
    store.start_run("acme", "run-1", WINDOW, now=hour(0))
    commit(store, [], 0, 4)
    assert store.get_connection("acme").watermark == hour(4)
    assert store.list_runs("acme")[0].pages == 1


def test_the_watermark_only_rises(store: Store) -> None:
    add(store)
    store.start_run("acme", "run-1", WINDOW, now=hour(0))
    store.commit_page("acme", "run-1", page([], 0, 5), watermark=hour(5))
    store.commit_page("acme", "run-1", page([], 0, 3), watermark=hour(3))
    assert store.get_connection("acme").watermark == hour(5)
    store.commit_page("acme", "run-1", page([], 5, 8), watermark=hour(8))
    assert store.get_connection("acme").watermark == hour(8)


def test_each_page_counts_its_rows_and_itself_on_the_run(store: Store) -> None:
    add(store)
    store.start_run("acme", "run-1", WINDOW, now=hour(0))
    commit(store, [usage_row(at=0), usage_row(at=0, model="fal-ai/b")], 0, 1)
    commit(store, [usage_row(at=1)], 1, 2)
    run = store.finish_run("run-1", RunOutcome.SUCCEEDED, None, now=hour(3))
    assert (run.rows_written, run.pages) == (3, 2)


# -- reading rows ----------------------------------------------------------------------------------------------
def test_rows_stream_by_period_then_row_id(store: Store) -> None:
    add(store)
    store.start_run("acme", "run-1", WINDOW, now=hour(0))
    rows = [usage_row(at=h, model=f"fal-ai/m{m}") for h in (2, 0, 1) for m in range(5)]
    commit(store, rows, 0, 3)
    assert [(r.period_start, r.row_id) for r in stored(store)] == sorted((r.period_start, r.row_id) for r in rows)


def test_rows_are_filtered_by_since_inclusive_and_until_exclusive(store: Store) -> None:
    add(store)
    store.start_run("acme", "run-1", WINDOW, now=hour(0))
    commit(store, [usage_row(at=h) for h in range(6)], 0, 6)
    assert [r.period_start for r in store.iter_rows("acme", since=hour(2), until=hour(4))] == [hour(2), hour(3)]
    assert [r.period_start for r in store.iter_rows("acme", since=hour(4))] == [hour(4), hour(5)]
    assert [r.period_start for r in store.iter_rows("acme", until=hour(1))] == [hour(0)]


def test_rows_are_filtered_by_label_and_model_when_asked(store: Store) -> None:
    add(store)
    store.start_run("acme", "run-1", WINDOW, now=hour(0))
    rows = [
        usage_row(at=h, key=label, label=label, model=m)
        for h in range(3)
        for label in ("prod", "User key")
        for m in "ab"
    ]
    commit(store, rows, 0, 3)
    assert stored(store) == by_position(rows)
    only = list(store.iter_rows("acme", api_key_label="User key", model="b", since=hour(1)))
    assert only == by_position(
        [r for r in rows if (r.api_key_label, r.model) == ("User key", "b") and r.period_start >= hour(1)]
    )
    assert list(store.iter_rows("acme", model="nothing")) == []


def test_rows_of_every_connection_without_a_name(store: Store) -> None:
    add(store)
    add(store, "other")
    store.start_run("acme", "run-1", WINDOW, now=hour(0))
    store.start_run("other", "run-2", WINDOW, now=hour(0))
    mine, theirs = [usage_row(at=0), usage_row(at=2)], [usage_row("other", at=1)]
    commit(store, mine, 0, 3)
    commit(store, theirs, 0, 3, name="other", run="run-2")
    assert stored(store, None) == by_position(mine + theirs)


def test_rows_are_counted_per_connection_and_in_all(store: Store) -> None:
    add(store)
    add(store, "other")
    assert store.count_rows() == store.count_rows("acme") == 0
    store.start_run("acme", "run-1", WINDOW, now=hour(0))
    commit(store, [usage_row(at=h) for h in range(3)], 0, 3)
    commit(store, [usage_row("other", at=0)], 0, 1, name="other")
    assert (store.count_rows("acme"), store.count_rows("other"), store.count_rows()) == (3, 1, 4)


def test_a_page_of_rows_is_filtered_counted_and_sliced_by_the_store_as_iter_rows_orders_them(store: Store) -> None:
    add(store)
    add(store, "other")
    store.start_run("acme", "run-1", WINDOW, now=hour(0))
    rng = random.Random(3)
    rows = {
        row.row_id: row
        for row in (
            usage_row(
                at=rng.randrange(0, 10),
                label=rng.choice(["prod", "staging", "User key"]),
                model=rng.choice(["fal-ai/a", "fal-ai/b"]),
                cost=rng.choice(["0.1", "2.000000000005", "7"]),
            )
            for _ in range(80)
        )
    }
    commit(store, list(rows.values()), 0, 10)
    commit(store, [usage_row("other", at=h, label="prod") for h in range(10)], 0, 10, name="other")
    everything = stored(store)
    for since, until, label, model in [
        (None, None, None, None),
        (hour(2), hour(7), None, None),
        (None, None, "User key", None),
        (hour(1), None, "prod", "fal-ai/b"),
        (None, hour(3), None, "fal-ai/a"),
        (hour(5), hour(5), None, None),
        (None, None, "nobody", None),
    ]:
        matching = [
            r
            for r in everything
            if (since is None or r.period_start >= since)
            and (until is None or r.period_start < until)
            and label in (None, r.api_key_label)
            and model in (None, r.model)
        ]
        for offset, limit in [(0, 7), (7, 7), (0, 1000), (len(matching) - 1, 5), (len(matching) + 3, 5)]:
            got, total = store.rows_page(
                "acme", since=since, until=until, api_key_label=label, model=model, offset=offset, limit=limit
            )
            assert total == len(matching)
            assert got == matching[max(0, offset) : max(0, offset) + limit], (since, until, label, model, offset)


def test_daily_spend_by_label_sums_one_currency_exactly_per_label_and_utc_day(store: Store) -> None:
    add(store)
    add(store, "other")
    store.start_run("acme", "run-1", SyncWindow(start=hour(0), end=hour(72)), now=hour(0))
    rows = [
        usage_row(at=0, label="prod", model="fal-ai/a", cost="0.1"),
        usage_row(at=1, label="prod", model="fal-ai/b", cost="0.2"),
        usage_row(at=23, label="prod", model="fal-ai/a", cost="0.000000000001"),
        usage_row(at=24, label="prod", model="fal-ai/a", cost="9000000000"),
        usage_row(at=25, label="User key", model="fal-ai/a", cost="1.5"),
        usage_row(at=26, label="User key", model="fal-ai/a", currency="EUR", cost="4"),
        usage_row(at=50, label="staging", model="fal-ai/c", cost="3"),
    ]
    commit(store, rows, 0, 72)
    commit(store, [usage_row("other", at=0, label="prod", cost="100")], 0, 1, name="other")
    day = [hour(h).strftime("%Y-%m-%d") for h in (0, 24, 48)]
    assert store.daily_spend_by_label("acme", since=hour(0), until=hour(72), currency="USD") == {
        "prod": {day[0]: Decimal("0.300000000001"), day[1]: Decimal("9000000000")},
        "User key": {day[1]: Decimal("1.5")},
        "staging": {day[2]: Decimal("3")},
    }
    assert store.daily_spend_by_label("acme", since=hour(1), until=hour(25), currency="USD") == {
        "prod": {day[0]: Decimal("0.200000000001"), day[1]: Decimal("9000000000")}
    }
    assert store.daily_spend_by_label("acme", since=hour(0), until=hour(72), currency="EUR") == {
        "User key": {day[1]: Decimal("4")}
    }


def budget_rows() -> list[UsageRow]:
    """Three days of two labels and two models, one of them in euros, with costs past nine decimals."""
    rows = []
    for h in range(0, 72, 5):
        rows.append(usage_row(at=h, label="prod", model="fal-ai/a", cost=f"{h}.000000000001"))
        rows.append(usage_row(at=h, label="staging", model="fal-ai/b", cost="0.25"))
        rows.append(usage_row(at=h, label="prod", model="fal-ai/b", currency="EUR", cost="7"))
    return rows


def test_a_budgets_daily_spend_in_any_scope_equals_the_sum_of_its_rows(store: Store) -> None:
    add(store)
    store.start_run("acme", "run-1", SyncWindow(start=hour(0), end=hour(72)), now=hour(0))
    commit(store, budget_rows(), 0, 72)
    scopes = [(None, None), ("prod", None), (None, "fal-ai/b"), ("prod", "fal-ai/a"), ("prod", "fal-ai/c")]

    def check() -> None:
        for a, b in [(0, 72), (0, 24), (1, 71), (23, 49), (30, 31)]:
            for currency in ("USD", "EUR"):
                for label, model in scopes:
                    spend = store.daily_spend(
                        "acme", since=hour(a), until=hour(b), currency=currency, api_key_label=label, model=model
                    )
                    truth = brute_force_daily(store, "acme", hour(a), hour(b), currency, label=label, model=model)
                    assert spend == truth, (a, b, currency, label, model)

    check()  # the days as pages left them, not counted yet
    store.finish_run("run-1", RunOutcome.SUCCEEDED, None, now=hour(72))
    check()  # every day counted into the daily totals
    assert store.daily_spend("acme", since=hour(0), until=hour(24), currency="USD", api_key_label="prod") == {
        hour(0).strftime("%Y-%m-%d"): Decimal("50.000000000005")
    }


def test_sqlite_reads_a_budgets_whole_days_from_the_daily_totals_as_the_chart_and_the_report_do(
    tmp_path: Path,
) -> None:
    file = tmp_path / "store.db"
    store = open_store(f"sqlite:///{file}", home=tmp_path)
    add(store)
    store.start_run("acme", "run-1", SyncWindow(start=hour(0), end=hour(72)), now=hour(0))
    commit(store, budget_rows(), 0, 72)
    store.finish_run("run-1", RunOutcome.SUCCEEDED, None, now=hour(72))
    days = [hour(h).strftime("%Y-%m-%d") for h in (0, 24, 48)]
    before = store.daily_spend("acme", since=hour(0), until=hour(72), currency="USD", model="fal-ai/a")
    partial = store.daily_spend("acme", since=hour(1), until=hour(71), currency="USD", model="fal-ai/a")

    # One unit added to every counted total, behind the store's back, shows where each day is read from.
    with sqlite3.connect(file) as db:
        db.execute("UPDATE usage_daily SET cost_units = cost_units + 1")
    db.close()
    after = store.daily_spend("acme", since=hour(0), until=hour(72), currency="USD", model="fal-ai/a")
    assert after == {day: before[day] + 1 for day in days}  # whole days: from the totals
    assert store.daily_spend("acme", since=hour(1), until=hour(71), currency="USD", model="fal-ai/a") == {
        days[0]: partial[days[0]],  # a part of a day: from the rows
        days[1]: partial[days[1]] + 1,
        days[2]: partial[days[2]],
    }
    chart = store.daily_spend_by_label("acme", since=hour(0), until=hour(72), currency="USD")
    assert chart["prod"] == after  # prod's USD rows are all fal-ai/a: the chart reads the same totals
    store.close()


def test_the_report_sums_exactly_per_label_and_currency(store: Store) -> None:
    add(store)
    store.start_run("acme", "run-1", WINDOW, now=hour(0))
    rows = [
        usage_row(at=0, label="prod", model="fal-ai/b", cost="0.1"),
        usage_row(at=0, label="prod", model="fal-ai/a", cost="0.1"),
        usage_row(at=1, label="prod", model="fal-ai/b", cost="0.1"),
        usage_row(at=1, label="prod", model="fal-ai/a", currency="EUR", cost="5"),
        usage_row(at=2, label="staging", model="fal-ai/c", cost="1.5"),
    ]
    commit(store, rows, 0, 3)
    lines = store.report("acme", since=hour(0), until=hour(3))
    assert [(line.api_key_label, line.currency, line.models, line.cost, line.row_count) for line in lines] == [
        ("prod", "EUR", ["fal-ai/a"], Decimal("5"), 1),
        ("staging", "USD", ["fal-ai/c"], Decimal("1.5"), 1),
        ("prod", "USD", ["fal-ai/a", "fal-ai/b"], Decimal("0.3"), 3),
    ]
    assert str(lines[2].cost) == "0.3"


def test_the_report_covers_only_its_window_and_connection(store: Store) -> None:
    add(store)
    add(store, "other")
    store.start_run("acme", "run-1", WINDOW, now=hour(0))
    commit(store, [usage_row(at=h, cost="1") for h in range(4)], 0, 4)
    commit(store, [usage_row("other", at=1, cost="100")], 0, 4, name="other")
    assert [line.cost for line in store.report("acme", since=hour(1), until=hour(3))] == [Decimal("2")]
    assert [line.cost for line in store.report(None, since=hour(1), until=hour(3))] == [Decimal("102")]
    assert store.report("acme", since=hour(10), until=hour(11)) == []


def billed(store: Store, name: str | None, since: datetime, until: datetime) -> list[UsageRow]:
    """The rows that hold money: cost rows. Usage rows are stored and listed, never summed."""
    return [row for row in store.iter_rows(name, since=since, until=until) if row.kind == "cost"]


def brute_force_report(store: Store, name: str | None, since: datetime, until: datetime) -> list[tuple]:
    totals: dict[tuple[str, str, str], tuple[set[str], int, Decimal]] = {}
    for row in billed(store, name, since, until):
        group = (row.connector, row.api_key_label, row.currency)
        models, count, cost = totals.get(group, (set(), 0, Decimal(0)))
        totals[group] = (models | ({row.model} - {None}), count + 1, cost + row.cost)
    return sorted((conn, label, cur, sorted(m), cost, n) for (conn, label, cur), (m, n, cost) in totals.items())


def brute_force_daily(
    store: Store,
    name: str,
    since: datetime,
    until: datetime,
    currency: str,
    *,
    label: str | None = None,
    model: str | None = None,
) -> dict[str, Decimal]:
    days: dict[str, Decimal] = {}
    for row in billed(store, name, since, until):
        if row.currency == currency and label in (None, row.api_key_label) and model in (None, row.model):
            day = row.period_start.strftime("%Y-%m-%d")
            days[day] = days.get(day, Decimal(0)) + row.cost
    return days


def brute_force_daily_by_label(
    store: Store, name: str, since: datetime, until: datetime, currency: str
) -> dict[str, dict[str, Decimal]]:
    labels = {row.api_key_label for row in billed(store, name, since, until) if row.currency == currency}
    return {label: brute_force_daily(store, name, since, until, currency, label=label) for label in labels}


def test_the_report_over_any_window_equals_the_sum_of_its_rows_after_pages_are_replaced_again_and_again(
    store: Store,
) -> None:
    # Three days of hours, pages that replace and revise earlier ones, costs with more than nine decimals and costs
    # of billions, usage rows (no money) and whole-day cost rows without a model or prices among them: whichever way
    # a store totals them (SQLite keeps daily totals), the report and the daily spend per label are the cost rows'
    # sums.
    add(store)
    add(store, "other")
    store.start_run("acme", "run-1", WINDOW, now=hour(0))
    store.start_run("other", "run-2", WINDOW, now=hour(0))
    rng = random.Random(7)
    costs = ["0.1", "2.5", "0.000000000001", "123.456789012345", "9000000000", "-0.3", "0"]
    runs = {"acme": "run-1", "other": "run-2"}
    for step in range(60):
        name = rng.choice(["acme", "other"])
        if step % 7 == 6:  # runs end now and then, and the next pages change days already counted
            store.finish_run(runs[name], RunOutcome.SUCCEEDED, None, now=hour(0))
            runs[name] = f"{name}-{step}"
            store.start_run(name, runs[name], WINDOW, now=hour(0))
        run = runs[name]
        start = rng.randrange(0, 70)
        end = start + rng.randrange(1, 6)
        rows = {
            row.row_id: row
            for row in (
                usage_row(
                    name,
                    at=rng.randrange(start, end),
                    label=rng.choice(["prod", "staging", "User key"]),
                    model=rng.choice(["fal-ai/a", "fal-ai/b", "fal-ai/c"]),
                    cost=rng.choice(costs),
                    currency=rng.choice(["USD", "USD", "EUR"]),
                )
                for _ in range(rng.randrange(0, 6))
            )
        }
        for at in range(start, end):
            if rng.random() < 0.3:
                label = rng.choice(["prod", "User key", "tokens only"])
                extra = quantity_row(name, at=at, label=label, model=rng.choice(["fal-ai/a", "fal-ai/c"]))
                rows[extra.row_id] = extra
            if at % 24 == 0 and rng.random() < 0.7:
                line_item = rng.choice(["fal-ai/a, input", None, "fal-ai/b"])
                extra = daily_cost_row(
                    name, at // 24, label=rng.choice(["prod", "User key"]), line_item=line_item, cost=rng.choice(costs)
                )
                rows[extra.row_id] = extra
        commit(store, list(rows.values()), start, end, name=name, run=run)
    windows = [(0, 72), (0, 24), (5, 53), (23, 25), (30, 31), (47, 72), (1, 71)]
    windows += [(a, a + rng.randrange(1, 60)) for a in (rng.randrange(0, 60) for _ in range(8))]

    def check() -> None:
        for name in ("acme", "other", None):
            for a, b in windows:
                lines = store.report(name, since=hour(a), until=hour(b))
                got = sorted((x.connector, x.api_key_label, x.currency, x.models, x.cost, x.row_count) for x in lines)
                assert got == brute_force_report(store, name, hour(a), hour(b)), (name, a, b)
                if name is not None:  # the dashboard's chart and the budgets' daily spend, totalled the same way
                    for currency in ("USD", "EUR"):
                        daily = store.daily_spend_by_label(name, since=hour(a), until=hour(b), currency=currency)
                        assert daily == brute_force_daily_by_label(store, name, hour(a), hour(b), currency), (a, b)
                        for label, model in [
                            (None, None),
                            ("prod", None),
                            ("User key", "fal-ai/b"),
                            (None, "fal-ai/c"),
                        ]:
                            spend = store.daily_spend(
                                name, since=hour(a), until=hour(b), currency=currency, api_key_label=label, model=model
                            )
                            truth = brute_force_daily(store, name, hour(a), hour(b), currency, label=label, model=model)
                            assert spend == truth, (name, a, b, currency, label, model)

    check()  # some days counted, some changed since
    for run in runs.values():
        store.finish_run(run, RunOutcome.SUCCEEDED, None, now=hour(0))
    check()  # every day counted
    store.delete_rows("other")
    assert store.report("other", since=hour(0), until=hour(72)) == []
    assert [line.row_count for line in store.report(None, since=hour(0), until=hour(72))] == [
        line.row_count for line in store.report("acme", since=hour(0), until=hour(72))
    ]


def test_a_report_taken_while_syncs_rewrite_the_same_usage_always_adds_up_to_it(
    store: Store, store_url: str, tmp_path: Path
) -> None:
    # The usage never changes; only its bookkeeping does (pages rewrite days, runs end and recount them). A report
    # made at any moment meanwhile must give the same figures.
    add(store)
    rows = [usage_row(at=h, label=label, cost="1.5") for h in range(0, 72, 5) for label in ("prod", "staging")]
    store.start_run("acme", "run-0", WINDOW, now=hour(0))
    commit(store, rows, 0, 72, run="run-0")
    store.finish_run("run-0", RunOutcome.SUCCEEDED, None, now=hour(0))
    expected = store.report("acme", since=hour(1), until=hour(70))
    stop = threading.Event()

    def rewrite() -> None:
        writer = open_store(store_url, home=tmp_path)
        try:
            for n in itertools.count(1):
                if stop.is_set():
                    return
                writer.start_run("acme", f"run-{n}", WINDOW, now=hour(0))
                writer.commit_page("acme", f"run-{n}", page(rows, 0, 72), watermark=hour(72))
                writer.finish_run(f"run-{n}", RunOutcome.SUCCEEDED, None, now=hour(0))
        finally:
            writer.close()

    rewriter = threading.Thread(target=rewrite)
    rewriter.start()
    try:
        for _ in range(150):
            assert store.report("acme", since=hour(1), until=hour(70)) == expected
    finally:
        stop.set()
        rewriter.join()


# -- rows of any vendor: billed cost and usage ----------------------------------------------------------------
def test_a_daily_cost_row_and_a_usage_row_round_trip_with_their_periods_and_nulls(store: Store) -> None:
    add(store)
    store.start_run("acme", "run-1", WINDOW, now=hour(0))
    daily = daily_cost_row(day=0, cost="12.000000000000345")
    unnamed = daily_cost_row(day=0, key=None, label="User key", line_item=None, workspace_id=None, cost="0.5")
    tokens = quantity_row(at=5, quantity="123456789")
    commit(store, [daily, unnamed, tokens], 0, 24)
    back = stored(store)
    assert back == by_position([daily, unnamed, tokens])
    assert [r.export() for r in back] == [r.export() for r in by_position([daily, unnamed, tokens])]
    day_row = next(r for r in back if r.row_id == daily.row_id)
    assert (day_row.period_start, day_row.period_end) == (hour(0), hour(24))
    assert (day_row.unit, day_row.quantity, day_row.unit_price, day_row.list_cost, day_row.discount) == (None,) * 5
    assert (day_row.kind, day_row.workspace_id, day_row.workspace_name, day_row.line_item) == (
        "cost",
        "proj_default",
        "Project proj_default",
        "gpt-4o-2024-08-06, input",
    )
    usage = next(r for r in back if r.row_id == tokens.row_id)
    assert (usage.kind, usage.cost, usage.currency, usage.quantity) == ("usage", None, None, Decimal("123456789"))
    assert next(r for r in back if r.row_id == unnamed.row_id).model is None
    rows, total = store.rows_page("acme", order="-cost")
    assert total == 3 and rows[-1] == tokens  # a row without cost sorts below every cost, on both backends
    assert store.rows_page("acme", order="cost")[0][0] == tokens


def test_usage_rows_never_add_money_to_the_report_or_the_daily_spend(store: Store) -> None:
    add(store)
    store.start_run("acme", "run-1", SyncWindow(start=hour(0), end=hour(48)), now=hour(0))
    costs = [
        daily_cost_row(day=0, label="prod", cost="10"),
        daily_cost_row(day=1, label="prod", line_item="gpt-4o-mini, output", cost="2.5"),
        daily_cost_row(day=1, key=None, label="User key", line_item=None, cost="0.75"),
    ]
    usage = [quantity_row(at=h, label="prod", unit=u) for h in (0, 5, 30) for u in ("input_tokens", "images")]
    usage += [quantity_row(at=7, key="key-9", label="only tokens", model="gpt-4o-mini")]
    commit(store, costs + usage, 0, 48)

    def figures() -> tuple[Any, ...]:
        report = [
            (x.connector, x.api_key_label, x.currency, x.models, x.cost, x.row_count)
            for x in store.report("acme", since=hour(0), until=hour(48))
        ]
        everyone = [(x.api_key_label, x.cost) for x in store.report(None, since=hour(0), until=hour(48))]
        daily = store.daily_spend("acme", since=hour(0), until=hour(48), currency="USD")
        by_model = store.daily_spend("acme", since=hour(0), until=hour(48), currency="USD", model="gpt-4o-2024-08-06")
        by_label = store.daily_spend_by_label("acme", since=hour(0), until=hour(48), currency="USD")
        return report, everyone, daily, by_model, by_label

    day = [hour(h).strftime("%Y-%m-%d") for h in (0, 24)]
    expected = (
        [
            ("openai", "prod", "USD", ["gpt-4o-2024-08-06", "gpt-4o-mini"], Decimal("12.5"), 2),
            ("openai", "User key", "USD", [], Decimal("0.75"), 1),
        ],
        [("prod", Decimal("12.5")), ("User key", Decimal("0.75"))],
        {day[0]: Decimal("10"), day[1]: Decimal("3.25")},
        {day[0]: Decimal("10")},
        {"prod": {day[0]: Decimal("10"), day[1]: Decimal("2.5")}, "User key": {day[1]: Decimal("0.75")}},
    )
    assert figures() == expected  # the days are dirty: read from their rows
    store.finish_run("run-1", RunOutcome.SUCCEEDED, None, now=hour(48))
    assert figures() == expected  # the days are counted: read from the daily totals
    assert store.count_rows("acme") == len(costs) + len(usage)  # stored and listed all the same
    assert {r.api_key_label for r in stored(store)} >= {"only tokens"}


def test_report_lines_are_per_connector_when_vendors_share_a_label(store: Store) -> None:
    add(store)
    add(store, "oai", connector="openai")
    store.start_run("acme", "run-1", WINDOW, now=hour(0))
    store.start_run("oai", "run-2", WINDOW, now=hour(0))
    commit(store, [usage_row(at=1, label="User key", cost="2")], 0, 24)
    commit(store, [daily_cost_row("oai", 0, key=None, label="User key", cost="3")], 0, 24, name="oai", run="run-2")
    lines = store.report(None, since=hour(0), until=hour(24))
    assert [(x.connector, x.api_key_label, x.cost) for x in lines] == [
        ("openai", "User key", Decimal("3")),
        ("fal", "User key", Decimal("2")),
    ]


def test_delete_rows_removes_only_that_connections_rows(store: Store) -> None:
    add(store)
    add(store, "other")
    commit(store, [usage_row(at=0), usage_row(at=1)], 0, 2)
    commit(store, [usage_row("other", at=0)], 0, 2, name="other")
    assert store.delete_rows("acme") == 2
    assert (store.count_rows("acme"), store.count_rows("other")) == (0, 1)
    assert store.get_connection("acme").name == "acme"


def test_deleting_a_connection_removes_its_rows_runs_and_history(store: Store) -> None:
    add(store)
    add(store, "other")
    store.start_run("acme", "run-1", WINDOW, now=hour(0))
    store.set_state("acme", ConnectionState.ERROR, "boom", now=hour(1))
    commit(store, [usage_row(at=0)], 0, 1)
    commit(store, [usage_row("other", at=0)], 0, 1, name="other")
    store.delete_connection("acme")
    with pytest.raises(UnknownConnection):
        store.get_connection("acme")
    assert store.count_rows() == 1
    add(store, now=hour(5))
    assert store.list_runs("acme") == []
    assert [h.at for h in store.status_history("acme")] == [hour(5)]
    assert store.count_rows("acme") == 0


# -- schema and lifecycle --------------------------------------------------------------------------------------
def test_a_new_store_is_at_the_latest_schema_version(store: Store) -> None:
    assert store.schema_version() == LATEST_VERSION


def test_reopening_a_store_keeps_its_data(store_url: str, tmp_path: Path) -> None:
    first = open_store(store_url, home=tmp_path)
    add(first)
    first.start_run("acme", "run-1", WINDOW, now=hour(0))
    commit(first, [usage_row(at=0, cost="0.1")], 0, 1)
    first.close()
    second = open_store(store_url, home=tmp_path)
    try:
        assert second.schema_version() == LATEST_VERSION
        assert second.get_connection("acme").watermark == hour(1)
        assert second.get_credential("acme") == b"sealed-key"
        assert stored(second) == [usage_row(at=0, cost="0.1")]
    finally:
        second.close()


def test_a_store_from_a_newer_version_is_refused(store_url: str, tmp_path: Path) -> None:
    open_store(store_url, home=tmp_path).close()
    set_schema_version(store_url, LATEST_VERSION + 1)
    with pytest.raises(StoreError, match="newer"):
        open_store(store_url, home=tmp_path)


def test_the_url_reopens_the_store_and_never_shows_a_password(store_url: str, tmp_path: Path) -> None:
    with_password = store_url.replace("://postgres@", "://postgres:s3cret@")
    first = open_store(with_password, home=tmp_path)
    add(first)
    first.close()
    assert "s3cret" not in first.url + repr(first)
    second = open_store(first.url, home=tmp_path)
    try:
        assert [c.name for c in second.list_connections()] == ["acme"]
    finally:
        second.close()


def test_workers_opening_a_new_store_at_once_all_succeed(store_url: str, tmp_path: Path) -> None:
    opened: list[Store] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def open_one() -> None:
        start.wait()
        try:
            opened.append(open_store(store_url, home=tmp_path))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert [s.schema_version() for s in opened] == [LATEST_VERSION] * 4
    finally:
        for s in opened:
            s.close()


def test_concurrent_writers_lose_no_rows(store: Store) -> None:
    names = [f"conn-{n}" for n in range(4)]
    for name in names:
        add(store, name)
    start = threading.Barrier(len(names))
    errors: list[BaseException] = []

    def sync(name: str) -> None:
        try:
            start.wait()
            store.start_run(name, f"run-{name}", WINDOW, now=hour(0))
            for h in range(10):
                rows = [usage_row(name, at=h, model=f"fal-ai/m{m}") for m in range(50)]
                commit(store, rows, h, h + 1, name=name, run=f"run-{name}")
            store.finish_run(f"run-{name}", RunOutcome.SUCCEEDED, None, now=hour(10))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=sync, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert {name: store.count_rows(name) for name in names} == dict.fromkeys(names, 500)
    assert {name: store.list_runs(name)[0].rows_written for name in names} == dict.fromkeys(names, 500)
    assert store.count_rows() == 2000
