"""The key inventory and its findings, brought up to date after every successful sync.

:func:`refresh_listing` asks the connector for its key listing (:meth:`Connector.list_keys`) while the sync still
holds it open, and records the listing in the store, which keeps each key's history. A listing that fails is logged
and leaves the inventory as it was: it never changes the sync's outcome. :func:`evaluate_findings` then gathers the
facts the rules in :mod:`connector_sdk.findings` judge, and has the store open, update and resolve findings in one
transaction with their payloads for the connection's sinks; each finding that opened or resolved is logged and
fired as the ``connector_sdk_finding`` event.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import structlog

from connector_sdk import findings
from connector_sdk.errors import CredentialError, ResponseError, TransientError
from connector_sdk.findings import Facts, Settings
from connector_sdk.models import Finding, FindingKind, floor_hour
from connector_sdk.sinks import FINDING, finding_payload

if TYPE_CHECKING:
    from connector_sdk.connector import Connector
    from connector_sdk.host import Host

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


def facts(host: Host, name: str) -> Facts:
    """What the rules judge for connection ``name`` now."""
    store = host.store
    connection = store.get_connection(name)
    now = host.now()
    until = floor_hour(now) + timedelta(hours=1)
    people = store.person_spend(name, since=until - timedelta(days=findings.WEB_UI_DAYS), until=until)
    today = floor_hour(now).replace(hour=0)
    by_day = store.grouped_spend(
        name,
        since=today - timedelta(days=findings.NEW_MODEL_DAYS + 1),
        until=until,
        by=("api_key_id", "day", "model", "currency"),
    )
    key_spend = {
        (key_id, day, model, currency): cost
        for (key_id, day, model, currency), (_count, cost) in by_day.items()
        if key_id is not None and currency is not None
    }
    shared_with: list[str] = []
    counted = None
    for shared in host.shared_accounts():
        members = [shared.counted, *shared.merged]
        if (shared.connector, shared.account) == (connection.connector, connection.account) and name in members:
            shared_with = [other for other in members if other != name]
            counted = shared.counted
    return Facts(
        connection=name,
        connector=connection.connector,
        account=connection.account,
        now=now,
        keys=store.key_inventory(name, now=now),
        listing=store.key_listing(name),
        person_spend=people,
        shared_with=shared_with,
        counted=counted,
        key_spend=key_spend,
    )


def evaluate_findings(
    host: Host, name: str, *, listed: bool, settings: Settings | None = None
) -> list[tuple[Finding, str]]:
    """Judge the connection's findings now; returns each that opened or resolved, with its change.

    ``listed``: a listing was recorded in this sync, so the listing's kinds are judged too; otherwise their open
    findings stay as they were.
    """
    store = host.store
    settings = settings or Settings.from_environment()
    found = findings.conditions(facts(host, name), settings, listed=listed)
    # A new key is news once: after its finding closed (acknowledged, or its days passed) it never reopens.
    new_keys = store.list_findings(name, kind=FindingKind.NEW_KEY)
    closed = {f.subject for f in new_keys if not f.is_open} - {f.subject for f in new_keys if f.is_open}
    found = [c for c in found if c.kind != FindingKind.NEW_KEY or c.subject not in closed]
    kinds = sorted(findings.ROW_KINDS | (findings.LISTING_KINDS if listed else frozenset()))
    sinks = host.sinks_taking(name, FINDING)
    changes = store.reconcile_findings(
        name,
        found,
        kinds=kinds,
        now=host.now(),
        outbox=lambda finding, change: [(sink, finding_payload(name, finding, change)) for sink in sinks],
    )
    for finding, change in changes:
        host.announce_finding(finding, change)
    return changes
