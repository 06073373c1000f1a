"""The Celery runner end to end: many fal accounts, two worker processes, one scheduling cycle."""

from __future__ import annotations

import pytest

from connector_sdk.host import Host
from connector_sdk.models import ConnectionState
from connectors.fal.simulator import FalSimulator, Fault
from tests.distributed.conftest import (
    REDIS_URL,
    Fleet,
    InFlightProbe,
    assert_rows_match_truth,
    run_outcomes,
    wait_for,
)

pytestmark = pytest.mark.distributed

CONNECTIONS = 200
LIMIT = 4


def test_200_connections_on_two_workers_match_the_simulator_and_a_revoked_key_fails_alone(
    fleet: Fleet, pg_host: Host, sim: FalSimulator
) -> None:
    names = [f"team-{i:03d}" for i in range(CONNECTIONS)]
    revoked = "team-117"
    for name in names:
        key = sim.add_account(name, n_keys=1, n_models=2, user_traffic=(name.endswith("0")))
        pg_host.connect("fal", name, {"api_key": key, "base_url": sim.base_url, "backfill_days": 1})
        if name == revoked:
            sim.revoke_key(key)
    # Requests that take a while, so that workers would overlap far beyond the limit without it.
    sim.inject(Fault(path="/models/usage", status=200, delay=0.03, times=1_000_000))
    fleet.extra_env["CONNECTOR_HOST_MAX_CONCURRENT_PER_HOST"] = str(LIMIT)

    with InFlightProbe(sim) as probe:
        fleet.worker(concurrency=6)
        fleet.worker(concurrency=6)
        assert f"enqueued {CONNECTIONS} connection(s)" in fleet.schedule_once()

        def cycle_done() -> bool:
            runs = run_outcomes(fleet.store_url)
            return len(runs) == CONNECTIONS and all(r[-1][0] != "running" for r in runs.values())

        wait_for(cycle_done, timeout=120, fleet=fleet, what="one cycle of 200 connections")

    runs = run_outcomes(fleet.store_url)
    assert {name: [o for o, _ in r] for name, r in runs.items()} == {
        name: ["reconnect_required" if name == revoked else "succeeded"] for name in names
    }, "each connection synced exactly once"
    states = {c.name: c.state for c in pg_host.store.list_connections()}
    assert states[revoked] == ConnectionState.RECONNECT_REQUIRED
    assert all(states[n] == ConnectionState.CONNECTED for n in names if n != revoked)
    for name in names:
        if name != revoked:
            assert_rows_match_truth(pg_host, sim, name, name, 1)
    assert pg_host.store.count_rows(revoked) == 0
    assert 2 <= probe.peak <= LIMIT, f"at most {LIMIT} requests in flight at fal, saw {probe.peak}"

    # The next cycle finds nothing due: synced ones wait an interval, the revoked one waits for a new key.
    assert "enqueued 0 connection(s)" in fleet.schedule_once()
    status = {s.name: s for s in pg_host.statuses()}
    assert status[revoked].state == ConnectionState.RECONNECT_REQUIRED
    assert status["team-000"].state == ConnectionState.CONNECTED and status["team-000"].rows > 0


def test_a_redis_broker_runs_the_same_cycle(fleet: Fleet, pg_host: Host, sim: FalSimulator) -> None:
    names = [f"r-{i}" for i in range(5)]
    for name in names:
        key = sim.add_account(name, n_keys=1, n_models=2)
        pg_host.connect("fal", name, {"api_key": key, "base_url": sim.base_url, "backfill_days": 1})
    fleet.broker_url = REDIS_URL.rsplit("/", 1)[0] + "/2"
    fleet.worker(concurrency=2)
    assert "enqueued 5 connection(s)" in fleet.schedule_once()
    wait_for(
        lambda: [o for r in run_outcomes(fleet.store_url).values() for o, _ in r] == ["succeeded"] * 5,
        timeout=60,
        fleet=fleet,
        what="a cycle through Redis",
    )
    for name in names:
        assert_rows_match_truth(pg_host, sim, name, name, 1)
