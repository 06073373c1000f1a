"""The Anthropic connector's key listing, and the simulator's control plane driving each shadow-IT scenario over HTTP.

``list_keys`` reads ``/organizations/api_keys`` once per status (the listing shows active keys only unless asked),
with who created each key and its workspace. Anthropic gives no ``last_used_at`` and no owner's access: idle keys
come from usage, and there is no owner-gone scenario to drive. The scenarios are driven through ``/_sim`` as an
end-to-end test in another process would, then read back through the real connector over loopback.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import jsonschema
import pytest

from connector_sdk.errors import CredentialError, ResponseError
from connector_sdk.models import SyncContext, SyncWindow, UsageRow, floor_hour
from connectors.anthropic.connector import SETUP_HINT, AnthropicConnector
from connectors.anthropic.mapping import DEFAULT_WORKSPACE_NAME, KEYS_LISTING, USER_KEY_LABEL
from connectors.anthropic.simulator import HAIKU, AnthropicSimulator, Fault
from tests.inventory_helpers import by_name, control, described

from .conftest import NOW, ORG
from .test_simulator import API_KEY, USAGE_RESULT, every_page, listing, report

Make = Callable[[str], AnthropicConnector]
HOUR = timedelta(hours=1)
RECENT = SyncWindow(start=floor_hour(NOW) - 6 * HOUR, end=floor_hour(NOW) + HOUR)


def key_id(sim: AnthropicSimulator, name: str) -> str:
    return next(key["id"] for key in described(sim)["api_keys"] if key["name"] == name)


def workspace_id(sim: AnthropicSimulator, name: str) -> str:
    return next(w["id"] for w in described(sim)["workspaces"] if w["name"] == name)


def rows(sim: AnthropicSimulator, connector: AnthropicConnector, window: SyncWindow = RECENT) -> list[UsageRow]:
    context = SyncContext(connector="anthropic", connection="an", account=ORG, synced_at=sim.now)
    return [row for page in connector.sync(window, context) for row in page.rows]


# -- what list_keys returns ------------------------------------------------------------------------------------
def test_keys_of_every_status_come_with_creator_workspace_and_creation(
    sim: AnthropicSimulator, make_connector: Make, admin_key: str
) -> None:
    keys = by_name(make_connector(admin_key).list_keys())

    statuses = {name: key.status for name, key in keys.items()}
    assert statuses == {
        "Production backend": "active",
        "Batch summarizer": "active",
        "Research notebook": "inactive",
        "Old prototype": "archived",
        "CI smoke tests": "expired",
    }  # the deleted key is in no listing
    backend = keys["Production backend"]
    assert (backend.scope, backend.owner_type, backend.listing) == ("api", "user", KEYS_LISTING)
    assert backend.owner is not None and backend.owner.startswith("user_01")
    assert (backend.workspace_id, backend.workspace_name) == (workspace_id(sim, "Production"), "Production")
    assert (keys["CI smoke tests"].workspace_id, keys["CI smoke tests"].workspace_name) == (
        None,
        DEFAULT_WORKSPACE_NAME,
    )
    assert keys["Old prototype"].workspace_name == "Old experiments"  # an archived workspace is still named
    assert all(key.last_used_at is None and key.owner_active is None for key in keys.values())  # Anthropic says neither
    assert all(key.created_at is not None and key.created_at < NOW for key in keys.values())


def test_every_status_is_asked_for_and_every_page_followed(
    sim: AnthropicSimulator, make_connector: Make, admin_key: str
) -> None:
    for n in range(3):  # five active keys: three pages of two
        sim.issue_key(ORG, scope="workspace", name=f"Extra {n}")
    keys = make_connector(admin_key).list_keys()

    assert len(keys) == len({key.key_id for key in keys}) == 8
    reads = [entry["query"] for entry in sim.requests if entry["path"] == "/v1/organizations/api_keys"]
    assert [query["status"][0] for query in reads] == ["active"] * 3 + ["inactive", "archived", "expired"]
    assert [("after_id" in query) for query in reads[:3]] == [False, True, True]


@pytest.mark.parametrize(
    ("item", "complaint"),
    [
        ({"name": "No id", "created_at": "2026-01-01T00:00:00Z", "status": "active"}, "field 'id'"),
        ({"id": "apikey_x", "name": "When", "created_at": "noon", "status": "active"}, "created_at"),
        ({"id": "apikey_x", "name": "Naive", "created_at": "2026-01-01T00:00:00", "status": "active"}, "UTC offset"),
        ({"id": "apikey_x", "name": "Who", "created_by": "someone", "status": "active"}, ".created_by"),
        ({"id": "apikey_x", "name": "Who", "created_by": {"id": 7, "type": "user"}}, "field 'id'"),
        ({"id": "apikey_x", "name": "Status", "status": 1}, "field 'status'"),
        ({"id": "apikey_x", "name": "Where", "workspace_id": 3}, "field 'workspace_id'"),
    ],
)
def test_a_malformed_key_is_a_response_error_naming_the_listing_item_and_field(
    sim: AnthropicSimulator, make_connector: Make, admin_key: str, item: dict[str, Any], complaint: str
) -> None:
    body = {"data": [item], "has_more": False, "first_id": None, "last_id": None}
    sim.inject(Fault(path="/organizations/api_keys", status=200, body=json.dumps(body).encode()))
    with pytest.raises(ResponseError) as error:
        make_connector(admin_key).list_keys()
    assert str(error.value).startswith(f"{KEYS_LISTING}?status=active item 0") and complaint in str(error.value)


def test_a_refused_listing_is_a_credential_error_with_the_usual_advice(
    sim: AnthropicSimulator, make_connector: Make, admin_key: str
) -> None:
    workspace_key = sim.issue_key(ORG, scope="workspace")
    with pytest.raises(CredentialError) as scoped:
        make_connector(workspace_key).list_keys()
    assert (scoped.value.kind, scoped.value.status) == ("insufficient_scope", 403)
    assert SETUP_HINT in str(scoped.value) and workspace_key not in str(scoped.value)

    sim.inject(Fault(path="/organizations/api_keys", status=401, after=2))  # in the middle of the statuses
    with pytest.raises(CredentialError) as revoked:
        make_connector(admin_key).list_keys()
    assert (revoked.value.kind, revoked.value.status) == ("invalid", 401) and SETUP_HINT in str(revoked.value)


# -- each scenario, driven through the control plane -----------------------------------------------------------
def test_a_key_deleted_while_it_keeps_spending_leaves_the_listing_but_not_the_usage(
    sim: AnthropicSimulator, make_connector: Make, admin_key: str
) -> None:
    backend = key_id(sim, "Production backend")
    assert control(sim, "POST", "/traffic", account=ORG, key_id=backend, since=NOW.isoformat()).status_code == 201
    assert control(sim, "DELETE", f"/keys/{backend}").status_code == 200
    sim.now = NOW + 3 * HOUR
    connector = make_connector(admin_key)

    assert backend not in {key.key_id for key in connector.list_keys()}
    found = rows(sim, connector, SyncWindow(start=floor_hour(NOW) + HOUR, end=floor_hour(sim.now)))
    used = [row for row in found if row.api_key_id == backend]
    assert len({row.period_start for row in used}) == 2
    assert {(row.api_key_label, row.workspace_name) for row in used} == {(backend, "Production")}
    assert control(sim, "DELETE", f"/keys/{backend}").status_code == 404  # gone already


def test_a_new_key_is_listed_with_its_creator_and_its_use_shows_in_the_rows(
    sim: AnthropicSimulator, make_connector: Make, admin_key: str
) -> None:
    research = workspace_id(sim, "Research")
    control(
        sim,
        "POST",
        "/keys",
        account=ORG,
        scope="workspace",
        name="Side project",
        workspace_id=research,
        created_by="user_01carol",
    )
    connector = make_connector(admin_key)

    new = by_name(connector.list_keys())["Side project"]
    assert (new.owner, new.workspace_name, new.status, new.created_at) == ("user_01carol", "Research", "active", NOW)
    assert not [row for row in rows(sim, connector) if row.api_key_id == new.key_id]

    control(sim, "POST", "/traffic", account=ORG, key_id=new.key_id, model=HAIKU)
    sim.now = NOW + 2 * HOUR
    found = rows(sim, connector, SyncWindow(start=RECENT.start, end=floor_hour(sim.now) + HOUR))
    used = [row for row in found if row.api_key_id == new.key_id]
    assert min(row.period_start for row in used) == floor_hour(NOW) + HOUR  # from its first whole hour
    assert {(row.api_key_label, row.model, row.workspace_name) for row in used} == {("Side project", HAIKU, "Research")}


def test_an_idle_key_is_listed_with_no_usage(sim: AnthropicSimulator, make_connector: Make, admin_key: str) -> None:
    made = NOW - timedelta(days=60)
    control(sim, "POST", "/keys", account=ORG, scope="workspace", name="Forgotten", created_at=made.isoformat())
    batch = key_id(sim, "Batch summarizer")
    stopped = control(sim, "POST", "/traffic/stop", account=ORG, key_id=batch, at=(NOW - timedelta(days=2)).isoformat())
    assert len(stopped.json()["stopped"]) == 2  # both of its models
    connector = make_connector(admin_key)

    keys = by_name(connector.list_keys())
    assert keys["Forgotten"].created_at == made and keys["Batch summarizer"].status == "active"
    found = rows(sim, connector, SyncWindow(start=floor_hour(NOW) - timedelta(days=3), end=RECENT.end))
    batch_hours = [row.period_start for row in found if row.api_key_id == batch]
    assert batch_hours and max(batch_hours) < NOW - timedelta(days=2)
    assert not [row for row in found if row.api_key_id == keys["Forgotten"].key_id]


def test_a_key_deactivated_or_renamed_shows_as_such(
    sim: AnthropicSimulator, make_connector: Make, admin_key: str
) -> None:
    backend = key_id(sim, "Production backend")
    changed = control(sim, "PATCH", f"/keys/{backend}", status="inactive", name="Backend (paused)")
    assert changed.json() == {"key_id": backend, "name": "Backend (paused)", "status": "inactive"}

    key = by_name(make_connector(admin_key).list_keys())["Backend (paused)"]

    assert (key.key_id, key.status) == (backend, "inactive")


def test_workbench_use_names_no_key_and_no_person(
    sim: AnthropicSimulator, make_connector: Make, admin_key: str
) -> None:
    old = workspace_id(sim, "Old experiments")
    control(sim, "POST", "/traffic", account=ORG, workspace_id=old, since=RECENT.start.isoformat())

    found = rows(sim, make_connector(admin_key))

    workbench = [row for row in found if row.api_key_id is None and row.workspace_name == "Old experiments"]
    assert {row.period_start for row in workbench} == {RECENT.start + n * HOUR for n in range(7)}
    assert all(row.api_key_label == USER_KEY_LABEL and row.login_username is None for row in workbench)


def test_the_scenario_control_plane_says_what_it_cannot_do(sim: AnthropicSimulator, admin_key: str) -> None:
    backend = key_id(sim, "Production backend")
    assert control(sim, "POST", "/traffic", account=ORG, model="claude-unknown").status_code == 400
    assert control(sim, "POST", "/traffic", account=ORG, workspace_id="wrkspc_none").status_code == 404
    assert control(sim, "POST", "/traffic", account="Nobody").status_code == 404
    assert control(sim, "POST", "/traffic", account=ORG, scale=0).status_code == 400
    assert control(sim, "POST", "/traffic/stop", account=ORG, key_id="apikey_none").status_code == 404
    assert control(sim, "POST", "/traffic/stop", account=ORG).status_code == 400  # whose?
    assert control(sim, "PATCH", f"/keys/{backend}", status="deleted").status_code == 400
    assert control(sim, "PATCH", "/keys/apikey_none", name="x").status_code == 404
    assert control(sim, "POST", "/keys", account=ORG, scope="workspace", workspace_id="wrkspc_none").status_code == 404


def test_what_the_scenarios_serve_keeps_anthropics_shapes(sim: AnthropicSimulator, admin_key: str) -> None:
    sim.issue_key(ORG, scope="workspace", name="Default one", workspace_id="default", created_by="user_01dan")
    sim.update_key(key_id(sim, "Batch summarizer"), status="archived")
    sim.add_traffic(ORG, key_id=key_id(sim, "Default one"), since=RECENT.start)
    sim.add_traffic(ORG, key_id="apikey_shadow", since=RECENT.start)
    sim.stop_traffic(ORG, key_id=key_id(sim, "Production backend"), at=NOW - 2 * HOUR)

    for status in ("active", "inactive", "archived", "expired"):
        for page in every_page(sim, admin_key, "/organizations/api_keys", "after_id", status=status):
            jsonschema.validate(page, listing(API_KEY))
    params = {
        "starting_at": RECENT.start.isoformat(),
        "bucket_width": "1h",
        "group_by[]": ["api_key_id", "workspace_id"],
    }
    pages = every_page(sim, admin_key, "/organizations/usage_report/messages", "page", **params)
    for page in pages:
        jsonschema.validate(page, report(USAGE_RESULT))
    keys = {result["api_key_id"] for page in pages for bucket in page["data"] for result in bucket["results"]}
    assert {"apikey_shadow", key_id(sim, "Default one")} <= keys
