"""Reading the spend: ``rows`` (exports) and ``report`` (spend per API key label)."""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import click

from connector_sdk.cli.context import (
    Ctx,
    emit_json,
    handled,
    out,
    parse_moment,
    pass_ctx,
    pick_connection,
)
from connector_sdk.errors import ConfigError
from connector_sdk.host import Host, SharedAccount
from connector_sdk.models import ROW_FIELDS, ReportLine, UsageRow, decimal_text, iso


@contextmanager
def replaced_at_the_end(output: Path) -> Iterator[Path]:
    """A temporary path beside ``output`` that becomes ``output`` only once the block completes.

    An export that is interrupted (Ctrl-C, a failing store) or fails leaves no partial file, and an older file of
    that name stays whole; beside it, not in /tmp, so the final rename stays on one file system.
    """
    folder = output.parent
    if not folder.is_dir():
        raise ConfigError(f"cannot write {output}: the folder {folder} does not exist")
    partial = folder / f".{output.name}.{os.getpid()}.part"
    try:
        yield partial
        os.replace(partial, output)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {output}: {error.strerror or error}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def write_rows(rows: Iterator[UsageRow], stream: IO[str], fmt: str) -> None:
    """``rows`` as JSON Lines, CSV or FOCUS CSV; money and quantities as exact decimal text."""
    if fmt == "focus":
        from connector_sdk.focus import write_focus_csv

        write_focus_csv(rows, stream)
    elif fmt == "csv":
        writer = csv.writer(stream, lineterminator="\n")  # None is written as an empty field
        writer.writerow(ROW_FIELDS)
        writer.writerows(row.export().values() for row in rows)
    else:
        stream.writelines(json.dumps(row.export(), separators=(",", ":")) + "\n" for row in rows)


@click.command()
@click.argument("name", required=False)
@click.option("--since", help="First hour to include (ISO 8601, UTC if no offset).")
@click.option("--until", help="First hour to exclude (ISO 8601).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv", "focus"]),
    default="jsonl",
    show_default=True,
    help="focus: FOCUS 1.2 columns (README: FOCUS export), as CSV, or as Parquet when -o ends in .parquet.",
)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file, not stdout.")
@pass_ctx
def rows(ctx: Ctx, name: str | None, since: str | None, until: str | None, fmt: str, output: Path | None) -> None:
    """Export normalized rows; money and quantities are exact decimal strings."""
    with handled(), ctx.host() as host:
        start, end = parse_moment(since, "--since"), parse_moment(until, "--until")
        if start is not None and end is not None and start >= end:
            raise ConfigError(
                f"--since ({iso(start)}) must be before --until ({iso(end)}): --until is the first hour left out"
            )
        if name is not None:
            host.store.get_connection(name)
        selected = host.store.iter_rows(name, since=start, until=end)
        if output is None:
            write_rows(selected, sys.stdout, fmt)
            return
        with replaced_at_the_end(output) as partial:
            if fmt == "focus" and output.suffix.lower() == ".parquet":
                from connector_sdk.focus import write_focus_parquet

                write_focus_parquet(selected, partial)
                return
            with partial.open("x", newline="", encoding="utf-8") as stream:
                write_rows(selected, stream, fmt)


REPORT_DAYS = 30


