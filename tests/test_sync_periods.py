"""A sync over a vendor that bills by the day: the connector widens its window, and the watermark never claims a
day that is not over."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

import connector_sdk.sinks
import connectors.openai
from connector_sdk.errors import ConnectorHostError
from connector_sdk.host import Host
from connector_sdk.models import Page, RunOutcome, SyncWindow
from connector_sdk.plugins import get_plugin_manager
from connector_sdk.sync import page_watermark, sync_now, widened_window
from connectors.openai.config import OpenAIConfig
from connectors.openai.connector import OpenAIConnector
from connectors.openai.simulator import OpenAISimulator
from tests.store_fixtures import daily_cost_row, hour, quantity_row

NOW = datetime(2026, 3, 10, 14, 30, tzinfo=UTC)
TODAY = datetime(2026, 3, 10, tzinfo=UTC)
ORG = "Acme Research"


# -- the watermark of a page -----------------------------------------------------------------------------------
def test_hourly_rows_leave_the_watermark_at_the_page_end_or_the_current_hour() -> None:
    rows = [quantity_row(at=h) for h in range(5)]
    assert page_watermark(Page(rows=rows, covers_from=hour(0), complete_through=hour(5)), hour(9)) == hour(5)
    # The current hour is still growing: complete through its start, as before.
    assert page_watermark(Page(rows=rows, covers_from=hour(0), complete_through=hour(5)), hour(4)) == hour(4)


def test_a_day_billed_as_one_row_is_complete_only_once_it_is_over() -> None:
    today = [daily_cost_row(day=1), quantity_row(at=24), quantity_row(at=30)]
    partial = Page(rows=today, covers_from=hour(24), complete_through=hour(31))
    assert page_watermark(partial, hour(30) + timedelta(minutes=5)) == hour(24)
    over = Page(rows=[daily_cost_row(day=0)], covers_from=hour(0), complete_through=hour(24))
    assert page_watermark(over, hour(30)) == hour(24)
    # A page without rows knows of nothing unfinished.
    assert page_watermark(Page(rows=[], covers_from=hour(24), complete_through=hour(31)), hour(40)) == hour(31)


# -- the window a connector widens ---------------------------------------------------------------------------
@pytest.fixture
def sim() -> Iterator[OpenAISimulator]:
    with OpenAISimulator(now=NOW, history_days=20, seed=7) as simulator:
        yield simulator


def openai_connector(sim: OpenAISimulator, key: str) -> OpenAIConnector:
    return OpenAIConnector(OpenAIConfig(api_key=key, base_url=sim.base_url, restated_days=3))


def test_the_host_syncs_the_window_the_connector_widens_and_refuses_a_narrower_one(sim: OpenAISimulator) -> None:
    connector = openai_connector(sim, sim.add_organization(ORG))
    asked = SyncWindow(start=NOW.replace(minute=0) - timedelta(hours=2), end=NOW.replace(minute=0) + timedelta(hours=1))
    assert widened_window(connector, asked) == SyncWindow(start=TODAY - timedelta(days=3), end=asked.end)

    class Narrowing(OpenAIConnector):
        def sync_window(self, window: SyncWindow) -> SyncWindow:
            return SyncWindow(start=window.start + timedelta(hours=1), end=window.end)

    narrowing = Narrowing(connector.config)
    with pytest.raises(ConnectorHostError, match="narrowed"):
        widened_window(narrowing, asked)
    connector.close()
    narrowing.close()


# -- end to end: run_sync over the OpenAI simulator ----------------------------------------------------------
def test_a_daily_billing_vendor_is_synced_whole_days_and_restated_days_are_read_again(
    sim: OpenAISimulator, tmp_path: Path
) -> None:
    key = sim.add_organization(ORG)
    clock = [NOW]
    plugins = get_plugin_manager(load_entrypoints=False, plugins=[connectors.openai, connector_sdk.sinks])
    with Host.open(tmp_path, store_url="", plugins=plugins, clock=lambda: clock[0]) as host:
        host.connect(
            "openai", "oa", {"api_key": key, "base_url": sim.base_url, "backfill_days": 5, "lookback_hours": 0}
        )
        first = sync_now(host, "oa")
        assert first.outcome == RunOutcome.SUCCEEDED, first.message
        # Five days back from the current hour, floored to the day: each day's cost row is read whole.
        assert first.window_start == TODAY - timedelta(days=5)
        # Today's cost row covers the whole day: the usage is complete through its start, not through this hour.
        assert host.store.get_connection("oa").watermark == TODAY

        def billed() -> Decimal:
            return sum(
                (line.cost for line in host.store.report("oa", since=TODAY - timedelta(days=9), until=NOW)), Decimal(0)
            )

        truth = [t for t in sim.truth(ORG, first.window_start, NOW) if t["kind"] == "cost"]
        assert billed() == sum((t["cost"] for t in truth), Decimal(0))
        restated_day = TODAY - timedelta(days=2)
        before = sum((t["cost"] for t in truth if t["period_start"] == restated_day), Decimal(0))
        assert before > 0
        sim.restate(ORG, restated_day)
        clock[0] = sim.now = NOW + timedelta(hours=1)
        second = sync_now(host, "oa")
        assert second.outcome == RunOutcome.SUCCEEDED, second.message
        # Without lookback the host asks from the watermark (today's start); the connector reaches back its 3
        # restated days.
        assert second.window_start == TODAY - timedelta(days=3)
        after = sum(
            (
                t["cost"]
                for t in sim.truth(ORG, restated_day, TODAY)
                if t["kind"] == "cost" and t["period_start"] == restated_day
            ),
            Decimal(0),
        )
        assert after != before
        truth = [t for t in sim.truth(ORG, first.window_start, clock[0]) if t["kind"] == "cost"]
        assert billed() == sum((t["cost"] for t in truth), Decimal(0))
