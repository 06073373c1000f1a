"""The fal manifest: valid, in step with FalConfig, honest about what it collects, and what the CLI prints."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import ValidationError

import connector_sdk
from connector_sdk.models import Manifest
from connectors.fal.config import FalConfig
from connectors.fal.connector import FalConnector
from tests.conftest import CliRunner

ROOT = Path(__file__).resolve().parents[1]
MANIFEST_PATH = ROOT / "manifests" / "fal.yaml"


def raw_manifest() -> dict[str, Any]:
    return yaml.safe_load(MANIFEST_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    return Manifest.model_validate(raw_manifest())


def test_the_manifest_file_validates_as_a_manifest(manifest: Manifest) -> None:
    assert manifest.id == "fal" == FalConnector.id
    assert manifest.display_name == "fal.ai"


def test_the_connector_serves_the_manifest_file(manifest: Manifest) -> None:
    assert FalConnector.manifest() == manifest


def test_the_wheel_ships_the_same_manifest_file() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    included = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert included["manifests/fal.yaml"] == "connectors/fal/manifest.yaml"


def test_the_config_schema_is_exactly_what_falconfig_generates(manifest: Manifest) -> None:
    assert manifest.config_schema == FalConfig.model_json_schema()


def test_the_config_schema_is_a_valid_json_schema_that_accepts_a_config_and_refuses_extras(
    manifest: Manifest,
) -> None:
    validator = jsonschema.Draft202012Validator(manifest.config_schema)
    validator.check_schema(manifest.config_schema)
    assert list(validator.iter_errors({"api_key": "id:secret"})) == []
    assert list(validator.iter_errors({"api_key": "id:secret", "page_size": 500, "base_url": "https://x.test"})) == []
    assert list(validator.iter_errors({})) != []
    assert list(validator.iter_errors({"api_key": "id:secret", "colour": "red"})) != []
    assert list(validator.iter_errors({"api_key": "id:secret", "backfill_days": 0})) != []


def test_the_secret_fields_are_write_only_and_exactly_those_of_falconfig(manifest: Manifest) -> None:
    properties = manifest.config_schema["properties"]
    write_only = sorted(name for name, schema in properties.items() if schema.get("writeOnly") is True)
    assert write_only == sorted(FalConfig.secret_field_names()) == ["api_key"]
    assert manifest.authentication.secret_field in FalConfig.secret_field_names()
    assert manifest.authentication.secret_field in manifest.config_schema["required"]


def test_authentication_asks_for_an_admin_key_in_fal_header_format(manifest: Manifest) -> None:
    auth = manifest.authentication
    assert auth.required_scope == "Admin"
    assert auth.header == "Authorization"
    assert auth.format == "Key {api_key}"
    assert auth.env_var == "FAL_KEY"
    assert any("Admin" in step for step in auth.setup_steps)


def test_fal_is_polled_hourly(manifest: Manifest) -> None:
    assert manifest.poll_interval_seconds == 3600


def test_web_interface_usage_is_labelled_user_key(manifest: Manifest) -> None:
    assert manifest.labels["user_key"] == "User key"


def test_permissions_are_read_only_admin_and_only_get_requests(manifest: Manifest) -> None:
    assert manifest.permissions["read_only"] is True
    assert manifest.permissions["scope"] == "Admin"
    assert manifest.permissions["requests"]
    assert all(request.startswith("GET /") for request in manifest.permissions["requests"])


def test_the_manifest_version_is_the_package_version(manifest: Manifest) -> None:
    assert manifest.version == connector_sdk.__version__


def test_the_limitations_say_raw_tokens_and_user_profiles_are_not_available(manifest: Manifest) -> None:
    limitations = " ".join(manifest.limitations).lower()
    assert "raw token counts" in limitations
    assert "individual user profiles" in limitations


def test_the_data_collected_names_the_row_measures(manifest: Manifest) -> None:
    (dataset,) = manifest.data_collected
    assert {"quantity", "cost"} <= set(dataset.measures)
    assert {"api_key_label", "model", "period_start"} <= set(dataset.dimensions)


@pytest.mark.parametrize(
    "permissions",
    [{"read_only": False}, {}, {"read_only": "true"}, {"read_only": 1}, {"scope": "Admin"}],
    ids=["false", "missing", "string", "one", "scope-only"],
)
def test_a_manifest_that_is_not_read_only_is_rejected(permissions: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="read_only must be true"):
        Manifest.model_validate({**raw_manifest(), "permissions": permissions})


@pytest.mark.parametrize(
    ("field", "value"),
    [("id", "Fal!"), ("poll_interval_seconds", 0), ("data_collected", []), ("surprise", True)],
)
def test_a_malformed_manifest_is_rejected(field: str, value: Any) -> None:
    with pytest.raises(ValidationError):
        Manifest.model_validate({**raw_manifest(), field: value})


def test_a_manifest_needs_at_least_one_setup_step() -> None:
    raw = raw_manifest()
    raw["authentication"]["setup_steps"] = []
    with pytest.raises(ValidationError):
        Manifest.model_validate(raw)


def test_the_manifest_command_prints_the_manifest_as_json(cli: CliRunner, manifest: Manifest) -> None:
    result = cli("manifest", "fal")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed == manifest.model_dump(mode="json")
    assert printed["config_schema"] == FalConfig.model_json_schema()


def test_the_manifest_command_for_an_unknown_connector_names_the_loaded_ones(cli: CliRunner) -> None:
    result = cli("manifest", "nope")
    assert result.returncode == 2
    assert "'nope'" in result.stderr
    assert "fal" in result.stderr.partition("loaded: ")[2]  # among the loaded plugins, whichever others there are
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
