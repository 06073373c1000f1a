"""The portal's pages, rendered on the server: catalog, add connection, connections, dashboard, sign-in."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape
from starlette.datastructures import FormData

from connector_sdk import __version__
from connector_sdk.errors import ConnectorHostError, SyncInProgress
from connector_sdk.models import ConnectionState, Manifest, decimal_text
from connector_sdk.portal import service
from connector_sdk.portal.charts import Series, colors_for, stacked_bars, values_table
from connector_sdk.portal.context import Portal, PortalDep
from connector_sdk.portal.forms import FormField, form_values, manifest_fields
from connector_sdk.portal.security import (
    CSRF_FIELD,
    SESSION_COOKIE,
    UNSAFE_METHODS,
    Session,
    client_address,
    safe_next,
    token_matches,
)

PER_PAGE = 25
PERIODS = (7, 30, 90)
NOTICES = {
    "connected": "Connected. The first sync runs now; this page refreshes until it has finished.",
    "sync_started": "Sync started. This page refreshes until it has finished.",
    "already_syncing": "A sync of this connection is already running; this page refreshes until it has finished.",
    "reconnected": "Reconnected. A sync is filling the gap since the old key stopped working.",
    "disconnected": "Disconnected: the key was deleted and the rows were kept.",
    "purged": "Disconnected and deleted, together with its rows.",
    "signed_out": "You are signed out.",
    "acknowledged": "Acknowledged. The note is kept with the finding.",
}
# Notices about a sync that runs now: once it has finished (the page no longer refreshes) they would be untrue, so
# they shrink to what is still true, or go.
AFTER_SYNC = {
    "connected": "Connected.",
    "reconnected": "Reconnected with the new key.",
    "sync_started": None,
    "already_syncing": None,
}

templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def when(moment: datetime | None) -> str:
    """``23 Nov 2026, 10:04 UTC``."""
    return moment.strftime("%d %b %Y, %H:%M UTC") if moment else "—"


def sentence(message: str | None) -> str:
    """A reason as a sentence of its own: capital first letter, one full stop."""
    text = (message or "").strip()
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def doc(text: str | None) -> Markup:
    """A docstring as text for a page: ````config```` and ```config``` become code, nothing else is markup."""
    escaped = str(escape(text or ""))
    return Markup(re.sub(r"``?([^`]+?)``?", r"<code>\1</code>", escaped))


def relative(moment: datetime | None, now: datetime) -> str:
    """``5 min ago``, ``in 52 min``, ``3 h ago``, ``2 days ago``."""
    if moment is None:
        return ""
    seconds = (moment - now).total_seconds()
    span = abs(seconds)
    if span < 60:
        return "just now"
    text = (
        f"{int(span // 60)} min"
        if span < 3600
        else f"{int(span // 3600)} h"
        if span < 86400 * 2
        else f"{int(span // 86400)} days"
    )
    return f"in {text}" if seconds > 0 else f"{text} ago"


templates.filters["money"] = service.money
templates.filters["when"] = when
templates.filters["exact"] = lambda value: "—" if value is None else decimal_text(value)  # no price: a dash
templates.filters["sentence"] = sentence
templates.filters["doc"] = doc
templates.globals["when"] = when


def set_session_cookie(request: Request, response: Response, session: Session) -> None:
    portal: Portal = request.app.state.portal
    response.set_cookie(
        SESSION_COOKIE,
        portal.signer.dumps(session),
        max_age=portal.signer.max_age,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )


def render(request: Request, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    """A page, with what every page needs: the CSRF token of this session and who is signed in."""
    portal: Portal = request.app.state.portal
    session: Session | None = getattr(request.state, "session", None)
    now = portal.host.now()
    notice_key = request.query_params.get("notice", "")
    notice = NOTICES.get(notice_key)
    if notice_key in AFTER_SYNC and not context.get("refresh"):
        notice = AFTER_SYNC[notice_key]
    html = templates.get_template(template).render(
        request=request,
        path=request.url.path,
        csrf_field=CSRF_FIELD,
        csrf_token=portal.signer.csrf_token(session) if session is not None else "",
        auth_required=portal.auth_required,
        signed_in=session is not None and session.authenticated,
        version=__version__,
        now=now,
        ago=lambda moment: relative(moment, now),
        notice=notice,
        **context,
    )
    return HTMLResponse(html, status_code=status)


class CsrfRejected(service.PortalError):
    def __init__(self) -> None:
        super().__init__("This form has expired. Go back, reload the page and submit it again.", status=403)


async def posted_form(request: Request) -> FormData:
    """The submitted form of a POST, after its CSRF token is checked; every page POST depends on this."""
    if request.method not in UNSAFE_METHODS:
        return FormData()
    form = await request.form(max_files=0, max_fields=100)
    portal: Portal = request.app.state.portal
    if not portal.signer.csrf_ok(getattr(request.state, "session", None), form.get(CSRF_FIELD)):
        raise CsrfRejected()
    return form


Form = Annotated[FormData, Depends(posted_form)]
router = APIRouter(include_in_schema=False, dependencies=[Depends(posted_form)])


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def dashboard_url(name: str, **query: Any) -> str:
    params = {k: v for k, v in query.items() if v not in (None, "")}
    return f"/connections/{quote(name, safe='')}" + (f"?{urlencode(params)}" if params else "")


def text(form: Mapping[str, Any], key: str) -> str:
    value = form.get(key)
    return value.strip() if isinstance(value, str) else ""


@router.get("/favicon.ico")
def favicon() -> RedirectResponse:
    return RedirectResponse("/static/favicon.svg", status_code=301)


# -- catalog and adding a connection -------------------------------------------------------------------------------
@router.get("/catalog")
def catalog(request: Request, portal: PortalDep) -> HTMLResponse:
    counts: dict[str, int] = {}
    for conn in portal.host.store.list_connections():
        counts[conn.connector] = counts.get(conn.connector, 0) + 1
    return render(request, "catalog.html", manifests=service.manifests(portal.host), counts=counts)


def _connect_page(
    request: Request,
    manifest: Manifest,
    *,
    name: str = "",
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    message: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    fields = manifest_fields(manifest)
    public = {f.name: v for f, v in ((f, (values or {}).get(f.name)) for f in fields) if not f.secret and v is not None}
    errors = errors or {}
    return render(
        request,
        "connect.html",
        status=status,
        manifest=manifest,
        fields=fields,
        name=name,
        values=public,
        errors=errors,
        message=message,
        # A form that comes back with an error keeps Advanced settings open when the error is about one of them,
        # or when the person had changed one (a Base URL that does not answer is the error's cause).
        open_advanced=any(
            f.advanced and (f.name in errors or (message and str(public.get(f.name, f.default)) != str(f.default)))
            for f in fields
        ),
    )


def _refusal(manifest: Manifest, error: service.PortalError, consequence: str) -> str:
    """The heading above a refused form, saying what the vendor said: a key it refused is not a key that lacks a
    scope, and a field to correct is neither."""
    vendor = manifest.display_name
    if error.kind == "insufficient_scope":
        needed = manifest.authentication.help or f"a key with the {manifest.authentication.required_scope} scope"
        return f"{vendor} accepted the key, but this connector needs {needed}{consequence}."
    if error.kind is not None:
        return f"{vendor} did not accept the key{consequence}."
    return "Please correct the highlighted fields." if error.fields else str(error)


@router.get("/connect/{connector_id}")
def connect_form(request: Request, portal: PortalDep, connector_id: str) -> HTMLResponse:
    return _connect_page(request, service.manifest(portal.host, connector_id))


@router.post("/connect/{connector_id}")
def connect(request: Request, portal: PortalDep, connector_id: str, form: Form) -> Response:
    manifest = service.manifest(portal.host, connector_id)
    fields = manifest_fields(manifest)
    name = text(form, "name")
    values = form_values(fields, form)
    try:
        service.create_connection(portal.host, portal.jobs, connector_id, name, values)
    except service.PortalError as error:
        message = _refusal(manifest, error, ", so nothing was stored")
        return _connect_page(
            request, manifest, name=name, values=values, errors=error.fields, message=message, status=error.status
        )
    except ConnectorHostError as error:
        message = f"Nothing was stored: {error}"
        return _connect_page(request, manifest, name=name, values=values, message=message, status=502)
    return redirect(dashboard_url(name, notice="connected"))


# -- connections ---------------------------------------------------------------------------------------------------
def _view(portal: Portal, conn: Any) -> dict[str, Any]:
    status = service.status(portal.host, portal.jobs, conn)
    return {
        "conn": conn,
        "status": status,
        "label": service.STATE_LABELS[status.state],
        "manifest": service.manifest(portal.host, conn.connector)
        if conn.connector in portal.host.plugins.connectors
        else None,
    }


@router.get("/connections")
def connections(request: Request, portal: PortalDep) -> HTMLResponse:
    views = [_view(portal, c) for c in portal.host.store.list_connections()]
    syncing = any(v["status"].state == ConnectionState.SYNCING for v in views)
    return render(request, "connections.html", views=views, refresh=syncing)


@router.post("/connections/{name}/sync")
def sync_now(request: Request, portal: PortalDep, name: str, form: Form) -> Response:
    try:
        # A click while this portal's sync of it still runs (its findings and hooks, after the badge says Connected)
        # joins that sync: say so rather than that one started.
        running = portal.jobs.active(name)
        started = service.start_sync(portal.host, portal.jobs, name)
        notice = "already_syncing" if running is not None and running.id == started.id else "sync_started"
    except SyncInProgress:
        notice = "already_syncing"
    back = safe_next(text(form, "next"))
    if back == "/":
        back = dashboard_url(name)
    return redirect(back + ("&" if "?" in back else "?") + f"notice={notice}")


@router.get("/connections/{name}/reconnect")
def reconnect_form(request: Request, portal: PortalDep, name: str) -> HTMLResponse:
    conn = service.connection(portal.host, name)
    return _reconnect_page(request, portal, conn)


def _reconnect_page(
    request: Request,
    portal: Portal,
    conn: Any,
    *,
    errors: dict[str, str] | None = None,
    message: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    manifest = service.manifest(portal.host, conn.connector)
    secret_fields: list[FormField] = [f for f in manifest_fields(manifest) if f.secret]
    return render(
        request,
        "reconnect.html",
        status=status,
        conn=conn,
        view=_view(portal, conn),
        manifest=manifest,
        fields=secret_fields,
        errors=errors or {},
        message=message,
    )


@router.post("/connections/{name}/reconnect")
def reconnect(request: Request, portal: PortalDep, name: str, form: Form) -> Response:
    conn = service.connection(portal.host, name)
    manifest = service.manifest(portal.host, conn.connector)
    secrets = form_values([f for f in manifest_fields(manifest) if f.secret], form)
    try:
        service.reconnect(portal.host, portal.jobs, name, secrets)
    except service.PortalError as error:
        message = _refusal(manifest, error, "; the connection still waits for a new one")
        return _reconnect_page(request, portal, conn, errors=error.fields, message=message, status=error.status)
    except ConnectorHostError as error:
        return _reconnect_page(request, portal, conn, message=f"Nothing was changed: {error}", status=502)
    return redirect(dashboard_url(name, notice="reconnected"))


@router.get("/connections/{name}/disconnect")
def disconnect_form(request: Request, portal: PortalDep, name: str) -> HTMLResponse:
    conn = service.connection(portal.host, name)
    return render(request, "disconnect.html", conn=conn, view=_view(portal, conn))


@router.post("/connections/{name}/disconnect")
def disconnect(request: Request, portal: PortalDep, name: str, form: Form) -> Response:
    purge = form.get("purge") is not None
    service.disconnect(portal.host, portal.jobs, name, purge=purge)
    return redirect(f"/connections?notice={'purged' if purge else 'disconnected'}")


# -- dashboard -----------------------------------------------------------------------------------------------------
def _int(value: str | None, default: int, low: int, high: int) -> int:
    try:
        return min(max(int(value or default), low), high)
    except ValueError:
        return default


def _day(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


SORTS = {"hour": "Hour (UTC)", "key": "API key", "model": "Model", "cost": "Cost"}
DEFAULT_SORT = "-hour"
# Colours come from the labels of this many days at least, so a key keeps its colour across the 7/30/90-day views.
COLOR_DAYS = max(PERIODS)


def _sort(value: str | None) -> str:
    return value if value and value.removeprefix("-") in SORTS else DEFAULT_SORT


def _search(term: str, keys: list[str], models: list[str]) -> tuple[str | None, str | None, list[tuple[str, str]]]:
    """What a search for ``term`` selects: a key or a model it names (exactly, else the only one containing it),
    or the candidates to pick from."""
    wanted = term.strip().casefold()
    candidates = [("key", k) for k in keys] + [("model", m) for m in models]
    exact = [c for c in candidates if c[1].casefold() == wanted]
    matches = exact or [c for c in candidates if wanted in c[1].casefold()]
    if len(matches) == 1:
        kind, value = matches[0]
        return (value, None, []) if kind == "key" else (None, value, [])
    return None, None, matches


@router.get("/connections/{name}")
def dashboard(request: Request, portal: PortalDep, name: str) -> HTMLResponse:
    host = portal.host
    conn = service.connection(host, name)
    query = request.query_params
    days = _int(query.get("days"), 30, 1, 400)
    key, model, day = query.get("key") or None, query.get("model") or None, _day(query.get("day"))
    page = _int(query.get("page"), 1, 1, 1_000_000)
    sort = _sort(query.get("sort"))
    search = (query.get("q") or "").strip()
    since, until, lines = host.report(name, days=days)
    currency = service.main_currency(lines)
    key_options = sorted({line.api_key_label for line in lines})
    model_options = sorted({m for line in lines for m in line.models})
    matches: list[tuple[str, str]] = []
    if search:
        found_key, found_model, matches = _search(search, key_options, model_options)
        key, model = found_key or key, found_model or model
    day_since, day_until = service.day_bounds(day) if day else (None, None)
    row_filter = service.RowFilter(since=day_since, until=day_until, key_label=key, model=model)
    listing = service.rows_page(
        host, name, row_filter, page=page, per_page=PER_PAGE, within=(since, until), order=sort, clamp=True
    )
    daily = service.daily_by_label(host, name, since=since, until=until, currency=currency)
    known = lines if days >= COLOR_DAYS else host.report(name, days=COLOR_DAYS)[2]
    colors = colors_for([line.api_key_label for line in [*known, *lines]])
    # Stacked in palette order, so segments that touch have neighbouring (3:1 apart) colours.
    labels = sorted((line.api_key_label for line in lines if line.currency == currency), key=list(colors).index)
    state = {"days": days, "key": key, "model": model, "day": day.isoformat() if day else None}
    state["sort"] = None if sort == DEFAULT_SORT else sort

    def url(**changes: Any) -> str:
        return dashboard_url(name, **({**state, "page": None} | changes))

    def sort_url(column: str) -> str:
        current = sort.removeprefix("-")
        # A column's first click sorts it the way people usually want: newest hours and highest costs first.
        first = f"-{column}" if column in ("hour", "cost") else column
        if current == column:
            first = column if sort.startswith("-") else f"-{column}"
        return url(sort=None if first == DEFAULT_SORT else first) + "#rows"

    def day_link(d: date) -> str:
        return url(day=d.isoformat()) + "#rows"

    total = service.totals(lines)
    series = [Series(label, colors[label], daily.get(label, {})) for label in labels]
    chart_days = service.days_between(since, until)
    money = partial(service.money, currency=currency)
    chart = stacked_bars(
        chart_days, series, money=money, symbol=service.CURRENCY_SYMBOLS.get(currency, ""), link=day_link
    )
    main_total = total.get(currency, Decimal(0))
    keys = [
        {
            "line": line,
            "color": colors.get(line.api_key_label, "#94a3b8"),
            "share": float(line.cost / main_total * 100) if main_total > 0 and line.currency == currency else 0.0,
        }
        for line in lines
    ]
    csv_query = {"days": days, "key": key, "model": model, "day": state["day"]}
    view = _view(portal, conn)
    return render(
        request,
        "dashboard.html",
        conn=conn,
        view=view,
        days=days,
        periods=PERIODS,
        since=since,
        until=until,
        currency=currency,
        totals=total,
        main_total=main_total,
        keys=keys,
        models=model_options,
        row_count=sum(line.row_count for line in lines),
        chart=chart,
        chart_table=values_table(chart_days, series, money=money, link=day_link),
        legend=[(label, colors[label]) for label in labels],
        listing=listing,
        key_options=key_options,
        model_options=model_options,
        filters=state,
        sort=sort,
        sorts=SORTS,
        sort_url=sort_url,
        search=search,
        matches=matches,
        url=url,
        csv_url=f"/connections/{quote(name, safe='')}/rows.csv?" + urlencode({k: v for k, v in csv_query.items() if v}),
        refresh=view["status"].state == ConnectionState.SYNCING,
    )


@router.get("/connections/{name}/rows.csv")
def rows_csv(request: Request, portal: PortalDep, name: str) -> Response:
    from connector_sdk.portal.api import csv_response

    service.connection(portal.host, name)
    query = request.query_params
    since, until, _ = portal.host.report(name, days=_int(query.get("days"), 30, 1, 400))
    day = _day(query.get("day"))
    if day is not None:
        since, until = service.day_bounds(day)
    row_filter = service.RowFilter(
        since=since, until=until, key_label=query.get("key") or None, model=query.get("model") or None
    )
    return csv_response(portal, name, row_filter)


# -- signing in ----------------------------------------------------------------------------------------------------
@router.get("/login")
def login_form(request: Request, portal: PortalDep) -> Response:
    if not portal.auth_required:
        return redirect("/")
    return render(request, "login.html", next=safe_next(request.query_params.get("next")), error=None)


@router.post("/login")
async def login(request: Request, portal: PortalDep, form: Form) -> Response:
    target = safe_next(text(form, "next"))
    if not portal.auth_required:
        return redirect(target)
    client = client_address(request, portal.trusted_proxies)
    raw = form.get("token")
    token = raw if isinstance(raw, str) else None
    # The right token is checked first and always signs in: throttling only ever slows down wrong ones.
    if token_matches(token, portal.admin_token or ""):
        portal.throttle.succeeded(client)
        response = redirect(target)
        # A new session id on sign-in, so an id planted before sign-in is worth nothing afterwards.
        set_session_cookie(request, response, portal.signer.new(authenticated=True))
        return response
    if portal.throttle.blocked(client, token):
        async with portal.throttle.queue(client):
            await asyncio.sleep(portal.throttle.penalty(client, token))
            portal.throttle.failed(client, token)
        error = "Too many wrong tokens from this address. Wait a few minutes, then try again."
        return render(request, "login.html", status=429, next=target, error=error)
    portal.throttle.failed(client, token)
    error = "That is not the admin token. It is the one the portal was started with."
    return render(request, "login.html", status=401, next=target, error=error)


@router.post("/logout")
def logout(request: Request, portal: PortalDep, form: Form) -> Response:
    response = redirect("/login?notice=signed_out" if portal.auth_required else "/")
    set_session_cookie(request, response, portal.signer.new())
    return response


# -- API reference -------------------------------------------------------------------------------------------------
@router.get("/api")
def api_reference(request: Request) -> HTMLResponse:
    spec = request.app.openapi()
    operations = []
    for path, methods in spec.get("paths", {}).items():
        for method, op in methods.items():
            operations.append(
                {
                    "method": method.upper(),
                    "path": path,
                    "summary": op.get("summary", ""),
                    "description": op.get("description", ""),
                    "tag": (op.get("tags") or ["other"])[0],
                }
            )
    return render(request, "api.html", operations=operations, spec=spec)
