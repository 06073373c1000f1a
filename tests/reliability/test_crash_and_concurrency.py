"""Killed syncs, concurrent syncs and a fleet with broken members: nothing lost, nothing doubled."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from connector_sdk.host import Host
from connector_sdk.models import ConnectionState, RunOutcome, utcnow
from connector_sdk.scheduler import Scheduler
from connectors.fal.simulator import FalSimulator, Fault
from tests.conftest import FAST_RETRIES, CliRunner
from tests.helpers import stored_rows, truth_rows, window_bounds

pytestmark = pytest.mark.reliability

KILLS = int(os.environ.get("CONNECTOR_HOST_CRASH_ITERATIONS", "20"))


def spawn(home: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAL_", "CONNECTOR_HOST_"))}
    env.update({"CONNECTOR_HOST_HOME": str(home), **FAST_RETRIES})
    return subprocess.Popen(
        [sys.executable, "-m", "connector_sdk", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def db(home: Path) -> sqlite3.Connection:
    return sqlite3.connect(home / "connector-host.db")


def assert_rows_equal_truth(home: Path, sim: FalSimulator, team: str, name: str, days: int) -> int:
    start, end = window_bounds(utcnow(), days)
    with Host.open(home, store_url="") as host:
        start = min([start, *(run.window_start for run in host.store.list_runs(name, limit=10_000))])
        stored = stored_rows(host.store.iter_rows(name))  # raises on a duplicate natural key
    expected = truth_rows(sim.truth(team, start, end))
    assert stored == expected
    return len(stored)


def test_kill_9_at_random_points_of_a_long_backfill_loses_and_doubles_nothing(
    cli: CliRunner, sim: FalSimulator, home: Path
) -> None:
    key = sim.add_account("big-team", n_keys=6, n_models=10)
    assert (
        cli(
            "connect",
            "fal",
            "--name",
            "big",
            "--base-url",
            sim.base_url,
            "--backfill-days",
            "10",
            "--page-size",
            "25",
            env={"FAL_KEY": key},
        ).returncode
        == 0
    )
    sim.inject(Fault(path="/models/usage", status=200, delay=0.05, times=100_000))  # a backfill of some seconds
    rng = random.Random(20261123)
    killed_mid_sync = 0
    for _ in range(KILLS):
        proc = spawn(home, "sync", "big")
        time.sleep(rng.uniform(0.3, 2.0))
        if proc.poll() is None:
            killed_mid_sync += 1
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    final = cli("sync", "big")
    assert final.returncode == 0, final.stdout + final.stderr
    assert killed_mid_sync >= KILLS // 2, "most kills landed while a sync was running"

    rows = assert_rows_equal_truth(home, sim, "big-team", "big", 10)
    assert rows > 1_500
    assert db(home).execute("PRAGMA integrity_check").fetchone() == ("ok",)
    outcomes = [o for (o,) in db(home).execute("SELECT outcome FROM sync_runs")]
    assert "running" not in outcomes, "runs of killed processes are closed as interrupted"
    assert outcomes.count("failed") >= KILLS // 4, "kills interrupted syncs that had started, not just start-ups"


def test_two_sync_processes_on_one_connection_one_works_the_other_skips(
    cli: CliRunner, sim: FalSimulator, home: Path, admin_key: str
) -> None:
    assert (
        cli(
            "connect",
            "fal",
            "--name",
            "prod",
            "--base-url",
            sim.base_url,
            "--backfill-days",
            "2",
            env={"FAL_KEY": admin_key},
        ).returncode
        == 0
    )
    sim.inject(Fault(path="/models/usage", status=200, delay=0.15, times=10_000))  # slow pages: the syncs overlap
    first, second = spawn(home, "sync", "prod"), spawn(home, "sync", "prod")
    results = sorted((p.wait(timeout=60), p.communicate()[1]) for p in (first, second))
    assert [code for code, _ in results] == [0, 5]
    assert "already being synced" in results[1][1]
    assert_rows_equal_truth(home, sim, "acme-ai", "prod", 2)


def test_two_schedulers_share_the_work_without_syncing_anything_twice(
    cli: CliRunner, sim: FalSimulator, home: Path, admin_key: str
) -> None:
    names = [f"c{i}" for i in range(4)]
    for name in names:
        assert (
            cli(
                "connect",
                "fal",
                "--name",
                name,
                "--base-url",
                sim.base_url,
                "--backfill-days",
                "1",
                env={"FAL_KEY": admin_key},
            ).returncode
            == 0
        )
    sim.inject(Fault(path="/models/usage", status=200, delay=0.1, times=10_000))
    runners = [spawn(home, "run", "--concurrency", "2"), spawn(home, "run", "--concurrency", "2")]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = db(home).execute("SELECT COUNT(*) FROM sync_runs WHERE outcome = 'succeeded'").fetchone()[0]
        if done >= len(names):
            break
        time.sleep(0.2)
    for runner in runners:
        runner.send_signal(signal.SIGTERM)
    for runner in runners:
        assert runner.wait(timeout=30) == 0, runner.communicate()[1]
    per_connection = dict(db(home).execute("SELECT connection, COUNT(*) FROM sync_runs GROUP BY connection"))
    assert per_connection == dict.fromkeys(names, 1), "each connection synced exactly once"
    for name in names:
        assert_rows_equal_truth(home, sim, "acme-ai", name, 1)


def test_a_fleet_with_broken_members_keeps_the_healthy_ones_current(host: Host, sim: FalSimulator) -> None:
    healthy = []
    for i in range(40):
        key = sim.add_account(f"team-{i}", n_keys=1, n_models=2, user_traffic=False)
        host.connect("fal", f"ok-{i}", {"api_key": key, "base_url": sim.base_url, "backfill_days": 1})
        healthy.append(f"ok-{i}")
    for i in range(4):
        key = sim.add_account(f"revoked-{i}", n_keys=1, n_models=2)
        host.connect("fal", f"revoked-{i}", {"api_key": key, "base_url": sim.base_url, "backfill_days": 1})
        sim.revoke_key(key)
    with FalSimulator(seed=3) as down, FalSimulator(seed=4) as garbled:
        for i in range(3):
            key = down.add_account(f"down-{i}")
            host.connect("fal", f"down-{i}", {"api_key": key, "base_url": down.base_url, "backfill_days": 1})
            key = garbled.add_account(f"garbled-{i}")
            host.connect("fal", f"garbled-{i}", {"api_key": key, "base_url": garbled.base_url, "backfill_days": 1})
        garbled.inject(Fault(path="/models/usage", action="truncate", times=10_000))
        down.stop()
        runs = {run.connection: run for run in Scheduler(host, concurrency=8).run_once()}

    assert len(runs) == 50
    assert all(runs[name].outcome == RunOutcome.SUCCEEDED for name in healthy)
    states = {c.name: c.state for c in host.store.list_connections()}
    assert all(states[f"revoked-{i}"] == ConnectionState.RECONNECT_REQUIRED for i in range(4))
    assert all(runs[f"down-{i}"].outcome == RunOutcome.GAVE_UP for i in range(3))
    assert all(runs[f"garbled-{i}"].outcome == RunOutcome.FAILED for i in range(3))
    assert all(states[f"{kind}-{i}"] == ConnectionState.ERROR for kind in ("down", "garbled") for i in range(3))
    assert "connection failed" in runs["down-0"].message and "not valid JSON" in runs["garbled-0"].message
    for i in range(40):
        start, end = window_bounds(host.now(), 1)
        assert stored_rows(host.store.iter_rows(f"ok-{i}")) == truth_rows(sim.truth(f"team-{i}", start, end))
