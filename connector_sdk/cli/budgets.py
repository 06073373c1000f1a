"""``budget`` and ``alerts``: monthly budgets, thresholds and anomaly alerts."""

from __future__ import annotations

from decimal import Decimal

import click
from rich.table import Table

from connector_sdk.budgets import check_currency, check_scope, parse_thresholds
from connector_sdk.cli.context import (
    Ctx,
    emit_json,
    handled,
    out,
    pass_ctx,
)
from connector_sdk.errors import ConfigError
from connector_sdk.models import iso


# -- budgets and alerts ----------------------------------------------------------------------------------------
@click.group()
def budget() -> None:
    """Monthly budgets with thresholds, and anomaly alerts, checked after every sync."""


@budget.command("set")
@click.argument("name")
@click.option("--monthly", required=True, help="The monthly budget, e.g. 500 or 1250.50.")
@click.option("--currency", default="USD", show_default=True)
@click.option("--thresholds", default="50,80,100", show_default=True, help="Percentages that each fire an alert.")
@click.option("--label", help="Only this API key label (e.g. 'User key').")
@click.option("--model", help="Only this model, as `report` names it (the vendor's model id).")
@click.option("--anomaly/--no-anomaly", default=True, show_default=True, help="Also alert on anomalous days.")
@click.option("--force", is_flag=True, help="Accept a --label or --model the connection has not seen (yet).")
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
    force: bool,
    fmt: str,
) -> None:
    """Add a budget to connection NAME.

    --thresholds are whole percentages of the monthly amount, strictly increasing; --currency an ISO 4217 code;
    --label and --model must be ones the connection has seen (its `report`), unless --force.
    """
    with handled(), ctx.host() as host:
        try:
            amount = Decimal(monthly)
        except ArithmeticError:
            raise ConfigError(f"--monthly takes a decimal amount, e.g. 500 or 1250.50 (got {monthly!r})") from None
        if not amount.is_finite() or amount <= 0:
            raise ConfigError("--monthly must be a positive amount")
        levels = parse_thresholds(thresholds)
        code = check_currency(currency)
        host.store.get_connection(name)
        if not force:
            check_scope(host, name, api_key_label=label, model=model)
        created = host.store.add_budget(
            name,
            monthly_amount=amount,
            currency=code,
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


@click.command()
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
