"""Syncing a fal connection through the host, against the simulator over real HTTP on loopback."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from connector_sdk import hookimpl
from connector_sdk.errors import ConfigError, CredentialError
from connector_sdk.host import Host
from connector_sdk.models import ConnectionState, RunOutcome, floor_hour
from connector_sdk.sync import sync_now
from connectors.fal.simulator import FalSimulator, Fault
from tests.conftest import TEAM
from tests.helpers import stored_rows, truth_rows, window_bounds


def truth(sim: FalSimulator, host: Host, days: int = 3, name: str = "fal-test") -> dict:
    """The simulator's truth over every hour the connection's syncs asked for."""
    start, end = window_bounds(host.now(), days)
    runs = host.store.list_runs(name, limit=1000) if host.store.list_connections() else []
    start = min([start, *(run.window_start for run in runs)])
    return truth_rows(sim.truth(TEAM, start, end))


class Recorder:
    """A throwaway plugin that records every event the host fires."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    @hookimpl
    def connector_sdk_rows_emitted(self, connection, rows) -> None:
        self.events.append(("rows", len(rows)))

    @hookimpl
    def connector_sdk_sync_finished(self, connection, run) -> None:
        self.events.append(("finished", run.outcome))

    @hookimpl
    def connector_sdk_connection_status_changed(self, connection, old, new, reason) -> None:
        self.events.append(("status", (old, new)))

    def of(self, kind: str) -> list[Any]:
        return [value for k, value in self.events if k == kind]


@pytest.fixture
def recorder(host: Host) -> Recorder:
    listener = Recorder()
    host.plugins.manager.register(listener, name="recorder")
    return listener


def test_first_sync_backfills_exactly_what_fal_reports(host: Host, sim: FalSimulator, connect: Callable) -> None:
    name = connect()
    run = sync_now(host, name)
    assert run.outcome == RunOutcome.SUCCEEDED, run.message
    assert run.window_end - run.window_start == timedelta(days=3, hours=1)
    assert stored_rows(host.store.iter_rows(name)) == truth(sim, host)
    assert run.rows_written == host.store.count_rows(name) > 100
    assert run.pages > 3
    assert host.store.get_connection(name).watermark == floor_hour(host.now())


def test_usage_is_requested_the_documented_way(host: Host, sim: FalSimulator, connect: Callable) -> None:
    sync_now(host, connect())
    usage = [r for r in sim.requests if r["path"].startswith("/v1/models/usage")]
    first = usage[0]["query"]
    assert first["timeframe"] == ["hour"]
    assert set(first["expand"]) == {"time_series", "auth_method", "auth_method_structured"}
    assert first["start"][0].endswith("Z") and first["end"][0].endswith("Z")
    assert all("cursor" in r["query"] for r in usage[1:])
    assert {r["method"] for r in sim.requests} == {"GET"}


def test_syncing_again_never_duplicates(host: Host, sim: FalSimulator, connect: Callable) -> None:
    name = connect()
    sync_now(host, name)
    before = stored_rows(host.store.iter_rows(name))
    second = sync_now(host, name)
    assert second.outcome == RunOutcome.SUCCEEDED
    assert second.window_end - second.window_start == timedelta(hours=49)  # 48 h lookback + current hour
    assert stored_rows(host.store.iter_rows(name)) == before == truth(sim, host)


def test_revisions_inside_the_lookback_are_mirrored(host: Host, sim: FalSimulator, connect: Callable) -> None:
    name = connect()
    sync_now(host, name)
    for hours_ago in (2, 5, 30):
        sim.revise(TEAM, sim.now - timedelta(hours=hours_ago))
    assert stored_rows(host.store.iter_rows(name)) != truth(sim, host)
    sync_now(host, name)
    assert stored_rows(host.store.iter_rows(name)) == truth(sim, host)


