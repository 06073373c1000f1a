"""The JSON REST API (``/api/v1``): what the portal's pages do, for scripts. Secrets go in, never come out."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from decimal import Decimal
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Body, Query, Response
from fastapi.responses import StreamingResponse

from connector_sdk import __version__
from connector_sdk.models import ROW_FIELDS, Connection, Manifest, UsageRow, decimal_text, iso
from connector_sdk.portal import service
from connector_sdk.portal.context import Portal, PortalDep
from connector_sdk.portal.jobs import SyncJob
from connector_sdk.portal.schemas import (
    ConnectionCreated,
    ConnectionOut,
    CreateConnection,
    DailyOut,
    DailySeries,
    Disconnect,
    Disconnected,
    ErrorBody,
    Health,
    Links,
    ReportLineOut,
    ReportOut,
    RowOut,
    RowsOut,
    RunOut,
    SyncJobOut,
)

PREFIX = "/api/v1"
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        400: "The request named a host other than localhost on a portal that answers only to localhost.",
        401: "The admin token is missing or wrong.",
        403: "The request came from another site (its Origin or Sec-Fetch-Site), so it was refused.",
        404: "No such connection or connector.",
        405: "This path does not accept that method.",
        409: "The connection is busy or in a state that does not allow this, or the name is taken.",
        413: "The request body is larger than 1 MiB; it was not read.",
        422: "The input is invalid; `fields` says which field and why.",
        500: "Something went wrong inside the portal; the server log has the details.",
        502: "The vendor answered with something the connector could not use.",
        503: "The vendor could not be reached or was unavailable; nothing was stored.",
    }.items()
} | {307: {"description": "The path ended with '/' (or was empty where a name goes): Location is the path without it."}}
Days = Annotated[int, Query(ge=1, le=3660, description="The period: this many days, ending with the current hour.")]

router = APIRouter(prefix=PREFIX, responses=ERRORS)


def connection_url(name: str, tail: str = "") -> str:
    return f"{PREFIX}/connections/{quote(name, safe='')}{tail}"


def connection_out(portal: Portal, conn: Connection) -> ConnectionOut:
    status = service.status(portal.host, portal.jobs, conn)
    return ConnectionOut(
        name=conn.name,
        connector=conn.connector,
        account=conn.account,
        state=status.state,
        state_label=service.STATE_LABELS[status.state],
        reason=conn.reason,
        created_at=conn.created_at,
        last_sync=status.last_sync,
        last_success=status.last_success,
        watermark=status.watermark,
        next_sync=status.next_sync,
        rows=status.rows,
        facts=status.facts,
        config=conn.config,
        links=Links(
            self=connection_url(conn.name),
            dashboard=f"/connections/{quote(conn.name, safe='')}",
            rows=connection_url(conn.name, "/rows"),
            report=connection_url(conn.name, "/report"),
            sync=connection_url(conn.name, "/sync"),
        ),
    )


def job_out(job: SyncJob) -> SyncJobOut:
    return SyncJobOut(
        id=job.id,
        connection=job.connection,
        state=job.state.value,
        outcome=job.run.outcome if job.run is not None and job.state != "running" else None,
        run_id=job.run.run_id if job.run is not None else None,
        progress=job.fraction,
        rows_written=job.rows,
        message=job.message,
        created_at=job.created_at,
        finished_at=job.finished_at,
        status_url=f"{PREFIX}/syncs/{job.id}",
    )


def row_out(row: UsageRow) -> RowOut:
    return RowOut(**row.export())


@router.get("/health", tags=["portal"], summary="Whether the portal is up")
def health() -> Health:
    """Answers without authentication, and says nothing but that the portal runs."""
    return Health(status="ok", version=__version__)


# -- connectors ----------------------------------------------------------------------------------------------------
@router.get("/connectors", tags=["connectors"], summary="The connector catalog")
def list_connectors(portal: PortalDep) -> list[Manifest]:
    """Every installed connector's manifest: description, data collected, limitations, setup steps, config schema."""
    return service.manifests(portal.host)


@router.get("/connectors/{connector_id}", tags=["connectors"], summary="One connector's manifest")
def get_connector(portal: PortalDep, connector_id: str) -> Manifest:
    return service.manifest(portal.host, connector_id)


# -- connections ---------------------------------------------------------------------------------------------------
@router.get("/connections", tags=["connections"], summary="Every connection with its status")
def list_connections(portal: PortalDep) -> list[ConnectionOut]:
    return [connection_out(portal, c) for c in portal.host.store.list_connections()]


