"""The pages that answer "who spends on AI, with which keys, and what changed": the overview (the home page), the
key inventory, a key's page and the findings, with the acknowledge form."""

from __future__ import annotations

from decimal import Decimal
from functools import partial
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse

from connector_sdk.models import Finding, FindingKind, SpendLine
from connector_sdk.portal import service
from connector_sdk.portal.charts import Series, sparkline, stacked_bars, values_table
from connector_sdk.portal.context import PortalDep
from connector_sdk.portal.pages import (
    PER_PAGE,
    PERIODS,
    Form,
    _int,
    posted_form,
    redirect,
    render,
    templates,
    text,
)
from connector_sdk.portal.security import safe_next

router = APIRouter(include_in_schema=False, dependencies=[Depends(posted_form)])

SPARK_DAYS = 30
KEY_STATES = (
    ("active", "Active"),
    ("inactive", "Inactive"),
    ("gone", "Gone from listing"),
    ("unlisted", "Never listed"),
)
# Kinds whose subject is a key id of the finding's connection: their subject links to the key's page.
KEY_KINDS = frozenset(
    {
        FindingKind.UNLISTED_KEY_SPEND,
        FindingKind.NEW_KEY,
        FindingKind.IDLE_KEY,
        FindingKind.OWNER_GONE,
        FindingKind.ADMIN_KEY_TRAFFIC,
        FindingKind.SPEND_SPIKE,
    }
)


def key_url(connection: str, key_id: str, **query: Any) -> str:
    params = {k: v for k, v in query.items() if v not in (None, "")}
    base = f"/keys/{quote(connection, safe='')}/{quote(key_id, safe='')}"
    return base + (f"?{urlencode(params)}" if params else "")


def subject_url(finding: Finding) -> str | None:
    """The key page a finding is about, when its subject is a key."""
    return key_url(finding.connection, finding.subject) if finding.kind in KEY_KINDS else None


templates.filters["evidence"] = service.evidence_items
templates.filters["event_items"] = service.event_items
templates.globals["subject_url"] = subject_url
templates.globals["severity_labels"] = service.SEVERITY_LABELS
templates.globals["finding_titles"] = service.FINDING_TITLES
templates.globals["key_status"] = service.key_status
templates.globals["key_last_used"] = service.key_last_used
templates.globals["key_url"] = key_url
templates.globals["event_words"] = {
    "listed": "Listed",
    "renamed": "Renamed",
    "changed": "Changed",
    "gone": "Gone from the listing",
    "returned": "Back in the listing",
}


def _back(request: Request) -> str:
    """This page's address without its notice: where an acknowledge form returns to."""
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "notice"]
    return request.url.path + (f"?{urlencode(query)}" if query else "")


# -- overview ------------------------------------------------------------------------------------------------------
@router.get("/")
def overview(request: Request, portal: PortalDep) -> Response:
    """The home page: spend across every connection, the open findings and the change since the period before.
    Before the first connection there is nothing to sum, so it sends a person to the catalog."""
    host = portal.host
    if not host.store.list_connections():
        return redirect("/catalog")
    days = _int(request.query_params.get("days"), 30, 1, 400)
    view = host.overview(days)
    records = host.keys(None)
    targets = service.key_targets(records, view.connections)

    def line_url(line: SpendLine) -> str | None:
        target = targets.get((line.connector, line.key))
        return key_url(*target) if target else None

    return render(
        request,
        "overview.html",
        overview=view,
        days=days,
        periods=PERIODS,
        keys=records,
        spending_keys=sum(1 for line in view.by_key if line_url(line)),
        line_url=line_url,
        back=_back(request),
        findings=view.open_findings,
    )


# -- keys ----------------------------------------------------------------------------------------------------------
def _key_sort(value: str | None) -> str:
    return value if value and value.removeprefix("-") in service.KEY_SORTS else service.DEFAULT_KEY_SORT


