"""Who may do what: loopback only by default, the admin token beyond it, CSRF on every form, no secret anywhere."""

from __future__ import annotations

import re
import subprocess
import sys

import httpx
import pytest

from tests.portal.conftest import ADMIN_TOKEN, LivePortal


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "the page has a form with a CSRF token"
    return match.group(1)


def test_on_loopback_a_request_that_names_another_host_is_refused(api: httpx.Client) -> None:
    # What a DNS-rebinding page would send: our address, its own name.
    response = api.get("/api/v1/connections", headers={"Host": "evil.example"})
    assert response.status_code == 400 and "localhost" in response.json()["error"]["message"]
    assert api.get("/api/v1/connections", headers={"Host": "localhost:8080"}).status_code == 200


def test_a_write_from_another_site_is_refused_even_on_loopback(api: httpx.Client) -> None:
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}):
        response = api.post("/api/v1/connections", json={}, headers=headers)
        assert response.status_code == 403 and "another site" in response.json()["error"]["message"]


def test_every_form_needs_the_csrf_token_of_its_session(api: httpx.Client) -> None:
    page = api.get("/connect/fal")
    token = csrf_of(page.text)
    assert "connector_host_session" in api.cookies
    missing = api.post("/connect/fal", data={"name": "x", "api_key": "a:b"})
    assert missing.status_code == 403 and "expired" in missing.text
    other_session = httpx.Client(base_url=str(api.base_url)).get("/connect/fal").text
    stolen = api.post("/connect/fal", data={"name": "x", "api_key": "a:b", "csrf_token": csrf_of(other_session)})
    assert stolen.status_code == 403
    accepted = api.post("/connect/fal", data={"name": "bad name", "api_key": "a:b", "csrf_token": token})
    assert accepted.status_code == 422 and "data-field-error" in accepted.text


def test_pages_carry_headers_that_keep_them_out_of_frames_and_scripts_from_elsewhere(api: httpx.Client) -> None:
    response = api.get("/catalog")
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"
    head = response.text.split("<body")[0]
    assert not re.search(r'(src|href)="(https?:)?//', head), "nothing is fetched from elsewhere"


def test_with_an_admin_token_the_api_wants_it_as_a_bearer_token(secured_portal: LivePortal) -> None:
    with httpx.Client(base_url=secured_portal.url) as client:
        denied = client.get("/api/v1/connections")
        assert denied.status_code == 401 and "Bearer" in denied.json()["error"]["message"]
        assert denied.headers["www-authenticate"].startswith("Bearer")
        assert client.get("/api/v1/connections", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/api/v1/health").status_code == 200
        authorized = client.get("/api/v1/connections", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert authorized.status_code == 200
        # Beyond loopback the portal answers to whatever name it is reached by.
        assert client.get("/api/v1/health", headers={"Host": "portal.example.com"}).status_code == 200


def test_with_an_admin_token_pages_need_a_signed_in_session_and_a_forged_cookie_gets_nothing(
    secured_portal: LivePortal,
) -> None:
    with httpx.Client(base_url=secured_portal.url) as client:
        redirected = client.get("/connections?days=7")
        assert redirected.status_code == 303
        assert redirected.headers["location"] == "/login?next=%2Fconnections%3Fdays%3D7"
        cookie = redirected.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        form = client.get("/login")
        signed_in = client.post(
            "/login", data={"token": ADMIN_TOKEN, "next": "//evil.example/", "csrf_token": csrf_of(form.text)}
        )
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/"
        assert client.get("/connections").status_code == 200
        value = client.cookies["connector_host_session"]
        body, _, mac = value.partition(".")
        client.cookies.set("connector_host_session", body[:-2] + "xx." + mac)
        assert client.get("/connections").status_code == 303


def test_repeated_wrong_tokens_are_slowed_down(secured_portal: LivePortal) -> None:
    with httpx.Client(base_url=secured_portal.url) as client:
        token = csrf_of(client.get("/login").text)
        codes = [client.post("/login", data={"token": "nope", "csrf_token": token}).status_code for _ in range(11)]
        assert codes[:10] == [401] * 10 and codes[10] == 429


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (["--host", "0.0.0.0"], {}, "CONNECTOR_HOST_ADMIN_TOKEN"),
        (["--host", "0.0.0.0"], {"CONNECTOR_HOST_ADMIN_TOKEN": "short"}, "at least 16 characters"),
        (["--host", "0.0.0.0", "--admin-token-file", "/nonexistent/token"], {}, "cannot read the admin token"),
        # On argv the token would be readable by every user of the machine: refused, even a strong one.
        (["--admin-token", "a-strong-token-of-32-characters!"], {}, "not taken on the command line"),
    ],
)
def test_serve_refuses_to_listen_beyond_loopback_without_a_strong_admin_token(
    args: list[str], env: dict[str, str], words: str, home: object
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "connector_sdk", "--home", str(home), "serve", *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
        timeout=60,
    )
    assert result.returncode == 2
    assert words in result.stderr and "Traceback" not in result.stderr
