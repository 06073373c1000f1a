"""``prices`` and ``estimate``: the vendor's current list prices."""

from __future__ import annotations

from decimal import Decimal

import click
from rich.table import Table

from connector_sdk.cli.context import (
    Ctx,
    emit_json,
    err,
    fail,
    handled,
    out,
    pass_ctx,
    pick_connection,
)
from connector_sdk.models import decimal_text

EXAMPLE = "MODEL_ID=10 (10 billing units of MODEL_ID)"


@click.command()
@click.argument("models", nargs=-1, required=True)
@click.option("--connection", "name", help="Whose key to ask with [default: the only connection].")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@pass_ctx
def prices(ctx: Ctx, models: tuple[str, ...], name: str | None, fmt: str) -> None:
    """Current list prices of MODELS (model ids as the vendor names them, as `report` shows them), cached for ten
    minutes; unknown ones are listed apart. Only connectors whose vendor publishes prices can answer."""
    with handled(), ctx.host() as host:
        found = host.prices(pick_connection(host, name), list(models))
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


@click.command()
@click.argument("items", nargs=-1, required=True, metavar="MODEL=QUANTITY...")
@click.option("--connection", "name", help="Whose key to ask with [default: the only connection].")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_ctx
def estimate(ctx: Ctx, items: tuple[str, ...], name: str | None, fmt: str) -> None:
    """What QUANTITY billing units of each MODEL (a model id as `report` shows it) would cost at today's prices.

    Only connectors whose vendor publishes prices can answer.
    """
    quantities: dict[str, Decimal] = {}
    for item in items:
        model, sep, quantity = item.rpartition("=")
        if not sep or not model.strip():
            fail(f"{item!r} has no quantity: write MODEL=QUANTITY, e.g. {EXAMPLE}", 2)
        try:
            amount = Decimal(quantity)
        except ArithmeticError:
            fail(f"{item!r}: {quantity!r} is not a number; write MODEL=QUANTITY, e.g. {EXAMPLE}", 2)
        if not amount.is_finite() or amount <= 0:
            fail(f"{item!r}: the quantity must be a positive number, e.g. {EXAMPLE}", 2)
        quantities[model] = amount
    with handled(), ctx.host() as host:
        total, currency = host.estimate(pick_connection(host, name), quantities)
    if fmt == "json":
        emit_json({"total_cost": decimal_text(total), "currency": currency})
    else:
        out.print(f"{total:,.2f} {currency}")
