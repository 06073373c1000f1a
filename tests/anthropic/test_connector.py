"""The Anthropic connector against the Anthropic simulator over real HTTP."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from structlog.testing import capture_logs

from connector_sdk.errors import CredentialError, TransientError
from connector_sdk.http import RetryPolicy
from connector_sdk.models import Page, SyncContext, SyncWindow, UsageRow, floor_hour
from connector_sdk.paging import floor_day
from connectors.anthropic.config import AnthropicConfig
from connectors.anthropic.connector import COST_SOURCE_STATE, COST_SOURCES, AnthropicConnector
from connectors.anthropic.mapping import (
    ALL_KEYS_LABEL,
    BEYOND_CAP_LABEL,
    DEFAULT_WORKSPACE_NAME,
    USER_KEY_LABEL,
)
from connectors.anthropic.simulator import AnthropicSimulator, Fault

from .conftest import NOW, ORG

Make = Callable[[str], AnthropicConnector]
CONTEXT = SyncContext(connector="anthropic", connection="an", account=ORG, synced_at=NOW)
# Ten days back from midnight, through the current hour: two weeks' reads, the settling days and today included.
WINDOW = SyncWindow(start=floor_day(NOW) - timedelta(days=10), end=floor_hour(NOW) + timedelta(hours=1))


def sync(connector: AnthropicConnector, window: SyncWindow = WINDOW) -> list[Page]:
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


def projection(row: UsageRow) -> tuple[Any, ...]:
    what = (row.cost, row.list_cost) if row.kind == "cost" else (row.unit, row.quantity)
    return (row.kind, row.period_start, row.api_key_id, row.workspace_id, row.model, *what)


def truth_projection(item: dict[str, Any]) -> tuple[Any, ...]:
    if item["kind"] == "cost":
        what = (Decimal(item["amount"]).scaleb(-2), Decimal(item["list_amount"]).scaleb(-2))
    else:
        what = (item["unit"], Decimal(item["quantity"]))
    return (item["kind"], item["period_start"], item["api_key_id"], item["workspace_id"], item["model"], *what)


def cost_by_day(rows: list[UsageRow]) -> dict[Any, Decimal]:
    totals: dict[Any, Decimal] = defaultdict(Decimal)
    for row in rows:
        if row.kind == "cost":
            totals[row.period_start] += row.cost  # type: ignore[operator]
    return dict(totals)


def test_check_names_the_organization_and_the_cost_source(make_connector: Make, admin_key: str) -> None:
    info = make_connector(admin_key).check()
    assert info.account == ORG
    assert info.details["workspaces"] == 3 and info.details["api_keys"] == 5
    assert info.details["cost_source"] == "cost analytics" and "per API key" in info.details["cost_detail"]


def test_a_bad_or_revoked_key_is_invalid(sim: AnthropicSimulator, make_connector: Make, admin_key: str) -> None:
    with pytest.raises(CredentialError) as bad:
        make_connector("sk-ant-admin01-this-is-not-a-key").check()
    assert (bad.value.kind, bad.value.status) == ("invalid", 401)
    spare = sim.issue_key(ORG, scope="admin")
    make_connector(spare).check()
    sim.revoke_key(spare)
    with pytest.raises(CredentialError) as revoked:
        list(make_connector(spare).sync(WINDOW, CONTEXT))
    assert revoked.value.kind == "invalid" and "revoked" in str(revoked.value)
    assert spare not in str(revoked.value)


def test_a_workspace_key_is_told_that_an_admin_creates_an_admin_key_and_where(
    sim: AnthropicSimulator, make_connector: Make, admin_key: str
) -> None:
    workspace_key = sim.issue_key(ORG, scope="workspace")
    with pytest.raises(CredentialError) as refused:
        make_connector(workspace_key).check()
    assert (refused.value.kind, refused.value.status) == ("insufficient_scope", 403)
    message = str(refused.value)
    assert "Admin key" in message and "admin role" in message and "Settings > Admin keys" in message
    assert workspace_key not in message


def test_a_backfill_reads_exactly_what_the_organization_used_and_was_billed(
    sim: AnthropicSimulator, make_connector: Make, admin_key: str
) -> None:
    rows = rows_of(sync(make_connector(admin_key)))
    truth = sim.truth(ORG, WINDOW.start, WINDOW.end)
    assert len(truth) > 1000
    assert sorted(map(projection, rows), key=repr) == sorted(map(truth_projection, truth), key=repr)
    assert {row.kind for row in rows} == {"cost", "usage"}
    assert len({row.row_id for row in rows}) == len(rows)
    units = {row.unit for row in rows if row.kind == "usage"}
    assert units == {
        "uncached_input_tokens",
        "cache_read_input_tokens",
        "cache_creation.ephemeral_1h_input_tokens",
        "cache_creation.ephemeral_5m_input_tokens",
        "output_tokens",
        "web_search_requests",
    }
    for row in rows:
        if row.kind == "cost":
            assert row.currency == "USD" and row.period_end - row.period_start == timedelta(days=1)
            assert row.discount == row.list_cost - row.cost  # type: ignore[operator]
        else:
            assert row.cost is None and row.period_end - row.period_start == timedelta(hours=1)
    assert any(row.discount for row in rows if row.kind == "cost")  # the negotiated discount is real


def test_a_second_sync_of_the_same_window_changes_nothing(make_connector: Make, admin_key: str) -> None:
    connector = make_connector(admin_key)
    first, second = rows_of(sync(connector)), rows_of(sync(connector))
    assert first == second


def test_a_restated_day_is_replaced_by_the_next_read_and_other_days_stay_the_same(
    sim: AnthropicSimulator, make_connector: Make, admin_key: str
) -> None:
    connector = make_connector(admin_key)
    before = {row.row_id: row for row in rows_of(sync(connector))}
    restated_day = floor_day(NOW) - timedelta(days=1)
    sim.restate(ORG, restated_day)
    after = {row.row_id: row for row in rows_of(sync(connector))}
    assert after.keys() == before.keys()
    changed = {rid for rid in after if after[rid] != before[rid]}
    assert changed and {(after[rid].kind, after[rid].period_start) for rid in changed} == {("cost", restated_day)}
    for rid in changed:
        assert after[rid].cost == before[rid].cost * Decimal("1.03")  # type: ignore[operator]


def test_every_sync_reaches_back_over_the_settling_days_in_whole_days(make_connector: Make, admin_key: str) -> None:
    connector = make_connector(admin_key)
    recent = SyncWindow(start=floor_hour(NOW) - timedelta(hours=5), end=floor_hour(NOW) + timedelta(hours=1))
    assert connector.sync_window(recent) == SyncWindow(start=floor_day(NOW) - timedelta(days=2), end=recent.end)
    assert connector.sync_window(WINDOW) == WINDOW  # already longer and whole days: unchanged


def test_keys_of_every_status_and_workspaces_are_named_and_the_unnamed_ones_explained(
    make_connector: Make, admin_key: str
) -> None:
    rows = rows_of(sync(make_connector(admin_key)))
    labels = {(row.api_key_label, row.workspace_name) for row in rows}
    for named in [("Production backend", "Production"), ("Research notebook", "Research")]:
        assert named in labels  # an active and an inactive key
    assert ("Old prototype", "Old experiments") in labels  # an archived key of an archived workspace
    assert ("CI smoke tests", DEFAULT_WORKSPACE_NAME) in labels  # an expired key in the default workspace
    assert (USER_KEY_LABEL, DEFAULT_WORKSPACE_NAME) in labels and (USER_KEY_LABEL, "Research") in labels  # Workbench
    assert all(row.workspace_id is None for row in rows if row.workspace_name == DEFAULT_WORKSPACE_NAME)
    deleted = {row.api_key_id for row in rows if row.api_key_label == row.api_key_id}
    assert len(deleted) == 1 and all(key.startswith("apikey_") for key in deleted)  # in no listing: keeps its id
    assert sum(row.cost for row in rows if row.api_key_id in deleted and row.cost) > 0


@pytest.mark.parametrize(("analytics", "status"), [("forbidden", 403), ("absent", 404)])
def test_without_cost_analytics_cost_comes_per_workspace_from_the_cost_report(
    sim: AnthropicSimulator, make_connector: Make, analytics: str, status: int
) -> None:
    key = sim.add_organization("Small Co", analytics=analytics)
    connector = make_connector(key)
    info = connector.check()
    assert info.details["cost_source"] == "cost report" and "read:analytics" in info.details["cost_detail"]
    context = CONTEXT.model_copy(update={"account": "Small Co"})
    rows = [row for page in connector.sync(WINDOW, context) for row in page.rows]
    assert connector.cost_source == "cost report"
    costs = [row for row in rows if row.kind == "cost"]
    assert costs and all(row.api_key_id is None and row.api_key_label == ALL_KEYS_LABEL for row in costs)
    assert all(row.list_cost is None and row.discount is None and row.line_item for row in costs)
    by_workspace: dict[Any, Decimal] = defaultdict(Decimal)
    for item in sim.truth("Small Co", WINDOW.start, WINDOW.end):
        if item["kind"] == "cost":
            by_workspace[item["period_start"], item["workspace_id"]] += Decimal(item["amount"]).scaleb(-2)
    served: dict[Any, Decimal] = defaultdict(Decimal)
    for row in costs:
        served[row.period_start, row.workspace_id] += row.cost  # type: ignore[operator]
    assert served == by_workspace  # every workspace, the default one (null) included, to the fraction of a cent
    assert {row.workspace_name for row in costs} >= {DEFAULT_WORKSPACE_NAME, "Production", "Research"}
    usage = [row for row in rows if row.kind == "usage"]
    assert usage and any(row.api_key_label == "Production backend" for row in usage)  # usage stays per key
    refused = [e for e in sim.requests if e["path"].endswith("/analytics/cost")]
    assert refused and {e["status"] for e in refused} == {status}
    assert len(refused) == 1  # asked once per sync, not once per week


@pytest.mark.parametrize(("analytics", "source"), [("on", "cost analytics"), ("forbidden", "cost report")])
def test_a_sync_remembers_the_cost_source_it_read_for_status_to_show(
    sim: AnthropicSimulator, make_connector: Make, analytics: str, source: str
) -> None:
    key = sim.add_organization("Small Co", analytics=analytics)
    context = SyncContext(connector="anthropic", connection="an", account="Small Co", synced_at=NOW)
    pages = list(make_connector(key).sync(WINDOW, context))
    assert pages and context.take_state() == {COST_SOURCE_STATE: source}
    known = SyncContext(
        connector="anthropic", connection="an", account="Small Co", synced_at=NOW, state={COST_SOURCE_STATE: source}
    )
    assert list(make_connector(key).sync(WINDOW, known)) and known.take_state() is None, "unchanged: not written again"
    assert AnthropicConnector.describe_state({COST_SOURCE_STATE: source}) == {"cost source": COST_SOURCES[source]}


def test_a_state_without_a_known_cost_source_describes_nothing() -> None:
    for state in ({}, {COST_SOURCE_STATE: "invoices"}, {COST_SOURCE_STATE: ["cost report"]}, {"other": 1}):
        assert AnthropicConnector.describe_state(state) == {}


def test_days_before_cost_analytics_began_come_from_the_cost_report() -> None:
    start = datetime(2025, 12, 27, tzinfo=UTC)
    with AnthropicSimulator(now=start + timedelta(days=12, hours=5), history_days=12, seed=7) as early:
        key = early.add_organization(ORG)
        connector = AnthropicConnector(
            AnthropicConfig(api_key=key, base_url=early.base_url), retry=RetryPolicy(max_attempts=1)
        )
        window = SyncWindow(start=start, end=start + timedelta(days=12))
        rows = [row for page in connector.sync(window, CONTEXT) for row in page.rows if row.kind == "cost"]
        connector.close()
    # The week that starts in 2025 is read from the cost report; the next one, all in 2026, per key.
    assert {row.api_key_label for row in rows if row.period_start < start + timedelta(days=7)} == {ALL_KEYS_LABEL}
    later = {row.api_key_label for row in rows if row.period_start >= start + timedelta(days=7)}
    assert later and ALL_KEYS_LABEL not in later and "Production backend" in later


def test_a_full_cost_bucket_is_read_again_one_model_at_a_time(
    sim: AnthropicSimulator, make_connector: Make, admin_key: str
) -> None:
    sim.max_groups = 5  # every day has more groups than that, but no model has
    connector = make_connector(admin_key)
    connector.group_cap = sim.max_groups
    rows = rows_of(sync(connector))
    truth = sim.truth(ORG, WINDOW.start, WINDOW.end)
    assert sorted(map(projection, rows), key=repr) == sorted(map(truth_projection, truth), key=repr)
    narrowed = [e for e in sim.requests if e["path"].endswith("/analytics/cost") and "models[]" in e["query"]]
    assert narrowed and not any(row.api_key_label == BEYOND_CAP_LABEL for row in rows)


def test_spend_a_narrowed_read_still_cannot_attribute_is_kept_and_said_so(
    sim: AnthropicSimulator, make_connector: Make, admin_key: str
) -> None:
    sim.max_groups = 3  # even one model has more groups; the default workspace cannot be asked for alone
    connector = make_connector(admin_key)
    connector.group_cap = sim.max_groups
    rows = rows_of(sync(connector))
    truth = sim.truth(ORG, WINDOW.start, WINDOW.end)
    expected: dict[Any, Decimal] = defaultdict(Decimal)
    for item in truth:
        if item["kind"] == "cost":
            expected[item["period_start"]] += Decimal(item["amount"]).scaleb(-2)
    assert cost_by_day(rows) == expected  # not a fraction of a cent is dropped
    beyond = [row for row in rows if row.api_key_label == BEYOND_CAP_LABEL]
    assert beyond and all(row.cost and row.cost > 0 and row.api_key_id is None for row in beyond)
    assert "at most 100 groups" in (beyond[0].line_item or "")
    by_workspace = {e["query"].get("workspace_ids[]", [None])[0] for e in sim.requests if "models[]" in e["query"]}
    assert len(by_workspace) > 1  # a model whose bucket was full was split by workspace


def test_without_narrowing_the_capped_buckets_would_have_lost_spend(
    sim: AnthropicSimulator, make_connector: Make, admin_key: str
) -> None:
    sim.max_groups = 5
    rows = rows_of(sync(make_connector(admin_key)))  # the connector believes the cap is 100: nothing looks full
    expected = sum(
        Decimal(i["amount"]).scaleb(-2) for i in sim.truth(ORG, WINDOW.start, WINDOW.end) if i["kind"] == "cost"
    )
    assert sum(cost_by_day(rows).values()) < expected  # the knob really caps: what the narrowing tests defend


def test_only_get_requests_are_sent_and_a_rate_limit_is_waited_out(
    sim: AnthropicSimulator, make_connector: Make, admin_key: str
) -> None:
    sim.inject(Fault(path="/organizations/analytics/cost", status=429, headers={"retry-after": "0"}))
    sim.inject(Fault(path="/organizations/usage_report/messages", status=529, times=2))
    with capture_logs() as logs:
        rows = rows_of(sync(make_connector(admin_key)))
    assert rows
    assert {entry["method"] for entry in sim.requests} == {"GET"}
    assert [e["status"] for e in sim.requests if e["path"].endswith("/analytics/cost")][:2] == [429, 200]
    assert sum(1 for log in logs if log["event"] == "http_retry") == 3
    assert admin_key not in repr(logs)


def test_a_vendor_that_keeps_failing_gives_up_for_this_cycle(
    sim: AnthropicSimulator, make_connector: Make, admin_key: str
) -> None:
    sim.inject(Fault(path="/organizations/usage_report/messages", status=500, times=10))
    with pytest.raises(TransientError, match="usage_report"):
        sync(make_connector(admin_key))


def test_the_key_inventory_lists_every_status(make_connector: Make, admin_key: str) -> None:
    keys = {key.label: key for key in make_connector(admin_key).inventory()}
    assert {key.status for key in keys.values()} == {"active", "inactive", "archived", "expired"}
    assert keys["CI smoke tests"].workspace_id is None and "Deleted key" not in keys


def test_the_connector_never_shows_its_key(make_connector: Make, admin_key: str) -> None:
    connector = make_connector(admin_key)
    assert admin_key not in repr(connector) and admin_key not in repr(connector.config)
    assert admin_key not in repr(connector.client)
