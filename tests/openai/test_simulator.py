"""The OpenAI simulator answers as OpenAI's own API description says it does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from connectors.openai.simulator import USAGE_FIELDS, Fault, OpenAISimulator

from .conftest import NOW

SPEC = json.loads((Path(__file__).resolve().parents[3] / "shared" / "openai" / "openapi.json").read_text())
REGISTRY = Registry().with_resource("urn:openai", Resource.from_contents(SPEC, default_specification=DRAFT202012))
START = int(NOW.timestamp()) - 3 * 86400


def validate(body: Any, schema: str) -> None:
    validator = jsonschema.Draft202012Validator({"$ref": f"urn:openai#/components/schemas/{schema}"}, registry=REGISTRY)
    validator.validate(body)


def operation_schema(path: str) -> str:
    """The schema OpenAI's description gives for the 200 answer of ``GET path``."""
    template = "/organization/projects/{project_id}/api_keys" if path.endswith("/api_keys") else path
    ref = SPEC["paths"][template]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    return ref.rsplit("/", 1)[-1]


def get(sim: OpenAISimulator, key: str, path: str, **params: Any) -> requests.Response:
    return requests.get(f"{sim.base_url}{path}", params=params, headers={"Authorization": f"Bearer {key}"}, timeout=10)


def every_page(sim: OpenAISimulator, key: str, path: str, cursor: str, **params: Any) -> list[dict[str, Any]]:
    pages, extra = [], {}
    while True:
        response = get(sim, key, path, **params, **extra)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        if not pages[-1]["has_more"]:
            return pages
        extra = {"page": pages[-1]["next_page"]} if cursor == "page" else {"after": pages[-1]["last_id"]}


@pytest.mark.parametrize("endpoint", sorted(USAGE_FIELDS))
def test_usage_pages_match_the_usage_response_schema(sim: OpenAISimulator, admin_key: str, endpoint: str) -> None:
    path = f"/organization/usage/{endpoint}"
    params = {"start_time": START, "bucket_width": "1h", "group_by": ["api_key_id", "project_id", "model"]}
    pages = every_page(sim, admin_key, path, "page", **params, limit=168)
    assert len(pages) > 1  # 72 buckets, 30 a page
    for page in pages:
        validate(page, operation_schema(path))
    results = [r for page in pages for bucket in page["data"] for r in bucket["results"]]
    assert results and {r["object"] for r in results} == {f"organization.usage.{endpoint}.result"}


def test_cost_pages_match_the_schema_and_carry_exact_amounts(sim: OpenAISimulator, admin_key: str) -> None:
    params = {"start_time": START - START % 86400 - 40 * 86400, "group_by": ["api_key_id", "project_id", "line_item"]}
    pages = every_page(sim, admin_key, "/organization/costs", "page", **params, limit=180)
    for page in pages:
        validate(page, operation_schema("/organization/costs"))
    results = [r for page in pages for bucket in page["data"] for r in bucket["results"]]
    assert {r["amount"]["currency"] for r in results} == {"usd"}
    assert any(r["api_key_id"] is None for r in results)  # the Playground


@pytest.mark.parametrize("path", ["/organization/projects", "/organization/admin_api_keys"])
def test_listings_match_their_schemas(sim: OpenAISimulator, admin_key: str, path: str) -> None:
    for page in every_page(sim, admin_key, path, "after", include_archived="true"):
        validate(page, operation_schema(path))


def test_project_key_listings_match_their_schema(sim: OpenAISimulator, admin_key: str) -> None:
    projects = every_page(sim, admin_key, "/organization/projects", "after", include_archived="true")
    for project in [p for page in projects for p in page["data"]]:
        path = f"/organization/projects/{project['id']}/api_keys"
        for page in every_page(sim, admin_key, path, "after"):
            validate(page, operation_schema(path))


def test_refusals_use_openais_error_envelope(sim: OpenAISimulator, admin_key: str) -> None:
    project_key = sim.issue_key("Acme Research", scope="project")
    cases = [
        (get(sim, "sk-admin-nope", "/organization/costs", start_time=START), 401),
        (get(sim, project_key, "/organization/costs", start_time=START), 403),
        (get(sim, admin_key, "/organization/costs"), 400),
        (get(sim, admin_key, "/organization/nothing"), 404),
    ]
    for response, status in cases:
        assert response.status_code == status
        validate(response.json(), "ErrorResponse")
    assert cases[0][0].json()["error"]["code"] == "invalid_api_key"
    assert project_key not in cases[1][0].text


def test_faults_answer_in_openais_envelope_with_a_request_id(sim: OpenAISimulator, admin_key: str) -> None:
    sim.inject(Fault(path="/organization/costs", status=429, headers={"Retry-After": "7"}))
    limited = get(sim, admin_key, "/organization/costs", start_time=START)
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "7")
    validate(limited.json(), "ErrorResponse")
    assert limited.json()["error"]["type"] == "rate_limit_exceeded"
    served = get(sim, admin_key, "/organization/costs", start_time=START)
    assert served.headers["openai-organization"] == "Acme Research"
    assert limited.headers["x-request-id"] != served.headers["x-request-id"]


def test_a_bad_page_token_or_limit_names_the_parameter(sim: OpenAISimulator, admin_key: str) -> None:
    for params, param in (({"page": "nonsense"}, "page"), ({"limit": 181}, "limit")):
        response = get(sim, admin_key, "/organization/costs", start_time=START, **params)
        assert response.status_code == 400
        validate(response.json(), "ErrorResponse")
        assert response.json()["error"]["param"] == param


def test_the_control_plane_revokes_a_key_by_id_and_issues_project_keys(sim: OpenAISimulator, admin_key: str) -> None:
    control = f"{sim.root_url}/_sim"
    issued = requests.post(f"{control}/keys", json={"account": "Acme Research", "scope": "project"}, timeout=10)
    assert issued.status_code == 201 and issued.json()["key"].startswith("sk-proj-")
    assert get(sim, issued.json()["key"], "/organization/costs", start_time=START).status_code == 403
    [spender] = [
        key for key in requests.get(control, timeout=10).json()["accounts"][0]["keys"] if key["scope"] == "admin"
    ]
    assert requests.delete(f"{control}/keys/{spender['key_id']}", timeout=10).status_code == 200
    assert get(sim, admin_key, "/organization/costs", start_time=START).status_code == 401
    assert admin_key not in requests.get(control, timeout=10).text
