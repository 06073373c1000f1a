"""The portal's connect and reconnect (form and API) give one documented answer, 502, when the vendor's host cannot
be reached to check the key; nothing is stored or changed."""

from __future__ import annotations

import re
import socket

import httpx
import pytest

from connectors.fal.simulator import FalSimulator
from tests.portal.conftest import LivePortal


@pytest.fixture
def nowhere() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_the_api_answers_502_at_once_and_stores_nothing(
    api: httpx.Client, portal: LivePortal, nowhere: str, admin_key: str
) -> None:
    body = {"connector": "fal", "name": "far", "config": {"api_key": admin_key, "base_url": nowhere}}
    answer = api.post("/api/v1/connections", json=body)
    assert answer.status_code == 502, answer.text
    host = nowhere.removeprefix("http://").removesuffix("/v1")
    assert answer.json()["error"]["message"] == f"could not reach {host} (connection refused); nothing was stored"
    assert api.get("/api/v1/connections").json() == []


def test_the_form_answers_the_same_502(api: httpx.Client, nowhere: str, admin_key: str) -> None:
    token = re.search(r'name="csrf_token" value="([^"]+)"', api.get("/connect/fal").text)
    assert token
    form = {"name": "far", "api_key": admin_key, "base_url": nowhere, "csrf_token": token.group(1)}
    page = api.post("/connect/fal", data=form)
    assert page.status_code == 502
    assert "could not reach" in page.text and "nothing was stored" in page.text
    assert api.get("/api/v1/connections").json() == []


def test_the_openapi_description_documents_the_502(api: httpx.Client) -> None:
    operation = api.get("/api/openapi.json").json()["paths"]["/api/v1/connections"]["post"]
    assert "could not reach" in operation["responses"]["502"]["description"]


def test_a_reconnect_to_a_host_that_went_away_answers_502_and_changes_nothing(
    api: httpx.Client, portal: LivePortal
) -> None:
    with FalSimulator(seed=7) as gone:
        key = gone.add_account("gone", n_keys=1, n_models=1)
        body = {"connector": "fal", "name": "went", "config": {"api_key": key, "base_url": gone.base_url}}
        assert api.post("/api/v1/connections", json=body).status_code == 201
        host = gone.base_url.removeprefix("http://").removesuffix("/v1")
    portal.wait_for_syncs()  # the first sync, which finds the host gone and gives up
    before = api.get("/api/v1/connections/went").json()
    answer = api.post("/api/v1/connections/went/reconnect", json={"api_key": key})
    assert answer.status_code == 502, answer.text
    assert answer.json()["error"]["message"] == f"could not reach {host} (connection refused); nothing was changed"
    after = api.get("/api/v1/connections/went").json()
    assert (after["state"], after["account"]) == (before["state"], before["account"])
    operation = api.get("/api/openapi.json").json()["paths"]["/api/v1/connections/{name}/reconnect"]["post"]
    assert "could not reach" in operation["responses"]["502"]["description"]