@router.post(
    "/connections",
    tags=["connections"],
    summary="Create a connection",
    status_code=201,
    responses={
        service.UNREACHABLE_STATUS: {
            "model": ErrorBody,
            "description": "The vendor's host could not be reached to check the key (`could not reach HOST ...; "
            "nothing was stored`); answered after a connect timeout of at most 3 s, without retries.",
        }
    },
)
def create_connection(portal: PortalDep, body: CreateConnection, response: Response) -> ConnectionCreated:
    """Validate ``config`` against the connector's schema and check the key with the vendor before anything is
    stored; then store it (the key encrypted) and start the first sync in the background."""
    job = service.create_connection(portal.host, portal.jobs, body.connector, body.name, body.config)
    response.headers["Location"] = connection_url(body.name)
    conn = service.connection(portal.host, body.name)
    return ConnectionCreated(connection=connection_out(portal, conn), sync=job_out(job) if job else None)


@router.get("/connections/{name}", tags=["connections"], summary="One connection with its status")
def get_connection(portal: PortalDep, name: str) -> ConnectionOut:
    return connection_out(portal, service.connection(portal.host, name))


@router.post(
    "/connections/{name}/sync",
    tags=["syncs"],
    summary="Start a sync now",
    status_code=202,
    responses={202: {"description": "Started; follow `status_url` (also in the Location header)."}},
)
def start_sync(portal: PortalDep, name: str, response: Response) -> SyncJobOut:
    """Starts the sync in the background and answers at once; the connection shows ``syncing`` meanwhile."""
    job = service.start_sync(portal.host, portal.jobs, name)
    out = job_out(job)
    response.headers["Location"] = out.status_url
    return out


@router.get("/syncs/{job_id}", tags=["syncs"], summary="A sync started through the portal")
def get_sync(portal: PortalDep, job_id: str) -> SyncJobOut:
    job = portal.jobs.get(job_id)
    if job is None:
        raise service.NotFound(f"There is no sync {job_id!r}; syncs are remembered until the portal restarts.")
    return job_out(job)


@router.get("/connections/{name}/runs", tags=["syncs"], summary="A connection's recent sync runs")
def list_runs(portal: PortalDep, name: str, limit: Annotated[int, Query(ge=1, le=200)] = 20) -> list[RunOut]:
    service.connection(portal.host, name)
    return [RunOut(**run.model_dump(exclude={"connection"})) for run in portal.host.store.list_runs(name, limit=limit)]


@router.post(
    "/connections/{name}/reconnect",
    tags=["connections"],
    summary="Give a connection a new key",
    responses={
        service.UNREACHABLE_STATUS: {
            "model": ErrorBody,
            "description": "The vendor's host could not be reached to check the new key (`could not reach HOST ...; "
            "nothing was changed`); answered after a connect timeout of at most 3 s, without retries.",
        }
    },
)
def reconnect(
    portal: PortalDep,
    name: str,
    secrets: Annotated[
        dict[str, str],
        Body(
            description="The connector's secret fields (write-only), e.g. {\"api_key\": ...}; the key's shape is "
            "`key_example` in the connector's manifest.",
            examples=[{"api_key": "THE_KEY"}],
        ),
    ],
) -> ConnectionCreated:
    """Check the new key with the vendor, resume the connection, and start the sync that fills the gap."""
    job = service.reconnect(portal.host, portal.jobs, name, secrets)
    conn = service.connection(portal.host, name)
    return ConnectionCreated(connection=connection_out(portal, conn), sync=job_out(job) if job else None)


@router.post("/connections/{name}/disconnect", tags=["connections"], summary="Stop syncing and delete the key")
def disconnect(portal: PortalDep, name: str, body: Annotated[Disconnect | None, Body()] = None) -> Disconnected:
    """The credential is deleted; rows stay unless ``purge`` is true, which deletes the connection entirely."""
    purge = body.purge if body is not None else False
    rows = service.disconnect(portal.host, portal.jobs, name, purge=purge)
    return Disconnected(name=name, purged=purge, rows_deleted=rows if purge else 0, rows_kept=0 if purge else rows)


# -- spend ---------------------------------------------------------------------------------------------------------
def _filter(since: str | None, until: str | None, key_label: str | None, model: str | None) -> service.RowFilter:
    return service.RowFilter(
        since=service.parse_moment(since, "since"),
        until=service.parse_moment(until, "until"),
        key_label=key_label or None,
        model=model or None,
    )


Since = Annotated[str | None, Query(description="First hour to include: ISO 8601 date or timestamp (UTC).")]
Until = Annotated[str | None, Query(description="First hour to exclude: ISO 8601 date or timestamp (UTC).")]
KeyLabel = Annotated[str | None, Query(description="Only this API key label, e.g. 'User key'.")]
Model = Annotated[str | None, Query(description="Only this model, as the vendor names it.")]
RowSort = Literal["hour", "-hour", "key", "-key", "model", "-model", "cost", "-cost"]


