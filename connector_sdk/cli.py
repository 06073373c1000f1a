"""``connector-host``: connect vendor accounts, sync their usage hourly, and read the spend."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from connector_sdk import __version__
from connector_sdk.errors import ConfigError, ConnectorHostError
from connector_sdk.focus import write_focus_csv, write_focus_parquet
from connector_sdk.host import HOME_ENV, Host, default_home
from connector_sdk.logs import configure_logging
from connector_sdk.models import ROW_FIELDS, ConnectionStatus, RunOutcome, SyncRun, decimal_text, iso
from connector_sdk.plugins import get_plugin_manager
from connector_sdk.store import STORE_ENV
from connector_sdk.sync import Progress as SyncProgress

EXIT_FOR_OUTCOME = {
    RunOutcome.SUCCEEDED: 0,
    RunOutcome.RECONNECT_REQUIRED: 3,
    RunOutcome.GAVE_UP: 4,
    RunOutcome.FAILED: 1,
    RunOutcome.CANCELLED: 1,
}

# Off a terminal Rich would assume 80 columns; tables of timestamps and model ids need more.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, code: int) -> NoReturn:
    err.print(Text.assemble(("error: ", "bold red"), message))
    sys.exit(code)


@contextmanager
def handled() -> Iterator[None]:
    """Turn the host's own errors into a message and its exit code; never a traceback for those."""
    try:
        yield
    except ConnectorHostError as error:
        fail(str(error), error.exit_code)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, datetime):
        return iso(value)
    raise TypeError(type(value).__name__)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, default=_json_default, indent=2))


def parse_moment(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{option}: {value!r} is not an ISO 8601 date or timestamp") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class Ctx:
    def __init__(self, home: Path, store_url: str | None) -> None:
        self.home = home
        self.store_url = store_url

    def host(self) -> Host:
        return Host.open(self.home, store_url=self.store_url)


pass_ctx = click.make_pass_decorator(Ctx)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="connector-host")
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar=HOME_ENV,
    help=f"Folder for the store and its encryption key [env {HOME_ENV}; default: a per-user data folder].",
)
@click.option("--store", "store_url", envvar=STORE_ENV, help=f"Store URL (postgresql://...) [env {STORE_ENV}].")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default=None,
    help="Log level [default: warning on a terminal, info otherwise].",
)
@click.option(
    "--log-format",
    type=click.Choice(["console", "json"]),
    default=None,
    help="Log format [default: console on a terminal, JSON otherwise].",
)
@click.pass_context
def cli(
    ctx: click.Context, home: Path | None, store_url: str | None, log_level: str | None, log_format: str | None
) -> None:
    """Collect SaaS and AI-platform spend through connector plugins.

    Connect an account once (connect), then sync it hourly (run) and read the spend (status, report, rows).
    Start with `connector-host demo` to see it all against a local fal.ai simulator.
    """
    tty = sys.stderr.isatty()
    configure_logging(
        level=log_level or ("warning" if tty else "info"),
        json_output=(log_format == "json") if log_format else not tty,
    )
    ctx.obj = Ctx(home or default_home(), store_url)


def read_secret(field: str, env_var: str | None, from_stdin: bool) -> str:
    """The secret from standard input (``--api-key-stdin``) or its environment variable, never from argv."""
    if from_stdin:
        if sys.stdin.isatty():
            return click.prompt(f"Paste the {field.replace('_', ' ')}", hide_input=True, err=True).strip()
        value = sys.stdin.readline().strip()
        if not value:
            raise ConfigError("--api-key-stdin was given but standard input was empty")
        return value
    value = os.environ.get(env_var or "", "").strip()
    if not value:
        where = f"set {env_var} or " if env_var else ""
        raise ConfigError(f"no API key given: {where}pipe it to --api-key-stdin (keys are never taken as arguments)")
    return value


def _secret_for(host: Host, connector_id: str, from_stdin: bool) -> dict[str, str]:
    auth = host.plugins.connector(connector_id).manifest().authentication
    return {auth.secret_field: read_secret(auth.secret_field, auth.env_var, from_stdin)}


