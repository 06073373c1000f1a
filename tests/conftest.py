"""Shared fixtures: a fal simulator on loopback, a host on a throwaway store, and the real CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import connector_sdk.sinks
import connectors.fal
from connector_sdk.host import Host
from connector_sdk.models import floor_hour, utcnow
from connector_sdk.plugins import get_plugin_manager
from connectors.fal.simulator import FalSimulator
from tests.store_fixtures import store_url_fixture as store_url_fixture

TEAM = "acme-ai"
FAST_RETRIES = {"CONNECTOR_HOST_BACKOFF_BASE": "0.01", "CONNECTOR_HOST_MAX_ATTEMPTS": "3"}


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in FAST_RETRIES.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("FAL_KEY", raising=False)
    monkeypatch.delenv("CONNECTOR_HOST_STORE", raising=False)
    monkeypatch.delenv("CONNECTOR_HOST_SECRET_KEY", raising=False)


@pytest.fixture
def sim() -> Iterator[FalSimulator]:
    """A fal simulator whose clock is pinned to the start of the current hour, paging at most 50 items a page
    however many are asked for: a backfill takes many requests, so faults can land in the middle of it."""
    with FalSimulator(now=floor_hour(utcnow()), seed=7, page_size=50, max_page_size=50) as simulator:
        yield simulator


@pytest.fixture
def admin_key(sim: FalSimulator) -> str:
    return sim.add_account(TEAM, n_keys=3, n_models=5)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def fal_plugins():
    """The fal connector and the built-in sinks, without depending on what else is installed."""
    return get_plugin_manager(load_entrypoints=False, plugins=[connectors.fal, connector_sdk.sinks])


@pytest.fixture
def host(home: Path, store_url: str) -> Iterator[Host]:
    """A host with the fal plugin, once on a SQLite file and once on a fresh PostgreSQL database."""
    with Host.open(home, store_url=store_url, plugins=fal_plugins()) as h:
        yield h


@pytest.fixture
def connect(host: Host, sim: FalSimulator, admin_key: str) -> Callable[..., str]:
    """Connect ``fal-test`` (or another name) to the simulator's team; returns the connection name."""

    def _connect(name: str = "fal-test", **config: object) -> str:
        values = {"api_key": admin_key, "base_url": sim.base_url, "backfill_days": 3, **config}
        host.connect("fal", name, values)
        return name

    return _connect


CliRunner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(home: Path) -> CliRunner:
    """Run ``python -m connector_sdk ARGS`` for real, with the test's home and fast retries."""

    def run(
        *args: str, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("FAL_", "CONNECTOR_HOST_"))}
        environment.update({"CONNECTOR_HOST_HOME": str(home), **FAST_RETRIES, **(env or {})})
        return subprocess.run(
            [sys.executable, "-m", "connector_sdk", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=environment,
            timeout=90,
        )

    return run
