"""``connector-host worker`` and ``connector-host schedule``: the distributed runner's two processes.

The main group offers both when the workers extra is installed. They read the group's
``--home`` and ``--store`` (or ``CONNECTOR_HOST_HOME`` / ``CONNECTOR_HOST_STORE``) and the broker from
``CONNECTOR_HOST_BROKER``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

import click

from connector_sdk.errors import ConnectorHostError
from connector_sdk.host import HOME_ENV, Host
from connector_sdk.stores import STORE_ENV


def _export_group_options(ctx: click.Context) -> None:
    """Hand the group's ``--home``/``--store`` to the worker's host factory, which reads the environment."""
    obj = ctx.find_root().obj
    home = getattr(obj, "home", None)
    store_url = getattr(obj, "store_url", None)
    if home is not None:
        os.environ[HOME_ENV] = str(home)
    if store_url:
        os.environ[STORE_ENV] = store_url


def _fail(error: ConnectorHostError) -> None:
    click.echo(f"error: {error}", err=True)
    sys.exit(error.exit_code)


@click.command()
@click.option(
    "--concurrency", type=click.IntRange(1, 512), default=8, show_default=True, help="Syncs at once in this worker."
)
@click.option(
    "--pool",
    type=click.Choice(["threads", "prefork", "solo"]),
    default="threads",
    show_default=True,
    help="Celery pool: threads (syncs wait on the network, not the CPU), prefork, or solo.",
)
@click.option("--loglevel", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True)
@click.option("--hostname", help="Celery node name [default: connector-host@<host>.<pid>].")
@click.pass_context
def worker(ctx: click.Context, concurrency: int, pool: str, loglevel: str, hostname: str | None) -> None:
    """Run a Celery worker that syncs the connections the scheduler enqueues.

    Needs CONNECTOR_HOST_BROKER (amqp://... RabbitMQ, recommended, or redis://...) and a shared store
    (CONNECTOR_HOST_STORE=postgresql://...). With CONNECTOR_HOST_RATE_LIMIT_REDIS set, requests to one vendor host
    are limited to CONNECTOR_HOST_MAX_CONCURRENT_PER_HOST (default 16) across every worker. SIGTERM stops each
    running sync after its current page; the next cycle resumes it.
    """
    from connector_sdk import workers

    _export_group_options(ctx)
    try:
        app = workers.make_app()
        workers.install_worker_signals()
        # Open the store before taking work, so a wrong URL or key fails here and not in every task.
        workers.worker_host()
    except ConnectorHostError as error:
        _fail(error)
    node = hostname or f"connector-host@{os.uname().nodename}.{os.getpid()}"
    argv = [
        "worker",
        f"--pool={pool}",
        f"--concurrency={concurrency}",
        f"--loglevel={loglevel.upper()}",
        f"--queues={workers.queue_name()}",
        f"--hostname={node}",
        # No worker-to-worker chatter: with hundreds of workers it is broker load that buys nothing here.
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    app.worker_main(argv)


@click.command()
@click.option("--interval", type=float, help="Seconds between syncs of a connection [default: the connector's].")
@click.option("--tick", type=float, default=10.0, show_default=True, help="Seconds between looks for due connections.")
@click.option("--jitter", type=click.FloatRange(0, 0.5), default=0.1, show_default=True, help="Spread of next syncs.")
@click.option(
    "--claim-seconds",
    type=float,
    help="How long an enqueued sync is waited for before it is enqueued again [default: the interval].",
)
@click.option(
    "--spread", type=float, default=0.0, show_default=True, help="Delay each task by a random 0..SPREAD seconds."
)
@click.option("--once", is_flag=True, help="Enqueue every due connection once, then exit.")
@click.pass_context
def schedule(
    ctx: click.Context,
    interval: float | None,
    tick: float,
    jitter: float,
    claim_seconds: float | None,
    spread: float,
    once: bool,
) -> None:
    """Enqueue each due connection once per interval for the workers; until SIGTERM or Ctrl-C.

    Connections waiting for a new key (reconnect required) or disconnected are never enqueued. Run one scheduler
    (a second one is harmless: a connection enqueued twice is synced once).
    """
    from connector_sdk import workers

    for value, option in ((interval, "--interval"), (claim_seconds, "--claim-seconds")):
        if value is not None and value <= 0:
            click.echo(f"error: {option} must be positive", err=True)
            sys.exit(2)
    _export_group_options(ctx)
    try:
        app = workers.make_app()
        host = Host.open()
    except ConnectorHostError as error:
        _fail(error)
    with host:
        options: dict[str, Any] = {
            "interval_seconds": interval,
            "jitter": jitter,
            "claim_seconds": claim_seconds,
            "spread_seconds": spread,
        }
        if once:
            try:
                sent = workers.enqueue_due(host, app, **options)
            except ConnectorHostError as error:
                _fail(error)
            click.echo(f"enqueued {len(sent)} connection(s)")
            return
        stop = threading.Event()

        def on_signal(signum: int, _frame: Any) -> None:
            click.echo(f"received {signal.Signals(signum).name}; stopping", err=True)
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        workers.run_scheduler(host, app, stop, tick_seconds=tick, **options)
