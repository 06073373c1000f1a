"""What every command shares: the run context, output consoles, and one mapping of errors to exit codes."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from connector_sdk.errors import ConfigError, ConnectorHostError
from connector_sdk.host import Host, store_is_writable
from connector_sdk.models import RunOutcome, SyncRun, decimal_text, iso

if TYPE_CHECKING:
    from rich.console import Console

    from connector_sdk.sync import Progress as SyncProgress

EXIT_FOR_OUTCOME = {
    RunOutcome.SUCCEEDED: 0,
    RunOutcome.RECONNECT_REQUIRED: 3,
    RunOutcome.GAVE_UP: 4,
    RunOutcome.FAILED: 1,
    RunOutcome.CANCELLED: 1,
}


class LazyConsole:
    """A Rich console made when a command first prints through it: one that prints JSON (``status --format json``)
    never imports Rich, whose console costs such a command more than its queries do."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # not made by __init__ (a copy): never Rich's
            raise AttributeError(name)
        return getattr(self.console, name)


# Off a terminal Rich would assume 80 columns; tables of timestamps and model ids need more.
out = LazyConsole(highlight=False, width=None if sys.stdout.isatty() else 160)
err = LazyConsole(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, code: int) -> NoReturn:
    from rich.text import Text

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


# Commands that only read the store: they work on a read-only home (the store opened read-only there). A group's
# subcommand that writes (`findings ack`) asks for a writable host itself.
READ_ONLY_COMMANDS = frozenset({"status", "report", "rows", "alerts", "keys", "findings"})
# Only these make a new home and store; any other command on a home without a store says so (a mistyped --home).
CREATING_COMMANDS = frozenset({"connect", "demo", "serve"})


class Ctx:
    def __init__(self, home: Path, store_url: str | None, command: str | None = None) -> None:
        self.home = home
        self.store_url = store_url
        self.command = command

    def host(self, *, writes: bool = False) -> Host:
        """The host for this command; ``writes`` for a subcommand that writes under a reading command's name."""
        reads = self.command in READ_ONLY_COMMANDS and not writes
        read_only = reads and not store_is_writable(self.home, self.store_url)
        return Host.open(
            self.home, store_url=self.store_url, read_only=read_only, create=self.command in CREATING_COMMANDS
        )


pass_ctx = click.make_pass_decorator(Ctx)


def read_secret(
    field: str, env_var: str | None, from_stdin: bool, *, flag: str = "--api-key-stdin", title: str | None = None
) -> str:
    """The secret from standard input (``flag``, e.g. ``--api-key-stdin``) or its environment variable, never argv;
    ``title`` is what people call it ("Admin key"), by default the field's name."""
    what = title or ("API key" if flag == "--api-key-stdin" else field.replace("_", " "))
    if from_stdin:
        if sys.stdin.isatty():
            return click.prompt(f"Paste the {what}", hide_input=True, err=True).strip()
        value = sys.stdin.readline().strip()
        if not value:
            raise ConfigError(f"{flag} was given but standard input was empty")
        return value
    value = os.environ.get(env_var or "", "").strip()
    if not value:
        where = f"set {env_var} or " if env_var else ""
        raise ConfigError(f"no {what} given: {where}pipe it to {flag} (secrets are never taken as arguments)")
    return value


def secret_for(host: Host, connector_id: str, from_stdin: bool) -> dict[str, str]:
    """The connector's secret from the environment variable its manifest names, or stdin, called by its title."""
    manifest = host.plugins.connector(connector_id).manifest()
    auth = manifest.authentication
    title = ((manifest.config_schema.get("properties") or {}).get(auth.secret_field) or {}).get("title")
    return {auth.secret_field: read_secret(auth.secret_field, auth.env_var, from_stdin, title=title)}


def parse_fields(settings: tuple[str, ...]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in settings:
        field, sep, value = item.partition("=")
        if not sep or not field.strip():
            fail(f"--set takes FIELD=VALUE, got {item!r}", 2)
        values[field.strip()] = value
    return values


def pick_connection(host: Host, name: str | None) -> str:
    if name:
        host.store.get_connection(name)
        return name
    names = [c.name for c in host.store.list_connections() if c.state != "disconnected"]
    if len(names) != 1:
        raise ConfigError("say which connection's key to use with --connection NAME")
    return names[0]


def run_line(run: SyncRun) -> str:
    base = f"{run.connection}: {run.outcome.value}, {run.rows_written} rows in {run.pages} pages"
    window = f" [{iso(run.window_start)} .. {iso(run.window_end)})"
    return base + window + (f"\n  {run.message}" if run.message else "")


@contextmanager
def progress_bar(enabled: bool) -> Iterator[Callable[[SyncProgress], None] | None]:
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[rows]} rows"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err.console, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def update(p: SyncProgress) -> None:
            task = tasks.get(p.run.run_id)
            if task is None:
                task = tasks[p.run.run_id] = bar.add_task(f"syncing {p.run.connection}", total=1.0, rows=0)
            bar.update(task, completed=p.fraction, rows=p.rows)

        yield update
