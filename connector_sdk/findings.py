"""The findings' rules: what in a connection's key inventory and spend deserves an admin's attention.

Pure functions, no store: :func:`conditions` turns the facts :mod:`connector_sdk.inventory` gathers after a sync (the
key inventory, the listing's dates, web-UI spend per person, the other connections to the same account, and each
key's spend per day and model) into the conditions that hold now, as :class:`~connector_sdk.models.Finding` records
without an id. The store opens a finding for each new condition, updates the evidence of one still open, and
resolves one whose condition is gone (:meth:`~connector_sdk.stores.base.Store.reconcile_findings`).

A finding is a fact about a vendor account, so an account that several connections reach has one judge
(:func:`account_of`): the connection made first among those still connected. Only the judge's syncs find anything for
the account; the others find nothing, so one fact never opens two findings, and syncing the connections in turn never
moves findings between them.

Rules that read the vendor's key listing (:data:`LISTING_KINDS`) are judged only after a listing succeeded in the
same sync: a connector that cannot list keys, or a listing that failed this time, leaves those findings as they
were. The others (:data:`ROW_KINDS`) are judged on the rows after every sync.

Evidence is plain JSON: money as exact decimal text with its currency, dates as ISO 8601 UTC, and the listing it
came from.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from connector_sdk.budgets import BASELINE_DAYS, MIN_HISTORY_DAYS, unusual_days
from connector_sdk.environment import amount, number
from connector_sdk.models import (
    EXACT,
    OWN_KEY_LISTING,
    USER_KEY,
    Connection,
    ConnectionState,
    Finding,
    FindingKind,
    KeyListingInfo,
    KeyRecord,
    Severity,
    decimal_text,
    floor_hour,
    iso,
)

#: What each kind of finding is, by default.
SEVERITY: dict[FindingKind, Severity] = {
    FindingKind.UNLISTED_KEY_SPEND: Severity.HIGH,
    FindingKind.NEW_KEY: Severity.INFO,
    FindingKind.IDLE_KEY: Severity.LOW,
    FindingKind.WEB_UI_SPEND: Severity.MEDIUM,
    FindingKind.OWNER_GONE: Severity.HIGH,
    FindingKind.ADMIN_KEY_TRAFFIC: Severity.HIGH,
    FindingKind.DUPLICATE_ACCOUNT: Severity.MEDIUM,
    FindingKind.SPEND_SPIKE: Severity.MEDIUM,
}
#: Kinds judged on the vendor's key listing: only after a listing succeeded.
LISTING_KINDS = frozenset(
    {
        FindingKind.UNLISTED_KEY_SPEND,
        FindingKind.NEW_KEY,
        FindingKind.IDLE_KEY,
        FindingKind.OWNER_GONE,
        FindingKind.ADMIN_KEY_TRAFFIC,
    }
)
#: Kinds judged on the rows (and the connections) alone: after every successful sync.
ROW_KINDS = frozenset(FindingKind) - LISTING_KINDS

RECENT_DAYS = 7  # "in the last 7 days": unlisted-key spend and admin-key traffic
WEB_UI_DAYS = 30
NEW_MODEL_DAYS = 30  # a model the key used in none of these days before is new on it
ADMIN_SCOPE = "admin"


@dataclass(frozen=True)
class Settings:
    """The thresholds; :meth:`from_environment` reads the ``CONNECTOR_HOST_*`` overrides."""

    idle_days: int = 30
    new_key_days: int = 7
    web_ui_threshold: Decimal = Decimal(10)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Settings:
        return cls(
            idle_days=int(number("CONNECTOR_HOST_IDLE_KEY_DAYS", environ)),
            new_key_days=int(number("CONNECTOR_HOST_NEW_KEY_DAYS", environ)),
            web_ui_threshold=amount("CONNECTOR_HOST_WEB_UI_THRESHOLD", environ),
        )


@dataclass(frozen=True)
class Facts:
    """What the rules judge, of one connection, as of ``now``.

    ``person_spend`` is web-UI spend (cost rows no key accounts for) over the last 30 days per person
    (``login_username``, or :data:`USER_KEY`) and currency. ``shared_with`` are the other connections to the same
    vendor account that are not disconnected, and ``judge`` the one whose syncs judge the account's findings
    (:func:`account_of`; ``None``: this one). ``baseline`` are the ids the connection's first listing named (``None``:
    not known; then a key first listed after that listing's time is new). Billed cost per key id: ``key_daily`` per UTC
    day (``YYYY-MM-DD``) and currency over at least the last 31 days; ``key_spend`` per day, model (``None`` for rows
    without one) and currency for today and yesterday only; ``earlier_models`` the models each key (and currency)
    was billed for in the :data:`NEW_MODEL_DAYS` days before yesterday. Days are totals and models a set, not a
    month of per-model figures: the store reads them from its daily totals in a few milliseconds every sync.
    :func:`key_activity` derives all three from per-model figures.
    """

    connection: str
    connector: str
    account: str | None
    now: datetime
    keys: Sequence[KeyRecord] = ()
    listing: KeyListingInfo | None = None
    person_spend: Mapping[tuple[str, str], Decimal] = field(default_factory=dict)
    shared_with: Sequence[str] = ()
    judge: str | None = None
    baseline: frozenset[str] | None = None
    key_spend: Mapping[tuple[str, str, str | None, str], Decimal] = field(default_factory=dict)
    key_daily: Mapping[tuple[str, str, str], Decimal] = field(default_factory=dict)
    earlier_models: Mapping[tuple[str, str], frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Account:
    """A connection's vendor account as findings see it (see :func:`account_of`)."""

    judge: str
    """The connection whose syncs judge the account's findings and hold them."""
    members: tuple[str, ...]
    """The connections that reach the account and are not disconnected, by name: more than one is a duplicate."""
    others: tuple[str, ...]
    """Every other connection that reaches the account, disconnected ones too: the judge takes their open findings
    over (a judge that changed, or findings from before the account had one)."""


