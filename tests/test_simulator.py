"""What the fal simulator promises: fal's documented shapes, exact money, honest paging, and faults on demand.

Every test talks real HTTP to a simulator started on loopback.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from connectors.fal.simulator import FalSimulator, Fault

SPEC_PATH = Path(__file__).resolve().parents[2] / "shared" / "fal" / "openapi.json"
SPEC_URI = "urn:fal:openapi"
NOW = datetime(2025, 1, 15, 13, 25, tzinfo=UTC)
HOUR = timedelta(hours=1)
WINDOW = (datetime(2025, 1, 14, tzinfo=UTC), datetime(2025, 1, 15, 14, tzinfo=UTC))
ALL_EXPANSIONS = "time_series,auth_method,auth_method_structured"
TIMEOUT = 5


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return json.loads(SPEC_PATH.read_text())


@pytest.fixture
def sim() -> Iterator[FalSimulator]:
    with FalSimulator(now=NOW, history_days=10, seed=7) as simulator:
        yield simulator


@pytest.fixture
def admin(sim: FalSimulator) -> str:
    return sim.add_account("acme-team")


def validator(spec: dict[str, Any], path: str, method: str, status: int) -> Draft202012Validator:
    """A validator for one operation's response body, resolving references against the whole document."""
    escaped = path.replace("~", "~0").replace("/", "~1")
    pointer = f"#/paths/{escaped}/{method}/responses/{status}/content/application~1json/schema"
    registry = Registry().with_resource(SPEC_URI, Resource.from_contents(spec, default_specification=DRAFT202012))
    return Draft202012Validator({"$ref": SPEC_URI + pointer}, registry=registry)


def assert_valid(spec: dict[str, Any], response: requests.Response, path: str, method: str = "get") -> None:
    errors = list(validator(spec, path, method, response.status_code).iter_errors(response.json()))
    assert not errors, [error.message for error in errors]
    assert response.headers["Content-Type"].startswith("application/json")


def call(sim: FalSimulator, key: str | None, path: str, **params: Any) -> requests.Response:
    headers = {} if key is None else {"Authorization": f"Key {key}"}
    return requests.get(sim.base_url + path, params=params, headers=headers, timeout=TIMEOUT)


def estimate(sim: FalSimulator, key: str, body: Any) -> requests.Response:
    return requests.post(
        sim.base_url + "/models/pricing/estimate",
        json=body,
        headers={"Authorization": f"Key {key}"},
        timeout=TIMEOUT,
    )


def usage(sim: FalSimulator, key: str, **params: Any) -> requests.Response:
    query = {
        "start": WINDOW[0].isoformat(),
        "end": WINDOW[1].isoformat(),
        "timeframe": "hour",
        "expand": ALL_EXPANSIONS,
    }
    query.update(params)
    return call(sim, key, "/models/usage", **query)


