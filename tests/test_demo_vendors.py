"""``connector-host demo`` shows two vendors side by side, and ``report`` groups every connection's spend by vendor:
per vendor and per key, "User key" included, from billed cost only."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from connector_sdk.host import Host
from connector_sdk.portal.app import create_app
from tests.conftest import CliRunner
from tests.portal.conftest import served
from tests.test_cli_simulator import free_port

VENDORS = {
    "fal-demo": ("fal", "fal.ai"),
    "openai-demo": ("openai", "OpenAI"),
    "anthropic-demo": ("anthropic", "Anthropic"),
}


@pytest.fixture
def demo(cli: CliRunner, home: Path) -> tuple[str, Path]:
    """A demo run (three simulators, three backfills): its output and its home."""
    result = cli("demo", "--days", "2", "--port", str(free_port()))
    assert result.returncode == 0, result.stderr
    return result.stdout, home / "demo"


@pytest.fixture
def demo_cli(cli: CliRunner, demo: tuple[str, Path]) -> CliRunner:
    """The CLI on the demo's home."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return cli("--home", str(demo[1]), *args)

    return run


def report(demo_cli: CliRunner, *name: str) -> dict[str, Any]:
    result = demo_cli("report", *name, "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_demo_shows_each_vendors_total_and_each_equals_its_connections_report(
    demo: tuple[str, Path], demo_cli: CliRunner
) -> None:
    output, _home = demo
    totals = {}
    for name, (connector, vendor) in VENDORS.items():
        (shown,) = re.findall(rf"all {re.escape(vendor)} keys\s.*?([\d,]+\.\d\d) USD", output)
        own = Decimal(report(demo_cli, name)["totals"]["USD"])
        assert own > 0
        assert shown == f"{own:,.2f}", name
        totals[connector] = own
    every = report(demo_cli)
    assert {v["connector"]: Decimal(v["totals"]["USD"]) for v in every["vendors"]} == totals
    assert Decimal(every["totals"]["USD"]) == sum(totals.values())
    (grand,) = re.findall(r"total\s.*?([\d,]+\.\d\d) USD", output)
    assert grand == f"{sum(totals.values()):,.2f}"


def test_every_vendor_has_a_user_key_line_and_every_line_names_its_vendor(demo_cli: CliRunner) -> None:
    lines = report(demo_cli)["lines"]
    assert {(line["connector"], line["vendor"]) for line in lines} == set(VENDORS.values())
    user_key = {line["connector"] for line in lines if line["api_key_label"] == "User key"}
    assert user_key == {"fal", "openai", "anthropic"}
    # Grouped by vendor: all of one vendor's lines, then the next one's.
    order = [line["connector"] for line in lines]
    assert order == sorted(order, key=order.index) and len({*order}) == 3


def test_usage_rows_are_exported_and_add_nothing_to_the_report(demo_cli: CliRunner) -> None:
    exported = demo_cli("rows", "openai-demo")
    assert exported.returncode == 0, exported.stderr
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    usage = [row for row in rows if row["kind"] == "usage"]
    billed = [row for row in rows if row["kind"] == "cost"]
    assert usage and billed
    assert {(row["cost"], row["list_cost"], row["currency"]) for row in usage} == {(None, None, None)}
    assert all(Decimal(row["quantity"]) > 0 for row in usage)
    # The demo backfills less than the report's 30 days: every cost row is in it, and only they add up.
    own = report(demo_cli, "openai-demo")
    assert Decimal(own["totals"]["USD"]) == sum(Decimal(row["cost"]) for row in billed)
    assert sum(line["row_count"] for line in own["lines"]) == len(billed)
    # FOCUS is billing data: the cost rows, one record each, and no usage row.
    focus = demo_cli("rows", "openai-demo", "--format", "focus")
    assert focus.returncode == 0, focus.stderr
    assert len(list(csv.reader(io.StringIO(focus.stdout)))) == 1 + len(billed)


def test_the_demo_only_connections_say_they_synced_only_during_the_demo(
    demo: tuple[str, Path], demo_cli: CliRunner
) -> None:
    assert "openai-demo and anthropic-demo synced only while the demo ran" in demo[0]
    status = demo_cli("status", "--format", "json")
    states = {entry["name"]: (entry["state"], entry["reason"]) for entry in json.loads(status.stdout)}
    assert states["fal-demo"] == ("connected", None)
    for name in ("openai-demo", "anthropic-demo"):
        state, reason = states[name]
        assert state == "disconnected" and "only while the demo ran" in reason, name
    assert demo_cli("run", "--once").returncode == 0  # a disconnected connection is not synced, so nothing fails


def test_the_portal_shows_both_kinds_of_openai_rows(demo: tuple[str, Path]) -> None:
    # A usage row has no cost and no price: its cells show a dash, on every order of the rows table.
    with Host.open(demo[1]) as host, served(create_app(host)) as url:
        for order in ("", "?sort=-cost", "?sort=cost", "?sort=model"):
            page = httpx.get(f"{url}/connections/openai-demo{order}", timeout=30)
            assert page.status_code == 200, (order, page.text[-500:])
            assert "—" in page.text
        exported = httpx.get(f"{url}/connections/openai-demo/rows.csv?days=30", timeout=30)
        assert exported.status_code == 200
        header, *rows = list(csv.reader(io.StringIO(exported.text)))
        assert header[-4:] == ["kind", "workspace_id", "workspace_name", "line_item"]
        assert {row[header.index("kind")] for row in rows} == {"cost", "usage"}