def account_of(name: str, connections: Sequence[Connection]) -> Account:
    """Connection ``name``'s account: the connections that reach it and the one that judges it.

    The judge is the connection made first (then the first by name) among those still connected and not waiting for
    a reconnect; when every one waits, the first made of those not disconnected. Reports count an account from the
    connection synced last (:meth:`~connector_sdk.host.Host.shared_accounts`), but that is every connection in turn,
    each right after its own sync: the judge must not change with the order of syncs, or findings would hop from one
    connection to the other. It changes only when a person acts: the judge is disconnected, or its key stops working.
    """
    me = next((c for c in connections if c.name == name), None)
    if me is None or not me.account:
        return Account(judge=name, members=(name,), others=())
    reach = [c for c in connections if (c.connector, c.account) == (me.connector, me.account)]
    members = [c for c in reach if c.state != ConnectionState.DISCONNECTED or c.name == name]
    working = [c for c in members if c.state != ConnectionState.RECONNECT_REQUIRED] or members
    judge = min(working, key=lambda c: (c.created_at, c.name))
    return Account(
        judge=judge.name,
        members=tuple(sorted(c.name for c in members)),
        others=tuple(sorted(c.name for c in reach if c.name != judge.name)),
    )


def recent_start(now: datetime) -> datetime:
    """The first hour of "the last 7 days": the window of a key's ``spend_7d`` (up to the end of the current hour),
    so a key used in it has spent in it."""
    return floor_hour(now) + timedelta(hours=1) - timedelta(days=RECENT_DAYS)


def recent_days(now: datetime) -> tuple[str, str]:
    """Yesterday and today (UTC), the days a spike or a new model is news on."""
    today = floor_hour(now).replace(hour=0)
    return (today - timedelta(days=1)).strftime("%Y-%m-%d"), today.strftime("%Y-%m-%d")


