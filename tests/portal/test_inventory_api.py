"""The overview, the key inventory and the findings through the REST API, over real HTTP, against the fal and the
OpenAI simulators: the figures agree with the spend report and with the rows, and acknowledging a finding is a
write like any other (a note, the admin token, never from another site)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from connector_sdk.sync import sync_now
from connectors.fal.simulator import FalSimulator
from connectors.openai.simulator import OpenAISimulator
from tests.conftest import TEAM
from tests.portal.conftest import ADMIN_TOKEN, LivePortal, wait_for_sync

ORG = "Acme Research"
DAYS = 14


def connect(client: httpx.Client, connector: str, name: str, config: dict[str, Any]) -> None:
    created = client.post("/api/v1/connections", json={"connector": connector, "name": name, "config": config})
    assert created.status_code == 201, created.text
    assert wait_for_sync(client, created.json()["sync"]["status_url"])["outcome"] == "succeeded"


@pytest.fixture
def client(
    two_vendor_portal: LivePortal, sim: FalSimulator, openai_sim: OpenAISimulator, admin_key: str
) -> Iterator[httpx.Client]:
    """Two vendors connected and synced over 14 days: fal's team and OpenAI's organization."""
    with httpx.Client(base_url=two_vendor_portal.url, timeout=60, follow_redirects=False) as client:
        connect(client, "fal", "fal-prod", {"api_key": admin_key, "base_url": sim.base_url, "backfill_days": DAYS})
        openai_key = openai_sim.add_organization(ORG)
        config = {"api_key": openai_key, "base_url": openai_sim.base_url, "backfill_days": DAYS}
        connect(client, "openai", "openai-prod", config)
        yield client


def money(text: str | None) -> Decimal:
    return Decimal(text or "0")


def report_totals(client: httpx.Client, days: int, name: str | None = None) -> dict[str, Decimal]:
    path = f"/api/v1/connections/{name}/report" if name else "/api/v1/report"
    return {c: Decimal(v) for c, v in client.get(path, params={"days": days}).json()["totals"].items()}


def sums(lines: list[dict[str, Any]], field: str = "cost") -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for line in lines:
        out[line["currency"]] = out.get(line["currency"], Decimal(0)) + Decimal(line[field])
    return out


def every_key(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/api/v1/keys", params=params)
    assert response.status_code == 200, response.text
    keys: list[dict[str, Any]] = response.json()
    return keys


def named(keys: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(k for k in keys if k["name"] == name)


def findings(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/api/v1/findings", params=params)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    return found


# -- the overview --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("days", [3, 7])
def test_the_overviews_totals_equal_the_sum_of_the_connections_reports_across_two_vendors(
    client: httpx.Client, days: int
) -> None:
    overview = client.get("/api/v1/overview", params={"days": days}).json()
    fal, openai = report_totals(client, days, "fal-prod"), report_totals(client, days, "openai-prod")
    assert fal and openai, "both vendors spent in the period"
    every = {c: fal.get(c, Decimal(0)) + openai.get(c, Decimal(0)) for c in {*fal, *openai}}
    assert sums(overview["totals"]) == every == report_totals(client, days)
    # Each breakdown is the same money cut another way.
    for breakdown in ("by_vendor", "by_key", "by_model"):
        assert sums(overview[breakdown]) == every, breakdown
    vendors = {line["key"]: line for line in overview["by_vendor"]}
    assert sums([vendors["fal"]]) == fal and sums([vendors["openai"]]) == openai
    # The period before: what the report over both periods holds beyond the report over this one.
    both = report_totals(client, 2 * days)
    before = {c: v - every.get(c, Decimal(0)) for c, v in both.items()}
    assert sums(overview["totals"], "previous_cost") == before
    for line in overview["totals"]:
        assert money(line["change"]) == money(line["cost"]) - money(line["previous_cost"])
        if money(line["previous_cost"]):
            expected = money(line["change"]) * 100 / money(line["previous_cost"])
            assert abs(money(line["change_percent"]) - expected) <= Decimal("0.05")
    assert overview["connections"] == ["fal-prod", "openai-prod"]


def test_the_overview_page_shows_the_apis_figures_and_the_open_findings_first(client: httpx.Client) -> None:
    overview = client.get("/api/v1/overview").json()
    page = client.get("/")
    assert page.status_code == 200 and "<h1>Overview</h1>" in page.text
    for line in overview["totals"]:
        assert f'data-total="{line["cost"]}" data-currency="{line["currency"]}"' in page.text
    for line in overview["by_vendor"]:
        assert f'data-cost="{line["cost"]}"' in page.text
    assert overview["open_findings"], "OpenAI's organization has a deleted key that spends and an owner gone"
    findings_at = page.text.index('id="findings"')
    assert findings_at < page.text.index('id="by-vendor"'), "the findings come before the breakdowns"
    for finding in overview["open_findings"]:
        assert f'data-finding="{finding["id"]}"' in page.text
    ranks = [["info", "low", "medium", "high"].index(f["severity"]) for f in overview["open_findings"]]
    assert ranks == sorted(ranks, reverse=True), "highest severity first"
    # A key's line leads to the key's page.
    line = next(line for line in overview["by_key"] if line["links"])
    assert f'href="{line["links"]["page"]}"' in page.text
    assert client.get(line["links"]["key"]).status_code == 200


# -- the key inventory ---------------------------------------------------------------------------------------------
def test_the_inventory_lists_every_vendors_keys_with_owner_scope_state_and_spend(
    client: httpx.Client, two_vendor_portal: LivePortal
) -> None:
    keys = every_key(client)
    by_vendor = {k["connector"] for k in keys}
    assert by_vendor == {"fal", "openai"}
    staging = named(keys, "Staging")
    assert staging["owner_active"] is False and staging["owner_email"] == "bo@example.test"
    assert staging["scope"] == "project" and staging["state"] == "active"
    # OpenAI's deleted "Notebook key" and fal's "Old Pipeline Key": no listing names them, their bills do.
    (notebook,) = [k for k in keys if k["state"] == "unlisted" and k["connector"] == "openai"]
    assert (notebook["listed"], notebook["first_listed_at"], notebook["owner"]) == (False, None, None)
    assert notebook["state_label"] == "Never listed"
    assert money(notebook["spend_30d"]) > 0, "a key no listing names, yet billed"
    assert notebook["open_findings"] >= 1
    spends = [money(k["spend_30d"]) for k in keys]
    assert spends == sorted(spends, reverse=True), "highest 30-day spend first by default"
    stored = {(r.connection, r.key_id): r for r in two_vendor_portal.host.keys(None)}
    for key in keys:
        record = stored[(key["connection"], key["key_id"])]
        assert (money(key["spend_7d"]), money(key["spend_30d"])) == (record.spend_7d, record.spend_30d)


def test_the_inventory_sorts_by_any_column_both_ways_and_finds_by_any_word(client: httpx.Client) -> None:
    names = [k["name"] or k["key_id"] for k in every_key(client, sort="name")]
    assert [n.casefold() for n in names] == sorted(n.casefold() for n in names)
    assert [k["name"] or k["key_id"] for k in every_key(client, sort="-name")] == names[::-1]
    used = [k["last_used"] for k in every_key(client, sort="-last_used") if k["last_used"]]
    assert used == sorted(used, reverse=True)
    weekly = [money(k["spend_7d"]) for k in every_key(client, sort="spend_7d")]
    assert weekly == sorted(weekly)

    bos = every_key(client, q="BO@EXAMPLE")
    assert bos and all(k["owner_email"] == "bo@example.test" for k in bos)
    assert {k["connector"] for k in every_key(client, vendor="openai")} == {"openai"}
    assert {k["connection"] for k in every_key(client, connection="fal-prod")} == {"fal-prod"}
    (unlisted,) = findings(client, kind="unlisted_key_spend", connection="openai-prod")
    assert [k["key_id"] for k in every_key(client, state="unlisted", vendor="openai")] == [unlisted["subject"]]
    assert every_key(client, q="no key is called this") == []
    assert client.get("/api/v1/keys", params={"sort": "colour"}).status_code == 422
    assert client.get("/api/v1/keys", params={"connection": "nope"}).status_code == 404


def test_a_keys_detail_has_its_daily_spend_its_rows_its_history_and_its_findings(client: httpx.Client) -> None:
    production = named(every_key(client, vendor="openai"), "Production")
    detail = client.get(production["links"]["self"], params={"days": DAYS}).json()
    assert detail["key"] == production | {"open_findings": detail["key"]["open_findings"]}
    assert [e["event"] for e in detail["history"]] == ["listed"]
    assert len(detail["daily"]["days"]) == len(detail["daily"]["costs"]) >= DAYS

    # The daily figures are the key's rows added up: read them all, page by page.
    rows, url = [], production["links"]["rows"] + f"?days={DAYS}&per_page=50"
    while url:
        body = client.get(url).json()
        rows += body["rows"]
        url = body["next"]
    assert rows and {r["api_key_id"] for r in rows} == {production["key_id"]}
    assert len({r["row_id"] for r in rows}) == len(rows) == body["total"]
    starts = [r["period_start"] for r in rows]
    assert starts == sorted(starts, reverse=True), "newest first"
    billed = sum((money(r["cost"]) for r in rows if r["cost"] is not None), Decimal(0))
    assert sum((money(c) for c in detail["daily"]["costs"]), Decimal(0)) == billed > 0

    staging = named(every_key(client), "Staging")
    about = client.get(staging["links"]["self"]).json()["findings"]
    assert [f["kind"] for f in about if f["open"]] == ["owner_gone"]
    assert about[0]["links"]["key"] == staging["links"]["self"]
    assert client.get(staging["links"]["history"]).json()[0]["event"] == "listed"
    for missing in ("/api/v1/keys/openai-prod/key_nope", "/api/v1/keys/nope/key_x", "/api/v1/keys/nope/key_x/rows"):
        assert client.get(missing).status_code == 404, missing


# -- findings ------------------------------------------------------------------------------------------------------
def test_findings_are_listed_most_severe_first_and_filtered_by_kind_severity_and_connection(
    client: httpx.Client,
) -> None:
    found = findings(client)
    kinds = {f["kind"] for f in found}
    assert {"unlisted_key_spend", "owner_gone"} <= kinds
    ranks = [["info", "low", "medium", "high"].index(f["severity"]) for f in found]
    assert ranks == sorted(ranks, reverse=True)
    unlisted = findings(client, kind="unlisted_key_spend")
    assert {f["connection"] for f in unlisted} == {"fal-prod", "openai-prod"}, "one deleted key spending at each"
    assert "Old Pipeline Key" in [f["subject_label"] for f in unlisted]
    evidence = unlisted[0]["evidence"]
    assert money(evidence["spend_7d"]) > 0 and evidence["currency"] == "USD"
    assert {f["severity"] for f in findings(client, min_severity="high")} == {"high"}
    assert {f["connection"] for f in findings(client, connection="openai-prod")} == {"openai-prod"}
    assert len(findings(client, status="all")) >= len(found)
    one = client.get(f"/api/v1/findings/{unlisted[0]['id']}")
    assert one.json() == unlisted[0]
    for bad in ({"kind": "weird"}, {"status": "some"}, {"min_severity": "urgent"}):
        assert client.get("/api/v1/findings", params=bad).status_code == 422, bad
    for missing in ("/api/v1/findings/987654", f"/api/v1/findings/{2**70}"):
        assert client.get(missing).status_code == 404, missing


def test_acknowledging_keeps_the_note_and_a_finding_whose_condition_holds_stays_open(
    client: httpx.Client,
) -> None:
    (gone,) = findings(client, kind="owner_gone")
    url = gone["links"]["acknowledge"]
    empty = client.post(url, json={"note": ""})
    assert empty.status_code == 422 and "note" in empty.json()["error"]["fields"]
    assert client.post(url, json={"note": "   "}).status_code == 422
    assert client.post(url, json={"note": "ok", "by": "me"}).status_code == 422
    assert client.post("/api/v1/findings/987654/acknowledge", json={"note": "ok"}).status_code == 404

    done = client.post(url, json={"note": "Bo moved teams; revoking Staging on Monday"})
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["ack_note"] == "Bo moved teams; revoking Staging on Monday" and body["acknowledged_at"]
    assert body["open"] is True, "the owner still has no access: the finding stays open, acknowledged"
    still = client.get("/api/v1/overview").json()["open_findings"]
    assert any(f["id"] == gone["id"] and f["ack_note"] for f in still)
    again = client.post(url, json={"note": "Revoked"}).json()
    assert again["ack_note"] == "Revoked"


def test_a_new_key_opens_one_finding_and_acknowledging_it_closes_it(
    client: httpx.Client, two_vendor_portal: LivePortal, sim: FalSimulator, openai_sim: OpenAISimulator
) -> None:
    assert findings(client, kind="new_key") == [], "the first listing is the baseline"
    key = sim.issue_key(TEAM, scope="API", alias="Hackathon key", creator="dana")
    sim.now += timedelta(hours=1)
    openai_sim.now = sim.now
    sync_now(two_vendor_portal.host, "fal-prod")
    (new,) = findings(client, kind="new_key")
    assert new["subject"] == key.partition(":")[0] and new["subject_label"] == "Hackathon key"
    assert new["evidence"]["owner"] == "dana" and new["evidence"]["scope"] == "api"
    sync_now(two_vendor_portal.host, "fal-prod")
    assert len(findings(client, kind="new_key")) == 1, "the same condition never opens twice"
    closed = client.post(new["links"]["acknowledge"], json={"note": "Dana's hackathon, approved"}).json()
    assert closed["open"] is False and closed["resolved_at"] is not None
    assert findings(client, kind="new_key") == []
    assert [f["ack_note"] for f in findings(client, kind="new_key", status="all")] == ["Dana's hackathon, approved"]


# -- the same rules as every other write ---------------------------------------------------------------------------
def test_acknowledging_from_a_page_needs_the_forms_csrf_token_and_returns_to_the_page(client: httpx.Client) -> None:
    (unlisted,) = findings(client, kind="unlisted_key_spend", connection="openai-prod")
    page = client.get("/")
    action = f'action="/findings/{unlisted["id"]}/acknowledge"'
    assert action in page.text
    token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
    target = f"/findings/{unlisted['id']}/acknowledge"
    refused = client.post(target, data={"note": "fine", "next": "/"})
    assert refused.status_code == 403
    foreign = client.post(target, data={"note": "x", "csrf_token": token}, headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403
    assert client.get(f"/api/v1/findings/{unlisted['id']}").json()["acknowledged_at"] is None
    done = client.post(target, data={"note": "Notebook belongs to research", "next": "/?days=7", "csrf_token": token})
    assert done.status_code == 303
    assert done.headers["location"] == f"/?days=7&notice=acknowledged#finding-{unlisted['id']}"
    assert client.get(f"/api/v1/findings/{unlisted['id']}").json()["ack_note"] == "Notebook belongs to research"
    after = client.get("/?days=7&notice=acknowledged")
    assert "Acknowledged. The note is kept with the finding." in after.text
    assert "Notebook belongs to research" in after.text
    # Only paths on this site: a crafted next= cannot send the admin elsewhere.
    elsewhere = client.post(target, data={"note": "x", "next": "//evil.example/", "csrf_token": token})
    assert elsewhere.headers["location"].startswith("/?notice=acknowledged")


def test_with_an_admin_token_reading_and_acknowledging_findings_need_it(
    secured_portal: LivePortal, sim: FalSimulator, admin_key: str
) -> None:
    host = secured_portal.host
    host.connect("fal", "fal-prod", {"api_key": admin_key, "base_url": sim.base_url, "backfill_days": 2})
    host.connect("fal", "fal-again", {"api_key": admin_key, "base_url": sim.base_url, "backfill_days": 2})
    sync_now(host, "fal-prod")
    sync_now(host, "fal-again")
    bearer = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=secured_portal.url) as anonymous:
        for path in ("/api/v1/overview", "/api/v1/keys", "/api/v1/findings"):
            assert anonymous.get(path).status_code == 401, path
        twice = anonymous.get("/api/v1/findings", params={"kind": "duplicate_account"}, headers=bearer).json()
        (once,) = twice  # one finding for the account, naming both connections
        assert once["evidence"]["connections"] == ["fal-again", "fal-prod"]
        url = once["links"]["acknowledge"]
        every = anonymous.get("/api/v1/findings", headers=bearer).json()
        assert anonymous.post(url, json={"note": "x"}).status_code == 401
        assert anonymous.get("/").headers["location"] == "/login?next=%2F"
        done = anonymous.post(url, json={"note": "fal-again is the test copy"}, headers=bearer)
        assert done.status_code == 200 and done.json()["ack_note"] == "fal-again is the test copy"
    # A person signs in, and acknowledges from the page with the form's token.
    with httpx.Client(base_url=secured_portal.url) as browser:
        login = browser.get("/login").text
        csrf = login.split('name="csrf_token" value="')[1].split('"')[0]
        assert browser.post("/login", data={"token": ADMIN_TOKEN, "csrf_token": csrf}).status_code == 303
        home = browser.get("/").text
        other = next(f["id"] for f in every if f["id"] != once["id"])
        assert f'action="/findings/{other}/acknowledge"' in home
        csrf = home.split('name="csrf_token" value="')[1].split('"')[0]
        posted = browser.post(f"/findings/{other}/acknowledge", data={"note": "same account", "csrf_token": csrf})
        assert posted.status_code == 303
        assert host.store.get_finding(other).ack_note == "same account"