# -- plugins and manifests -------------------------------------------------------------------------------------
@cli.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def plugins(fmt: str) -> None:
    """List loaded connector plugins with their version, source and load errors."""
    loaded = get_plugin_manager()
    infos = loaded.describe()
    by_plugin: dict[str, list[str]] = {}
    for connector_id, plugin in loaded.connector_plugin.items():
        by_plugin.setdefault(plugin, []).append(connector_id)
    if fmt == "json":
        emit_json(
            {
                "plugins": [
                    {
                        "name": i.name,
                        "version": i.version,
                        "source": i.source,
                        "hooks": i.hooks,
                        "connectors": by_plugin.get(i.name, []),
                    }
                    for i in infos
                ],
                "errors": [{"plugin": e.plugin, "error": e.error} for e in loaded.errors],
            }
        )
        return
    table = Table("plugin", "version", "connectors", "source", "hooks")
    for i in infos:
        table.add_row(
            i.name, i.version or "-", ", ".join(by_plugin.get(i.name, [])) or "-", i.source, ", ".join(i.hooks)
        )
    out.print(table)
    for e in loaded.errors:
        err.print(f"[yellow]plugin {e.plugin!r} failed to load:[/] {e.error}", markup=True)


@cli.command()
@click.argument("connector_id")
def manifest(connector_id: str) -> None:
    """Print a connector's manifest as JSON (what an admin portal needs to offer it)."""
    with handled():
        emit_json(get_plugin_manager().connector(connector_id).manifest().model_dump(mode="json"))


# -- connections -----------------------------------------------------------------------------------------------
@cli.command()
@click.argument("connector_id")
@click.option("--name", required=True, help="A name for this connection, e.g. fal-prod.")
@click.option("--base-url", help="The vendor API base URL (for fal: https://api.fal.ai/v1).")
@click.option("--backfill-days", type=int, help="Days of history the first sync collects [default: 30].")
@click.option("--lookback-hours", type=int, help="Recent hours every sync reads again [default: 48].")
@click.option("--page-size", type=int, help="Items per request [default: the vendor's].")
@click.option(
    "--set",
    "extra",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Any other field of the connector's config schema (see `manifest`), e.g. --set timeout_seconds=30.",
)
@click.option("--api-key-stdin", is_flag=True, help="Read the API key from standard input instead of FAL_KEY.")
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
    """Check an API key with the vendor and store a new connection.

    The key is read from FAL_KEY (for fal) or from standard input with --api-key-stdin; it is stored encrypted.
    """
    options = {"base_url": base_url, "backfill_days": backfill_days, "lookback_hours": lookback_hours}
    options["page_size"] = page_size
    values = _fields(extra)
    values.update({k: v for k, v in options.items() if v is not None})
    with handled(), ctx.host() as host:
        secret = set(values) & set(host.plugins.connector(connector_id).config_model.secret_field_names())
        if secret:
            raise ConfigError(
                f"{', '.join(sorted(secret))} is a secret: it is read from the environment or stdin, never argv"
            )
        values.update(_secret_for(host, connector_id, api_key_stdin))
        connection = host.connect(connector_id, name, values)
        out.print(
            f"Connected [bold]{connection.name}[/] to {connector_id} account [bold]{connection.account}[/]. "
            f"The first sync backfills {connection.config.get('backfill_days')} days: `connector-host sync {name}`.",
            markup=True,
        )


@cli.command()
@click.argument("name")
@click.option("--api-key-stdin", is_flag=True, help="Read the new API key from standard input instead of FAL_KEY.")
@pass_ctx
def reconnect(ctx: Ctx, name: str, api_key_stdin: bool) -> None:
    """Give a connection a new API key; the next sync fills the gap since it stopped."""
    with handled(), ctx.host() as host:
        connector_id = host.store.get_connection(name).connector
        connection = host.reconnect(name, _secret_for(host, connector_id, api_key_stdin))
        since = iso(connection.watermark) if connection.watermark else "the start of its backfill"
        out.print(f"Reconnected [bold]{name}[/]; the next sync resumes from {since}.", markup=True)


