"""`keys` and `findings`, the real CLI in a subprocess, against the fal simulator over loopback.

Each test starts from a quiet fal team: two listed API keys with steady traffic, no web-UI use, and neither the
unlisted key nor the Admin-key traffic the simulator gives a team by default, so a sync finds nothing until the test
drives a scenario through the simulator's control plane. Where a scenario needs time to pass (spend from a key after
it left the listing, a week without it), the syncs run in this process on a host whose clock the test moves, and the
person's side (reading, paging, acknowledging) stays the CLI's.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from connector_sdk.host import Host
from connector_sdk.models import RunOutcome, floor_hour, utcnow
from connector_sdk.sync import sync_now
from connectors.fal.simulator import FalSimulator
from connectors.openai.simulator import OpenAISimulator
from tests.conftest import TEAM, CliRunner, fal_plugins

EXIT_FINDINGS = 6
LONG_AGO = timedelta(days=60)


class Quiet(FalSimulator):
    """The simulator, with the Admin key of its one quiet team."""

    admin_key: str


@pytest.fixture
def quiet() -> Iterator[Quiet]:
    """A team whose only traffic is its two listed API keys'."""
    now = floor_hour(utcnow())
    with Quiet(now=now, seed=7, page_size=200, max_page_size=200) as sim:
        sim.admin_key = sim.add_account(TEAM, n_keys=2, n_models=3, user_traffic=False)
        (team,) = sim.describe()["accounts"]
        listed = {key["key_id"] for key in team["keys"] if key["scope"] == "API"}
        for source in team["traffic"]:
            if source["key_id"] not in listed:  # the Admin key's own traffic, and the deleted key's
                sim.stop_traffic(TEAM, key_id=source["key_id"], at=now - LONG_AGO)
        yield sim


def connect(cli: CliRunner, sim: Quiet, name: str = "prod") -> str:
    result = cli(
        "connect",
        "fal",
        "--name",
        name,
        "--base-url",
        sim.base_url,
        "--backfill-days",
        "2",
        env={"FAL_KEY": sim.admin_key},
    )
    assert result.returncode == 0, result.stderr
    return name


def synced(cli: CliRunner, name: str = "prod") -> None:
    result = cli("sync", name)
    assert result.returncode == 0, result.stderr


