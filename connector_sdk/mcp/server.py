"""The MCP server: read-only tools and resources over the host's store, for assistants to ask the spend data.

A thin, typed face: each tool is a typed function whose docstring is its description; it calls
:mod:`connector_sdk.mcp.reading` (the store's queries) and answers a pydantic model as structured output with a
short text rendering. Nothing here connects, syncs, acknowledges or changes anything, and no answer carries a
credential: the host is opened read-only, with no key to decrypt them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from connector_sdk import __version__
from connector_sdk.errors import ConnectorHostError
from connector_sdk.host import Host
from connector_sdk.mcp import reading
from connector_sdk.mcp.answers import (
    BudgetStatusAnswer,
    ConnectionsAnswer,
    Dimension,
    FindingsAnswer,
    KeysAnswer,
    Ranked,
    SpendAnswer,
    TopSpendersAnswer,
    UsageRowsAnswer,
)
from connector_sdk.models import Overview, iso
from connector_sdk.models import SpendLine as OverviewLine

GUIDE_URI = "connector-host://guide"
MANIFEST_URI = "connector-host://manifests/{connector}"

GUIDE = """\
# How to read connector-host's spend data

- A row is what one API key (or one person) spent on, or used of, one model in one billing period (an hour for
  fal) on one connection. A connection is one vendor account connected with an Admin key; `vendor` is its
  connector (fal, openai).
- Billed cost vs usage rows: a row of kind "cost" holds billed money (`cost`, with `list_cost` before discount and
  `discount`), exact and in its `currency`. A row of kind "usage" counts quantities only (tokens, images) and holds
  no money: it tells who is spending before the bill arrives and is never added to any amount. Every total,
  breakdown, ranking and budget here sums billed cost only.
- "User key": spend that no API key made (the vendor's web UI, playground, or a team member's login token) is
  labelled "User key". `person` is the team member's login (`login_username`) where the vendor gives it; spend
  made with an API key has no person.
- Key labels are the keys' names at the vendor; a deleted key keeps the label the vendor gave its usage.
- A vendor account reached by two connections is counted once, from the connection that synced successfully last.
- A row counts in a period when its hour starts in it: `since` is included, `until` is the first instant left
  out (UTC). By default a period is the last 30 days up to the end of the current hour, as `connector-host report`
  counts it.
- Recent hours may still change: vendors revise them, and each sync polls the last two days again.
- The key inventory (`keys`) is what the vendors' key listings say after each sync, kept with its history: a key
  that left a listing is `gone`, one that rows bill but no listing ever named is `never listed`. Findings
  (`findings`) are conditions the host judged after a sync (spend from a key no listing names, an idle key, web-UI
  spend by a person...), each with its evidence; they open once, resolve when the condition clears, and an
  acknowledged one has been seen by an admin (it stays open while the condition holds).
"""

AnswerT = TypeVar("AnswerT", bound=BaseModel)


def _answer(model: BaseModel, text: str) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=model.model_dump(mode="json")
    )


def _asked(call: Callable[[], AnswerT]) -> AnswerT:
    """A host error (unknown connection, a period backwards) is the caller's to correct: a tool error saying it."""
    try:
        return call()
    except ConnectorHostError as error:
        raise ToolError(str(error)) from None


def _money(value: Decimal, currency: str) -> str:
    return f"{value:,.2f} {currency}"


def _period_text(answer: SpendAnswer | TopSpendersAnswer | UsageRowsAnswer) -> str:
    return f"{iso(answer.period.since)} to {iso(answer.period.until)}"


def _connections_text(answer: ConnectionsAnswer) -> str:
    if not answer.connections:
        return "No connections yet."
    lines = [
        f"{c.name} ({c.vendor}, account {c.account or '?'}): {c.state}"
        + (f" ({c.reason})" if c.reason else "")
        + f"; last sync {iso(c.last_sync) if c.last_sync else 'never'}"
        + f", next {iso(c.next_sync) if c.next_sync else 'not scheduled'}"
        for c in answer.connections
    ]
    return "\n".join([*lines, *answer.notes])


def _spend_text(answer: SpendAnswer) -> str:
    totals = ", ".join(_money(t.cost, t.currency) for t in answer.totals) or "nothing"
    lines = [f"Billed spend {_period_text(answer)}: {totals}."]
    for line in answer.lines[:20]:
        what = ", ".join(f"{k} {v if v is not None else '(none)'}" for k, v in line.group.items()) or "total"
        lines.append(f"- {what}: {_money(line.cost, line.currency)}")
    if len(answer.lines) > 20:
        lines.append(f"... and {len(answer.lines) - 20} more lines in the structured answer")
    return "\n".join([*lines, *answer.notes])


