"""The Anthropic connector through the real CLI in a subprocess, against the Anthropic simulator on loopback: the key
from ANTHROPIC_ADMIN_KEY (named by the manifest) or stdin, refusals with advice and the README's exit statuses, a
backfill that stores what Anthropic serves, re-syncs, a restated day, a revoked key, and ``status`` naming the cost
source each connection reads."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from connector_sdk.models import iso
from connector_sdk.paging import floor_day
from connectors.anthropic.mapping import ALL_KEYS_LABEL
from connectors.anthropic.simulator import AnthropicSimulator
from tests.conftest import CliRunner

from .conftest import ORG

SYNCED = re.compile(r"an: succeeded, \d+ rows in \d+ pages \[(\S+) \.\. (\S+)\)")


@pytest.fixture
def sim() -> Iterator[AnthropicSimulator]:
    # The CLI syncs up to the wall clock: the simulator's present is the wall clock as the test starts.
    with AnthropicSimulator(history_days=40, seed=7) as simulator:
        yield simulator


def connect(cli: CliRunner, sim: AnthropicSimulator, key: str | None, *extra: str) -> tuple[int, str, str]:
    env = {"ANTHROPIC_ADMIN_KEY": key if key is not None else ""}
    result = cli("connect", "anthropic", "--name", "an", "--base-url", sim.base_url, *extra, env=env)
    return result.returncode, result.stdout, result.stderr


def sync(cli: CliRunner) -> tuple[datetime, datetime]:
    """Sync ``an``; returns the window the sync read (whole days, the settling days included)."""
    result = cli("sync", "an")
    assert result.returncode == 0, result.stderr
    found = SYNCED.search(result.stdout)
    assert found, result.stdout
    return datetime.fromisoformat(found[1]), datetime.fromisoformat(found[2])


def status(cli: CliRunner) -> dict[str, Any]:
    result = cli("status", "an", "--format", "json")
    assert result.returncode == 0, result.stderr
    (connection,) = json.loads(result.stdout)
    return connection


def stored_rows(cli: CliRunner) -> dict[str, dict[str, Any]]:
    """The connection's rows by id, without the moment each was written (a re-sync writes them again)."""
    result = cli("rows", "an")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    return {row["row_id"]: {k: v for k, v in row.items() if k != "synced_at"} for row in rows}


def stored(row: dict[str, Any]) -> tuple[Any, ...]:
    what = (
        (Decimal(row["cost"]), Decimal(row["list_cost"])) if row["kind"] == "cost" else (row["unit"], row["quantity"])
    )
    return (row["kind"], row["period_start"], row["api_key_id"], row["workspace_id"], row["model"], *what)


def served(item: dict[str, Any]) -> tuple[Any, ...]:
    """A row of the simulator's truth as the CLI exports it: money in dollars (Anthropic sends cents), exact."""
    if item["kind"] == "cost":
        what = (Decimal(item["amount"]).scaleb(-2), Decimal(item["list_amount"]).scaleb(-2))
    else:
        what = (item["unit"], str(item["quantity"]))
    return (item["kind"], iso(item["period_start"]), item["api_key_id"], item["workspace_id"], item["model"], *what)


def matches(rows: dict[str, dict[str, Any]], truth: list[dict[str, Any]]) -> bool:
    return sorted(map(stored, rows.values()), key=repr) == sorted(map(served, truth), key=repr)


# -- connecting ------------------------------------------------------------------------------------------------------
def test_connect_with_an_admin_key_names_the_organization(
    cli: CliRunner, sim: AnthropicSimulator, admin_key: str
) -> None:
    code, out, err = connect(cli, sim, admin_key)
    assert code == 0, err
    assert ORG in out
    connection = status(cli)
    assert (connection["connector"], connection["account"]) == ("anthropic", ORG)
    assert admin_key not in json.dumps(connection) + out + err


def test_connect_reads_the_admin_key_from_stdin(cli: CliRunner, sim: AnthropicSimulator, admin_key: str) -> None:
    result = cli(
        "connect",
        "anthropic",
        "--name",
        "an",
        "--base-url",
        sim.base_url,
        "--api-key-stdin",
        stdin=admin_key + "\n",
        env={"ANTHROPIC_ADMIN_KEY": ""},
    )
    assert result.returncode == 0, result.stderr
    assert ORG in result.stdout and admin_key not in result.stdout + result.stderr


def test_connect_without_a_key_names_the_variable_from_the_manifest(cli: CliRunner, sim: AnthropicSimulator) -> None:
    code, _, err = connect(cli, sim, None)
    assert code == 2
    assert "ANTHROPIC_ADMIN_KEY" in err and "--api-key-stdin" in err


