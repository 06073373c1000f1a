"""The SDK's conformance suite on the fal connector: the fixture below is all a connector author writes."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
import requests

import connectors.fal
from connector_sdk.kit.conformance import CHECKS, STORE_CHECKS, ConnectorFixture, conformance_suite, open_session
from connector_sdk.models import SyncWindow, floor_hour, utcnow
from connectors.fal.simulator import FalSimulator


class FalFixture(ConnectorFixture[FalSimulator]):
    connector_id = "fal"
    plugins = (connectors.fal,)
    backfill_days = 2

    def simulator(self) -> FalSimulator:
        # Pages of 50 whatever the connector asks, so a backfill takes several requests (the revoke check needs them).
        return FalSimulator(now=floor_hour(utcnow()) + timedelta(minutes=40), seed=11, page_size=50, max_page_size=50)

    def make_account(self, sim: FalSimulator) -> str:
        sim.add_account("conformance-team", n_keys=3, n_models=4)
        return "conformance-team"

    def admin_key(self, sim: FalSimulator, account: str) -> str:
        return sim.issue_key(account, scope="ADMIN")

    def non_admin_key(self, sim: FalSimulator, account: str) -> str:
        return sim.issue_key(account, scope="API")

    def bad_key(self, sim: FalSimulator) -> str:
        return "0123456789abcdef:00000000000000000000000000000000"

    def config(self, sim: FalSimulator, key: str) -> dict[str, object]:
        return {"api_key": key, "base_url": sim.base_url, "timeout_seconds": 10}

    def restate(self, sim: FalSimulator, account: str) -> SyncWindow:
        hour = floor_hour(sim.now) - timedelta(hours=3)
        sim.revise(account, hour)
        return SyncWindow(start=hour, end=hour + timedelta(hours=1))

    def secrets(self, key: str) -> list[str]:
        return [key, key.partition(":")[2]]  # the secret half alone is as secret as the whole key


TestFalConformance = conformance_suite(FalFixture())


def test_the_fal_suite_runs_every_check_the_store_ones_included() -> None:
    names = {name.removeprefix("test_") for name in vars(TestFalConformance) if name.startswith("test_")}
    assert names == set(CHECKS) and set(STORE_CHECKS) <= names


# -- the suite fails a connector (or a fixture) that does not conform ------------------------------------------
class WrongAccountName(FalFixture):
    def make_account(self, sim: FalSimulator) -> str:
        super().make_account(sim)
        return "someone-else"

    def admin_key(self, sim: FalSimulator, account: str) -> str:
        return super().admin_key(sim, "conformance-team")


class ForbiddenKeyAsBadKey(FalFixture):
    def bad_key(self, sim: FalSimulator) -> str:
        return sim.issue_key("conformance-team", scope="API")


class NothingRestated(FalFixture):
    def restate(self, sim: FalSimulator, account: str) -> SyncWindow:
        hour = floor_hour(sim.now) - timedelta(hours=3)
        return SyncWindow(start=hour, end=hour + timedelta(hours=1))


class NeverRevoked(FalFixture):
    def revoke(self, sim: FalSimulator, key: str) -> None:
        pass


class KeyIdCountsAsSecret(FalFixture):
    def secrets(self, key: str) -> list[str]:
        return [key.partition(":")[0]]  # list_keys names the connection's own key by its id, as a leak would show


class BaseUrlCountsAsSecret(FalFixture):
    def secrets(self, key: str) -> list[str]:
        return ["127.0.0.1"]  # shows in the connector's repr, as a leaked key would


@pytest.mark.parametrize(
    ("fixture", "check", "complaint"),
    [
        (WrongAccountName(), "check_names_the_account", "check() named 'conformance-team'"),
        (ForbiddenKeyAsBadKey(), "a_401_key_is_invalid_with_advice", "a 401 became kind 'insufficient_scope'"),
        (NothingRestated(), "a_restated_period_replaces_the_old_rows", "still holds its old rows"),
        (NeverRevoked(), "a_key_revoked_during_a_sync_ends_it_reconnect_required", "the sync ended succeeded"),
        (BaseUrlCountsAsSecret(), "no_secret_in_logs_reprs_or_errors", "connector"),
        (KeyIdCountsAsSecret(), "listed_keys_are_unique_records_without_secrets", "a key's secret shows"),
        (ForbiddenKeyAsBadKey(), "listed_keys_are_unique_records_without_secrets", "a 401 became kind"),
        (BaseUrlCountsAsSecret(), "no_secret_in_the_store", "the key shows in plain text in"),
    ],
)
def test_each_check_fails_what_does_not_conform(
    tmp_path: Path, fixture: FalFixture, check: str, complaint: str
) -> None:
    with open_session(fixture, tmp_path) as session, pytest.raises(AssertionError, match=re.escape(complaint)):
        CHECKS[check](session)


def test_a_connector_that_writes_is_caught_by_the_request_log(tmp_path: Path) -> None:
    with open_session(FalFixture(), tmp_path) as session:
        requests.post(session.sim.base_url + "/models/pricing/estimate", json={}, timeout=10)
        with pytest.raises(AssertionError, match="POST"):
            CHECKS["only_get_is_sent"](session)


def test_an_unknown_check_cannot_be_left_out() -> None:
    with pytest.raises(ValueError, match="no conformance check named nope"):
        conformance_suite(FalFixture(), without=["nope"])