def earlier_window(now: datetime) -> tuple[datetime, datetime]:
    """The :data:`NEW_MODEL_DAYS` whole days before yesterday: a model a key used in none of them is new on it."""
    yesterday = floor_hour(now).replace(hour=0) - timedelta(days=1)
    return yesterday - timedelta(days=NEW_MODEL_DAYS), yesterday


def key_activity(
    spend: Mapping[tuple[str, str, str | None, str], Decimal], now: datetime
) -> dict[str, Mapping[Any, Any]]:
    """``key_spend``, ``key_daily`` and ``earlier_models`` of :class:`Facts` from per key, day, model and currency
    figures (the shape a reader without daily totals has)."""
    recent = set(recent_days(now))
    start, end = (moment.strftime("%Y-%m-%d") for moment in earlier_window(now))
    key_spend: dict[tuple[str, str, str | None, str], Decimal] = {}
    daily: dict[tuple[str, str, str], Decimal] = {}
    earlier: dict[tuple[str, str], set[str]] = {}
    for (key_id, day, model, currency), cost in spend.items():
        daily[key_id, day, currency] = EXACT.add(daily.get((key_id, day, currency), Decimal(0)), cost)
        if day in recent:
            key_spend[key_id, day, model, currency] = cost
        elif start <= day < end and model is not None:
            earlier.setdefault((key_id, currency), set()).add(model)
    models = {key: frozenset(names) for key, names in earlier.items()}
    return {"key_spend": key_spend, "key_daily": daily, "earlier_models": models}


def conditions(facts: Facts, settings: Settings | None = None, *, listed: bool = True) -> list[Finding]:
    """Every condition that holds now; those of :data:`LISTING_KINDS` only when ``listed`` (a fresh listing). None
    on a connection that does not judge its account (``facts.judge`` another): the judge finds them."""
    settings = settings or Settings()
    if facts.judge not in (None, facts.connection):
        return []
    found = [
        *web_ui_spend(facts, settings),
        *duplicate_account(facts),
        *spend_spike(facts),
    ]
    if listed:
        found += [
            *unlisted_key_spend(facts),
            *new_key(facts, settings),
            *idle_key(facts, settings),
            *owner_gone(facts),
            *admin_key_traffic(facts),
        ]
    return found


# -- the rules -------------------------------------------------------------------------------------------------
def unlisted_key_spend(facts: Facts) -> list[Finding]:
    """Billed in the last 7 days from a key no listing names: never listed, or gone from the listing (then only
    for an hour that began after the last listing that named it, so spend from before its deletion does not count).
    An admin-scoped key is the other rule's (:func:`admin_key_traffic`)."""
    if facts.listing is None:
        return []
    since = recent_start(facts.now)
    found = []
    for key in facts.keys:
        if key.listed or key.scope == ADMIN_SCOPE or key.spend_7d <= 0 or not _used_since(key, since):
            continue
        if key.gone_at is not None and key.last_listed_at is not None:
            after_listing = floor_hour(key.last_listed_at) + timedelta(hours=1)
            if key.last_usage_at is None or key.last_usage_at < after_listing:
                continue
        spend = _money(key.spend_7d, key.currency)
        if key.gone_at is not None:
            why = f"it left {_vendor(facts)}'s key listing on {_day(key.gone_at)}"
        else:
            why = f"no key listing of {_vendor(facts)} has ever named it"
        found.append(
            _finding(
                facts,
                FindingKind.UNLISTED_KEY_SPEND,
                key.key_id,
                _label(key),
                f"Key {_label(key)} was billed {spend} in the last {RECENT_DAYS} days, but {why}: find who holds "
                "it and revoke it at the vendor.",
                {
                    **_key_evidence(key),
                    "spend_7d": decimal_text(key.spend_7d),
                    "currency": key.currency,
                    "last_listing_at": iso(facts.listing.last_listed_at),
                },
            )
        )
    return found


