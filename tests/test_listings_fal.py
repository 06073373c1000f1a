"""The fal connector's key listing, and the simulator's control plane driving each shadow-IT scenario over HTTP.

``list_keys`` reads ``GET /keys?expand=creator_info`` page by page and adds the connection's own Admin key, which
fal never lists but reports traffic for. Every scenario below is driven through ``/_sim`` the way an end-to-end test
in another process would, and then read back through the real connector over loopback.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import requests

from connector_sdk.errors import CredentialError, ResponseError
from connector_sdk.http import RetryPolicy
from connector_sdk.models import SyncContext, SyncWindow, UsageRow, floor_hour
from connectors.fal.config import FalConfig
from connectors.fal.connector import SETUP_HINT, FalConnector
from connectors.fal.mapping import KEYS_LISTING, OWN_KEY_LISTING, USER_KEY_LABEL
from connectors.fal.simulator import FalSimulator, Fault
from tests.inventory_helpers import control
from tests.test_simulator import SPEC_PATH, assert_valid

TEAM = "shadow-team"
NOW = datetime(2026, 3, 10, 14, 30, tzinfo=UTC)
HOUR = timedelta(hours=1)
# The last six whole hours and the current one: long enough for steady traffic, short enough for pages of two.
RECENT = SyncWindow(start=floor_hour(NOW) - 6 * HOUR, end=floor_hour(NOW) + HOUR)

Make = Callable[[str], FalConnector]


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return json.loads(SPEC_PATH.read_text())


@pytest.fixture
def sim() -> Iterator[FalSimulator]:
    # Two items a page, whatever is asked: the key listing and usage are both followed over many pages.
    with FalSimulator(now=NOW, history_days=10, seed=5, page_size=2, max_page_size=2) as simulator:
        yield simulator


@pytest.fixture
def admin_key(sim: FalSimulator) -> str:
    return sim.add_account(TEAM, n_keys=5, n_models=4)


@pytest.fixture
def make_connector(sim: FalSimulator) -> Iterator[Make]:
    made: list[FalConnector] = []

    def make(key: str) -> FalConnector:
        config = FalConfig(api_key=key, base_url=sim.base_url, timeout_seconds=10)
        made.append(FalConnector(config, retry=RetryPolicy(max_attempts=2, backoff_base=0.0)))
        return made[-1]

    yield make
    for connector in made:
        connector.close()


def rows(sim: FalSimulator, connector: FalConnector, window: SyncWindow = RECENT) -> list[UsageRow]:
    context = SyncContext(connector="fal", connection="fal-listings", account=TEAM, synced_at=sim.now)
    return [row for page in connector.sync(window, context) for row in page.rows]


def spend(found: list[UsageRow], **match: Any) -> Decimal:
    return sum((row.cost for row in found if all(getattr(row, k) == v for k, v in match.items())), Decimal(0))


def listed_by_alias(sim: FalSimulator) -> dict[str, Any]:
    return {key.alias: key for key in sim.keyring.of(TEAM) if key.scope == "API" and not key.revoked}


# -- what list_keys returns ------------------------------------------------------------------------------------
def test_every_listed_key_comes_with_its_alias_scope_creator_and_creation_across_pages(
    sim: FalSimulator, admin_key: str, make_connector: Make
) -> None:
    keys = {key.key_id: key for key in make_connector(admin_key).list_keys()}

    expected = listed_by_alias(sim)
    assert len(expected) == 5
    for alias, record in expected.items():
        key = keys[record.key_id]
        assert (key.name, key.scope, key.status, key.listing) == (alias, "api", "active", KEYS_LISTING)
        assert (key.owner, key.owner_email, key.owner_type) == (
            record.creator,
            f"{record.creator}@{TEAM}.example.com",
            "user",
        )
        assert key.created_at == datetime.fromisoformat(record.created_at.replace("Z", "+00:00"))
        assert key.last_used_at is None and key.owner_active is None  # fal says neither
    reads = [entry for entry in sim.requests if entry["path"] == "/v1/keys"]
    assert len(reads) == 3  # five keys, two a page
    assert all(entry["query"]["expand"] == ["creator_info"] for entry in reads)
    assert [("cursor" in entry["query"]) for entry in reads] == [False, True, True]


def test_after_a_sync_the_listing_is_the_one_the_sync_read_and_keys_is_not_read_again(
    sim: FalSimulator, admin_key: str, make_connector: Make
) -> None:
    connector = make_connector(admin_key)
    synced = rows(sim, connector)
    reads = len([entry for entry in sim.requests if entry["path"] == "/v1/keys"])
    assert reads == 3  # the sync's own read, for the rows' names: five keys, two a page

    listed = connector.list_keys()

    assert len([entry for entry in sim.requests if entry["path"] == "/v1/keys"]) == reads
    named = {row.api_key_id: row.api_key_label for row in synced if row.api_key_id is not None}
    by_id = {key.key_id: key for key in listed}
    assert set(listed_by_alias(sim)) <= {key.name for key in listed}
    assert named and all(by_id[kid].name == label for kid, label in named.items() if kid in by_id)
    # A connector that has not synced reads the listing itself.
    fresh = make_connector(admin_key)
    assert {key.key_id for key in fresh.list_keys()} == set(by_id)
    assert len([entry for entry in sim.requests if entry["path"] == "/v1/keys"]) == reads + 3


def test_the_connections_own_admin_key_is_listed_by_its_id_and_never_by_its_secret(
    admin_key: str, make_connector: Make
) -> None:
    key_id, _, secret = admin_key.partition(":")
    listed = make_connector(admin_key).list_keys()

    [own] = [key for key in listed if key.scope == "admin"]
    assert (own.key_id, own.listing, own.status) == (key_id, OWN_KEY_LISTING, "active")
    assert len(listed) == 6
    everything = "".join(repr(key) + key.model_dump_json() for key in listed)
    assert secret not in everything and admin_key not in everything


def test_an_admin_key_fal_does_list_is_named_once_as_fal_lists_it(
    sim: FalSimulator, admin_key: str, make_connector: Make
) -> None:
    key_id = admin_key.partition(":")[0]
    body = {
        "keys": [{"key_id": key_id, "alias": "Ops admin", "scope": "ADMIN", "created_at": "2026-01-02T03:04:05Z"}],
        "next_cursor": None,
        "has_more": False,
    }
    sim.inject(Fault(path="/keys", status=200, body=json.dumps(body).encode()))

    [own] = make_connector(admin_key).list_keys()

    assert (own.key_id, own.name, own.scope, own.listing) == (key_id, "Ops admin", "admin", KEYS_LISTING)


@pytest.mark.parametrize(
    ("item", "complaint"),
    [
        ({"alias": "No id", "scope": "API", "created_at": "2026-01-02T03:04:05Z"}, "field 'key_id'"),
        ({"key_id": 42, "alias": "Numbered", "scope": "API", "created_at": "2026-01-02T03:04:05Z"}, "field 'key_id'"),
        ({"key_id": "k1", "alias": ["a"], "scope": "API", "created_at": "2026-01-02T03:04:05Z"}, "field 'alias'"),
        ({"key_id": "k1", "alias": "When", "scope": "API", "created_at": "last Tuesday"}, "field 'created_at'"),
        ({"key_id": "k1", "alias": "Naive", "scope": "API", "created_at": "2026-01-02T03:04:05"}, "no UTC offset"),
        ({"key_id": "k1", "alias": "Who", "scope": "API", "creator_email": 7}, "field 'creator_email'"),
        ("k1", "expected a JSON object"),
    ],
)
def test_a_malformed_listing_item_is_a_response_error_naming_the_item_and_field(
    sim: FalSimulator, admin_key: str, make_connector: Make, item: Any, complaint: str
) -> None:
    good = {"key_id": "k0", "alias": "Fine", "scope": "API", "created_at": "2026-01-02T03:04:05Z"}
    body = {"keys": [good, item], "next_cursor": None, "has_more": False}
    sim.inject(Fault(path="/keys", status=200, body=json.dumps(body).encode()))

    with pytest.raises(ResponseError) as error:
        make_connector(admin_key).list_keys()

    assert str(error.value).startswith(f"{KEYS_LISTING} item 1")
    assert complaint in str(error.value)


def test_a_listing_that_is_not_a_list_or_repeats_its_cursor_is_a_response_error(
    sim: FalSimulator, admin_key: str, make_connector: Make
) -> None:
    sim.inject(Fault(path="/keys", status=200, body=b'{"keys": {}, "next_cursor": null, "has_more": false}'))
    with pytest.raises(ResponseError, match="field 'keys' must be a list"):
        make_connector(admin_key).list_keys()
    looping = b'{"keys": [], "next_cursor": "MA==", "has_more": true}'
    sim.inject(Fault(path="/keys", status=200, body=looping, times=2))
    with pytest.raises(ResponseError, match="repeated cursor"):
        make_connector(admin_key).list_keys()


def test_a_refused_listing_is_a_credential_error_with_the_usual_advice(
    sim: FalSimulator, admin_key: str, make_connector: Make
) -> None:
    api_key = sim.issue_key(TEAM, scope="API")
    with pytest.raises(CredentialError) as scoped:
        make_connector(api_key).list_keys()
    assert (scoped.value.kind, scoped.value.status) == ("insufficient_scope", 403)
    assert SETUP_HINT in str(scoped.value) and api_key.partition(":")[2] not in str(scoped.value)

    sim.revoke_key(admin_key)
    with pytest.raises(CredentialError) as revoked:
        make_connector(admin_key).list_keys()
    assert (revoked.value.kind, revoked.value.status) == ("invalid", 401)
    assert "revoked" in str(revoked.value) and SETUP_HINT in str(revoked.value)


def test_a_401_in_the_middle_of_the_listing_stops_it_as_a_credential_error(
    sim: FalSimulator, admin_key: str, make_connector: Make
) -> None:
    sim.inject(Fault(path="/keys", status=401, after=1))
    with pytest.raises(CredentialError) as error:
        make_connector(admin_key).list_keys()
    assert error.value.kind == "invalid"
    assert len([entry for entry in sim.requests if entry["path"] == "/v1/keys"]) == 2


# -- each scenario, driven through the control plane -----------------------------------------------------------
def test_a_key_deleted_while_it_keeps_spending_leaves_the_listing_but_not_the_usage(
    sim: FalSimulator, admin_key: str, make_connector: Make
) -> None:
    staging = listed_by_alias(sim)["Staging Key"]
    assert control(sim, "POST", "/traffic", account=TEAM, key_id=staging.key_id).status_code == 201
    assert control(sim, "DELETE", f"/keys/{staging.key_id}").status_code == 200
    sim.now = NOW + 3 * HOUR
    connector = make_connector(admin_key)

    assert staging.key_id not in {key.key_id for key in connector.list_keys()}
    after = SyncWindow(start=floor_hour(NOW) + HOUR, end=floor_hour(sim.now))
    found = rows(sim, connector, after)
    assert spend(found, api_key_id=staging.key_id) > 0  # still billed after it left the listing
    assert {row.api_key_label for row in found if row.api_key_id == staging.key_id} == {"Staging Key"}


def test_a_new_key_is_listed_with_its_creator_and_its_traffic_carries_its_id(
    sim: FalSimulator, admin_key: str, make_connector: Make
) -> None:
    connector = make_connector(admin_key)
    before = {key.key_id for key in connector.list_keys()}
    issued = control(sim, "POST", "/keys", account=TEAM, scope="API", alias="Notebook", creator="carol").json()

    [new] = [key for key in connector.list_keys() if key.key_id not in before]
    assert (new.key_id, new.name, new.owner, new.owner_email) == (
        issued["key_id"],
        "Notebook",
        "carol",
        f"carol@{TEAM}.example.com",
    )
    assert new.created_at == NOW
    assert spend(rows(sim, connector), api_key_id=new.key_id) == 0  # a new key carries no traffic of its own

    traffic = control(sim, "POST", "/traffic", account=TEAM, key_id=new.key_id)
    assert traffic.json()["since"] == NOW.isoformat()  # from the key's creation
    sim.now = NOW + 2 * HOUR
    found = rows(sim, connector, SyncWindow(start=RECENT.start, end=floor_hour(sim.now) + HOUR))
    used = {row.period_start for row in found if row.api_key_id == new.key_id and row.cost}
    assert used and min(used) >= floor_hour(NOW)
    assert {row.api_key_label for row in found if row.api_key_id == new.key_id} == {"Notebook"}


def test_a_key_made_long_ago_and_never_used_is_listed_with_no_usage(
    sim: FalSimulator, admin_key: str, make_connector: Make
) -> None:
    made = NOW - timedelta(days=60)
    issued = control(sim, "POST", "/keys", account=TEAM, scope="API", alias="Forgotten", created_at=made.isoformat())
    key_id = issued.json()["key_id"]
    connector = make_connector(admin_key)

    [idle] = [key for key in connector.list_keys() if key.key_id == key_id]
    assert idle.created_at == made and idle.last_used_at is None
    assert spend(rows(sim, connector), api_key_id=key_id) == 0
    served = sim.truth(TEAM, NOW - timedelta(days=10), NOW)  # the whole history, as the API serves it
    assert served and not any(item["auth_method_structured"].get("api_key_id") == key_id for item in served)


def test_stopped_traffic_leaves_a_listed_key_idle_from_then_on(
    sim: FalSimulator, admin_key: str, make_connector: Make
) -> None:
    production = listed_by_alias(sim)["Production Key"]
    stop_at = floor_hour(NOW) - 3 * HOUR
    stopped = control(sim, "POST", "/traffic/stop", account=TEAM, key_id=production.key_id, at=stop_at.isoformat())
    assert stopped.status_code == 200
    assert stopped.json()["stopped"][0]["until"] == stop_at.isoformat()
    connector = make_connector(admin_key)

    found = rows(sim, connector, SyncWindow(start=floor_hour(NOW) - timedelta(days=2), end=floor_hour(NOW) + HOUR))
    used = [row.period_start for row in found if row.api_key_id == production.key_id]
    assert used and max(used) < stop_at  # used before, idle since
    assert production.key_id in {key.key_id for key in connector.list_keys()}  # and still listed


def test_web_ui_traffic_by_a_named_member_is_in_the_rows_and_no_key_is_listed_for_it(
    sim: FalSimulator, admin_key: str, make_connector: Make
) -> None:
    connector = make_connector(admin_key)
    keys_before = connector.list_keys()
    added = control(sim, "POST", "/traffic", account=TEAM, login="carol", scale=3)
    assert added.status_code == 201 and added.json()["login"] == "carol"

    found = rows(sim, connector)
    carols = [row for row in found if row.login_username == "carol"]
    assert carols and all(row.api_key_id is None and row.api_key_label == USER_KEY_LABEL for row in carols)
    assert spend(found, login_username="carol") > 0
    assert connector.list_keys() == keys_before


def test_traffic_of_the_connections_own_admin_key_carries_that_keys_id(
    sim: FalSimulator, admin_key: str, make_connector: Make
) -> None:
    # A fresh Admin key for the connection: the account's first Admin key has traffic from the start.
    connection_key = sim.issue_key(TEAM, scope="ADMIN", alias="Spend reader")
    key_id = connection_key.partition(":")[0]
    connector = make_connector(connection_key)
    assert spend(rows(sim, connector), api_key_id=key_id) == 0

    assert control(sim, "POST", "/traffic", account=TEAM, key_id=key_id, since=RECENT.start.isoformat()).ok
    found = rows(sim, connector)

    assert spend(found, api_key_id=key_id) > 0
    assert {row.api_key_label for row in found if row.api_key_id == key_id} == {"Spend reader"}
    [own] = [key for key in connector.list_keys() if key.key_id == key_id]
    assert own.scope == "admin"


def test_the_account_admin_key_has_traffic_of_its_own_from_the_start(
    sim: FalSimulator, admin_key: str, make_connector: Make
) -> None:
    key_id = admin_key.partition(":")[0]
    found = rows(sim, make_connector(admin_key), SyncWindow(start=floor_hour(NOW) - timedelta(days=2), end=RECENT.end))
    assert spend(found, api_key_id=key_id) > 0
    assert control(sim, "GET", "").json()["accounts"][0]["admin_key_id"] == key_id


def test_a_renamed_key_is_listed_and_labelled_by_its_new_alias(
    sim: FalSimulator, admin_key: str, make_connector: Make
) -> None:
    production = listed_by_alias(sim)["Production Key"]
    renamed = control(sim, "PATCH", f"/keys/{production.key_id}", alias="Checkout service")
    assert renamed.json() == {"key_id": production.key_id, "alias": "Checkout service"}
    connector = make_connector(admin_key)

    assert {key.name for key in connector.list_keys() if key.key_id == production.key_id} == {"Checkout service"}
    labels = {row.api_key_label for row in rows(sim, connector) if row.api_key_id == production.key_id}
    assert labels == {"Checkout service"}


def test_the_scenario_control_plane_says_what_it_cannot_do(sim: FalSimulator, admin_key: str) -> None:
    assert control(sim, "POST", "/traffic", account=TEAM).status_code == 400  # whose traffic?
    assert control(sim, "POST", "/traffic", account="nobody", login="carol").status_code == 404
    bad_model = control(sim, "POST", "/traffic", account=TEAM, login="carol", models=["fal-ai/unknown"])
    assert bad_model.status_code == 400 and "fal-ai/flux/dev" in bad_model.json()["error"]
    assert control(sim, "POST", "/traffic", account=TEAM, login="carol", activity=2).status_code == 400
    assert control(sim, "POST", "/traffic/stop", account=TEAM, login="nobody-here").status_code == 404
    assert control(sim, "PATCH", "/keys/0000000000000000", alias="x").status_code == 404
    assert control(sim, "PATCH", f"/keys/{admin_key.partition(':')[0]}", alias=" ").status_code == 400
    assert control(sim, "POST", "/keys", account=TEAM, scope="API", created_at="soon").status_code == 400


def test_what_the_scenarios_serve_stays_valid_against_fals_openapi(
    sim: FalSimulator, admin_key: str, spec: dict[str, Any]
) -> None:
    issued = sim.issue_key(TEAM, scope="API", alias="Notebook", creator="carol")
    sim.add_traffic(TEAM, key_id=issued.partition(":")[0], since=RECENT.start)
    sim.add_traffic(TEAM, login="carol")
    sim.add_traffic(TEAM, key_id="feedfacecafebeef", label="Never listed")
    sim.stop_traffic(TEAM, login="alice", at=NOW - 2 * HOUR)
    sim.update_key(listed_by_alias(sim)["Key 3"].key_id, alias="Renamed")
    headers = {"Authorization": f"Key {admin_key}"}

    keys = requests.get(f"{sim.base_url}/keys", params={"expand": "creator_info", "limit": 50}, headers=headers)
    assert keys.status_code == 200
    assert_valid(spec, keys, "/keys")
    query = {
        "start": RECENT.start.isoformat(),
        "end": RECENT.end.isoformat(),
        "timeframe": "hour",
        "expand": "time_series,auth_method,auth_method_structured",
        "limit": 2,
    }
    seen: set[str] = set()
    while True:
        usage = requests.get(f"{sim.base_url}/models/usage", params=query, headers=headers, timeout=10)
        assert usage.status_code == 200, usage.text
        assert_valid(spec, usage, "/models/usage")
        page = usage.json()
        seen |= {item["auth_method"] for bucket in page["time_series"] for item in bucket["results"]}
        if page["next_cursor"] is None:
            break
        query["cursor"] = page["next_cursor"]
    assert {"Notebook", "carol", "Never listed"} <= seen