def _top_text(answer: TopSpendersAnswer) -> str:
    lines = [f"Top {answer.by} by billed cost, {_period_text(answer)} (change against the period before):"]
    for rank, s in enumerate(answer.spenders, 1):
        change = f"{s.change_percent:+}%" if s.change_percent is not None else "new"
        lines.append(f"{rank}. {s.name if s.name is not None else '(none)'}: {_money(s.cost, s.currency)} ({change})")
    return "\n".join([*lines, *answer.notes])


def _budgets_text(answer: BudgetStatusAnswer) -> str:
    if not answer.budgets:
        lines = [f"No budgets set ({answer.month})."]
    else:
        lines = [
            f"Budget {b.id} on {b.connection} ({b.scope}): {_money(b.spent, b.currency)} of "
            f"{_money(b.monthly_amount, b.currency)} in {answer.month} ({b.percent_used}%)"
            for b in answer.budgets
        ]
    lines += [f"alert {iso(a.fired_at)}: {a.message}" for a in answer.alerts]
    return "\n".join(lines)


def _keys_text(answer: KeysAnswer) -> str:
    if not answer.keys:
        return "No keys yet: a connection's keys are read at each sync."
    lines = [
        f"{k.name or '(no name)'} [{k.key_id}] on {k.connection} ({k.vendor}): {k.listing_status}"
        + (f", owner {k.owner or k.owner_email}" if k.owner or k.owner_email else "")
        + (" (no longer has access)" if k.owner_active is False else "")
        + (f", scope {k.scope}" if k.scope else "")
        + (f"; 30 days {_money(k.spend_30d, k.currency)}" if k.currency else "; no spend")
        for k in answer.keys[:30]
    ]
    if len(answer.keys) > 30:
        lines.append(f"... and {len(answer.keys) - 30} more keys in the structured answer")
    lines += [f"{iso(e.at)} {e.event} {e.key_id}" for e in answer.history]
    return "\n".join([*lines, *answer.notes])


def _findings_text(answer: FindingsAnswer) -> str:
    if not answer.findings:
        return "No findings."
    lines = [
        f"#{f.id} {f.severity.value} {f.kind.value} on {f.connection} ({f.state}): {f.message}"
        for f in answer.findings[:30]
    ]
    if len(answer.findings) > 30:
        lines.append(f"... and {len(answer.findings) - 30} more findings in the structured answer")
    return "\n".join([*lines, *answer.notes])


def _overview_text(answer: Overview) -> str:
    def shown(line: OverviewLine) -> str:
        change = f"{line.change_percent:+}%" if line.change_percent is not None else "new"
        return f"{line.label}: {_money(line.cost, line.currency)} ({change})"

    totals = ", ".join(shown(t) for t in answer.totals) or "nothing"
    lines = [f"Billed spend {iso(answer.since)} to {iso(answer.until)}: {totals}."]
    for title, group in (("vendor", answer.by_vendor), ("key", answer.by_key), ("person", answer.by_person)):
        lines += [f"- {title} {shown(line)}" for line in group[:5]]
    open_findings = answer.open_findings
    lines.append(f"{len(open_findings)} open findings" + (":" if open_findings else "."))
    lines += [f"- #{f.id} {f.severity.value} {f.kind.value}: {f.message}" for f in open_findings[:10]]
    return "\n".join(lines)


def _rows_text(answer: UsageRowsAnswer) -> str:
    head = f"{len(answer.rows)} rows from offset {answer.offset}, {_period_text(answer)}"
    more = "; more follow (ask again with a higher offset)" if answer.more else ""
    lines = [head + more]
    lines += [
        f"{row['period_start']} {row['connection']} {row['api_key_label']} {row['model']}: "
        + (f"{row['cost']} {row['currency']}" if row["cost"] is not None else f"{row['quantity']} {row['unit']}")
        for row in answer.rows[:20]
    ]
    return "\n".join([*lines, *answer.notes])


READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)

