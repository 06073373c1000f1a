"""The REST API over real HTTP, as a script would use it, against the fal simulator."""

from __future__ import annotations

import secrets
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from connector_sdk.models import decimal_text
from connectors.fal.simulator import FalSimulator
from tests.conftest import TEAM
from tests.helpers import stored_rows, truth_rows
from tests.portal.conftest import LivePortal, wait_for_sync


def create(api: httpx.Client, sim: FalSimulator, key: str, name: str = "fal-prod", **config: Any) -> httpx.Response:
    body = {"connector": "fal", "name": name, "config": {"api_key": key, "base_url": sim.base_url, "backfill_days": 2}}
    body["config"].update(config)
    return api.post("/api/v1/connections", json=body)


@pytest.fixture
def synced(api: httpx.Client, sim: FalSimulator, admin_key: str) -> str:
    created = create(api, sim, admin_key)
    assert created.status_code == 201, created.text
    assert wait_for_sync(api, created.json()["sync"]["status_url"])["outcome"] == "succeeded"
    return "fal-prod"


def test_the_catalog_is_the_connectors_manifests(api: httpx.Client) -> None:
    (fal,) = api.get("/api/v1/connectors").json()
    assert fal["id"] == "fal" and fal["authentication"]["required_scope"] == "Admin"
    assert fal["limitations"] and fal["authentication"]["setup_steps"] and fal["data_collected"]
    assert fal["config_schema"]["properties"]["api_key"]["writeOnly"] is True
    assert api.get("/api/v1/connectors/fal").json() == fal
    assert api.get("/api/v1/connectors/nope").status_code == 404


def test_creating_a_connection_stores_it_without_its_key_and_starts_the_first_sync_at_once(
    api: httpx.Client, portal: LivePortal, sim: FalSimulator, admin_key: str
) -> None:
    created = create(api, sim, admin_key)
    assert created.status_code == 201
    assert created.headers["location"] == "/api/v1/connections/fal-prod"
    body = created.json()
    assert body["connection"]["account"] == TEAM
    assert "api_key" not in body["connection"]["config"]
    assert admin_key not in created.text
    job = wait_for_sync(api, body["sync"]["status_url"])
    assert job["outcome"] == "succeeded" and job["rows_written"] > 0
    listed = api.get("/api/v1/connections").json()
    assert [c["name"] for c in listed] == ["fal-prod"] and listed[0]["state"] == "connected"
    assert listed[0]["last_success"] is not None and listed[0]["next_sync"] is not None


def test_a_bad_key_and_a_non_admin_key_are_refused_with_fals_advice_and_nothing_is_stored(
    api: httpx.Client, portal: LivePortal, sim: FalSimulator, admin_key: str
) -> None:
    bad = create(api, sim, "bad:key")
    assert bad.status_code == 422
    assert "rejected the API key" in bad.json()["error"]["fields"]["api_key"]
    narrow = create(api, sim, sim.issue_key(TEAM, scope="API"))
    assert narrow.status_code == 422
    assert "not Admin-scoped" in narrow.json()["error"]["message"]
    assert "set Scope to Admin" in narrow.json()["error"]["fields"]["api_key"]
    assert portal.host.store.list_connections() == []


def test_an_invalid_configuration_is_refused_field_by_field_before_fal_is_asked(
    api: httpx.Client, sim: FalSimulator, admin_key: str
) -> None:
    asked = len(sim.requests)
    response = create(api, sim, "no-colon", name="bad name", backfill_days=0, colour="blue")
    assert response.status_code == 422
    fields = response.json()["error"]["fields"]
    assert set(fields) >= {"name", "api_key", "backfill_days"}
    assert "colour" in response.json()["error"]["message"]
    assert len(sim.requests) == asked
    assert create(api, sim, admin_key, base_url="http://fal.example/v1").json()["error"]["fields"]["base_url"]


def test_a_name_in_use_is_refused_with_409_as_documented(
    api: httpx.Client, portal: LivePortal, sim: FalSimulator, admin_key: str, synced: str
) -> None:
    again = create(api, sim, admin_key)
    assert again.status_code == 409 and "already exists" in again.json()["error"]["fields"]["name"]
    documented = portal.app.openapi()["paths"]["/api/v1/connections"]["post"]["responses"]
    assert "409" in documented and "name is taken" in documented["409"]["description"]