@router.get("/keys")
def keys(request: Request, portal: PortalDep) -> HTMLResponse:
    host = portal.host
    query = request.query_params
    every = host.keys()
    vendors = sorted({r.connector for r in every})
    connections = sorted({r.connection for r in every})
    vendor = query.get("vendor") or None
    conn = query.get("connection") or None
    status = query.get("status") or None
    search = (query.get("q") or "").strip()
    sort = _key_sort(query.get("sort"))
    shown = [
        r
        for r in service.search_keys(every, search)
        if (vendor is None or r.connector == vendor)
        and (conn is None or r.connection == conn)
        and (status is None or service.key_status(r)[0] == status)
    ]
    shown = service.sort_keys(shown, sort)
    since, until = service.period(host, SPARK_DAYS)
    spark_days = service.days_between(since, until)
    daily = service.daily_by_key(host, None, since=since, until=until)
    open_counts: dict[tuple[str, str], int] = {}
    for f in host.findings():
        if f.kind in KEY_KINDS:
            open_counts[(f.connection, f.subject)] = open_counts.get((f.connection, f.subject), 0) + 1
    rows = []
    for record in shown:
        currency = record.currency or "USD"
        values = daily.get((record.connection, record.key_id, currency), {})
        rows.append(
            {
                "key": record,
                "status": service.key_status(record),
                "last_used": service.key_last_used(record),
                "spark": sparkline(
                    spark_days,
                    [values.get(d, Decimal(0)) for d in spark_days],
                    money=partial(service.money, currency=currency),
                ),
                "findings": open_counts.get((record.connection, record.key_id), 0),
                "url": key_url(record.connection, record.key_id),
            }
        )
    state = {"q": search or None, "vendor": vendor, "connection": conn, "status": status}
    state["sort"] = None if sort == service.DEFAULT_KEY_SORT else sort

    def url(**changes: Any) -> str:
        params = {k: v for k, v in (state | changes).items() if v not in (None, "")}
        return "/keys" + (f"?{urlencode(params)}" if params else "")

    def sort_url(column: str) -> str:
        current = sort.removeprefix("-")
        # Money and recency read best highest or newest first; names from A.
        first = f"-{column}" if column in ("spend_7d", "spend_30d", "last_used") else column
        if current == column:
            first = column if sort.startswith("-") else f"-{column}"
        return url(sort=None if first == service.DEFAULT_KEY_SORT else first)

    return render(
        request,
        "keys.html",
        rows=rows,
        total=len(every),
        vendors=vendors,
        connections=connections,
        statuses=KEY_STATES,
        filters=state,
        search=search,
        sort=sort,
        sorts=service.KEY_SORTS,
        sort_url=sort_url,
        url=url,
        spark_days=SPARK_DAYS,
        manifests={m.id: m for m in service.manifests(host)},
    )


@router.get("/keys/{name}/{key_id}")
def key_page(request: Request, portal: PortalDep, name: str, key_id: str) -> HTMLResponse:
    host = portal.host
    record = service.key_record(host, name, key_id)
    query = request.query_params
    days = _int(query.get("days"), 30, 1, 400)
    page = _int(query.get("page"), 1, 1, 1_000_000)
    since, until = service.period(host, days)
    currency = record.currency or "USD"
    daily = service.daily_by_key(host, name, since=since, until=until).get((name, key_id, currency), {})
    chart_days = service.days_between(since, until)
    money = partial(service.money, currency=currency)
    series = [Series(service.key_label(record), "#4f46e5", daily)]
    findings = [f for f in host.findings(name, open_only=False) if f.kind in KEY_KINDS and f.subject == key_id]
    findings.sort(key=lambda f: (not f.is_open, -f.severity.rank, -f.opened_at.timestamp()))
    listing = service.key_rows(host, record, since=since, until=until, page=page, per_page=PER_PAGE)

    def url(**changes: Any) -> str:
        return key_url(name, key_id, **({"days": days if days != 30 else None} | changes))

    return render(
        request,
        "key.html",
        key=record,
        key_state=service.key_status(record),
        last_used=service.key_last_used(record),
        manifest=service.manifest(host, record.connector) if record.connector in host.plugins.connectors else None,
        history=host.key_history(name, key_id),
        findings=findings,
        listing=listing,
        days=days,
        periods=PERIODS,
        since=since,
        until=until,
        currency=currency,
        period_total=sum(daily.values(), Decimal(0)),
        chart=stacked_bars(chart_days, series, money=money, symbol=service.CURRENCY_SYMBOLS.get(currency, "")),
        chart_table=values_table(chart_days, series, money=money),
        url=url,
        back=_back(request),
    )


# -- findings ------------------------------------------------------------------------------------------------------
@router.get("/findings")
def findings(request: Request, portal: PortalDep) -> HTMLResponse:
    host = portal.host
    query = request.query_params
    show_all = query.get("status") == "all"
    kind_value = query.get("kind") or None
    kind = FindingKind(kind_value) if kind_value in {k.value for k in FindingKind} else None
    conn = query.get("connection") or None
    if conn is not None:
        service.connection(host, conn)
    items = host.findings(conn, open_only=not show_all, kind=kind)
    items = sorted(items, key=lambda f: (not f.is_open, -f.severity.rank, -f.opened_at.timestamp()))
    return render(
        request,
        "findings.html",
        findings=items,
        show_all=show_all,
        kind=kind,
        kinds=list(FindingKind),
        connection=conn,
        connections=[c.name for c in host.store.list_connections()],
        back=_back(request),
    )


@router.post("/findings/{finding_id}/acknowledge")
def acknowledge(request: Request, portal: PortalDep, finding_id: int, form: Form) -> Response:
    back = safe_next(text(form, "next"))
    raw = form.get("note")
    service.acknowledge(portal.host, finding_id, raw if isinstance(raw, str) else "")
    return redirect(back + ("&" if "?" in back else "?") + "notice=acknowledged" + f"#finding-{finding_id}")
