"""Connections: ``connect``, ``reconnect``, ``disconnect``, ``sync`` and ``status``."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import click

from connector_sdk.cli.context import (
    EXIT_FOR_OUTCOME,
    Ctx,
    emit_json,
    err,
    fail,
    handled,
    out,
    parse_fields,
    pass_ctx,
    progress_bar,
    run_line,
    secret_for,
)
from connector_sdk.errors import ConfigError, ConnectorHostError
from connector_sdk.host import Host
from connector_sdk.models import Connection, ConnectionState, ConnectionStatus, Manifest, iso


# -- connections ---------------------------------------------------------------------------------------------
def _installed_manifests() -> list[Manifest]:
    """The manifests of the connectors installed here, for help texts; none when the plugins cannot be loaded (help
    must always print)."""
    from connector_sdk.plugins import get_plugin_manager

    try:
        plugins = get_plugin_manager()
        return [plugins.connector(cid).manifest() for cid in sorted(plugins.connectors)]
    except Exception:  # a broken plugin is for `plugins` to report; help must print regardless
        return []


class ManifestHelp(click.Command):
    """A command whose help ends with each installed connector's key: where it comes from and what it looks like,
    read from the manifests when the help is shown (so ``connect`` itself never loads plugins twice)."""

    def __init__(self, *args: Any, settings: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = settings

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for m in _installed_manifests():
            auth = m.authentication
            where = f"{auth.env_var} or --api-key-stdin" if auth.env_var else "--api-key-stdin"
            line = f"{m.display_name}. Key from {where}" + (f": {auth.help}." if auth.help else ".")
            if self.settings:
                line += f" Settings: {', '.join(s for s in m.settings if s != auth.secret_field)}."
            rows.append((m.id, line))
        if rows:
            with formatter.section("Connectors installed here"):
                formatter.write_dl(rows)
        super().format_epilog(ctx, formatter)


# Options of `connect` and the config field each one sets; a connector without that field refuses the option.
CONNECT_OPTIONS = {
    "base_url": "--base-url",
    "backfill_days": "--backfill-days",
    "lookback_hours": "--lookback-hours",
    "page_size": "--page-size",
}


def _refuse_missing_settings(host: Host, connector_id: str, values: dict[str, Any]) -> None:
    """An option or --set field the connector's config does not have is refused, naming the fields it does have."""
    model = host.plugins.connector(connector_id).config_model
    missing = [name for name in values if name not in model.model_fields]
    if missing:
        named = ", ".join(CONNECT_OPTIONS.get(name, f"--set {name}") for name in missing)
        secrets = set(model.secret_field_names())
        settings = ", ".join(name for name in model.model_fields if name not in secrets)
        raise ConfigError(f"{named}: {connector_id} has no such setting; its settings are {settings}")


@click.command(cls=ManifestHelp)
@click.argument("connector_id")
@click.option("--name", required=True, help="A name for this connection, e.g. CONNECTOR-prod.")
@click.option("--base-url", help="The vendor API base URL, for a proxy [default: the vendor's, in the manifest].")
@click.option("--backfill-days", type=int, help="Days of history the first sync collects [default: 30].")
@click.option("--lookback-hours", type=int, help="Recent hours every sync reads again [default: the connector's].")
@click.option("--page-size", type=int, help="Items per request, for connectors that have this setting.")
@click.option(
    "--set",
    "extra",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Any other field of the connector's config schema (see `manifest`), e.g. --set timeout_seconds=30.",
)
@click.option(
    "--api-key-stdin",
    is_flag=True,
    help="Read the key from standard input instead of the connector's environment variable (listed below).",
)
@pass_ctx
def connect(
    ctx: Ctx,
    connector_id: str,
    name: str,
    base_url: str | None,
    backfill_days: int | None,
    lookback_hours: int | None,
    page_size: int | None,
    extra: tuple[str, ...],
    api_key_stdin: bool,
) -> None:
    """Check a key of CONNECTOR_ID with the vendor and store a new connection.

    The key is read from the environment variable the connector's manifest names, or from standard input with
    --api-key-stdin, never from the command line; it is stored encrypted.
    """
    options = {"base_url": base_url, "backfill_days": backfill_days, "lookback_hours": lookback_hours}
    options["page_size"] = page_size
    values = parse_fields(extra)
    values.update({k: v for k, v in options.items() if v is not None})
    with handled(), ctx.host() as host:
        secret = set(values) & set(host.plugins.connector(connector_id).config_model.secret_field_names())
        if secret:
            raise ConfigError(
                f"{', '.join(sorted(secret))} is a secret: it is read from the environment or stdin, never argv"
            )
        _refuse_missing_settings(host, connector_id, values)
        values.update(secret_for(host, connector_id, api_key_stdin))
        connection = host.connect(connector_id, name, values)
        _warn_if_account_is_synced(host, connection)
        out.print(
            f"Connected [bold]{connection.name}[/] to {connector_id} account [bold]{connection.account}[/]. "
            f"The first sync backfills {connection.config.get('backfill_days')} days: `connector-host sync {name}`.",
            markup=True,
        )