@cli.command()
@click.argument("name")
@click.option("--purge", is_flag=True, help="Also delete the connection's rows and history.")
@pass_ctx
def disconnect(ctx: Ctx, name: str, purge: bool) -> None:
    """Stop syncing a connection and delete its credential (its rows stay unless --purge)."""
    with handled(), ctx.host() as host:
        host.store.get_connection(name)
        rows = host.store.count_rows(name)
        host.disconnect(name, purge=purge)
        kept = f"{rows} rows deleted" if purge else f"{rows} rows kept"
        out.print(f"Disconnected [bold]{name}[/]; credential deleted, {kept}.", markup=True)


# -- sinks -----------------------------------------------------------------------------------------------------
SINK_SECRET_ENV = "CONNECTOR_HOST_SINK_SECRET"


@cli.group()
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
    values = _fields(settings)
    with handled(), ctx.host() as host:
        cls = host.plugins.sink(kind)
        secret_fields = cls.config_model.secret_field_names()
        if set(values) & set(secret_fields):
            raise ConfigError("sink secrets are read from the environment or stdin, never argv")
        for field in secret_fields:
            values[field] = read_secret(field, SINK_SECRET_ENV, secret_stdin)
        record = host.add_sink(name, sink_name, kind, values)
    if fmt == "json":
        emit_json(record.model_dump(mode="json"))  # the record holds no secret: those are stored apart, encrypted
    else:
        out.print(f"Added {record.kind} sink [bold]{record.name}[/] to {name}.", markup=True)


@sink.command("list")
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@pass_ctx
def sink_list(ctx: Ctx, name: str, fmt: str) -> None:
    """The sinks of connection NAME with what each has not delivered yet."""
    with handled(), ctx.host() as host:
        records, backlog = host.store.list_sinks(name), host.store.backlog(name)
    if fmt == "json":
        emit_json([r.model_dump(mode="json") | {"backlog": backlog.get(r.name, 0)} for r in records])
        return
    table = Table("sink", "kind", "config", "backlog")
    for r in records:
        table.add_row(r.name, r.kind, json.dumps(r.config), str(backlog.get(r.name, 0)))
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
    """Deliver NAME's backlog now instead of at the next sync or scheduler pass."""
    from connector_sdk.sinks import deliver_pending

    with handled(), ctx.host() as host:
        sent = deliver_pending(host, name)
        backlog = host.store.backlog(name)
    for sink_name, count in sent.items():
        out.print(f"{sink_name}: delivered {count}, {backlog.get(sink_name, 0)} waiting")
    sys.exit(0 if not any(backlog.values()) else 4)


