"""The portal offers every installed connector from its manifest: the catalog lists fal and OpenAI, and OpenAI's
connect form (placeholder, key format, setup steps, variable) connects against the OpenAI simulator.

The store cannot hold OpenAI rows yet (its migration lands separately), so these tests connect and check only: the
first sync the portal would start is taken by a stand-in holder of the connection, the branch the portal follows when
the scheduler got there first.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

import connector_sdk.sinks
import connectors.fal
import connectors.openai
from connector_sdk.errors import SyncInProgress
from connector_sdk.host import Host
from connector_sdk.plugins import get_plugin_manager
from connectors.openai.simulator import OpenAISimulator
from tests.portal.conftest import LivePortal, Shot, served

ORG = "Acme Research"
DESKTOP = {"width": 1360, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def openai_sim() -> Iterator[OpenAISimulator]:
    with OpenAISimulator(history_days=5, seed=11) as simulator:
        yield simulator


@pytest.fixture
def openai_key(openai_sim: OpenAISimulator) -> str:
    return openai_sim.add_organization(ORG)


@pytest.fixture
def both(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LivePortal]:
    """The portal with the fal and OpenAI connectors, and no first sync (see the module's docstring)."""
    from connector_sdk.portal.app import create_app

    plugins = get_plugin_manager(
        load_entrypoints=False, plugins=[connectors.fal, connectors.openai, connector_sdk.sinks]
    )
    with Host.open(home, store_url="", plugins=plugins) as host:
        app = create_app(host)

        def taken(name: str) -> Any:
            raise SyncInProgress(name, "the test")

        monkeypatch.setattr(app.state.portal.jobs, "start", taken)
        with served(app) as url:
            yield LivePortal(url=url, host=host, app=app)


@pytest.fixture
def api(both: LivePortal) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=both.url, timeout=60, follow_redirects=False) as client:
        yield client


def create(api: httpx.Client, sim: OpenAISimulator, key: str, name: str = "oa-prod") -> httpx.Response:
    config = {"api_key": key, "base_url": sim.base_url, "backfill_days": 2}
    return api.post("/api/v1/connections", json={"connector": "openai", "name": name, "config": config})


def test_the_catalog_api_lists_both_connectors_with_their_keys_described_by_their_manifests(api: httpx.Client) -> None:
    listed = {m["id"]: m for m in api.get("/api/v1/connectors").json()}
    assert set(listed) == {"fal", "openai"}
    fal, openai = listed["fal"]["authentication"], listed["openai"]["authentication"]
    assert (fal["env_var"], fal["key_example"]) == ("FAL_KEY", "KEY_ID:KEY_SECRET")
    assert (openai["env_var"], openai["key_example"]) == ("OPENAI_ADMIN_KEY", "sk-admin-...")
    assert "Organization Owner" in openai["help"] and openai["key_pattern"]
    assert api.get("/api/v1/connectors/openai").json() == listed["openai"]


def test_an_openai_admin_key_connects_through_the_api_and_the_key_never_comes_back(
    api: httpx.Client, both: LivePortal, openai_sim: OpenAISimulator, openai_key: str
) -> None:
    created = create(api, openai_sim, openai_key)
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["connection"]["connector"], body["connection"]["account"]) == ("openai", ORG)
    assert body["sync"] is None and "api_key" not in body["connection"]["config"]
    assert openai_key not in created.text
    assert [c.name for c in both.host.store.list_connections()] == ["oa-prod"]


def test_a_project_key_a_malformed_key_and_an_unknown_key_are_refused_field_by_field(
    api: httpx.Client, both: LivePortal, openai_sim: OpenAISimulator, openai_key: str
) -> None:
    project = create(api, openai_sim, openai_sim.issue_key(ORG, scope="project"))
    assert project.status_code == 422
    error = project.json()["error"]
    assert error["message"].startswith("OpenAI accepted the key but it may not read")
    assert "Organization Owner" in error["fields"]["api_key"]

    asked = len(openai_sim.requests)
    malformed = create(api, openai_sim, "org-4f2b9c pasted instead")
    assert malformed.status_code == 422
    advice = malformed.json()["error"]["fields"]["api_key"]
    assert advice == "The Admin key is not in OpenAI's key format (sk-admin-...); copy the whole key, nothing else."
    assert len(openai_sim.requests) == asked

    unknown = create(api, openai_sim, "sk-admin-never-issued")
    assert unknown.status_code == 422 and "invalid" in unknown.json()["error"]["fields"]["api_key"]
    assert both.host.store.list_connections() == []


