"""Budgets and anomaly alerts, evaluated after every sync.

A budget crossing fires once per threshold and month; an anomaly once per day. Each alert is stored with the
figures that triggered it, fired as the ``connector_sdk_alert`` event, logged, and queued for the connection's
sinks that take alerts (the webhook).

The anomaly rule compares a day's spend with the 14 complete days before it: it is anomalous when it exceeds
``median + 3 * 1.4826 * MAD`` (the median absolute deviation, scaled to a standard deviation) and is also at least
twice the median, given at least 7 of those days had spend. Median and MAD rather than mean and standard
deviation, because spend is skewed and bursty: one past spike would inflate a mean-based baseline and hide the
next one. Today is judged on its spend so far (it can only grow), yesterday on its whole day.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from statistics import median
from typing import TYPE_CHECKING

import structlog

from connector_sdk.currencies import is_iso_4217
from connector_sdk.errors import ConfigError
from connector_sdk.models import Alert, Budget, decimal_text, floor_hour
from connector_sdk.sinks import ALERT

if TYPE_CHECKING:
    from connector_sdk.host import Host

log = structlog.get_logger()

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

BASELINE_DAYS = 14
MAD_TO_SIGMA = Decimal("1.4826")
SIGMAS = Decimal(3)
MIN_RATIO = Decimal(2)
MIN_HISTORY_DAYS = 7  # fewer days with spend than this are no baseline: a new account's first day is not a spike
MAX_THRESHOLD = 1000


def parse_thresholds(text: str) -> list[int]:
    """``"50,80,100"`` as whole percentages, strictly increasing: a list out of order or with a repeat is a typo."""
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(
            f"--thresholds takes whole percentages separated by commas, e.g. 50,80,100 (got {text!r})"
        ) from None
    if not levels:
        raise ConfigError("--thresholds needs at least one percentage, e.g. 50,80,100")
    if not all(0 < level <= MAX_THRESHOLD for level in levels):
        raise ConfigError(f"--thresholds must be between 1 and {MAX_THRESHOLD} percent (got {text!r})")
    for before, after in pairwise(levels):
        if after == before:
            raise ConfigError(f"--thresholds lists {before}% twice; each percentage fires one alert, give it once")
        if after < before:
            raise ConfigError(
                f"--thresholds must be strictly increasing, lowest first ({before}% comes before {after}%): "
                f"write e.g. {','.join(str(level) for level in sorted(set(levels)))}"
            )
    return levels


def check_currency(code: str) -> str:
    """The code upper-cased, if ISO 4217 knows it; a budget in an unknown currency would never see spend."""
    upper = code.strip().upper()
    if not is_iso_4217(upper):
        raise ConfigError(f"--currency {code!r} is not an ISO 4217 currency code (e.g. USD, EUR, GBP)")
    return upper


def check_scope(host: Host, name: str, *, api_key_label: str | None, model: str | None) -> None:
    """Refuse a label or model the connection has never reported: a typo there makes a budget that never fires."""
    if api_key_label is None and model is None:
        return
    lines = host.store.report(name, since=EPOCH, until=host.now() + timedelta(days=366))
    seen_labels = sorted({line.api_key_label for line in lines})
    seen_models = sorted({m for line in lines for m in line.models})
    for option, value, seen in (("--label", api_key_label, seen_labels), ("--model", model, seen_models)):
        if value is None or value in seen:
            continue
        known = ", ".join(repr(s) for s in seen) if seen else "none yet (sync it first)"
        raise ConfigError(
            f"{option} {value!r}: connection {name!r} has never seen it (it has seen: {known}); "
            "check the spelling, or pass --force to budget for it anyway"
        )


def month_start(moment: datetime) -> datetime:
    return floor_hour(moment).replace(day=1, hour=0)


def next_month(start: datetime) -> datetime:
    return (start + timedelta(days=32)).replace(day=1)


def budget_alerts(budget: Budget, spent: Decimal, now: datetime) -> list[Alert]:
    """Every threshold the month-to-date spend has reached, as alerts (the store keeps only new ones)."""
    month = month_start(now).strftime("%Y-%m")
    alerts = []
    for threshold in sorted(budget.thresholds):
        limit = budget.monthly_amount * threshold / 100
        if spent >= limit:
            alerts.append(
                Alert(
                    connection=budget.connection,
                    budget_id=budget.id,
                    kind="budget",
                    dedupe_key=f"budget:{budget.id}:{month}:{threshold}",
                    fired_at=now,
                    message=(
                        f"{budget.connection}: {spent:,.2f} {budget.currency} spent in {month} crossed the "
                        f"{threshold}% threshold ({limit:,.2f} {budget.currency}) of the "
                        f"{budget.monthly_amount:,.2f} {budget.currency} monthly budget ({budget.scope})"
                    ),
                    evidence={
                        "month": month,
                        "spent": decimal_text(spent),
                        "budget": decimal_text(budget.monthly_amount),
                        "threshold_percent": threshold,
                        "currency": budget.currency,
                        "scope": budget.scope,
                    },
                )
            )
    return alerts


@dataclass(frozen=True)
class UnusualDay:
    """A day whose spend the anomaly rule finds far above its baseline, with the figures that say so."""

    day: datetime
    label: str
    spent: Decimal
    median: Decimal
    mad: Decimal
    limit: Decimal
    today: bool


def unusual_days(daily: dict[str, Decimal], now: datetime) -> list[UnusualDay]:
    """The anomaly rule: today (so far) and yesterday, each judged against the 14 complete days before it.

    ``daily`` is spend per UTC day (``YYYY-MM-DD``) in one currency. Budgets use it on a connection's (or a label's)
    spend, findings on one key's.
    """
    today = floor_hour(now).replace(hour=0)
    unusual = []
    for day in (today - timedelta(days=1), today):
        baseline = [daily.get((day - timedelta(days=n)).strftime("%Y-%m-%d"), Decimal(0)) for n in range(1, 15)]
        if sum(1 for value in baseline if value > 0) < MIN_HISTORY_DAYS:
            continue
        centre = median(baseline)
        mad = median(abs(value - centre) for value in baseline)
        limit = max(centre + SIGMAS * MAD_TO_SIGMA * mad, centre * MIN_RATIO)
        label = day.strftime("%Y-%m-%d")
        spent = daily.get(label, Decimal(0))
        if spent > limit and spent > 0:
            unusual.append(UnusualDay(day, label, spent, centre, mad, limit, day == today))
    return unusual


def anomaly_alerts(budget: Budget, daily: dict[str, Decimal], now: datetime) -> list[Alert]:
    """Today (so far) and yesterday, each judged against the 14 complete days before it."""
    return [
        Alert(
            connection=budget.connection,
            budget_id=budget.id,
            kind="anomaly",
            dedupe_key=f"anomaly:{budget.id}:{day.label}",
            fired_at=now,
            message=(
                f"{budget.connection}: spend on {day.label}{' so far' if day.today else ''} is "
                f"{day.spent:,.2f} {budget.currency}, far above its usual {day.median:,.2f} a day ({budget.scope})"
            ),
            evidence={
                "day": day.label,
                "spent": decimal_text(day.spent),
                "baseline_median": decimal_text(day.median),
                "baseline_mad": decimal_text(day.mad),
                "limit": decimal_text(day.limit),
                "baseline_days": BASELINE_DAYS,
                "currency": budget.currency,
                "scope": budget.scope,
            },
        )
        for day in unusual_days(daily, now)
    ]


def evaluate(host: Host, name: str) -> list[Alert]:
    """Check every budget of the connection; record, fire and queue each alert that is new."""
    now = host.now()
    fired = []
    for budget in host.store.list_budgets(name):
        scope = {"currency": budget.currency, "api_key_label": budget.api_key_label, "model": budget.model}
        start = month_start(now)
        spent = sum(host.store.daily_spend(name, since=start, until=next_month(start), **scope).values(), Decimal(0))
        candidates = budget_alerts(budget, spent, now)
        if budget.anomaly:
            since = floor_hour(now).replace(hour=0) - timedelta(days=BASELINE_DAYS + 1)
            daily = host.store.daily_spend(name, since=since, until=floor_hour(now) + timedelta(hours=1), **scope)
            candidates += anomaly_alerts(budget, daily, now)
        for candidate in candidates:
            alert = host.store.record_alert(candidate)
            if alert is not None:
                fired.append(alert)
                _announce(host, name, alert)
    return fired


def _announce(host: Host, name: str, alert: Alert) -> None:
    log.warning("alert", connection=name, kind=alert.kind, message=alert.message)
    host.fire("connector_sdk_alert", connection=host.store.get_connection(name), alert=alert)
    payload = json.dumps({"type": ALERT, "connection": name, "alert": alert.model_dump(mode="json")})
    for record in host.store.list_sinks(name):
        kind = host.plugins.sinks.get(record.kind)
        if kind is not None and ALERT in kind.accepts:
            host.store.enqueue(name, record.name, payload, now=host.now())
