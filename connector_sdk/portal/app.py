"""The portal as an ASGI app: the pages, the JSON API, and the rules every request passes on its way in."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import structlog
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from connector_sdk import __version__, logs
from connector_sdk.errors import (
    ApiError,
    ConfigError,
    ConnectorHostError,
    CredentialError,
    ResponseError,
    SyncInProgress,
    TransientError,
    UnknownConnection,
    UnknownConnector,
)
from connector_sdk.host import Host
from connector_sdk.portal import api, pages
from connector_sdk.portal.context import Portal
from connector_sdk.portal.jobs import SyncJobs, where
from connector_sdk.portal.security import (
    SESSION_COOKIE,
    UNSAFE_METHODS,
    SessionSigner,
    bearer_token,
    loopback_host_header,
    same_origin,
    token_matches,
)
from connector_sdk.portal.service import PortalError

log = structlog.get_logger()

STATIC = Path(__file__).parent / "static"
PUBLIC_PATHS = frozenset({"/login", "/favicon.ico", "/api/v1/health"})
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
DESCRIPTION = """\
The admin portal's REST API: the connector catalog, connections and their status, syncs, usage rows and the
spend report. Secrets (API keys) are write-only: they are accepted in request bodies and never returned.
When the portal was started with an admin token, send it as `Authorization: Bearer <token>`.
Errors are JSON: `{"error": {"status": 422, "message": "...", "fields": {"api_key": "..."}}}`.
"""

STATUS_FOR: tuple[tuple[type[ConnectorHostError], int], ...] = (
    (UnknownConnection, 404),
    (UnknownConnector, 404),
    (SyncInProgress, 409),
    (CredentialError, 422),
    (TransientError, 503),
    (ResponseError, 502),
    (ApiError, 502),
    (ConfigError, 422),
)


def wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def problem(
    request: Request,
    status: int,
    message: str,
    *,
    fields: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """An error as JSON for the API, or as a page for a person."""
    if wants_json(request):
        body = {"error": {"status": status, "message": message, "fields": fields or {}}}
        return JSONResponse(body, status_code=status, headers=headers)
    response = pages.render(request, "error.html", status=status, code=status, message=message)
    response.headers.update(headers or {})
    return response


def _no_cookie_on_cross_site(request: Request) -> bool:
    """A link from another site arrives without our SameSite=Strict cookie; reloading from here brings it along."""
    return request.method == "GET" and request.headers.get("sec-fetch-site") == "cross-site"


async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """Every request: the right Host, same-origin writes, the admin token or a signed-in session."""
    portal: Portal = request.app.state.portal
    path = request.url.path
    is_api = path.startswith("/api/")
    if portal.loopback_only and not loopback_host_header(request):
        # Anything but localhost in Host on a loopback-only portal is a DNS-rebinding attempt.
        return problem(request, 400, "This portal only answers to localhost. Serve it with --host to use a name.")
    if request.method in UNSAFE_METHODS and not same_origin(request):
        return problem(request, 403, "This request came from another site, so it was refused.")
    session = portal.signer.loads(request.cookies.get(SESSION_COOKIE))
    fresh = None
    if session is None and not is_api and not path.startswith("/static/"):
        if _no_cookie_on_cross_site(request):
            return HTMLResponse('<!doctype html><meta http-equiv="refresh" content="0">', headers=SECURITY_HEADERS)
        session = fresh = portal.signer.new()
    request.state.session = session
    if portal.admin_token is not None and path not in PUBLIC_PATHS and not path.startswith("/static/"):
        if is_api:
            if not token_matches(bearer_token(request), portal.admin_token):
                return problem(
                    request,
                    401,
                    "Send the portal's admin token as 'Authorization: Bearer <token>'.",
                    headers={"WWW-Authenticate": 'Bearer realm="connector-host"'},
                )
        elif session is None or not session.authenticated:
            target = path + (f"?{request.url.query}" if request.url.query else "")
            response = RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
            return _finish(request, response, fresh)
    return _finish(request, await call_next(request), fresh)


def _finish(request: Request, response: Response, fresh: Any) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if not request.url.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-store")
    already = any(h.startswith(f"{SESSION_COOKIE}=") for h in response.headers.getlist("set-cookie"))
    if fresh is not None and not already:
        pages.set_session_cookie(request, response, fresh)
    return response


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PortalError)
    async def portal_error(request: Request, error: PortalError) -> Response:
        return problem(request, error.status, str(error), fields=error.fields)

    @app.exception_handler(ConnectorHostError)
    async def host_error(request: Request, error: ConnectorHostError) -> Response:
        status = next((code for kind, code in STATUS_FOR if isinstance(error, kind)), 400)
        return problem(request, status, str(error))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> Response:
        fields: dict[str, str] = {}
        for item in error.errors():
            loc = [str(p) for p in item.get("loc", ()) if p not in ("body", "query", "path")]
            fields.setdefault(".".join(loc) or "body", str(item.get("msg", "invalid")))
        summary = "; ".join(f"{k}: {v}" for k, v in fields.items())
        return problem(request, 422, f"The request is invalid: {summary}.", fields=fields)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        messages = {404: "There is nothing at this address.", 405: "This address does not accept that method."}
        message = messages.get(error.status_code, str(error.detail))
        return problem(request, error.status_code, message, headers=getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def crashed(request: Request, error: Exception) -> Response:
        log.error("portal_request_failed", path=request.url.path, **where(error))
        return problem(request, 500, "Something went wrong inside the portal; the server log has the details.")


def create_app(
    host: Host,
    *,
    admin_token: str | None = None,
    loopback_only: bool | None = None,
    run_scheduler: bool = False,
    scheduler_options: dict[str, Any] | None = None,
    session_secret: bytes | None = None,
) -> FastAPI:
    """The portal for ``host``.

    :param admin_token: required from every client when given: as a bearer token by the API, through the sign-in
        form by the pages. Without one, only requests addressed to localhost are answered (``loopback_only``).
    :param run_scheduler: run :class:`~connector_sdk.scheduler.Scheduler` in a daemon thread while the app runs.
    """
    if admin_token is not None:
        logs.secrets.add(admin_token)
    portal = Portal(
        host=host,
        jobs=SyncJobs(host),
        signer=SessionSigner(session_secret),
        admin_token=admin_token,
        loopback_only=(admin_token is None) if loopback_only is None else loopback_only,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        from connector_sdk.scheduler import Scheduler

        scheduler = Scheduler(host, **(scheduler_options or {})) if run_scheduler else None
        thread = None
        if scheduler is not None:
            thread = threading.Thread(target=scheduler.run_forever, name="scheduler", daemon=True)
            thread.start()
        try:
            yield
        finally:
            if scheduler is not None:
                scheduler.stop()
            await run_in_threadpool(portal.jobs.stop)
            if thread is not None:
                await run_in_threadpool(thread.join, 60)

    app = FastAPI(
        title="connector-host",
        version=__version__,
        description=DESCRIPTION,
        openapi_url="/api/openapi.json",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.portal = portal
    app.include_router(api.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.middleware("http")(guard)
    _install_error_handlers(app)
    return app
