"""`sync` stopped by SIGTERM or Ctrl-C: the run is cancelled (not failed), the connection stays healthy and due,
the lease is released, and the next sync resumes; the exit status says which signal stopped it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connector_sdk.host import Host
from connector_sdk.models import ConnectionState, RunOutcome
from connector_sdk.sync import sync_now
from connectors.fal.simulator import FalSimulator
from tests.conftest import FAST_RETRIES, TEAM, CliRunner
from tests.helpers import stored_rows, truth_rows


def start_sync(home: Path, name: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAL_", "CONNECTOR_HOST_"))}
    env.update({"CONNECTOR_HOST_HOME": str(home), **FAST_RETRIES})
    return subprocess.Popen(
        [sys.executable, "-m", "connector_sdk", "sync", name],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def usage_requests(sim: FalSimulator) -> int:
    return sum(1 for r in sim.requests if r["path"].endswith("/models/usage"))


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signalled_sync_is_cancelled_and_the_next_one_resumes(
    cli: CliRunner, sim: FalSimulator, admin_key: str, home: Path, signum: signal.Signals, code: int
) -> None:
    connect = ("connect", "fal", "--name", "slow", "--base-url", sim.base_url, "--backfill-days", "5")
    assert cli(*connect, "--page-size", "20", env={"FAL_KEY": admin_key}).returncode == 0
    sim.latency = 0.05  # about 150 pages: the signal lands in the middle of the backfill
    proc = start_sync(home, "slow")
    try:
        deadline = time.monotonic() + 60
        while usage_requests(sim) < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert "Aborted" not in err and "Traceback" not in err
    assert f"received {signum.name}" in err
    assert "slow: cancelled" in out

    with Host.open(home) as host:
        (run,) = host.store.list_runs("slow", limit=10)
        connection = host.store.get_connection("slow")
        assert run.outcome == RunOutcome.CANCELLED and run.message
        assert connection.state == ConnectionState.CONNECTED and connection.reason is None
        assert connection.next_sync_at is not None and connection.next_sync_at <= datetime.now(UTC), "due at once"
        assert host.store.lease_holder("slow", now=host.now()) is None, "the lease is released"
        assert connection.watermark is not None, "the pages before the stop are kept"
        whole = truth_rows(sim.truth(TEAM, run.window_start, run.window_end))
        assert 0 < run.rows_written < len(whole), "it stopped in the middle of the backfill"
    (status,) = json.loads(cli("status", "--format", "json").stdout)
    assert status["state"] == "connected"

    sim.latency = 0.0
    resumed = cli("sync", "slow")
    assert resumed.returncode == 0, resumed.stderr
    with Host.open(home) as host:
        runs = host.store.list_runs("slow", limit=10)
        assert [r.outcome for r in runs] == [RunOutcome.SUCCEEDED, RunOutcome.CANCELLED]
        start = min(r.window_start for r in runs)
        end = max(r.window_end for r in runs)
        assert stored_rows(host.store.iter_rows("slow")) == truth_rows(sim.truth(TEAM, start, end))


def test_ctrl_c_inside_a_sync_in_process_records_it_cancelled(host: Host, connect) -> None:  # type: ignore[no-untyped-def]
    name = connect(page_size=20)

    def interrupt(_progress: object) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sync_now(host, name, progress=interrupt)
    (run,) = host.store.list_runs(name, limit=10)
    connection = host.store.get_connection(name)
    assert run.outcome == RunOutcome.CANCELLED and run.message and "Ctrl-C" in run.message
    assert connection.state == ConnectionState.CONNECTED and connection.reason is None
    assert connection.next_sync_at is not None and connection.next_sync_at <= host.now()
    assert host.store.lease_holder(name, now=host.now()) is None