def test_the_pages_offer_both_connectors_and_openais_form_is_generated_from_its_manifest(
    api: httpx.Client,
) -> None:
    catalog = api.get("/catalog").text
    assert 'data-connector="fal"' in catalog and 'data-connector="openai"' in catalog
    assert "<code data-env-var>FAL_KEY</code>" in catalog and "<code data-env-var>OPENAI_ADMIN_KEY</code>" in catalog
    form = api.get("/connect/openai").text
    assert 'placeholder="e.g. sk-admin-..."' in form
    assert "OPENAI_ADMIN_KEY" in form and "connector-host connect openai --name NAME" in form
    assert "Organization Owner" in form and "read-only permissions" in form
    assert 'name="restated_days"' in form and 'name="page_size"' not in form
    assert not re.search(r"\bfal\b|FAL_KEY|KEY_ID", form)


@pytest.mark.browser
def test_an_admin_connects_openai_from_the_catalog_at_desktop_and_phone_widths(
    page: Page, both: LivePortal, openai_sim: OpenAISimulator, openai_key: str, screenshot: Shot
) -> None:
    project_key = openai_sim.issue_key(ORG, scope="project")
    page.goto(both.url + "/catalog")
    for connector_id, name in (("fal", "fal.ai"), ("openai", "OpenAI")):
        expect(page.locator(f"[data-connector={connector_id}]").get_by_role("heading", name=name)).to_be_visible()
    card = page.locator("[data-connector=openai]")
    expect(card).to_contain_text("Create new admin key")
    expect(card.locator("[data-env-var]")).to_have_text("OPENAI_ADMIN_KEY")
    # Each card holds its columns: a manifest's long vendor paths wrap instead of pushing Setup out of the card.
    setup = card.get_by_role("heading", name="Setup").bounding_box()
    assert setup is not None and card.bounding_box()["x"] + card.bounding_box()["width"] >= setup["x"] + setup["width"]
    screenshot(page, "catalog-both-desktop")
    page.set_viewport_size(PHONE)
    screenshot(page, "catalog-both-390px")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.set_viewport_size(DESKTOP)

    card.get_by_role("link", name="Connect OpenAI").click()
    expect(page.get_by_role("heading", name="Connect OpenAI", exact=True)).to_be_visible()
    key_input = page.get_by_label("Admin key")
    expect(key_input).to_have_attribute("type", "password")
    expect(key_input).to_have_attribute("placeholder", "e.g. sk-admin-...")
    expect(page.locator("[data-cli]")).to_contain_text("OPENAI_ADMIN_KEY")
    page.get_by_label("Connection name").fill("oa-prod")
    key_input.fill(project_key)
    page.get_by_text("Advanced settings").click()
    page.get_by_label("Base URL").fill(openai_sim.base_url)
    page.get_by_role("button", name="Connect", exact=True).click()
    expect(page.locator("[data-form-error]")).to_contain_text(
        "OpenAI accepted the key, but this connector needs an OpenAI Admin key (sk-admin-...), which an Organization "
        "Owner creates under Settings > Organization > Admin keys, so nothing was stored"
    )
    assert project_key not in page.content()
    screenshot(page, "connect-openai-refused-desktop")

    page.get_by_label("Admin key").fill(openai_key)
    page.get_by_label("Base URL").fill(openai_sim.base_url)
    screenshot(page, "connect-openai-desktop")
    page.set_viewport_size(PHONE)
    screenshot(page, "connect-openai-390px")
    # Nothing on the form's page is wider than the phone: the long vendor paths in its aside wrap.
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.set_viewport_size(DESKTOP)
    page.get_by_role("button", name="Connect", exact=True).click()
    expect(page).to_have_url(both.url + "/connections/oa-prod?notice=connected")
    expect(page.locator("h1 .badge")).to_have_text("Connected")
    assert openai_key not in page.content()
    [connection] = both.host.store.list_connections()
    assert (connection.connector, connection.account) == ("openai", ORG)