def as_json(cli: CliRunner, *args: str) -> Any:
    result = cli(*args, "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def key_id(key: str) -> str:
    return key.partition(":")[0]


def spend_by_key(cli: CliRunner, name: str) -> dict[str, Decimal]:
    """Billed cost per key id of every row `rows` exports: what the inventory's spend must add up to."""
    result = cli("rows", name)
    assert result.returncode == 0, result.stderr
    sums: dict[str, Decimal] = {}
    for line in result.stdout.splitlines():
        row = json.loads(line)
        if row["api_key_id"] is not None and row["cost"] is not None:
            sums[row["api_key_id"]] = sums.get(row["api_key_id"], Decimal(0)) + Decimal(row["cost"])
    return sums


# -- keys ------------------------------------------------------------------------------------------------------
def test_keys_lists_each_key_with_its_owner_scope_status_and_the_spend_its_rows_add_up_to(
    cli: CliRunner, quiet: Quiet
) -> None:
    billed = quiet.issue_key(TEAM, scope="API", alias="Batch Job", created_at=quiet.now - LONG_AGO)
    quiet.add_traffic(TEAM, key_id=key_id(billed), scale=3)
    quiet.revoke_key(billed)  # deleted before the host ever listed it, still billed
    synced(cli, connect(cli, quiet))

    keys = {k["key_id"]: k for k in as_json(cli, "keys")}

    listed = {k.key_id: k for k in quiet.keyring.of(TEAM) if k.scope == "API" and not k.revoked}
    admin_id = key_id(quiet.admin_key)
    assert set(keys) == {*listed, admin_id, key_id(billed)}
    for kid, record in listed.items():
        key = keys[kid]
        assert (key["name"], key["scope"], key["owner"], key["listing_status"]) == (
            record.alias,
            "api",
            record.creator,
            "listed",
        )
        assert (key["connection"], key["connector"], key["vendor"], key["listing"]) == (
            "prod",
            "fal",
            "fal.ai",
            "fal /keys",
        )
    assert (keys[admin_id]["scope"], keys[admin_id]["listing_status"]) == ("admin", "listed")
    ghost = keys[key_id(billed)]
    assert (ghost["name"], ghost["listing_status"], ghost["first_listed_at"]) == ("Batch Job", "never listed", None)

    spent = spend_by_key(cli, "prod")
    assert spent[key_id(billed)] > 0
    for kid, key in keys.items():
        assert Decimal(key["spend_30d"]) == Decimal(key["spend_7d"]) == spent.get(kid, Decimal(0)), kid
        assert key["currency"] == ("USD" if kid in spent else None)

    exported = list(csv.DictReader(io.StringIO(cli("keys", "--format", "csv").stdout)))
    assert {row["key_id"]: Decimal(row["spend_30d"]) for row in exported} == {
        kid: Decimal(k["spend_30d"]) for kid, k in keys.items()
    }
    assert {row["key_id"]: row["listing_status"] for row in exported} == {
        kid: k["listing_status"] for kid, k in keys.items()
    }

    table = cli("keys", "prod")
    assert table.returncode == 0, table.stderr
    for words in ("Batch Job", "never listed", *(record.alias for record in listed.values()), "fal.ai"):
        assert words in table.stdout


def test_keys_narrows_by_vendor_and_one_key_shows_its_history_and_findings(cli: CliRunner, quiet: Quiet) -> None:
    synced(cli, connect(cli, quiet))
    idle = key_id(quiet.issue_key(TEAM, scope="API", alias="Forgotten Key", created_at=quiet.now - LONG_AGO))
    synced(cli)

    assert as_json(cli, "keys", "--vendor", "openai") == []
    assert len(as_json(cli, "keys", "--vendor", "fal")) == len(as_json(cli, "keys", "prod"))

    shown = as_json(cli, "keys", "prod", idle)
    assert shown["key"]["name"] == "Forgotten Key" and shown["key"]["listing_status"] == "listed"
    assert [event["event"] for event in shown["history"]] == ["listed"]
    # Issued long ago yet new to the listing: both, the more severe first.
    assert [(f["kind"], f["state"]) for f in shown["findings"]] == [("idle_key", "open"), ("new_key", "open")]
    assert as_json(cli, "keys", "prod", "Forgotten Key")["key"]["key_id"] == idle, "a key is also found by its name"

    table = cli("keys", "prod", idle)
    assert table.returncode == 0, table.stderr
    assert "History" in table.stdout and "listed" in table.stdout and "idle_key" in table.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("keys", "nope"), "error: there is no connection named 'nope'; `connector-host status` lists them"),
        (("keys", "prod", "k-nope"), "error: connection 'prod' has no key 'k-nope'; `connector-host keys prod` lists"),
        (("findings", "--connection", "nope"), "error: there is no connection named 'nope'"),
        (
            ("findings", "ack", "999", "--note", "seen"),
            "error: there is no finding 999; `connector-host findings --all`",
        ),
        (("findings", "ack", "1", "--note", "  "), "error: --note is empty"),
        (("keys", "prod", "k-nope", "--format", "csv"), "error: --format csv lists the inventory"),
    ],
)
def test_what_cannot_be_found_or_done_is_one_line_and_exit_2(
    cli: CliRunner, quiet: Quiet, args: tuple[str, ...], says: str
) -> None:
    connect(cli, quiet)
    result = cli(*args)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith(says), result.stderr


def test_ack_without_a_note_is_a_usage_error(cli: CliRunner, quiet: Quiet) -> None:
    connect(cli, quiet)
    result = cli("findings", "ack", "1")
    assert result.returncode == 2
    assert "--note" in result.stderr and "Traceback" not in result.stderr


# -- findings, scenario by scenario ----------------------------------------------------------------------------
def test_a_quiet_account_has_no_findings_and_fail_on_passes(cli: CliRunner, quiet: Quiet) -> None:
    synced(cli, connect(cli, quiet))

    result = cli("findings", "--fail-on", "info")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "No open findings."
    assert as_json(cli, "findings", "--all") == []


