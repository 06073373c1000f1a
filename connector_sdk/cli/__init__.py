"""``connector-host``: connect vendor accounts, sync their usage hourly, and read the spend.

The group is here; each command lives in the module of its group (connections, reading, inventory, sinks, budgets,
prices, services, serve, workers, demo) and is imported only when it runs, so ``status`` never pays for the portal.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import click

# connector_sdk.host.HOME_ENV and connector_sdk.stores.STORE_ENV, spelled out so that building the group (for
# --version and --help too) imports neither; tests/test_startup.py holds them equal.
HOME_ENV = "CONNECTOR_HOST_HOME"
STORE_ENV = "CONNECTOR_HOST_STORE"

# Command name -> (module:attribute, modules its optional extra brings, the extra, a one-line summary).
COMMANDS: dict[str, tuple[str, tuple[str, ...], str, str]] = {
    "plugins": ("plugins:plugins", (), "", ""),
    "manifest": ("plugins:manifest", (), "", ""),
    "connect": ("connections:connect", (), "", ""),
    "reconnect": ("connections:reconnect", (), "", ""),
    "disconnect": ("connections:disconnect", (), "", ""),
    "sync": ("connections:sync", (), "", ""),
    "status": ("connections:status", (), "", ""),
    "rows": ("reading:rows", (), "", ""),
    "report": ("reading:report", (), "", ""),
    "sink": ("sinks:sink", (), "", ""),
    "budget": ("budgets:budget", (), "", ""),
    "alerts": ("budgets:alerts", (), "", ""),
    "keys": ("inventory:keys", (), "", ""),
    "findings": ("inventory:findings", (), "", ""),
    "prices": ("prices:prices", (), "", ""),
    "estimate": ("prices:estimate", (), "", ""),
    "run": ("services:run", (), "", ""),
    "demo": ("demo:demo", (), "", ""),
    "simulator": ("simulator:simulator", (), "", ""),
    "serve": (
        "serve:serve",
        ("fastapi", "uvicorn", "jinja2", "multipart"),
        "portal",
        "Serve the admin portal, its REST API and the scheduler",
    ),
    "mcp": ("mcp:mcp", ("mcp",), "mcp", "Serve the spend data to AI assistants over MCP (read-only)"),
    "worker": ("workers:worker", ("celery", "redis"), "workers", "Run a Celery worker that syncs connections"),
    "schedule": ("workers:schedule", ("celery", "redis"), "workers", "Enqueue each due connection for the workers"),
}


def _needs_extra(name: str, extra: str, summary: str) -> click.Command:
    """A stand-in for a command whose optional packages are not installed: it says how to get them."""

    @click.command(name, context_settings={"ignore_unknown_options": True}, help=f"{summary} (needs [{extra}]).")
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def missing(args: tuple[str, ...]) -> None:
        from connector_sdk.cli.context import fail

        fail(f"`{name}` needs the {extra} extra: pip install 'connector-host[{extra}]'", 2)

    return missing


class CommandRooms(click.Group):
    """A group that imports a command's module only when that command is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        if cmd_name not in COMMANDS:
            return None
        target, needs, extra, summary = COMMANDS[cmd_name]
        if needs and not all(importlib.util.find_spec(module) for module in needs):
            return _needs_extra(cmd_name, extra, summary)
        module, _, attribute = target.partition(":")
        command: click.Command = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
        return command


def _show_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """``--version``: answered before the group's callback runs, so it opens no store and configures nothing."""
    if not value or ctx.resilient_parsing:
        return
    from connector_sdk import __version__

    click.echo(f"connector-host, version {__version__}")
    ctx.exit()


@click.group(cls=CommandRooms, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_show_version,
    help="Show the version and exit.",
)
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
    Start with `connector-host demo` to see it all against local fal, OpenAI and Anthropic simulators.
    """
    from connector_sdk.cli.context import Ctx
    from connector_sdk.host import default_home
    from connector_sdk.logs import configure_logging

    tty = sys.stderr.isatty()
    configure_logging(
        level=log_level or ("warning" if tty else "info"),
        json_output=(log_format == "json") if log_format else not tty,
    )
    ctx.obj = Ctx(home or default_home(), store_url, ctx.invoked_subcommand)


def main() -> None:
    cli(prog_name="connector-host")


if __name__ == "__main__":
    main()