@click.command()
@click.argument("name", required=False)
@click.option(
    "--days",
    type=click.IntRange(1, 3660),
    default=REPORT_DAYS,
    show_default=True,
    help="Period: this many days up to the end of the current hour (UTC).",
)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--prices", "with_prices", is_flag=True, help="Also show each model's current list price.")
@pass_ctx
def report(ctx: Ctx, name: str | None, days: int, fmt: str, with_prices: bool) -> None:
    """Billed spend per API key label (web-UI activity as "User key"): active models and total cost.

    Without NAME, every connection's spend, per vendor, with each vendor account counted once: when two connections
    reach the same account, the rows of the one that synced successfully last are counted (the output names the
    others). Usage-only rows (hourly tokens a vendor bills later, by the day) never add cost.
    """
    current: list[Any] = []
    with handled(), ctx.host() as host:
        since, until, lines = host.report(name, days=days)
        shared = host.shared_accounts() if name is None else []
        names = host.vendor_names() if lines else {}
        vendors = {line.connector: names.get(line.connector, line.connector) for line in lines}
        if with_prices and lines:
            current = host.prices(pick_connection(host, name), sorted({m for line in lines for m in line.models}))
    if name is None:  # grouped by vendor, then highest cost first, as the store orders them
        lines = sorted(lines, key=lambda line: vendors[line.connector].casefold())
    if fmt == "json":
        emit_json(
            {
                "connection": name,
                "days": days,
                "since": since,
                "until": until,
                "lines": [line.model_dump(mode="json") | {"vendor": vendors[line.connector]} for line in lines],
                "totals": _totals(lines),
                "vendors": [
                    {"connector": connector, "vendor": vendor, "totals": _totals(of)}
                    for connector, vendor, of in _by_vendor(lines, vendors)
                ],
                **({"merged": [asdict(account) for account in shared]} if name is None else {}),
                **({"prices": [p.model_dump(mode="json") for p in current]} if with_prices else {}),
            }
        )
        return
    from rich.table import Table

    title = f"Spend {'of ' + name if name else 'of all connections'}, {iso(since)} to {iso(until)} (last {days} days)"
    per_vendor = name is None
    table = Table(*(["vendor"] if per_vendor else []), "API key", "active models", "models", title=title)
    table.title_justify = "left"
    table.add_column("cost", justify="right")
    blank = [""] if per_vendor else []
    for _connector, vendor, of in _by_vendor(lines, vendors) if per_vendor else [("", "", lines)]:
        for line in of:
            cells = [
                line.api_key_label,
                str(len(line.models)),
                "\n".join(line.models),
                _money(line.cost, line.currency),
            ]
            table.add_row(*([vendor] if per_vendor else []), *cells)
        if per_vendor:
            for currency, total in _totals(of).items():
                table.add_row(
                    "", f"[italic]all {vendor} keys[/]", "", "", f"[italic]{_money(Decimal(total), currency)}[/]"
                )
            table.add_section()
    for currency, total in _totals(lines).items():
        table.add_row(*blank, "[bold]total[/]", "", "", f"[bold]{_money(Decimal(total), currency)}[/]")
    if shared:
        table.caption = "\n".join(_merged_note(account) for account in shared)
        table.caption_justify = "left"
    out.print(table)
    if current:
        price_table = Table("model", "current list price", title="Current list prices", title_justify="left")
        for p in current:
            price_table.add_row(p.model, f"{decimal_text(p.unit_price)} {p.currency} per {p.unit}")
        out.print(price_table)


def vendor_name(host: Host, connector: str) -> str:
    """The vendor a connector reads, as its manifest names it for people (its id if it is not installed)."""
    return host.vendor_names().get(connector, connector)


def _by_vendor(lines: list[ReportLine], vendors: dict[str, str]) -> list[tuple[str, str, list[ReportLine]]]:
    """The lines of each connector, in the order they come: ``(connector, vendor name, lines)``."""
    groups: dict[str, list[ReportLine]] = {}
    for line in lines:
        groups.setdefault(line.connector, []).append(line)
    return [(connector, vendors[connector], of) for connector, of in groups.items()]


def _money(amount: Decimal, currency: str) -> str:
    return f"{amount:,.2f} {currency}"


def _merged_note(account: SharedAccount) -> str:
    others = ", ".join(account.merged)
    return (
        f"* {account.connector} account {account.account} is reached by {account.counted} and {others}: "
        f"counted once, from {account.counted}'s rows"
    )


def _totals(lines: list[Any]) -> dict[str, str]:
    totals: dict[str, Decimal] = {}
    for line in lines:
        totals[line.currency] = totals.get(line.currency, Decimal(0)) + line.cost
    return {currency: decimal_text(total) for currency, total in totals.items()}
