"""The hooks a connector-host plugin can implement.

A plugin is a module (or object) listed under the ``connector_sdk`` entry-point group whose functions carry the
:data:`connector_sdk.hookimpl` marker and the names below. Every hook is optional.

* ``connector_sdk_register_connectors`` is how connectors reach the host: the built-in fal connector uses it too;
  ``connector_sdk_register_sinks`` likewise for the destinations of rows (the built-in ones use it too).
* The other four are events the host fires; a plugin implements them to forward rows, react to finished syncs or
  tell an admin that a connection needs a new key. An event hook that raises is logged and ignored: a broken
  listener never fails a sync.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

from connector_sdk import PROJECT_NAME

if TYPE_CHECKING:
    from connector_sdk.connector import Connector
    from connector_sdk.models import Alert, Connection, ConnectionState, Finding, SyncRun, UsageRow
    from connector_sdk.sinks import Sink

hookspec = pluggy.HookspecMarker(PROJECT_NAME)


@hookspec
def connector_sdk_register_connectors() -> list[type[Connector]]:
    """Return the connector classes this plugin provides.

    Each class is a subclass of :class:`connector_sdk.connector.Connector` with a unique ``id``. The host checks
    them all in one place: a class that is not a connector, or an ``id`` that two plugins claim, is reported as a
    load error naming the plugins, and the rest of the host keeps working.
    """


@hookspec
def connector_sdk_register_sinks() -> list[type[Sink]]:
    """Return the sink classes this plugin provides (see :mod:`connector_sdk.sinks`).

    Each is a subclass of :class:`connector_sdk.sinks.Sink` with a unique ``kind``; an admin configures them per
    connection (``connector-host sink add``). Checked like connectors: a bad class or a ``kind`` two plugins claim
    is reported as a load error naming the plugins.
    """


@hookspec
def connector_sdk_rows_emitted(connection: Connection, rows: list[UsageRow]) -> None:
    """Called after a page of rows has been committed to the store.

    :param connection: the connection the rows belong to (never carries a credential).
    :param rows: the rows of the page, in the order the connector produced them. They are committed: a listener
        that fails cannot lose them, and the next sync re-emits rows of re-polled hours.
    """


@hookspec
def connector_sdk_sync_finished(connection: Connection, run: SyncRun) -> None:
    """Called once at the end of every sync, whatever its outcome.

    :param connection: the connection as it is after the sync (state and watermark updated).
    :param run: the finished run: outcome, window, rows written, pages and the error message if any.
    """


@hookspec
def connector_sdk_alert(connection: Connection, alert: Alert) -> None:
    """Called once when a budget threshold is crossed or a day's spend is anomalous (see :mod:`connector_sdk.budgets`).

    Never again for the same threshold and month, or the same day. Implement it to deliver alerts elsewhere
    (e-mail, Slack); the host already logs them and queues them for the connection's webhook sinks.

    :param connection: the connection whose spend it concerns.
    :param alert: what happened, in words (``message``) and in figures (``evidence``).
    """


@hookspec
def connector_sdk_finding(connection: Connection, finding: Finding, change: str) -> None:
    """Called once when a finding opens and once when it resolves (see :mod:`connector_sdk.findings`).

    A finding never opens twice while its condition holds. Acknowledging one fires nothing, except for a kind an
    acknowledgement closes (a new key: :data:`~connector_sdk.models.ACK_RESOLVES`), which fires ``"resolved"``. The
    host already logs findings and queues them, in order, for the connection's webhook sinks.

    :param connection: the connection the finding concerns.
    :param finding: the finding as stored after the change (its ``id``, evidence, and ``resolved_at`` once resolved).
    :param change: ``"opened"`` or ``"resolved"``.
    """


@hookspec
def connector_sdk_connection_status_changed(
    connection: Connection, old: ConnectionState | None, new: ConnectionState, reason: str | None
) -> None:
    """Called once each time a connection's stored state changes, never again while it stays the same.

    The transition to ``reconnect_required`` is the reconnect signal: the vendor refused the credential and an
    admin must supply a new one (``connector-host reconnect``). ``reason`` says why, in words fit for that admin.

    :param connection: the connection after the change.
    :param old: the previous state (``None`` when the connection was just created).
    :param new: the new state.
    :param reason: why, or ``None`` for a healthy state.
    """