def test_a_sync_answers_202_at_once_with_the_url_of_its_status(
    api: httpx.Client, portal: LivePortal, sim: FalSimulator, synced: str
) -> None:
    started = api.post("/api/v1/connections/fal-prod/sync")
    assert started.status_code == 202
    assert started.headers["location"] == started.json()["status_url"]
    job = wait_for_sync(api, started.json()["status_url"])
    assert job["outcome"] == "succeeded" and job["run_id"]
    runs = api.get("/api/v1/connections/fal-prod/runs").json()
    assert job["run_id"] in {r["run_id"] for r in runs}
    assert api.get("/api/v1/syncs/unknown").status_code == 404


def test_the_connection_shows_syncing_while_its_sync_runs(
    api: httpx.Client, portal: LivePortal, sim: FalSimulator, synced: str
) -> None:
    from connectors.fal.simulator import Fault

    sim.inject(Fault("/models/usage", action="respond", status=200, delay=1.0))
    started = api.post("/api/v1/connections/fal-prod/sync").json()
    assert api.get("/api/v1/connections/fal-prod").json()["state_label"] == "Syncing"
    assert api.post("/api/v1/connections/fal-prod/sync").json()["id"] == started["id"]
    wait_for_sync(api, started["status_url"])
    assert api.get("/api/v1/connections/fal-prod").json()["state"] == "connected"


def test_rows_are_paged_and_filtered_by_period_key_label_and_model(
    api: httpx.Client, portal: LivePortal, synced: str
) -> None:
    everything = list(portal.host.store.iter_rows("fal-prod"))
    first = api.get("/api/v1/connections/fal-prod/rows", params={"per_page": 7}).json()
    assert first["total"] == len(everything) and len(first["rows"]) == 7
    assert [r["row_id"] for r in first["rows"]] == [r.row_id for r in everything[:7]]
    second = api.get(first["next"]).json()
    assert [r["row_id"] for r in second["rows"]] == [r.row_id for r in everything[7:14]]

    model = everything[0].model
    hour = everything[-1].period_start
    params = {"key_label": "User key", "model": model, "since": (hour - timedelta(hours=12)).isoformat()}
    filtered = api.get("/api/v1/connections/fal-prod/rows", params=params | {"per_page": 1000}).json()
    expected = [
        r
        for r in everything
        if r.api_key_label == "User key" and r.model == model and r.period_start >= hour - timedelta(hours=12)
    ]
    assert [r["row_id"] for r in filtered["rows"]] == [r.row_id for r in expected]
    assert all(r["cost"] == decimal_text(Decimal(r["cost"])) for r in filtered["rows"])
    bad = api.get("/api/v1/connections/fal-prod/rows", params={"since": "last tuesday"})
    assert bad.status_code == 422 and "ISO 8601" in bad.json()["error"]["message"]


def test_the_report_and_the_daily_series_match_the_simulators_truth_user_key_included(
    api: httpx.Client, portal: LivePortal, sim: FalSimulator, synced: str
) -> None:
    truth = truth_rows(sim.truth(TEAM, sim.now - timedelta(days=2), sim.now + timedelta(hours=1)))
    assert stored_rows(portal.host.store.iter_rows("fal-prod")) == truth
    total = sum((cost for _, cost in truth.values()), Decimal(0))
    report = api.get("/api/v1/connections/fal-prod/report", params={"days": 7}).json()
    assert Decimal(report["totals"]["USD"]) == total
    assert "User key" in {line["api_key_label"] for line in report["lines"]}
    assert all(line["active_models"] == len(line["models"]) for line in report["lines"])
    daily = api.get("/api/v1/connections/fal-prod/daily", params={"days": 7}).json()
    assert len(daily["days"]) in (7, 8)
    assert sum(Decimal(c) for s in daily["series"] for c in s["costs"]) == total
    assert api.get("/api/v1/report").json()["totals"] == report["totals"]
    csv_text = api.get("/api/v1/connections/fal-prod/rows.csv").text
    assert csv_text.startswith("row_id,") and len(csv_text.splitlines()) == len(truth) + 1
    user_key = api.get("/api/v1/connections/fal-prod/rows.csv", params={"key_label": "User key"}).text
    listed = api.get("/api/v1/connections/fal-prod/rows", params={"key_label": "User key", "per_page": 1000}).json()
    assert 0 < listed["total"] == len(user_key.splitlines()) - 1 < len(truth)


