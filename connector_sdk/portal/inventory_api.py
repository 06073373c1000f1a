"""The REST API of the overview, the key inventory and the findings (``/api/v1``): what their pages show, for
scripts, with the same figures (money as exact decimal strings)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query

from connector_sdk.models import Finding, FindingKind, KeyEvent, KeyRecord, Severity, SpendLine, decimal_text
from connector_sdk.portal import service
from connector_sdk.portal.api import ERRORS, PREFIX, Days, row_out
from connector_sdk.portal.context import Portal, PortalDep
from connector_sdk.portal.inventory_pages import KEY_KINDS, SPARK_DAYS, key_url
from connector_sdk.portal.schemas import (
    Acknowledge,
    DailyCosts,
    ErrorBody,
    FindingLinks,
    FindingOut,
    KeyDetailOut,
    KeyEventOut,
    KeyLinks,
    KeyOut,
    OverviewOut,
    RowsOut,
    SpendLineOut,
)

router = APIRouter(prefix=PREFIX, responses=ERRORS)

KeySort = Literal[tuple(f"{sign}{column}" for column in service.KEY_SORTS for sign in ("", "-"))]  # type: ignore[valid-type]
KeyState = Literal["active", "inactive", "gone", "unlisted"]
NO_KEY = {404: {"model": ErrorBody, "description": "No such connection, or the connection has no such key."}}
NO_CONNECTION = {404: {"model": ErrorBody, "description": "No such connection (the `connection` filter)."}}
NO_FINDING = {404: {"model": ErrorBody, "description": "No such finding."}}


def api_key_url(connection: str, key_id: str, tail: str = "") -> str:
    return f"{PREFIX}/keys/{quote(connection, safe='')}/{quote(key_id, safe='')}{tail}"


def finding_out(finding: Finding) -> FindingOut:
    assert finding.id is not None, "a stored finding has an id"
    about_key = finding.kind in KEY_KINDS
    return FindingOut(
        id=finding.id,
        connection=finding.connection,
        connector=finding.connector,
        kind=finding.kind,
        title=service.FINDING_TITLES[finding.kind],
        severity=finding.severity,
        subject=finding.subject,
        subject_label=finding.subject_label,
        message=finding.message,
        evidence=finding.evidence,
        open=finding.is_open,
        opened_at=finding.opened_at,
        updated_at=finding.updated_at,
        resolved_at=finding.resolved_at,
        acknowledged_at=finding.acknowledged_at,
        ack_note=finding.ack_note,
        links=FindingLinks(
            self=f"{PREFIX}/findings/{finding.id}",
            acknowledge=f"{PREFIX}/findings/{finding.id}/acknowledge",
            key=api_key_url(finding.connection, finding.subject) if about_key else None,
            page=key_url(finding.connection, finding.subject) if about_key else None,
        ),
    )


def key_out(record: KeyRecord, open_findings: int) -> KeyOut:
    state, words = service.key_status(record)
    return KeyOut(
        **record.model_dump(exclude={"spend_7d", "spend_30d"}),
        state=state,
        state_label=words,
        last_used=service.key_last_used(record),
        spend_7d=decimal_text(record.spend_7d),
        spend_30d=decimal_text(record.spend_30d),
        open_findings=open_findings,
        links=KeyLinks(
            self=api_key_url(record.connection, record.key_id),
            history=api_key_url(record.connection, record.key_id, "/history"),
            rows=api_key_url(record.connection, record.key_id, "/rows"),
            page=key_url(record.connection, record.key_id),
        ),
    )


def event_out(event: KeyEvent) -> KeyEventOut:
    return KeyEventOut(at=event.at, event=event.event, detail=event.detail)


def open_finding_counts(portal: Portal, name: str | None = None) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for f in portal.host.findings(name):
        if f.kind in KEY_KINDS:
            counts[(f.connection, f.subject)] = counts.get((f.connection, f.subject), 0) + 1
    return counts


def spend_line_out(line: SpendLine, links: dict[str, str] | None = None) -> SpendLineOut:
    return SpendLineOut(
        key=line.key,
        label=line.label,
        connector=line.connector,
        currency=line.currency,
        cost=decimal_text(line.cost),
        previous_cost=decimal_text(line.previous_cost),
        change=decimal_text(line.change),
        change_percent=None if line.change_percent is None else decimal_text(line.change_percent),
        row_count=line.row_count,
        links=links or {},
    )


# -- overview ------------------------------------------------------------------------------------------------------
@router.get("/overview", tags=["overview"], summary="Spend across every connection, and the open findings")
def overview(portal: PortalDep, days: Days = 30) -> OverviewOut:
    """The portal's home page as JSON: billed spend over the period by vendor, key, person (web UI) and model, each
    against the period of the same length before it; totals per currency equal ``GET /report``'s (a vendor account
    connected twice counts once); the open findings, highest severity first."""
    view = portal.host.overview(days)
    targets = service.key_targets(portal.host.keys(None), view.connections)
    by_key = []
    for line in view.by_key:
        target = targets.get((line.connector, line.key))
        links = {} if target is None else {"key": api_key_url(*target), "page": key_url(*target)}
        by_key.append(spend_line_out(line, links))
    return OverviewOut(
        days=view.days,
        since=view.since,
        until=view.until,
        previous_since=view.previous_since,
        connections=view.connections,
        totals=[spend_line_out(line) for line in view.totals],
        by_vendor=[spend_line_out(line) for line in view.by_vendor],
        by_key=by_key,
        by_person=[spend_line_out(line) for line in view.by_person],
        by_model=[spend_line_out(line) for line in view.by_model],
        open_findings=[finding_out(f) for f in view.open_findings],
    )


# -- keys ----------------------------------------------------------------------------------------------------------
@router.get("/keys", tags=["inventory"], summary="The key inventory across connections", responses=NO_CONNECTION)
def list_keys(
    portal: PortalDep,
    connection: Annotated[str | None, Query(description="Only this connection's keys.")] = None,
    vendor: Annotated[str | None, Query(description="Only this connector's keys, e.g. 'openai'.")] = None,
    q: Annotated[
        str | None,
        Query(max_length=200, description="Keys whose name, id, owner, e-mail, scope or workspace contains this."),
    ] = None,
    state: Annotated[KeyState | None, Query(description="Only keys in this state.")] = None,
    sort: Annotated[KeySort, Query(description="A column; '-' first for descending.")] = "-spend_30d",  # type: ignore[valid-type]
) -> list[KeyOut]:
    """Every key a listing named and every key id the rows name, with owner, scope, last use, 7- and 30-day spend
    and how many findings about it are open."""
    if connection:
        service.connection(portal.host, connection)
    records = portal.host.keys(connection or None, vendor=vendor or None)
    records = [r for r in service.search_keys(records, q or "") if state is None or service.key_status(r)[0] == state]
    counts = open_finding_counts(portal, connection or None)
    return [key_out(r, counts.get((r.connection, r.key_id), 0)) for r in service.sort_keys(records, sort)]


@router.get(
    "/keys/{name}/{key_id}",
    tags=["inventory"],
    summary="One key: details, daily spend, findings, history",
    responses=NO_KEY,
)
def get_key(portal: PortalDep, name: str, key_id: str, days: Days = SPARK_DAYS) -> KeyDetailOut:
    host = portal.host
    record = service.key_record(host, name, key_id)
    since, until = service.period(host, days)
    currency = record.currency or "USD"
    daily = service.daily_by_key(host, name, since=since, until=until).get((name, key_id, currency), {})
    all_days = service.days_between(since, until)
    findings = [f for f in host.findings(name, open_only=False) if f.kind in KEY_KINDS and f.subject == key_id]
    findings.sort(key=lambda f: (not f.is_open, -f.severity.rank, -f.opened_at.timestamp()))
    return KeyDetailOut(
        key=key_out(record, sum(1 for f in findings if f.is_open)),
        daily=DailyCosts(
            currency=currency,
            since=since,
            until=until,
            days=[d.isoformat() for d in all_days],
            costs=[decimal_text(daily.get(d, Decimal(0))) for d in all_days],
        ),
        findings=[finding_out(f) for f in findings],
        history=[event_out(e) for e in host.key_history(name, key_id)],
    )


@router.get(
    "/keys/{name}/{key_id}/history", tags=["inventory"], summary="A key's history on its connection", responses=NO_KEY
)
def key_history(portal: PortalDep, name: str, key_id: str) -> list[KeyEventOut]:
    """Listed, renamed, changed, gone and returned, oldest first: never deleted, even once the key is gone."""
    service.key_record(portal.host, name, key_id)
    return [event_out(e) for e in portal.host.key_history(name, key_id)]


@router.get(
    "/keys/{name}/{key_id}/rows", tags=["inventory"], summary="The rows that name a key, newest first", responses=NO_KEY
)
def key_rows(
    portal: PortalDep,
    name: str,
    key_id: str,
    days: Days = 30,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> RowsOut:
    """A page past the last answers the last page."""
    host = portal.host
    record = service.key_record(host, name, key_id)
    since, until = service.period(host, days)
    result = service.key_rows(host, record, since=since, until=until, page=page, per_page=per_page)
    following = None
    if result.page < result.pages:
        following = api_key_url(name, key_id, f"/rows?days={days}&page={result.page + 1}&per_page={per_page}")
    return RowsOut(
        rows=[row_out(r) for r in result.rows],
        page=result.page,
        per_page=per_page,
        total=result.total,
        pages=result.pages,
        next=following,
    )


# -- findings ------------------------------------------------------------------------------------------------------
@router.get("/findings", tags=["findings"], summary="Findings, open ones by default", responses=NO_CONNECTION)
def list_findings(
    portal: PortalDep,
    connection: Annotated[str | None, Query(description="Only this connection's findings.")] = None,
    kind: Annotated[FindingKind | None, Query(description="Only findings of this kind.")] = None,
    status: Annotated[
        Literal["open", "all"], Query(description="open (the default) or all, resolved ones included.")
    ] = "open",
    min_severity: Annotated[Severity | None, Query(description="Only findings at or above this severity.")] = None,
) -> list[FindingOut]:
    """Open first, then highest severity, then newest."""
    if connection:
        service.connection(portal.host, connection)
    items = portal.host.findings(connection or None, open_only=status == "open", kind=kind)
    if min_severity is not None:
        items = [f for f in items if f.severity.rank >= min_severity.rank]
    items.sort(key=lambda f: (not f.is_open, -f.severity.rank, -f.opened_at.timestamp()))
    return [finding_out(f) for f in items]


@router.get("/findings/{finding_id}", tags=["findings"], summary="One finding", responses=NO_FINDING)
def get_finding(portal: PortalDep, finding_id: int) -> FindingOut:
    return finding_out(service.finding(portal.host, finding_id))


@router.post(
    "/findings/{finding_id}/acknowledge",
    tags=["findings"],
    summary="Acknowledge a finding with a note",
    responses=NO_FINDING | {422: {"model": ErrorBody, "description": "The note is empty, blank or too long."}},
)
def acknowledge(portal: PortalDep, finding_id: int, body: Acknowledge) -> FindingOut:
    """Records the note and when. A finding whose condition still holds stays open, marked acknowledged, until
    the condition clears (a new key is news: acknowledging it resolves it). A second acknowledgement replaces the
    note."""
    return finding_out(service.acknowledge(portal.host, finding_id, body.note))
