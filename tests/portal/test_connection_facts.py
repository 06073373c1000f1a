"""The portal says what a connection's connector learned in its syncs: an Anthropic connection's cost source (per API
key from cost analytics, or per workspace from the cost report), in the API's connection and on its page. Against the
Anthropic simulator on loopback, the portal served by uvicorn, its first sync the one the portal starts."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import connector_sdk.sinks
import connectors.anthropic
from connector_sdk.host import Host
from connector_sdk.plugins import get_plugin_manager
from connectors.anthropic.simulator import AnthropicSimulator
from tests.portal.conftest import LivePortal, served, wait_for_sync

ORG = "Acme Research"
FACT = re.compile(r'<li data-fact="cost source">(.*?)</li>', re.DOTALL)


@pytest.fixture
def anthropic_sim() -> Iterator[AnthropicSimulator]:
    with AnthropicSimulator(history_days=5, seed=11) as simulator:
        yield simulator


@pytest.fixture
def portal(home: Path, anthropic_sim: AnthropicSimulator) -> Iterator[LivePortal]:
    from connector_sdk.portal.app import create_app

    plugins = get_plugin_manager(load_entrypoints=False, plugins=[connectors.anthropic, connector_sdk.sinks])
    with Host.open(home, store_url="", plugins=plugins, clock=lambda: anthropic_sim.now) as host:
        app = create_app(host)
        with served(app) as url:
            yield LivePortal(url=url, host=host, app=app)


@pytest.fixture
def api(portal: LivePortal) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=portal.url, timeout=60, follow_redirects=False) as client:
        yield client


@pytest.mark.parametrize(
    ("analytics", "source"), [("on", "per API key"), ("absent", "per workspace")], ids=["analytics", "cost report"]
)
def test_the_connection_says_which_cost_source_it_reads(
    api: httpx.Client, anthropic_sim: AnthropicSimulator, analytics: str, source: str
) -> None:
    key = anthropic_sim.add_organization(ORG, analytics=analytics)
    config = {"api_key": key, "base_url": anthropic_sim.base_url, "backfill_days": 2}
    created = api.post("/api/v1/connections", json={"connector": "anthropic", "name": "claude", "config": config})
    assert created.status_code == 201, created.text
    assert created.json()["connection"]["facts"] == {}, "nothing learned before the first sync"
    job = wait_for_sync(api, created.json()["sync"]["status_url"])
    assert job["outcome"] == "succeeded", job

    facts = api.get("/api/v1/connections/claude").json()["facts"]
    assert list(facts) == ["cost source"] and facts["cost source"].startswith(source)

    page = api.get("/connections/claude")
    assert page.status_code == 200
    (shown,) = FACT.findall(page.text)
    assert " ".join(html.unescape(re.sub(r"<[^>]+>", " ", shown)).split()) == f"Cost source {facts['cost source']}"
