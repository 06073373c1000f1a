"""The home folder: a mistyped ``--home`` is not a new empty store, and a read-only home can still be read.

The tests run as root, for whom permission bits do not stop a write. A read-only home is made with the immutable
attribute (``chattr +i``) on the folder and the store file, which stops root too (the kernel answers EPERM, as it
answers EROFS on a read-only mount); where the file system has no such attribute those tests are skipped. The
store-level test opens the store read-only through SQLite itself and needs no attribute.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from connector_sdk.errors import StoreError
from connector_sdk.models import utcnow
from connector_sdk.stores.sqlite import SQLiteStore
from connectors.fal.simulator import FalSimulator
from tests.conftest import CliRunner

NO_STORE = "no store in {home}; connect a vendor first or check --home"


@pytest.mark.parametrize(
    "command",
    [
        ("status",),
        ("report",),
        ("rows",),
        ("alerts",),
        ("keys",),
        ("findings",),
        ("sync", "prod"),
        ("sync", "--all"),
        ("run", "--once"),
        ("disconnect", "prod"),
        ("budget", "list"),
        ("sink", "list", "prod"),
    ],
)
def test_a_home_without_a_store_is_said_so_and_not_created(
    cli: CliRunner, home: Path, command: tuple[str, ...]
) -> None:
    result = cli(*command)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == "error: " + NO_STORE.format(home=home)
    assert not home.exists(), "a mistyped --home must not become a new empty store"


def test_an_existing_folder_without_a_store_gets_none(cli: CliRunner, home: Path) -> None:
    home.mkdir()
    assert cli("status").returncode == 2
    assert list(home.iterdir()) == []


def test_connect_and_demo_create_the_home(cli: CliRunner, home: Path, sim: FalSimulator, admin_key: str) -> None:
    made = cli("connect", "fal", "--name", "prod", "--base-url", sim.base_url, env={"FAL_KEY": admin_key})
    assert made.returncode == 0, made.stderr
    assert (home / "connector-host.db").is_file()
    assert json.loads(cli("status", "--format", "json").stdout)[0]["name"] == "prod"


# -- a read-only home ----------------------------------------------------------------------------------------


def chattr(flag: str, *paths: Path) -> bool:
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True).returncode == 0


@pytest.fixture
def read_only_home(cli: CliRunner, home: Path, sim: FalSimulator, admin_key: str) -> Iterator[Path]:
    """A home with a synced connection, whose folder and files nobody (not even root) can write to."""
    made = cli(
        "connect",
        "fal",
        "--name",
        "prod",
        "--base-url",
        sim.base_url,
        "--backfill-days",
        "2",
        env={"FAL_KEY": admin_key},
    )
    assert made.returncode == 0, made.stderr
    assert cli("sync", "prod").returncode == 0
    frozen = [*home.iterdir(), home]
    if not chattr("+i", *frozen):
        pytest.skip("this file system has no immutable attribute (chattr +i) to make a read-only home with")
    try:
        with pytest.raises(PermissionError):
            (home / "probe").touch()
        yield home
    finally:
        chattr("-i", *frozen)


@pytest.mark.parametrize(
    ("command", "shows"),
    [
        (("status", "--format", "json"), '"name": "prod"'),
        (("report", "--format", "json"), '"api_key_label"'),
        (("rows", "prod"), '"connection":"prod"'),
        (("alerts",), ""),
        (("keys", "--format", "json"), '"listing_status": "listed"'),
        (("findings", "--all", "--format", "json"), "["),
        (("plugins",), "fal"),
        (("manifest", "fal"), '"id": "fal"'),
    ],
)
def test_read_commands_work_on_a_read_only_home(
    cli: CliRunner, read_only_home: Path, command: tuple[str, ...], shows: str
) -> None:
    before = sorted(p.name for p in read_only_home.iterdir())
    result = cli(*command)
    assert result.returncode == 0, result.stderr
    assert shows in result.stdout
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in read_only_home.iterdir()) == before


@pytest.mark.parametrize(
    "command",
    [
        ("sync", "prod"),
        ("run", "--once"),
        ("disconnect", "prod"),
        ("budget", "set", "prod", "--monthly", "10"),
        ("findings", "ack", "1", "--note", "seen"),
    ],
)
def test_write_commands_on_a_read_only_home_say_so_in_one_line(
    cli: CliRunner, read_only_home: Path, command: tuple[str, ...]
) -> None:
    result = cli(*command)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: the folder {read_only_home} is read-only: this command writes to the store "
        "(status, report, rows, alerts, keys and findings can still read it)"
    ]


def test_connect_into_a_home_that_cannot_be_created_says_so(cli: CliRunner, tmp_path: Path, admin_key: str) -> None:
    parent = tmp_path / "locked"
    parent.mkdir()
    if not chattr("+i", parent):
        pytest.skip("this file system has no immutable attribute (chattr +i)")
    try:
        result = cli("--home", str(parent / "home"), "connect", "fal", "--name", "x", env={"FAL_KEY": admin_key})
    finally:
        chattr("-i", parent)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: cannot create the home folder {parent / 'home'}: Operation not permitted"
    ]


def test_a_store_opened_read_only_reads_and_refuses_to_write(tmp_path: Path) -> None:
    """At the SQLite level (a writable folder, so SQLite may keep its -shm beside the store): nothing missing is
    created, the store file is not changed, and a write is a StoreError, not sqlite3's."""
    path = tmp_path / "connector-host.db"
    with pytest.raises(StoreError, match="no store at"):
        SQLiteStore(path, read_only=True)
    assert not path.exists()
    writer = SQLiteStore(path)
    writer.add_connection(name="c", connector="fal", config={}, credential=b"x", account="a", now=utcnow())
    writer.close()
    stored = path.read_bytes()
    reader = SQLiteStore(path, read_only=True)
    try:
        assert [c.name for c in reader.list_connections()] == ["c"]
        with pytest.raises(StoreError, match="read-only"):
            reader.set_next_sync("c", utcnow())
    finally:
        reader.close()
    assert path.read_bytes() == stored
