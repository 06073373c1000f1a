"""The Overview, Keys, key and Findings pages as HTML over real HTTP, against the fal simulator: what each shows,
in what order, what its filters keep, and that nothing a vendor names reaches the page as markup."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest

from connector_sdk.sync import sync_now
from connectors.fal.simulator import FalSimulator
from tests.conftest import TEAM
from tests.portal.conftest import LivePortal, wait_for_sync


@pytest.fixture
def synced(api: httpx.Client, sim: FalSimulator, admin_key: str) -> str:
    config = {"api_key": admin_key, "base_url": sim.base_url, "backfill_days": 8}
    created = api.post("/api/v1/connections", json={"connector": "fal", "name": "fal-prod", "config": config})
    assert created.status_code == 201, created.text
    assert wait_for_sync(api, created.json()["sync"]["status_url"])["outcome"] == "succeeded"
    return "fal-prod"


def attribute(html: str, name: str) -> list[str]:
    return re.findall(rf'{name}="([^"]*)"', html)


def key_rows(html: str) -> list[str]:
    return attribute(html, "data-key-id")


def test_the_keys_page_sorts_by_the_column_asked_for_and_falls_back_to_spend(api: httpx.Client, synced: str) -> None:
    default = api.get("/keys").text
    spend = [Decimal(v) for v in attribute(default, "data-spend-30d")]
    assert len(spend) >= 4 and spend == sorted(spend, reverse=True)
    cheapest = api.get("/keys", params={"sort": "spend_30d"}).text
    assert [Decimal(v) for v in attribute(cheapest, "data-spend-30d")] == sorted(spend)
    assert 'aria-sort="ascending"' in cheapest
    assert key_rows(api.get("/keys", params={"sort": "nonsense"}).text) == key_rows(default)
    # A heading's link keeps the filters and flips the direction of the column already sorted.
    filtered = api.get("/keys", params={"q": "key", "sort": "name"}).text
    assert 'href="/keys?q=key&amp;sort=-name#keys"' in filtered


def test_the_keys_page_finds_by_any_part_of_a_name_or_owner_and_by_state(
    api: httpx.Client, portal: LivePortal, synced: str
) -> None:
    every = portal.host.keys("fal-prod")
    staging = next(k for k in every if k.name == "Staging Key")
    found = api.get("/keys", params={"q": "staging"}).text
    assert key_rows(found) == [staging.key_id]
    assert f"1 of {len(every)} keys match" in found
    by_owner = api.get("/keys", params={"q": (staging.owner_email or "").upper()}).text
    assert staging.key_id in key_rows(by_owner)
    unlisted = api.get("/keys", params={"status": "unlisted"}).text
    assert key_rows(unlisted) == [k.key_id for k in every if not k.listed] != []
    assert "Never listed" in unlisted
    nothing = api.get("/keys", params={"q": "no key is called this"}).text
    assert key_rows(nothing) == [] and "No key matches these filters." in nothing


def test_a_key_page_shows_a_key_no_listing_names_and_an_unknown_key_is_404(
    api: httpx.Client, portal: LivePortal, synced: str
) -> None:
    unlisted = next(k for k in portal.host.keys("fal-prod") if not k.listed)
    page = api.get(f"/keys/fal-prod/{unlisted.key_id}")
    assert page.status_code == 200
    assert "No listing has named this key" in page.text and "Never listed" in page.text
    assert 'data-kind="unlisted_key_spend"' in page.text
    total = Decimal(attribute(page.text, "data-period-total")[0])
    rows = api.get(f"/api/v1/keys/fal-prod/{unlisted.key_id}/rows", params={"per_page": 1000}).json()["rows"]
    assert total == sum((Decimal(r["cost"]) for r in rows if r["cost"]), Decimal(0)) > 0
    missing = api.get("/keys/fal-prod/no-such-key")
    assert missing.status_code == 404 and "has no key &#39;no-such-key&#39;" in missing.text
    assert api.get("/keys/nope/no-such-key").status_code == 404


def test_the_findings_page_filters_by_state_kind_and_connection(
    api: httpx.Client, portal: LivePortal, sim: FalSimulator, synced: str
) -> None:
    opened = api.get("/findings").text
    open_ids = attribute(opened, "data-finding")
    assert len(open_ids) == len(portal.host.findings("fal-prod")) > 0
    web = api.get("/findings", params={"kind": "web_ui_spend"}).text
    assert set(attribute(web, "data-kind")) == {"web_ui_spend"}
    # Acknowledging a new key closes it: it leaves the open list and stays under "all".
    sim.issue_key(TEAM, scope="API", alias="Hackathon key")
    sim.now += timedelta(hours=1)
    sync_now(portal.host, "fal-prod")
    (new,) = portal.host.findings("fal-prod", kind="new_key")
    assert new.id is not None
    portal.host.acknowledge_finding(new.id, "approved")
    assert str(new.id) not in attribute(api.get("/findings").text, "data-finding")
    every = api.get("/findings", params={"status": "all", "kind": "new_key"}).text
    assert attribute(every, "data-finding") == [str(new.id)] and "approved" in every
    assert "data-no-findings" in api.get("/findings", params={"kind": "duplicate_account"}).text
    assert api.get("/findings", params={"connection": "nope"}).status_code == 404


def test_whatever_a_vendor_calls_a_key_reaches_the_pages_as_text(
    api: httpx.Client, portal: LivePortal, sim: FalSimulator, synced: str
) -> None:
    staging = next(k for k in portal.host.keys("fal-prod") if k.name == "Staging Key")
    sim.update_key(staging.key_id, alias='<img src=x onerror="alert(1)">')
    sim.now += timedelta(hours=1)
    sync_now(portal.host, "fal-prod")
    for path in ("/keys", f"/keys/fal-prod/{staging.key_id}", "/findings?status=all", "/"):
        assert "<img src=x" not in api.get(path).text, path
    for path in ("/keys", f"/keys/fal-prod/{staging.key_id}"):
        assert "&lt;img src=x" in api.get(path).text, path
    history = api.get(f"/api/v1/keys/fal-prod/{staging.key_id}/history").json()
    assert [e["event"] for e in history] == ["listed", "renamed"]


def test_the_overview_period_is_kept_between_one_day_and_400(api: httpx.Client, synced: str) -> None:
    week = api.get("/", params={"days": 7}).text
    assert week.count("7 days, against the 7 days before") == 5, "the lead and each of the four breakdowns"
    assert "over the last 400 days" in api.get("/", params={"days": 99999}).text
    assert "over the last 1 day," in api.get("/", params={"days": 0}).text
    assert "over the last 30 days" in api.get("/", params={"days": "many"}).text