def walk(sim: FalSimulator, key: str, **params: Any) -> list[dict[str, Any]]:
    """Every page of a usage query, parsed with exact decimals."""
    pages: list[dict[str, Any]] = []
    cursor = None
    while True:
        extra = {} if cursor is None else {"cursor": cursor}
        response = usage(sim, key, **params, **extra)
        assert response.status_code == 200, response.text
        page = json.loads(response.text, parse_float=Decimal)
        pages.append(page)
        assert page["has_more"] is (page["next_cursor"] is not None)
        cursor = page["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 1000


def flatten(pages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {**item, "bucket": datetime.fromisoformat(bucket["bucket"])}
        for page in pages
        for bucket in page["time_series"]
        for item in bucket["results"]
    ]


def api_key(sim: FalSimulator, alias: str) -> str:
    """A new API-scope key of the test team, as ``id:secret``."""
    return sim.issue_key("acme-team", scope="API", alias=alias)


# Shapes: responses agree with fal's OpenAPI document.


def test_usage_with_every_expansion_and_summary_matches_the_spec(sim, admin, spec):
    response = usage(sim, admin, expand=ALL_EXPANSIONS + ",summary", limit=50)

    assert response.status_code == 200
    assert_valid(spec, response, "/models/usage")
    body = response.json()
    assert body["summary"] and body["time_series"]
    for item in body["summary"] + [i for bucket in body["time_series"] for i in bucket["results"]]:
        assert "auth_method" in item and "detail" in item["auth_method_structured"]


def test_usage_without_summary_or_auth_expansions_matches_the_spec_and_omits_them(sim, admin, spec):
    response = usage(sim, admin, expand="time_series")

    assert_valid(spec, response, "/models/usage")
    body = response.json()
    assert "summary" not in body
    items = [item for bucket in body["time_series"] for item in bucket["results"]]
    assert items
    assert all("auth_method" not in item and "auth_method_structured" not in item for item in items)


def test_usage_items_carry_only_fields_the_spec_declares(sim, admin, spec):
    item_schema = spec["paths"]["/models/usage"]["get"]["responses"]["200"]["content"]["application/json"]["schema"][
        "properties"
    ]["time_series"]["items"]["properties"]["results"]["items"]
    structured = set(item_schema["properties"]["auth_method_structured"]["properties"])

    items = flatten(walk(sim, admin))

    for item in items:
        assert set(item) - {"bucket"} <= set(item_schema["properties"])
        assert set(item["auth_method_structured"]) <= structured


def test_buckets_are_ascending_utc_hours_with_offsets(sim, admin):
    buckets = [bucket["bucket"] for bucket in usage(sim, admin, limit=1000).json()["time_series"]]

    assert buckets == sorted(buckets)
    assert len(set(buckets)) == len(buckets)
    assert all(bucket.endswith("+00:00") for bucket in buckets)
    moments = [datetime.fromisoformat(bucket) for bucket in buckets]
    assert all(moment.minute == 0 and WINDOW[0] <= moment < WINDOW[1] for moment in moments)


def test_keys_with_creator_info_match_the_spec(sim, admin, spec):
    response = call(sim, admin, "/keys", expand="creator_info")

    assert response.status_code == 200
    assert_valid(spec, response, "/keys")
    body = response.json()
    assert [key["alias"] for key in body["keys"]] == ["Production Key", "Staging Key", "Key 3"]
    assert all(key["scope"] == "API" and key["creator_email"] and key["creator_nickname"] for key in body["keys"])
    assert body["next_cursor"] is None and body["has_more"] is False


def test_keys_page_with_a_cursor(sim, admin, spec):
    seen, cursor = [], None
    while True:
        response = call(sim, admin, "/keys", limit=2, **({} if cursor is None else {"cursor": cursor}))
        assert_valid(spec, response, "/keys")
        page = response.json()
        assert len(page["keys"]) <= 2
        seen += [key["key_id"] for key in page["keys"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert len(seen) == len(set(seen)) == 3
    assert "creator_email" not in call(sim, admin, "/keys").json()["keys"][0]


def test_billing_with_credits_matches_the_spec(sim, admin, spec):
    response = call(sim, admin, "/account/billing", expand="credits")

    assert_valid(spec, response, "/account/billing")
    body = response.json()
    assert body["username"] == "acme-team"
    assert body["credits"]["currency"] == "USD" and body["credits"]["current_balance"] >= 0
    assert call(sim, admin, "/account/billing").json() == {"username": "acme-team"}


def test_pricing_matches_the_spec_and_accepts_api_keys(sim, admin, spec):
    scoped = api_key(sim, "Pricing Key")
    response = call(sim, scoped, "/models/pricing", endpoint_id=["fal-ai/flux/dev", "fal-ai/flux/schnell"])

    assert response.status_code == 200
    assert_valid(spec, response, "/models/pricing")
    prices = {price["endpoint_id"]: price for price in response.json()["prices"]}
    assert prices["fal-ai/flux/dev"] == {
        "endpoint_id": "fal-ai/flux/dev",
        "unit_price": 0.025,
        "unit": "image",
        "currency": "USD",
    }
    assert prices["fal-ai/flux/schnell"]["unit"] == "megapixel"


def test_pricing_fails_the_whole_batch_on_one_unknown_endpoint(sim, admin, spec):
    response = call(sim, admin, "/models/pricing", endpoint_id="fal-ai/flux/dev,fal-ai/no-such-model")

    assert response.status_code == 404
    assert_valid(spec, response, "/models/pricing")
    assert response.json()["error"]["type"] == "not_found"


def test_estimates_match_the_spec_for_both_estimate_types(sim, admin, spec):
    by_units = estimate(
        sim, admin, {"estimate_type": "unit_price", "endpoints": {"fal-ai/flux/dev": {"unit_quantity": 50}}}
    )
    by_calls = estimate(
        sim,
        admin,
        {
            "estimate_type": "historical_api_price",
            "endpoints": {
                "fal-ai/flux/dev": {"call_quantity": 100},
                "fal-ai/recraft-v3": {"call_quantity": 10},
            },
        },
    )

    for response in (by_units, by_calls):
        assert response.status_code == 200
        assert_valid(spec, response, "/models/pricing/estimate", "post")
    assert by_units.json() == {"estimate_type": "unit_price", "total_cost": 1.25, "currency": "USD"}
    assert by_calls.json()["estimate_type"] == "historical_api_price"
    assert by_calls.json()["total_cost"] == 2.9


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"endpoints": {"fal-ai/flux/dev": {"unit_quantity": 1}}},
        {"estimate_type": "guess", "endpoints": {}},
        {"estimate_type": "unit_price"},
        {"estimate_type": "unit_price", "endpoints": {"fal-ai/flux/dev": {"unit_quantity": 0}}},
        {"estimate_type": "unit_price", "endpoints": {"fal-ai/flux/dev": {"call_quantity": 3}}},
        {"estimate_type": "historical_api_price", "endpoints": {"fal-ai/flux/dev": {"call_quantity": 1.5}}},
        {"estimate_type": "historical_api_price", "endpoints": {"fal-ai/flux/dev": {"call_quantity": True}}},
    ],
)
def test_estimate_rejects_bodies_the_spec_does_not_allow(sim, admin, spec, body):
    response = estimate(sim, admin, body)

    assert response.status_code == 400
    assert_valid(spec, response, "/models/pricing/estimate", "post")
    assert response.json()["error"]["type"] == "validation_error"


