"""The shadow-IT view: ``keys`` (every key the vendors list or bill, with owner and spend) and ``findings``."""

from __future__ import annotations

import csv
import json
import sys
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from connector_sdk.cli.context import Ctx, emit_json, err, fail, handled, out, pass_ctx
from connector_sdk.cli.reading import vendor_name
from connector_sdk.errors import ConfigError
from connector_sdk.host import Host
from connector_sdk.models import Finding, FindingKind, KeyEvent, KeyRecord, Severity, decimal_text, iso

# `findings --fail-on`: an open finding at or above the level that no admin has acknowledged (README: exit status).
EXIT_FINDINGS = 6

SEVERITY_STYLE = {Severity.HIGH: "bold red", Severity.MEDIUM: "yellow", Severity.LOW: "cyan", Severity.INFO: "dim"}


def pages(finding: Finding, level: Severity) -> bool:
    """Whether ``--fail-on level`` counts the finding: open, at or above the level, and not acknowledged (an admin
    who acknowledged it has seen it; cron must not page them again every hour while it stays open)."""
    return finding.state == "open" and finding.severity.rank >= level.rank


def _stamp(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%MZ") if moment else "-"


def _money(amount: Decimal, currency: str | None) -> str:
    """Two decimals, as `report` shows money; a spend too small for them is "<0.01", never a misleading 0.00."""
    if currency is None and not amount:
        return "-"
    shown = "<0.01" if 0 < amount < Decimal("0.005") else f"{amount:,.2f}"
    return f"{shown} {currency}" if currency else shown


def _plain(value: Any) -> Any:
    """A field as JSON and CSV carry it: money as exact decimal text, instants as ISO 8601 UTC."""
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, datetime):
        return iso(value)
    return value


# -- keys ------------------------------------------------------------------------------------------------------
KEY_COLUMNS = (
    "connection",
    "connector",
    "vendor",
    "key_id",
    "name",
    "listing_status",
    "status",
    "scope",
    "owner",
    "owner_email",
    "owner_type",
    "owner_active",
    "workspace_id",
    "workspace_name",
    "created_at",
    "last_used_at",
    "first_usage_at",
    "last_usage_at",
    "spend_7d",
    "spend_30d",
    "currency",
    "first_seen_at",
    "first_listed_at",
    "last_listed_at",
    "gone_at",
    "listing",
)


def key_json(key: KeyRecord, vendor: str) -> dict[str, Any]:
    """A key as JSON gives it: every field of the record, the vendor's name and its ``listing_status``."""
    return {
        **key.model_dump(mode="json"),
        "spend_7d": decimal_text(key.spend_7d),
        "spend_30d": decimal_text(key.spend_30d),
        "vendor": vendor,
        "listing_status": key.listing_status,
    }


def _owner(key: KeyRecord) -> Text:
    who = key.owner or key.owner_email or "-"
    text = Text(who)
    if key.owner_active is False:
        text.append(" (no access)", style="red")
    return text


def _last_used(key: KeyRecord) -> str:
    """The vendor's last use when it says, else the last hour a row names the key."""
    if key.last_used_at is not None:
        return _stamp(key.last_used_at)
    return _stamp(key.last_usage_at) + ("\n(rows)" if key.last_usage_at else "")


def _status_text(key: KeyRecord) -> Text:
    standing = key.listing_status
    style = {"listed": "green", "gone": "yellow", "never listed": "red"}[standing]
    text = Text(standing, style=style)
    if key.listed and key.status and key.status != "active":
        text.append(f"\n({key.status})")
    if standing == "gone" and key.gone_at is not None:
        text.append(f"\nsince {key.gone_at:%Y-%m-%d}")
    return text


def _key_text(key: KeyRecord) -> Text:
    """The key's name over its id; a key named by its id alone (the rows gave no other name) shows it once."""
    if key.name == key.key_id:
        return Text(key.key_id)
    return Text.assemble(key.name or "(no name)", ("\n" + key.key_id, "dim"))


def _keys_table(keys: list[KeyRecord], vendors: dict[str, str], title: str) -> Table:
    table = Table("connection", title=title, title_justify="left")
    # A key id is what `keys NAME KEY_ID` takes: folded onto more lines, never cut short with an ellipsis.
    table.add_column("key", overflow="fold", min_width=max((len(k.key_id) for k in keys), default=3))
    for column in ("owner", "scope", "workspace", "last used"):
        table.add_column(column)
    table.add_column("7 days", justify="right")
    table.add_column("30 days", justify="right")
    table.add_column("status")
    for key in keys:
        table.add_row(
            Text.assemble(key.connection, ("\n" + vendors[key.connector], "dim")),
            _key_text(key),
            _owner(key),
            Text(key.scope or "-"),
            Text(key.workspace_name or key.workspace_id or "-"),
            _last_used(key),
            _money(key.spend_7d, key.currency),
            _money(key.spend_30d, key.currency),
            _status_text(key),
        )
    return table