@router.get("/connections/{name}/rows", tags=["spend"], summary="Usage rows, paged and filtered")
def list_rows(
    portal: PortalDep,
    name: str,
    since: Since = None,
    until: Until = None,
    key_label: KeyLabel = None,
    model: Model = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=1000)] = 100,
    limit: Annotated[int | None, Query(ge=1, le=1000, description="Another name for per_page.")] = None,
    sort: Annotated[
        RowSort, Query(description="hour, key, model or cost; '-' first for descending (newest or highest first).")
    ] = "hour",
) -> RowsOut:
    """Rows ordered by hour unless ``sort`` says otherwise; money and quantities as exact decimal strings."""
    per_page = limit if limit is not None else per_page
    row_filter = _filter(since, until, key_label, model)
    result = service.rows_page(portal.host, name, row_filter, page=page, per_page=per_page, order=sort)
    next_url = None
    if page < result.pages:
        query = {"since": since, "until": until, "key_label": key_label, "model": model}
        query = {k: v for k, v in query.items() if v} | {"page": page + 1, "per_page": per_page}
        query |= {"sort": sort} if sort != "hour" else {}
        next_url = connection_url(name, "/rows?" + urlencode(query))
    return RowsOut(
        rows=[row_out(r) for r in result.rows],
        page=page,
        per_page=per_page,
        total=result.total,
        pages=result.pages,
        next=next_url,
    )


CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
TEXT_FIELDS = frozenset({"connection", "account", "api_key_label", "login_username", "model", "unit"})


def csv_lines(rows: Iterator[UsageRow]) -> Iterator[str]:
    """CSV text, header first. Text a spreadsheet would run as a formula (a key named ``=HYPERLINK(...)``) is
    prefixed with ``'``; numbers are left exact."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=ROW_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        values = {k: "" if v is None else v for k, v in row.export().items()}
        for k in TEXT_FIELDS:
            if isinstance(values[k], str) and values[k].startswith(CSV_FORMULA_START):
                values[k] = "'" + values[k]
        writer.writerow(values)
        if buffer.tell() > 64_000:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def csv_response(portal: Portal, name: str, row_filter: service.RowFilter) -> StreamingResponse:
    service.connection(portal.host, name)
    stream = portal.host.store.iter_rows(
        name,
        since=row_filter.since,
        until=row_filter.until,
        api_key_label=row_filter.key_label,
        model=row_filter.model,
    )
    span = "-".join(iso(m)[:10] for m in (row_filter.since, row_filter.until) if m is not None)
    filename = f"{name}-rows{'-' + span if span else ''}.csv"
    return StreamingResponse(
        csv_lines(stream),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get(
    "/connections/{name}/rows.csv",
    tags=["spend"],
    summary="Usage rows as CSV",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "Every matching row, header first."}},
)
def rows_csv(
    portal: PortalDep,
    name: str,
    since: Since = None,
    until: Until = None,
    key_label: KeyLabel = None,
    model: Model = None,
) -> StreamingResponse:
    return csv_response(portal, name, _filter(since, until, key_label, model))


def report_out(portal: Portal, name: str | None, days: int) -> ReportOut:
    since, until, lines = portal.host.report(name, days=days)
    return ReportOut(
        connection=name,
        since=since,
        until=until,
        days=days,
        lines=[
            ReportLineOut(
                api_key_label=line.api_key_label,
                models=line.models,
                active_models=len(line.models),
                cost=decimal_text(line.cost),
                currency=line.currency,
                row_count=line.row_count,
            )
            for line in lines
        ],
        totals={c: decimal_text(v) for c, v in service.totals(lines).items()},
    )


@router.get("/connections/{name}/report", tags=["spend"], summary="Spend per API key label")
def connection_report(portal: PortalDep, name: str, days: Days = 30) -> ReportOut:
    """Per API key label ("User key" included): the active models and the total cost, highest first."""
    service.connection(portal.host, name)
    return report_out(portal, name, days)


@router.get("/report", tags=["spend"], summary="Spend per API key label, over every connection")
def report(portal: PortalDep, days: Days = 30) -> ReportOut:
    return report_out(portal, None, days)


@router.get("/connections/{name}/daily", tags=["spend"], summary="Daily spend per API key label")
def daily(portal: PortalDep, name: str, days: Days = 30) -> DailyOut:
    """What the dashboard's chart draws: cost per UTC day and API key label, in the main currency."""
    service.connection(portal.host, name)
    since, until, lines = portal.host.report(name, days=days)
    currency = service.main_currency(lines)
    daily = service.daily_by_label(portal.host, name, since=since, until=until, currency=currency)
    all_days = service.days_between(since, until)
    labels = [line.api_key_label for line in lines if line.currency == currency]
    return DailyOut(
        connection=name,
        currency=currency,
        since=since,
        until=until,
        days=[d.isoformat() for d in all_days],
        series=[
            DailySeries(
                api_key_label=label,
                costs=[decimal_text(daily.get(label, {}).get(d, Decimal(0))) for d in all_days],
            )
            for label in labels
        ],
    )