Since = Annotated[str | None, Field(description="First instant included, ISO 8601 (UTC if no offset).")]
Until = Annotated[str | None, Field(description="First instant left out, ISO 8601; default: end of this hour.")]
Days = Annotated[int | None, Field(description="Days back from `until` (default 30, at most 3660).")]
Vendor = Annotated[str | None, Field(description="Only this connector (fal, openai).")]
ConnectionName = Annotated[str | None, Field(description="Only this connection (see list_connections).")]
Key = Annotated[str | None, Field(description='Only this API key label ("User key" for spend without a key).')]
Person = Annotated[str | None, Field(description="Only this person (login username).")]
Model = Annotated[str | None, Field(description="Only this model (the vendor's model or endpoint id).")]
FindingKindName = Annotated[
    str | None,
    Field(
        description="Only this kind: unlisted_key_spend, new_key, idle_key, web_ui_spend, owner_gone, "
        "admin_key_traffic, duplicate_account, spend_spike."
    ),
]


def build_server(host: Host) -> MCPServer:
    """The server over ``host`` (opened read-only by the caller): eight tools and the resources."""
    server: MCPServer = MCPServer(
        "connector-host",
        version=__version__,
        instructions=(
            "Read-only spend data of the AI and SaaS vendors connected to this connector-host. "
            f"Read {GUIDE_URI} to explain figures: billed cost vs usage rows, and what 'User key' means."
        ),
    )

    @server.tool(annotations=READ_ONLY)
    def list_connections() -> Annotated[CallToolResult, ConnectionsAnswer]:
        """The connected vendor accounts: state (and why), last and next sync, vendor and account, row count.

        A connection with `counted_in_totals` false reaches an account another connection also reaches; the
        other one's rows stand for it, so spend is never counted twice.
        """
        answer = _asked(lambda: reading.list_connections(host))
        return _answer(answer, _connections_text(answer))

    @server.tool(annotations=READ_ONLY)
    def spend(
        since: Since = None,
        until: Until = None,
        days: Days = None,
        group_by: Annotated[
            list[Dimension] | None, Field(description="Break the total down by any of these, in this order.")
        ] = None,
        vendor: Vendor = None,
        connection: ConnectionName = None,
        key: Key = None,
        person: Person = None,
        model: Model = None,
    ) -> Annotated[CallToolResult, SpendAnswer]:
        """Billed spend over a period: the total per currency, and a breakdown by any of vendor, connection, key
        (API key label), person, model and day, highest cost first; filters narrow it by the same dimensions.

        Every connection is read, each vendor account once. Only billed cost is summed: usage rows (quantities
        without money) are left out and counted. "User key" is spend made without an API key (the vendor's web UI,
        playground, a team member's login token); `person` is the login behind it where the vendor gives one.
        Period: `since`/`until` (ISO 8601, UTC; until is left out), or `days` back from the end of the current
        hour (default 30, as `connector-host report`).
        """
        filters = reading.Filters(vendor=vendor, connection=connection, key=key, person=person, model=model)
        dimensions = list(group_by or [])
        answer = _asked(
            lambda: reading.spend(host, since=since, until=until, days=days, group_by=dimensions, filters=filters)
        )
        return _answer(answer, _spend_text(answer))

    @server.tool(annotations=READ_ONLY)
    def top_spenders(
        by: Annotated[Ranked, Field(description="Rank API keys (key), people (person) or models (model).")] = "key",
        n: Annotated[int, Field(description="How many to list (1-100).")] = 10,
        since: Since = None,
        until: Until = None,
        days: Days = None,
        vendor: Vendor = None,
        connection: ConnectionName = None,
        model: Model = None,
    ) -> Annotated[CallToolResult, TopSpendersAnswer]:
        """The N API keys, people or models that cost most over a period, each with its cost in the period of
        equal length just before and the change (percent null when it cost nothing before).

        Billed cost only; each vendor account counted once. A key named "User key" is spend without an API key
        (web UI, playground, login tokens); ranking by person ranks the logins behind that spend.
        Period: `since`/`until` (ISO 8601, UTC; until is left out), or `days` back from the end of the current
        hour (default 30).
        """
        filters = reading.Filters(vendor=vendor, connection=connection, model=model)
        answer = _asked(
            lambda: reading.top_spenders(host, by=by, n=n, since=since, until=until, days=days, filters=filters)
        )
        return _answer(answer, _top_text(answer))

    @server.tool(annotations=READ_ONLY)
    def budget_status(connection: ConnectionName = None) -> Annotated[CallToolResult, BudgetStatusAnswer]:
        """Each monthly budget's spend so far this month (UTC) against its amount, the thresholds reached, and
        the budget and anomaly alerts fired this month, newest first."""
        answer = _asked(lambda: reading.budget_status(host, connection))
        return _answer(answer, _budgets_text(answer))

    @server.tool(annotations=READ_ONLY)
    def usage_rows(
        since: Since = None,
        until: Until = None,
        days: Days = None,
        vendor: Vendor = None,
        connection: ConnectionName = None,
        key: Key = None,
        person: Person = None,
        model: Model = None,
        offset: Annotated[int, Field(description="Rows to skip (paging).")] = 0,
        limit: Annotated[int, Field(description=f"Rows to return; at most {reading.ROWS_CAP}.")] = 50,
    ) -> Annotated[CallToolResult, UsageRowsAnswer]:
        """The normalized rows behind an answer, by hour then row id, one bounded page at a time (at most 200 rows
        a call; `more` says whether rows follow). A row of kind "cost" holds billed money; kind "usage" counts a
        quantity only. Money and quantities are exact decimal text.
        Period: `since`/`until` (ISO 8601, UTC; until is left out), or `days` back from the end of the current
        hour (default 30).
        """
        filters = reading.Filters(vendor=vendor, connection=connection, key=key, person=person, model=model)
        answer = _asked(
            lambda: reading.usage_rows(
                host, since=since, until=until, days=days, filters=filters, offset=offset, limit=limit
            )
        )
        return _answer(answer, _rows_text(answer))

    @server.tool(annotations=READ_ONLY)
    def keys(
        vendor: Vendor = None,
        connection: ConnectionName = None,
        key: Annotated[
            str | None, Field(description="One key, by its id or its name: its record and its history.")
        ] = None,
    ) -> Annotated[CallToolResult, KeysAnswer]:
        """The key inventory: every API key the vendors' listings name or the rows bill, with its owner (and whether
        the owner still has access), scope, workspace, last use, billed spend over 7 and 30 days, and
        `listing_status`: listed, gone (it left the listing; its history is kept), or never listed (billed, yet no
        listing ever named it: a deleted or hidden key). Highest 30-day spend first. With `key`, that key's history
        too (first listed, renamed, gone, returned).
        """
        answer = _asked(lambda: reading.keys(host, vendor=vendor, connection=connection, key=key))
        return _answer(answer, _keys_text(answer))

    @server.tool(annotations=READ_ONLY)
    def findings(
        include_resolved: Annotated[bool, Field(description="Also findings whose condition has cleared.")] = False,
        kind: FindingKindName = None,
        connection: ConnectionName = None,
        min_severity: Annotated[
            str | None, Field(description="Only findings at least this severe: info, low, medium or high.")
        ] = None,
    ) -> Annotated[CallToolResult, FindingsAnswer]:
        """What needs an admin's attention (shadow AI spend): spend from a key no listing names, new keys, idle
        keys, web-UI spend by a person, keys whose owner lost access, admin keys used for traffic, an account
        connected twice, spend spikes on a key. Each with its severity, the key or person, the evidence in figures
        and its state: open, acknowledged (an admin has seen it; still open) or resolved (the condition cleared).
        Open ones first, most severe first. Read-only: acknowledging is `connector-host findings ack`.
        """
        answer = _asked(
            lambda: reading.findings(
                host, include_resolved=include_resolved, kind=kind, connection=connection, min_severity=min_severity
            )
        )
        return _answer(answer, _findings_text(answer))

    @server.tool(annotations=READ_ONLY)
    def overview(
        days: Annotated[int, Field(description="The period: this many days up to the end of this hour (1-3660).")] = 30,
    ) -> Annotated[CallToolResult, Overview]:
        """Spend across every connection over the last `days` against the period of equal length before it, by
        vendor, key, person (web-UI spend) and model, each with its change, and the open findings, most severe
        first. Billed cost only, per currency; each vendor account counted once, as `report` counts it.
        """
        answer = _asked(lambda: reading.overview(host, days=days))
        return _answer(answer, _overview_text(answer))

    @server.resource(GUIDE_URI, name="guide", title="How to read this data", mime_type="text/markdown")
    def guide() -> str:
        """What a row is, billed cost vs usage rows, and what "User key" means."""
        return GUIDE

    for connector_id in sorted(host.plugins.connectors):
        _manifest_resource(server, host, connector_id)
    return server


def _manifest_resource(server: MCPServer, host: Host, connector_id: str) -> None:
    connector = host.plugins.connectors[connector_id]

    @server.resource(
        MANIFEST_URI.format(connector=connector_id),
        name=f"{connector_id}-manifest",
        title=f"The {connector_id} connector's manifest",
        mime_type="application/json",
    )
    def manifest() -> str:
        """What the connector collects, its setup steps, configuration schema, permissions and limitations."""
        return json.dumps(connector.manifest().model_dump(mode="json"), indent=2)
