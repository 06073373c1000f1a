"""``demo``: everything offline against local simulators of three vendors, fal, OpenAI and Anthropic, side by side."""

from __future__ import annotations

import errno
import importlib
import shutil
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import click

from connector_sdk.cli.context import (
    EXIT_FOR_OUTCOME,
    Ctx,
    fail,
    handled,
    out,
    pass_ctx,
    progress_bar,
    run_line,
)
from connector_sdk.cli.reading import REPORT_DAYS, report, vendor_name
from connector_sdk.cli.simulator import (
    DEMO_KEYS,
    DEMO_MODELS,
    DEMO_SEED,
    DEMO_TEAM,
    SIMULATOR_PORT,
    busy_port_message,
    check_port,
    control,
    root_url,
)
from connector_sdk.host import Host
from connector_sdk.models import ConnectionState, RunOutcome
from connector_sdk.sync import sync_now

OPENAI_ORGANIZATION = "Acme AI"
ANTHROPIC_ORGANIZATION = "Acme Research"
# Vendors whose simulators live only as long as the demo: their keys are new each time, so a connection to one could
# not sync against a later one anyway. (connection, connector, the simulator's module and class, the account.)
DEMO_ONLY = (
    ("openai-demo", "openai", "connectors.openai.simulator", "OpenAISimulator", OPENAI_ORGANIZATION),
    ("anthropic-demo", "anthropic", "connectors.anthropic.simulator", "AnthropicSimulator", ANTHROPIC_ORGANIZATION),
)


def demo_only_gone(vendor: str) -> str:
    return (
        f"the demo's {vendor} simulator ran only while the demo ran; rows kept "
        "(run `connector-host demo` again to refresh)"
    )


@contextmanager
def demo_simulator(port: int) -> Iterator[tuple[str, str, bool]]:
    """The demo team's API on ``127.0.0.1:port`` as ``(base URL, Admin key, whether the demo serves it)``.

    The demo serves it itself on the port `connector-host simulator` uses, so that the connection it stores keeps
    working afterwards wherever that command runs. When the port is already taken by such a simulator, the demo
    uses it (with a key issued for it); by anything else, it stops with one line.
    """
    from connectors.fal.simulator import FalSimulator

    sim = FalSimulator(seed=DEMO_SEED, port=port)
    key = sim.add_account(DEMO_TEAM, n_keys=DEMO_KEYS, n_models=DEMO_MODELS)
    try:
        sim.start()
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            fail(f"cannot listen on 127.0.0.1:{port}: {error.strerror or error}", 2)
        yield (*_running_simulator(port), False)
        return
    try:
        yield sim.base_url, key, True
    finally:
        sim.stop()


@contextmanager
def demo_only_simulator(module: str, cls: str, organization: str) -> Iterator[tuple[str, str]]:
    """One of the :data:`DEMO_ONLY` vendors' APIs on a free loopback port, as ``(base URL, Admin key)``."""
    simulator = getattr(importlib.import_module(module), cls)
    with simulator(seed=DEMO_SEED) as sim:
        yield sim.base_url, sim.add_organization(organization)


def _running_simulator(port: int) -> tuple[str, str]:
    import requests

    try:
        described = requests.get(f"{root_url(port)}/_sim", timeout=5).json()
    except (requests.RequestException, ValueError):
        described = None
    teams = [a.get("account") for a in described.get("accounts", [])] if isinstance(described, dict) else []
    if not isinstance(described, dict) or described.get("name") != "fal-simulator" or DEMO_TEAM not in teams:
        fail(busy_port_message(port), 2)
    issued = control(port, "POST", "/keys", {"account": DEMO_TEAM})
    return str(described["base_url"]), str(issued["key"])


@click.command()
@click.option("--days", type=click.IntRange(1, 30), default=7, show_default=True, help="Days to backfill.")
@click.option(
    "--port",
    type=int,
    default=SIMULATOR_PORT,
    show_default=True,
    help="Loopback port of the fal simulator; `connector-host simulator` serves the demo team there afterwards.",
)
@pass_ctx
def demo(ctx: Ctx, days: int, port: int) -> None:
    """Run everything offline: fal, OpenAI and Anthropic simulators on loopback, a connection to each, a backfill of
    each and the report of their spend side by side, per vendor and per key."""
    check_port(port)
    home = ctx.home / "demo"
    shutil.rmtree(home, ignore_errors=True)
    with handled(), ExitStack() as running:
        base_url, key, own = running.enter_context(demo_simulator(port))
        out.print(f"fal simulator listening on {base_url} (team {DEMO_TEAM})")
        others = []
        for name, connector, module, cls, organization in DEMO_ONLY:
            url, other_key = running.enter_context(demo_only_simulator(module, cls, organization))
            out.print(f"{connector} simulator listening on {url} (organization {organization}, during the demo)")
            others.append((name, connector, {"api_key": other_key, "base_url": url, "backfill_days": days}))
        with Host.open(home, store_url="") as host:
            connections = [
                host.connect("fal", "fal-demo", {"api_key": key, "base_url": base_url, "backfill_days": days}),
                *(host.connect(connector, name, config) for name, connector, config in others),
            ]
            for connection in connections:
                vendor = vendor_name(host, connection.connector)
                out.print(
                    f"connected [bold]{connection.name}[/] to {vendor} account [bold]{connection.account}[/]",
                    markup=True,
                )
                with progress_bar(sys.stderr.isatty()) as update:
                    run_ = sync_now(host, connection.name, progress=update)
                out.print(run_line(run_), markup=False)
                if run_.outcome != RunOutcome.SUCCEEDED:
                    sys.exit(EXIT_FOR_OUTCOME[run_.outcome])
            # Their simulators stop with the demo: later syncs would only fail. Disconnected, their rows stay readable.
            for name, connector, *_ in DEMO_ONLY:
                host.disconnect(name)
                host.change_state(name, ConnectionState.DISCONNECTED, demo_only_gone(vendor_name(host, connector)))
    ctx.home = home
    # The report's default period over every connection, so `connector-host report` on the demo's home shows these
    # totals again: per vendor, then per key.
    click.get_current_context().invoke(report, name=None, days=REPORT_DAYS, fmt="table")
    out.print(f"\nThe demo store is in {home}. Explore it with e.g. `connector-host --home {home} status`.")
    again = "connector-host simulator" + ("" if port == SIMULATOR_PORT else f" --port {port}")
    if own:
        out.print(
            "The fal simulator stopped with the demo. To sync fal-demo again (`run`, `serve`, `sync`), "
            f"start `{again}` in another terminal first: it serves the same team and key on the same port."
        )
    else:
        out.print(f"fal-demo syncs against the simulator already running on port {port}, as long as it runs.")
    out.print(
        "openai-demo and anthropic-demo synced only while the demo ran (their simulators stopped with it): they are "
        "now disconnected, and their rows stay for `report`, `rows` and the portal."
    )
