"""The Anthropic simulator answers in the shapes Anthropic's documentation and SDK types give.

There is no OpenAPI description of Anthropic's Admin API to hand, so the schemas below are written from
``shared/anthropic/README.md`` and the official Python SDK's types (``MessagesUsageReport``, ``CostReport``, the
API key and workspace listings); every field the facts name is required, and nothing else is checked.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
import requests

from connectors.anthropic.simulator import ANALYTICS_BETA, AnthropicSimulator

from .conftest import NOW, ORG

START = "2026-03-07T00:00:00Z"
NULLABLE_TEXT = {"type": ["string", "null"]}
COUNT = {"type": "integer", "minimum": 0}
CENTS = {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$"}
RFC3339 = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"}


def report(result: dict[str, Any]) -> dict[str, Any]:
    bucket = {
        "type": "object",
        "required": ["starting_at", "ending_at", "results"],
        "properties": {"starting_at": RFC3339, "ending_at": RFC3339, "results": {"type": "array", "items": result}},
    }
    return {
        "type": "object",
        "required": ["data", "has_more", "next_page"],
        "properties": {"data": {"type": "array", "items": bucket}, "has_more": {"type": "boolean"}},
    }


USAGE_RESULT = {
    "type": "object",
    "required": [
        "api_key_id",
        "workspace_id",
        "model",
        "service_tier",
        "uncached_input_tokens",
        "cache_read_input_tokens",
        "cache_creation",
        "output_tokens",
        "server_tool_use",
    ],
    "properties": {
        "api_key_id": NULLABLE_TEXT,
        "workspace_id": NULLABLE_TEXT,
        "model": NULLABLE_TEXT,
        "service_tier": {
            "enum": [None, "standard", "batch", "priority", "priority_on_demand", "flex", "flex_discount"]
        },
        "context_window": {"enum": [None, "0-200k", "200k-1M"]},
        "uncached_input_tokens": COUNT,
        "cache_read_input_tokens": COUNT,
        # An object by TTL, never a flat cache_creation_input_tokens.
        "cache_creation": {
            "type": "object",
            "required": ["ephemeral_1h_input_tokens", "ephemeral_5m_input_tokens"],
            "properties": {"ephemeral_1h_input_tokens": COUNT, "ephemeral_5m_input_tokens": COUNT},
            "additionalProperties": False,
        },
        "output_tokens": COUNT,
        "server_tool_use": {
            "type": ["object", "null"],
            "required": ["web_search_requests"],
            "properties": {"web_search_requests": COUNT},
        },
    },
    "not": {"required": ["cache_creation_input_tokens"]},
}
COST_REPORT_RESULT = {
    "type": "object",
    "required": ["amount", "currency", "workspace_id", "description", "model", "cost_type", "token_type"],
    "properties": {
        "amount": CENTS,
        "currency": {"const": "USD"},
        "workspace_id": NULLABLE_TEXT,
        "description": NULLABLE_TEXT,
        "model": NULLABLE_TEXT,
        "cost_type": {"enum": [None, "tokens", "web_search", "code_execution"]},
        "token_type": {
            "enum": [
                None,
                "uncached_input_tokens",
                "output_tokens",
                "cache_read_input_tokens",
                "cache_creation.ephemeral_1h_input_tokens",
                "cache_creation.ephemeral_5m_input_tokens",
            ]
        },
        "service_tier": {"enum": [None, "standard", "batch"]},
        "context_window": {"enum": [None, "0-200k", "200k-1M"]},
    },
}
ANALYTICS_PAGE = {
    "type": "object",
    "required": ["data", "has_more", "next_page"],
    "properties": {
        "has_more": {"type": "boolean"},
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["starting_at", "ending_at", "group", "cost"],
                "properties": {
                    "starting_at": RFC3339,
                    "ending_at": RFC3339,
                    "group": {
                        "type": "object",
                        "properties": {name: NULLABLE_TEXT for name in ("api_key_id", "workspace_id", "model")},
                    },
                    "cost": {
                        "type": "object",
                        "required": ["amount", "list_amount", "currency", "requests"],
                        "properties": {
                            "amount": CENTS,
                            "list_amount": CENTS,
                            "currency": {"const": "USD"},
                            "requests": {"type": ["integer", "null"], "minimum": 0},
                        },
                    },
                },
            },
        },
    },
}


def listing(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["data", "has_more", "first_id", "last_id"],
        "properties": {
            "data": {"type": "array", "items": item},
            "has_more": {"type": "boolean"},
            "first_id": NULLABLE_TEXT,
            "last_id": NULLABLE_TEXT,
        },
    }


API_KEY = {
    "type": "object",
    "required": ["id", "type", "name", "created_at", "created_by", "partial_key_hint", "status", "workspace_id"],
    "properties": {
        "id": {"type": "string", "pattern": "^apikey_"},
        "type": {"const": "api_key"},
        "name": {"type": "string"},
        "created_at": RFC3339,
        "created_by": {"type": "object", "required": ["id", "type"]},
        "expires_at": {"anyOf": [RFC3339, {"type": "null"}]},
        "status": {"enum": ["active", "inactive", "archived", "expired"]},
        "workspace_id": NULLABLE_TEXT,
    },
}
WORKSPACE = {
    "type": "object",
    "required": ["id", "type", "name", "created_at", "archived_at", "display_color"],
    "properties": {
        "id": {"type": "string", "pattern": "^wrkspc_"},
        "type": {"const": "workspace"},
        "name": {"type": "string"},
        "created_at": RFC3339,
        "archived_at": {"anyOf": [RFC3339, {"type": "null"}]},
    },
}
ERROR = {
    "type": "object",
    "required": ["type", "error"],
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {
                "type": {
                    "enum": [
                        "invalid_request_error",
                        "authentication_error",
                        "permission_error",
                        "not_found_error",
                        "rate_limit_error",
                        "api_error",
                        "overloaded_error",
                    ]
                },
                "message": {"type": "string"},
            },
        },
    },
}


def get(sim: AnthropicSimulator, key: str, path: str, *, beta: bool = False, **params: Any) -> requests.Response:
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"} | (
        {"anthropic-beta": ANALYTICS_BETA} if beta else {}
    )
    return requests.get(f"{sim.base_url}{path}", params=params, headers=headers, timeout=10)


def every_page(sim: AnthropicSimulator, key: str, path: str, cursor: str, **params: Any) -> list[dict[str, Any]]:
    pages, extra = [], {}
    while True:
        response = get(sim, key, path, **params, **extra)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        if not pages[-1]["has_more"]:
            return pages
        extra = {"page": pages[-1]["next_page"]} if cursor == "page" else {"after_id": pages[-1]["last_id"]}


def test_usage_pages_are_messages_usage_reports(sim: AnthropicSimulator, admin_key: str) -> None:
    groups = ["api_key_id", "workspace_id", "model", "service_tier"]
    pages = every_page(
        sim, admin_key, "/organizations/usage_report/messages", "page", starting_at=START, bucket_width="1h",
        **{"group_by[]": groups}, limit=168,
    )  # fmt: skip
    assert len(pages) > 1  # 87 hourly buckets, 30 a page
    for page in pages:
        jsonschema.validate(page, report(USAGE_RESULT))
    results = [r for page in pages for bucket in page["data"] for r in bucket["results"]]
    assert any(r["api_key_id"] is None for r in results) and any(r["workspace_id"] is None for r in results)
    assert any(r["cache_creation"]["ephemeral_1h_input_tokens"] for r in results)


def test_cost_report_pages_carry_cents_as_decimal_strings(sim: AnthropicSimulator, admin_key: str) -> None:
    params = {"starting_at": "2026-02-20T00:00:00Z", "group_by[]": ["workspace_id", "description"], "limit": 31}
    pages = every_page(sim, admin_key, "/organizations/cost_report", "page", **params)
    for page in pages:
        jsonschema.validate(page, report(COST_REPORT_RESULT))
    results = [r for page in pages for bucket in page["data"] for r in bucket["results"]]
    assert any("." in r["amount"] for r in results) and any(r["workspace_id"] is None for r in results)
    assert "api_key_id" not in results[0]  # the cost report has no key dimension


def test_cost_analytics_rows_carry_amount_and_list_amount_per_key(sim: AnthropicSimulator, admin_key: str) -> None:
    params = {"starting_at": START, "group_by[]": ["api_key_id", "workspace_id", "model"]}
    response = get(sim, admin_key, "/organizations/analytics/cost", beta=True, **params)
    assert response.status_code == 200, response.text
    jsonschema.validate(response.json(), ANALYTICS_PAGE)
    rows = response.json()["data"]
    assert any(row["group"]["api_key_id"] is None for row in rows)  # the Workbench
    assert any(row["cost"]["amount"] != row["cost"]["list_amount"] for row in rows)  # a negotiated discount
    without_beta = get(sim, admin_key, "/organizations/analytics/cost", **params)
    assert without_beta.status_code == 400 and ANALYTICS_BETA in without_beta.json()["error"]["message"]


def test_a_capped_bucket_holds_only_its_largest_groups_and_no_remainder(
    sim: AnthropicSimulator, admin_key: str
) -> None:
    sim.max_groups = 4
    params = {"starting_at": START, "ending_at": "2026-03-08T00:00:00Z", "group_by[]": ["api_key_id", "model"]}
    rows = get(sim, admin_key, "/organizations/analytics/cost", beta=True, **params).json()["data"]
    total = get(sim, admin_key, "/organizations/analytics/cost", beta=True, **params | {"group_by[]": []}).json()
    amounts = [float(row["cost"]["amount"]) for row in rows]
    assert len(rows) == 4 and amounts == sorted(amounts, reverse=True)
    assert sum(amounts) < float(total["data"][0]["cost"]["amount"])


@pytest.mark.parametrize(
    ("path", "params", "schema"),
    [
        ("/organizations/api_keys", {"status": "archived"}, API_KEY),
        ("/organizations/api_keys", {}, API_KEY),
        ("/organizations/workspaces", {"include_archived": "true"}, WORKSPACE),
    ],
)
def test_listings_page_with_after_id(
    sim: AnthropicSimulator, admin_key: str, path: str, params: dict[str, Any], schema: dict[str, Any]
) -> None:
    pages = every_page(sim, admin_key, path, "after_id", **params)
    for page in pages:
        jsonschema.validate(page, listing(schema))
    assert sum(len(page["data"]) for page in pages) >= 1


def test_the_organization_is_named(sim: AnthropicSimulator, admin_key: str) -> None:
    me = get(sim, admin_key, "/organizations/me").json()
    assert me["name"] == ORG and me["type"] == "organization" and me["id"].startswith("org_")


def test_refusals_use_anthropics_error_envelope(sim: AnthropicSimulator, admin_key: str) -> None:
    workspace_key = sim.issue_key(ORG, scope="workspace")
    no_version = requests.get(f"{sim.base_url}/organizations/me", headers={"x-api-key": admin_key}, timeout=10)
    cases = [
        (get(sim, "sk-ant-admin01-nope", "/organizations/me"), 401, "authentication_error"),
        (get(sim, workspace_key, "/organizations/me"), 403, "permission_error"),
        (get(sim, admin_key, "/organizations/usage_report/messages"), 400, "invalid_request_error"),
        (get(sim, admin_key, "/organizations/nothing"), 404, "not_found_error"),
        (no_version, 400, "invalid_request_error"),
    ]
    for response, status, kind in cases:
        assert response.status_code == status
        jsonschema.validate(response.json(), ERROR)
        assert response.json()["error"]["type"] == kind
    assert workspace_key not in cases[1][0].text


def test_the_truth_is_what_is_served_and_nothing_exists_before_history(sim: AnthropicSimulator, admin_key: str) -> None:
    truth = sim.truth(ORG, NOW.replace(hour=0, minute=0), NOW)
    assert truth and max(item["period_start"] for item in truth) <= NOW
    assert sim.truth(ORG, NOW.replace(year=2025), NOW.replace(year=2025, day=11)) == []
