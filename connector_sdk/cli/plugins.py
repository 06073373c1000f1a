"""``plugins`` and ``manifest``: what is installed and what each connector asks for."""

from __future__ import annotations

import click
from rich.table import Table

from connector_sdk.cli.context import (
    emit_json,
    err,
    handled,
    out,
)
from connector_sdk.plugins import get_plugin_manager


# -- plugins and manifests -------------------------------------------------------------------------------------
@click.command()
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


@click.command()
@click.argument("connector_id")
def manifest(connector_id: str) -> None:
    """Print a connector's manifest as JSON (what an admin portal needs to offer it)."""
    with handled():
        emit_json(get_plugin_manager().connector(connector_id).manifest().model_dump(mode="json"))
