"""``demo``: everything offline against a local fal simulator."""

from __future__ import annotations

import shutil
import sys

import click

from connector_sdk.cli.context import (
    EXIT_FOR_OUTCOME,
    Ctx,
    handled,
    out,
    pass_ctx,
    progress_bar,
    run_line,
)
from connector_sdk.cli.reading import REPORT_DAYS, report
from connector_sdk.host import Host
from connector_sdk.models import RunOutcome


@click.command()
@click.option("--days", type=click.IntRange(1, 30), default=7, show_default=True, help="Days to backfill.")
@pass_ctx
def demo(ctx: Ctx, days: int) -> None:
    """Run everything offline: a fal simulator on loopback, a connection, a backfill and the report."""
    from connectors.fal.simulator import FalSimulator

    home = ctx.home / "demo"
    shutil.rmtree(home, ignore_errors=True)
    with handled(), FalSimulator(seed=2026) as sim:
        key = sim.add_account("acme-ai", n_keys=3, n_models=6)
        out.print(f"fal simulator listening on {sim.base_url} (team acme-ai)")
        with Host.open(home, store_url="") as host:
            connection = host.connect(
                "fal", "fal-demo", {"api_key": key, "base_url": sim.base_url, "backfill_days": days}
            )
            out.print(f"connected [bold]{connection.name}[/] to fal account [bold]{connection.account}[/]", markup=True)
            with progress_bar(sys.stderr.isatty()) as update:
                run_ = host.sync(connection.name, progress=update)
            out.print(run_line(run_), markup=False)
            if run_.outcome != RunOutcome.SUCCEEDED:
                sys.exit(EXIT_FOR_OUTCOME[run_.outcome])
    ctx.home = home
    # The report's default period, so `connector-host report` on the demo's home shows this total again.
    click.get_current_context().invoke(report, name="fal-demo", days=REPORT_DAYS, fmt="table")
    out.print(f"\nThe demo store is in {home}. Explore it with e.g. `connector-host --home {home} status`.")
