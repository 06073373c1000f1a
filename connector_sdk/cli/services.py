"""Long-running commands: ``run`` (the scheduler), ``serve`` (the portal), ``worker`` and ``schedule`` (Celery)."""

from __future__ import annotations

import signal
import sys
from typing import Any

import click

from connector_sdk.cli.context import (
    EXIT_FOR_OUTCOME,
    Ctx,
    err,
    fail,
    handled,
    out,
    pass_ctx,
    run_line,
)


@click.command()
@click.option(
    "--interval", type=float, help="Seconds between syncs of a connection [default: the connector's, 3600 for fal]."
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=16,
    show_default=True,
    help="Syncs at once (threads: a sync mostly waits on the vendor).",
)
@click.option("--once", is_flag=True, help="Sync every due connection once, then exit.")
@pass_ctx
def run(ctx: Ctx, interval: float | None, concurrency: int, once: bool) -> None:
    """Run the scheduler: sync every connection on its interval, until SIGTERM or Ctrl-C.

    Connections waiting for a new key are skipped until `reconnect`. On SIGTERM each running sync stops after the
    page it is on, records where it got to, and the next start resumes there.
    """
    from connector_sdk.scheduler import Scheduler

    if interval is not None and interval <= 0:
        fail("--interval must be positive", 2)
    with handled(), ctx.host() as host:
        scheduler = Scheduler(host, interval_seconds=interval, concurrency=concurrency)

        def stop(signum: int, _frame: Any) -> None:
            err.print(f"received {signal.Signals(signum).name}; stopping after the current pages")
            scheduler.stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        if once:
            runs = scheduler.run_once()
            for r in runs:
                out.print(run_line(r), markup=False)
            sys.exit(max((EXIT_FOR_OUTCOME[r.outcome] for r in runs), default=0))
        scheduler.run_forever()