def _write_keys_csv(keys: list[KeyRecord], vendors: dict[str, str]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")  # None is written as an empty field
    writer.writerow(KEY_COLUMNS)
    for key in keys:
        values = key_json(key, vendors[key.connector])
        writer.writerow(_plain(values.get(column)) for column in KEY_COLUMNS)


def _one_key(host: Host, name: str, wanted: str) -> KeyRecord:
    """The key of connection ``name`` with id ``wanted``, or else the one key named so."""
    keys = host.keys(name)
    by_id = [k for k in keys if k.key_id == wanted]
    by_name = [k for k in keys if k.name == wanted]
    if by_id or len(by_name) == 1:
        return (by_id or by_name)[0]
    if by_name:
        ids = ", ".join(k.key_id for k in by_name)
        raise ConfigError(f"{len(by_name)} keys of {name!r} are named {wanted!r} ({ids}): give the key's id")
    raise ConfigError(f"connection {name!r} has no key {wanted!r}; `connector-host keys {name}` lists its keys")


@click.command()
@click.argument("name", required=False)
@click.argument("key_id", required=False)
@click.option("--vendor", help="Only this vendor's connections (a connector id: fal, openai, anthropic).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
    help="json and csv carry every field, money as exact decimal text (csv: the inventory only).",
)
@pass_ctx
def keys(ctx: Ctx, name: str | None, key_id: str | None, vendor: str | None, fmt: str) -> None:
    """The key inventory: each key's owner, scope, last use, spend and status.

    Every key a vendor's key listing names (read after each sync) and every key id the rows bill.

    \b
    connector-host keys                  every connection's keys
    connector-host keys NAME             one connection's keys
    connector-host keys NAME KEY_ID      one key: its record, its history and its findings

    Status: `listed` (in the vendor's listing now), `gone` (it left the listing; its history is kept), `never listed`
    (rows bill it, no listing ever named it). Spend is billed cost over the last 7 and 30 days; last used is the
    vendor's figure where it gives one, else the last hour a row names the key ("(rows)").
    """
    if key_id is not None:
        if fmt == "csv":
            fail("--format csv lists the inventory; show one key as table or json", 2)
        _show_key(ctx, name or "", key_id, fmt)
        return
    with handled(), ctx.host() as host:
        found = host.keys(name, vendor=vendor)
        vendors = {k.connector: vendor_name(host, k.connector) for k in found}
    if fmt == "json":
        emit_json([key_json(k, vendors[k.connector]) for k in found])
    elif fmt == "csv":
        _write_keys_csv(found, vendors)
    elif not found:
        where = f" of {name}" if name else (f" of {vendor}" if vendor else "")
        out.print(f"No keys{where} yet: a connection's keys are read at each sync.", markup=False)
    else:
        title = f"Keys of {name}" if name else "Keys of every connection"
        out.print(_keys_table(found, vendors, title + (f" ({vendor})" if vendor else "")))


def _event_text(event: KeyEvent) -> str:
    detail = ", ".join(f"{k}: {_plain(v)}" for k, v in event.detail.items())
    return f"{_stamp(event.at)}  {event.event:8}  {detail}".rstrip()


def _show_key(ctx: Ctx, name: str, wanted: str, fmt: str) -> None:
    with handled(), ctx.host() as host:
        key = _one_key(host, name, wanted)
        history = host.key_history(name, key.key_id)
        about = [f for f in host.findings(name, open_only=False) if f.subject == key.key_id]
        vendor = vendor_name(host, key.connector)
    if fmt == "json":
        emit_json(
            {
                "key": key_json(key, vendor),
                "history": [e.model_dump(mode="json") for e in history],
                "findings": [finding_json(f) for f in about],
            }
        )
        return
    out.print(_keys_table([key], {key.connector: vendor}, f"Key {key.key_id} of {name}"))
    facts = {
        "created": _stamp(key.created_at),
        "first seen": _stamp(key.first_seen_at),
        "first listed": _stamp(key.first_listed_at),
        "last listed": _stamp(key.last_listed_at),
        "first spend": _stamp(key.first_usage_at),
        "last spend": _stamp(key.last_usage_at),
        "listing": key.listing or "-",
    }
    for label, value in facts.items():
        out.print(f"{label + ':':14}{value}", markup=False)
    out.print("\nHistory (oldest first):", markup=False)
    for event in history:
        out.print("  " + _event_text(event), markup=False)
    if not history:
        out.print("  (nothing yet: no listing has named this key)", markup=False)
    if about:
        out.print("")
        out.print(_findings_table(about, f"Findings about {key.key_id}"))


# -- findings --------------------------------------------------------------------------------------------------
def finding_json(finding: Finding) -> dict[str, Any]:
    return {**finding.model_dump(mode="json"), "state": finding.state}


def _evidence_lines(evidence: dict[str, Any]) -> str:
    def shown(value: Any) -> str:
        if isinstance(value, dict | list):
            return json.dumps(value, default=_plain, separators=(", ", ": "))
        return str(_plain(value))

    # Blank fields say nothing a person needs; JSON keeps every one.
    return "\n".join(f"{name}: {shown(value)}" for name, value in evidence.items() if value not in (None, "", [], {}))


def _state_text(finding: Finding) -> Text:
    state = finding.state
    if state == "resolved":
        return Text(f"resolved {_stamp(finding.resolved_at)}", style="green")
    if state == "acknowledged":
        return Text.assemble(("acknowledged", "cyan"), f" {_stamp(finding.acknowledged_at)}\n{finding.ack_note or ''}")
    return Text("open", style="bold")


def _findings_table(findings: list[Finding], title: str) -> Table:
    table = Table("id", "severity", "kind", "connection", title=title, title_justify="left")
    table.add_column("about", overflow="fold")
    table.add_column("opened")
    table.add_column("state")
    table.add_column("what and the evidence", ratio=1)
    for f in findings:
        table.add_row(
            str(f.id) if f.id is not None else "-",
            Text(f.severity.value, style=SEVERITY_STYLE[f.severity]),
            f.kind.value,
            Text(f.connection),
            Text.assemble(f.subject_label, ("\n" + f.subject, "dim") if f.subject != f.subject_label else ""),
            _stamp(f.opened_at),
            _state_text(f),
            Text.assemble(f.message, ("\n" + _evidence_lines(f.evidence), "dim") if f.evidence else ""),
        )
    return table


KINDS = [kind.value for kind in FindingKind]
SEVERITIES = [level.value for level in Severity]


@click.group(invoke_without_command=True)
@click.option("--open/--all", "open_only", default=True, help="Open findings only (the default), or resolved too.")
@click.option("--kind", type=click.Choice(KINDS), help="Only findings of this kind.")
@click.option("--connection", "name", metavar="NAME", help="Only this connection's findings.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option(
    "--fail-on",
    type=click.Choice(SEVERITIES),
    help=f"Exit {EXIT_FINDINGS} when an open finding at or above this severity is not acknowledged (for cron, CI).",
)
@click.pass_context
def findings(
    click_ctx: click.Context, open_only: bool, kind: str | None, name: str | None, fmt: str, fail_on: str | None
) -> None:
    """Findings: what in the keys and the spend needs an admin's attention, with the evidence.

    Spend from keys no listing names, new and idle keys, web-UI spend by a person, keys whose owner left, admin keys
    used for traffic, an account connected twice, spend spikes on a key (README: "Finding shadow AI spend").

    Open findings first, most severe first, newest first; each with its evidence. A finding resolves by itself when
    its condition clears; `findings ack ID --note TEXT` records that an admin has seen it.

    Exit status: 0, or with --fail-on SEVERITY, 6 when an open finding at or above SEVERITY (info, low, medium,
    high) has not been acknowledged; 2 for a usage error or an unknown connection.
    """
    if click_ctx.invoked_subcommand is not None:
        return
    ctx = click_ctx.find_object(Ctx)
    assert ctx is not None  # the group's callback always sets it
    with handled(), ctx.host() as host:
        found = host.findings(name, open_only=open_only, kind=kind)
    if fmt == "json":
        emit_json([finding_json(f) for f in found])
    elif not found:
        which = "open " if open_only else ""
        out.print(f"No {which}findings{' of ' + kind if kind else ''}{' on ' + name if name else ''}.", markup=False)
    else:
        title = ("Open findings" if open_only else "Findings") + (f" on {name}" if name else "")
        out.print(_findings_table(found, title))
    if fail_on is not None:
        level = Severity(fail_on)
        paging = [f for f in found if pages(f, level)]
        if paging:
            worst = max(f.severity.rank for f in paging)
            err.print(
                f"{len(paging)} open finding{'s' if len(paging) != 1 else ''} at or above {level.value} severity "
                f"(the worst: {list(Severity)[worst].value}) not acknowledged; "
                "`connector-host findings ack ID --note TEXT` once handled",
                markup=False,
            )
            sys.exit(EXIT_FINDINGS)


@findings.command("ack")
@click.argument("finding_id", type=int)
@click.option("--note", required=True, help="Why it is fine, or what was done (kept with the finding).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_ctx
def findings_ack(ctx: Ctx, finding_id: int, note: str, fmt: str) -> None:
    """Acknowledge finding FINDING_ID with a note: it stays open while its condition holds, but --fail-on stops
    counting it. It still resolves by itself when the condition clears."""
    note = note.strip()
    if not note:
        fail("--note is empty: say why the finding is fine, or what was done", 2)
    with handled(), ctx.host(writes=True) as host:
        finding = host.acknowledge_finding(finding_id, note)
    if fmt == "json":
        emit_json(finding_json(finding))
        return
    if finding.is_open:
        outcome = "it stays open while its condition holds, but --fail-on no longer counts it."
    elif finding.resolved_at == finding.acknowledged_at:
        outcome = f"resolved (a {finding.kind.value} finding needs nothing more once seen)."
    else:
        outcome = f"it had already resolved on {_stamp(finding.resolved_at)}; the note is kept."
    subject = f"{finding.kind.value}, {finding.subject_label} on {finding.connection}"
    out.print(f"Acknowledged finding {finding.id} ({subject}): {outcome}", markup=False)