def test_a_key_revoked_mid_backfill_asks_for_reconnect_and_keeps_what_was_synced(
    host: Host, sim: FalSimulator, connect: Callable, recorder: Recorder, admin_key: str
) -> None:
    name = connect()
    sim.inject(Fault(path="/models/usage", status=401, after=3, times=100))
    run = sync_now(host, name)

    assert run.outcome == RunOutcome.RECONNECT_REQUIRED
    assert "rejected the API key" in run.message and "Admin" in run.message
    connection = host.store.get_connection(name)
    assert connection.state == ConnectionState.RECONNECT_REQUIRED
    kept = stored_rows(host.store.iter_rows(name))
    assert kept, "rows of the pages before the failure are kept"
    assert connection.watermark is not None and connection.watermark < floor_hour(host.now())
    assert all(key[0] < connection.watermark for key in kept), "the watermark is not past the rows it holds"
    expected = truth(sim, host)
    assert all(expected[key] == value for key, value in kept.items())

    with pytest.raises(CredentialError, match="needs a new key"):
        sync_now(host, name)
    assert recorder.of("status").count((ConnectionState.CONNECTED, ConnectionState.RECONNECT_REQUIRED)) == 1

    sim.clear_faults()
    host.reconnect(name, {"api_key": sim.issue_key(TEAM, alias="Replacement")})
    assert host.store.get_connection(name).state == ConnectionState.CONNECTED
    after = sync_now(host, name)
    assert after.outcome == RunOutcome.SUCCEEDED
    assert after.window_start <= connection.watermark, "the gap since the watermark is filled"
    assert stored_rows(host.store.iter_rows(name)) == truth(sim, host)


def test_rate_limits_are_waited_out(host: Host, sim: FalSimulator, connect: Callable) -> None:
    name = connect()
    sim.inject(Fault(path="/models/usage", status=429, headers={"Retry-After": "0"}, after=1, times=2))
    run = sync_now(host, name)
    assert run.outcome == RunOutcome.SUCCEEDED
    assert stored_rows(host.store.iter_rows(name)) == truth(sim, host)
    assert [r["status"] for r in sim.requests].count(429) == 2


def test_a_server_that_keeps_failing_is_given_up_on_and_the_next_sync_recovers(
    host: Host, sim: FalSimulator, connect: Callable
) -> None:
    name = connect()
    sim.inject(Fault(path="/models/usage", status=503, after=2, times=3))
    run = sync_now(host, name)
    assert run.outcome == RunOutcome.GAVE_UP
    assert "did not answer" in run.message and "503" in run.message
    assert host.store.get_connection(name).state == ConnectionState.ERROR
    partial = host.store.count_rows(name)
    assert partial > 0

    assert sync_now(host, name).outcome == RunOutcome.SUCCEEDED
    assert host.store.get_connection(name).state == ConnectionState.CONNECTED
    assert stored_rows(host.store.iter_rows(name)) == truth(sim, host)


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        (Fault(path="/models/usage", action="truncate", after=2), "not valid JSON"),
        (Fault(path="/models/usage", status=200, body=b"<html>oops</html>", after=2), "not valid JSON"),
        (
            Fault(
                path="/models/usage",
                status=200,
                after=2,
                body=b'{"time_series":[{"bucket":"2026-01-01T00:00:00Z","results":[{"unit":"image"}]}],'
                b'"next_cursor":null,"has_more":false}',
            ),
            "endpoint_id",
        ),
    ],
)
def test_a_malformed_response_fails_the_sync_clearly_and_writes_nothing_half(
    host: Host, sim: FalSimulator, connect: Callable, fault: Fault, says: str
) -> None:
    name = connect()
    sim.inject(fault)
    run = sync_now(host, name)
    assert run.outcome == RunOutcome.FAILED
    assert says in run.message
    assert host.store.get_connection(name).state == ConnectionState.ERROR
    expected = truth(sim, host)
    assert all(expected[k] == v for k, v in stored_rows(host.store.iter_rows(name)).items())
    assert sync_now(host, name).outcome == RunOutcome.SUCCEEDED
    assert stored_rows(host.store.iter_rows(name)) == truth(sim, host)


def test_events_fire_per_page_per_sync_and_per_status_change(
    host: Host, sim: FalSimulator, connect: Callable, recorder: Recorder
) -> None:
    name = connect()
    run = sync_now(host, name)
    assert recorder.of("status") == [(None, ConnectionState.CONNECTED)]
    assert sum(recorder.of("rows")) == run.rows_written
    assert len(recorder.of("rows")) == run.pages
    assert recorder.of("finished") == [RunOutcome.SUCCEEDED]


def test_a_failing_listener_never_fails_a_sync(host: Host, connect: Callable) -> None:
    class Broken:
        @hookimpl
        def connector_sdk_rows_emitted(self, connection, rows) -> None:
            raise RuntimeError("listener bug")

    host.plugins.manager.register(Broken(), name="broken-listener")
    assert sync_now(host, connect()).outcome == RunOutcome.SUCCEEDED