def new_key(facts: Facts, settings: Settings) -> list[Finding]:
    """A key first listed after the connection's first listing (that one is the baseline), for ``new_key_days``."""
    if facts.listing is None:
        return []
    since = facts.now - timedelta(days=settings.new_key_days)
    found = []
    for key in facts.keys:
        first = key.first_listed_at
        if not key.listed or first is None or first <= since:
            continue
        # By the listing that named it, not by its time: two listings can fall in one second.
        if key.key_id in facts.baseline if facts.baseline is not None else first <= facts.listing.first_listed_at:
            continue
        owner = f" owned by {key.owner or key.owner_email}" if key.owner or key.owner_email else ""
        scope = f" with {key.scope} scope" if key.scope else ""
        found.append(
            _finding(
                facts,
                FindingKind.NEW_KEY,
                key.key_id,
                _label(key),
                f"New key {_label(key)}{owner}{scope} appeared in {_vendor(facts)}'s key listing on {_day(first)}: "
                "check that it is one you expect.",
                _key_evidence(key),
            )
        )
    return found


def idle_key(facts: Facts, settings: Settings) -> list[Finding]:
    """A listed, active key unused for ``idle_days``: by the vendor's last use when it gives one, else by the last
    row naming it. A key younger than that (by its creation, else its first listing) is not idle, nor the key the
    connection reads with (:data:`~connector_sdk.models.OWN_KEY_LISTING`), which no row names."""
    limit = facts.now - timedelta(days=settings.idle_days)
    found = []
    for key in facts.keys:
        if not key.listed or key.status != "active" or key.listing == OWN_KEY_LISTING:
            continue
        born = key.created_at or key.first_listed_at
        if born is None or born > limit:
            continue
        last, source = (key.last_used_at, "vendor") if key.last_used_at is not None else (key.last_usage_at, "rows")
        if last is not None and last > limit:
            continue
        when = f"last used {_day(last)}" if last is not None else "never used"
        found.append(
            _finding(
                facts,
                FindingKind.IDLE_KEY,
                key.key_id,
                _label(key),
                f"Key {_label(key)} is active but {when}, over {settings.idle_days} days ago: revoke it if nobody "
                "needs it.",
                {
                    **_key_evidence(key),
                    "last_used_at": None if last is None else iso(last),
                    "last_used_from": source if last is not None else None,
                    "idle_days": settings.idle_days,
                },
            )
        )
    return found


def web_ui_spend(facts: Facts, settings: Settings) -> list[Finding]:
    """A person's web-UI spend over 30 days above the threshold (in the rows' currency); per person, the currency
    they spent most in."""
    worst: dict[str, tuple[Decimal, str]] = {}
    for (person, currency), cost in facts.person_spend.items():
        if cost > settings.web_ui_threshold and (person not in worst or cost > worst[person][0]):
            worst[person] = (cost, currency)
    found = []
    for person, (cost, currency) in sorted(worst.items()):
        who = "Someone without a name" if person == USER_KEY else person
        found.append(
            _finding(
                facts,
                FindingKind.WEB_UI_SPEND,
                person,
                person,
                f"{who} spent {_money(cost, currency)} in {_vendor(facts)}'s web UI on the company account over "
                f"the last {WEB_UI_DAYS} days (threshold {_money(settings.web_ui_threshold, currency)}): give them "
                "a managed key or a seat, or confirm the use.",
                {
                    "person": person,
                    "spend_30d": decimal_text(cost),
                    "currency": currency,
                    "threshold": decimal_text(settings.web_ui_threshold),
                    "since": iso(facts.now - timedelta(days=WEB_UI_DAYS)),
                },
            )
        )
    return found


