"""The rough edges a walk through the portal found, each checked in headless Chromium at desktop and phone widths:
paging, reachability at 390 px, banners, the chart, sorting and search, the refresh during a sync, accessibility
and the dark colour scheme. Every test photographs what it checked into test-artifacts/portal/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect

from connector_sdk.portal.pages import PER_PAGE
from connectors.fal.simulator import FalSimulator, Fault
from tests.conftest import TEAM
from tests.portal.conftest import LivePortal, Shot, wait_for_sync

pytestmark = pytest.mark.browser

DESKTOP = {"width": 1360, "height": 900}
PHONE = {"width": 390, "height": 844}

# WCAG 2 contrast of computed colours, and the background actually behind an element (the first opaque one up).
CONTRAST_JS = """
(() => {
  const rgb = (text) => (text.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const c = [r, g, b].map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  };
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  const background = (el) => {
    for (let node = el; node; node = node.parentElement) {
      const parts = rgb(getComputedStyle(node).backgroundColor);
      if (parts.length === 3 || (parts.length === 4 && parts[3] > 0.5)) return parts.slice(0, 3);
    }
    return [255, 255, 255];
  };
  return { rgb, lum, ratio, background };
})()
"""

TEXT_CONTRAST_JS = (
    """
(root) => {
  const C = """
    + CONTRAST_JS
    + """;
  const failures = [];
  for (const el of root.querySelectorAll("body *")) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || !el.checkVisibility() || el.closest(".sr-only, .skip-link")) continue;
    const style = getComputedStyle(el);
    if (style.visibility === "hidden" || style.opacity === "0") continue;
    const svgText = el instanceof SVGElement;
    const color = C.rgb(svgText ? style.fill : style.color).slice(0, 3);
    const size = parseFloat(style.fontSize), bold = Number(style.fontWeight) >= 700;
    const needed = size >= 24 || (size >= 18.66 && bold) ? 3 : 4.5;
    const got = C.ratio(color, C.background(svgText ? el.closest("svg") : el));
    if (got < needed) {
      const name = `${el.tagName.toLowerCase()}.${el.className.baseVal ?? el.className}`;
      failures.push(`${name} "${el.textContent.trim().slice(0, 30)}" ${got.toFixed(2)}:1`);
    }
  }
  return failures;
}
"""
)

# Whether an element can be reached by a person: clipped only by containers that scroll (overflow auto or scroll),
# never cut off by one that hides what overflows.
REACHABLE_JS = """
(el) => {
  let box = el.getBoundingClientRect();
  for (let node = el.parentElement; node && node !== document.body; node = node.parentElement) {
    const style = getComputedStyle(node), area = node.getBoundingClientRect();
    if (style.overflowX === "auto" || style.overflowX === "scroll") { box = area; continue; }
    const clips = style.overflowX === "hidden" || style.overflowX === "clip";
    if (clips && (box.right > area.right + 1 || box.left < area.left - 1)) {
      return `cut off by ${node.tagName.toLowerCase()}.${node.className}`;
    }
  }
  return "";
}
"""


def at_both_widths(page: Page, screenshot: Shot, name: str) -> None:
    """Photograph the page as it is at desktop width and at 390 px (the viewport is left at desktop width)."""
    for label, size in (("desktop", DESKTOP), ("390px", PHONE)):
        page.set_viewport_size(size)
        screenshot(page, f"{name}-{label}")
    page.set_viewport_size(DESKTOP)


def create(api: httpx.Client, sim: FalSimulator, key: str, name: str, days: int = 3) -> None:
    config = {"api_key": key, "base_url": sim.base_url, "backfill_days": days}
    created = api.post("/api/v1/connections", json={"connector": "fal", "name": name, "config": config})
    assert created.status_code == 201, created.text
    assert wait_for_sync(api, created.json()["sync"]["status_url"])["outcome"] == "succeeded"


@pytest.fixture
def synced(api: httpx.Client, sim: FalSimulator, admin_key: str) -> str:
    create(api, sim, admin_key, "fal-prod", days=12)
    return "fal-prod"


def dashboard(portal: LivePortal, name: str = "fal-prod", query: str = "") -> str:
    return f"{portal.url}/connections/{name}{query}"


def text_contrast_failures(page: Page) -> list[str]:
    failures: list[str] = page.evaluate(TEXT_CONTRAST_JS, page.locator("body").element_handle())
    return failures


def test_paging_past_the_last_page_shows_the_last_page(
    page: Page, portal: LivePortal, synced: str, screenshot: Shot
) -> None:
    page.goto(dashboard(portal, query="?page=999999#rows"))
    total = int(page.locator("[data-rows-total]").get_attribute("data-rows-total") or 0)
    pages = -(-total // PER_PAGE)
    assert pages > 1
    expect(page.locator(".pager")).to_contain_text(f"Page {pages} of {pages}")
    first = (pages - 1) * PER_PAGE + 1
    expect(page.locator("[data-rows-total]")).to_have_text(f"Rows {first:,}\u2013{total:,} of {total:,}")
    expect(page.locator("tr[data-row]")).to_have_count(total - first + 1)
    expect(page.get_by_role("link", name="Previous")).to_be_visible()
    at_both_widths(page, screenshot, "walk-01-past-the-last-page")


def assert_reachable(page: Page, target: Locator) -> None:
    """A person at this width can reach it: nothing hides it, and scrolled into view it takes the click."""
    handle = target.element_handle()
    assert handle is not None
    name = target.inner_text().strip()
    assert page.evaluate(REACHABLE_JS, handle) == "", f"{name!r} cannot be reached"
    target.scroll_into_view_if_needed()
    box = target.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"] + 0.5, name
    target.click(trial=True)


def test_at_390_px_every_action_is_reachable(
    page: Page, portal: LivePortal, api: httpx.Client, sim: FalSimulator, admin_key: str, synced: str, screenshot: Shot
) -> None:
    # Three states side by side: connected, reconnect required, disconnected.
    second = sim.issue_key(TEAM, alias="Second")
    create(api, sim, second, "fal-staging", days=1)
    sim.revoke_key(second)
    assert api.post("/api/v1/connections/fal-staging/sync").status_code == 202
    portal.wait_for_syncs()
    create(api, sim, sim.issue_key(TEAM, alias="Third"), "fal-old", days=1)
    assert api.post("/api/v1/connections/fal-old/disconnect", json={}).status_code == 200

    page.set_viewport_size(PHONE)
    page.goto(portal.url + "/connections")
    actions = page.locator("td.actions .btn")
    assert actions.count() >= 7
    for i in range(actions.count()):
        assert_reachable(page, actions.nth(i))
    page.reload()
    at_both_widths(page, screenshot, "walk-02-connections")

    page.set_viewport_size(PHONE)
    page.goto(dashboard(portal))
    for target in (
        page.locator(".head-actions .btn"),
        page.locator("#spend-by-key [data-cost]"),
        page.locator("table.rows th a.sort"),
        page.locator(".pager a"),
        page.get_by_role("link", name="Download CSV"),
    ):
        for i in range(target.count()):
            assert_reachable(page, target.nth(i))
    at_both_widths(page, screenshot, "walk-02-dashboard")


def test_the_first_sync_notice_goes_once_that_sync_has_finished(
    page: Page, portal: LivePortal, sim: FalSimulator, admin_key: str, screenshot: Shot
) -> None:
    page.goto(portal.url + "/connect/fal")
    page.get_by_label("Connection name").fill("fal-prod")
    page.get_by_label("API key").fill(admin_key)
    page.get_by_text("Advanced settings").click()
    page.get_by_label("Base URL").fill(sim.base_url)
    page.get_by_label("Backfill days").fill("2")
    page.get_by_role("button", name="Connect", exact=True).click()
    expect(page.locator("h1 .badge")).to_have_text("Connected", timeout=30_000)
    portal.wait_for_syncs()
    page.reload()
    assert "notice=connected" in page.url
    expect(page.locator(".alert-info")).to_have_text("Connected.")
    expect(page.get_by_text("first sync runs now")).to_have_count(0)
    at_both_widths(page, screenshot, "walk-03-after-the-first-sync")


def test_an_error_about_an_advanced_setting_keeps_advanced_settings_open(
    page: Page, portal: LivePortal, sim: FalSimulator, admin_key: str, screenshot: Shot
) -> None:
    page.goto(portal.url + "/connect/fal")
    page.get_by_label("Connection name").fill("fal-prod")
    page.get_by_label("API key").fill(admin_key)
    page.get_by_text("Advanced settings").click()
    page.get_by_label("Base URL").fill("ftp://fal.example/v1")
    page.get_by_role("button", name="Connect", exact=True).click()
    expect(page.locator("[data-field-error=base_url]")).to_be_visible()
    expect(page.locator("details.advanced")).to_have_attribute("open", "")
    at_both_widths(page, screenshot, "walk-04-advanced-error")

    # The vendor refuses the key that was sent to the Base URL typed under Advanced: both stay in view.
    page.get_by_label("API key").fill("unknown:key")
    page.get_by_label("Base URL").fill(sim.base_url)
    page.get_by_role("button", name="Connect", exact=True).click()
    expect(page.locator("[data-form-error]")).to_contain_text("did not accept the key")
    expect(page.locator("details.advanced")).to_have_attribute("open", "")
    expect(page.get_by_label("Base URL")).to_have_value(sim.base_url)


@pytest.fixture
def failing(monkeypatch: pytest.MonkeyPatch, sim: FalSimulator) -> Iterator[None]:
    """fal answers 500 to every usage request; the host gives up after two quick attempts."""
    monkeypatch.setenv("CONNECTOR_HOST_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("CONNECTOR_HOST_BACKOFF_BASE", "0.01")
    sim.inject(Fault(path="/models/usage", status=500, times=1000))
    yield
    sim.clear_faults()


def test_a_failed_sync_reads_as_a_failure_once_with_the_last_success_beside_it(
    page: Page, portal: LivePortal, api: httpx.Client, sim: FalSimulator, synced: str, screenshot: Shot, failing: None
) -> None:
    sim.now += timedelta(hours=2)
    status = api.post("/api/v1/connections/fal-prod/sync").json()["status_url"]
    assert wait_for_sync(api, status)["outcome"] != "succeeded"
    assert api.get("/api/v1/connections/fal-prod").json()["state"] == "error"

    page.goto(dashboard(portal))
    banner = page.locator("[data-sync-failed]")
    expect(banner).to_be_visible()
    words = banner.inner_text()
    assert words.lower().count("try again") + words.lower().count("retries") == 1, words
    meta = page.locator(".meta .last-sync")
    expect(meta.locator("[data-last-sync]")).to_have_attribute("data-last-sync", "failed")
    expect(meta).to_contain_text("Failed")
    expect(meta.locator("[data-last-success]")).to_contain_text("last success 2 h ago")
    at_both_widths(page, screenshot, "walk-05-failed-sync-dashboard")

    page.goto(portal.url + "/connections")
    cell = page.locator("tr[data-connection=fal-prod] .last-sync")
    expect(cell).to_contain_text("Failed just now")
    expect(cell).to_contain_text("last success 2 h ago")
    at_both_widths(page, screenshot, "walk-05-failed-sync-connections")


def axis_top(page: Page) -> Decimal:
    labels = page.locator("svg.chart text.axis[text-anchor=end]").all_text_contents()
    return max(Decimal(re.sub(r"[^\d.]", "", t)) * (1000 if t.endswith("k") else 1) for t in labels)


def test_the_chart_scales_to_its_tallest_day_keeps_colours_and_a_day_click_leads_to_its_rows(
    page: Page, portal: LivePortal, api: httpx.Client, synced: str, screenshot: Shot
) -> None:
    legends = {}
    for days in (7, 30, 90):
        page.goto(dashboard(portal, query=f"?days={days}"))
        daily = api.get("/api/v1/connections/fal-prod/daily", params={"days": days}).json()
        tallest = max(sum(Decimal(s["costs"][i]) for s in daily["series"]) for i in range(len(daily["days"])))
        top = axis_top(page)
        assert tallest <= top <= tallest * Decimal("1.25"), f"{days} days: axis to {top} for a {tallest} day"
        items = page.locator(".legend li")
        legends[days] = {
            items.nth(i).inner_text().strip(): items.nth(i).locator("rect").get_attribute("fill")
            for i in range(items.count())
        }
    assert legends[7] and all(legends[d].items() <= legends[90].items() for d in (7, 30))

    page.goto(dashboard(portal, query="?days=7"))
    # Yesterday: a whole day of usage.
    page.locator("svg.chart a").nth(-2).click()
    expect(page).to_have_url(re.compile(r"day=\d{4}-\d\d-\d\d.*#rows$"))
    expect(page.locator("[data-filter-note]")).to_contain_text("the filters apply to the usage rows")
    day = re.search(r"day=([\d-]+)", page.url).group(1)  # type: ignore[union-attr]
    hours = page.locator("tr[data-row] td:first-child").all_inner_texts()
    assert hours and all(h.startswith(day) for h in hours)
    at_both_widths(page, screenshot, "walk-06-chart-day")


def test_rows_come_newest_first_sort_by_column_and_a_search_finds_a_key_or_model(
    page: Page, portal: LivePortal, synced: str, screenshot: Shot
) -> None:
    page.goto(dashboard(portal))
    hours = page.locator("tr[data-row] td:first-child").all_inner_texts()
    assert hours == sorted(hours, reverse=True) and hours[0] > hours[-1]
    expect(page.locator("th[aria-sort]")).to_have_attribute("aria-sort", "descending")

    page.locator("a.sort[data-sort=cost]").click()
    costs = [
        Decimal(c)
        for c in page.locator("tr[data-row] td:last-child").evaluate_all("els => els.map(e => e.title.split(' ')[0])")
    ]
    assert costs == sorted(costs, reverse=True)
    page.locator("a.sort[data-sort=cost]").click()
    costs = [
        Decimal(c)
        for c in page.locator("tr[data-row] td:last-child").evaluate_all("els => els.map(e => e.title.split(' ')[0])")
    ]
    assert costs == sorted(costs)
    page.locator("a.sort[data-sort=model]").click()
    models = page.locator("tr[data-row] td:nth-child(3)").all_inner_texts()
    assert models == sorted(models)
    page.locator("a.sort[data-sort=key]").click()
    keys = [k.split(" (")[0] for k in page.locator("tr[data-row] td:nth-child(2)").all_inner_texts()]
    assert keys == sorted(keys)

    model = page.locator("select[name=model] option").nth(1).inner_text()
    page.get_by_label("Search").fill(model.upper())
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("select[name=model]")).to_have_value(model)
    shown = set(page.locator("tr[data-row] td:nth-child(3)").all_inner_texts())
    assert shown == {model}
    page.get_by_label("Search").fill("staging")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("select[name=key]")).to_have_value("Staging Key")
    at_both_widths(page, screenshot, "walk-07-rows-sorted-and-searched")


def test_the_refresh_during_a_sync_never_interrupts_a_person_using_a_form(
    page: Page, portal: LivePortal, synced: str, screenshot: Shot
) -> None:
    store = portal.host.store
    assert store.acquire_lease("fal-prod", "a-sync-elsewhere", now=portal.host.now(), ttl_seconds=3600)
    try:
        page.clock.install()
        page.goto(dashboard(portal))
        expect(page.locator("h1 .badge")).to_have_text("Syncing")
        page.evaluate("window.stillHere = true")
        with page.expect_event("load"):
            page.clock.run_for(10_000)
        assert page.evaluate("window.stillHere") is None, "an untouched page refreshes while the sync runs"

        page.evaluate("window.stillHere = true")
        page.get_by_label("Search").click()
        page.keyboard.type("Produc")
        page.clock.run_for(30_000)
        assert page.evaluate("window.stillHere") is True, "the page reloaded under the person typing"
        expect(page.get_by_label("Search")).to_have_value("Produc")
        at_both_widths(page, screenshot, "walk-08-typing-during-a-sync")
    finally:
        store.release_lease("fal-prod", "a-sync-elsewhere")


def test_keyboard_and_eyes_focus_ring_skip_link_one_stop_chart_and_readable_text(
    page: Page, portal: LivePortal, synced: str, screenshot: Shot
) -> None:
    page.goto(dashboard(portal))
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    box = skip.bounding_box()
    assert box is not None and box["y"] >= 0, "the skip link shows when it has focus"
    ring = page.evaluate(
        "(C) => { const el = document.activeElement, s = getComputedStyle(el); return [s.outlineStyle,"
        " parseFloat(s.outlineWidth), C.ratio(C.rgb(s.outlineColor), C.background(el.parentElement))]; }",
        page.evaluate_handle(CONTRAST_JS),
    )
    assert ring[0] != "none" and ring[1] >= 2 and ring[2] >= 3, f"focus ring {ring}"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "content"

    chart_card = page.locator("section.card", has=page.locator("svg.chart"))
    stops = chart_card.evaluate(
        "c => [...c.querySelectorAll('a, button, summary, [tabindex]')]"
        ".filter(e => e.tabIndex >= 0 && e.checkVisibility()).length"
    )
    assert stops == 2, "the chart is one tab stop, and its table's disclosure the other"
    page.locator("svg.chart").focus()
    page.keyboard.press("Tab")
    expect(page.locator("details.chart-values summary")).to_be_focused()
    page.keyboard.press("Enter")
    days = page.locator("svg.chart a").count()
    expect(page.locator("details.chart-values tbody tr")).to_have_count(days)

    for url in (dashboard(portal), portal.url + "/connections", portal.url + "/catalog", portal.url + "/api"):
        page.goto(url)
        page.locator("details.chart-values").evaluate_all("els => els.forEach(e => e.open = true)")
        assert text_contrast_failures(page) == [], url
    at_both_widths(page, screenshot, "walk-09-light")


def test_the_dark_colour_scheme_is_honoured_and_readable(
    chromium: Any, portal: LivePortal, synced: str, screenshot: Shot
) -> None:
    context = chromium.new_context(viewport=DESKTOP, color_scheme="dark")
    try:
        page = context.new_page()
        for path, name in (
            ("/connections/fal-prod", "dashboard"),
            ("/connections", "connections"),
            ("/catalog", "catalog"),
        ):
            page.goto(portal.url + path)
            background = page.evaluate("(C) => C.lum(C.background(document.body))", page.evaluate_handle(CONTRAST_JS))
            assert background < 0.05, "a dark page"
            assert text_contrast_failures(page) == [], path
            at_both_widths(page, screenshot, f"walk-10-dark-{name}")
    finally:
        context.close()