def _fields(settings: tuple[str, ...]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in settings:
        field, sep, value = item.partition("=")
        if not sep or not field.strip():
            fail(f"--set takes FIELD=VALUE, got {item!r}", 2)
        values[field.strip()] = value
    return values


# -- budgets and alerts ----------------------------------------------------------------------------------------
@cli.group()
def budget() -> None:
    """Monthly budgets with thresholds, and anomaly alerts, checked after every sync."""


@budget.command("set")
@click.argument("name")
@click.option("--monthly", required=True, help="The monthly budget, e.g. 500 or 1250.50.")
@click.option("--currency", default="USD", show_default=True)
@click.option("--thresholds", default="50,80,100", show_default=True, help="Percentages that each fire an alert.")
@click.option("--label", help="Only this API key label (e.g. 'User key').")
@click.option("--model", help="Only this model (fal endpoint id).")
@click.option("--anomaly/--no-anomaly", default=True, show_default=True, help="Also alert on anomalous days.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_ctx
def budget_set(
    ctx: Ctx,
    name: str,
    monthly: str,
    currency: str,
    thresholds: str,
    label: str | None,
    model: str | None,
    anomaly: bool,
    fmt: str,
) -> None:
    """Add a budget to connection NAME."""
    with handled(), ctx.host() as host:
        try:
            amount = Decimal(monthly)
            levels = sorted({int(t) for t in thresholds.split(",") if t.strip()})
        except (ArithmeticError, ValueError):
            raise ConfigError(
                "--monthly takes a decimal amount and --thresholds whole percentages, e.g. 50,80,100"
            ) from None
        if not amount.is_finite() or amount <= 0 or not levels or not all(0 < t <= 1000 for t in levels):
            raise ConfigError("--monthly must be positive and --thresholds between 1 and 1000 percent")
        created = host.store.add_budget(
            name,
            monthly_amount=amount,
            currency=currency.upper(),
            thresholds=levels,
            anomaly=anomaly,
            api_key_label=label,
            model=model,
            now=host.now(),
        )
    if fmt == "json":
        emit_json(created.model_dump(mode="json"))
    else:
        out.print(f"Budget {created.id}: {amount:,.2f} {created.currency} a month for {name} ({created.scope}).")


@budget.command("list")
@click.argument("name", required=False)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@pass_ctx
def budget_list(ctx: Ctx, name: str | None, fmt: str) -> None:
    """Budgets, of one connection or all."""
    with handled(), ctx.host() as host:
        budgets = host.store.list_budgets(name)
    if fmt == "json":
        emit_json([b.model_dump(mode="json") for b in budgets])
        return
    table = Table("id", "connection", "scope", "monthly", "thresholds", "anomaly")
    for b in budgets:
        table.add_row(
            str(b.id),
            b.connection,
            b.scope,
            f"{b.monthly_amount:,.2f} {b.currency}",
            ", ".join(f"{t}%" for t in b.thresholds),
            "yes" if b.anomaly else "no",
        )
    out.print(table)


@budget.command("remove")
@click.argument("budget_id", type=int)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_ctx
def budget_remove(ctx: Ctx, budget_id: int, fmt: str) -> None:
    """Remove a budget (its past alerts stay)."""
    with handled(), ctx.host() as host:
        host.store.remove_budget(budget_id)
    if fmt == "json":
        emit_json({"budget": budget_id, "removed": True})
    else:
        out.print(f"Removed budget {budget_id}.")


@cli.command()
@click.argument("name", required=False)
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@pass_ctx
def alerts(ctx: Ctx, name: str | None, limit: int, fmt: str) -> None:
    """Budget and anomaly alerts, newest first, with the figures that fired them."""
    with handled(), ctx.host() as host:
        if name is not None:
            host.store.get_connection(name)
        fired = host.store.list_alerts(name, limit=limit)
    if fmt == "json":
        emit_json([a.model_dump(mode="json") for a in fired])
        return
    if not fired:
        out.print("No alerts.")
    for a in fired:
        out.print(f"{iso(a.fired_at)}  {a.kind:8}  {a.message}", markup=False)


# -- prices ----------------------------------------------------------------------------------------------------
def _pick_connection(host: Host, name: str | None) -> str:
    if name:
        host.store.get_connection(name)
        return name
    names = [c.name for c in host.store.list_connections() if c.state != "disconnected"]
    if len(names) != 1:
        raise ConfigError("say which connection's key to use with --connection NAME")
    return names[0]


@cli.command()
@click.argument("models", nargs=-1, required=True)
@click.option("--connection", "name", help="Whose key to ask with [default: the only connection].")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@pass_ctx
def prices(ctx: Ctx, models: tuple[str, ...], name: str | None, fmt: str) -> None:
    """Current list prices of MODELS (fal endpoint ids), cached for ten minutes; unknown ones are listed apart."""
    with handled(), ctx.host() as host:
        found = host.prices(_pick_connection(host, name), list(models))
    unknown = sorted(set(models) - {p.model for p in found})
    if fmt == "json":
        emit_json({"prices": [p.model_dump(mode="json") for p in found], "unknown": unknown})
        return
    table = Table("model", "unit price", "unit")
    for p in found:
        table.add_row(p.model, f"{decimal_text(p.unit_price)} {p.currency}", p.unit)
    out.print(table)
    if unknown:
        err.print(f"not known to the vendor: {', '.join(unknown)}")


@cli.command()
@click.argument("items", nargs=-1, required=True, metavar="MODEL=QUANTITY...")
@click.option("--connection", "name", help="Whose key to ask with [default: the only connection].")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_ctx
def estimate(ctx: Ctx, items: tuple[str, ...], name: str | None, fmt: str) -> None:
    """What QUANTITY billing units of each MODEL would cost at today's prices."""
    quantities: dict[str, Decimal] = {}
    for item in items:
        model, sep, quantity = item.rpartition("=")
        try:
            quantities[model] = Decimal(quantity)
        except ArithmeticError:
            fail(f"{item!r}: the quantity is not a number", 2)
        if not sep or not model or not quantities[model].is_finite() or quantities[model] <= 0:
            fail(f"{item!r}: write MODEL=QUANTITY with a positive quantity", 2)
    with handled(), ctx.host() as host:
        total, currency = host.estimate(_pick_connection(host, name), quantities)
    if fmt == "json":
        emit_json({"total_cost": decimal_text(total), "currency": currency})
    else:
        out.print(f"{total:,.2f} {currency}")


# -- syncing ---------------------------------------------------------------------------------------------------
def _run_line(run: SyncRun) -> str:
    base = f"{run.connection}: {run.outcome.value}, {run.rows_written} rows in {run.pages} pages"
    window = f" [{iso(run.window_start)} .. {iso(run.window_end)})"
    return base + window + (f"\n  {run.message}" if run.message else "")


@contextmanager
def progress_bar(enabled: bool) -> Iterator[Callable[[SyncProgress], None] | None]:
    if not enabled:
        yield None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[rows]} rows"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def update(p: SyncProgress) -> None:
            task = tasks.get(p.run.run_id)
            if task is None:
                task = tasks[p.run.run_id] = bar.add_task(f"syncing {p.run.connection}", total=1.0, rows=0)
            bar.update(task, completed=p.fraction, rows=p.rows)

        yield update


@cli.command()
@click.argument("name", required=False)
@click.option("--all", "all_", is_flag=True, help="Sync every connection that can sync.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_ctx
def sync(ctx: Ctx, name: str | None, all_: bool, fmt: str) -> None:
    """Sync one connection (or --all) now.

    \b
    Exit status: 0 done, 1 failed, 2 usage or configuration error, 3 reconnect required,
    4 gave up after retries (the next cycle retries), 5 skipped (another sync of it is running).
    """
    if bool(name) == all_:
        fail("name one connection or pass --all", 2)
    with handled(), ctx.host() as host:
        names = [c.name for c in host.store.list_connections() if c.state in ("connected", "error")] if all_ else [name]
        worst = 0
        runs = []
        with progress_bar(fmt == "text" and sys.stderr.isatty()) as update:
            for each in names:
                try:
                    run = host.sync(each, progress=update)
                except ConnectorHostError as error:
                    if not all_:
                        raise
                    err.print(f"{each}: {error}")
                    worst = max(worst, error.exit_code)
                    continue
                runs.append(run)
                worst = max(worst, EXIT_FOR_OUTCOME[run.outcome])
                if fmt == "text":
                    out.print(_run_line(run), markup=False)
        if fmt == "json":
            emit_json([r.model_dump(mode="json") for r in runs])
        sys.exit(worst)


@cli.command()
@click.option(
    "--interval", type=float, help="Seconds between syncs of a connection [default: the connector's, 3600 for fal]."
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=16,
    show_default=True,
    help="Syncs at once (threads: a sync mostly waits on the vendor).",
)
@click.option("--once", is_flag=True, help="Sync every due connection once, then exit.")
@pass_ctx
def run(ctx: Ctx, interval: float | None, concurrency: int, once: bool) -> None:
    """Run the scheduler: sync every connection on its interval, until SIGTERM or Ctrl-C.

    Connections waiting for a new key are skipped until `reconnect`. On SIGTERM each running sync stops after the
    page it is on, records where it got to, and the next start resumes there.
    """
    from connector_sdk.scheduler import Scheduler

    if interval is not None and interval <= 0:
        fail("--interval must be positive", 2)
    with handled(), ctx.host() as host:
        scheduler = Scheduler(host, interval_seconds=interval, concurrency=concurrency)

        def stop(signum: int, _frame: Any) -> None:
            err.print(f"received {signal.Signals(signum).name}; stopping after the current pages")
            scheduler.stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        if once:
            runs = scheduler.run_once()
            for r in runs:
                out.print(_run_line(r), markup=False)
            sys.exit(max((EXIT_FOR_OUTCOME[r.outcome] for r in runs), default=0))
        scheduler.run_forever()


# -- reading ---------------------------------------------------------------------------------------------------
def _status_json(s: ConnectionStatus) -> dict[str, Any]:
    return s.model_dump(mode="json")


@cli.command()
@click.argument("name", required=False)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@pass_ctx
def status(ctx: Ctx, name: str | None, fmt: str) -> None:
    """Show each connection's state, last sync, watermark, next sync and row count."""
    with handled(), ctx.host() as host:
        statuses = host.statuses(name)
    if fmt == "json":
        emit_json([_status_json(s) for s in statuses])
        return
    if not statuses:
        out.print("No connections yet. Add one with `connector-host connect fal --name NAME`.")
        return
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
        if s.reason:
            out.print(f"{s.name}: {s.reason}", markup=False)


@cli.command()
@click.argument("name", required=False)
@click.option("--since", help="First hour to include (ISO 8601, UTC if no offset).")
@click.option("--until", help="First hour to exclude (ISO 8601).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv", "focus"]),
    default="jsonl",
    show_default=True,
    help="focus: FOCUS 1.0 columns (README: FOCUS export), as CSV, or as Parquet when -o ends in .parquet.",
)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file, not stdout.")
@pass_ctx
def rows(ctx: Ctx, name: str | None, since: str | None, until: str | None, fmt: str, output: Path | None) -> None:
    """Export normalized rows; money and quantities are exact decimal strings."""
    with handled(), ctx.host() as host:
        start, end = parse_moment(since, "--since"), parse_moment(until, "--until")
        if name is not None:
            host.store.get_connection(name)
        selected = host.store.iter_rows(name, since=start, until=end)
        if fmt == "focus" and output is not None and output.suffix.lower() == ".parquet":
            write_focus_parquet(selected, output)
            return
        stream = output.open("w", newline="", encoding="utf-8") if output else sys.stdout
        try:
            if fmt == "focus":
                write_focus_csv(selected, stream)
            elif fmt == "csv":
                writer = csv.writer(stream, lineterminator="\n")  # None is written as an empty field
                writer.writerow(ROW_FIELDS)
                writer.writerows(row.export().values() for row in selected)
            else:
                stream.writelines(json.dumps(row.export(), separators=(",", ":")) + "\n" for row in selected)
        finally:
            if output:
                stream.close()


