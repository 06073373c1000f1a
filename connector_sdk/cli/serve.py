"""``connector-host serve``: the admin portal, its REST API and the hourly scheduler in one process."""

from __future__ import annotations

import errno
import os
import socket
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from connector_sdk.http import is_loopback

TOKEN_ENV = "CONNECTOR_HOST_ADMIN_TOKEN"
MIN_TOKEN_LENGTH = 16
MAKE_TOKEN = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def _refuse_token_on_argv(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    # Every user of the machine can read a command line (ps, /proc): the token never travels there.
    if value is not None:
        _fail(
            f"the admin token is not taken on the command line, where other users of the machine can read it: "
            f"set {TOKEN_ENV} or pass --admin-token-file"
        )


def _read_token(path: Path | None) -> str | None:
    if path is None:
        return os.environ.get(TOKEN_ENV)
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        _fail(f"cannot read the admin token from {path}: {getattr(error, 'strerror', None) or error}")


def _listen(bind: str, port: int) -> socket.socket:
    """Bind the port before anything is printed, so a busy one is one line, not a banner and then uvicorn's error.

    The bound socket is handed to uvicorn: nothing can take the port between this check and serving.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a restart reuses TIME_WAIT ports
    try:
        sock.bind((bind, port))
    except (socket.gaierror, UnicodeError) as error:
        sock.close()
        _fail(f"cannot listen on {bind!r}: {getattr(error, 'strerror', None) or error}")
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            _fail(f"port {port} on {bind} is already in use (is another server running?); choose another with --port")
        if error.errno == errno.EACCES:
            _fail(f"not allowed to listen on port {port} on {bind}; ports below 1024 need privileges, use --port")
        _fail(f"cannot listen on {bind}:{port}: {error.strerror or error}")
    sock.set_inheritable(True)
    return sock


@click.command()
@click.option("--host", "bind", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True, help="Port to listen on.")
@click.option(
    "--admin-token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"File holding the token every client must present (instead of {TOKEN_ENV}); a token is required unless "
    "--host is loopback.",
)
@click.option("--admin-token", hidden=True, expose_value=False, callback=_refuse_token_on_argv)
@click.option("--interval", type=float, help="Seconds between syncs of a connection [default: the connector's].")
@click.option("--concurrency", type=click.IntRange(1, 256), default=16, show_default=True, help="Syncs at once.")
@click.option("--no-scheduler", is_flag=True, help="Serve only; another process runs `connector-host run`.")
@click.pass_context
def serve(
    ctx: click.Context,
    bind: str,
    port: int,
    admin_token_file: Path | None,
    interval: float | None,
    concurrency: int,
    no_scheduler: bool,
) -> None:
    """Serve the admin portal and its REST API, and run the hourly scheduler in the background.

    Open http://127.0.0.1:8080 in a browser: pick a connector in the catalog, paste a key, and watch the spend.
    On loopback no sign-in is needed; anywhere else an admin token is required, from the CONNECTOR_HOST_ADMIN_TOKEN
    environment variable or --admin-token-file (never on the command line, where other users of the machine can
    read it): API clients send it as a bearer token and browsers get a sign-in page. Stops cleanly on SIGTERM or
    Ctrl-C.
    """
    import uvicorn

    class CleanExitServer(uvicorn.Server):
        """uvicorn raises SIGTERM again after its graceful shutdown, so the process would end "killed"; like
        `connector-host run`, a clean stop on SIGTERM or Ctrl-C exits 0 here."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            getattr(self, "_captured_signals", []).clear()

    from connector_sdk.cli.context import Ctx
    from connector_sdk.errors import ConnectorHostError
    from connector_sdk.host import Host, default_home
    from connector_sdk.portal.app import create_app
    from connector_sdk.stores import STORE_ENV

    token = (_read_token(admin_token_file) or "").strip() or None
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        _fail(f"the admin token must be at least {MIN_TOKEN_LENGTH} characters; make one with: {MAKE_TOKEN}")
    if token is None and not is_loopback(bind):
        _fail(
            f"serving on {bind} makes the portal reachable from other machines, so it needs an admin token: "
            f"export {TOKEN_ENV}=$({MAKE_TOKEN}) and start it again (or serve on 127.0.0.1)"
        )
    if interval is not None and interval <= 0:
        _fail("--interval must be positive")
    listening = _listen(bind, port)
    settings = ctx.find_object(Ctx)
    home = settings.home if settings else default_home()
    store_url = settings.store_url if settings else os.environ.get(STORE_ENV)
    try:
        host = Host.open(home, store_url=store_url)
    except ConnectorHostError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(error.exit_code)
    with host:
        app = create_app(
            host,
            admin_token=token,
            run_scheduler=not no_scheduler,
            scheduler_options={"interval_seconds": interval, "concurrency": concurrency},
        )
        shown = f"[{bind}]" if ":" in bind else bind
        scheduler = "off" if no_scheduler else "on"
        access = "sign-in required" if token else "this machine only"
        click.echo(f"Admin portal on http://{shown}:{port} ({access}; scheduler {scheduler}). Ctrl-C stops.", err=True)
        config = uvicorn.Config(app, host=bind, port=port, log_level="warning", server_header=False, lifespan="on")
        CleanExitServer(config).run(sockets=[listening])
