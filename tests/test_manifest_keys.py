"""What a manifest says about its key (help line, example, format pattern) and how the host uses it: the key's shape
is checked in the manifest's words before any vendor is asked, and a setting a connector lacks is named as such."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

import connectors.fal
import connectors.openai
from connector_sdk.errors import ConfigError
from connector_sdk.host import Host
from connector_sdk.models import Manifest
from connector_sdk.plugins import get_plugin_manager
from connectors.fal.connector import FalConnector
from connectors.fal.simulator import FalSimulator
from connectors.openai.connector import OpenAIConnector
from connectors.openai.simulator import OpenAISimulator


@pytest.fixture(scope="module")
def manifests() -> dict[str, Manifest]:
    return {c.id: c.manifest() for c in (FalConnector, OpenAIConnector)}


def test_every_built_in_manifest_describes_its_key_for_the_cli_and_the_portal(manifests: dict[str, Manifest]) -> None:
    for manifest in manifests.values():
        auth = manifest.authentication
        assert auth.env_var and auth.help and auth.key_example and auth.key_pattern
        assert auth.help.startswith(("a ", "an ")), "quoted after 'this connector needs'"
        assert manifest.key_problem(auth.key_example) is None, "the example has the shape it illustrates"


def test_the_patterns_take_every_key_the_simulators_issue_even_those_the_vendor_will_refuse(
    manifests: dict[str, Manifest],
) -> None:
    with FalSimulator() as fal, OpenAISimulator(history_days=2) as openai:
        fal_keys = [fal.add_account("team-a"), fal.issue_key("team-a", scope="API")]
        openai.add_organization("Org A")
        openai_keys = [openai.issue_key("Org A"), openai.issue_key("Org A", scope="project")]
    for key in fal_keys:
        assert manifests["fal"].key_problem(key) is None
        assert manifests["fal"].key_problem(f"  {key}\n") is None  # pasted with spaces around it
    for key in openai_keys:
        assert manifests["openai"].key_problem(key) is None


@pytest.mark.parametrize(
    ("connector", "key"),
    [
        ("fal", "just-a-secret-without-an-id"),
        ("fal", "Key abc:def"),
        ("fal", ""),
        ("openai", "Bearer sk-admin-abc"),
        ("openai", "org-4f2b9c"),
        ("openai", "abc:def"),
        ("openai", "sk-admin-abc def"),
    ],
)
def test_a_key_of_the_wrong_shape_is_refused_in_one_line_that_never_repeats_it(
    manifests: dict[str, Manifest], connector: str, key: str
) -> None:
    problem = manifests[connector].key_problem(key)
    assert problem is not None and "\n" not in problem
    assert manifests[connector].authentication.key_example in problem
    assert not key or key not in problem


def test_a_manifest_without_a_pattern_takes_any_key_and_one_with_a_broken_pattern_is_invalid(
    manifests: dict[str, Manifest],
) -> None:
    raw = manifests["fal"].model_dump()
    raw["authentication"] |= {"key_pattern": None, "key_example": None, "help": None}
    assert Manifest.model_validate(raw).key_problem("anything at all") is None
    raw["authentication"]["key_pattern"] = "sk-(unclosed"
    with pytest.raises(ValidationError, match="key_pattern is not a regular expression"):
        Manifest.model_validate(raw)


def test_the_host_refuses_a_malformed_key_and_a_setting_the_connector_lacks_before_any_vendor_call(
    tmp_path: Path,
) -> None:
    plugins = get_plugin_manager(load_entrypoints=False, plugins=[connectors.fal, connectors.openai])
    with OpenAISimulator(history_days=2) as sim, Host.open(tmp_path, store_url="", plugins=plugins) as host:
        key = sim.add_organization("Org A")
        base = {"base_url": sim.base_url, "backfill_days": 1}
        with pytest.raises(ConfigError, match=r"not in OpenAI's key format \(sk-admin-\.\.\.\)"):
            host.connect("openai", "oa", {**base, "api_key": "org-4f2b9c"})
        with pytest.raises(
            ConfigError,
            match=r"^invalid openai configuration: openai has no setting page_size; its settings are .*restated_days",
        ):
            host.connect("openai", "oa", {**base, "api_key": key, "page_size": 50})
        assert sim.requests == []
        assert host.connect("openai", "oa", {**base, "api_key": f" {key} "}).account == "Org A"
        with pytest.raises(ConfigError, match="key format"):
            host.reconnect("oa", {"api_key": "Bearer " + key})