@cli.command()
@click.argument("name", required=False)
@click.option("--days", type=click.IntRange(1, 3660), default=30, show_default=True, help="Period, ending now.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--prices", "with_prices", is_flag=True, help="Also show each model's current list price.")
@pass_ctx
def report(ctx: Ctx, name: str | None, days: int, fmt: str, with_prices: bool) -> None:
    """Spend per API key label (web-UI activity as "User key"): active models and total cost."""
    current: list[Any] = []
    with handled(), ctx.host() as host:
        since, until, lines = host.report(name, days=days)
        if with_prices and lines:
            current = host.prices(_pick_connection(host, name), sorted({m for line in lines for m in line.models}))
    if fmt == "json":
        emit_json(
            {
                "connection": name,
                "since": since,
                "until": until,
                "lines": [line.model_dump(mode="json") for line in lines],
                "totals": _totals(lines),
                **({"prices": [p.model_dump(mode="json") for p in current]} if with_prices else {}),
            }
        )
        return
    title = f"Spend {'of ' + name if name else 'of all connections'}, {iso(since)} to {iso(until)}"
    table = Table("API key", "active models", "models", title=title, title_justify="left")
    table.add_column("cost", justify="right")
    for line in lines:
        table.add_row(
            line.api_key_label, str(len(line.models)), "\n".join(line.models), f"{line.cost:,.2f} {line.currency}"
        )
    for currency, total in _totals(lines).items():
        table.add_row("[bold]total[/]", "", "", f"[bold]{Decimal(total):,.2f} {currency}[/]")
    out.print(table)
    if current:
        price_table = Table("model", "current list price", title="Current list prices", title_justify="left")
        for p in current:
            price_table.add_row(p.model, f"{decimal_text(p.unit_price)} {p.currency} per {p.unit}")
        out.print(price_table)


