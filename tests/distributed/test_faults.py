"""The Celery runner under faults: a worker killed mid-sync, the broker stopped, PostgreSQL restarted."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

import pytest

from connector_sdk.errors import StoreError
from connector_sdk.host import Host
from connector_sdk.models import ConnectionState
from connectors.fal.simulator import FalSimulator, Fault
from tests.distributed.conftest import Fleet, assert_rows_match_truth, run_outcomes, wait_for, wait_port

pytestmark = pytest.mark.distributed


def connect_teams(host: Host, sim: FalSimulator, names: list[str], **config: object) -> None:
    for name in names:
        key = sim.add_account(name, n_keys=3, n_models=4)
        host.connect("fal", name, {"api_key": key, "base_url": sim.base_url, **config})


def all_succeeded(fleet: Fleet, names: list[str], *, after: dict[str, int] | None = None) -> bool:
    """Every connection has a succeeded run (after its first ``after[name]`` runs) and none is running."""
    runs = run_outcomes(fleet.store_url)
    skip = after or {}
    # Not "the last run": runs are ordered by start time to the second, and a retry can start in the second its
    # cut attempt started.
    return all(
        any(o == "succeeded" for o, _ in runs.get(n, [])[skip.get(n, 0) :]) and all(o != "running" for o, _ in runs[n])
        for n in names
    )


def lease_holders(host: Host) -> dict[str, str]:
    held = {c.name: host.store.lease_holder(c.name, now=host.now()) for c in host.store.list_connections()}
    return {name: holder for name, holder in held.items() if holder}


def test_a_worker_killed_mid_sync_has_its_tasks_redelivered_and_nothing_is_lost_or_doubled(
    fleet: Fleet, pg_host: Host, sim: FalSimulator
) -> None:
    names = [f"big-{i}" for i in range(4)]
    connect_teams(pg_host, sim, names, backfill_days=4, page_size=20)
    sim.inject(Fault(path="/models/usage", status=200, delay=0.05, times=1_000_000))  # syncs of a few seconds
    doomed = fleet.worker(concurrency=4)
    fleet.schedule_once()

    def doomed_mid_sync() -> bool:
        held = [h for h in lease_holders(pg_host).values() if f":{doomed.pid}:" in h]
        return len(held) == len(names) and pg_host.store.count_rows() > 200

    wait_for(doomed_mid_sync, timeout=60, fleet=fleet, what="the first worker to be mid-sync on every connection")
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=10)
    rows_at_kill = pg_host.store.count_rows()
    fleet.worker(concurrency=4)
    wait_for(lambda: all_succeeded(fleet, names), timeout=90, fleet=fleet, what="the redelivered syncs to finish")

    runs = run_outcomes(fleet.store_url)
    for name in names:
        outcomes = [o for o, _ in runs[name]]
        assert outcomes == ["failed", "succeeded"], (name, runs[name])
        assert "interrupted" in (runs[name][0][1] or "")
        assert_rows_match_truth(pg_host, sim, name, name, 4)
    assert pg_host.store.count_rows() > rows_at_kill


def rabbitmq(action: str) -> None:
    subprocess.run(["rabbitmqctl", action], check=True, capture_output=True, timeout=120)


def test_workers_and_scheduler_recover_by_themselves_after_the_broker_stops_for_a_while(
    fleet: Fleet, pg_host: Host, sim: FalSimulator
) -> None:
    first = [f"early-{i}" for i in range(5)]
    connect_teams(pg_host, sim, first, backfill_days=1)
    workers = [fleet.worker(concurrency=3), fleet.worker(concurrency=3)]
    scheduler = fleet.spawn("schedule", "--tick", "0.5")
    wait_for(lambda: all_succeeded(fleet, first), timeout=60, fleet=fleet, what="the first cycle")

    rabbitmq("stop_app")
    try:
        wait_port(5672, up=False)
        later = [f"late-{i}" for i in range(5)]
        connect_teams(pg_host, sim, later, backfill_days=1)  # due now, while nothing can be enqueued
        time.sleep(3)
        assert all(n not in run_outcomes(fleet.store_url) for n in later)
    finally:
        rabbitmq("start_app")
    wait_port(5672)
    wait_for(lambda: all_succeeded(fleet, later), timeout=90, fleet=fleet, what="syncs enqueued after the outage")

    assert all(p.poll() is None for p in [*workers, scheduler]), fleet.log_text()
    runs = run_outcomes(fleet.store_url)
    assert all([o for o, _ in runs[n]] == ["succeeded"] for n in first + later), runs
    for name in first + later:
        assert_rows_match_truth(pg_host, sim, name, name, 1)


def restart_postgres() -> None:
    cluster = os.listdir("/etc/postgresql")[0]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", cluster, "main", "restart"],
        check=True,
        capture_output=True,
        timeout=120,
    )


def test_syncs_cut_by_a_postgres_restart_fail_cleanly_and_succeed_on_the_next_try(
    fleet: Fleet, pg_host: Host, sim: FalSimulator
) -> None:
    names = [f"pg-{i}" for i in range(8)]
    connect_teams(pg_host, sim, names, backfill_days=3, page_size=20)
    sim.inject(Fault(path="/models/usage", status=200, delay=0.03, times=1_000_000))
    workers = [fleet.worker(concurrency=4), fleet.worker(concurrency=4)]
    scheduler = fleet.spawn("schedule", "--tick", "0.5")
    wait_for(
        lambda: pg_host.store.count_rows() > 300 and len(lease_holders(pg_host)) >= 4,
        timeout=60,
        fleet=fleet,
        what="syncs under way",
    )
    restart_postgres()
    wait_port(5432)
    with contextlib.suppress(StoreError):  # this test's own connection was cut too; the next call reconnects
        pg_host.store.count_rows()

    def recovered() -> bool:
        # The connection's state follows its last finished run: connected means that run succeeded.
        states = {pg_host.store.get_connection(name).state for name in names}
        return all_succeeded(fleet, names) and states == {ConnectionState.CONNECTED}

    # Within the test's own timeout, so that a failure shows the fleet's logs.
    wait_for(recovered, timeout=80, fleet=fleet, what="every sync to succeed after all")

    assert all(p.poll() is None for p in [*workers, scheduler]), fleet.log_text()
    runs = run_outcomes(fleet.store_url)
    cut = [n for n in names if [o for o, _ in runs[n]] != ["succeeded"]]
    assert cut, f"the restart cut no sync short: {runs}"
    for name in names:
        assert "running" not in [o for o, _ in runs[name]]
        assert_rows_match_truth(pg_host, sim, name, name, 3)
