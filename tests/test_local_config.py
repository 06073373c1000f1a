"""Local mistakes are not the vendor's fault: a wrong or garbled encryption key, or a number in the environment
that is not one, stops the command before any sync starts, in one line naming the variable (exit 2), and neither
a run nor the connection's state is written."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from connector_sdk.environment import NUMBERS, check_numbers, number
from connector_sdk.errors import ConfigError
from connectors.fal.simulator import FalSimulator
from tests.conftest import CliRunner


@pytest.fixture
def connected(cli: CliRunner, sim: FalSimulator, admin_key: str) -> str:
    made = cli(
        "connect",
        "fal",
        "--name",
        "prod",
        "--base-url",
        sim.base_url,
        "--backfill-days",
        "1",
        env={"FAL_KEY": admin_key},
    )
    assert made.returncode == 0, made.stderr
    return "prod"


def untouched(cli: CliRunner, home: Path) -> None:
    """No run was written and the connection is as `connect` left it."""
    (status,) = json.loads(cli("status", "--format", "json").stdout)
    assert status["state"] == "connected" and status["reason"] is None and status["last_sync"] is None
    assert sqlite3.connect(home / "connector-host.db").execute("SELECT COUNT(*) FROM sync_runs").fetchone() == (0,)


@pytest.mark.parametrize(
    ("key", "says"),
    [
        (Fernet.generate_key().decode(), "cannot be decrypted with this encryption key (CONNECTOR_HOST_SECRET_KEY)"),
        ("not-a-key", "the encryption key in CONNECTOR_HOST_SECRET_KEY is not a valid Fernet key"),
    ],
    ids=["another-valid-key", "garbage"],
)
@pytest.mark.parametrize("command", [("sync", "prod"), ("sync", "--all"), ("run", "--once")])
def test_a_wrong_encryption_key_stops_before_any_sync(
    cli: CliRunner, home: Path, connected: str, key: str, says: str, command: tuple[str, ...]
) -> None:
    result = cli(*command, env={"CONNECTOR_HOST_SECRET_KEY": key})
    assert result.returncode == 2, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert says in line
    assert "Traceback" not in result.stderr
    untouched(cli, home)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CONNECTOR_HOST_MAX_ATTEMPTS", "abc"),
        ("CONNECTOR_HOST_MAX_ATTEMPTS", "0"),
        ("CONNECTOR_HOST_MAX_ATTEMPTS", "2.5"),
        ("CONNECTOR_HOST_BACKOFF_BASE", "-1"),
        ("CONNECTOR_HOST_BACKOFF_BASE", "nan"),
        ("CONNECTOR_HOST_VISIBILITY_TIMEOUT", "soon"),
        ("CONNECTOR_HOST_TASK_RETRY_BASE", "-0.5"),
        ("CONNECTOR_HOST_MAX_CONCURRENT_PER_HOST", "many"),
    ],
)
def test_an_unusable_number_in_the_environment_stops_before_any_sync(
    cli: CliRunner, home: Path, connected: str, variable: str, value: str
) -> None:
    result = cli("sync", "prod", env={variable: value})
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert variable in result.stderr
    untouched(cli, home)


def test_every_numeric_variable_is_read_through_the_one_checked_table() -> None:
    """A number parsed straight from the environment would escape the check at host open."""
    root = Path(__file__).resolve().parents[1] / "connector_sdk"
    sources = "".join(p.read_text() for p in root.rglob("*.py"))
    for parse in ("int(os.environ", "float(os.environ", "int(env", "float(env"):
        assert parse not in sources, f"{parse}...: read numbers with connector_sdk.environment.number()"
    for name, spec in NUMBERS.items():
        assert number(name, {}) == spec.default
        with pytest.raises(ConfigError, match=name):
            check_numbers({name: "x"})


def test_numbers_accept_what_they_should() -> None:
    assert number("CONNECTOR_HOST_MAX_ATTEMPTS", {"CONNECTOR_HOST_MAX_ATTEMPTS": " 3 "}) == 3
    assert number("CONNECTOR_HOST_BACKOFF_BASE", {"CONNECTOR_HOST_BACKOFF_BASE": "0"}) == 0.0
    assert number("CONNECTOR_HOST_BACKOFF_BASE", {"CONNECTOR_HOST_BACKOFF_BASE": ""}) == 0.5