def _totals(lines: list[Any]) -> dict[str, str]:
    totals: dict[str, Decimal] = {}
    for line in lines:
        totals[line.currency] = totals.get(line.currency, Decimal(0)) + line.cost
    return {currency: decimal_text(total) for currency, total in totals.items()}


# -- demo ------------------------------------------------------------------------------------------------------
@cli.command()
@click.option("--days", type=click.IntRange(1, 30), default=7, show_default=True, help="Days to backfill.")
@pass_ctx
def demo(ctx: Ctx, days: int) -> None:
    """Run everything offline: a fal simulator on loopback, a connection, a backfill and the report."""
    from connectors.fal.simulator import FalSimulator

    home = ctx.home / "demo"
    shutil.rmtree(home, ignore_errors=True)
    with handled(), FalSimulator(seed=2026) as sim:
        key = sim.add_account("acme-ai", n_keys=3, n_models=6)
        out.print(f"fal simulator listening on {sim.base_url} (team acme-ai)")
        with Host.open(home, store_url="") as host:
            connection = host.connect(
                "fal", "fal-demo", {"api_key": key, "base_url": sim.base_url, "backfill_days": days}
            )
            out.print(f"connected [bold]{connection.name}[/] to fal account [bold]{connection.account}[/]", markup=True)
            with progress_bar(sys.stderr.isatty()) as update:
                run_ = host.sync(connection.name, progress=update)
            out.print(_run_line(run_), markup=False)
            if run_.outcome != RunOutcome.SUCCEEDED:
                sys.exit(EXIT_FOR_OUTCOME[run_.outcome])
    ctx.home = home
    click.get_current_context().invoke(report, name="fal-demo", days=days, fmt="table")
    out.print(f"\nThe demo store is in {home}. Explore it with e.g. `connector-host --home {home} status`.")


