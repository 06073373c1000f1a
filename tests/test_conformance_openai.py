"""The SDK's conformance suite on the OpenAI connector: every check, the store-level ones included (daily cost rows
and hourly usage rows through a real host on SQLite)."""

from __future__ import annotations

from datetime import timedelta

import connectors.openai
from connector_sdk.kit.conformance import CHECKS, ConnectorFixture, conformance_suite
from connector_sdk.models import SyncWindow, floor_hour, utcnow
from connector_sdk.paging import floor_day
from connectors.openai.simulator import OpenAISimulator

ORG = "Conformance Org"


class OpenAIFixture(ConnectorFixture[OpenAISimulator]):
    connector_id = "openai"
    plugins = (connectors.openai,)
    # More than a week: the connector reads seven days a request, so a key revoked after the first page is used again.
    backfill_days = 9

    def simulator(self) -> OpenAISimulator:
        now = floor_hour(utcnow()) + timedelta(minutes=20)
        return OpenAISimulator(now=now, history_days=15, seed=5, max_list_limit=2, max_buckets=48)

    def make_account(self, sim: OpenAISimulator) -> str:
        sim.add_organization(ORG)
        return ORG

    def admin_key(self, sim: OpenAISimulator, account: str) -> str:
        return sim.issue_key(account, scope="admin")

    def non_admin_key(self, sim: OpenAISimulator, account: str) -> str:
        return sim.issue_key(account, scope="project")

    def bad_key(self, sim: OpenAISimulator) -> str:
        return "sk-admin-ThisKeyWasNeverIssuedByAnyone0123456789"

    def config(self, sim: OpenAISimulator, key: str) -> dict[str, object]:
        return {"api_key": key, "base_url": sim.base_url, "timeout_seconds": 10}

    def restate(self, sim: OpenAISimulator, account: str) -> SyncWindow:
        day = floor_day(sim.now) - timedelta(days=1)  # yesterday: inside every later sync's lookback
        sim.restate(account, day)
        return SyncWindow(start=day, end=day + timedelta(days=1))


TestOpenAIConformance = conformance_suite(OpenAIFixture())


def test_every_check_runs_on_openai() -> None:
    names = {name.removeprefix("test_") for name in vars(TestOpenAIConformance) if name.startswith("test_")}
    assert names == set(CHECKS)