def test_estimate_of_an_unknown_endpoint_is_not_found(sim, admin):
    response = estimate(sim, admin, {"estimate_type": "unit_price", "endpoints": {"nope/x": {"unit_quantity": 1}}})

    assert response.status_code == 404


# Errors: the envelope, statuses and messages fal documents.


@pytest.mark.parametrize("authorization", [None, "", "Bearer abc", "Key nocolon", "Key 0123456789abcdef:wrong"])
def test_bad_credentials_get_401_with_the_documented_message(sim, admin, spec, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    response = requests.get(sim.base_url + "/models/usage", headers=headers, timeout=TIMEOUT)

    assert response.status_code == 401
    assert_valid(spec, response, "/models/usage")
    error = response.json()["error"]
    assert error["type"] == "authorization_error"
    assert error["message"] == "Invalid API key or malformed Authorization header"
    assert error["request_id"]


def test_a_wrong_secret_for_a_real_key_id_gets_401(sim, admin):
    key_id = admin.split(":")[0]

    assert call(sim, f"{key_id}:not-the-secret", "/keys").status_code == 401


@pytest.mark.parametrize("path", ["/models/usage", "/keys", "/account/billing"])
def test_an_api_scope_key_gets_403_on_admin_endpoints(sim, admin, spec, path):
    scoped = api_key(sim, "CI Key")

    response = call(sim, scoped, path)

    assert response.status_code == 403
    assert_valid(spec, response, path)
    error = response.json()["error"]
    assert error["type"] == "authorization_error"
    assert "Admin" in error["message"]


def test_a_revoked_key_gets_401(sim, admin):
    assert call(sim, admin, "/account/billing").status_code == 200

    sim.revoke_key(admin)

    assert call(sim, admin, "/account/billing").status_code == 401


def test_an_issued_admin_key_works(sim, admin):
    other = sim.issue_key("acme-team")

    assert call(sim, other, "/account/billing").json() == {"username": "acme-team"}


@pytest.mark.parametrize(
    "params",
    [
        {"timezone": "Europe/Berlin"},
        {"start": "2025-01-15T00:00:00Z", "end": "2025-01-15T00:00:00Z"},
        {"start": "2025-01-15T00:00:00Z", "end": "2025-01-14T00:00:00Z"},
        {"start": "yesterday"},
        {"timeframe": "fortnight"},
        {"bound_to_timeframe": "maybe"},
        {"expand": "auth_method"},
        {"expand": "time_series,everything"},
        {"limit": "0"},
        {"limit": "many"},
        {"cursor": "not base64!"},
        {"cursor": "YWJj"},
        {"endpoint_id": ",".join(f"fal-ai/model-{n}" for n in range(51))},
        {"api_key_id": ""},
    ],
)
def test_invalid_usage_queries_get_400_validation_error(sim, admin, spec, params):
    response = usage(sim, admin, **params)

    assert response.status_code == 400, response.text
    assert_valid(spec, response, "/models/usage")
    assert response.json()["error"]["type"] == "validation_error"


def test_pricing_needs_an_endpoint_id(sim, admin, spec):
    response = call(sim, admin, "/models/pricing")

    assert response.status_code == 400
    assert_valid(spec, response, "/models/pricing")


def test_unknown_paths_get_404_and_wrong_methods_405_in_the_envelope(sim, admin):
    missing = call(sim, admin, "/models/usage-v2")
    outside = requests.get(sim.base_url.removesuffix("/v1") + "/keys", timeout=TIMEOUT)
    wrong = requests.delete(sim.base_url + "/models/usage", headers={"Authorization": f"Key {admin}"}, timeout=TIMEOUT)

    assert missing.status_code == outside.status_code == 404
    assert missing.json()["error"]["type"] == "not_found"
    assert wrong.status_code == 405
    assert wrong.json()["error"]["type"] == "validation_error"
    assert wrong.headers["Allow"] == "GET"


# Usage data: exact money, paging that loses nothing, and the traffic a real team has.


def test_walking_every_page_yields_exactly_the_truth(sim, admin):
    pages = walk(sim, admin, limit=7)

    served = flatten(pages)
    assert served == sim.truth("acme-team", *WINDOW)
    assert len(served) > 50
    sizes = [sum(len(bucket["results"]) for bucket in page["time_series"]) for page in pages]
    assert all(size == 7 for size in sizes[:-1]) and 1 <= sizes[-1] <= 7


def test_a_bucket_split_across_pages_appears_on_both(sim, admin):
    pages = walk(sim, admin, limit=7)

    splits = [
        (before, after)
        for before, after in itertools.pairwise(pages)
        if before["time_series"][-1]["bucket"] == after["time_series"][0]["bucket"]
    ]
    assert splits
    for before, after in splits:
        assert len(before["time_series"][-1]["results"]) + len(after["time_series"][0]["results"]) >= 2


def test_limit_is_capped_at_the_maximum_page_size(admin, sim):
    sim.max_page_size = 5

    body = usage(sim, admin, limit=1000).json()

    assert sum(len(bucket["results"]) for bucket in body["time_series"]) == 5
    assert body["has_more"] is True


def page_items(body: dict[str, Any]) -> int:
    return sum(len(bucket["results"]) for bucket in body["time_series"])


def test_the_stand_in_pages_like_fal_at_its_least_generous(spec):
    with FalSimulator(now=NOW, history_days=10, seed=7, stand_in=True) as stand_in:
        admin = stand_in.add_account("acme-team")

        assert page_items(usage(stand_in, admin).json()) == 50, "no limit: fal's default page"
        assert page_items(usage(stand_in, admin, limit=200).json()) == 200
        refused = usage(stand_in, admin, limit=201)
        assert refused.status_code == 400
        assert_valid(spec, refused, "/models/usage")
        assert refused.json()["error"]["type"] == "validation_error"
        assert "'limit'" in refused.json()["error"]["message"]
        assert call(stand_in, admin, "/keys", limit=1000).status_code == 400, "every listing pages the same way"
        assert flatten(walk(stand_in, admin, limit=200)) == stand_in.truth("acme-team", *WINDOW)


def test_the_stand_in_caps_silently_up_to_a_configurable_maximum():
    with FalSimulator(now=NOW, history_days=10, seed=7, stand_in=True, reject_above=1000) as stand_in:
        admin = stand_in.add_account("acme-team")

        assert page_items(usage(stand_in, admin, limit=1000).json()) == 200
        assert usage(stand_in, admin, limit=1001).status_code == 400
    with pytest.raises(ValueError):
        FalSimulator(page_size=0)


def test_keys_are_issued_and_revoked_through_the_control_plane(sim, admin):
    issued = requests.post(sim.root_url + "/_sim/keys", json={"account": "acme-team"}, timeout=TIMEOUT)
    assert issued.status_code == 201
    key = issued.json()["key"]
    assert issued.json()["key_id"] == key.split(":")[0]
    assert call(sim, key, "/keys").status_code == 200

    revoked = requests.delete(sim.root_url + "/_sim/keys/" + key.split(":")[0], timeout=TIMEOUT)
    assert revoked.status_code == 200
    assert call(sim, key, "/keys").status_code == 401
    assert call(sim, admin, "/keys").status_code == 200, "other keys keep working"
    unknown = requests.post(sim.root_url + "/_sim/keys", json={"account": "nobody"}, timeout=TIMEOUT)
    assert unknown.status_code == 404
    api = requests.post(sim.root_url + "/_sim/keys", json={"account": "acme-team", "scope": "API"}, timeout=TIMEOUT)
    assert call(sim, api.json()["key"], "/keys").status_code == 403


def test_the_control_plane_lists_accounts_and_keys_without_secrets_and_serves_the_truth(sim, admin):
    described = requests.get(sim.root_url + "/_sim", timeout=TIMEOUT)
    [account] = described.json()["accounts"]
    assert account["account"] == "acme-team"
    assert {key["alias"] for key in account["keys"]} >= {"Admin Key", "Production Key", "Staging Key"}
    assert admin.split(":")[1] not in described.text
    truth = requests.get(
        sim.root_url + "/_sim/truth",
        params={"account": "acme-team", "start": WINDOW[0].isoformat(), "end": WINDOW[1].isoformat()},
        timeout=TIMEOUT,
    ).json()
    expected = sim.truth("acme-team", *WINDOW)
    assert len(truth) == len(expected)
    assert [Decimal(item["cost"]) for item in truth] == [item["cost"] for item in expected]


def test_truth_is_exact_and_every_item_adds_up(sim, admin):
    items = sim.truth("acme-team", *WINDOW)

    assert items
    for item in items:
        money = [item[name] for name in ("quantity", "unit_price", "cost_subtotal", "cost_discount", "cost_total")]
        assert all(isinstance(value, Decimal) for value in money)
        assert item["cost_subtotal"] == item["quantity"] * item["unit_price"]
        assert item["cost_total"] == item["cost_subtotal"] - item["cost_discount"]
        assert item["cost"] == item["cost_total"]
        pct = item["percent_discount"]
        expected = Decimal(0) if pct is None else item["cost_subtotal"] * pct / 100
        assert abs(item["cost_discount"] - expected) <= Decimal("0.000000001")
        assert item["currency"] == "USD"
        assert item["bucket"].tzinfo is not None and item["bucket"].minute == 0


def test_served_numbers_are_exact_decimals_that_floats_round_trip(sim, admin):
    text = usage(sim, admin, limit=1000).text
    exact = flatten([json.loads(text, parse_float=Decimal)])
    floats = flatten([json.loads(text)])

    assert exact and len(exact) == len(floats)
    for precise, loose in zip(exact, floats, strict=True):
        for name in ("quantity", "unit_price", "cost_subtotal", "cost_discount", "cost_total", "cost"):
            assert Decimal(repr(float(loose[name]))) == precise[name]


def test_usage_billed_at_different_discounts_comes_as_separate_items(sim, admin):
    items = sim.truth("acme-team", *WINDOW)
    by_line: dict[tuple[Any, ...], set[Any]] = {}
    for item in items:
        line = (item["bucket"], item["endpoint_id"], item["auth_method"])
        by_line.setdefault(line, set()).add(item["percent_discount"])

    split = [discounts for discounts in by_line.values() if len(discounts) == 2]
    assert split
    assert all(None in discounts and discounts - {None} <= {Decimal(10), Decimal(20)} for discounts in split)


def test_admin_and_deleted_keys_appear_in_usage_but_not_in_keys(sim, admin):
    listed = {key["key_id"] for key in call(sim, admin, "/keys").json()["keys"]}
    used = {
        item["auth_method_structured"]["api_key_id"]
        for item in sim.truth("acme-team", *WINDOW)
        if "api_key_id" in item["auth_method_structured"]
    }

    admin_id = admin.split(":")[0]
    unlisted = used - listed
    assert admin_id in unlisted
    assert len(unlisted) == 2
    assert listed & used


def test_web_ui_traffic_has_no_api_key_id(sim, admin):
    items = sim.truth("acme-team", *WINDOW)
    web = [item for item in items if "api_key_id" not in item["auth_method_structured"]]

    tokens = [item for item in web if item["auth_method_structured"] == {"detail": "User token"}]
    logins = [item for item in web if "login_username" in item["auth_method_structured"]]
    assert tokens and logins
    assert all(item["auth_method"] == "User token" for item in tokens)
    assert {item["auth_method_structured"]["login_username"] for item in logins} <= {"alice", "bob"}
    assert all(
        item["auth_method_structured"]["detail"] == item["auth_method_structured"]["login_username"] for item in logins
    )


def test_api_key_items_are_labelled_with_the_key_alias(sim, admin):
    aliases = {key["key_id"]: key["alias"] for key in call(sim, admin, "/keys").json()["keys"]}

    for item in sim.truth("acme-team", *WINDOW):
        key_id = item["auth_method_structured"].get("api_key_id")
        if key_id in aliases:
            assert item["auth_method"] == item["auth_method_structured"]["detail"] == aliases[key_id]


def test_no_user_traffic_means_every_item_has_an_api_key(sim):
    sim.add_account("keys-only", user_traffic=False)

    assert all("api_key_id" in item["auth_method_structured"] for item in sim.truth("keys-only", *WINDOW))


def test_revise_changes_an_hour_and_the_api_serves_the_revision(sim, admin):
    hours = sorted({item["bucket"] for item in sim.truth("acme-team", *WINDOW)})
    hour = hours[len(hours) // 2]
    before = sim.truth("acme-team", hour, hour + HOUR)
    untouched = sim.truth("acme-team", WINDOW[0], hour)

    sim.revise("acme-team", hour)

    after = sim.truth("acme-team", hour, hour + HOUR)
    assert after != before
    assert sim.truth("acme-team", WINDOW[0], hour) == untouched
    served = flatten(walk(sim, admin, start=hour.isoformat(), end=(hour + HOUR).isoformat()))
    assert served == after


def test_the_current_hour_is_partial_and_grows_as_time_passes(sim, admin):
    buckets = [item["bucket"] for item in sim.truth("acme-team", *WINDOW)]
    current = max(set(buckets), key=buckets.count)
    sim.now = current + timedelta(minutes=1)
    early = sim.truth("acme-team", current, current + HOUR)
    sim.now = current + timedelta(minutes=59)
    late = sim.truth("acme-team", current, current + HOUR)

    assert len(early) < len(late)
    served = flatten(walk(sim, admin, start=current.isoformat(), end=(current + HOUR).isoformat()))
    assert served == late
    assert sim.truth("acme-team", current + HOUR, current + 5 * HOUR) == []


def test_history_reaches_back_history_days_only(sim, admin):
    oldest = sim.truth("acme-team", NOW - timedelta(days=30), NOW)[0]["bucket"]

    assert NOW - timedelta(days=10) <= oldest < NOW - timedelta(days=9)


def test_day_buckets_sum_the_hours_they_hold(sim, admin):
    day = datetime(2025, 1, 14, tzinfo=UTC)
    pages = walk(sim, admin, start="2025-01-14", end="2025-01-15", timeframe="day")

    [bucket] = [bucket for page in pages for bucket in page["time_series"]]
    assert bucket["bucket"] == "2025-01-14T00:00:00+00:00"
    totals: dict[tuple[Any, ...], Decimal] = {}
    for item in sim.truth("acme-team", day, day + timedelta(days=1)):
        line = (item["endpoint_id"], item["percent_discount"], item["auth_method"])
        totals[line] = totals.get(line, Decimal(0)) + item["cost_total"]
    served = {
        (item["endpoint_id"], item["percent_discount"], item["auth_method"]): item["cost_total"]
        for item in bucket["results"]
    }
    assert served == totals


def total_cost(items: list[dict[str, Any]]) -> Decimal:
    return sum((item["cost_total"] for item in items), Decimal(0))


def test_without_bound_to_timeframe_the_window_cuts_inside_hours(sim, admin):
    hour = datetime(2025, 1, 15, 10, tzinfo=UTC)
    start, end = hour + timedelta(minutes=30), hour + timedelta(hours=2, minutes=15)

    served = flatten(walk(sim, admin, start=start.isoformat(), end=end.isoformat(), bound_to_timeframe="false"))

    around = sim.truth("acme-team", hour, hour + 3 * HOUR)
    inside = sim.truth("acme-team", hour + HOUR, hour + 2 * HOUR)
    assert all(item in around for item in served)
    assert all(item in served for item in inside)
    assert len(served) < len(around)


def test_minute_buckets_split_an_hour_and_keep_its_total(sim, admin):
    hour = datetime(2025, 1, 15, 10, tzinfo=UTC)

    pages = walk(sim, admin, start=hour.isoformat(), end=(hour + HOUR).isoformat(), timeframe="minute")

    buckets = [datetime.fromisoformat(bucket["bucket"]) for page in pages for bucket in page["time_series"]]
    assert len(buckets) > 1 and all(hour <= bucket < hour + HOUR for bucket in buckets)
    assert total_cost(flatten(pages)) == total_cost(sim.truth("acme-team", hour, hour + HOUR))


def test_timeframe_is_auto_detected_from_the_range(sim, admin):
    hourly = call(sim, admin, "/models/usage", start="2025-01-14T12:00:00Z", end="2025-01-15T12:00:00Z")
    daily = call(sim, admin, "/models/usage", start="2025-01-10", end="2025-01-15")

    assert len({bucket["bucket"][11:13] for bucket in hourly.json()["time_series"]}) > 1
    assert {bucket["bucket"][11:] for bucket in daily.json()["time_series"]} == {"00:00:00+00:00"}


def test_a_month_bucket_holds_the_whole_history_of_that_month(sim, admin):
    pages = walk(sim, admin, start="2025-01-01", end="2025-02-01", timeframe="month", expand="time_series")

    [bucket] = [bucket for page in pages for bucket in page["time_series"]]
    assert bucket["bucket"] == "2025-01-01T00:00:00+00:00"
    truth = sim.truth("acme-team", datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 2, 1, tzinfo=UTC))
    assert total_cost(bucket["results"]) == total_cost(truth)
    lines = [(item["endpoint_id"], item["percent_discount"]) for item in bucket["results"]]
    assert len(lines) == len(set(lines))


def test_a_summary_only_request_is_one_page(sim, admin, spec):
    response = usage(sim, admin, expand="summary", limit=1)

    assert_valid(spec, response, "/models/usage")
    body = json.loads(response.text, parse_float=Decimal)
    assert "time_series" not in body and body["has_more"] is False
    assert total_cost(body["summary"]) == total_cost(sim.truth("acme-team", *WINDOW))


def test_summary_totals_equal_the_time_series(sim, admin):
    body = json.loads(usage(sim, admin, expand="time_series,summary", limit=1000).text, parse_float=Decimal)

    series = [item for bucket in body["time_series"] for item in bucket["results"]]
    assert sum(item["cost_total"] for item in body["summary"]) == sum(item["cost_total"] for item in series)
    lines = [(item["endpoint_id"], item["unit_price"], item["percent_discount"]) for item in body["summary"]]
    assert len(lines) == len(set(lines))


def test_filters_narrow_usage_by_endpoint_and_key(sim, admin):
    production = next(key for key in call(sim, admin, "/keys").json()["keys"] if key["alias"] == "Production Key")

    by_endpoint = flatten(walk(sim, admin, endpoint_id="fal-ai/flux/dev"))
    by_key = flatten(walk(sim, admin, api_key_id=[production["key_id"], "someone-else"]))
    by_login = flatten(walk(sim, admin, login_username="alice"))

    assert by_endpoint and {item["endpoint_id"] for item in by_endpoint} == {"fal-ai/flux/dev"}
    assert by_key and {item["auth_method"] for item in by_key} == {"Production Key"}
    assert by_login and {item["auth_method"] for item in by_login} == {"alice"}


def test_legacy_cost_accounts_serve_only_cost(sim):
    key = sim.add_account("old-team", legacy_cost=True)

    items = flatten(walk(sim, key))

    assert items
    for item in items:
        assert "cost" in item
        assert not {"cost_total", "cost_subtotal", "cost_discount"} & set(item)
    assert items == sim.truth("old-team", *WINDOW)


def test_an_empty_account_returns_no_buckets(sim, spec):
    key = sim.add_account("quiet-team", empty=True)

    response = usage(sim, key, expand="time_series,summary")

    assert_valid(spec, response, "/models/usage")
    assert response.json() == {"time_series": [], "summary": [], "next_cursor": None, "has_more": False}


def test_the_same_seed_gives_the_same_usage():
    with (
        FalSimulator(now=NOW, history_days=3, seed=3) as one,
        FalSimulator(now=NOW, history_days=3, seed=3) as two,
    ):
        one.add_account("team")
        two.add_account("team")
        one.add_account("other")
        assert one.truth("team", *WINDOW) == two.truth("team", *WINDOW)
        assert one.truth("other", *WINDOW) != one.truth("team", *WINDOW)


def test_a_large_account_stays_fast(sim):
    key = sim.add_account("big-team", n_keys=20, n_models=40)
    started = time.perf_counter()

    pages = walk(sim, key, start=(NOW - timedelta(days=10)).isoformat(), end=NOW.isoformat(), limit=1000)

    assert sum(len(bucket["results"]) for page in pages for bucket in page["time_series"]) > 2000
    assert time.perf_counter() - started < 5


# Faults and bookkeeping.


def test_a_429_fault_carries_retry_after_and_then_clears(sim, admin, spec):
    sim.inject(Fault("/models/usage", status=429, headers={"Retry-After": "1"}))

    limited = usage(sim, admin)
    after = usage(sim, admin)

    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "1"
    assert_valid(spec, limited, "/models/usage")
    assert limited.json()["error"]["type"] == "rate_limited"
    assert after.status_code == 200


def test_a_fault_lets_after_requests_pass_then_applies_times_times(sim, admin):
    sim.inject(Fault("*", status=503, after=1, times=2))

    statuses = [call(sim, admin, "/account/billing").status_code for _ in range(4)]

    assert statuses == [200, 503, 503, 200]


def test_faults_match_only_their_path_and_can_be_cleared(sim, admin):
    sim.inject(Fault("/v1/keys", status=500, times=10))

    assert call(sim, admin, "/account/billing").status_code == 200
    assert call(sim, admin, "/keys").status_code == 500
    sim.clear_faults()
    assert call(sim, admin, "/keys").status_code == 200


def test_a_hang_times_the_client_out_and_the_next_request_is_served(sim, admin):
    sim.inject(Fault("/models/usage", action="hang", delay=1.0))

    with pytest.raises(requests.Timeout):
        requests.get(sim.base_url + "/models/usage", headers={"Authorization": f"Key {admin}"}, timeout=0.2)

    assert usage(sim, admin).status_code == 200


def test_a_truncated_body_is_not_json(sim, admin):
    sim.inject(Fault("/models/usage", action="truncate"))

    response = usage(sim, admin)

    assert response.status_code == 200
    with pytest.raises(ValueError):
        json.loads(response.text)


def test_a_reset_breaks_the_connection_mid_body(sim, admin):
    sim.inject(Fault("/models/usage", action="reset"))

    with pytest.raises((requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        usage(sim, admin)

    assert usage(sim, admin).status_code == 200


def test_a_respond_fault_can_send_a_raw_body(sim, admin):
    sim.inject(Fault("/keys", status=502, body=b"<html>bad gateway</html>", headers={"Content-Type": "text/html"}))

    response = call(sim, admin, "/keys")

    assert response.status_code == 502
    assert response.text == "<html>bad gateway</html>"
    assert response.headers["Content-Type"] == "text/html"


def test_stop_is_prompt_even_while_a_request_hangs(admin, sim):
    sim.inject(Fault("*", action="hang", delay=30))
    errors: list[BaseException] = []

    def hang() -> None:
        try:
            call(sim, admin, "/keys")
        except requests.RequestException as error:
            errors.append(error)

    client = threading.Thread(target=hang, daemon=True)
    client.start()
    deadline = time.monotonic() + 2
    while not sim.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()

    sim.stop()

    assert time.monotonic() - started < 2
    client.join(timeout=2)
    assert errors


def test_every_request_is_logged_without_its_credentials(sim, admin):
    call(sim, admin, "/keys", limit=2)
    call(sim, None, "/account/billing")

    assert [(r["method"], r["path"], r["has_auth"], r["status"]) for r in sim.requests] == [
        ("GET", "/v1/keys", True, 200),
        ("GET", "/v1/account/billing", False, 401),
    ]
    assert sim.requests[0]["query"] == {"limit": ["2"]}
    secret = admin.split(":")[1]
    assert secret not in repr(sim.requests)