def _needs_extra(name: str, extra: str, summary: str) -> click.Command:
    """A stand-in for a command whose optional packages are not installed: it says how to get them."""

    @click.command(name, context_settings={"ignore_unknown_options": True}, help=f"{summary} (needs [{extra}]).")
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def missing(args: tuple[str, ...]) -> None:
        fail(f"`{name}` needs the {extra} extra: pip install 'connector-host[{extra}]'", 2)

    return missing


def _add_optional_commands() -> None:
    """Commands whose packages are optional extras: the real ones when the extra is installed."""
    if all(importlib.util.find_spec(m) for m in ("fastapi", "uvicorn", "jinja2", "multipart")):
        from connector_sdk.portal.cli import serve

        cli.add_command(serve)
    else:
        cli.add_command(_needs_extra("serve", "portal", "Serve the admin portal, its REST API and the scheduler"))
    if all(importlib.util.find_spec(m) for m in ("celery", "redis")):
        from connector_sdk.worker_cli import schedule, worker

        cli.add_command(worker)
        cli.add_command(schedule)
    else:
        cli.add_command(_needs_extra("worker", "workers", "Run a Celery worker that syncs connections"))
        cli.add_command(_needs_extra("schedule", "workers", "Enqueue each due connection for the workers"))


_add_optional_commands()


def main() -> None:
    cli(prog_name="connector-host")


if __name__ == "__main__":
    main()
