"""``python -m connector_sdk.portal [--home DIR] serve ...``: the main CLI with ``serve`` added to it."""

from __future__ import annotations

from connector_sdk.cli import cli
from connector_sdk.portal.cli import serve

if "serve" not in cli.commands:
    cli.add_command(serve)

if __name__ == "__main__":
    cli(prog_name="connector-host")
