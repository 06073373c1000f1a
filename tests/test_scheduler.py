"""The embedded scheduler: due connections, single flight, skipping, jitter and a clean stop."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connector_sdk.host import Host
from connector_sdk.models import Connection, ConnectionState, RunOutcome, utcnow
from connector_sdk.scheduler import Scheduler, is_due
from connector_sdk.sync import compute_window, next_sync_time
from connectors.fal.simulator import FalSimulator, Fault
from tests.conftest import FAST_RETRIES, TEAM, CliRunner
from tests.helpers import truth_rows, window_bounds

NOW = datetime(2026, 5, 1, 12, 34, tzinfo=UTC)


def conn(state: ConnectionState, next_sync_at: datetime | None) -> Connection:
    return Connection(name="c", connector="fal", config={}, state=state, created_at=NOW, next_sync_at=next_sync_at)


def test_a_connection_is_due_when_its_time_has_come_and_it_can_sync() -> None:
    assert is_due(conn(ConnectionState.CONNECTED, None), NOW)
    assert is_due(conn(ConnectionState.CONNECTED, NOW), NOW)
    assert not is_due(conn(ConnectionState.CONNECTED, NOW + timedelta(seconds=1)), NOW)
    assert is_due(conn(ConnectionState.ERROR, NOW), NOW), "a failed connection is retried next cycle"
    assert not is_due(conn(ConnectionState.RECONNECT_REQUIRED, None), NOW)
    assert not is_due(conn(ConnectionState.DISCONNECTED, None), NOW)


def test_windows_are_whole_utc_hours_backfill_first_then_the_lookback() -> None:
    first = compute_window(None, NOW, backfill_days=30, lookback_hours=48)
    assert (first.start, first.end) == (datetime(2026, 4, 1, 12, tzinfo=UTC), datetime(2026, 5, 1, 13, tzinfo=UTC))
    later = compute_window(datetime(2026, 5, 1, 11, tzinfo=UTC), NOW, backfill_days=30, lookback_hours=48)
    assert (later.start, later.end) == (datetime(2026, 4, 29, 12, tzinfo=UTC), datetime(2026, 5, 1, 13, tzinfo=UTC))
    gap = compute_window(datetime(2026, 4, 20, 7, tzinfo=UTC), NOW, backfill_days=30, lookback_hours=0)
    assert gap.start == datetime(2026, 4, 20, 7, tzinfo=UTC), "after a reconnect the gap since the watermark is filled"


def test_next_sync_times_spread_within_the_jitter() -> None:
    times = {next_sync_time(NOW, 3600, 0.1) for _ in range(200)}
    assert all(NOW + timedelta(seconds=3240) <= t <= NOW + timedelta(seconds=3960) for t in times)
    assert len(times) > 150


def test_one_cycle_syncs_each_due_connection_once_and_skips_those_waiting_for_a_key(
    host: Host, sim: FalSimulator, connect: Callable
) -> None:
    for name in ("a", "b", "c"):
        connect(name, backfill_days=1)
    host.change_state("c", ConnectionState.RECONNECT_REQUIRED, "revoked")
    runs = Scheduler(host, concurrency=2).run_once()
    assert sorted(r.connection for r in runs) == ["a", "b"]
    assert {r.outcome for r in runs} == {RunOutcome.SUCCEEDED}
    assert Scheduler(host).run_once() == [], "nothing is due before the interval"
    for c in host.store.list_connections():
        if c.name != "c":
            assert c.next_sync_at > host.now() + timedelta(minutes=50)


def test_a_broken_connection_does_not_hold_up_the_healthy_ones(
    host: Host, sim: FalSimulator, connect: Callable
) -> None:
    connect("healthy", backfill_days=1)
    other = sim.add_account("other-team")
    host.connect("fal", "flaky", {"api_key": other, "base_url": sim.base_url, "backfill_days": 1})
    sim.revoke_key(other)
    runs = {r.connection: r.outcome for r in Scheduler(host, concurrency=2).run_once()}
    assert runs == {"healthy": RunOutcome.SUCCEEDED, "flaky": RunOutcome.RECONNECT_REQUIRED}


def test_the_loop_runs_until_stopped_and_a_stop_ends_syncs_after_their_page(
    host: Host, sim: FalSimulator, connect: Callable
) -> None:
    name = connect(backfill_days=3)
    scheduler = Scheduler(host, concurrency=1, tick_seconds=0.05)
    thread = threading.Thread(target=scheduler.run_forever)
    thread.start()
    deadline = time.monotonic() + 20
    while not host.store.list_runs(name) and time.monotonic() < deadline:
        time.sleep(0.02)
    scheduler.stop()
    thread.join(timeout=20)
    assert not thread.is_alive()
    (run,) = host.store.list_runs(name)
    assert run.outcome in (RunOutcome.CANCELLED, RunOutcome.SUCCEEDED)
    assert host.store.lease_holder(name, now=host.now()) is None


def test_sigterm_stops_run_cleanly_and_the_next_start_resumes(
    cli: CliRunner, sim: FalSimulator, admin_key: str, home: Path
) -> None:
    assert (
        cli(
            "connect",
            "fal",
            "--name",
            "slow",
            "--base-url",
            sim.base_url,
            "--backfill-days",
            "5",
            "--page-size",
            "20",
            env={"FAL_KEY": admin_key},
        ).returncode
        == 0
    )
    sim.inject(Fault(path="/models/usage", status=429, headers={"Retry-After": "0.3"}, after=3, times=10_000))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAL_", "CONNECTOR_HOST_"))}
    env.update({"CONNECTOR_HOST_HOME": str(home), **FAST_RETRIES, "CONNECTOR_HOST_MAX_ATTEMPTS": "1000"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "connector_sdk", "run", "--interval", "3600"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not any(r["status"] == 429 for r in sim.requests) and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "stopping" in err
    (status,) = json.loads(cli("status", "--format", "json").stdout)
    assert status["state"] == "connected", "a stopped sync is not an error"
    assert status["rows"] > 0, "the pages before the stop are kept"
    stopped = sqlite3.connect(home / "connector-host.db").execute("SELECT outcome FROM sync_runs").fetchall()
    assert stopped == [("cancelled",)]

    sim.clear_faults()
    resumed = cli("run", "--once")
    assert resumed.returncode == 0 and "succeeded" in resumed.stdout, "the next start resumes at once"
    start, end = window_bounds(utcnow(), 5)
    rows = [json.loads(line) for line in cli("rows", "slow").stdout.splitlines()]
    assert len(rows) == len(truth_rows(sim.truth(TEAM, start, end)))


@pytest.mark.parametrize("concurrency", [0, -1])
def test_concurrency_must_be_positive(host: Host, concurrency: int) -> None:
    from connector_sdk.errors import ConnectorHostError

    with pytest.raises(ConnectorHostError):
        Scheduler(host, concurrency=concurrency)