def test_a_workspace_key_and_a_bad_key_are_refused_with_what_to_do_and_nothing_is_stored(
    cli: CliRunner, sim: AnthropicSimulator, admin_key: str
) -> None:
    workspace_key = sim.issue_key(ORG, scope="workspace")
    code, _, err = connect(cli, sim, workspace_key)
    assert code == 3  # the README's exit table: the vendor refused the key
    advice = " ".join(err.split())
    assert "admin role" in advice and "Admin key" in advice and "Settings > Admin keys" in advice
    assert workspace_key not in err
    code, _, err = connect(cli, sim, "sk-ant-admin01-not-a-real-key")
    assert code == 3
    assert "invalid" in err and "sk-ant-admin01-not-a-real-key" not in err
    listed = cli("status", "--format", "json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == []


# -- syncing ---------------------------------------------------------------------------------------------------------
def test_a_backfill_stores_what_anthropic_serves_and_a_resync_changes_nothing(
    cli: CliRunner, sim: AnthropicSimulator, admin_key: str
) -> None:
    assert connect(cli, sim, admin_key, "--backfill-days", "3")[0] == 0
    start, end = sync(cli)
    assert start == floor_day(start) and end - start > timedelta(days=3), "whole days, the backfill included"
    rows = stored_rows(cli)
    truth = sim.truth(ORG, start, end)
    assert matches(rows, truth)  # hourly usage per key and model, daily cost per key to the fraction of a cent
    assert {row["kind"] for row in rows.values()} == {"cost", "usage"}
    assert status(cli)["rows"] == len(rows)

    again = sync(cli)
    assert again[0] > start, "a re-sync reads the settling days, not the whole backfill"
    assert stored_rows(cli) == rows, "the same rows, ids and values"
    assert status(cli)["state"] == "connected"


def test_a_restated_day_is_replaced_by_the_next_sync(cli: CliRunner, sim: AnthropicSimulator, admin_key: str) -> None:
    assert connect(cli, sim, admin_key, "--backfill-days", "3")[0] == 0
    start, end = sync(cli)
    before = stored_rows(cli)
    yesterday = floor_day(sim.now) - timedelta(days=1)
    sim.restate(ORG, yesterday)  # cost that landed late: the day's bill goes up 3%

    sync(cli)
    after = stored_rows(cli)
    assert matches(after, sim.truth(ORG, start, end))

    def day_cost(rows: dict[str, dict[str, Any]]) -> Decimal:
        return sum(
            (Decimal(r["cost"]) for r in rows.values() if r["period_start"] == iso(yesterday) and r["cost"]), Decimal(0)
        )

    assert day_cost(after) == day_cost(before) * Decimal("1.03")
    unchanged = {
        rid: row for rid, row in before.items() if row["kind"] == "usage" or row["period_start"] != iso(yesterday)
    }
    assert {rid: after[rid] for rid in unchanged} == unchanged, "only the restated day's cost changed"


def test_a_revoked_key_stops_the_sync_with_exit_3_and_reconnect_required(
    cli: CliRunner, sim: AnthropicSimulator, admin_key: str
) -> None:
    assert connect(cli, sim, admin_key)[0] == 0
    sim.revoke_key(admin_key)
    result = cli("sync", "an")
    assert result.returncode == 3, result.stderr
    assert "revoked" in result.stderr and admin_key not in result.stderr
    connection = status(cli)
    assert connection["state"] == "reconnect_required"
    assert "Admin key" in connection["reason"]


# -- which cost source -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("analytics", "source"),
    [("on", "per API key"), ("forbidden", "per workspace"), ("absent", "per workspace")],
    ids=["cost analytics", "403 on analytics", "404 on analytics"],
)
def test_status_says_which_cost_source_the_connection_reads(
    cli: CliRunner, sim: AnthropicSimulator, analytics: str, source: str
) -> None:
    key = sim.add_organization("Cost Co", analytics=analytics)
    assert connect(cli, sim, key, "--backfill-days", "2")[0] == 0
    assert status(cli)["facts"] == {}, "nothing learned before the first sync"

    sync(cli)
    facts = status(cli)["facts"]
    assert list(facts) == ["cost source"] and facts["cost source"].startswith(source)
    table = cli("status")
    assert table.returncode == 0, table.stderr
    assert f"an cost source: {source}" in " ".join(table.stdout.split())

    costs = [row for row in stored_rows(cli).values() if row["kind"] == "cost"]
    if source == "per API key":
        assert "read:analytics" not in facts["cost source"]
        assert any(row["api_key_id"] for row in costs) and ALL_KEYS_LABEL not in {r["api_key_label"] for r in costs}
    else:
        assert "cost report" in facts["cost source"] and "read:analytics" in facts["cost source"]
        assert costs and all(row["api_key_id"] is None and row["api_key_label"] == ALL_KEYS_LABEL for row in costs)
        assert {row["workspace_name"] for row in costs} >= {"Production", "Research"}
