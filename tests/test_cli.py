"""The real CLI in a subprocess, against the fal simulator over real HTTP on loopback."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from connector_sdk.host import Host
from connector_sdk.models import floor_hour, utcnow
from connectors.fal.simulator import FalSimulator, Fault
from tests.conftest import TEAM, CliRunner
from tests.helpers import truth_rows, window_bounds


@pytest.fixture
def connected(cli: CliRunner, sim: FalSimulator, admin_key: str) -> str:
    result = cli(
        "connect",
        "fal",
        "--name",
        "prod",
        "--base-url",
        sim.base_url,
        "--backfill-days",
        "2",
        env={"FAL_KEY": admin_key},
    )
    assert result.returncode == 0, result.stderr
    return "prod"


def rows_json(cli: CliRunner, *args: str) -> list[dict]:
    result = cli("rows", *args)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_help_reads_well(cli: CliRunner) -> None:
    result = cli("--help")
    assert result.returncode == 0
    for command in ("connect", "sync", "run", "status", "rows", "report", "reconnect", "disconnect", "demo"):
        assert command in result.stdout
    assert "exit status" in cli("sync", "--help").stdout.lower()


def test_connect_reads_the_key_from_the_environment_and_says_which_account(
    cli: CliRunner, sim: FalSimulator, admin_key: str
) -> None:
    result = cli("connect", "fal", "--name", "prod", "--base-url", sim.base_url, env={"FAL_KEY": admin_key})
    assert result.returncode == 0, result.stderr
    assert "acme-ai" in result.stdout


def test_connect_reads_the_key_from_stdin(cli: CliRunner, sim: FalSimulator, admin_key: str) -> None:
    result = cli(
        "connect", "fal", "--name", "prod", "--base-url", sim.base_url, "--api-key-stdin", stdin=admin_key + "\n"
    )
    assert result.returncode == 0, result.stderr


def test_connect_without_a_key_explains_where_keys_come_from(cli: CliRunner, sim: FalSimulator) -> None:
    result = cli("connect", "fal", "--name", "prod", "--base-url", sim.base_url)
    assert result.returncode == 2
    assert "FAL_KEY" in result.stderr and "--api-key-stdin" in result.stderr


def test_a_bad_key_and_a_non_admin_key_exit_non_zero_with_what_to_do(
    cli: CliRunner, sim: FalSimulator, admin_key: str
) -> None:
    bad = cli("connect", "fal", "--name", "x", "--base-url", sim.base_url, env={"FAL_KEY": "bad:key"})
    assert bad.returncode == 3
    assert "invalid" in bad.stderr and "Admin" in bad.stderr
    api_key = sim.issue_key(TEAM, scope="API")
    narrow = cli("connect", "fal", "--name", "x", "--base-url", sim.base_url, env={"FAL_KEY": api_key})
    assert narrow.returncode == 3
    assert "not Admin-scoped" in narrow.stderr
    assert json.loads(cli("status", "--format", "json").stdout) == []


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--backfill-days", "-1"], "backfill_days"),
        (["--base-url", "not a url"], "base_url"),
        (["--base-url", "http://api.fal.ai/v1"], "loopback"),
    ],
)
def test_invalid_configuration_exits_2_and_stores_nothing(
    cli: CliRunner, admin_key: str, args: list[str], says: str
) -> None:
    result = cli("connect", "fal", "--name", "x", *args, env={"FAL_KEY": admin_key})
    assert result.returncode == 2
    assert says in result.stderr
    assert "Traceback" not in result.stderr
    assert json.loads(cli("status", "--format", "json").stdout) == []


def test_an_unknown_connection_is_a_clear_error(cli: CliRunner, home: Path) -> None:
    Host.open(home, store_url="").close()  # a store without that connection (no store at all is another error)
    for args in (["sync", "nope"], ["status", "nope"], ["rows", "nope"], ["report", "nope"], ["disconnect", "nope"]):
        result = cli(*args)
        assert result.returncode == 2, args
        assert "no connection named 'nope'" in result.stderr


def test_sync_then_status_rows_and_report_agree_with_fal(cli: CliRunner, sim: FalSimulator, connected: str) -> None:
    synced = cli("sync", connected)
    assert synced.returncode == 0, synced.stderr
    assert "succeeded" in synced.stdout

    (status,) = json.loads(cli("status", connected, "--format", "json").stdout)
    assert status["state"] == "connected"
    assert status["watermark"] is not None and status["last_success"] is not None
    start, end = window_bounds(utcnow(), 2)
    expected = truth_rows(sim.truth(TEAM, start, end))
    assert status["rows"] == len(expected)

    rows = rows_json(cli, connected)
    assert len(rows) == len(expected) == len({r["row_id"] for r in rows})
    assert all(isinstance(r["cost"], str) for r in rows), "money is exact decimal text"
    assert sum(Decimal(r["cost"]) for r in rows) == sum(c for _q, c in expected.values())

    report = json.loads(cli("report", connected, "--format", "json").stdout)
    by_label = {line["api_key_label"]: line for line in report["lines"]}
    assert "User key" in by_label
    assert Decimal(report["totals"]["USD"]) == sum(c for _q, c in expected.values())
    for label, line in by_label.items():
        mine = [r for r in rows if r["api_key_label"] == label]
        assert Decimal(line["cost"]) == sum(Decimal(r["cost"]) for r in mine)
        assert line["models"] == sorted({r["model"] for r in mine})


def test_rows_export_as_csv_and_filter_by_period(cli: CliRunner, connected: str) -> None:
    assert cli("sync", connected).returncode == 0
    since = (floor_hour(utcnow()) - timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M:%SZ")
    recent = rows_json(cli, connected, "--since", since)
    assert recent and all(r["period_start"] >= since for r in recent)
    table = list(csv.DictReader(io.StringIO(cli("rows", connected, "--format", "csv").stdout)))
    assert len(table) == len(rows_json(cli, connected))
    assert set(table[0]) >= {"row_id", "api_key_label", "model", "cost", "currency", "period_start"}
    assert cli("rows", connected, "--since", "yesterday").returncode == 2


def test_a_revoked_key_exits_3_then_reconnect_fills_the_gap(
    cli: CliRunner, sim: FalSimulator, connected: str, admin_key: str
) -> None:
    assert cli("sync", connected).returncode == 0
    sim.revoke_key(admin_key)
    failed = cli("sync", connected)
    assert failed.returncode == 3
    assert "reconnect" in failed.stdout + failed.stderr
    (status,) = json.loads(cli("status", connected, "--format", "json").stdout)
    assert status["state"] == "reconnect_required"
    assert "rejected the API key" in status["reason"]
    assert cli("run", "--once").returncode == 0, "the scheduler skips a connection that waits for a key"

    still_bad = cli("reconnect", connected, env={"FAL_KEY": admin_key})
    assert still_bad.returncode == 3
    fresh = sim.issue_key(TEAM)
    assert cli("reconnect", connected, env={"FAL_KEY": fresh}).returncode == 0
    assert cli("sync", connected).returncode == 0
    (status,) = json.loads(cli("status", connected, "--format", "json").stdout)
    assert status["state"] == "connected"


def test_giving_up_after_retries_exits_4(cli: CliRunner, sim: FalSimulator, connected: str) -> None:
    sim.inject(Fault(path="/models/usage", status=500, times=50))
    result = cli("sync", connected)
    assert result.returncode == 4
    assert "did not answer" in result.stdout
    sim.clear_faults()
    assert cli("sync", connected).returncode == 0


def test_a_malformed_response_exits_1_naming_the_field(cli: CliRunner, sim: FalSimulator, connected: str) -> None:
    body = b'{"time_series":[{"bucket":"2026-01-01T00:00:00Z","results":[{"endpoint_id":"x"}]}],"next_cursor":null}'
    sim.inject(Fault(path="/models/usage", status=200, body=body))
    result = cli("sync", connected)
    assert result.returncode == 1
    assert "unit" in result.stdout and "Traceback" not in result.stderr


def test_run_once_syncs_every_due_connection(cli: CliRunner, sim: FalSimulator, admin_key: str) -> None:
    for name in ("a", "b", "c"):
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
        )
    result = cli("run", "--once", "--concurrency", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("succeeded") == 3
    again = cli("run", "--once")
    assert again.stdout.count("succeeded") == 0, "nothing is due again before the interval"


def test_disconnect_keeps_rows_and_purge_removes_them(cli: CliRunner, connected: str) -> None:
    cli("sync", connected)
    kept = len(rows_json(cli, connected))
    assert cli("disconnect", connected).returncode == 0
    (status,) = json.loads(cli("status", connected, "--format", "json").stdout)
    assert status["state"] == "disconnected"
    assert len(rows_json(cli, connected)) == kept
    assert cli("sync", connected).returncode == 2
    assert cli("disconnect", connected, "--purge", "--yes").returncode == 0
    assert json.loads(cli("status", "--format", "json").stdout) == []


def test_the_key_never_reaches_disk_logs_or_output_in_plain_text(
    cli: CliRunner, sim: FalSimulator, connected: str, admin_key: str, home: Path
) -> None:
    secret = admin_key.split(":")[1]
    outputs = [cli("sync", connected), cli("status"), cli("rows", connected), cli("report", connected)]
    sim.revoke_key(admin_key)
    outputs.append(cli("--log-level", "debug", "sync", connected))
    for result in outputs:
        assert secret not in result.stdout + result.stderr
    for path in home.rglob("*"):
        if path.is_file() and path.name != "secret.key":
            assert secret.encode() not in path.read_bytes(), path
    (credential,) = sqlite3.connect(home / "connector-host.db").execute("SELECT credential FROM connections").fetchone()
    assert credential and secret.encode() not in credential
    assert oct((home / "secret.key").stat().st_mode & 0o777) == "0o600"
    assert oct((home / "connector-host.db").stat().st_mode & 0o777) == "0o600"


def test_logs_are_json_lines_bound_to_the_connection_and_run_when_not_on_a_terminal(
    cli: CliRunner, connected: str
) -> None:
    result = cli("sync", connected)
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    started = next(e for e in events if e["event"] == "sync_started")
    assert started["connection"] == connected and started["run_id"] and started["timestamp"].endswith("Z")


def test_demo_runs_offline_and_prints_the_report(cli: CliRunner) -> None:
    result = cli("demo", "--days", "2")
    assert result.returncode == 0, result.stderr
    assert "User key" in result.stdout
    assert "total" in result.stdout and "USD" in result.stdout


def test_every_command_works_unchanged_on_either_store(
    cli: CliRunner, sim: FalSimulator, admin_key: str, store_url: str
) -> None:
    env = {"FAL_KEY": admin_key, "CONNECTOR_HOST_STORE": store_url}
    assert (
        cli("connect", "fal", "--name", "prod", "--base-url", sim.base_url, "--backfill-days", "1", env=env).returncode
        == 0
    )
    assert cli("sync", "prod", env=env).returncode == 0
    (status,) = json.loads(cli("status", "--format", "json", env=env).stdout)
    start, end = window_bounds(utcnow(), 1)
    expected = truth_rows(sim.truth(TEAM, start, end))
    assert status["rows"] == len(expected)
    report = json.loads(cli("--store", store_url, "report", "--format", "json").stdout)
    assert Decimal(report["totals"]["USD"]) == sum(c for _q, c in expected.values())
    exported = [json.loads(line) for line in cli("rows", "prod", env=env).stdout.splitlines()]
    assert len(exported) == len(expected)


def test_other_config_fields_are_set_by_name_but_never_a_secret(
    cli: CliRunner, sim: FalSimulator, admin_key: str
) -> None:
    ok = cli(
        "connect",
        "fal",
        "--name",
        "p",
        "--base-url",
        sim.base_url,
        "--set",
        "timeout_seconds=5",
        env={"FAL_KEY": admin_key},
    )
    assert ok.returncode == 0, ok.stderr
    refused = cli("connect", "fal", "--name", "q", "--set", "api_key=a:b", env={"FAL_KEY": admin_key})
    assert refused.returncode == 2 and "never argv" in refused.stderr
    bad = cli("connect", "fal", "--name", "r", "--set", "timeout_seconds=soon", env={"FAL_KEY": admin_key})
    assert bad.returncode == 2 and "timeout_seconds" in bad.stderr


def test_a_command_whose_extra_is_missing_says_how_to_install_it() -> None:
    from click.testing import CliRunner as ClickRunner

    from connector_sdk.cli import _needs_extra

    result = ClickRunner().invoke(_needs_extra("serve", "portal", "Serve the portal"), ["--port", "1"])
    assert result.exit_code == 2
    assert "pip install 'connector-host[portal]'" in result.output