def test_an_idle_key_pages_at_low_not_at_medium_and_resolves_once_revoked(cli: CliRunner, quiet: Quiet) -> None:
    forgotten = quiet.issue_key(TEAM, scope="API", alias="Forgotten Key", created_at=quiet.now - LONG_AGO)
    synced(cli, connect(cli, quiet))

    (finding,) = as_json(cli, "findings")
    assert (finding["kind"], finding["severity"], finding["subject"], finding["state"]) == (
        "idle_key",
        "low",
        key_id(forgotten),
        "open",
    )
    assert finding["evidence"]["name"] == "Forgotten Key" and finding["evidence"]["last_used_at"] is None
    paged = cli("findings", "--fail-on", "low")
    assert paged.returncode == EXIT_FINDINGS
    assert "idle_key" in paged.stdout and "Forgotten Key" in paged.stdout
    assert paged.stderr.strip().startswith("1 open finding at or above low severity")
    assert cli("findings", "--fail-on", "medium").returncode == 0

    quiet.revoke_key(forgotten)
    synced(cli)

    assert as_json(cli, "findings") == []
    (resolved,) = as_json(cli, "findings", "--all")
    assert (resolved["id"], resolved["state"]) == (finding["id"], "resolved") and resolved["resolved_at"]
    assert cli("findings", "--fail-on", "low").returncode == 0
    shown = as_json(cli, "keys", "prod", key_id(forgotten))
    assert shown["key"]["listing_status"] == "gone"
    assert [event["event"] for event in shown["history"]] == ["listed", "gone"]


def test_acknowledging_a_new_key_closes_it_with_the_note(cli: CliRunner, quiet: Quiet) -> None:
    synced(cli, connect(cli, quiet))
    intern = quiet.issue_key(TEAM, scope="API", alias="Intern Key")
    synced(cli)
    (finding,) = as_json(cli, "findings")
    assert (finding["kind"], finding["severity"], finding["subject_label"]) == ("new_key", "info", "Intern Key")
    assert finding["evidence"]["owner"] and finding["evidence"]["scope"] == "api"
    assert cli("findings", "--fail-on", "info").returncode == EXIT_FINDINGS

    acked = cli("findings", "ack", str(finding["id"]), "--note", "Dana's internship project, approved")

    assert acked.returncode == 0, acked.stderr
    assert acked.stdout.startswith(f"Acknowledged finding {finding['id']} (new_key, Intern Key on prod): resolved")
    assert as_json(cli, "findings") == []
    (closed,) = as_json(cli, "findings", "--all")
    assert (closed["state"], closed["ack_note"]) == ("resolved", "Dana's internship project, approved")
    assert cli("findings", "--fail-on", "info").returncode == 0
    assert key_id(intern) == closed["subject"]


@pytest.fixture
def clocked(quiet: Quiet, home: Path) -> Iterator[tuple[Host, list[datetime]]]:
    """The host the syncs of a time-taking scenario run on, its clock and the simulator's moved together."""
    clock = [quiet.now]
    with Host.open(home, plugins=fal_plugins(), clock=lambda: clock[0]) as host:
        host.connect("fal", "prod", {"api_key": quiet.admin_key, "base_url": quiet.base_url, "backfill_days": 2})
        yield host, clock


def test_a_key_deleted_while_spending_pages_until_acknowledged_and_resolves_when_its_spend_stops(
    cli: CliRunner, quiet: Quiet, clocked: tuple[Host, list[datetime]]
) -> None:
    host, clock = clocked

    def sync(hours: float = 0) -> None:
        clock[0] += timedelta(hours=hours)
        quiet.now = clock[0]
        assert sync_now(host, "prod").outcome == RunOutcome.SUCCEEDED

    batch = quiet.issue_key(TEAM, scope="API", alias="Batch Job", created_at=quiet.now - LONG_AGO)
    quiet.add_traffic(TEAM, key_id=key_id(batch), scale=3)
    sync()
    assert cli("findings", "--fail-on", "info").returncode == 0, "listed and spending is fine"

    quiet.revoke_key(batch)  # deleted at the vendor; whoever holds it goes on calling models
    sync(hours=2)

    (finding,) = as_json(cli, "findings")
    assert (finding["kind"], finding["severity"], finding["subject"], finding["subject_label"]) == (
        "unlisted_key_spend",
        "high",
        key_id(batch),
        "Batch Job",
    )
    evidence = finding["evidence"]
    week = host.store.iter_rows("prod", since=clock[0] - timedelta(days=7), until=clock[0] + timedelta(hours=1))
    billed = sum((row.cost for row in week if row.api_key_id == key_id(batch)), Decimal(0))
    assert (Decimal(evidence["spend_7d"]), evidence["currency"]) == (billed, "USD")
    assert evidence["gone_at"] and evidence["last_listed_at"] and evidence["listing"] == "fal /keys"
    assert "left fal's key listing" in finding["message"]

    table = cli("findings")
    assert "unlisted_key_spend" in table.stdout and "Batch Job" in table.stdout and evidence["spend_7d"] in table.stdout
    paged = cli("findings", "--fail-on", "high")
    assert paged.returncode == EXIT_FINDINGS, paged.stderr
    assert "unlisted_key_spend" in paged.stdout

    acked = cli("findings", "ack", str(finding["id"]), "--note", "CI runner's old key; rotating it today")
    assert acked.returncode == 0, acked.stderr
    assert "--fail-on no longer counts it" in acked.stdout
    assert cli("findings", "--fail-on", "high").returncode == 0, "an acknowledged finding does not page again"
    sync(hours=1)
    (still,) = as_json(cli, "findings")
    assert (still["id"], still["state"], still["ack_note"]) == (
        finding["id"],
        "acknowledged",
        "CI runner's old key; rotating it today",
    )

    quiet.stop_traffic(TEAM, key_id=key_id(batch), at=clock[0])
    sync(hours=8 * 24)

    assert as_json(cli, "findings", "--kind", "unlisted_key_spend") == []
    (resolved,) = as_json(cli, "findings", "--all", "--kind", "unlisted_key_spend")
    assert (resolved["id"], resolved["state"]) == (finding["id"], "resolved")
    history = as_json(cli, "keys", "prod", key_id(batch))["history"]
    assert [event["event"] for event in history] == ["listed", "gone"]


