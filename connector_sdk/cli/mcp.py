"""``connector-host mcp``: the spend data for AI assistants over the Model Context Protocol, read-only.

stdio by default (what desktop clients and IDEs launch); ``--http`` serves the streamable HTTP transport with the
rules of ``serve``: loopback only unless an admin token is set, which every client then sends as a bearer token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from connector_sdk.cli.context import Ctx, fail, pass_ctx
from connector_sdk.cli.serve import (
    MAKE_TOKEN,
    MIN_TOKEN_LENGTH,
    TOKEN_ENV,
    _listen,
    _read_token,
    _refuse_token_on_argv,
)
from connector_sdk.errors import ConnectorHostError
from connector_sdk.host import Host
from connector_sdk.http import is_loopback
from connector_sdk.portal.security import bearer_token, loopback_host_header, token_matches

MCP_PATH = "/mcp"


class Guard:
    """Who may reach the HTTP transport, checked before the SDK sees a request.

    Without a token, only requests addressed to this machine (a Host header naming loopback: anything else is DNS
    rebinding); with one, only requests that present it as ``Authorization: Bearer <token>``.
    """

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope)
            refused = None
            if self.token is None and not loopback_host_header(request):
                refused = JSONResponse({"error": "This server only answers to localhost."}, status_code=400)
            elif self.token is not None and not token_matches(bearer_token(request), self.token):
                refused = JSONResponse(
                    {"error": "Send the admin token as 'Authorization: Bearer <token>'."},
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="connector-host"'},
                )
            if refused is not None:
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)


def http_app(host: Host, *, bind: str, token: str | None) -> ASGIApp:
    """The streamable HTTP app behind the :class:`Guard`."""
    from mcp.server.transport_security import TransportSecuritySettings

    from connector_sdk.mcp.server import build_server

    # On loopback the SDK also checks Host and Origin; elsewhere the token is the gate, as for the portal.
    security = None if is_loopback(bind) else TransportSecuritySettings(enable_dns_rebinding_protection=False)
    app = build_server(host).streamable_http_app(
        streamable_http_path=MCP_PATH, transport_security=security, host=bind, stateless_http=True
    )
    return Guard(app, token)


@click.command()
@click.option("--http", "use_http", is_flag=True, help="Serve the streamable HTTP transport instead of stdio.")
@click.option("--host", "bind", default="127.0.0.1", show_default=True, help="Address to listen on (--http).")
@click.option("--port", type=click.IntRange(1, 65535), default=8090, show_default=True, help="Port (--http).")
@click.option(
    "--admin-token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"File holding the token every HTTP client must present (instead of {TOKEN_ENV}); required unless "
    "--host is loopback.",
)
@click.option("--admin-token", hidden=True, expose_value=False, callback=_refuse_token_on_argv)
@pass_ctx
def mcp(ctx: Ctx, use_http: bool, bind: str, port: int, admin_token_file: Path | None) -> None:
    """Serve the spend data to AI assistants over MCP (read-only): connections, spend, top spenders, budgets, rows,
    the key inventory, findings and an overview.

    stdio by default: point an MCP client at `connector-host mcp` (README: "Ask the spend data (MCP)"). With --http,
    the streamable HTTP transport on http://127.0.0.1:8090/mcp; on loopback no token is needed, anywhere else an
    admin token is required, from CONNECTOR_HOST_ADMIN_TOKEN or --admin-token-file (never on the command line), sent
    as 'Authorization: Bearer <token>'. Nothing is ever written: the store is opened read-only.
    """
    token = None
    listening = None
    if use_http:
        token = (_read_token(admin_token_file) or "").strip() or None
        if token is not None and len(token) < MIN_TOKEN_LENGTH:
            fail(f"the admin token must be at least {MIN_TOKEN_LENGTH} characters; make one with: {MAKE_TOKEN}", 2)
        if token is None and not is_loopback(bind):
            fail(
                f"serving on {bind} makes the spend data reachable from other machines, so it needs an admin token: "
                f"export {TOKEN_ENV}=$({MAKE_TOKEN}) and start it again (or serve on 127.0.0.1)",
                2,
            )
        listening = _listen(bind, port)
    try:
        # Read-only by construction: no schema upgrade, no key created, nothing a tool could write through.
        host = Host.open(ctx.home, store_url=ctx.store_url, read_only=True)
    except ConnectorHostError as error:
        fail(str(error), error.exit_code)
    with host:
        if listening is None:
            from connector_sdk.mcp.server import build_server

            build_server(host).run("stdio")
            return
        import uvicorn

        class CleanExitServer(uvicorn.Server):
            """uvicorn raises SIGTERM again after its graceful shutdown; a clean stop exits 0, as for `serve`."""

            def handle_exit(self, sig: int, frame: Any) -> None:
                super().handle_exit(sig, frame)
                getattr(self, "_captured_signals", []).clear()

        shown = f"[{bind}]" if ":" in bind else bind
        access = "bearer token required" if token else "this machine only"
        click.echo(f"MCP server on http://{shown}:{port}{MCP_PATH} ({access}). Ctrl-C stops.", err=True)
        config = uvicorn.Config(
            http_app(host, bind=bind, token=token), log_level="warning", server_header=False, lifespan="on"
        )
        CleanExitServer(config).run(sockets=[listening])
