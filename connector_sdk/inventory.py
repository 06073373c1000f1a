"""The key inventory and its findings, brought up to date after every successful sync.

:func:`refresh_listing` asks the connector for its key listing (:meth:`Connector.list_keys`) while the sync still
holds it open, and records the listing in the store, which keeps each key's history. A listing that fails is logged
and leaves the inventory as it was: it never changes the sync's outcome. :func:`evaluate_findings` then gathers the
facts the rules in :mod:`connector_sdk.findings` judge, and has the store open, update and resolve findings in one
transaction with their payloads for the connections' sinks; each finding that opened or resolved is logged and
fired as the ``connector_sdk_finding`` event.

A vendor account that several connections reach is judged by one of them (:func:`connector_sdk.findings.account_of`);
a sync of another finds nothing. The judge takes over the open findings the others hold (same id, opening date and
acknowledgement; no event), which happens only when the judge changed or after an upgrade from a version that judged
every connection.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import structlog

from connector_sdk import findings
from connector_sdk.errors import CredentialError, ResponseError, TransientError
from connector_sdk.findings import Account, Facts, Settings
from connector_sdk.models import Finding, FindingKind, floor_hour
from connector_sdk.sinks import FINDING, finding_payload

if TYPE_CHECKING:
    from connector_sdk.connector import Connector
    from connector_sdk.host import Host
    from connector_sdk.models import Connection
    from connector_sdk.stores import Store

log = structlog.get_logger()


def refresh_listing(host: Host, name: str, connector: Connector) -> bool:
    """Record the connector's key listing; ``True`` when a listing was recorded, ``False`` when the connector
    cannot list keys or the listing failed (logged; the inventory stays as it was)."""
    try:
        keys = connector.list_keys()
    except (TransientError, CredentialError, ResponseError) as error:
        log.warning("key_listing_failed", connection=name, reason=host.scrub(str(error)))
        return False
    except Exception as error:  # a connector's bug in its listing must not fail a sync that succeeded
        log.exception("key_listing_crashed", connection=name, error=host.scrub(f"{type(error).__name__}"))
        return False
    if keys is None:
        return False
    events = host.store.record_listing(name, keys, now=host.now())
    counts: dict[str, int] = {}
    for event in events:
        counts[event.event] = counts.get(event.event, 0) + 1
    log.info("key_listing_recorded", connection=name, keys=len(keys), **counts)
    return True


def facts(host: Host, name: str, account: Account | None = None) -> Facts:
    """What the rules judge for connection ``name`` now (``account``: its account, when already known)."""
    store = host.store
    connection = store.get_connection(name)
    account = account or account_of(store, name)
    now = host.now()
    until = floor_hour(now) + timedelta(hours=1)
    people = store.person_spend(name, since=until - timedelta(days=findings.WEB_UI_DAYS), until=until)
    today = floor_hour(now).replace(hour=0)
    # Three small reads of the daily totals instead of a month of per-model figures: see findings.Facts.
    daily = store.grouped_spend(
        name,
        since=today - timedelta(days=findings.NEW_MODEL_DAYS + 1),
        until=until,
        by=("api_key_id", "day", "currency"),
    )
    recent = store.grouped_spend(
        name, since=today - timedelta(days=1), until=until, by=("api_key_id", "day", "model", "currency")
    )
    start, end = findings.earlier_window(now)
    earlier: dict[tuple[str, str], set[str]] = {}
    for key_id, model, currency in store.grouped_spend(
        name, since=start, until=end, by=("api_key_id", "model", "currency")
    ):
        if key_id is not None and model is not None and currency is not None:
            earlier.setdefault((key_id, currency), set()).add(model)
    return Facts(
        connection=name,
        connector=connection.connector,
        account=connection.account,
        now=now,
        keys=store.key_inventory(name, now=now),
        listing=store.key_listing(name),
        person_spend=people,
        shared_with=[member for member in account.members if member != name],
        judge=account.judge,
        baseline=frozenset(
            e.key_id for e in store.key_events(name) if e.event == "listed" and e.detail.get("baseline")
        ),
        key_spend={
            (key_id, day, model, currency): cost
            for (key_id, day, model, currency), (_count, cost) in recent.items()
            if key_id is not None and currency is not None
        },
        key_daily={
            (key_id, day, currency): cost
            for (key_id, day, currency), (_count, cost) in daily.items()
            if key_id is not None and currency is not None
        },
        earlier_models={key: frozenset(models) for key, models in earlier.items()},
    )


def _reaching_account(store: Store, name: str) -> list[Connection]:
    """Connection ``name`` and the others that reach its account: read by account, not the host's every connection,
    so a sync of one of thousands stays as cheap as a sync of one."""
    me = store.get_connection(name)
    return store.account_connections(me.connector, me.account) if me.account else [me]


def account_of(store: Store, name: str) -> Account:
    """:func:`findings.account_of` of ``name``, from the connections that reach its account."""
    return findings.account_of(name, _reaching_account(store, name))


def evaluate_findings(
    host: Host, name: str, *, listed: bool, settings: Settings | None = None
) -> list[tuple[Finding, str]]:
    """Judge the findings of connection ``name``'s account now; returns each that opened or resolved, with its change
    (on the account's judge, or on another connection of the account whose finding the judge took over and found
    cleared).

    ``listed``: a listing was recorded in this sync, so the listing's kinds are judged too; otherwise their open
    findings stay as they were. After a sync of a connection that does not judge its account, the judge judges what
    its own rows tell (a connection to the account just added, say) without waiting for its own next sync; the
    listing's kinds wait for it.
    """
    store = host.store
    settings = settings or Settings.from_environment()
    connections = _reaching_account(store, name)
    account = findings.account_of(name, connections)
    if account.judge != name:
        log.debug("findings_judged_by", connection=name, judge=account.judge)
        name, listed = account.judge, False
        account = findings.account_of(name, connections)
    found = findings.conditions(facts(host, name, account), settings, listed=listed)
    # A new key is news once: after its finding closed (acknowledged, or its days passed) it never reopens, whichever
    # connection of the account held it.
    new_keys = [f for each in (name, *account.others) for f in store.list_findings(each, kind=FindingKind.NEW_KEY)]
    closed = {f.subject for f in new_keys if not f.is_open} - {f.subject for f in new_keys if f.is_open}
    found = [c for c in found if c.kind != FindingKind.NEW_KEY or c.subject not in closed]
    kinds = sorted(findings.ROW_KINDS | (findings.LISTING_KINDS if listed else frozenset()))
    held = {
        other: len([f for f in store.list_findings(other, open_only=True) if f.kind in kinds])
        for other in account.others
    }
    if any(held.values()):
        log.info("findings_taken_over", connection=name, held_by=sorted(o for o, n in held.items() if n))
    sinks: dict[str, list[str]] = {}

    def outbox(finding: Finding, change: str) -> list[tuple[str, str]]:
        if finding.connection not in sinks:
            sinks[finding.connection] = host.sinks_taking(finding.connection, FINDING)
        return [(sink, finding_payload(finding.connection, finding, change)) for sink in sinks[finding.connection]]

    changes = store.reconcile_findings(
        name, found, kinds=kinds, now=host.now(), outbox=outbox, adopt=[o for o in account.others if held[o]]
    )
    for finding, change in changes:
        host.announce_finding(finding, change)
    return changes
