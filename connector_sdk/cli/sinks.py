"""``sink``: send each connection's committed rows on to files or a signed webhook."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

import click
from rich.table import Table

from connector_sdk.cli.context import (
    Ctx,
    emit_json,
    handled,
    out,
    parse_fields,
    pass_ctx,
    read_secret,
)
from connector_sdk.errors import ConfigError
from connector_sdk.host import Host
from connector_sdk.models import OutboxItem, iso

SINK_SECRET_ENV = "CONNECTOR_HOST_SINK_SECRET"


@click.group()
def sink() -> None:
    """Send each connection's committed rows on: JSONL or CSV files, or a signed webhook."""


@sink.command("add")
@click.argument("name")
@click.argument("sink_name")
@click.option("--kind", required=True, help="jsonl, csv, webhook, or a kind a plugin adds.")
@click.option("--set", "settings", multiple=True, metavar="FIELD=VALUE", help="A config field, e.g. directory=out.")
@click.option("--secret-stdin", is_flag=True, help=f"Read the sink's secret from stdin instead of {SINK_SECRET_ENV}.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_ctx
def sink_add(
    ctx: Ctx, name: str, sink_name: str, kind: str, settings: tuple[str, ...], secret_stdin: bool, fmt: str
) -> None:
    """Attach a sink to connection NAME; rows of every later page are delivered to it at least once."""
    values = parse_fields(settings)
    with handled(), ctx.host() as host:
        cls = host.plugins.sink(kind)
        secret_fields = cls.config_model.secret_field_names()
        if set(values) & set(secret_fields):
            raise ConfigError("sink secrets are read from the environment or stdin, never argv")
        for field in secret_fields:
            values[field] = read_secret(field, SINK_SECRET_ENV, secret_stdin, flag="--secret-stdin")
        record = host.add_sink(name, sink_name, kind, values)
    if fmt == "json":
        emit_json(record.model_dump(mode="json"))  # the record holds no secret: those are stored apart, encrypted
    else:
        out.print(f"Added {record.kind} sink [bold]{record.name}[/] to {name}.", markup=True)


def _blocked(host: Host, name: str, sink_name: str) -> OutboxItem | None:
    """The item at the head of a sink's queue if a delivery of it failed: it holds the rest until its next try."""
    head = host.store.pending(name, sink_name, now=datetime.max.replace(tzinfo=UTC), limit=1)
    return head[0] if head and head[0].last_error else None


def _why(item: OutboxItem | None) -> str:
    if item is None:
        return ""
    tries = "1 failed attempt" if item.attempts == 1 else f"{item.attempts} failed attempts"
    return f"last error: {item.last_error} (after {tries}); next try at {iso(item.next_attempt_at)}"


def _waiting(backlog: int, item: OutboxItem | None) -> dict[str, Any]:
    return {
        "backlog": backlog,
        "last_error": item.last_error if item else None,
        "failed_attempts": item.attempts if item else 0,
        "next_attempt_at": item.next_attempt_at if item else None,
    }


@sink.command("list")
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@pass_ctx
def sink_list(ctx: Ctx, name: str, fmt: str) -> None:
    """The sinks of connection NAME with what each has not delivered yet, and why it waits."""
    with handled(), ctx.host() as host:
        records, backlog = host.store.list_sinks(name), host.store.backlog(name)
        blocked = {r.name: _blocked(host, name, r.name) for r in records}
    if fmt == "json":
        emit_json([r.model_dump(mode="json") | _waiting(backlog.get(r.name, 0), blocked[r.name]) for r in records])
        return
    table = Table("sink", "kind", "config", "backlog", "last error", "next try")
    for r in records:
        item = blocked[r.name]
        table.add_row(
            r.name,
            r.kind,
            json.dumps(r.config),
            str(backlog.get(r.name, 0)),
            item.last_error if item else "-",
            iso(item.next_attempt_at) if item else "-",
        )
    out.print(table)


@sink.command("remove")
@click.argument("name")
@click.argument("sink_name")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_ctx
def sink_remove(ctx: Ctx, name: str, sink_name: str, fmt: str) -> None:
    """Detach a sink (and drop what it had not delivered yet)."""
    with handled(), ctx.host() as host:
        host.store.remove_sink(name, sink_name)
    if fmt == "json":
        emit_json({"connection": name, "sink": sink_name, "removed": True})
    else:
        out.print(f"Removed sink {sink_name} from {name}.")


@sink.command("deliver")
@click.argument("name")
@pass_ctx
def sink_deliver(ctx: Ctx, name: str) -> None:
    """Deliver NAME's backlog now instead of at the next sync or scheduler pass.

    \b
    Exit status: 0 nothing waits, 4 deliveries still wait (each sink's line says why and when it tries again).
    """
    from connector_sdk.delivery import deliver_pending

    with handled(), ctx.host() as host:
        sent = deliver_pending(host, name)
        backlog = host.store.backlog(name)
        blocked = {sink_name: _blocked(host, name, sink_name) for sink_name in sent}
    for sink_name, count in sent.items():
        waiting = backlog.get(sink_name, 0)
        why = _why(blocked[sink_name]) if waiting else ""
        line = f"{sink_name}: delivered {count}, {waiting} waiting" + (f"; {why}" if why else "")
        out.print(line, markup=False, soft_wrap=True)
    sys.exit(0 if not any(backlog.values()) else 4)
