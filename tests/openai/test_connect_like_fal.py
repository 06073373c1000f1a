"""`connect openai` works like `connect fal` in the real CLI: the key's variable, its format check and the setup
advice come from the manifest, options the connector lacks are refused by name, and no help text names one vendor."""

from __future__ import annotations

import json
import re

import pytest

from connector_sdk.plugins import get_plugin_manager
from connectors.openai.simulator import OpenAISimulator
from tests.conftest import CliRunner

from .conftest import ORG

VENDOR_WORDS = re.compile(r"\bfal\b|FAL_KEY|fal\.ai|fal-ai|\bopenai\b|OPENAI_|sk-admin", re.IGNORECASE)


def connect(cli: CliRunner, sim: OpenAISimulator, key: str | None, *extra: str, stdin: str | None = None):
    env = {"OPENAI_ADMIN_KEY": key or ""}
    return cli("connect", "openai", "--name", "oa", "--base-url", sim.base_url, *extra, env=env, stdin=stdin)


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def test_connect_reads_the_admin_key_from_the_variable_the_manifest_names_or_from_stdin(
    cli: CliRunner, sim: OpenAISimulator, admin_key: str
) -> None:
    by_env = connect(cli, sim, admin_key)
    assert by_env.returncode == 0, by_env.stderr
    assert f"to openai account {ORG}" in by_env.stdout and admin_key not in by_env.stdout + by_env.stderr
    second = sim.issue_key(ORG, name="Second admin key")
    by_stdin = cli(
        "connect", "openai", "--name", "oa2", "--base-url", sim.base_url, "--api-key-stdin", stdin=second + "\n"
    )
    assert by_stdin.returncode == 0, by_stdin.stderr
    assert "already syncs openai account" in by_stdin.stderr  # the same organization twice is said, not refused
    [first, other] = json.loads(cli("status", "--format", "json").stdout)
    assert {first["account"], other["account"]} == {ORG} and {first["connector"], other["connector"]} == {"openai"}


def test_without_a_key_the_error_calls_it_by_its_title_and_names_the_manifests_variable(
    cli: CliRunner, sim: OpenAISimulator
) -> None:
    result = connect(cli, sim, None)
    assert result.returncode == 2
    assert one_line(result.stderr) == (
        "error: no Admin key given: set OPENAI_ADMIN_KEY or pipe it to --api-key-stdin "
        "(secrets are never taken as arguments)"
    )


def test_a_project_key_is_refused_with_the_owner_and_admin_key_advice_and_nothing_is_stored(
    cli: CliRunner, sim: OpenAISimulator, admin_key: str
) -> None:
    project_key = sim.issue_key(ORG, scope="project")
    result = connect(cli, sim, project_key)
    assert result.returncode == 3
    line = one_line(result.stderr)
    assert "Organization Owner" in line and "Admin key" in line
    assert project_key not in result.stderr + result.stdout
    assert any(r["path"].endswith("/organization/costs") for r in sim.requests)  # OpenAI itself said no
    assert json.loads(cli("status", "--format", "json").stdout) == []


def test_a_malformed_key_is_refused_before_openai_is_asked_and_an_unknown_one_by_openai(
    cli: CliRunner, sim: OpenAISimulator, admin_key: str
) -> None:
    asked = len(sim.requests)
    malformed = connect(cli, sim, "org-Acme1234 pasted by mistake")
    assert malformed.returncode == 2
    line = one_line(malformed.stderr)
    assert "OpenAI's key format (sk-admin-...)" in line and "org-Acme1234" not in line
    assert len(sim.requests) == asked
    unknown = connect(cli, sim, "sk-admin-never-issued-by-anyone")
    assert unknown.returncode == 3
    assert "invalid" in unknown.stderr and "never-issued" not in unknown.stderr
    assert json.loads(cli("status", "--format", "json").stdout) == []


def test_reconnect_takes_the_new_key_from_the_same_variable_and_refuses_a_project_key(
    cli: CliRunner, sim: OpenAISimulator, admin_key: str
) -> None:
    assert connect(cli, sim, admin_key).returncode == 0
    project_key = sim.issue_key(ORG, scope="project")
    refused = cli("reconnect", "oa", env={"OPENAI_ADMIN_KEY": project_key})
    assert refused.returncode == 3 and "Organization Owner" in refused.stderr
    malformed = cli("reconnect", "oa", env={"OPENAI_ADMIN_KEY": "Bearer " + admin_key})
    assert malformed.returncode == 2 and "key format" in malformed.stderr and admin_key not in malformed.stderr
    fresh = sim.issue_key(ORG, name="Rotated admin key")
    done = cli("reconnect", "oa", env={"OPENAI_ADMIN_KEY": fresh})
    assert done.returncode == 0, done.stderr
    assert "Reconnected oa" in done.stdout


@pytest.mark.parametrize(
    ("connector", "args", "names", "lists"),
    [
        ("openai", ["--page-size", "50"], "--page-size", "restated_days"),
        ("openai", ["--set", "team=acme"], "--set team", "timeout_seconds"),
        ("fal", ["--set", "restated_days=2"], "--set restated_days", "page_size"),
    ],
)
def test_an_option_the_connectors_config_lacks_is_refused_in_one_line_naming_its_settings(
    cli: CliRunner, connector: str, args: list[str], names: str, lists: str
) -> None:
    # No key is set at all: the option is refused first, so the person fixes the command before finding a key.
    result = cli("connect", connector, "--name", "x", *args)
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert f"error: {names}: {connector} has no such setting; its settings are " in line
    assert lists in line and "api_key" not in line


def _installed() -> dict[str, tuple[str, str | None]]:
    plugins = get_plugin_manager()
    manifests = [plugins.connector(cid).manifest() for cid in plugins.connectors]
    return {m.id: (m.display_name, m.authentication.env_var) for m in manifests}


@pytest.mark.parametrize(
    "command", [["connect"], ["reconnect"], ["prices"], ["estimate"], ["budget", "set"], ["manifest"], ["status"]]
)
def test_help_texts_name_no_single_vendor_outside_the_list_generated_from_the_manifests(
    cli: CliRunner, command: list[str]
) -> None:
    result = cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    text, _, generated = result.stdout.partition("Connectors installed here:")
    assert not VENDOR_WORDS.search(text), VENDOR_WORDS.search(text)
    if command[0] in ("connect", "reconnect"):
        installed = _installed()
        assert {"fal", "openai"} <= set(installed)
        for connector_id, (display_name, env_var) in installed.items():
            entry = re.search(
                rf"^  {re.escape(connector_id)} +{re.escape(display_name)}\. Key from (\S+)", generated, re.M
            )
            assert entry is not None, (connector_id, generated)
            assert entry.group(1) == env_var
    else:
        assert generated == ""
