"""A store written by the first released schema opens, migrates and keeps everything."""

from __future__ import annotations

import json
import shutil
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from connector_sdk.host import Host
from connector_sdk.models import ConnectionState
from connector_sdk.stores.migrations import LATEST_VERSION, MIGRATIONS
from tests.conftest import CliRunner, fal_plugins
from tests.fixtures.make_store_v1 import KEY

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "store-v1.sqlite"


@pytest.fixture
def v1_home(home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home.mkdir(parents=True)
    shutil.copy(FIXTURE, home / "connector-host.db")
    monkeypatch.setenv("CONNECTOR_HOST_SECRET_KEY", KEY)
    return home


def raw_total(path: Path) -> tuple[int, Decimal]:
    db = sqlite3.connect(path)
    try:
        costs = [Decimal(c) for (c,) in db.execute("SELECT cost FROM usage_rows")]
    finally:
        db.close()
    return len(costs), sum(costs, Decimal(0))


def test_the_fixture_is_the_first_released_schema() -> None:
    assert MIGRATIONS[0].version == 1
    assert sqlite3.connect(FIXTURE).execute("PRAGMA user_version").fetchone() == (1,)


def test_a_version_1_store_opens_at_the_latest_version_with_nothing_lost(v1_home: Path) -> None:
    count, total = raw_total(FIXTURE)
    with Host.open(v1_home, store_url="", plugins=fal_plugins()) as host:
        assert host.store.schema_version() == LATEST_VERSION
        (connection,) = host.store.list_connections()
        assert (connection.name, connection.state, connection.reason, connection.account) == (
            "fixture",
            ConnectionState.ERROR,
            "a reason kept across upgrades",
            "fixture-team",
        )
        assert connection.watermark is not None
        rows = list(host.store.iter_rows("fixture"))
        assert len(rows) == count == 58
        assert sum((r.cost for r in rows), Decimal(0)) == total
        # Rows stored before vendors other than fal are billed cost, without workspace or line item (schema v6).
        assert {(r.kind, r.workspace_id, r.workspace_name, r.line_item) for r in rows} == {("cost", None, None, None)}
        first, last = min(r.period_start for r in rows), max(r.period_end for r in rows)
        lines = host.store.report("fixture", since=first, until=last)
        assert (sum(x.cost for x in lines), sum(x.row_count for x in lines)) == (total, count)
        assert {x.connector for x in lines} == {"fal"}
        assert host.config_for("fixture").api_key.get_secret_value().count(":") == 1
        assert [c.new for c in host.store.status_history("fixture")] == [
            ConnectionState.CONNECTED,
            ConnectionState.ERROR,
        ]


def test_the_cli_reads_an_upgraded_store(cli: CliRunner, v1_home: Path) -> None:
    result = cli("status", "--format", "json", env={"CONNECTOR_HOST_SECRET_KEY": KEY})
    assert result.returncode == 0, result.stderr
    (status,) = json.loads(result.stdout)
    assert (status["name"], status["rows"], status["state"]) == ("fixture", 58, "error")


def test_an_empty_file_is_migrated_from_nothing(tmp_path: Path) -> None:
    sqlite3.connect(tmp_path / "connector-host.db").close()
    with Host.open(tmp_path, store_url="", plugins=fal_plugins()) as host:
        assert host.store.schema_version() == LATEST_VERSION
        assert host.store.list_connections() == []
