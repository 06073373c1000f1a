"""Portal fixtures: the portal served for real by uvicorn on loopback, an HTTP client, and headless Chromium.

Browser tests need Debian's ``chromium`` (``apt-get install -y chromium``). Without it they fail, since CI installs
it; set ``CONNECTOR_HOST_SKIP_BROWSER=1`` to skip them instead on a machine that has none.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

import connector_sdk.sinks
import connectors.fal
import connectors.openai
from connector_sdk.host import Host
from connector_sdk.plugins import get_plugin_manager
from connector_sdk.portal.app import create_app
from connector_sdk.portal.context import Portal
from connectors.fal.simulator import FalSimulator
from connectors.openai.simulator import OpenAISimulator
from tests.conftest import fal_plugins

SKIP_BROWSER_ENV = "CONNECTOR_HOST_SKIP_BROWSER"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "portal"
ADMIN_TOKEN = "portal-test-token-0123456789abcdef"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: end-to-end tests in headless Chromium (apt-get install chromium)")


@dataclass
class LivePortal:
    url: str
    host: Host
    app: Any

    @property
    def state(self) -> Portal:
        return self.app.state.portal

    def wait_for_syncs(self, timeout: float = 60) -> None:
        self.state.jobs.wait(timeout)


@contextmanager
def served(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread on a free loopback port; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit this; without it every response waits out a 40 ms delayed ACK.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # As `serve` runs it: the app, not uvicorn, decides whose X-Forwarded-For to believe (--trusted-proxy).
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", proxy_headers=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the portal did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture
def portal_host(home: Path, sim: FalSimulator) -> Iterator[Host]:
    """A host on a SQLite store whose clock is the simulator's, so moving ``sim.now`` moves the host too."""
    with Host.open(home, store_url="", plugins=fal_plugins(), clock=lambda: sim.now) as host:
        yield host


@pytest.fixture
def portal(portal_host: Host) -> Iterator[LivePortal]:
    """The portal on loopback without a token, as `connector-host serve` runs it by default (scheduler aside:
    tests start syncs themselves so they know when one runs)."""
    app = create_app(portal_host)
    with served(app) as url:
        yield LivePortal(url=url, host=portal_host, app=app)


@pytest.fixture
def secured_portal(portal_host: Host) -> Iterator[LivePortal]:
    """The portal as served beyond loopback: an admin token is required."""
    app = create_app(portal_host, admin_token=ADMIN_TOKEN)
    with served(app) as url:
        yield LivePortal(url=url, host=portal_host, app=app)


@pytest.fixture
def openai_sim(sim: FalSimulator) -> Iterator[OpenAISimulator]:
    """An OpenAI simulator on the fal simulator's clock, its organization's history 20 days long."""
    with OpenAISimulator(now=sim.now, history_days=20, seed=11) as simulator:
        yield simulator


@pytest.fixture
def two_vendor_portal(home: Path, sim: FalSimulator, openai_sim: OpenAISimulator) -> Iterator[LivePortal]:
    """The portal over a host with the fal and the OpenAI connectors, on the fal simulator's clock (a test that moves
    it moves ``openai_sim.now`` too)."""
    plugins = get_plugin_manager(
        load_entrypoints=False, plugins=[connectors.fal, connectors.openai, connector_sdk.sinks]
    )
    with Host.open(home, store_url="", plugins=plugins, clock=lambda: sim.now) as host:
        app = create_app(host)
        with served(app) as url:
            yield LivePortal(url=url, host=host, app=app)


@pytest.fixture
def api(portal: LivePortal) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=portal.url, timeout=60, follow_redirects=False) as client:
        yield client


def wait_for_sync(client: httpx.Client, status_url: str, timeout: float = 60) -> dict[str, Any]:
    """Poll a sync's status URL until it has finished; returns its last status."""
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(status_url).json()
        if body["state"] not in ("queued", "running"):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"sync still {body['state']} after {timeout}s")
        time.sleep(0.05)


# -- the browser ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """One headless Chromium for the session (Debian's package; Playwright downloads nothing)."""
    executable = shutil.which("chromium")
    if executable is None:
        message = "Chromium is not installed (apt-get install -y chromium)"
        if os.environ.get(SKIP_BROWSER_ENV) == "1":
            pytest.skip(message)
        pytest.fail(f"{message}; set {SKIP_BROWSER_ENV}=1 to skip the browser tests", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context(viewport={"width": 1360, "height": 900}, accept_downloads=True)
    context.set_default_timeout(20_000)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


Shot = Callable[[Any, str], Path]


@pytest.fixture
def screenshot() -> Shot:
    """Save a full-page PNG under test-artifacts/portal/ (kept for people to look at)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def shoot(page: Any, name: str) -> Path:
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return shoot
