"""What the CLI prints, end to end in a subprocess: on a terminal (a real pseudo-terminal), to pipes, and in JSON."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from connector_sdk.host import Host
from connector_sdk.sync import sync_now
from connectors.fal.simulator import FalSimulator
from tests.conftest import FAST_RETRIES, TEAM, CliRunner
from tests.test_sinks import SECRET, Receiver, receiver  # noqa: F401 - the fixture

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def on_a_terminal(home: Path, *args: str, env: dict[str, str] | None = None, answer: str | None = None) -> Terminal:
    """Run ``python -m connector_sdk ARGS`` with stdin, stdout and stderr on one pseudo-terminal, as a person would;
    ``answer`` is typed once a ``[y/N]`` question appears."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("FAL_", "CONNECTOR_HOST_"))}
    environment.update({"CONNECTOR_HOST_HOME": str(home), "TERM": "xterm-256color", **FAST_RETRIES, **(env or {})})
    environment.pop("NO_COLOR", None)
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "connector_sdk", *args],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env=environment,
        close_fds=True,
    )
    os.close(terminal)
    seen = b""
    try:
        while True:
            ready, _, _ = select.select([controller], [], [], 90)
            assert ready, f"no output for 90 s; so far: {seen!r}"
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the child has closed the terminal
                break
            if not chunk:
                break
            seen += chunk
            if answer is not None and b"[y/N]" in seen:
                os.write(controller, answer.encode() + b"\n")
                answer = None
    finally:
        code = process.wait(timeout=90)
        os.close(controller)
    return Terminal(code, ANSI.sub("", seen.decode("utf-8", errors="replace")))


class Terminal:
    def __init__(self, returncode: int, text: str) -> None:
        self.returncode = returncode
        self.text = text  # what the person saw, control sequences removed (carriage returns kept)


def connect_cli(cli: CliRunner, sim: FalSimulator, key: str, name: str) -> subprocess.CompletedProcess[str]:
    result = cli(
        "connect", "fal", "--name", name, "--base-url", sim.base_url, "--backfill-days", "2", env={"FAL_KEY": key}
    )
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture
def synced(cli: CliRunner, sim: FalSimulator, admin_key: str) -> str:
    connect_cli(cli, sim, admin_key, "prod")
    assert cli("sync", "prod").returncode == 0
    return "prod"


# -- progress and serve ----------------------------------------------------------------------------------------
def test_the_sync_summary_starts_its_own_line_after_the_progress_bar(
    home: Path, cli: CliRunner, sim: FalSimulator, admin_key: str
) -> None:
    connect_cli(cli, sim, admin_key, "prod")
    shown = on_a_terminal(home, "sync", "prod")
    assert shown.returncode == 0, shown.text
    assert "syncing prod" in shown.text, "a terminal gets the progress bar"
    assert re.search(r"(^|[\r\n])prod: succeeded", shown.text), f"the summary ran into the bar: {shown.text!r}"


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def test_serve_on_a_busy_port_says_so_in_one_line(cli: CliRunner, busy_port: int) -> None:
    result = cli("serve", "--port", str(busy_port))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: port {busy_port} on 127.0.0.1 is already in use (is another server running?); "
        "choose another with --port"
    ]
    assert "Admin portal on" not in result.stdout + result.stderr, "no banner for a server that never starts"


# -- two connections to one vendor account ---------------------------------------------------------------------
def test_connect_warns_when_another_connection_already_syncs_the_account(
    cli: CliRunner, sim: FalSimulator, admin_key: str
) -> None:
    first = connect_cli(cli, sim, admin_key, "a")
    assert "warning" not in first.stderr
    second = connect_cli(cli, sim, sim.issue_key(TEAM), "b")
    assert f"warning: a already syncs fal account {TEAM}" in second.stderr
    assert "Connected" in second.stdout
    other_team = connect_cli(cli, sim, sim.add_account("other-team", n_keys=1, n_models=2), "c")
    assert "warning" not in other_team.stderr


