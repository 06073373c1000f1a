"""The OpenAI connector's key listing, and the simulator's control plane driving each shadow-IT scenario over HTTP.

``list_keys`` reads every project's keys (archived projects' too) and the Admin keys, with their owners and whether
each owner still has access to the key's project. The scenarios are driven through ``/_sim`` as an end-to-end test
in another process would, then read back through the real connector over loopback.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, timedelta
from typing import Any

import pytest

from connector_sdk.errors import CredentialError, ResponseError
from connector_sdk.models import SyncContext, SyncWindow, UsageRow, floor_hour
from connectors.openai.connector import SETUP_HINT, OpenAIConnector
from connectors.openai.mapping import USER_KEY_LABEL
from connectors.openai.simulator import Fault, OpenAISimulator
from tests.inventory_helpers import by_name, control, described

from .conftest import NOW, ORG
from .test_simulator import every_page, operation_schema, validate

Make = Callable[[str], OpenAIConnector]
HOUR = timedelta(hours=1)
RECENT = SyncWindow(start=floor_hour(NOW) - 6 * HOUR, end=floor_hour(NOW) + HOUR)
ADMIN_LISTING = "OpenAI /organization/admin_api_keys"


def key_id(sim: OpenAISimulator, name: str) -> str:
    return next(key["key_id"] for key in described(sim)["keys"] if key["name"] == name)


def project_id(sim: OpenAISimulator, name: str) -> str:
    return next(project["id"] for project in described(sim)["projects"] if project["name"] == name)


def rows(sim: OpenAISimulator, connector: OpenAIConnector, window: SyncWindow = RECENT) -> list[UsageRow]:
    context = SyncContext(connector="openai", connection="oa", account=ORG, synced_at=sim.now)
    return [row for page in connector.sync(window, context) for row in page.rows]


# -- what list_keys returns ------------------------------------------------------------------------------------
def test_project_and_admin_keys_come_with_owner_access_project_and_use(
    sim: OpenAISimulator, make_connector: Make, admin_key: str
) -> None:
    keys = by_name(make_connector(admin_key).list_keys())

    assert set(keys) == {"Production", "Staging", "CI pipeline", "Batch jobs", "Old bot key", "Spend reader"}
    default = project_id(sim, "Default project")
    production = keys["Production"]
    assert (production.scope, production.owner, production.owner_email, production.owner_type) == (
        "project",
        "Ann Owner",
        "ann@example.test",
        "user",
    )
    assert (production.owner_active, production.workspace_id, production.workspace_name) == (
        True,
        default,
        "Default project",
    )
    assert (production.status, production.listing) == ("active", f"OpenAI /organization/projects/{default}/api_keys")
    used = [
        item["period_start"]
        for item in sim.truth(ORG, NOW - timedelta(days=2), NOW)
        if item["api_key_id"] == production.key_id
    ]
    assert production.last_used_at == max(used)
    assert production.created_at is not None and production.created_at.tzinfo == UTC
    assert keys["Staging"].owner_active is False  # its owner lost access to the project
    assert (keys["CI pipeline"].owner, keys["CI pipeline"].owner_type) == ("ci-bot", "service_account")
    assert keys["CI pipeline"].owner_email is None
    assert (keys["Old bot key"].status, keys["Old bot key"].workspace_name) == ("archived", "Legacy bot")
    reader = keys["Spend reader"]
    assert (reader.scope, reader.owner, reader.owner_active, reader.workspace_id, reader.listing) == (
        "admin",
        "Ann Owner",
        None,
        None,
        ADMIN_LISTING,
    )
    # The Admin key that reads the listing was used just now, as OpenAI reports it: the connection's key is not idle.
    assert reader.last_used_at == sim.now.replace(microsecond=0)


def test_every_listing_is_followed_to_its_last_page_and_no_secret_is_returned(
    sim: OpenAISimulator, make_connector: Make, admin_key: str
) -> None:
    for n in range(3):  # five keys in the default project: three pages of two
        sim.issue_key(ORG, scope="project", name=f"Extra {n}")
    keys = make_connector(admin_key).list_keys()

    assert len(keys) == len({key.key_id for key in keys}) == 9
    default = project_id(sim, "Default project")
    pages = [entry for entry in sim.requests if entry["path"] == f"/v1/organization/projects/{default}/api_keys"]
    assert [("after" in entry["query"]) for entry in pages] == [False, True, True]
    assert all(admin_key not in repr(key) + key.model_dump_json() for key in keys)


@pytest.mark.parametrize(
    ("item", "complaint"),
    [
        ({"name": "No id", "created_at": 1}, "field 'id'"),
        ({"id": "key_x", "name": 5, "created_at": 1}, "field 'name'"),
        ({"id": "key_x", "name": "When", "created_at": 1, "last_used_at": "yesterday"}, "last_used_at"),
        ({"id": "key_x", "name": "Expiry", "created_at": 1, "expires_at": True}, "expires_at"),
    ],
)
def test_a_malformed_admin_key_is_a_response_error_naming_the_item_and_field(
    sim: OpenAISimulator, make_connector: Make, admin_key: str, item: dict[str, Any], complaint: str
) -> None:
    body = {"object": "list", "data": [item], "first_id": None, "last_id": None, "has_more": False}
    sim.inject(Fault(path="/organization/admin_api_keys", status=200, body=json.dumps(body).encode()))
    with pytest.raises(ResponseError) as error:
        make_connector(admin_key).list_keys()
    assert str(error.value).startswith(f"{ADMIN_LISTING} item 0") and complaint in str(error.value)


def test_a_malformed_project_key_names_its_project_listing(
    sim: OpenAISimulator, make_connector: Make, admin_key: str
) -> None:
    research = project_id(sim, "Research")
    item = {"id": "key_x", "name": "Access", "created_at": 1, "owner_project_access": ["active"]}
    body = {"object": "list", "data": [item], "first_id": "key_x", "last_id": "key_x", "has_more": False}
    path = f"/organization/projects/{research}/api_keys"
    sim.inject(Fault(path=path, status=200, body=json.dumps(body).encode()))
    with pytest.raises(ResponseError, match=f"OpenAI {path} item 0: field 'owner_project_access'"):
        make_connector(admin_key).list_keys()


def test_a_refused_listing_is_a_credential_error_with_the_usual_advice(
    sim: OpenAISimulator, make_connector: Make, admin_key: str
) -> None:
    project_key = sim.issue_key(ORG, scope="project")
    with pytest.raises(CredentialError) as scoped:
        make_connector(project_key).list_keys()
    assert (scoped.value.kind, scoped.value.status) == ("insufficient_scope", 403)
    assert SETUP_HINT in str(scoped.value) and project_key not in str(scoped.value)

    sim.inject(Fault(path="/organization/admin_api_keys", status=401))
    with pytest.raises(CredentialError) as revoked:
        make_connector(admin_key).list_keys()
    assert (revoked.value.kind, revoked.value.status) == ("invalid", 401) and SETUP_HINT in str(revoked.value)


# -- each scenario, driven through the control plane -----------------------------------------------------------
def test_a_key_deleted_while_it_keeps_spending_leaves_the_listings_but_not_the_usage(
    sim: OpenAISimulator, make_connector: Make, admin_key: str
) -> None:
    production = key_id(sim, "Production")
    assert control(sim, "POST", "/traffic", account=ORG, key_id=production, since=NOW.isoformat()).status_code == 201
    assert control(sim, "DELETE", f"/keys/{production}").status_code == 200
    sim.now = NOW + 3 * HOUR
    connector = make_connector(admin_key)

    assert production not in {key.key_id for key in connector.list_keys()}
    found = rows(sim, connector, SyncWindow(start=floor_hour(NOW) + HOUR, end=floor_hour(sim.now)))
    used = [row for row in found if row.api_key_id == production and row.kind == "usage"]
    assert len({row.period_start for row in used}) == 2  # every hour since, by the steady traffic at least
    assert {row.api_key_label for row in used} == {production}  # no listing names it now: its id is its label


def test_a_new_key_is_listed_with_its_owner_and_its_use_shows_in_the_rows_and_last_used_at(
    sim: OpenAISimulator, make_connector: Make, admin_key: str
) -> None:
    research = project_id(sim, "Research")
    issued = control(
        sim,
        "POST",
        "/keys",
        account=ORG,
        scope="project",
        name="Side project",
        project_id=research,
        owner_name="Cy Newcomer",
        owner_email="cy@example.test",
    ).json()
    connector = make_connector(admin_key)

    new = by_name(connector.list_keys())["Side project"]
    assert (new.key_id, new.owner, new.owner_email, new.owner_active) == (
        issued["key_id"],
        "Cy Newcomer",
        "cy@example.test",
        True,
    )
    assert (new.workspace_name, new.created_at, new.last_used_at) == ("Research", NOW, None)

    control(sim, "POST", "/traffic", account=ORG, key_id=new.key_id, endpoint="embeddings")
    sim.now = NOW + 2 * HOUR
    assert by_name(connector.list_keys())["Side project"].last_used_at == floor_hour(sim.now)
    found = rows(sim, connector, SyncWindow(start=RECENT.start, end=floor_hour(sim.now) + HOUR))
    used = [row for row in found if row.api_key_id == new.key_id]
    assert used and min(row.period_start for row in used) == floor_hour(NOW) + HOUR  # from its first whole hour
    assert {(row.api_key_label, row.model) for row in used} == {("Side project", "text-embedding-3-small")}


def test_idle_keys_show_an_old_last_use_or_none(sim: OpenAISimulator, make_connector: Make, admin_key: str) -> None:
    made = NOW - timedelta(days=60)
    control(sim, "POST", "/keys", account=ORG, scope="project", name="Forgotten", created_at=made.isoformat())
    stop_at = NOW - timedelta(days=2)
    batch = key_id(sim, "Batch jobs")
    stopped = control(sim, "POST", "/traffic/stop", account=ORG, key_id=batch, at=stop_at.isoformat())
    assert stopped.status_code == 200
    long_ago = NOW - timedelta(days=90)
    control(sim, "PATCH", f"/keys/{key_id(sim, 'CI pipeline')}", last_used_at=long_ago.isoformat())
    before_history = (NOW - timedelta(days=30)).isoformat()
    control(sim, "POST", "/traffic/stop", account=ORG, key_id=key_id(sim, "CI pipeline"), at=before_history)

    keys = by_name(make_connector(admin_key).list_keys())

    assert (keys["Forgotten"].created_at, keys["Forgotten"].last_used_at) == (made, None)
    assert keys["Batch jobs"].last_used_at is not None and keys["Batch jobs"].last_used_at < stop_at
    assert keys["CI pipeline"].last_used_at == long_ago  # before the history the usage reaches


def test_web_ui_use_by_a_named_person_is_in_the_usage_rows_and_lists_no_key(
    sim: OpenAISimulator, make_connector: Make, admin_key: str
) -> None:
    connector = make_connector(admin_key)
    keys_before = connector.list_keys()
    added = control(sim, "POST", "/traffic", account=ORG, user_id="user_carol", since=RECENT.start.isoformat())
    assert added.status_code == 201 and added.json()["api_key_id"] is None

    found = rows(sim, connector)
    carols = [row for row in found if row.login_username == "user_carol"]
    assert {row.period_start for row in carols} == {RECENT.start + n * HOUR for n in range(7)}
    assert all(row.api_key_id is None and row.api_key_label == USER_KEY_LABEL for row in carols)
    assert all(row.kind == "usage" for row in carols)  # OpenAI's costs name no person: only usage does
    # The organization's own Playground use names nobody, and key traffic never carries a person.
    assert any(row.api_key_id is None and row.login_username is None for row in found)
    assert not any(row.api_key_id is not None and row.login_username for row in found)
    assert connector.list_keys() == keys_before


def test_an_owner_losing_and_regaining_access_shows_in_the_listing(
    sim: OpenAISimulator, make_connector: Make, admin_key: str
) -> None:
    production = key_id(sim, "Production")
    connector = make_connector(admin_key)

    lost = control(sim, "PATCH", f"/keys/{production}", owner_project_access="inactive")
    assert lost.json()["owner_project_access"] == "inactive"
    assert by_name(connector.list_keys())["Production"].owner_active is False
    control(sim, "PATCH", f"/keys/{production}", owner_project_access="active")
    assert by_name(connector.list_keys())["Production"].owner_active is True


def test_a_renamed_key_and_an_expired_admin_key_show_as_such(
    sim: OpenAISimulator, make_connector: Make, admin_key: str
) -> None:
    spare = sim.issue_key(ORG, scope="admin", name="Old reader")
    control(sim, "PATCH", f"/keys/{key_id(sim, 'Old reader')}", expires_at=(NOW - HOUR).isoformat())
    control(sim, "PATCH", f"/keys/{key_id(sim, 'Staging')}", name="Staging (old)")

    keys = by_name(make_connector(admin_key).list_keys())

    assert keys["Old reader"].status == "expired" and keys["Spend reader"].status == "active"
    assert keys["Staging (old)"].key_id == key_id(sim, "Staging (old)")
    assert spare not in repr(keys)


def test_the_scenario_control_plane_says_what_it_cannot_do(sim: OpenAISimulator, admin_key: str) -> None:
    reader = key_id(sim, "Spend reader")
    refused = control(sim, "POST", "/traffic", account=ORG, key_id=reader)
    assert refused.status_code == 400 and "Admin key cannot make model requests" in refused.json()["error"]
    assert control(sim, "POST", "/traffic", account=ORG, key_id="key_never_issued").status_code == 400
    assert control(sim, "POST", "/traffic", account=ORG, endpoint="vector_stores").status_code == 400
    assert control(sim, "POST", "/traffic", account=ORG, endpoint="images", model="gpt-4o").status_code == 400
    assert control(sim, "POST", "/traffic", account="Nobody").status_code == 404
    assert control(sim, "POST", "/traffic/stop", account=ORG).status_code == 400
    assert control(sim, "POST", "/traffic/stop", account=ORG, user_id="user_nobody").status_code == 404
    assert control(sim, "PATCH", f"/keys/{reader}", owner_project_access="inactive").status_code == 400
    assert control(sim, "PATCH", f"/keys/{key_id(sim, 'Staging')}", owner_project_access="gone").status_code == 400
    assert control(sim, "PATCH", "/keys/key_unknown", name="x").status_code == 404
    assert control(sim, "POST", "/keys", account=ORG, scope="project", project_id="proj_none").status_code == 404


def test_a_key_no_listing_ever_named_spends_in_the_project_given(
    sim: OpenAISimulator, make_connector: Make, admin_key: str
) -> None:
    research = project_id(sim, "Research")
    control(
        sim, "POST", "/traffic", account=ORG, key_id="key_shadow", project_id=research, since=RECENT.start.isoformat()
    )

    found = rows(sim, make_connector(admin_key))

    shadow = [row for row in found if row.api_key_id == "key_shadow"]
    assert shadow and {(row.api_key_label, row.workspace_name) for row in shadow} == {("key_shadow", "Research")}


def test_what_the_scenarios_serve_stays_valid_against_openais_description(sim: OpenAISimulator, admin_key: str) -> None:
    sim.issue_key(ORG, scope="project", name="Bot", owner_type="service_account", owner_name="deploy-bot")
    sim.issue_key(ORG, scope="admin", name="Second reader", created_at=NOW - timedelta(days=3))
    sim.update_key(key_id(sim, "Second reader"), expires_at=NOW + timedelta(days=30), last_used_at=NOW - HOUR)
    sim.update_key(key_id(sim, "Production"), owner_project_access="inactive")
    sim.add_traffic(ORG, user_id="user_carol", since=RECENT.start)
    sim.add_traffic(ORG, key_id=key_id(sim, "Bot"), endpoint="images")
    sim.stop_traffic(ORG, key_id=key_id(sim, "Staging"), at=NOW - 2 * HOUR)

    for path in ("/organization/projects", "/organization/admin_api_keys"):
        for page in every_page(sim, admin_key, path, "after", include_archived="true"):
            validate(page, operation_schema(path))
    for project in described(sim)["projects"]:
        path = f"/organization/projects/{project['id']}/api_keys"
        for page in every_page(sim, admin_key, path, "after"):
            validate(page, operation_schema(path))
    start = int(RECENT.start.timestamp())
    for endpoint in ("completions", "images"):
        path = f"/organization/usage/{endpoint}"
        group_by = ["api_key_id", "project_id", "model", "user_id"]
        pages = every_page(sim, admin_key, path, "page", start_time=start, bucket_width="1h", group_by=group_by)
        for page in pages:
            validate(page, operation_schema(path))
        users = {result["user_id"] for page in pages for bucket in page["data"] for result in bucket["results"]}
        assert ("user_carol" in users) is (endpoint == "completions")
