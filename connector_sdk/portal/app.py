"""The portal as an ASGI app: the pages, the JSON API, and the rules every request passes on its way in."""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
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
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
from connector_sdk.portal import api, inventory_api, inventory_pages, pages
from connector_sdk.portal.context import Portal
from connector_sdk.portal.jobs import SyncJobs, where
from connector_sdk.portal.security import (
    SESSION_COOKIE,
    UNSAFE_METHODS,
    SessionSigner,
    bearer_token,
    loopback_host_header,
    parse_proxies,
    same_origin,
    token_matches,
)
from connector_sdk.portal.service import PortalError

log = structlog.get_logger()

STATIC = Path(__file__).parent / "static"
PUBLIC_PATHS = frozenset({"/login", "/favicon.ico", "/api/v1/health"})
OPENAPI_PATH = "/api/openapi.json"
MAX_BODY_BYTES = 1024 * 1024
TRUSTED_PROXIES_ENV = "CONNECTOR_HOST_TRUSTED_PROXIES"
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
spend report; the overview across every connection, the key inventory and the findings. Secrets (API keys) are
write-only: they are accepted in request bodies and never returned.
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


def json_error_message(document: str | bytes, position: int) -> str:
    """``the body is not valid JSON (line 1, column 29)``: where a person finds the mistake, counted from 1."""
    text = document.decode("utf-8", "replace") if isinstance(document, bytes) else str(document)
    before = text[: max(0, position)]
    line = before.count("\n") + 1
    column = len(before) - (before.rfind("\n") + 1) + 1
    return f"the body is not valid JSON (line {line}, column {column})"


class BodyLimit:
    """Answers 413 to a request body above ``limit`` bytes before anything reads it as JSON or as a form.

    A declared ``Content-Length`` above the limit is refused at once; a chunked body is read up to the limit and
    refused as soon as it passes it, so a 60 MB upload is never held in memory or parsed.
    """

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in UNSAFE_METHODS:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, send)
            return
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.limit:
                await self._refuse(scope, send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        request = Request(scope)
        limit = f"{self.limit / 1024 / 1024:g} MiB" if self.limit >= 1024 * 1024 else f"{self.limit} bytes"
        response = problem(request, 413, f"The request body is larger than {limit}, so it was not read.")
        await response(scope, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


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
        message = "This portal only answers to localhost. Serve it with --host to use a name."
        return _finish(request, problem(request, 400, message), None)
    if request.method in UNSAFE_METHODS and not same_origin(request):
        return _finish(request, problem(request, 403, "This request came from another site, so it was refused."), None)
    session = portal.signer.loads(request.cookies.get(SESSION_COOKIE))
    fresh = None
    if session is None and not is_api and not path.startswith("/static/"):
        if _no_cookie_on_cross_site(request):
            return HTMLResponse('<!doctype html><meta http-equiv="refresh" content="0">', headers=SECURITY_HEADERS)
        session = fresh = portal.signer.new()
    request.state.session = session
    if portal.admin_token is not None and path not in PUBLIC_PATHS and not path.startswith("/static/"):
        # The OpenAPI link in the footer is for people too: a signed-in browser may read it without a bearer token.
        signed_in = session is not None and session.authenticated and path == OPENAPI_PATH
        if is_api and not signed_in:
            if not token_matches(bearer_token(request), portal.admin_token):
                refused = problem(
                    request,
                    401,
                    "Send the portal's admin token as 'Authorization: Bearer <token>'.",
                    headers={"WWW-Authenticate": 'Bearer realm="connector-host"'},
                )
                return _finish(request, refused, None)
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


def _validation_message(item: Any) -> str:
    """Pydantic's message, in words for people: ``NaN`` is "not a number", not "Input should be a finite number"."""
    if item.get("type") == "finite_number":
        return "not a number (NaN and Infinity are not numbers)"
    if item.get("type") == "extra_forbidden":
        return "there is no such field"
    return str(item.get("msg", "invalid")).removeprefix("Value error, ")


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
            if item.get("type") == "json_invalid":
                # FastAPI puts the character offset where a field name goes; say where the mistake is instead.
                position = item.get("loc", ("body", 0))[-1]
                message = json_error_message(error.body or "", position if isinstance(position, int) else 0)
                return problem(request, 422, message[0].upper() + message[1:] + ".", fields={"body": message})
            loc = [str(p) for p in item.get("loc", ()) if p not in ("body", "query", "path")]
            fields.setdefault(".".join(loc) or "body", _validation_message(item))
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
    trusted_proxies: Sequence[str] | None = None,
) -> FastAPI:
    """The portal for ``host``.

    :param admin_token: required from every client when given: as a bearer token by the API, through the sign-in
        form by the pages. Without one, only requests addressed to localhost are answered (``loopback_only``).
    :param run_scheduler: run :class:`~connector_sdk.scheduler.Scheduler` in a daemon thread while the app runs.
    :param trusted_proxies: addresses or networks (``10.0.0.0/8``) of reverse proxies whose ``X-Forwarded-For`` names
        the client for sign-in throttling; by default ``CONNECTOR_HOST_TRUSTED_PROXIES`` (comma-separated), else none,
        so no client can choose the address it is throttled under.
    """
    if admin_token is not None:
        logs.secrets.add(admin_token)
    portal = Portal(
        host=host,
        jobs=SyncJobs(host),
        signer=SessionSigner(session_secret),
        admin_token=admin_token,
        loopback_only=(admin_token is None) if loopback_only is None else loopback_only,
        trusted_proxies=parse_proxies(
            trusted_proxies if trusted_proxies is not None else os.environ.get(TRUSTED_PROXIES_ENV, "").split(",")
        ),
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
    app.include_router(inventory_api.router)
    app.include_router(inventory_pages.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # Inside the guard, so a 413 carries the security headers and an unauthenticated client learns nothing more.
    app.add_middleware(BodyLimit)
    app.middleware("http")(guard)
    _install_error_handlers(app)
    return app