def test_fail_on_counts_only_what_the_filters_keep(cli: CliRunner, quiet: Quiet) -> None:
    quiet.issue_key(TEAM, scope="API", alias="Forgotten Key", created_at=quiet.now - LONG_AGO)
    synced(cli, connect(cli, quiet))

    assert cli("findings", "--kind", "idle_key", "--fail-on", "low").returncode == EXIT_FINDINGS
    assert cli("findings", "--kind", "unlisted_key_spend", "--fail-on", "low").returncode == 0
    assert cli("findings", "--connection", "prod", "--fail-on", "low", "--format", "json").returncode == EXIT_FINDINGS


def test_two_vendors_in_one_inventory_and_a_key_whose_owner_lost_access(cli: CliRunner, quiet: Quiet) -> None:
    synced(cli, connect(cli, quiet))
    with OpenAISimulator(now=quiet.now, history_days=5, seed=7) as openai:
        admin_key = openai.add_organization("Acme Research", user_traffic=False)
        made = cli("connect", "openai", "--name", "oa", "--base-url", openai.base_url, "--backfill-days", "2",
                   env={"OPENAI_ADMIN_KEY": admin_key})  # fmt: skip
        assert made.returncode == 0, made.stderr
        synced(cli, "oa")
        (org,) = openai.describe()["accounts"]
        staging = next(key["key_id"] for key in org["keys"] if key["name"] == "Staging")

        everything = as_json(cli, "keys")
        assert {k["connector"] for k in everything} == {"fal", "openai"}
        assert {k["connection"] for k in as_json(cli, "keys", "--vendor", "openai")} == {"oa"}
        assert {k["connection"] for k in as_json(cli, "keys", "--vendor", "fal")} == {"prod"}
        (key,) = [k for k in everything if k["key_id"] == staging]
        assert (key["owner_email"], key["owner_active"], key["workspace_name"], key["vendor"]) == (
            "bo@example.test",
            False,
            "Default project",
            "OpenAI",
        )
        table = cli("keys", "oa").stdout
        assert "Bo Builder" in table and "access)" in table and staging[:12] in table

        (gone,) = as_json(cli, "findings", "--kind", "owner_gone")
        assert (gone["connection"], gone["subject"], gone["severity"]) == ("oa", staging, "high")
        assert gone["evidence"]["owner_email"] == "bo@example.test" and gone["evidence"]["owner_active"] is False
        assert cli("findings", "--connection", "prod", "--fail-on", "high").returncode == 0
        assert cli("findings", "--connection", "oa", "--fail-on", "high").returncode == EXIT_FINDINGS

        openai.update_key(staging, owner_project_access="active")  # access given back
        synced(cli, "oa")

        assert as_json(cli, "findings", "--kind", "owner_gone") == []
        (resolved,) = as_json(cli, "findings", "--all", "--kind", "owner_gone")
        assert (resolved["id"], resolved["state"]) == (gone["id"], "resolved")
