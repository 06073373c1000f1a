"""The overview across vendors: fal's and OpenAI's simulators synced for real, the overview's figures checked against
the reports of the connections they come from."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

import connector_sdk.sinks
import connectors.fal
import connectors.openai
from connector_sdk.errors import ConfigError
from connector_sdk.host import Host
from connector_sdk.models import Finding, FindingKind, Overview, RunOutcome, Severity, SpendLine
from connector_sdk.plugins import get_plugin_manager
from connector_sdk.sync import sync_now
from connectors.fal.simulator import FalSimulator
from connectors.openai.simulator import OpenAISimulator

NOW = datetime(2026, 3, 10, 14, tzinfo=UTC)
DAYS = 3


@pytest.fixture
def host(tmp_path: Path, store_url: str) -> Iterator[Host]:
    """fal and OpenAI connected to their simulators and synced over eight days, on SQLite and on PostgreSQL."""
    plugins = get_plugin_manager(
        load_entrypoints=False, plugins=[connectors.fal, connectors.openai, connector_sdk.sinks]
    )
    with (
        FalSimulator(now=NOW, seed=7, page_size=200, max_page_size=200) as fal,
        OpenAISimulator(now=NOW, history_days=20, seed=7) as openai,
        Host.open(tmp_path / "home", store_url=store_url, plugins=plugins, clock=lambda: NOW) as h,
    ):
        fal_key = fal.add_account("acme-ai", n_keys=3, n_models=5)
        h.connect("fal", "fal-prod", {"api_key": fal_key, "base_url": fal.base_url, "backfill_days": 8})
        h.connect("openai", "openai-prod", {"api_key": openai.add_organization("Acme Research"),
                                            "base_url": openai.base_url, "backfill_days": 8})  # fmt: skip
        h.connect("fal", "fal-again", {"api_key": fal_key, "base_url": fal.base_url, "backfill_days": 8})
        for name in ("fal-prod", "openai-prod", "fal-again"):
            assert sync_now(h, name).outcome == RunOutcome.SUCCEEDED
        yield h


def per_currency(lines: list[SpendLine], *, previous: bool = False) -> dict[str, Decimal]:
    sums: dict[str, Decimal] = {}
    for line in lines:
        sums[line.currency] = sums.get(line.currency, Decimal(0)) + (line.previous_cost if previous else line.cost)
    return sums


def reported(host: Host, names: list[str], since: datetime, until: datetime) -> dict[str, Decimal]:
    sums: dict[str, Decimal] = {}
    for name in names:
        for line in host.store.report(name, since=since, until=until):
            sums[line.currency] = sums.get(line.currency, Decimal(0)) + line.cost
    return sums


def test_the_overviews_totals_are_the_sum_of_the_connections_reports_counting_each_account_once(host: Host) -> None:
    overview = host.overview(DAYS)
    assert isinstance(overview, Overview)
    assert (overview.since, overview.until) == (
        NOW + timedelta(hours=1) - timedelta(days=DAYS),
        NOW + timedelta(hours=1),
    )
    assert overview.previous_since == overview.since - timedelta(days=DAYS)
    # fal-again reaches fal-prod's account: counted once, from the connection synced last.
    counted = sorted(overview.connections)
    assert counted == sorted(["openai-prod", next(s.counted for s in host.shared_accounts())])
    totals = per_currency(overview.totals)
    assert totals == reported(host, counted, overview.since, overview.until)
    _since, _until, report = host.report(None, days=DAYS)
    assert totals == per_currency_of_report(report)
    assert per_currency(overview.totals, previous=True) == reported(
        host, counted, overview.previous_since, overview.since
    )
    assert all(value > 0 for value in totals.values()) and totals != reported(
        host, ["fal-prod", "fal-again", "openai-prod"], overview.since, overview.until
    ), "the shared account would have been counted twice"


def per_currency_of_report(lines: list) -> dict[str, Decimal]:
    sums: dict[str, Decimal] = {}
    for line in lines:
        sums[line.currency] = sums.get(line.currency, Decimal(0)) + line.cost
    return sums


def test_each_breakdown_adds_up_to_the_totals_and_says_the_change(host: Host) -> None:
    overview = host.overview(DAYS)
    totals = per_currency(overview.totals)
    for lines in (overview.by_vendor, overview.by_key, overview.by_model):
        assert per_currency(lines) == totals
        assert per_currency(lines, previous=True) == per_currency(overview.totals, previous=True)
    assert {line.key for line in overview.by_vendor} == {"fal", "openai"}
    for line in [*overview.by_vendor, *overview.by_key, *overview.by_model, *overview.by_person, *overview.totals]:
        assert line.change == line.cost - line.previous_cost
        if line.previous_cost:
            assert line.change_percent == (line.change * 100 / line.previous_cost).quantize(Decimal("0.1"))
        else:
            assert line.change_percent is None
    # Highest spend first, per currency.
    costs = [line.cost for line in overview.by_key if line.currency == "USD"]
    assert costs == sorted(costs, reverse=True)


def test_keys_are_named_and_people_are_web_ui_spend(host: Host) -> None:
    overview = host.overview(DAYS)
    labels = {line.label for line in overview.by_key if line.connector == "fal"}
    assert {"Production Key", "Staging Key", "Admin Key", "User key"} <= labels
    persons = {line.key: line for line in overview.by_person}
    assert {"alice", "bob", "User key"} <= set(persons)
    web_ui = sum(
        (
            cost
            for (connection, key, label, currency), (_n, cost) in host.store.grouped_spend(
                None,
                since=overview.since,
                until=overview.until,
                by=("connection", "api_key_id", "api_key_label", "currency"),
            ).items()
            if key is None and label == "User key" and connection in overview.connections and currency == "USD"
        ),
        Decimal(0),
    )
    assert sum((line.cost for line in overview.by_person if line.currency == "USD"), Decimal(0)) == web_ui


def test_open_findings_come_most_severe_first(host: Host) -> None:
    def finding(kind: FindingKind, severity: Severity, subject: str) -> Finding:
        return Finding(connection="fal-prod", connector="fal", kind=kind, severity=severity, subject=subject,
                       subject_label=subject, message=subject, opened_at=NOW)  # fmt: skip

    conditions = [
        finding(FindingKind.NEW_KEY, Severity.INFO, "k-new"),
        finding(FindingKind.OWNER_GONE, Severity.HIGH, "k-owner"),
        finding(FindingKind.IDLE_KEY, Severity.LOW, "k-idle"),
    ]
    host.store.reconcile_findings("fal-prod", conditions, kinds=list(FindingKind), now=NOW, outbox=lambda f, c: [])
    severities = [f.severity for f in host.overview(DAYS).open_findings]
    assert severities == sorted(severities, key=lambda s: -s.rank) and Severity.INFO in severities
    assert {f.subject for f in host.overview(DAYS).open_findings} >= {"k-new", "k-owner", "k-idle"}
    with pytest.raises(ConfigError):
        host.overview(0)
