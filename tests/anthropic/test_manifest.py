"""The Anthropic manifest: valid, in step with AnthropicConfig, shipped in the wheel, honest about what it collects."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

from connector_sdk.models import Manifest
from connectors.anthropic.config import AnthropicConfig
from connectors.anthropic.connector import AnthropicConnector
from tests.conftest import CliRunner

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    return Manifest.model_validate(yaml.safe_load((ROOT / "manifests" / "anthropic.yaml").read_text(encoding="utf-8")))


def test_the_connector_serves_the_manifest_file_and_the_wheel_ships_it(manifest: Manifest) -> None:
    assert AnthropicConnector.manifest() == manifest and manifest.id == AnthropicConnector.id == "anthropic"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    included = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert included["manifests/anthropic.yaml"] == "connectors/anthropic/manifest.yaml"
    assert pyproject["project"]["entry-points"]["connector_sdk"]["anthropic"] == "connectors.anthropic"


def test_the_config_schema_is_exactly_what_anthropicconfig_generates(manifest: Manifest) -> None:
    assert manifest.config_schema == AnthropicConfig.model_json_schema()
    validator = jsonschema.Draft202012Validator(manifest.config_schema)
    assert validator.is_valid({"api_key": "sk-ant-admin01-x"})
    assert not validator.is_valid({"api_key": "sk-ant-admin01-x", "workspace": "wrkspc_1"})
    assert manifest.config_schema["properties"]["api_key"]["writeOnly"] is True


def test_authentication_asks_an_admin_for_an_admin_key_from_the_environment(manifest: Manifest) -> None:
    auth = manifest.authentication
    assert (auth.header, auth.format, auth.secret_field, auth.env_var) == (
        "x-api-key",
        "{api_key}",
        "api_key",
        "ANTHROPIC_ADMIN_KEY",
    )
    steps = " ".join(auth.setup_steps)
    assert "admin role" in steps and "Admin keys" in steps and "read:analytics" in steps and "403" in steps


def test_permissions_are_read_only_get_requests_and_limitations_name_what_is_missing(manifest: Manifest) -> None:
    assert manifest.permissions["read_only"] is True
    assert all(request.startswith("GET ") for request in manifest.permissions["requests"])
    limitations = " ".join(manifest.limitations)
    assert "100 groups" in limitations and "User key" in limitations and "All keys" in limitations
    assert "2 days" in limitations


def test_the_manifest_command_prints_it(cli: CliRunner, manifest: Manifest) -> None:
    result = cli("manifest", "anthropic")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == manifest.model_dump(mode="json")


@pytest.mark.parametrize("bad", ["", "sk-ant-admin01-\u200bkey", "sk ant"])
def test_a_key_that_cannot_be_a_header_is_refused_without_echoing_it(bad: str) -> None:
    with pytest.raises(ValueError) as refused:
        AnthropicConfig(api_key=bad)
    assert bad not in str(refused.value) or not bad
