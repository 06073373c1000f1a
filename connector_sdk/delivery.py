"""Delivery: drains each connection's outbox into its sinks, in order, at least once.

The outbox is written in the same store transaction as the rows it carries (:func:`connector_sdk.sinks.rows_payload`
by the sync, alerts by :mod:`connector_sdk.budgets`); this module sends it on, and on failure keeps a sink's queue
until its retry time without holding up the other sinks.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING

import structlog

from connector_sdk.sinks import Sink, failure_reason, retry_delay

if TYPE_CHECKING:
    from connector_sdk.host import Host

log = structlog.get_logger()


def deliver_pending(host: Host, name: str, *, now: datetime | None = None) -> dict[str, int]:
    """Deliver what each of the connection's sinks has waiting; returns how many payloads each took.

    A sink that fails keeps its queue (in order) until its retry time; the other sinks are not held up.
    """
    now = now or host.now()
    sent: dict[str, int] = {}
    for record in host.store.list_sinks(name):
        try:
            sink = host.open_sink(name, record)
        except Exception as error:
            log.error("sink_unavailable", connection=name, sink=record.name, error=str(error))
            sent[record.name] = 0
            continue
        try:
            sent[record.name] = _drain(host, name, record.name, sink, now)
        finally:
            sink.close()
    return sent


def _drain(host: Host, name: str, sink_name: str, sink: Sink, now: datetime) -> int:
    count = 0
    while items := host.store.pending(name, sink_name, now=now):
        for item in items:
            try:
                sink.deliver(json.loads(item.payload) | {"delivery_id": item.id})
            except Exception as error:
                reason = host.scrub(failure_reason(error))
                host.store.delivery_failed(item.id, reason, retry_at=now + retry_delay(item.attempts))
                log.warning("sink_delivery_failed", connection=name, sink=sink_name, reason=reason)
                return count
            host.store.delivered([item.id])
            count += 1
    return count


def deliver_backlog(host: Host, *, skip: frozenset[str] = frozenset()) -> None:
    """Retry the deliveries that failed earlier (a webhook that was down) for every connection not in ``skip``
    (those syncing now deliver after each page anyway). A runner calls this every minute or so."""
    for connection in host.store.list_connections():
        if connection.name not in skip and any(host.store.backlog(connection.name).values()):
            deliver_pending(host, connection.name)