def _warn_if_account_is_synced(host: Host, connection: Connection) -> None:
    """Two connections to one vendor account are allowed (a second key, a test) but usually a mistake: say so."""
    others = [
        c.name
        for c in host.store.list_connections()
        if c.name != connection.name
        and c.connector == connection.connector
        and c.account == connection.account
        and c.state != ConnectionState.DISCONNECTED
    ]
    if others:
        verb = "syncs" if len(others) == 1 else "sync"
        err.print(
            f"warning: {', '.join(others)} already {verb} {connection.connector} account {connection.account}; "
            f"{connection.name} will read the same spend again. Reports across connections count that account once "
            f"(from the connection that synced successfully last); `connector-host disconnect {connection.name}` "
            "if it was a mistake.",
            markup=False,
        )


@click.command(cls=ManifestHelp, settings=False)
@click.argument("name")
@click.option(
    "--api-key-stdin",
    is_flag=True,
    help="Read the new key from standard input instead of the connector's environment variable (listed below).",
)
@pass_ctx
def reconnect(ctx: Ctx, name: str, api_key_stdin: bool) -> None:
    """Give connection NAME a new key, checked with the vendor first; the next sync fills the gap since it stopped."""
    with handled(), ctx.host() as host:
        connector_id = host.store.get_connection(name).connector
        connection = host.reconnect(name, secret_for(host, connector_id, api_key_stdin))
        since = iso(connection.watermark) if connection.watermark else "the start of its backfill"
        out.print(f"Reconnected [bold]{name}[/]; the next sync resumes from {since}.", markup=True)


@click.command()
@click.argument("name")
@click.option("--purge", is_flag=True, help="Also delete the connection's rows, budgets, alerts, sinks and history.")
@click.option("--yes", "-y", is_flag=True, help="Purge without asking (required when there is no terminal to ask on).")
@pass_ctx
def disconnect(ctx: Ctx, name: str, purge: bool, yes: bool) -> None:
    """Stop syncing a connection and delete its credential (its rows stay unless --purge).

    --purge deletes everything the connection holds, for good: it lists what and asks first (--yes skips that).
    """
    with handled(), ctx.host() as host:
        host.store.get_connection(name)
        rows = host.store.count_rows(name)
        doomed = _purge_inventory(host, name, rows) if purge else ""
        if purge and not yes:
            if not sys.stdin.isatty():
                raise ConfigError(
                    f"disconnect --purge deletes {doomed} of {name} for good; there is no terminal to ask on, "
                    "so pass --yes to confirm"
                )
            if not click.confirm(f"Delete {doomed} of {name} for good?", default=False, err=True):
                err.print("Nothing was deleted.")
                sys.exit(1)
        host.disconnect(name, purge=purge)
        kept = f"{doomed} deleted" if purge else f"{rows} rows kept"
        out.print(f"Disconnected [bold]{name}[/]; credential deleted, {kept}.", markup=True)


def _purge_inventory(host: Host, name: str, rows: int) -> str:
    """What a purge deletes, counted: '190 rows, 1 budget, 2 alerts and 0 sinks'."""
    counts = {
        "row": rows,
        "budget": len(host.store.list_budgets(name)),
        "alert": len(host.store.list_alerts(name, limit=1_000_000)),
        "sink": len(host.store.list_sinks(name)),
    }
    parts = [f"{count:,} {noun}{'' if count == 1 else 's'}" for noun, count in counts.items()]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


# -- sinks -----------------------------------------------------------------------------------------------------
SINK_SECRET_ENV = "CONNECTOR_HOST_SINK_SECRET"