def test_reconnect_checks_the_new_key_then_a_sync_fills_the_gap(
    api: httpx.Client, portal: LivePortal, sim: FalSimulator, admin_key: str, synced: str
) -> None:
    start = sim.now
    sim.revoke_key(admin_key)
    sim.now = start + timedelta(hours=4)
    refused = wait_for_sync(api, api.post("/api/v1/connections/fal-prod/sync").json()["status_url"])
    assert refused["outcome"] == "reconnect_required"
    status = api.get("/api/v1/connections/fal-prod").json()
    assert status["state_label"] == "Reconnect required" and "revoked" in status["reason"]
    blocked = api.post("/api/v1/connections/fal-prod/sync")
    assert blocked.status_code == 409 and "needs a new key" in blocked.json()["error"]["message"]

    wrong = api.post("/api/v1/connections/fal-prod/reconnect", json={"api_key": "still:wrong"})
    assert wrong.status_code == 422 and "api_key" in wrong.json()["error"]["fields"]
    not_secret = api.post("/api/v1/connections/fal-prod/reconnect", json={"backfill_days": "3"})
    assert not_secret.status_code == 422 and set(not_secret.json()["error"]["fields"]) == {"backfill_days", "api_key"}
    new_key = sim.issue_key(TEAM)
    resumed = api.post("/api/v1/connections/fal-prod/reconnect", json={"api_key": new_key})
    assert resumed.status_code == 200 and new_key not in resumed.text
    assert wait_for_sync(api, resumed.json()["sync"]["status_url"])["outcome"] == "succeeded"
    truth = truth_rows(sim.truth(TEAM, start - timedelta(days=2), sim.now + timedelta(hours=1)))
    assert any(key[0] >= start for key in truth)
    assert stored_rows(portal.host.store.iter_rows("fal-prod")) == truth


def test_disconnect_keeps_the_rows_and_purge_deletes_everything(
    api: httpx.Client, portal: LivePortal, synced: str
) -> None:
    rows = portal.host.store.count_rows("fal-prod")
    kept = api.post("/api/v1/connections/fal-prod/disconnect").json()
    assert kept == {"name": "fal-prod", "purged": False, "rows_deleted": 0, "rows_kept": rows}
    assert api.get("/api/v1/connections/fal-prod").json()["state"] == "disconnected"
    assert portal.host.store.get_credential("fal-prod") is None
    assert api.post("/api/v1/connections/fal-prod/sync").status_code == 409
    purged = api.post("/api/v1/connections/fal-prod/disconnect", json={"purge": True}).json()
    assert purged["rows_deleted"] == rows
    assert api.get("/api/v1/connections/fal-prod").status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "status", "words"),
    [
        ("GET", "/api/v1/connections/nope", 404, "no connection named 'nope'"),
        ("GET", "/api/v1/connections/a%00b", 404, "no connection named"),
        ("GET", "/api/v1/connections/nope/rows", 404, "no connection named 'nope'"),
        ("GET", "/api/v1/connections/nope/daily", 404, "no connection named 'nope'"),
        ("GET", "/api/v1/nothing-here", 404, "nothing at this address"),
        ("DELETE", "/api/v1/connections", 405, "does not accept that method"),
        ("GET", "/api/v1/connections/x/rows?page=0", 422, "page"),
        ("POST", "/api/v1/connections", 422, "body"),
    ],
)
def test_errors_are_json_with_a_message_a_person_understands(
    api: httpx.Client, method: str, path: str, status: int, words: str
) -> None:
    response = api.request(method, path)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["status"] == status and words in error["message"]


def test_no_response_log_or_page_ever_contains_a_key(
    api: httpx.Client, portal: LivePortal, sim: FalSimulator, admin_key: str, capfd: pytest.CaptureFixture[str]
) -> None:
    random_key = f"{secrets.token_hex(8)}:{secrets.token_hex(24)}"
    bodies = [create(api, sim, random_key, name="random").text]
    created = create(api, sim, admin_key)
    bodies.append(created.text)
    wait_for_sync(api, created.json()["sync"]["status_url"])
    for path in (
        "/api/v1/connections",
        "/api/v1/connections/fal-prod",
        "/api/v1/connections/fal-prod/rows",
        "/api/v1/connections/fal-prod/report",
        "/connections",
        "/connections/fal-prod",
        "/connections/fal-prod/reconnect",
        "/catalog",
        "/api/openapi.json",
    ):
        bodies.append(api.get(path).text)
    bodies.append(api.post("/api/v1/connections/fal-prod/reconnect", json={"api_key": random_key}).text)
    portal.wait_for_syncs()
    out, err = capfd.readouterr()
    for key in (random_key, admin_key):
        for part in (key, key.partition(":")[2]):
            assert not any(part in body for body in bodies)
            assert part not in out and part not in err
