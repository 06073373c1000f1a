"""``connect openai`` in the real CLI: the key comes from OPENAI_ADMIN_KEY (named by the manifest) or stdin."""

from __future__ import annotations

import json

from connectors.openai.simulator import OpenAISimulator
from tests.conftest import CliRunner

from .conftest import ORG


def connect(cli: CliRunner, sim: OpenAISimulator, key: str | None, *extra: str) -> tuple[int, str, str]:
    env = {"OPENAI_ADMIN_KEY": key} if key is not None else {"OPENAI_ADMIN_KEY": ""}
    result = cli("connect", "openai", "--name", "oa", "--base-url", sim.base_url, *extra, env=env)
    return result.returncode, result.stdout, result.stderr


def test_connect_with_an_admin_key_names_the_organization(cli: CliRunner, sim: OpenAISimulator, admin_key: str) -> None:
    code, out, err = connect(cli, sim, admin_key)
    assert code == 0, err
    assert ORG in out
    status = cli("status", "--format", "json")
    assert status.returncode == 0, status.stderr
    assert admin_key not in status.stdout
    [connection] = json.loads(status.stdout)
    assert (connection["connector"], connection["account"]) == ("openai", ORG)


def test_connect_without_a_key_names_the_variable_from_the_manifest(cli: CliRunner, sim: OpenAISimulator) -> None:
    code, _, err = connect(cli, sim, None)
    assert code == 2
    assert "OPENAI_ADMIN_KEY" in err and "--api-key-stdin" in err


def test_a_project_key_and_a_bad_key_are_refused_with_what_to_do(
    cli: CliRunner, sim: OpenAISimulator, admin_key: str
) -> None:
    project_key = sim.issue_key(ORG, scope="project")
    code, _, err = connect(cli, sim, project_key)
    assert code == 3
    assert "Organization Owner" in err and "Admin key" in err and project_key not in err
    code, _, err = connect(cli, sim, "sk-admin-not-a-real-key")
    assert code == 3
    assert "invalid" in err and "sk-admin-not-a-real-key" not in err


def test_a_revoked_key_stops_the_sync_with_exit_3_and_reconnect_required(
    cli: CliRunner, sim: OpenAISimulator, admin_key: str
) -> None:
    assert connect(cli, sim, admin_key)[0] == 0
    sim.revoke_key(admin_key)
    result = cli("sync", "oa")
    assert result.returncode == 3, result.stderr
    assert "revoked" in result.stderr and admin_key not in result.stderr
    [connection] = json.loads(cli("status", "--format", "json").stdout)
    assert connection["state"] == "reconnect_required"
