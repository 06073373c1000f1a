"""Sinks: every committed page reaches every sink at least once, in order, through the outbox — nothing lost."""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

import connector_sdk.sinks
import connectors.fal
from connector_sdk import hookimpl
from connector_sdk.delivery import deliver_pending
from connector_sdk.errors import ConfigError
from connector_sdk.host import Host
from connector_sdk.models import RunOutcome
from connector_sdk.plugins import get_plugin_manager
from connector_sdk.sinks import SIGNATURE_HEADER, Sink, SinkConfig
from connector_sdk.sync import sync_now
from connectors.fal.simulator import FalSimulator
from tests.conftest import CliRunner

SECRET = "whsec-0123456789abcdef"


class Receiver:
    """A real webhook receiver on loopback: records verified batches, can be told to fail."""

    def __init__(self) -> None:
        self.batches: list[dict[str, Any]] = []
        self.failures_left = 0
        self.bad_signatures = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                parts = dict(p.split("=", 1) for p in self.headers[SIGNATURE_HEADER].split(","))
                expected = hmac.new(SECRET.encode(), parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
                if not hmac.compare_digest(expected, parts["v1"]):
                    receiver.bad_signatures += 1
                    self.send_response(401)
                elif receiver.failures_left > 0:
                    receiver.failures_left -= 1
                    self.send_response(503)
                else:
                    receiver.batches.append(json.loads(body))
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def row_ids(self) -> list[str]:
        return [row["row_id"] for batch in self.batches if batch["type"] == "rows" for row in batch["rows"]]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def stored_ids(host: Host, name: str) -> set[str]:
    return {row.row_id for row in host.store.iter_rows(name)}


def test_file_sinks_get_every_committed_page_rolled_by_day(host: Host, connect: Callable, tmp_path: Path) -> None:
    name = connect()
    host.add_sink(name, "lake", "jsonl", {"directory": str(tmp_path / "jsonl")})
    host.add_sink(name, "sheet", "csv", {"directory": str(tmp_path / "csv"), "roll": "month"})
    host.add_sink(name, "finops", "focus", {"directory": str(tmp_path / "focus"), "roll": "month"})
    run = sync_now(host, name)
    assert run.outcome == RunOutcome.SUCCEEDED
    files = sorted((tmp_path / "jsonl" / name).glob("*.jsonl"))
    assert len(files) >= 3, "one file per day of usage"
    lines = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert {line["row_id"] for line in lines} == stored_ids(host, name)
    assert all(line["period_start"].startswith(f.stem) for f in files for line in map(json.loads, f.open()))
    rows = [r for f in (tmp_path / "csv" / name).glob("*.csv") for r in csv.DictReader(f.open())]
    assert {r["row_id"] for r in rows} == stored_ids(host, name)
    focus = [r for f in (tmp_path / "focus" / name).glob("*.csv") for r in csv.DictReader(f.open())]
    assert len(focus) == len(rows) and sum(Decimal(r["BilledCost"]) for r in focus) == sum(
        r.cost for r in host.store.iter_rows(name)
    )
    assert host.store.backlog(name) == {"finops": 0, "lake": 0, "sheet": 0}


def test_a_webhook_gets_signed_batches_and_an_outage_loses_nothing(
    host: Host, connect: Callable, receiver: Receiver
) -> None:
    name = connect()
    host.add_sink(name, "hook", "webhook", {"url": receiver.url, "secret": SECRET})
    receiver.failures_left = 3
    run = sync_now(host, name)
    assert run.outcome == RunOutcome.SUCCEEDED, "a failing sink never fails the sync"
    assert host.store.backlog(name)["hook"] > 0, "undelivered pages wait in the outbox"
    (item, *_) = host.store.pending(name, "hook", now=host.now() + timedelta(hours=2))
    assert item.attempts == 1 and "503" in item.last_error

    assert deliver_pending(host, name) == {"hook": 0}, "nothing is retried before its retry time"
    delivered = 0
    for passes in range(1, 10):  # each pass a day later: past any retry time
        delivered += deliver_pending(host, name, now=host.now() + timedelta(days=passes))["hook"]
        if not host.store.backlog(name)["hook"]:
            break
    assert receiver.failures_left == 0 and host.store.backlog(name) == {"hook": 0}
    assert delivered == len(receiver.batches)
    assert receiver.bad_signatures == 0
    ids = receiver.row_ids()
    assert set(ids) == stored_ids(host, name) and len(ids) == len(set(ids)), "every row exactly once here"
    deliveries = [b["delivery_id"] for b in receiver.batches]
    assert deliveries == sorted(deliveries), "in order"


def test_a_crash_between_commit_and_delivery_is_delivered_later(
    host: Host, connect: Callable, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = connect()
    host.add_sink(name, "hook", "webhook", {"url": receiver.url, "secret": SECRET})
    monkeypatch.setattr("connector_sdk.sync.deliver_pending", lambda *a, **k: {})  # the process "dies" each time
    sync_now(host, name)
    queued = [json.loads(item.payload)["type"] for item in host.store.pending(name, "hook", now=host.now())]
    assert receiver.batches == [] and queued.count("rows") == host.store.list_runs(name)[0].pages
    monkeypatch.undo()
    deliver_pending(host, name)
    assert set(receiver.row_ids()) == stored_ids(host, name)


def test_a_broken_sink_does_not_hold_up_the_others(host: Host, connect: Callable, tmp_path: Path) -> None:
    name = connect()
    host.add_sink(name, "down", "webhook", {"url": "http://127.0.0.1:9/nothing", "secret": SECRET})
    host.add_sink(name, "files", "jsonl", {"directory": str(tmp_path)})
    assert sync_now(host, name).outcome == RunOutcome.SUCCEEDED
    backlog = host.store.backlog(name)
    assert backlog["files"] == 0 and backlog["down"] > 0
    assert host.statuses(name)[0].sinks == backlog


@pytest.mark.parametrize(
    ("kind", "values", "says"),
    [
        ("webhook", {"url": "http://example.com/hook", "secret": SECRET}, "loopback"),
        ("webhook", {"url": "https://example.com/hook", "secret": "short"}, "secret"),
        ("jsonl", {"directory": "x", "roll": "hourly"}, "roll"),
        ("nope", {}, "no sink kind 'nope'"),
    ],
)
def test_a_bad_sink_config_is_refused_naming_the_field(
    host: Host, connect: Callable, kind: str, values: dict, says: str
) -> None:
    name = connect()
    with pytest.raises(ConfigError, match=says) as caught:
        host.add_sink(name, "s", kind, values)
    assert SECRET not in str(caught.value)
    assert host.store.list_sinks(name) == []


def test_the_webhook_secret_is_stored_encrypted(host: Host, connect: Callable, home: Path, receiver: Receiver) -> None:
    name = connect()
    host.add_sink(name, "hook", "webhook", {"url": receiver.url, "secret": SECRET})
    assert SECRET not in json.dumps([s.model_dump(mode="json") for s in host.store.list_sinks(name)])
    for path in home.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes()


def test_sinks_from_the_cli(
    cli: CliRunner, sim: FalSimulator, admin_key: str, tmp_path: Path, receiver: Receiver
) -> None:
    assert (
        cli(
            "connect",
            "fal",
            "--name",
            "p",
            "--base-url",
            sim.base_url,
            "--backfill-days",
            "1",
            env={"FAL_KEY": admin_key},
        ).returncode
        == 0
    )
    files = cli("sink", "add", "p", "files", "--kind", "jsonl", "--set", f"directory={tmp_path}", "--format", "json")
    assert files.returncode == 0, files.stderr
    assert json.loads(files.stdout) | {"created_at": None} == {
        "connection": "p",
        "name": "files",
        "kind": "jsonl",
        "config": {"directory": str(tmp_path), "roll": "day"},
        "created_at": None,
    }
    refused = cli(
        "sink", "add", "p", "hook", "--kind", "webhook", "--set", f"url={receiver.url}", "--set", "secret=x" * 9
    )
    assert refused.returncode == 2 and "never argv" in refused.stderr
    added = cli(
        "sink",
        "add",
        "p",
        "hook",
        "--kind",
        "webhook",
        "--set",
        f"url={receiver.url}",
        "--format",
        "json",
        env={"CONNECTOR_HOST_SINK_SECRET": SECRET},
    )
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["config"] == {"url": receiver.url, "timeout_seconds": 10.0}
    assert cli("sync", "p").returncode == 0
    listed = json.loads(cli("sink", "list", "p", "--format", "json").stdout)
    assert {s["name"]: s["backlog"] for s in listed} == {"files": 0, "hook": 0}
    (status,) = json.loads(cli("status", "p", "--format", "json").stdout)
    assert status["sinks"] == {"files": 0, "hook": 0}
    assert len(set(receiver.row_ids())) == status["rows"]
    assert SECRET not in added.stdout
    removed = cli("sink", "remove", "p", "hook", "--format", "json")
    assert json.loads(removed.stdout) == {"connection": "p", "sink": "hook", "removed": True}
    assert cli("sink", "remove", "p", "hook").returncode == 2


class Collector(Sink):
    """A third-party sink, registered through the same hook as the built-in ones."""

    kind = "collector"
    config_model = SinkConfig
    received: ClassVar[list[dict[str, Any]]] = []

    def deliver(self, payload: dict[str, Any]) -> None:
        self.received.append(payload)


class CollectorPlugin:
    @hookimpl
    def connector_sdk_register_sinks(self) -> list[type[Sink]]:
        return [Collector]


def test_a_plugin_adds_a_sink_kind_through_the_hook(
    home: Path, store_url: str, sim: FalSimulator, admin_key: str
) -> None:
    Collector.received.clear()
    plugins = get_plugin_manager(
        load_entrypoints=False, plugins=[connectors.fal, connector_sdk.sinks, CollectorPlugin()]
    )
    assert plugins.errors == [] and set(plugins.sinks) == {"jsonl", "csv", "focus", "webhook", "collector"}
    with Host.open(home, store_url=store_url, plugins=plugins) as host:
        host.connect("fal", "p", {"api_key": admin_key, "base_url": sim.base_url, "backfill_days": 1})
        host.add_sink("p", "mine", "collector", {})
        sync_now(host, "p")
        assert {r["row_id"] for b in Collector.received for r in b["rows"]} == stored_ids(host, "p")


def test_two_plugins_claiming_one_sink_kind_are_reported_naming_both() -> None:
    plugins = get_plugin_manager(
        load_entrypoints=False, plugins=[connector_sdk.sinks, CollectorPlugin(), CollectorPlugin()]
    )
    assert len(plugins.errors) == 1 and "sink kind 'collector' is already registered" in plugins.errors[0].error


def test_the_backlog_pass_retries_every_connection_but_those_syncing(
    host: Host, connect: Callable, receiver: Receiver
) -> None:
    from connector_sdk.delivery import deliver_backlog

    for name in ("a", "b"):
        connect(name)
        host.add_sink(name, "hook", "webhook", {"url": receiver.url, "secret": SECRET})
    receiver.failures_left = 1_000
    sync_now(host, "a")
    sync_now(host, "b")
    receiver.failures_left = 0
    for item in (
        *host.store.pending("a", "hook", now=host.now() + timedelta(days=1)),
        *host.store.pending("b", "hook", now=host.now() + timedelta(days=1)),
    ):
        host.store.delivery_failed(item.id, "reset for the test", retry_at=host.now())
    deliver_backlog(host, skip=frozenset({"b"}))
    assert host.store.backlog("a") == {"hook": 0}
    assert host.store.backlog("b")["hook"] > 0