def test_the_all_connections_report_counts_a_shared_account_once_and_says_which_were_merged(
    cli: CliRunner, sim: FalSimulator, admin_key: str
) -> None:
    for name in ("a", "b"):
        connect_cli(cli, sim, admin_key, name)
        assert cli("sync", name).returncode == 0
    one = json.loads(cli("report", "a", "--format", "json").stdout)
    every = json.loads(cli("report", "--format", "json").stdout)
    assert every["totals"] == one["totals"]
    assert every["lines"] == one["lines"]
    assert every["merged"] == [{"connector": "fal", "account": TEAM, "counted": "b", "merged": ["a"]}]
    table = cli("report").stdout
    assert f"fal account {TEAM} is reached by b and a: counted once, from b's rows" in table
    assert "merged" not in one, "a one-connection report merges nothing"


def test_host_report_merges_per_connection_lines_and_still_adds_up_different_accounts(
    host: Host, connect: Callable[..., str], sim: FalSimulator
) -> None:
    sync_now(host, connect("a"))
    sync_now(host, connect("b"))
    other_key = sim.add_account("other-team", n_keys=2, n_models=3)
    sync_now(host, connect("c", api_key=other_key))

    def total(name: str | None) -> Decimal:
        return sum((line.cost for line in host.report(name, days=5)[2]), Decimal(0))

    assert total(None) == total("b") + total("c")
    assert total("a") == total("b")
    (shared,) = host.shared_accounts()
    assert (shared.account, shared.counted, shared.merged) == (TEAM, "b", ["a"])
    merged = host.report(None, days=5)[2]
    costs = [line.cost for line in merged]
    assert costs == sorted(costs, reverse=True), "highest cost first, as for one connection"
    assert len({(line.api_key_label, line.currency) for line in merged}) == len(merged)


