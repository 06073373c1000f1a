"""``simulator``: the fal simulator on a fixed loopback port, and its control plane (issue, revoke, list keys).

By default it serves the demo's team (``acme-ai``, seed 2026) on 127.0.0.1:8765, where ``connector-host demo`` points
its connection: the same seed gives the same keys, so the demo's store keeps syncing while this runs.
"""

from __future__ import annotations

import errno
import os
import signal
import threading
from pathlib import Path
from typing import Any

import click

from connector_sdk.cli.context import Ctx, fail, out, pass_ctx

SIMULATOR_HOST = "127.0.0.1"
SIMULATOR_PORT = 8765
DEMO_TEAM = "acme-ai"
DEMO_SEED = 2026
DEMO_KEYS = 3
DEMO_MODELS = 6
CONTROL_TIMEOUT = 5.0


def check_port(port: int) -> None:
    """One line, not a traceback, for a port no socket can bind."""
    if not 1 <= port <= 65535:
        fail(f"--port must be between 1 and 65535, got {port}", 2)


def busy_port_message(port: int) -> str:
    return f"port {port} on {SIMULATOR_HOST} is already in use; stop what listens there or pass --port"


def root_url(port: int) -> str:
    return f"http://{SIMULATOR_HOST}:{port}"


def control(port: int, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """Call the control plane of the simulator on ``port``; a failure is one line and exit 2 (1 if unreachable)."""
    import requests

    url = f"{root_url(port)}/_sim{path}"
    try:
        response = requests.request(method, url, json=body, timeout=CONTROL_TIMEOUT)
    except requests.RequestException:
        fail(f"no simulator answers at {root_url(port)}: start one with `connector-host simulator --port {port}`", 1)
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict | list) or (response.status_code >= 400 and not isinstance(answer, dict)):
        fail(f"{root_url(port)} does not look like a connector-host simulator (HTTP {response.status_code})", 2)
    if response.status_code >= 400:
        fail(str(answer.get("error") or f"HTTP {response.status_code}"), 2)
    return answer