@click.command()
@click.argument("name", required=False)
@click.option("--all", "all_", is_flag=True, help="Sync every connection that can sync.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_ctx
def sync(ctx: Ctx, name: str | None, all_: bool, fmt: str) -> None:
    """Sync one connection (or --all) now.

    On SIGTERM or Ctrl-C the sync stops after the page it is on, records where it got to (outcome cancelled), and
    the next sync resumes there.

    \b
    Exit status: 0 done, 1 failed, 2 usage or configuration error, 3 reconnect required,
    4 gave up after retries (the next cycle retries), 5 skipped (another sync of it is running),
    130 stopped by Ctrl-C (SIGINT), 143 stopped by SIGTERM.
    """
    if bool(name) == all_:
        fail("name one connection or pass --all", 2)
    from connector_sdk.sync import sync_now

    with handled(), ctx.host() as host:
        names = [c.name for c in host.store.list_connections() if c.state in ("connected", "error")] if all_ else [name]
        worst = 0
        runs = []
        with stopped_by_signals() as stop, progress_bar(fmt == "text" and sys.stderr.isatty()) as update:
            for each in names:
                if stop.is_set():
                    break
                try:
                    run = sync_now(host, each, progress=update, cancel=stop)
                except KeyboardInterrupt:  # a second Ctrl-C: the sync recorded itself cancelled on the way out
                    sys.exit(128 + signal.SIGINT)
                except ConnectorHostError as error:
                    if not all_:
                        raise
                    err.print(f"{each}: {error}")
                    worst = max(worst, error.exit_code)
                    continue
                runs.append(run)
                worst = max(worst, EXIT_FOR_OUTCOME[run.outcome])
        # Printed once the live bar has ended: written while it runs, the line would land inside the bar.
        if fmt == "text":
            for run in runs:
                out.print(run_line(run), markup=False)
        if fmt == "json":
            emit_json([r.model_dump(mode="json") for r in runs])
        sys.exit(128 + stop.signum if stop.signum else worst)


class SignalStop(threading.Event):
    """Set by the first SIGTERM or SIGINT; remembers which, for the exit status (128 + its number)."""

    signum = 0


@contextmanager
def stopped_by_signals() -> Iterator[SignalStop]:
    """SIGTERM and SIGINT set the event a sync watches (it stops after its current page) instead of killing the
    process mid-page; a second signal stops at once the usual way. The previous handlers are restored after."""
    stop = SignalStop()
    kinds = (signal.SIGTERM, signal.SIGINT)

    def on_signal(signum: int, _frame: Any) -> None:
        if stop.is_set():  # a second signal: the default behaviour (Ctrl-C raises KeyboardInterrupt, recorded)
            signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
            signal.raise_signal(signum)
            return
        stop.signum = signum
        stop.set()
        err.print(f"received {signal.Signals(signum).name}; stopping after the current page")

    previous = {kind: signal.signal(kind, on_signal) for kind in kinds}
    try:
        yield stop
    finally:
        for kind, handler in previous.items():
            signal.signal(kind, handler)


def _status_json(s: ConnectionStatus) -> dict[str, Any]:
    return s.model_dump(mode="json")


@click.command()
@click.argument("name", required=False)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@pass_ctx
def status(ctx: Ctx, name: str | None, fmt: str) -> None:
    """Show each connection's state, last sync, watermark, next sync and row count, and what its connector learned
    about the vendor account (e.g. which cost source it reads)."""
    with handled(), ctx.host() as host:
        statuses = host.statuses(name)
    if fmt == "json":
        emit_json([_status_json(s) for s in statuses])
        return
    if not statuses:
        installed = ", ".join(sorted(host.plugins.connectors)) or "none installed"
        out.print(f"No connections yet. Add one with `connector-host connect CONNECTOR --name NAME` ({installed}).")
        return
    from rich.table import Table

    table = Table(
        "connection", "account", "state", "last sync", "last success", "watermark", "next sync", "rows", "sink backlog"
    )
    colour = {"connected": "green", "syncing": "cyan", "reconnect_required": "red", "error": "yellow"}

    def stamp(moment: datetime | None) -> str:
        return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%MZ") if moment else "-"

    for s in statuses:
        table.add_row(
            s.name,
            s.account or "-",
            f"[{colour.get(s.state.value, 'white')}]{s.state.value}[/]",
            stamp(s.last_sync),
            stamp(s.last_success),
            stamp(s.watermark),
            stamp(s.next_sync),
            str(s.rows),
            ", ".join(f"{k}: {v}" for k, v in s.sinks.items()) or "-",
        )
    out.print(table)
    for s in statuses:
        for label, text in s.facts.items():
            out.print(f"{s.name} {label}: {text}", markup=False)
        if s.reason:
            out.print(f"{s.name}: {s.reason}", markup=False)