# -- sinks -----------------------------------------------------------------------------------------------------
def test_sink_deliver_and_sink_list_say_why_deliveries_wait(
    cli: CliRunner,
    sim: FalSimulator,
    admin_key: str,
    receiver: Receiver,  # noqa: F811 - the fixture
) -> None:
    connect_cli(cli, sim, admin_key, "p")
    added = cli(
        "sink", "add", "p", "hook", "--kind", "webhook", "--set", f"url={receiver.url}",
        env={"CONNECTOR_HOST_SINK_SECRET": SECRET},
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    receiver.failures_left = 10_000
    assert cli("sync", "p").returncode == 0, "a failing sink never fails the sync"

    deliver = cli("sink", "deliver", "p")
    assert deliver.returncode == 4
    assert re.fullmatch(
        r"hook: delivered 0, \d+ waiting; last error: the receiver answered HTTP 503 \(after \d+ failed attempts?\); "
        r"next try at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\n",
        deliver.stdout,
    ), deliver.stdout

    (listed,) = json.loads(cli("sink", "list", "p", "--format", "json").stdout)
    assert listed["backlog"] > 0
    assert listed["last_error"] == "the receiver answered HTTP 503"
    assert listed["failed_attempts"] >= 1 and listed["next_attempt_at"].endswith("Z")
    table = cli("sink", "list", "p").stdout
    assert "the receiver answered HTTP 503" in table and listed["next_attempt_at"] in table


def test_a_sink_with_nothing_waiting_shows_no_error(
    cli: CliRunner, sim: FalSimulator, admin_key: str, tmp_path: Path
) -> None:
    connect_cli(cli, sim, admin_key, "p")
    assert cli("sink", "add", "p", "files", "--kind", "jsonl", "--set", f"directory={tmp_path}").returncode == 0
    assert cli("sync", "p").returncode == 0
    (listed,) = json.loads(cli("sink", "list", "p", "--format", "json").stdout)
    assert (listed["backlog"], listed["last_error"], listed["next_attempt_at"]) == (0, None, None)
    deliver = cli("sink", "deliver", "p")
    assert deliver.returncode == 0 and deliver.stdout == "files: delivered 0, 0 waiting\n"


# -- words -----------------------------------------------------------------------------------------------------
def test_a_budget_alert_says_what_was_spent_and_which_threshold_it_crossed(cli: CliRunner, synced: str) -> None:
    assert cli("budget", "set", synced, "--monthly", "0.02", "--thresholds", "50").returncode == 0
    assert cli("sync", synced).returncode == 0
    (alert,) = json.loads(cli("alerts", synced, "--format", "json").stdout)
    assert re.fullmatch(
        r"prod: [\d,]+\.\d\d USD spent in \d{4}-\d\d crossed the 50% threshold \(0\.01 USD\) of the 0\.02 USD "
        r"monthly budget \(all usage\)",
        alert["message"],
    ), alert["message"]


def test_the_demo_total_is_the_total_report_shows_afterwards(cli: CliRunner, home: Path) -> None:
    demo = cli("demo", "--days", "2")
    assert demo.returncode == 0, demo.stderr
    (demo_total,) = re.findall(r"total\s.*?([\d,]+\.\d\d) USD", demo.stdout)
    assert "(last 30 days)" in demo.stdout, "the demo says which window its total sums"
    later = json.loads(cli("--home", str(home / "demo"), "report", "--format", "json").stdout)
    assert f"{Decimal(later['totals']['USD']):,.2f}" == demo_total
    assert later["days"] == 30


# -- destructive commands --------------------------------------------------------------------------------------
def test_purge_without_a_terminal_needs_yes_and_deletes_nothing_without_it(cli: CliRunner, synced: str) -> None:
    assert cli("budget", "set", synced, "--monthly", "100").returncode == 0
    rows = json.loads(cli("status", synced, "--format", "json").stdout)[0]["rows"]
    refused = cli("disconnect", synced, "--purge")
    assert refused.returncode == 2
    assert f"deletes {rows:,} rows, 1 budget, 0 alerts and 0 sinks of prod" in refused.stderr
    assert "--yes" in refused.stderr
    (status,) = json.loads(cli("status", synced, "--format", "json").stdout)
    assert (status["state"], status["rows"]) == ("connected", rows)
    purged = cli("disconnect", synced, "--purge", "--yes")
    assert purged.returncode == 0, purged.stderr
    assert json.loads(cli("status", "--format", "json").stdout) == []


def test_purge_on_a_terminal_lists_what_it_deletes_and_asks(home: Path, cli: CliRunner, synced: str) -> None:
    rows = json.loads(cli("status", synced, "--format", "json").stdout)[0]["rows"]
    declined = on_a_terminal(home, "disconnect", synced, "--purge", answer="n")
    assert declined.returncode == 1
    assert f"Delete {rows:,} rows, 0 budgets, 0 alerts and 0 sinks of prod for good? [y/N]" in declined.text
    assert "Nothing was deleted." in declined.text
    assert json.loads(cli("status", synced, "--format", "json").stdout)[0]["rows"] == rows

    accepted = on_a_terminal(home, "disconnect", synced, "--purge", answer="y")
    assert accepted.returncode == 0, accepted.text
    assert json.loads(cli("status", "--format", "json").stdout) == []


def test_delivery_failures_are_worded_for_the_person_reading_sink_list() -> None:
    import requests

    from connector_sdk.sinks import DeliveryError, failure_reason

    assert failure_reason(DeliveryError("the receiver answered HTTP 503")) == "the receiver answered HTTP 503"
    assert failure_reason(requests.ConnectionError("HTTPConnectionPool(...)")) == "could not connect to the receiver"
    assert failure_reason(requests.ConnectTimeout()) == "the receiver did not answer in time"
    assert failure_reason(ValueError("odd")) == "ValueError: odd"
