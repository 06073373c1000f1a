"""``connect anthropic`` in the real CLI: the key comes from ANTHROPIC_ADMIN_KEY (named by the manifest) or stdin."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from connectors.anthropic.simulator import AnthropicSimulator
from tests.conftest import CliRunner

from .conftest import ORG


@pytest.fixture
def sim() -> Iterator[AnthropicSimulator]:
    # The CLI syncs up to the wall clock: the simulator's present is the wall clock too.
    with AnthropicSimulator(history_days=40, seed=7) as simulator:
        yield simulator


def connect(cli: CliRunner, sim: AnthropicSimulator, key: str | None, *extra: str) -> tuple[int, str, str]:
    env = {"ANTHROPIC_ADMIN_KEY": key if key is not None else ""}
    result = cli("connect", "anthropic", "--name", "an", "--base-url", sim.base_url, *extra, env=env)
    return result.returncode, result.stdout, result.stderr


def test_connect_with_an_admin_key_names_the_organization(
    cli: CliRunner, sim: AnthropicSimulator, admin_key: str
) -> None:
    # A sync through the CLI stores usage rows (null cost), which waits for the stores' migration to the general
    # row model; the sync itself is tested at the connector level (test_connector.py).
    code, out, err = connect(cli, sim, admin_key)
    assert code == 0, err
    assert ORG in out
    status = cli("status", "--format", "json")
    assert status.returncode == 0, status.stderr
    assert admin_key not in status.stdout + out + err
    [connection] = json.loads(status.stdout)
    assert (connection["connector"], connection["account"]) == ("anthropic", ORG)


def test_connect_without_a_key_names_the_variable_from_the_manifest(cli: CliRunner, sim: AnthropicSimulator) -> None:
    code, _, err = connect(cli, sim, None)
    assert code == 2
    assert "ANTHROPIC_ADMIN_KEY" in err and "--api-key-stdin" in err


def test_a_workspace_key_and_a_bad_key_are_refused_with_what_to_do(
    cli: CliRunner, sim: AnthropicSimulator, admin_key: str
) -> None:
    workspace_key = sim.issue_key(ORG, scope="workspace")
    code, _, err = connect(cli, sim, workspace_key)
    assert code == 3
    assert "admin role" in err and "Admin key" in err and workspace_key not in err
    code, _, err = connect(cli, sim, "sk-ant-admin01-not-a-real-key")
    assert code == 3
    assert "invalid" in err and "sk-ant-admin01-not-a-real-key" not in err


def test_a_revoked_key_stops_the_sync_with_exit_3_and_reconnect_required(
    cli: CliRunner, sim: AnthropicSimulator, admin_key: str
) -> None:
    assert connect(cli, sim, admin_key)[0] == 0
    sim.revoke_key(admin_key)
    result = cli("sync", "an")
    assert result.returncode == 3, result.stderr
    assert "revoked" in result.stderr and admin_key not in result.stderr
    [connection] = json.loads(cli("status", "--format", "json").stdout)
    assert connection["state"] == "reconnect_required"
