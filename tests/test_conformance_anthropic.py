"""The SDK's conformance suite on the Anthropic connector, the third one: every check, through a real host and store
(hourly usage rows and daily billed cost per key)."""

from __future__ import annotations

from datetime import timedelta

import connectors.anthropic
from connector_sdk.kit.conformance import CHECKS, ConnectorFixture, conformance_suite
from connector_sdk.models import SyncWindow, floor_hour, utcnow
from connector_sdk.paging import floor_day
from connectors.anthropic.simulator import AnthropicSimulator

ORG = "Conformance Research"


class AnthropicFixture(ConnectorFixture[AnthropicSimulator]):
    connector_id = "anthropic"
    plugins = (connectors.anthropic,)
    # More than a week: the connector reads seven days a request, so a key revoked after the first page is used again.
    backfill_days = 12

    def simulator(self) -> AnthropicSimulator:
        now = floor_hour(utcnow()) + timedelta(minutes=20)
        # Small pages and buckets, so that every listing and report is followed over several requests.
        return AnthropicSimulator(now=now, history_days=20, seed=5, max_list_limit=2, max_buckets=24)

    def make_account(self, sim: AnthropicSimulator) -> str:
        self._first_key = sim.add_organization(ORG)
        return ORG

    def admin_key(self, sim: AnthropicSimulator, account: str) -> str:
        return sim.issue_key(account, scope="admin")

    def non_admin_key(self, sim: AnthropicSimulator, account: str) -> str:
        return sim.issue_key(account, scope="workspace")

    def bad_key(self, sim: AnthropicSimulator) -> str:
        return "sk-ant-admin01-ThisKeyWasNeverIssuedByAnyone0123456789"

    def config(self, sim: AnthropicSimulator, key: str) -> dict[str, object]:
        return {"api_key": key, "base_url": sim.base_url, "timeout_seconds": 10}

    def restate(self, sim: AnthropicSimulator, account: str) -> SyncWindow:
        day = floor_day(sim.now) - timedelta(days=1)  # yesterday: inside every later sync's settling window
        sim.restate(account, day)
        return SyncWindow(start=day, end=day + timedelta(days=1))


TestAnthropicConformance = conformance_suite(AnthropicFixture())


def test_every_check_runs_on_anthropic() -> None:
    names = {name.removeprefix("test_") for name in vars(TestAnthropicConformance) if name.startswith("test_")}
    assert names == set(CHECKS)