def test_a_second_sync_of_the_same_connection_is_refused_while_one_runs(host: Host, connect: Callable) -> None:
    from connector_sdk.errors import SyncInProgress

    name = connect()
    assert host.store.acquire_lease(name, "other-worker", now=host.now(), ttl_seconds=60)
    with pytest.raises(SyncInProgress, match="already being synced"):
        sync_now(host, name)
    assert host.statuses(name)[0].state == ConnectionState.SYNCING


def test_an_empty_account_syncs_to_no_rows(host: Host, sim: FalSimulator) -> None:
    key = sim.add_account("empty-team", empty=True)
    host.connect("fal", "empty", {"api_key": key, "base_url": sim.base_url, "backfill_days": 2})
    run = sync_now(host, "empty")
    assert (run.outcome, run.rows_written, host.store.count_rows("empty")) == (RunOutcome.SUCCEEDED, 0, 0)


def test_legacy_responses_with_only_cost_are_read(host: Host, sim: FalSimulator) -> None:
    key = sim.add_account("old-team", legacy_cost=True)
    host.connect("fal", "old", {"api_key": key, "base_url": sim.base_url, "backfill_days": 1})
    assert sync_now(host, "old").outcome == RunOutcome.SUCCEEDED
    start, end = window_bounds(host.now(), 1)
    assert stored_rows(host.store.iter_rows("old")) == truth_rows(sim.truth("old-team", start, end))


@pytest.mark.parametrize(
    ("name", "config", "says"),
    [
        ("", {}, "connection name"),
        ("has space", {}, "connection name"),
        ("ok", {"backfill_days": -1}, "backfill_days"),
        ("ok", {"lookback_hours": -5}, "lookback_hours"),
        ("ok", {"base_url": "ftp://example.com"}, "base_url"),
        ("ok", {"base_url": "http://api.example.com/v1"}, "only allowed for loopback"),
        ("ok", {"api_key": "no-colon-here"}, "KEY_ID:KEY_SECRET"),
        ("ok", {"surprise": 1}, "surprise"),
    ],
)
def test_invalid_configuration_is_refused_and_nothing_is_stored(
    host: Host, sim: FalSimulator, admin_key: str, name: str, config: dict, says: str
) -> None:
    values = {"api_key": admin_key, "base_url": sim.base_url, **config}
    with pytest.raises(ConfigError, match=says) as caught:
        host.connect("fal", name, values)
    assert admin_key.split(":")[1] not in str(caught.value)
    assert host.store.list_connections() == []
    assert [r for r in sim.requests if r["path"] != "/v1/account/billing"] == []


def test_a_duplicate_name_is_refused(host: Host, connect: Callable) -> None:
    connect("twice")
    with pytest.raises(ConfigError, match="already exists"):
        connect("twice")
    assert len(host.store.list_connections()) == 1


def test_bad_and_non_admin_keys_are_refused_with_advice(host: Host, sim: FalSimulator, admin_key: str) -> None:
    api_only = sim.issue_key(TEAM, scope="API")
    with pytest.raises(CredentialError, match="not Admin-scoped") as caught:
        host.connect("fal", "x", {"api_key": api_only, "base_url": sim.base_url})
    assert caught.value.kind == "insufficient_scope"
    with pytest.raises(CredentialError, match="invalid, malformed or revoked"):
        host.connect("fal", "x", {"api_key": "nope:nope", "base_url": sim.base_url})
    assert host.store.list_connections() == []


def test_disconnect_deletes_the_credential_and_keeps_rows_unless_purged(host: Host, connect: Callable) -> None:
    name = connect()
    sync_now(host, name)
    rows = host.store.count_rows(name)
    host.disconnect(name)
    assert host.store.get_credential(name) is None
    assert host.store.count_rows(name) == rows
    assert host.store.get_connection(name).state == ConnectionState.DISCONNECTED
    with pytest.raises(ConfigError, match="disconnected"):
        sync_now(host, name)
    host.disconnect(name, purge=True)
    assert host.store.count_rows() == 0
    assert host.store.list_connections() == []


def test_disconnecting_waits_for_a_running_sync(host: Host, connect: Callable) -> None:
    from connector_sdk.errors import SyncInProgress

    name = connect()
    assert host.store.acquire_lease(name, "other-worker", now=host.now(), ttl_seconds=60)
    with pytest.raises(SyncInProgress):
        host.disconnect(name, purge=True)
    assert host.store.get_connection(name).state == ConnectionState.CONNECTED
    host.store.release_lease(name, "other-worker")
    host.disconnect(name, purge=True)
    assert host.store.list_connections() == []