def owner_gone(facts: Facts) -> list[Finding]:
    """A listed, active key whose owner the vendor says no longer has access."""
    found = []
    for key in facts.keys:
        if key.listed and key.status == "active" and key.owner_active is False:
            owner = key.owner or key.owner_email or "its owner"
            found.append(
                _finding(
                    facts,
                    FindingKind.OWNER_GONE,
                    key.key_id,
                    _label(key),
                    f"Key {_label(key)} belongs to {owner}, who no longer has access to the account, yet the key "
                    "still works: revoke it or hand its use to a current owner.",
                    {**_key_evidence(key), "spend_30d": decimal_text(key.spend_30d), "currency": key.currency},
                )
            )
    return found


def admin_key_traffic(facts: Facts) -> list[Finding]:
    """An admin-scoped key with rows of its own in the last 7 days: a key that can manage the account is being
    used to call models."""
    since = recent_start(facts.now)
    found = []
    for key in facts.keys:
        if key.scope == ADMIN_SCOPE and _used_since(key, since):
            found.append(
                _finding(
                    facts,
                    FindingKind.ADMIN_KEY_TRAFFIC,
                    key.key_id,
                    _label(key),
                    f"Admin key {_label(key)} was used for traffic in the last {RECENT_DAYS} days "
                    f"({_money(key.spend_7d, key.currency)}): an admin key can manage the whole account; call "
                    "models with a key of narrower scope.",
                    {**_key_evidence(key), "spend_7d": decimal_text(key.spend_7d), "currency": key.currency},
                )
            )
    return found


def duplicate_account(facts: Facts) -> list[Finding]:
    """Another connection, not disconnected, reaches the same vendor account: its spend is held twice. One finding
    per account, on its judge, naming every connection."""
    if not facts.shared_with or not facts.account:
        return []
    others = sorted(facts.shared_with)
    return [
        _finding(
            facts,
            FindingKind.DUPLICATE_ACCOUNT,
            facts.account,
            facts.account,
            f"{_vendor(facts)} account {facts.account} is also connected as {', '.join(others)}: reports count it "
            f"once (from the connection synced last) and its findings are kept on {facts.connection}, but keep one "
            "connection to it.",
            {
                "account": facts.account,
                "connector": facts.connector,
                "connections": sorted([facts.connection, *others]),
                "judged_by": facts.connection,
            },
        )
    ]


def spend_spike(facts: Facts) -> list[Finding]:
    """A key's spend today or yesterday far above its usual (the budgets' anomaly rule, on the key's daily spend),
    or a model the key had not used in the 30 days before: both are a key doing something new."""
    by_key: dict[str, dict[str, dict[str, Decimal]]] = {}
    for (key_id, day, currency), cost in facts.key_daily.items():
        by_key.setdefault(key_id, {}).setdefault(currency, {})[day] = cost
    recent_models: dict[tuple[str, str], dict[str, dict[str | None, Decimal]]] = {}
    for (key_id, day, model, currency), cost in facts.key_spend.items():
        models = recent_models.setdefault((key_id, currency), {}).setdefault(day, {})
        models[model] = EXACT.add(models.get(model, Decimal(0)), cost)
    labels = {key.key_id: _label(key) for key in facts.keys}
    recent = recent_days(facts.now)
    start, end = (moment.strftime("%Y-%m-%d") for moment in earlier_window(facts.now))
    found = []
    for key_id in sorted(by_key):
        for currency in sorted(by_key[key_id]):
            daily = by_key[key_id][currency]
            days = recent_models.get((key_id, currency), {})
            unusual = unusual_days(daily, facts.now)
            # As the anomaly rule asks for days of history, so does "new model": a key (or a connection backfilled
            # two days ago) with a few hours behind it has not shown what it usually runs yet.
            known = sum(1 for day, spent in daily.items() if start <= day < end and spent > 0) >= MIN_HISTORY_DAYS
            earlier = facts.earlier_models.get((key_id, currency), frozenset()) if known else frozenset()
            new_models = _new_models(days, recent, earlier)
            if not unusual and not new_models:
                continue
            label = labels.get(key_id, key_id)
            if unusual:
                spike = unusual[-1]
                day, spent, baseline = spike.label, spike.spent, spike.median
                message = (
                    f"Key {label} spent {_money(spent, currency)} on {day}{' so far' if spike.today else ''}, far "
                    f"above its usual {_money(baseline, currency)} a day"
                )
                extra = {"limit": decimal_text(spike.limit), "baseline_days": BASELINE_DAYS}
            else:
                day = max(d for d, _model in new_models)
                spent, baseline = daily.get(day, Decimal(0)), _median_before(daily, day)
                message = f"Key {label} spent {_money(spent, currency)} on {day}"
                extra = {}
            models = sorted({model for _day, model in new_models})
            top = max(days.get(day, {}).items(), key=lambda item: (item[1], item[0] or ""), default=(None, 0))[0]
            if models:
                message += f" and started using {', '.join(models)}, unseen on it in the {NEW_MODEL_DAYS} days before"
            found.append(
                _finding(
                    facts,
                    FindingKind.SPEND_SPIKE,
                    key_id,
                    label,
                    message + ": check that the key is used as intended.",
                    {
                        "key_id": key_id,
                        "day": day,
                        "spend": decimal_text(spent),
                        "baseline_median": decimal_text(baseline),
                        "currency": currency,
                        "model": models[0] if models else top,
                        "new_models": models,
                        **extra,
                    },
                )
            )
    return found


