"""Budgets and anomaly alerts: each crossing fires once, with its evidence, to the log, the hook and the webhook."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from connector_sdk import hookimpl
from connector_sdk.budgets import anomaly_alerts, budget_alerts
from connector_sdk.errors import ConfigError
from connector_sdk.host import Host
from connector_sdk.models import Budget
from connector_sdk.sync import sync_now
from connectors.fal.simulator import FalSimulator
from tests.conftest import CliRunner
from tests.test_sinks import SECRET, Receiver, receiver  # noqa: F401 - the fixture

NOW = datetime(2026, 11, 23, 15, 30, tzinfo=UTC)


def budget(**overrides: object) -> Budget:
    values = {"id": 7, "connection": "c", "monthly_amount": Decimal(100), "created_at": NOW, "anomaly": True}
    return Budget.model_validate(values | overrides)


def days(values: list[str], end: datetime = NOW) -> dict[str, Decimal]:
    """Daily spend ending today: the last value is today's."""
    today = end.replace(hour=0, minute=0)
    return {
        (today - timedelta(days=len(values) - 1 - i)).strftime("%Y-%m-%d"): Decimal(v) for i, v in enumerate(values)
    }


def test_each_threshold_reached_this_month_is_an_alert_with_its_figures() -> None:
    alerts = budget_alerts(budget(), Decimal("85.50"), NOW)
    assert [a.evidence["threshold_percent"] for a in alerts] == [50, 80]
    assert alerts[1].dedupe_key == "budget:7:2026-11:80"
    assert alerts[1].message == (
        "c: 85.50 USD spent in 2026-11 crossed the 80% threshold (80.00 USD) of the 100.00 USD monthly budget "
        "(all usage)"
    )
    assert alerts[1].evidence["spent"] == "85.5"
    assert budget_alerts(budget(), Decimal("49.99"), NOW) == []


def test_a_day_far_above_its_median_is_an_anomaly_and_ordinary_variation_is_not() -> None:
    ordinary = ["10", "12", "9", "11", "10", "13", "9", "10", "12", "11", "10", "9", "12", "11", "10", "14"]
    assert anomaly_alerts(budget(), days(ordinary), NOW) == []
    spike = [*ordinary[:-1], "95"]
    (alert,) = anomaly_alerts(budget(), days(spike), NOW)
    assert alert.dedupe_key == f"anomaly:7:{NOW:%Y-%m-%d}"
    assert alert.evidence["baseline_median"] == "10.5" and "so far" in alert.message


def test_one_past_spike_does_not_hide_the_next() -> None:
    history = ["10", "11", "300", "9", "10", "12", "10", "11", "9", "10", "12", "10", "11", "10", "10", "80"]
    assert len(anomaly_alerts(budget(), days(history), NOW)) == 1


def test_a_new_account_has_no_baseline_to_be_anomalous_against() -> None:
    assert anomaly_alerts(budget(), days(["0"] * 15 + ["50"]), NOW) == []


class AlertListener:
    def __init__(self) -> None:
        self.alerts: list = []

    @hookimpl
    def connector_sdk_alert(self, connection, alert) -> None:
        self.alerts.append((connection.name, alert.dedupe_key))


def test_a_budget_fires_each_threshold_once_to_the_hook_and_the_webhook(
    host: Host,
    connect: Callable,
    receiver: Receiver,  # noqa: F811
) -> None:
    name = connect()
    listener = AlertListener()
    host.plugins.manager.register(listener, name="alert-listener")
    host.add_sink(name, "hook", "webhook", {"url": receiver.url, "secret": SECRET})
    host.store.add_budget(
        name,
        monthly_amount=Decimal("0.01"),
        currency="USD",
        thresholds=[50, 100],
        anomaly=False,
        api_key_label=None,
        model=None,
        now=host.now(),
    )
    sync_now(host, name)
    month = host.now().strftime("%Y-%m")
    assert sorted(k for _, k in listener.alerts) == [f"budget:1:{month}:100", f"budget:1:{month}:50"]
    sync_now(host, name)
    assert len(listener.alerts) == 2, "not again every hour"
    stored = host.store.list_alerts(name)
    assert [a.evidence["threshold_percent"] for a in stored] == [100, 50]
    assert Decimal(stored[0].evidence["spent"]) > Decimal("0.01")
    sent = [b["alert"]["dedupe_key"] for b in receiver.batches if b["type"] == "alert"]
    assert sorted(sent) == sorted(k for _, k in listener.alerts)


def test_a_budget_on_one_key_label_counts_only_that_label(host: Host, connect: Callable) -> None:
    name = connect()
    sync_now(host, name)
    user_key = sum(line.cost for line in host.report(name, days=40)[2] if line.api_key_label == "User key")
    host.store.add_budget(
        name,
        monthly_amount=user_key * 2,
        currency="USD",
        thresholds=[40, 60],
        anomaly=False,
        api_key_label="User key",
        model=None,
        now=host.now(),
    )
    from connector_sdk.budgets import evaluate

    fired = evaluate(host, name)
    month_only = sum(
        r.cost
        for r in host.store.iter_rows(name, since=host.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0))
        if r.api_key_label == "User key"
    )
    expected = [t for t in (40, 60) if month_only >= user_key * 2 * t / 100]
    assert [a.evidence["threshold_percent"] for a in fired] == expected


def test_budgets_and_alerts_from_the_cli(cli: CliRunner, sim: FalSimulator, admin_key: str) -> None:
    cli("connect", "fal", "--name", "p", "--base-url", sim.base_url, "--backfill-days", "2", env={"FAL_KEY": admin_key})
    made = cli("budget", "set", "p", "--monthly", "0.05", "--thresholds", "50,100", "--format", "json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["thresholds"] == [50, 100]
    assert cli("budget", "set", "p", "--monthly", "-3").returncode == 2
    assert cli("budget", "set", "nope", "--monthly", "3").returncode == 2
    assert cli("sync", "p").returncode == 0
    fired = json.loads(cli("alerts", "p", "--format", "json").stdout)
    assert {a["evidence"]["threshold_percent"] for a in fired} == {50, 100}
    assert "monthly budget" in cli("alerts").stdout
    (listed,) = json.loads(cli("budget", "list", "--format", "json").stdout)
    removed = cli("budget", "remove", str(listed["id"]), "--format", "json")
    assert removed.returncode == 0 and json.loads(removed.stdout) == {"budget": listed["id"], "removed": True}
    assert cli("budget", "remove", str(listed["id"])).returncode == 2


def test_removing_an_unknown_budget_is_a_clear_error(host: Host) -> None:
    with pytest.raises(ConfigError, match="no budget 42"):
        host.store.remove_budget(42)
