"""An admin's afternoon in a real headless Chromium: catalog, connect, dashboard, a revoked key, reconnect."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from connector_sdk.models import decimal_text
from connector_sdk.portal.service import money
from connectors.fal.simulator import FalSimulator
from tests.conftest import TEAM
from tests.helpers import stored_rows, truth_rows
from tests.portal.conftest import ADMIN_TOKEN, LivePortal, Shot

pytestmark = pytest.mark.browser


class Visit:
    """Every page the browser shows is checked for the secrets in play, in its HTML and in its address."""

    def __init__(self, page: Page, secrets: list[str]) -> None:
        self.page = page
        self.secrets = [s for s in secrets for s in (s, s.partition(":")[2]) if s]

    def check(self) -> None:
        html = self.page.content()
        for secret in self.secrets:
            assert secret not in html, "a secret reached a page"
            assert secret not in self.page.url, "a secret reached an address"


def badge(page: Page) -> Any:
    return page.locator("h1 .badge")


def truth_and_store(sim: FalSimulator, portal: LivePortal, start: Any, end: Any) -> dict[Any, Any]:
    truth = truth_rows(sim.truth(TEAM, start, end))
    assert stored_rows(portal.host.store.iter_rows("fal-prod")) == truth
    return truth


def test_an_admin_connects_fal_sees_its_spend_and_reconnects_after_the_key_is_revoked(
    page: Page, portal: LivePortal, sim: FalSimulator, admin_key: str, screenshot: Shot
) -> None:
    start_of_story = sim.now
    new_key = sim.issue_key(TEAM, alias="Spend connector 2")
    visit = Visit(page, [admin_key, new_key])

    # The catalog: a card per connector, from its manifest.
    page.goto(portal.url + "/")
    expect(page).to_have_url(portal.url + "/catalog")
    card = page.locator("[data-connector=fal]")
    expect(card.get_by_role("heading", name="fal.ai")).to_be_visible()
    for text in ("What it collects", "Limitations", "Setup", "Raw token counts are not available", "Scope: Admin"):
        expect(card).to_contain_text(text.replace("Scope: Admin", "Set the Scope dropdown to Admin"))
    visit.check()
    screenshot(page, "01-catalog")

    # Add a connection: a form generated from the config schema, the key a password field.
    card.get_by_role("link", name="Connect fal.ai").click()
    expect(page.get_by_role("heading", name="Connect fal.ai", exact=True)).to_be_visible()
    expect(page.get_by_label("API key")).to_have_attribute("type", "password")
    page.get_by_label("Connection name").fill("fal-prod")
    page.get_by_label("API key").fill(admin_key)
    page.get_by_text("Advanced settings").click()
    page.get_by_label("Base URL").fill(sim.base_url)
    page.get_by_label("Backfill days").fill("2")
    screenshot(page, "02-add-connection")
    page.get_by_role("button", name="Connect", exact=True).click()

    # The dashboard: the first sync runs, then its totals are fal's truth.
    expect(page).to_have_url(portal.url + "/connections/fal-prod?notice=connected")
    expect(badge(page)).to_have_text("Connected", timeout=30_000)
    first = truth_and_store(sim, portal, start_of_story - timedelta(days=2), start_of_story + timedelta(hours=1))
    assert first, "the simulator served usage"
    total = sum((cost for _, cost in first.values()), Decimal(0))
    expect(page.locator(".kpi [data-total]")).to_have_attribute("data-total", decimal_text(total))
    expect(page.locator(".kpi [data-total]")).to_have_text(money(total))
    by_label: dict[str, Decimal] = {}
    for row in portal.host.store.iter_rows("fal-prod"):
        by_label[row.api_key_label] = by_label.get(row.api_key_label, Decimal(0)) + row.cost
    assert "User key" in by_label
    for label, cost in by_label.items():
        expect(page.locator(f'#spend-by-key tr[data-key="{label}"] [data-cost]')).to_have_text(money(cost))
    expect(page.locator("svg.chart rect[fill]").first).to_be_visible()
    expect(page.locator("[data-rows-total]")).to_have_attribute("data-rows-total", str(len(first)))
    visit.check()
    screenshot(page, "03-dashboard")

    # Filters and paging of the rows table.
    page.locator("select[name=key]").select_option("User key")
    page.get_by_role("button", name="Apply").click()
    user_rows = sum(1 for r in portal.host.store.iter_rows("fal-prod") if r.api_key_label == "User key")
    expect(page.locator("[data-rows-total]")).to_have_attribute("data-rows-total", str(user_rows))
    page.get_by_role("link", name="Clear").click()
    page.get_by_role("link", name="Next", exact=True).click()
    expect(page.locator(".pager")).to_contain_text("Page 2 of")

    # The connections list: status, last and next sync, actions.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Connections").click()
    row = page.locator("tr[data-connection=fal-prod]")
    expect(row.locator(".badge")).to_have_text("Connected")
    expect(row).to_contain_text("just now")
    expect(row.get_by_role("button", name="Sync now")).to_be_visible()
    screenshot(page, "04-connections")

    # fal revokes the key; five hours later the next sync is refused. (The first sync has finished by then: its
    # findings and hooks run after the badge says Connected, and a click meanwhile joins that sync.)
    portal.wait_for_syncs()
    sim.revoke_key(admin_key)
    sim.now = start_of_story + timedelta(hours=5)
    row.get_by_role("button", name="Sync now").click()
    row = page.locator("tr[data-connection=fal-prod]")
    expect(row.locator(".badge")).to_have_text("Reconnect required", timeout=30_000)
    expect(row.locator("[data-reason]")).to_contain_text("fal rejected the API key")
    expect(row.locator("[data-reason]")).to_contain_text("Admin")
    expect(row).to_contain_text("After reconnect")
    visit.check()
    screenshot(page, "05-reconnect-required")

    # Reconnect with a new key; the sync that follows fills the five hours missed.
    row.get_by_role("link", name="Reconnect").click()
    expect(page.get_by_label("API key")).to_have_attribute("type", "password")
    page.get_by_label("API key").fill(new_key)
    screenshot(page, "06-reconnect")
    page.get_by_role("button", name="Reconnect", exact=True).click()
    expect(page.locator(".alert-info")).to_contain_text("Reconnected")
    expect(badge(page)).to_have_text("Connected", timeout=30_000)
    portal.wait_for_syncs()
    end = sim.now + timedelta(hours=1)
    both = truth_and_store(sim, portal, start_of_story - timedelta(days=2), end)
    gap = {k for k in both if k[0] >= start_of_story}
    assert gap, "the simulator served usage during the gap"
    page.reload()
    total = sum((cost for _, cost in both.values()), Decimal(0))
    expect(page.locator(".kpi [data-total]")).to_have_attribute("data-total", decimal_text(total))
    visit.check()
    screenshot(page, "07-dashboard-after-reconnect")

    # The CSV download holds the gap's hours too, and every row of fal's truth.
    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV").click()
    exported = list(csv.DictReader(io.StringIO(download.value.path().read_text(encoding="utf-8"))))
    assert len(exported) == len(both)
    hours = {r["period_start"] for r in exported}
    assert {k[0].strftime("%Y-%m-%dT%H:00:00Z") for k in gap} <= hours
    assert sum(Decimal(r["cost"]) for r in exported) == total


def test_the_form_shows_each_mistake_next_to_its_field_and_refuses_a_non_admin_key_with_fals_advice(
    page: Page, portal: LivePortal, sim: FalSimulator, admin_key: str, screenshot: Shot
) -> None:
    api_scoped = sim.issue_key(TEAM, scope="API")
    visit = Visit(page, [api_scoped])
    page.goto(portal.url + "/connect/fal")
    page.get_by_label("Connection name").fill("no spaces allowed")
    page.get_by_label("API key").fill("just-a-secret-without-an-id")
    page.get_by_text("Advanced settings").click()
    page.get_by_label("Backfill days").fill("0")
    page.get_by_role("button", name="Connect", exact=True).click()
    expect(page.locator("[data-field-error=name]")).to_contain_text("letters, digits")
    expect(page.locator("[data-field-error=api_key]")).to_contain_text("KEY_ID:KEY_SECRET")
    expect(page.locator("[data-field-error=backfill_days]")).to_contain_text("greater than or equal to 1")
    expect(page.get_by_label("Connection name")).to_have_value("no spaces allowed")
    expect(page.get_by_label("API key")).to_have_value("")

    page.get_by_label("Connection name").fill("fal-prod")
    page.get_by_label("API key").fill(api_scoped)
    page.get_by_label("Base URL").fill(sim.base_url)
    page.get_by_label("Backfill days").fill("2")
    page.get_by_role("button", name="Connect", exact=True).click()
    # The heading says what fal said: the key is real, it lacks a scope.
    expect(page.locator("[data-form-error]")).to_contain_text(
        "fal.ai accepted the key, but this connector needs an Admin-scoped fal API key (KEY_ID:KEY_SECRET), "
        "created under API Keys in the fal dashboard, so nothing was stored"
    )
    advice = page.locator("[data-field-error=api_key]")
    expect(advice).to_contain_text("not Admin-scoped")
    expect(advice).to_contain_text("set Scope to Admin")
    visit.check()
    screenshot(page, "08-add-connection-refused")
    assert portal.host.store.list_connections() == []


def test_beyond_loopback_the_pages_ask_for_the_admin_token_and_keep_a_strict_http_only_session(
    page: Page, secured_portal: LivePortal, screenshot: Shot
) -> None:
    page.goto(secured_portal.url + "/connections")
    expect(page).to_have_url(secured_portal.url + "/login?next=%2Fconnections")
    page.get_by_label("Admin token").fill("not-the-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("[data-form-error]")).to_contain_text("not the admin token")
    screenshot(page, "09-sign-in")
    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(secured_portal.url + "/connections")
    expect(page.get_by_role("heading", name="Connections", exact=True)).to_be_visible()
    (cookie,) = page.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert ADMIN_TOKEN not in page.content() and ADMIN_TOKEN not in cookie["value"]
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(secured_portal.url + "/login?notice=signed_out")
    page.goto(secured_portal.url + "/catalog")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
