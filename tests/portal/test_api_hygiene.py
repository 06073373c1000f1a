"""What the API does with input no honest client sends: huge bodies, huge keys, broken JSON, NaN, unknown fields,
pages past the end; and in token mode, what a signed-in browser and a flood of wrong tokens meet."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from connector_sdk.portal.app import MAX_BODY_BYTES, SECURITY_HEADERS, create_app
from connector_sdk.portal.security import LoginThrottle
from connectors.fal.simulator import FalSimulator
from tests.portal.conftest import ADMIN_TOKEN, LivePortal, served, wait_for_sync


def body(sim: FalSimulator, key: str, name: str = "fal-prod", **config: Any) -> dict[str, Any]:
    return {"connector": "fal", "name": name, "config": {"api_key": key, "base_url": sim.base_url, **config}}


def error(response: httpx.Response) -> dict[str, Any]:
    payload: dict[str, Any] = response.json()["error"]
    return payload


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "the page has a form with a CSRF token"
    return match.group(1)


def test_a_body_above_one_mebibyte_is_refused_with_413_before_it_is_read(
    api: httpx.Client, portal: LivePortal, sim: FalSimulator, admin_key: str
) -> None:
    asked = len(sim.requests)
    padding = "x" * (MAX_BODY_BYTES + 1)
    declared = api.post("/api/v1/connections", json=body(sim, admin_key, note=padding))
    assert declared.status_code == 413 and "1 MiB" in error(declared)["message"]
    # Chunked, without a Content-Length to trust: refused once it passes the limit.
    chunks = (part.encode() for part in ['{"connector": "fal", "name": "big", "config": {"api_key": "', padding, '"}}'])
    streamed = api.post("/api/v1/connections", content=chunks, headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413
    assert streamed.headers["x-frame-options"] == "DENY"
    assert len(sim.requests) == asked and portal.host.store.list_connections() == []
    # Just under the limit is read as usual (and refused for what it says, not for its size).
    small = api.post("/api/v1/connections", json=body(sim, "k" * 2000 + ":" + "s" * 2000))
    assert small.status_code == 422


def test_a_key_longer_than_any_real_one_is_refused_before_fal_is_asked(
    api: httpx.Client, portal: LivePortal, sim: FalSimulator, admin_key: str
) -> None:
    asked = len(sim.requests)
    huge = admin_key + "0" * 200_000
    response = api.post("/api/v1/connections", json=body(sim, huge))
    assert response.status_code == 422
    assert "longer than any real key" in error(response)["fields"]["api_key"]
    assert huge not in response.text
    assert len(sim.requests) == asked, "the key never reached the vendor"
    assert portal.host.store.list_connections() == []


def test_malformed_json_says_where_the_mistake_is(api: httpx.Client) -> None:
    broken = '{"connector": "fal", "name": x}'
    response = api.post("/api/v1/connections", content=broken, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert error(response)["message"] == "The body is not valid JSON (line 1, column 30)."
    assert list(error(response)["fields"]) == ["body"]
    two_lines = '{"connector": "fal",\n "name": }'
    response = api.post("/api/v1/connections", content=two_lines, headers={"Content-Type": "application/json"})
    assert "(line 2, column 10)" in error(response)["message"]


def test_an_unknown_config_field_is_named_in_fields_and_nan_is_not_a_number(
    api: httpx.Client, sim: FalSimulator, admin_key: str
) -> None:
    unknown = api.post("/api/v1/connections", json=body(sim, admin_key, colour="blue"))
    assert unknown.status_code == 422
    assert error(unknown)["fields"] == {"colour": "There is no such setting for this connector."}
    nan = '{"connector": "fal", "name": "x", "config": {"api_key": "a:b", "timeout_seconds": NaN}}'
    response = api.post("/api/v1/connections", content=nan, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert "not a number" in error(response)["fields"]["timeout_seconds"].lower()
    assert "finite" not in response.text
    typed = api.post("/api/v1/connections", json=body(sim, admin_key, timeout_seconds="nan"))
    assert error(typed)["fields"] == {"timeout_seconds": "Not a number: NaN and Infinity are not numbers."}


def test_rows_limit_is_honoured_and_rows_sort_newest_or_costliest_first(
    api: httpx.Client, sim: FalSimulator, admin_key: str
) -> None:
    created = api.post("/api/v1/connections", json=body(sim, admin_key, backfill_days=2))
    assert wait_for_sync(api, created.json()["sync"]["status_url"])["outcome"] == "succeeded"
    one = api.get("/api/v1/connections/fal-prod/rows", params={"limit": 1}).json()
    assert len(one["rows"]) == 1 and one["per_page"] == 1 and one["pages"] == one["total"]
    every = api.get("/api/v1/connections/fal-prod/rows", params={"per_page": 1000}).json()["rows"]
    newest = api.get("/api/v1/connections/fal-prod/rows", params={"per_page": 1000, "sort": "-hour"}).json()
    assert [r["period_start"] for r in newest["rows"]] == sorted((r["period_start"] for r in every), reverse=True)
    costly = api.get("/api/v1/connections/fal-prod/rows", params={"per_page": 1000, "sort": "-cost"}).json()
    costs = [float(r["cost"]) for r in costly["rows"]]
    assert costs == sorted(costs, reverse=True) and costs[0] > costs[-1]
    by_model = api.get("/api/v1/connections/fal-prod/rows", params={"per_page": 1000, "sort": "model"}).json()
    assert [r["model"] for r in by_model["rows"]] == sorted(r["model"] for r in every)
    assert api.get("/api/v1/connections/fal-prod/rows", params={"sort": "price"}).status_code == 422


def test_the_api_page_shows_descriptions_as_text_not_as_markup(api: httpx.Client) -> None:
    page = api.get("/api")
    assert page.status_code == 200
    assert "``" not in page.text
    assert "<code>config</code>" in page.text


def test_every_status_the_api_answers_for_bad_input_is_in_its_description(portal: LivePortal) -> None:
    spec = portal.app.openapi()
    for path, item in spec["paths"].items():
        for method, op in item.items():
            for status in ("400", "401", "403", "404", "409", "413", "422", "500", "502", "503"):
                assert status in op["responses"], f"{method.upper()} {path} does not describe {status}"


# -- token mode ----------------------------------------------------------------------------------------------------
def sign_in(client: httpx.Client, token: str, **headers: str) -> httpx.Response:
    form = client.get("/login")
    return client.post("/login", data={"token": token, "csrf_token": csrf_of(form.text)}, headers=headers)


def test_a_signed_in_browser_can_read_the_openapi_description(secured_portal: LivePortal) -> None:
    with httpx.Client(base_url=secured_portal.url) as client:
        assert client.get("/api/openapi.json").status_code == 401
        assert sign_in(client, ADMIN_TOKEN).status_code == 303
        spec = client.get("/api/openapi.json")
        assert spec.status_code == 200 and spec.json()["info"]["title"] == "connector-host"
        # The session opens the description only; the API itself still wants the bearer token.
        assert client.get("/api/v1/connections").status_code == 401


def test_early_refusals_carry_the_same_security_headers_as_every_other_answer(
    secured_portal: LivePortal, api: httpx.Client
) -> None:
    with httpx.Client(base_url=secured_portal.url) as client:
        answers = [
            client.get("/api/v1/connections"),
            client.post("/api/v1/connections", json={}, headers={"Origin": "http://evil.example"}),
        ]
    answers.append(api.get("/api/v1/connections", headers={"Host": "evil.example"}))
    assert [a.status_code for a in answers] == [401, 403, 400]
    for answer in answers:
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers.get(name) == value, f"{answer.status_code} lacks {name}"
        assert answer.headers["cache-control"] == "no-store"


def test_a_flood_of_wrong_tokens_slows_down_guessing_but_never_locks_the_admin_out(
    secured_portal: LivePortal,
) -> None:
    secured_portal.state.throttle = LoginThrottle(limit=3, delay=0.0)
    with httpx.Client(base_url=secured_portal.url) as attacker, httpx.Client(base_url=secured_portal.url) as admin:
        codes = [sign_in(attacker, f"guess-{i}").status_code for i in range(6)]
        assert codes == [401, 401, 401, 429, 429, 429]
        # Same address (loopback), same moment: the right token still signs in.
        assert sign_in(admin, ADMIN_TOKEN).status_code == 303
        assert admin.get("/connections").status_code == 200


def test_the_same_wrong_token_is_slowed_down_whatever_address_it_comes_from(portal_host: Any) -> None:
    app = create_app(portal_host, admin_token=ADMIN_TOKEN, trusted_proxies=["127.0.0.1"])
    app.state.portal.throttle = LoginThrottle(limit=2, delay=0.0)
    with served(app) as url, httpx.Client(base_url=url) as client:
        codes = [sign_in(client, "same-guess", **{"X-Forwarded-For": f"198.51.100.{i}"}).status_code for i in range(3)]
        assert codes == [401, 401, 429]


@pytest.mark.parametrize("trusted", [[], ["127.0.0.1"]])
def test_x_forwarded_for_names_the_client_only_behind_a_configured_proxy(portal_host: Any, trusted: list[str]) -> None:
    app = create_app(portal_host, admin_token=ADMIN_TOKEN, trusted_proxies=trusted)
    app.state.portal.throttle = LoginThrottle(limit=2, delay=0.0)
    with served(app) as url, httpx.Client(base_url=url) as client:
        for i in range(2):
            assert sign_in(client, f"a-{i}", **{"X-Forwarded-For": "203.0.113.7"}).status_code == 401
        # Another client behind the same proxy: its own address when the proxy is trusted; otherwise the header is
        # the client's own word, and the peer address (already throttled) counts.
        other = sign_in(client, "b-0", **{"X-Forwarded-For": "203.0.113.8"}).status_code
        assert other == (401 if trusted else 429)
        # A client cannot escape its throttle by writing its own header in front of the proxy's.
        spoofed = sign_in(client, "a-9", **{"X-Forwarded-For": "10.9.9.9, 203.0.113.7"}).status_code
        assert spoofed == 429


def test_trusted_proxies_come_from_the_environment_and_a_bad_one_is_named(
    portal_host: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONNECTOR_HOST_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1")
    app = create_app(portal_host, admin_token=ADMIN_TOKEN)
    assert [str(n) for n in app.state.portal.trusted_proxies] == ["10.0.0.0/8", "127.0.0.1/32"]
    with pytest.raises(ValueError, match="'nonsense' is not an IP address"):
        create_app(portal_host, admin_token=ADMIN_TOKEN, trusted_proxies=["nonsense"])


def test_the_json_body_error_counts_lines_and_columns_from_one() -> None:
    from connector_sdk.portal.app import json_error_message

    assert json_error_message("abc", 0) == "the body is not valid JSON (line 1, column 1)"
    assert json_error_message("a\nbc", 3) == "the body is not valid JSON (line 2, column 2)"