def write_key_file(path: Path, key: str) -> None:
    """Write a key readable by its owner only (0600, in a 0700 folder when it creates one)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)  # a file that already existed keeps its mode otherwise
        handle.write(key + "\n")


def default_key_file(ctx: Ctx, account: str, key_id: str | None = None) -> Path:
    name = account if key_id is None else f"{account}-{key_id}"
    return ctx.home / "simulator" / f"{name}.key"


def _range(value: int, name: str, low: int, high: int) -> None:
    if not low <= value <= high:
        fail(f"--{name} must be between {low} and {high}, got {value}", 2)


def _key_lines(key: str, key_file: Path, print_key: bool) -> list[str]:
    """How the person gets the key into FAL_KEY: from a 0600 file, or (asked for) an ``export`` line to eval."""
    if print_key:
        return [f"export FAL_KEY={key}"]
    try:
        write_key_file(key_file, key)
    except OSError as error:
        fail(f"cannot write the key to {key_file}: {error.strerror or error}; pass --key-file FILE or --print-key", 2)
    return [f"export FAL_KEY=\"$(cat '{key_file}')\"   # the key is in that file, mode 0600"]


@click.group(invoke_without_command=True)
@click.option("--port", type=int, default=SIMULATOR_PORT, show_default=True, help="Port on 127.0.0.1.")
@click.option("--seed", type=int, default=DEMO_SEED, show_default=True, help="Seed of the synthetic usage and keys.")
@click.option("--account", default=DEMO_TEAM, show_default=True, help="The team's username.")
@click.option("--keys", "n_keys", type=int, default=DEMO_KEYS, show_default=True, help="API keys of the team (0-50).")
@click.option("--models", "n_models", type=int, default=DEMO_MODELS, show_default=True, help="Models it uses.")
@click.option("--history-days", type=int, default=35, show_default=True, help="Days of usage history (1-400).")
@click.option(
    "--stand-in",
    is_flag=True,
    help="Page like fal at its least generous: 50 items without a limit, at most 200, 400 above.",
)
@click.option("--key-file", type=click.Path(dir_okay=False, path_type=Path), help="Where the Admin key is written.")
@click.option("--print-key", is_flag=True, help="Print `export FAL_KEY=...` with the key instead of writing a file.")
@click.pass_context
def simulator(
    click_ctx: click.Context,
    port: int,
    seed: int,
    account: str,
    n_keys: int,
    n_models: int,
    history_days: int,
    stand_in: bool,
    key_file: Path | None,
    print_key: bool,
) -> None:
    """Serve the fal simulator on 127.0.0.1:8765 until Ctrl-C, with usage up to the current minute.

    Its defaults serve the team of `connector-host demo`, so the demo's store keeps syncing while it runs. The
    Admin key goes to a file (mode 0600) under <home>/simulator; connect with the `export FAL_KEY=...` line it
    prints. `simulator keys`, `simulator issue` and `simulator revoke KEY_ID` drive it from another terminal
    (they call its control plane, http://127.0.0.1:PORT/_sim).
    """
    if click_ctx.invoked_subcommand is not None:
        return
    from connectors.fal.simulator import MODEL_CATALOGUE, FalSimulator

    ctx: Ctx = click_ctx.obj
    check_port(port)
    _range(n_keys, "keys", 0, 50)
    _range(n_models, "models", 1, len(MODEL_CATALOGUE))
    _range(history_days, "history-days", 1, 400)
    sim = FalSimulator(port=port, seed=seed, history_days=history_days, stand_in=stand_in)
    key = sim.add_account(account, n_keys=n_keys, n_models=n_models)
    sim.follow_wall_clock()
    try:
        sim.start()
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            fail(busy_port_message(port), 2)
        fail(f"cannot listen on {SIMULATOR_HOST}:{port}: {error.strerror or error}", 2)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        key_id = key.partition(":")[0]
        lines = [
            f"fal simulator serving {sim.base_url} (team {account}, seed {seed}"
            + (", stand-in paging" if stand_in else "")
            + ")",
            f"Admin key {key_id} of {account}:",
            *("  " + line for line in _key_lines(key, key_file or default_key_file(ctx, account), print_key)),
            f"Connect:  connector-host connect fal --name sim --base-url {sim.base_url}",
            f"Revoke:   connector-host simulator revoke {key_id} --port {port}   (the next sync exits 3)",
            f"New key:  connector-host simulator issue --port {port}   then `connector-host reconnect sim`",
            f"Control plane: {sim.root_url}/_sim · Ctrl-C stops.",
        ]
        out.print("\n".join(lines), markup=False, soft_wrap=True)
        while not stop.wait(1):
            pass
    finally:
        sim.stop()


@simulator.command("issue")
@click.option("--port", type=int, default=SIMULATOR_PORT, show_default=True)
@click.option("--account", default=DEMO_TEAM, show_default=True)
@click.option("--scope", type=click.Choice(["ADMIN", "API"]), default="ADMIN", show_default=True)
@click.option("--key-file", type=click.Path(dir_okay=False, path_type=Path), help="Where the key is written.")
@click.option("--print-key", is_flag=True, help="Print `export FAL_KEY=...` with the key instead of writing a file.")
@pass_ctx
def issue(ctx: Ctx, port: int, account: str, scope: str, key_file: Path | None, print_key: bool) -> None:
    """Issue a new key on a running simulator (ADMIN by default; API keys get 403 on usage)."""
    check_port(port)
    answer = control(port, "POST", "/keys", {"account": account, "scope": scope})
    key, key_id = str(answer["key"]), str(answer["key_id"])
    lines = _key_lines(key, key_file or default_key_file(ctx, account, key_id), print_key)
    out.print("\n".join([f"Issued {scope} key {key_id} for {account}:", *lines]), markup=False, soft_wrap=True)


@simulator.command("revoke")
@click.argument("key_id")
@click.option("--port", type=int, default=SIMULATOR_PORT, show_default=True)
def revoke(key_id: str, port: int) -> None:
    """Revoke a key of a running simulator by its id (the part before ':'): it gets 401 from then on."""
    check_port(port)
    control(port, "DELETE", f"/keys/{key_id.partition(':')[0]}")
    out.print(f"Revoked key {key_id.partition(':')[0]}: the next sync with it ends in reconnect_required (exit 3).")


@simulator.command("keys")
@click.option("--port", type=int, default=SIMULATOR_PORT, show_default=True)
def keys(port: int) -> None:
    """List the accounts and key ids (never the secrets) of a running simulator."""
    check_port(port)
    answer = control(port, "GET", "")
    lines = [f"{answer.get('name', 'simulator')} at {answer.get('base_url')}"]
    for account in answer.get("accounts", []):
        lines.append(f"{account['account']}:")
        for key in account["keys"]:
            state = "revoked" if key["revoked"] else "live"
            lines.append(f"  {key['key_id']}  {key['scope']:<5}  {state:<7}  {key['alias']}")
    out.print("\n".join(lines), markup=False, soft_wrap=True)