# -- helpers ---------------------------------------------------------------------------------------------------
def _new_models(
    days: Mapping[str, Mapping[str | None, Decimal]], recent: Sequence[str], earlier: frozenset[str]
) -> set[tuple[str, str]]:
    """``(day, model)`` of today and yesterday whose model the key used on none of the 30 days before yesterday,
    given that it was used at all then (a new key's first model is not news)."""
    if not earlier:
        return set()
    return {(day, model) for day in recent for model in days.get(day, {}) if model is not None and model not in earlier}


def _median_before(daily: Mapping[str, Decimal], day: str) -> Decimal:
    from statistics import median

    start = datetime.strptime(day, "%Y-%m-%d")
    return median(daily.get((start - timedelta(days=n)).strftime("%Y-%m-%d"), Decimal(0)) for n in range(1, 15))


def _total(amounts: Iterable[Decimal]) -> Decimal:
    total = Decimal(0)
    for value in amounts:
        total = EXACT.add(total, value)
    return total


def _used_since(key: KeyRecord, since: datetime) -> bool:
    return key.last_usage_at is not None and key.last_usage_at >= since


def _finding(
    facts: Facts, kind: FindingKind, subject: str, label: str, message: str, evidence: dict[str, Any]
) -> Finding:
    return Finding(
        connection=facts.connection,
        connector=facts.connector,
        kind=kind,
        severity=SEVERITY[kind],
        subject=subject,
        subject_label=label,
        message=message,
        evidence=evidence,
        opened_at=facts.now,
    )


def _key_evidence(key: KeyRecord) -> dict[str, Any]:
    """What the inventory knows of a key: the listing's words and the dates, as JSON."""
    times = ("created_at", "first_listed_at", "last_listed_at", "gone_at", "first_usage_at", "last_usage_at")
    evidence: dict[str, Any] = {
        "key_id": key.key_id,
        "name": key.name,
        "scope": key.scope,
        "owner": key.owner,
        "owner_email": key.owner_email,
        "owner_active": key.owner_active,
        "workspace": key.workspace_name or key.workspace_id,
        "status": key.status,
        "listing": key.listing,
    }
    for name in times:
        value = getattr(key, name)
        evidence[name] = None if value is None else iso(value)
    return evidence


def _label(key: KeyRecord) -> str:
    return key.name or key.key_id


def _vendor(facts: Facts) -> str:
    return facts.connector


def _day(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d")


def _money(value: Decimal, currency: str | None) -> str:
    return f"{value:,.2f} {currency or ''}".rstrip()
