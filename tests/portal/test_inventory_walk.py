"""An admin's look for shadow AI spend in headless Chromium, over two vendors (the fal and OpenAI simulators):
Overview, Keys, a key, acknowledging a finding; then keyboard, contrast, the dark scheme and a 390 px phone on
those pages. Every step is photographed at desktop and phone widths into test-artifacts/portal/."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from connectors.fal.simulator import FalSimulator
from connectors.openai.simulator import OpenAISimulator
from tests.portal.conftest import LivePortal, Shot
from tests.portal.test_browser_walk import (
    CONTRAST_JS,
    DESKTOP,
    PHONE,
    assert_reachable,
    at_both_widths,
    text_contrast_failures,
)
from tests.portal.test_inventory_api import DAYS, ORG, connect

pytestmark = pytest.mark.browser

PAGES = ("/", "/keys", "/findings")


def photograph(page: Page, screenshot: Shot, name: str) -> None:
    """Both widths, from the top: a page opened at an anchor would otherwise show the sticky bar mid-picture."""
    page.evaluate("window.scrollTo(0, 0)")
    at_both_widths(page, screenshot, name)


@pytest.fixture
def client(
    two_vendor_portal: LivePortal, sim: FalSimulator, openai_sim: OpenAISimulator, admin_key: str
) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=two_vendor_portal.url, timeout=60, follow_redirects=False) as client:
        connect(client, "fal", "fal-prod", {"api_key": admin_key, "base_url": sim.base_url, "backfill_days": DAYS})
        key = openai_sim.add_organization(ORG)
        connect(
            client, "openai", "openai-prod", {"api_key": key, "base_url": openai_sim.base_url, "backfill_days": DAYS}
        )
        yield client


def staging_url(client: httpx.Client) -> str:
    keys = client.get("/api/v1/keys", params={"q": "Staging", "vendor": "openai"}).json()
    url: str = next(k for k in keys if k["name"] == "Staging")["links"]["page"]
    return url


def test_overview_keys_a_key_and_acknowledging_a_finding(
    page: Page, two_vendor_portal: LivePortal, client: httpx.Client, screenshot: Shot
) -> None:
    url = two_vendor_portal.url
    overview = client.get("/api/v1/overview").json()

    # The home page is the overview: the total of both vendors, the change, the findings before the breakdowns.
    page.goto(url + "/")
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()
    expect(page.get_by_role("link", name="Overview")).to_have_attribute("aria-current", "page")
    expect(page.get_by_role("link", name="Connections", exact=True)).to_be_visible()
    (usd,) = [line for line in overview["totals"] if line["currency"] == "USD"]
    expect(page.locator("[data-kpi=spend] [data-currency=USD]")).to_have_attribute("data-total", usd["cost"])
    expect(page.locator("#by-vendor tbody tr")).to_have_count(2)
    findings = page.locator("#findings li.finding")
    expect(findings).to_have_count(len(overview["open_findings"]))
    expect(findings.first.locator("[data-severity]")).to_have_attribute("data-severity", "high")
    expect(findings.first.locator("dl.evidence").first).to_be_visible()
    # The last 7 days against the 7 before: both periods inside the history, so the change is a figure.
    page.get_by_role("link", name="7 days").click()
    week = client.get("/api/v1/overview", params={"days": 7}).json()
    (usd,) = [line for line in week["totals"] if line["currency"] == "USD"]
    spend = page.locator("[data-kpi=spend]")
    expect(spend.locator("[data-currency=USD]")).to_have_attribute("data-total", usd["cost"])
    expect(spend.locator("[data-change]")).to_have_attribute("data-change", usd["change"])
    photograph(page, screenshot, "inventory-01-overview")

    # Keys: every key of both vendors, a sparkline that says its figures, sorted and searched by a person.
    page.get_by_role("link", name="Keys", exact=True).click()
    expect(page.get_by_role("heading", name="Keys", level=1)).to_be_visible()
    every = client.get("/api/v1/keys").json()
    rows = page.locator("tr[data-key-row]")
    expect(rows).to_have_count(len(every))
    costs = [
        Decimal(c)
        for c in rows.locator("[data-spend-30d]").evaluate_all("els => els.map(e => e.getAttribute('data-spend-30d'))")
    ]
    assert costs == sorted(costs, reverse=True)
    spark = rows.first.locator("svg.spark")
    expect(spark).to_have_attribute("role", "img")
    assert " from " in (spark.get_attribute("aria-label") or "")
    page.locator("a.sort[data-sort=name]").click()
    names = rows.locator("td:first-child a.strong").all_inner_texts()
    assert [n.casefold() for n in names] == sorted(n.casefold() for n in names)
    expect(page.locator("th[aria-sort]")).to_have_attribute("aria-sort", "ascending")
    photograph(page, screenshot, "inventory-02-keys")
    page.get_by_label("Search").fill("bo@example.test")
    page.get_by_role("button", name="Apply").click()
    owners = rows.locator("td:nth-child(3)").all_inner_texts()
    assert owners and all("bo@example.test" in o or "Bo Builder" in o for o in owners)
    expect(page.locator("[data-keys-count]")).to_contain_text(f"of {len(every)} keys")
    photograph(page, screenshot, "inventory-02-keys-searched")

    # A key: its details, history, findings and rows.
    page.locator("tr[data-key-row] a.strong", has_text="Staging").click()
    expect(page.get_by_role("heading", name="Staging", level=1)).to_be_visible()
    expect(page.locator("[data-owner-active]")).to_have_text("no")
    expect(page.locator("#history [data-event=listed]")).to_have_count(1)
    expect(page.locator("#rows tr[data-row]").first).to_be_visible()
    finding = page.locator("#findings li.finding[data-kind=owner_gone]")
    expect(finding).to_have_count(1)
    photograph(page, screenshot, "inventory-03-key")

    # Acknowledging: a note, the form's own token, back to the same page, the note kept.
    finding.get_by_text("Acknowledge…").click()
    finding.get_by_label("Note").fill("Bo moved teams; Staging is revoked on Monday")
    finding.get_by_role("button", name="Acknowledge").click()
    expect(page.locator(".alert-info")).to_have_text("Acknowledged. The note is kept with the finding.")
    assert page.url.startswith(url + staging_url(client))
    acknowledged = page.locator("#findings li.finding[data-kind=owner_gone] [data-acknowledged]")
    expect(acknowledged).to_contain_text("Bo moved teams; Staging is revoked on Monday")
    expect(page.locator("#findings li.finding[data-kind=owner_gone] details.ack")).to_have_count(0)
    photograph(page, screenshot, "inventory-04-acknowledged")

    page.get_by_role("link", name="Overview").click()
    expect(page.locator("#findings [data-kind=owner_gone] [data-acknowledged]")).to_be_visible()
    page.get_by_role("link", name="Findings", exact=True).click()
    expect(page.locator("li.finding")).to_have_count(len(client.get("/api/v1/findings").json()))
    photograph(page, screenshot, "inventory-05-findings")


def test_the_new_pages_keep_the_keyboard_and_contrast_rules_in_light_and_dark(
    chromium: Any, page: Page, two_vendor_portal: LivePortal, client: httpx.Client, screenshot: Shot
) -> None:
    url = two_vendor_portal.url
    key_page = staging_url(client)
    page.goto(url + "/")
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    page.keyboard.press("Tab")
    ring = page.evaluate(
        "(C) => { const el = document.activeElement, s = getComputedStyle(el); return [el.textContent.trim(),"
        " s.outlineStyle, parseFloat(s.outlineWidth),"
        " C.ratio(C.rgb(s.outlineColor), C.background(el.parentElement))]; }",
        page.evaluate_handle(CONTRAST_JS),
    )
    assert ring[1] != "none" and ring[2] >= 2 and ring[3] >= 3, f"focus ring {ring}"
    # The acknowledge form opens from the keyboard alone.
    summary = page.locator("#findings details.ack summary").first
    summary.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#findings details.ack").first.get_by_label("Note")).to_be_visible()

    for path in (*PAGES, key_page):
        page.goto(url + path)
        page.locator("details").evaluate_all("els => els.forEach(e => e.open = true)")
        assert text_contrast_failures(page) == [], path

    context = chromium.new_context(viewport=DESKTOP, color_scheme="dark")
    try:
        dark = context.new_page()
        for path, name in (("/", "overview"), ("/keys", "keys"), (key_page, "key"), ("/findings", "findings")):
            dark.goto(url + path)
            background = dark.evaluate("(C) => C.lum(C.background(document.body))", dark.evaluate_handle(CONTRAST_JS))
            assert background < 0.05, "a dark page"
            dark.locator("details").evaluate_all("els => els.forEach(e => e.open = true)")
            assert text_contrast_failures(dark) == [], path
            photograph(dark, screenshot, f"inventory-06-dark-{name}")
    finally:
        context.close()


def test_at_390_px_the_nav_the_sorting_and_the_acknowledge_form_are_within_reach(
    page: Page, two_vendor_portal: LivePortal, client: httpx.Client, screenshot: Shot
) -> None:
    url = two_vendor_portal.url
    page.set_viewport_size(PHONE)
    page.goto(url + "/")
    links = page.locator("nav.nav a")
    expect(links).to_have_count(6)
    for i in range(links.count()):
        assert_reachable(page, links.nth(i))
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], "nothing widens the page"
    summary = page.locator("#findings details.ack summary").first
    assert_reachable(page, summary)
    summary.click()
    assert_reachable(page, page.locator("#findings details.ack[open] button").first)

    page.goto(url + "/keys")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    sorts = page.locator("table.keys th a.sort")
    for i in range(sorts.count()):
        assert_reachable(page, sorts.nth(i))
    assert_reachable(page, page.get_by_role("button", name="Apply"))

    page.goto(url + staging_url(client))
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert_reachable(page, page.locator("#findings details.ack summary").first)
    page.set_viewport_size(DESKTOP)
    photograph(page, screenshot, "inventory-07-key-phone")
