"""The store contract of the key inventory and findings, run on SQLite and on PostgreSQL alike."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from connector_sdk.errors import ConfigError, UnknownConnection
from connector_sdk.models import Finding, FindingKind, ListedKey, RunOutcome, Severity, SyncWindow
from connector_sdk.stores import Store, open_store
from connector_sdk.stores.migrations import LATEST_VERSION
from tests.store_fixtures import hour, quantity_row, usage_row
from tests.store_fixtures import store_fixture as store_fixture
from tests.store_fixtures import store_url_fixture as store_url_fixture
from tests.test_store_contract import add, commit

NOW = hour(24 * 10)  # ten days after the rows' first hour


def listed(key_id: str, name: str | None = None, **fields: Any) -> ListedKey:
    return ListedKey(key_id=key_id, name=name or f"{key_id} name", listing="fal /keys", **fields)


def condition(kind: FindingKind, subject: str, *, at: datetime = NOW, **evidence: Any) -> Finding:
    return Finding(
        connection="acme",
        connector="fal",
        kind=kind,
        severity=Severity.HIGH,
        subject=subject,
        subject_label=f"{subject} label",
        message=f"{kind.value} of {subject}",
        evidence=evidence or {"spend": "1.5"},
        opened_at=at,
    )


def payloads(finding: Finding, change: str) -> list[tuple[str, str]]:
    return [("hook", json.dumps({"id": finding.id, "subject": finding.subject, "change": change}))]


def queued(store: Store) -> list[dict[str, Any]]:
    return [json.loads(item.payload) for item in store.pending("acme", "hook", now=NOW + timedelta(days=1))]


@pytest.fixture
def acme(store: Store) -> Store:
    add(store)
    store.add_sink("acme", "hook", kind="webhook", config={}, secret=None, now=hour(0))
    return store


# -- listings and the key history ------------------------------------------------------------------------------
def test_the_first_listing_is_the_baseline_and_every_key_is_listed(acme: Store) -> None:
    events = acme.record_listing("acme", [listed("k2"), listed("k1", scope="admin")], now=hour(1))
    assert [(e.key_id, e.event, e.detail["baseline"]) for e in events] == [
        ("k1", "listed", True),
        ("k2", "listed", True),
    ]
    assert events[0].detail["scope"] == "admin" and events[0].detail["listing"] == "fal /keys"
    info = acme.key_listing("acme")
    assert info is not None and (info.first_listed_at, info.last_listed_at, info.listings) == (hour(1), hour(1), 1)
    assert acme.key_events("acme") == events


def test_renames_changes_departures_and_returns_are_history_that_is_never_deleted(acme: Store) -> None:
    acme.record_listing("acme", [listed("k1", "build"), listed("k2", owner="ann", owner_active=True)], now=hour(1))
    second = acme.record_listing(
        "acme", [listed("k1", "build bot"), listed("k3")], now=hour(2)
    )  # k1 renamed, k2 gone, k3 new
    assert [(e.key_id, e.event) for e in second] == [("k1", "renamed"), ("k3", "listed"), ("k2", "gone")]
    assert second[0].detail == {"from": "build", "to": "build bot"}
    assert second[1].detail["baseline"] is False
    assert second[2].detail == {"name": "k2 name", "last_listed_at": "2026-01-05T01:00:00Z"}
    third = acme.record_listing(
        "acme", [listed("k1", "build bot"), listed("k2", owner="ann", owner_active=False), listed("k3")], now=hour(3)
    )
    assert [(e.key_id, e.event) for e in third] == [("k2", "returned"), ("k2", "changed")]
    assert third[1].detail == {"owner_active": {"from": True, "to": False}}
    assert [e.event for e in acme.key_events("acme", "k2")] == ["listed", "gone", "returned", "changed"]
    assert [e.at for e in acme.key_events("acme", "k2")] == [hour(1), hour(2), hour(3), hour(3)]
    info = acme.key_listing("acme")
    assert info is not None and (info.first_listed_at, info.last_listed_at, info.listings) == (hour(1), hour(3), 3)


def test_an_unchanged_listing_adds_no_history(acme: Store) -> None:
    keys = [listed("k1", last_used_at=hour(0)), listed("k2")]
    acme.record_listing("acme", keys, now=hour(1))
    assert acme.record_listing("acme", [listed("k1", last_used_at=hour(2)), listed("k2")], now=hour(3)) == []
    (k1, _k2) = acme.key_inventory("acme", now=hour(3))
    assert (k1.last_used_at, k1.last_listed_at, k1.first_listed_at) == (hour(2), hour(3), hour(1))


def test_a_gone_key_stays_in_the_inventory_marked_gone(acme: Store) -> None:
    acme.record_listing("acme", [listed("k1", owner="ann"), listed("k2")], now=hour(1))
    acme.record_listing("acme", [listed("k2")], now=hour(2))
    acme.record_listing("acme", [listed("k2")], now=hour(3))  # still gone: no second "gone"
    k1, k2 = acme.key_inventory("acme", now=hour(3))
    assert (k1.key_id, k1.listed, k1.gone_at, k1.last_listed_at, k1.owner) == ("k1", False, hour(2), hour(1), "ann")
    assert (k2.listed, k2.gone_at, k2.last_listed_at) == (True, None, hour(3))
    assert [e.event for e in acme.key_events("acme", "k1")] == ["listed", "gone"]


# -- the inventory ---------------------------------------------------------------------------------------------
def test_the_inventory_joins_listed_keys_with_the_keys_rows_name_and_their_exact_spend(acme: Store) -> None:
    acme.record_listing(
        "acme",
        [listed("key-1", "prod", scope="api", owner="ann", created_at=hour(0), status="active")],
        now=NOW,
    )
    commit(
        acme,
        [
            usage_row(at=24 * 1, key="key-1", cost="0.000000000001"),  # 9 days ago: in 30 days, not in 7
            usage_row(at=24 * 8, key="key-1", cost="2.5", model="fal-ai/a"),  # 2 days ago
            usage_row(at=24 * 8, key="shadow", label="who is this", cost="1.25"),
            quantity_row(at=24 * 9, key="key-1"),  # a usage row: counts as use, adds no money
        ],
        0,
        24 * 10,
    )
    key1, shadow = acme.key_inventory("acme", now=NOW)
    assert (key1.connector, key1.name, key1.scope, key1.owner, key1.listed) == ("fal", "prod", "api", "ann", True)
    assert (key1.first_usage_at, key1.last_usage_at) == (hour(24), hour(24 * 9))
    assert key1.first_seen_at == hour(24)  # its rows came before its first listing
    assert (key1.spend_7d, key1.spend_30d, key1.currency) == (Decimal("2.5"), Decimal("2.500000000001"), "USD")
    assert (shadow.key_id, shadow.name, shadow.listed, shadow.first_listed_at) == ("shadow", "who is this", False, None)
    assert (shadow.spend_7d, shadow.spend_30d, shadow.first_seen_at) == (Decimal("1.25"), Decimal("1.25"), hour(24 * 8))


def test_first_and_last_use_survive_a_page_that_replaces_them_and_go_with_the_rows(acme: Store) -> None:
    commit(acme, [usage_row(at=5, key="k"), usage_row(at=2, key="k")], 0, 10)
    commit(acme, [usage_row(at=30, key="k")], 10, 40)
    (key,) = acme.key_inventory("acme", now=hour(40))
    assert (key.first_usage_at, key.last_usage_at) == (hour(2), hour(30))
    acme.delete_rows("acme")
    assert acme.key_inventory("acme", now=hour(40)) == []


def test_the_inventory_of_every_connection_is_by_connection_then_key(acme: Store) -> None:
    add(acme, "beta", connector="openai")
    acme.record_listing("beta", [listed("b2"), listed("b1")], now=hour(1))
    acme.record_listing("acme", [listed("a1")], now=hour(1))
    assert [(k.connection, k.connector, k.key_id) for k in acme.key_inventory(None, now=hour(2))] == [
        ("acme", "fal", "a1"),
        ("beta", "openai", "b1"),
        ("beta", "openai", "b2"),
    ]


def test_spend_groups_by_key_and_person_with_nulls_and_exact_sums(acme: Store) -> None:
    commit(
        acme,
        [
            usage_row(at=1, key=None, label="User key", user="ann", cost="0.1"),
            usage_row(at=2, key=None, label="User key", user="ann", cost="0.2"),
            usage_row(at=3, key=None, label="User key", user=None, cost="0.0000000000001"),
            usage_row(at=3, key="k", cost="5"),
            quantity_row(at=4, key="k"),
        ],
        0,
        48,
    )
    spend = acme.grouped_spend("acme", since=hour(0), until=hour(48), by=("api_key_id", "login_username", "currency"))
    assert spend == {
        (None, "ann", "USD"): (2, Decimal("0.3")),
        (None, None, "USD"): (1, Decimal("0.0000000000001")),
        ("k", None, "USD"): (1, Decimal("5")),
    }
    daily = acme.grouped_spend(None, since=hour(0), until=hour(48), by=("day", "api_key_id"))
    assert daily[("2026-01-05", "k")] == (1, Decimal(5))
    # Once a run ends, SQLite answers whole days from its daily totals, which keep key ids and people: same figures.
    acme.start_run("acme", "run-2", SyncWindow(start=hour(0), end=hour(48)), now=hour(48))
    acme.finish_run("run-2", RunOutcome.SUCCEEDED, None, now=hour(48))
    by = ("api_key_id", "login_username", "currency")
    assert acme.grouped_spend("acme", since=hour(0), until=hour(48), by=by) == spend
    assert acme.grouped_spend(None, since=hour(0), until=hour(48), by=("day", "api_key_id")) == daily
    with pytest.raises(ValueError, match="cannot group"):
        acme.grouped_spend("acme", since=hour(0), until=hour(1), by=("cost",))


# -- findings --------------------------------------------------------------------------------------------------
def test_a_condition_opens_one_finding_with_its_payload_in_the_same_transaction(acme: Store) -> None:
    (opened,) = acme.reconcile_findings(
        "acme", [condition(FindingKind.NEW_KEY, "k1")], kinds=[FindingKind.NEW_KEY], now=NOW, outbox=payloads
    )
    finding, change = opened
    assert change == "opened" and finding.id is not None and finding.is_open
    assert (finding.kind, finding.subject, finding.opened_at, finding.evidence) == (
        FindingKind.NEW_KEY,
        "k1",
        NOW,
        {"spend": "1.5"},
    )
    assert queued(acme) == [{"id": finding.id, "subject": "k1", "change": "opened"}]
    assert acme.get_finding(finding.id) == finding


def test_the_same_condition_never_opens_twice_and_its_evidence_follows(acme: Store) -> None:
    kinds = [FindingKind.IDLE_KEY]
    acme.reconcile_findings("acme", [condition(FindingKind.IDLE_KEY, "k1")], kinds=kinds, now=NOW, outbox=payloads)
    later = NOW + timedelta(hours=1)
    same = acme.reconcile_findings(
        "acme", [condition(FindingKind.IDLE_KEY, "k1")], kinds=kinds, now=later, outbox=payloads
    )
    assert same == []
    assert acme.list_findings("acme")[0].updated_at is None  # nothing changed, nothing updated
    moved = condition(FindingKind.IDLE_KEY, "k1", spend="2")
    assert acme.reconcile_findings("acme", [moved], kinds=kinds, now=later, outbox=payloads) == []
    (finding,) = acme.list_findings("acme")
    assert (finding.evidence, finding.updated_at, finding.opened_at) == ({"spend": "2"}, later, NOW)
    assert len(queued(acme)) == 1  # an update is no news


def test_a_condition_that_cleared_resolves_only_if_its_kind_was_judged(acme: Store) -> None:
    both = [condition(FindingKind.IDLE_KEY, "k1"), condition(FindingKind.WEB_UI_SPEND, "ann")]
    acme.reconcile_findings(
        "acme", both, kinds=[FindingKind.IDLE_KEY, FindingKind.WEB_UI_SPEND], now=NOW, outbox=payloads
    )
    later = NOW + timedelta(hours=1)
    # Idle keys were not judged (no listing this time): that finding stays open though its condition is absent.
    (resolved,) = acme.reconcile_findings("acme", [], kinds=[FindingKind.WEB_UI_SPEND], now=later, outbox=payloads)
    assert (resolved[0].subject, resolved[0].resolved_at, resolved[1]) == ("ann", later, "resolved")
    assert [f.subject for f in acme.list_findings("acme", open_only=True)] == ["k1"]
    assert [p["change"] for p in queued(acme)] == ["opened", "opened", "resolved"]
    # It clears and comes back: a new finding, the old one stays resolved.
    (again,) = acme.reconcile_findings("acme", both[1:], kinds=[FindingKind.WEB_UI_SPEND], now=later, outbox=payloads)
    assert again[1] == "opened" and again[0].id != resolved[0].id
    assert len(acme.list_findings("acme", kind=FindingKind.WEB_UI_SPEND)) == 2


def test_at_most_one_open_finding_per_connection_kind_and_subject_is_enforced_in_sql(
    acme: Store, store_url: str
) -> None:
    acme.reconcile_findings(
        "acme", [condition(FindingKind.IDLE_KEY, "k1")], kinds=[FindingKind.IDLE_KEY], now=NOW, outbox=payloads
    )
    insert = (
        "INSERT INTO findings (connection, connector, kind, subject, subject_label, severity, message, evidence, "
        "opened_at) VALUES ('acme', 'fal', 'idle_key', 'k1', 'x', 'low', 'x', '{}', '2026-01-05T00:00:00Z')"
    )
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        raw_sql(store_url, insert)


def test_acknowledging_keeps_a_finding_open_unless_told_to_resolve_it(acme: Store) -> None:
    acme.reconcile_findings(
        "acme",
        [condition(FindingKind.IDLE_KEY, "k1"), condition(FindingKind.NEW_KEY, "k2")],
        kinds=list(FindingKind),
        now=NOW,
        outbox=payloads,
    )
    idle, new = sorted(acme.list_findings("acme"), key=lambda f: f.subject)
    later = NOW + timedelta(hours=2)
    kept, closed = acme.acknowledge_finding(
        idle.id or 0, "Ann still uses it", now=later, resolve=False, outbox=payloads
    )
    assert (kept.is_open, kept.acknowledged_at, kept.ack_note, closed) == (True, later, "Ann still uses it", False)
    done, closed = acme.acknowledge_finding(new.id or 0, "expected", now=later, resolve=True, outbox=payloads)
    assert (done.resolved_at, done.acknowledged_at, closed) == (later, later, True)
    assert [p["change"] for p in queued(acme)] == ["opened", "opened", "resolved"]
    again, closed = acme.acknowledge_finding(new.id or 0, "noted twice", now=later, resolve=True, outbox=payloads)
    assert (again.ack_note, closed) == ("noted twice", False)
    with pytest.raises(ConfigError, match="no finding 999"):
        acme.acknowledge_finding(999, "x", now=later, resolve=False, outbox=payloads)
    with pytest.raises(ConfigError, match="no finding 999"):
        acme.get_finding(999)


def test_findings_are_listed_newest_first_by_connection_openness_and_kind(acme: Store) -> None:
    add(acme, "beta")
    acme.reconcile_findings(
        "acme", [condition(FindingKind.IDLE_KEY, "k1")], kinds=list(FindingKind), now=NOW, outbox=payloads
    )
    acme.reconcile_findings(
        "beta",
        [condition(FindingKind.NEW_KEY, "k9").model_copy(update={"connection": "beta"})],
        kinds=list(FindingKind),
        now=NOW,
        outbox=lambda f, c: [],
    )
    acme.reconcile_findings("acme", [], kinds=list(FindingKind), now=NOW, outbox=payloads)
    assert [(f.connection, f.subject) for f in acme.list_findings()] == [("beta", "k9"), ("acme", "k1")]
    assert [f.subject for f in acme.list_findings(open_only=True)] == ["k9"]
    assert [f.subject for f in acme.list_findings("acme")] == ["k1"]
    assert acme.list_findings(kind=FindingKind.NEW_KEY)[0].subject == "k9"


def test_a_judge_takes_over_anothers_findings_whose_conditions_hold_and_resolves_the_rest_where_they_are(
    acme: Store,
) -> None:
    add(acme, "copy")
    acme.add_sink("copy", "hook", kind="webhook", config={}, secret=None, now=hour(0))
    kinds = [FindingKind.IDLE_KEY, FindingKind.OWNER_GONE, FindingKind.WEB_UI_SPEND]
    on_copy = [
        condition(kind, subject).model_copy(update={"connection": "copy"})
        for kind, subject in [
            (FindingKind.IDLE_KEY, "k1"),  # still holds: moves
            (FindingKind.OWNER_GONE, "k2"),  # cleared: resolves on copy
            (FindingKind.WEB_UI_SPEND, "ann"),  # acme holds it open already: a duplicate
            (FindingKind.NEW_KEY, "k3"),  # a kind not judged now: left alone
        ]
    ]
    acme.reconcile_findings("copy", on_copy, kinds=list(FindingKind), now=NOW, outbox=payloads)
    (mine, _opened), *_ = acme.reconcile_findings(
        "acme", [condition(FindingKind.WEB_UI_SPEND, "ann")], kinds=kinds, now=NOW, outbox=payloads
    )
    idle = next(f for f in acme.list_findings("copy") if f.kind == FindingKind.IDLE_KEY)
    acknowledged, _closed = acme.acknowledge_finding(idle.id or 0, "seen", now=NOW, resolve=False, outbox=payloads)
    later = NOW + timedelta(hours=1)

    changes = acme.reconcile_findings(
        "acme",
        [condition(FindingKind.IDLE_KEY, "k1", spend="2"), condition(FindingKind.WEB_UI_SPEND, "ann")],
        kinds=kinds,
        now=later,
        outbox=payloads,
        adopt=["copy"],
    )

    assert [(f.connection, f.kind, f.subject, change) for f, change in changes] == [
        ("copy", FindingKind.WEB_UI_SPEND, "ann", "resolved"),
        ("copy", FindingKind.OWNER_GONE, "k2", "resolved"),
    ]
    moved = acme.get_finding(idle.id or 0)
    assert (moved.connection, moved.opened_at, moved.acknowledged_at, moved.ack_note, moved.is_open) == (
        "acme",
        NOW,
        acknowledged.acknowledged_at,
        "seen",
        True,
    )
    assert (moved.evidence, moved.updated_at) == ({"spend": "2"}, later)
    assert acme.get_finding(mine.id or 0).is_open, "acme's own finding of a condition stays; the copy's closes"
    assert [(f.kind, f.subject) for f in acme.list_findings("copy", open_only=True)] == [(FindingKind.NEW_KEY, "k3")]
    copy_queue = [json.loads(i.payload) for i in acme.pending("copy", "hook", now=later + timedelta(days=1))]
    assert [p["change"] for p in copy_queue] == ["opened"] * 4 + ["resolved"] * 2, "each change to its own sinks"
    assert [p["change"] for p in queued(acme)] == ["opened"], "a finding taken over is no news"
    again = acme.reconcile_findings(
        "acme",
        [condition(FindingKind.IDLE_KEY, "k1", spend="2"), condition(FindingKind.WEB_UI_SPEND, "ann")],
        kinds=kinds,
        now=later,
        outbox=payloads,
        adopt=["copy"],
    )
    assert again == [] and acme.get_finding(idle.id or 0).updated_at == later


NEW_CALLS: dict[str, Callable[[Store], object]] = {
    "record_listing": lambda s: s.record_listing("nope", [], now=NOW),
    "key_listing": lambda s: s.key_listing("nope"),
    "key_inventory": lambda s: s.key_inventory("nope", now=NOW),
    "key_events": lambda s: s.key_events("nope"),
    "grouped_spend": lambda s: s.grouped_spend("nope", since=NOW, until=NOW, by=("model",)),
    "list_findings": lambda s: s.list_findings("nope"),
    "reconcile_findings": lambda s: s.reconcile_findings("nope", [], kinds=[], now=NOW, outbox=payloads),
}


@pytest.mark.parametrize("call", NEW_CALLS.values(), ids=NEW_CALLS.keys())
def test_the_inventory_refuses_an_unknown_connection(acme: Store, call: Callable[[Store], object]) -> None:
    with pytest.raises(UnknownConnection):
        call(acme)


def test_only_a_purge_deletes_the_inventory_and_findings(acme: Store) -> None:
    acme.record_listing("acme", [listed("k1")], now=hour(1))
    commit(acme, [usage_row(at=1, key="k1")], 0, 2)
    acme.reconcile_findings(
        "acme", [condition(FindingKind.IDLE_KEY, "k1")], kinds=list(FindingKind), now=NOW, outbox=payloads
    )
    acme.delete_connection("acme")
    add(acme)
    assert acme.key_inventory("acme", now=NOW) == []
    assert (acme.key_events("acme"), acme.key_listing("acme"), acme.list_findings("acme")) == ([], None, [])


# -- upgrades --------------------------------------------------------------------------------------------------
def raw_sql(url: str, *statements: str) -> None:
    if url.startswith("sqlite:///"):
        db = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            for statement in statements:
                db.execute(statement)
            db.commit()
        finally:
            db.close()
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        for statement in statements:
            db.execute(statement)


def test_a_version_7_store_gains_the_inventory_and_the_first_and_last_use_of_its_rows(
    store_url: str, tmp_path: Path
) -> None:
    first = open_store(store_url, home=tmp_path)
    add(first)
    commit(first, [usage_row(at=3, key="k1"), usage_row(at=9, key="k1"), usage_row(at=5, key=None)], 0, 10)
    first.close()
    # What a version 7 store is: no inventory tables, and its version says 7.
    drop = [f"DROP TABLE {t}" for t in ("api_keys", "key_listings", "key_events", "key_usage", "findings")]
    drop += ["DROP INDEX connections_account"]  # and no version 9
    if store_url.startswith("sqlite:///"):
        raw_sql(store_url, *drop, "DROP INDEX usage_daily_report", "PRAGMA user_version = 7")
    else:
        raw_sql(store_url, *drop, "DELETE FROM schema_version WHERE version >= 8")
    second = open_store(store_url, home=tmp_path)
    try:
        assert second.schema_version() == LATEST_VERSION == 9
        assert second.count_rows("acme") == 3
        (key,) = second.key_inventory("acme", now=hour(10))
        assert (key.key_id, key.first_usage_at, key.last_usage_at, key.listed) == ("k1", hour(3), hour(9), False)
        assert second.list_findings() == [] and second.key_listing("acme") is None
    finally:
        second.close()


def test_person_spend_is_web_ui_cost_per_person_with_the_unnamed_as_user_key(acme: Store) -> None:
    commit(
        acme,
        [
            usage_row(at=1, key=None, label="User key", user="ann", cost="0.1"),
            usage_row(at=2, key=None, label="User key", user="ann", cost="0.2", model="fal-ai/b"),
            usage_row(at=3, key=None, label="User key", user=None, cost="4"),
            usage_row(at=3, key=None, label="User key", user=None, cost="1", currency="EUR", model="fal-ai/c"),
            usage_row(at=3, key="k", user="ann", cost="5"),  # a key's use is not web-UI use, whoever holds the key
            # Spend the vendor did not break down by key (a cost report per workspace, the groups past a cap): no key,
            # and nobody's web-UI use either.
            usage_row(at=4, key=None, label="All keys", cost="70", model="claude-sonnet-4"),
            usage_row(at=4, key=None, label="Beyond the 100-group cap", cost="9", model="claude-opus-4"),
        ],
        0,
        48,
    )
    assert acme.person_spend("acme", since=hour(0), until=hour(48)) == {
        ("User key", "EUR"): Decimal(1),
        ("User key", "USD"): Decimal(4),
        ("ann", "USD"): Decimal("0.3"),
    }
    assert acme.person_spend("acme", since=hour(2), until=hour(3)) == {("ann", "USD"): Decimal("0.2")}


def test_a_listed_keys_times_must_be_aware() -> None:
    with pytest.raises(ValueError, match="aware"):
        ListedKey(key_id="k", listing="fal /keys", created_at=datetime(2026, 1, 1))
