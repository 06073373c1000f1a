"""Every operation of the OpenAPI description, called with inputs Hypothesis draws from its own schemas (and with
junk): never a 500, every answer shaped as described, and never a secret in a body."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import httpx
import jsonschema
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from connectors.fal.simulator import FalSimulator
from tests.portal.conftest import LivePortal, wait_for_sync

TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
INTERESTING = {
    "name": st.sampled_from(["fal-prod", "nope", "a.b_c-d", "x" * 65]),
    "connector_id": st.sampled_from(["fal", "nope"]),
    "since": st.sampled_from(["2026-01-01", "2026-01-01T10:00:00Z", "9999-12-31T23:59:59", "yesterday", ""]),
    "until": st.sampled_from(["2030-01-01", "0001-01-01", "2026-01-01T10:00:00+05:00", "soon"]),
    "key_label": st.sampled_from(["User key", "Production Key"]),
    "finding_id": st.sampled_from([1, 2, 3, 0, -1, 2**70]),
    "q": st.sampled_from(["admin", "Production", ""]),
    "vendor": st.sampled_from(["fal", "openai"]),
    "connection": st.sampled_from(["fal-prod", "nope"]),
}


def resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def from_schema(schema: dict[str, Any], spec: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values valid for a (subset of) JSON Schema: what a well-behaved client sends."""
    schema = resolve(schema, spec)
    if depth > 4:
        return st.none()
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    for combinator in ("anyOf", "oneOf"):
        if combinator in schema:
            return st.one_of([from_schema(s, spec, depth + 1) for s in schema[combinator]])
    kind = schema.get("type")
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {}), spec, depth + 1), max_size=3)
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        values = st.fixed_dictionaries(
            {k: from_schema(v, spec, depth + 1) for k, v in props.items() if k in required},
            optional={k: from_schema(v, spec, depth + 1) for k, v in props.items() if k not in required},
        )
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and not props:
            return st.dictionaries(TEXT, from_schema(extra, spec, depth + 1), max_size=3)
        return values
    if kind == "string":
        return TEXT
    return JUNK


def parameter(
    param: dict[str, Any], spec: dict[str, Any], known: dict[str, st.SearchStrategy[Any]] | None = None
) -> st.SearchStrategy[Any]:
    """Mostly values that lead somewhere (an existing connection, a real date, a key the inventory holds), else
    anything the schema allows."""
    interesting = {**INTERESTING, **(known or {})}.get(param["name"])
    if interesting is None:
        return st.one_of(from_schema(param["schema"], spec), TEXT)
    return st.one_of(interesting, interesting, from_schema(param["schema"], spec), TEXT)


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    ops = [(method.upper(), path, op) for path, item in spec["paths"].items() for method, op in item.items()]
    # Disconnecting (and purging) last, so the other operations meet a live connection.
    return sorted(ops, key=lambda o: o[1].endswith("/disconnect"))


def response_schema(op: dict[str, Any], status: int, spec: dict[str, Any]) -> dict[str, Any] | None:
    described = op["responses"].get(str(status))
    content = (described or {}).get("content", {}).get("application/json")
    if content is None or "schema" not in content:
        return None
    return {**content["schema"], "components": spec["components"]}


@pytest.fixture
def connected(api: httpx.Client, sim: FalSimulator, admin_key: str) -> list[str]:
    body = {"connector": "fal", "name": "fal-prod", "config": {"api_key": admin_key, "base_url": sim.base_url}}
    created = api.post("/api/v1/connections", json=body | {"config": body["config"] | {"backfill_days": 1}})
    assert created.status_code == 201
    wait_for_sync(api, created.json()["sync"]["status_url"])
    return [admin_key, admin_key.partition(":")[2]]


def walk(
    api: httpx.Client,
    spec: dict[str, Any],
    method: str,
    path: str,
    secrets: list[str],
    known: dict[str, st.SearchStrategy[Any]] | None = None,
) -> None:
    """Call one operation with drawn path, query and body values; check each answer against the description."""
    op = spec["paths"][path][method.lower()]
    path_params = [p for p in op.get("parameters", []) if p["in"] == "path"]
    query_params = [p for p in op.get("parameters", []) if p["in"] == "query"]
    body_schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")

    @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def call(data: st.DataObject) -> None:
        url = path
        for p in path_params:
            value = str(data.draw(parameter(p, spec, known)))
            # "." and ".." are dot segments: HTTP clients resolve them away (/connectors/. is /connectors/), so no
            # request can carry them as a path parameter.
            assume(value not in (".", ".."))
            url = url.replace("{" + p["name"] + "}", quote(value, safe=""))
        query = {p["name"]: data.draw(st.none() | parameter(p, spec, known)) for p in query_params}
        kwargs: dict[str, Any] = {"params": {k: v for k, v in query.items() if v is not None}}
        if body_schema is not None:
            kwargs["json"] = data.draw(st.one_of(from_schema(body_schema, spec), JUNK))
        response = api.request(method, url, **kwargs)
        assert response.status_code < 500, f"{method} {url}: {response.text[:300]}"
        assert str(response.status_code) in op["responses"], f"{method} {path} answered an undescribed status"
        for secret in secrets:
            assert secret not in response.text, f"{method} {url} answered with a secret"
        if response.headers.get("content-type", "").startswith("application/json"):
            payload = response.json()
            if response.status_code >= 400:
                assert payload["error"]["message"] and payload["error"]["status"] == response.status_code
            schema = response_schema(op, response.status_code, spec)
            if schema is not None:
                jsonschema.validate(payload, schema, cls=jsonschema.Draft202012Validator)

    call()


def test_every_operation_answers_as_described_never_500_and_never_with_a_secret(
    api: httpx.Client, portal: LivePortal, connected: list[str]
) -> None:
    spec = portal.app.openapi()
    # The inventory's own key ids (the connection's admin key among them), so key paths reach real keys too.
    key_ids = [k.key_id for k in portal.host.keys(None)]
    assert key_ids
    known = {"key_id": st.sampled_from([*key_ids, "key_nope"])}
    walked = []
    for method, path, _ in operations(spec):
        walk(api, spec, method, path, connected, known)
        walked.append(f"{method} {path}")
    portal.wait_for_syncs()
    assert len(walked) >= 24, "every operation of the API was walked"
    assert not any(secret in json.dumps(spec) for secret in connected)
