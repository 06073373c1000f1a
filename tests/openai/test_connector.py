"""The OpenAI connector against the OpenAI simulator over real HTTP."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from structlog.testing import capture_logs

from connector_sdk.errors import CredentialError, TransientError
from connector_sdk.models import Page, SyncContext, SyncWindow, UsageRow, floor_hour
from connector_sdk.paging import floor_day
from connectors.openai.connector import OpenAIConnector
from connectors.openai.mapping import USER_KEY_LABEL
from connectors.openai.simulator import Fault, OpenAISimulator

from .conftest import NOW, ORG

Make = Callable[[str], OpenAIConnector]
CONTEXT = SyncContext(connector="openai", connection="oa", account=ORG, synced_at=NOW)
# Ten days back from midnight, through the current hour: two weeks' reads, restated days and today included.
WINDOW = SyncWindow(start=floor_day(NOW) - timedelta(days=10), end=floor_hour(NOW) + timedelta(hours=1))


def sync(connector: OpenAIConnector, window: SyncWindow = WINDOW) -> list[Page]:
    pages = list(connector.sync(window, CONTEXT))
    expected = window.start
    for page in pages:  # the contract the host checks: contiguous pages, each row inside its page
        assert page.covers_from == expected
        assert all(page.covers_from <= row.period_start < page.complete_through for row in page.rows)
        expected = page.complete_through
    assert expected == window.end
    return pages


def rows_of(pages: list[Page]) -> list[UsageRow]:
    return [row for page in pages for row in page.rows]


def projection(row: UsageRow | dict[str, Any]) -> tuple[Any, ...]:
    get = row.__dict__.get if isinstance(row, UsageRow) else row.get
    what = ("line_item", "unit", "quantity", "cost") if get("kind") == "cost" else ("model", "unit", "quantity")
    workspace = get("project_id") or get("workspace_id")
    return (get("kind"), get("period_start"), get("api_key_id"), workspace, *(get(name) for name in what))


def test_check_names_the_organization_and_counts_its_keys(make_connector: Make, admin_key: str) -> None:
    info = make_connector(admin_key).check()
    assert info.account == ORG
    assert info.details == {"projects": 3, "project_keys": 5, "admin_keys": 1}


def test_a_bad_or_revoked_key_is_invalid(sim: OpenAISimulator, make_connector: Make, admin_key: str) -> None:
    with pytest.raises(CredentialError) as bad:
        make_connector("sk-admin-this-is-not-a-key").check()
    assert (bad.value.kind, bad.value.status) == ("invalid", 401)
    spare = sim.issue_key(ORG, scope="admin")
    make_connector(spare).check()
    sim.revoke_key(spare)
    with pytest.raises(CredentialError) as revoked:
        list(make_connector(spare).sync(WINDOW, CONTEXT))
    assert revoked.value.kind == "invalid" and "revoked" in str(revoked.value)
    assert spare not in str(revoked.value)


def test_a_project_key_is_told_that_an_organization_owner_must_create_an_admin_key(
    sim: OpenAISimulator, make_connector: Make, admin_key: str
) -> None:
    project_key = sim.issue_key(ORG, scope="project")
    with pytest.raises(CredentialError) as refused:
        make_connector(project_key).check()
    assert (refused.value.kind, refused.value.status) == ("insufficient_scope", 403)
    message = str(refused.value)
    assert "Admin key" in message and "Organization Owner" in message and "Admin keys" in message
    assert project_key not in message


def test_a_backfill_reads_exactly_what_the_organization_billed_and_used(
    sim: OpenAISimulator, make_connector: Make, admin_key: str
) -> None:
    rows = rows_of(sync(make_connector(admin_key)))
    truth = sim.truth(ORG, WINDOW.start, WINDOW.end)
    assert len(truth) > 1000
    assert sorted(map(projection, rows), key=repr) == sorted(map(projection, truth), key=repr)
    assert {row.kind for row in rows} == {"cost", "usage"}
    assert len({row.row_id for row in rows}) == len(rows)
    for row in rows:
        if row.kind == "cost":
            assert row.currency == "USD" and row.period_end - row.period_start == timedelta(days=1)
            assert row.model == row.line_item.split(",")[0]  # type: ignore[union-attr]
        else:
            assert row.cost is None and row.period_end - row.period_start == timedelta(hours=1)


def test_a_second_sync_of_the_same_window_changes_nothing(make_connector: Make, admin_key: str) -> None:
    connector = make_connector(admin_key)
    first, second = rows_of(sync(connector)), rows_of(sync(connector))
    assert first == second


def test_time_moving_on_adds_the_new_hours_and_grows_todays_cost(
    sim: OpenAISimulator, make_connector: Make, admin_key: str
) -> None:
    connector = make_connector(admin_key)
    today = floor_day(NOW)
    before = {r.row_id: r for r in rows_of(sync(connector)) if r.period_start >= today}
    sim.now = NOW + timedelta(hours=3)
    later = SyncWindow(start=WINDOW.start, end=floor_hour(sim.now) + timedelta(hours=1))
    after = {r.row_id: r for r in rows_of(sync(connector, later)) if r.period_start >= today}
    todays_cost = [(before[rid].cost, r.cost) for rid, r in after.items() if r.kind == "cost" and rid in before]
    assert any(new > old for old, new in todays_cost)  # type: ignore[operator]
    assert max(r.period_start for r in after.values()) == floor_hour(sim.now)


def test_keys_are_named_across_projects_and_pages_and_the_unnamed_ones_are_explained(
    make_connector: Make, admin_key: str
) -> None:
    rows = rows_of(sync(make_connector(admin_key)))
    labels = {(row.api_key_label, row.workspace_name) for row in rows}
    for named in ("Production", "Staging", "CI pipeline", "Batch jobs"):
        assert any(label == named for label, _ in labels), named
    assert ("Old bot key", "Legacy bot") in labels  # a key of an archived project
    assert (USER_KEY_LABEL, "Default project") in labels  # the Playground: no API key
    deleted = {row.api_key_id for row in rows if row.api_key_label == row.api_key_id}
    assert len(deleted) == 1 and all(key.startswith("key_") for key in deleted)  # in no listing: keeps its id
    assert sum(row.cost for row in rows if row.api_key_id in deleted and row.cost) > 0


def test_a_restated_day_is_replaced_by_the_next_read_and_other_days_stay_the_same(
    sim: OpenAISimulator, make_connector: Make, admin_key: str
) -> None:
    connector = make_connector(admin_key)
    before = {row.row_id: row for row in rows_of(sync(connector))}
    restated_day = floor_day(NOW) - timedelta(days=2)
    sim.restate(ORG, restated_day)
    after = {row.row_id: row for row in rows_of(sync(connector))}
    assert after.keys() == before.keys()
    changed = {rid for rid in after if after[rid].cost != before[rid].cost}
    assert changed and {after[rid].period_start for rid in changed} == {restated_day}
    for rid in changed:
        assert after[rid].cost == before[rid].cost * Decimal("1.03")  # type: ignore[operator]


def test_the_sync_window_reaches_back_over_the_restated_days_in_whole_days(
    make_connector: Make, admin_key: str
) -> None:
    connector = make_connector(admin_key)
    recent = SyncWindow(start=floor_hour(NOW) - timedelta(hours=5), end=floor_hour(NOW) + timedelta(hours=1))
    widened = connector.sync_window(recent)
    assert widened == SyncWindow(start=floor_day(NOW) - timedelta(days=3), end=recent.end)
    assert connector.sync_window(WINDOW) == WINDOW  # already longer and whole days: unchanged


def test_a_window_starting_mid_day_leaves_that_days_cost_alone(make_connector: Make, admin_key: str) -> None:
    window = SyncWindow(start=floor_day(NOW) - timedelta(days=1, hours=-6), end=WINDOW.end)
    pages = sync(make_connector(admin_key), window)
    costs = {row.period_start for row in rows_of(pages) if row.kind == "cost"}
    assert costs == {floor_day(NOW)}


def test_only_get_requests_are_sent_and_a_rate_limit_is_waited_out(
    sim: OpenAISimulator, make_connector: Make, admin_key: str
) -> None:
    sim.inject(Fault(path="/organization/costs", status=429, headers={"Retry-After": "0"}))
    sim.inject(Fault(path="/organization/usage/images", status=503, times=2))
    with capture_logs() as logs:
        rows = rows_of(sync(make_connector(admin_key)))
    assert rows
    assert {entry["method"] for entry in sim.requests} == {"GET"}
    assert [entry["status"] for entry in sim.requests if entry["path"].endswith("/costs")][:2] == [429, 200]
    assert sum(1 for log in logs if log["event"] == "http_retry") == 3
    assert admin_key not in repr(logs)


def test_a_vendor_that_keeps_failing_gives_up_for_this_cycle(
    sim: OpenAISimulator, make_connector: Make, admin_key: str
) -> None:
    sim.inject(Fault(path="/organization/usage/completions", status=500, times=10))
    with pytest.raises(TransientError, match="completions"):
        sync(make_connector(admin_key))


def test_the_key_inventory_has_owners_scopes_and_access(make_connector: Make, admin_key: str) -> None:
    keys = {key.label: key for key in make_connector(admin_key).inventory()}
    assert keys["Spend reader"].scope == "admin"
    assert keys["Staging"].owner_project_access == "inactive" and keys["Staging"].owner_email == "bo@example.test"
    assert keys["CI pipeline"].owner_type == "service_account"
    assert "Notebook key" not in keys
    assert all(isinstance(key.created_at, datetime) and key.created_at.tzinfo == UTC for key in keys.values())


def test_the_connector_never_shows_its_key(make_connector: Make, admin_key: str) -> None:
    connector = make_connector(admin_key)
    assert admin_key not in repr(connector) and admin_key not in repr(connector.config)
