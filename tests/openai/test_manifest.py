"""The OpenAI manifest: valid, in step with OpenAIConfig, shipped in the wheel, honest about what it collects."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

from connector_sdk.models import Manifest
from connectors.openai.config import OpenAIConfig
from connectors.openai.connector import OpenAIConnector
from tests.conftest import CliRunner

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    return Manifest.model_validate(yaml.safe_load((ROOT / "manifests" / "openai.yaml").read_text(encoding="utf-8")))


def test_the_connector_serves_the_manifest_file_and_the_wheel_ships_it(manifest: Manifest) -> None:
    assert OpenAIConnector.manifest() == manifest and manifest.id == OpenAIConnector.id == "openai"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    included = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert included["manifests/openai.yaml"] == "connectors/openai/manifest.yaml"
    assert pyproject["project"]["entry-points"]["connector_sdk"]["openai"] == "connectors.openai"


def test_the_config_schema_is_exactly_what_openaiconfig_generates(manifest: Manifest) -> None:
    assert manifest.config_schema == OpenAIConfig.model_json_schema()
    validator = jsonschema.Draft202012Validator(manifest.config_schema)
    assert validator.is_valid({"api_key": "sk-admin-x"})
    assert not validator.is_valid({"api_key": "sk-admin-x", "organization": "org-1"})
    assert manifest.config_schema["properties"]["api_key"]["writeOnly"] is True


def test_authentication_asks_an_organization_owner_for_an_admin_key_from_the_environment(manifest: Manifest) -> None:
    auth = manifest.authentication
    assert (auth.header, auth.format, auth.secret_field, auth.env_var) == (
        "Authorization",
        "Bearer {api_key}",
        "api_key",
        "OPENAI_ADMIN_KEY",
    )
    steps = " ".join(auth.setup_steps)
    assert "Organization Owner" in steps and "Admin keys" in steps and "read-only" in steps


def test_permissions_are_read_only_get_requests_and_limitations_name_what_is_missing(manifest: Manifest) -> None:
    assert manifest.permissions["read_only"] is True
    assert all(request.startswith("GET ") for request in manifest.permissions["requests"])
    limitations = " ".join(manifest.limitations)
    assert "ChatGPT" in limitations and "restate" in limitations and "User key" in limitations


def test_the_manifest_command_prints_it(cli: CliRunner, manifest: Manifest) -> None:
    result = cli("manifest", "openai")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == manifest.model_dump(mode="json")


@pytest.mark.parametrize("bad", ["", "sk-admin-\u200bkey", "sk admin"])
def test_a_key_that_cannot_be_a_header_is_refused_without_echoing_it(bad: str) -> None:
    with pytest.raises(ValueError) as refused:
        OpenAIConfig(api_key=bad)
    assert bad not in str(refused.value) or not bad
