"""The store contract: connections, their encrypted credentials, sync state, runs, status history and rows.

This module holds the interface alone (:class:`Store`), with the shape of a schema version (:class:`Migration`). Two
implementations share it, both built on the SQL core in :mod:`.core`: :class:`~connector_sdk.stores.sqlite.SQLiteStore`
(the embedded default) and :class:`~connector_sdk.stores.postgres.PostgresStore` (for many workers). The host talks
only to this interface, and one contract test suite runs against both. Timestamps are aware UTC datetimes; money is
``Decimal``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from connector_sdk.models import (
    EXACT,
    USER_KEY,
    Alert,
    Budget,
    Connection,
    ConnectionState,
    Finding,
    FindingKind,
    KeyEvent,
    KeyListingInfo,
    KeyRecord,
    ListedKey,
    OutboxItem,
    Page,
    Price,
    ReportLine,
    RunOutcome,
    SinkRecord,
    StatusChange,
    SyncRun,
    SyncWindow,
    UsageRow,
)

STORE_ENV = "CONNECTOR_HOST_STORE"

#: The columns :meth:`Store.grouped_spend` groups by (``day``: the UTC day of the row's period start).
SPEND_GROUPS = frozenset(
    {"connection", "connector", "api_key_id", "api_key_label", "login_username", "model", "currency", "day"}
)
#: What a finding change queues for a connection's sinks: ``(sink name, payload)`` pairs for the finding as stored
#: and its change (``"opened"``, ``"resolved"``), built in the transaction that makes the change.
FindingOutbox = Callable[[Finding, str], Sequence[tuple[str, str]]]


# The orders rows_page accepts, each a column (cost compared as a number); "-hour" etc. for descending.
ROW_ORDERS = ("hour", "key", "model", "cost")


def row_order(order: str, columns: dict[str, str]) -> str:
    """The ORDER BY text for ``order`` (see :data:`ROW_ORDERS`) given each backend's column expressions."""
    descending = order.startswith("-")
    name = order.removeprefix("-")
    if name not in ROW_ORDERS:
        raise ValueError(f"unknown row order {order!r}; use one of {', '.join(ROW_ORDERS)}, '-' first for descending")
    direction = " DESC" if descending else ""
    if name == "hour":
        return f"period_start{direction}, {columns['row_id']}{direction}"
    # A model or cost may be NULL (a usage row has no cost): below every value on both backends, whose defaults
    # differ (PostgreSQL puts NULL above).
    nulls = " NULLS LAST" if descending else " NULLS FIRST"
    return f"{columns[name]}{direction}{nulls}, period_start{direction}, {columns['row_id']}{direction}"


@dataclass(frozen=True)
class Migration:
    """One schema version, written once for each backend so both stay at the same version number."""

    version: int
    description: str
    sqlite: str
    postgres: str


class Store(ABC):
    """Everything the host persists. Every method is one transaction; implementations are thread-safe."""

    url: str

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def schema_version(self) -> int: ...

    # -- connections ---------------------------------------------------------------------------------------
    @abstractmethod
    def add_connection(
        self, *, name: str, connector: str, config: dict[str, Any], credential: bytes, account: str, now: datetime
    ) -> Connection:
        """Store a new ``connected`` connection, due for its first sync at ``now``; record its first status.

        Raises :class:`ConfigError` if the name is taken.
        """

    @abstractmethod
    def get_connection(self, name: str) -> Connection:
        """Raises :class:`~connector_sdk.errors.UnknownConnection`."""

    @abstractmethod
    def list_connections(self) -> list[Connection]:
        """All connections, by name."""

    @abstractmethod
    def account_connections(self, connector: str, account: str) -> list[Connection]:
        """The connections of ``connector`` that reach ``account``, by name, in whatever state: what a sync's
        findings need to know of the others, without reading every connection (a host may hold thousands)."""

    @abstractmethod
    def get_credential(self, name: str) -> bytes | None:
        """The encrypted credential, or ``None`` once disconnected."""

    @abstractmethod
    def set_credential(self, name: str, credential: bytes | None, *, account: str | None = None) -> None:
        """Replace (or with ``None``, delete) the encrypted credential; update the account name if given."""

    @abstractmethod
    def delete_connection(self, name: str) -> None:
        """Remove the connection with its rows, runs and status history."""

    @abstractmethod
    def set_state(self, name: str, state: ConnectionState, reason: str | None, *, now: datetime) -> StatusChange | None:
        """Set the stored state. Returns the change of state, or ``None`` when the state stays the same.

        A change of state is recorded in the status history; a new reason alone is stored without a history entry.
        """

    @abstractmethod
    def status_history(self, name: str) -> list[StatusChange]: ...

    @abstractmethod
    def set_next_sync(self, name: str, at: datetime | None) -> None: ...

    @abstractmethod
    def due_connections(self, now: datetime, *, limit: int | None = None) -> list[Connection]:
        """The connections that can sync (connected, or in error) and whose next sync time has come or was never
        set: never-scheduled ones first, then the longest waiting, then by name. Read through an index, so a
        scheduler may ask every second however many connections wait."""

    # -- single flight -------------------------------------------------------------------------------------
    @abstractmethod
    def acquire_lease(self, name: str, owner: str, *, now: datetime, ttl_seconds: float) -> bool:
        """Take the connection's sync lease if it is free, expired, or already ``owner``'s."""

    @abstractmethod
    def renew_lease(self, name: str, owner: str, *, now: datetime, ttl_seconds: float) -> bool:
        """Extend ``owner``'s lease; ``False`` if it lost it."""

    @abstractmethod
    def release_lease(self, name: str, owner: str) -> None: ...

    @abstractmethod
    def lease_holder(self, name: str, *, now: datetime) -> str | None:
        """Who holds an unexpired lease, if anyone."""

    # -- runs ----------------------------------------------------------------------------------------------
    @abstractmethod
    def start_run(self, name: str, run_id: str, window: SyncWindow, *, now: datetime) -> SyncRun:
        """Record a running sync and the connection's ``last_sync_at``."""

    @abstractmethod
    def commit_page(
        self,
        name: str,
        run_id: str,
        page: Page,
        *,
        watermark: datetime,
        outbox: Sequence[tuple[str, str]] = (),
        now: datetime | None = None,
        state: Mapping[str, Any] | None = None,
    ) -> None:
        """In one transaction: replace the connection's rows in ``[page.covers_from, page.complete_through)``
        with ``page.rows`` (upserted on ``row_id``), raise the watermark to ``watermark`` (never lower it), count
        the rows and page on the run, queue each ``(sink name, payload)`` of ``outbox`` for delivery at ``now``,
        and, when ``state`` is given, make it the connection's connector state (see :meth:`connector_state`).
        """

    @abstractmethod
    def connector_state(self, name: str) -> dict[str, Any]:
        """The JSON object the connection's connector last remembered (``{}`` before it remembered anything); it is
        written by :meth:`commit_page` and goes with the connection."""

    @abstractmethod
    def finish_run(self, run_id: str, outcome: RunOutcome, message: str | None, *, now: datetime) -> SyncRun:
        """Close the run; a succeeded run also sets the connection's ``last_success_at``."""

    @abstractmethod
    def list_runs(self, name: str, *, limit: int = 20) -> list[SyncRun]:
        """The most recent runs first."""

    # -- rows ----------------------------------------------------------------------------------------------
    @abstractmethod
    def iter_rows(
        self,
        name: str | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        api_key_label: str | None = None,
        model: str | None = None,
    ) -> Iterator[UsageRow]:
        """Rows with ``since <= period_start < until`` (of one label and one model when given), by period then row
        id, streamed."""

    @abstractmethod
    def rows_page(
        self,
        name: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        api_key_label: str | None = None,
        model: str | None = None,
        offset: int = 0,
        limit: int = 100,
        order: str = "hour",
    ) -> tuple[list[UsageRow], int]:
        """One page of a connection's rows that match, and how many match in all.

        For paged screens over big accounts: the filtering, ordering, counting and skipping happen in the database.
        ``order`` is one of :data:`ROW_ORDERS` (``"hour"`` is :meth:`iter_rows` order), ``"-"`` first for
        descending; ties go by hour, then row id, in the same direction.
        """

    @abstractmethod
    def count_rows(self, name: str | None = None) -> int: ...

    @abstractmethod
    def report(self, name: str | None, *, since: datetime, until: datetime) -> list[ReportLine]:
        """Per connector, API key label and currency: the models used and the exact total of the billed cost rows
        (``kind = "cost"``; usage rows never add money); highest cost first."""

    @abstractmethod
    def delete_rows(self, name: str) -> int: ...

    # -- budgets, alerts, prices ----------------------------------------------------------------------------
    @abstractmethod
    def add_budget(
        self,
        name: str,
        *,
        monthly_amount: Decimal,
        currency: str,
        thresholds: list[int],
        anomaly: bool,
        api_key_label: str | None,
        model: str | None,
        now: datetime,
    ) -> Budget: ...

    @abstractmethod
    def list_budgets(self, name: str | None = None) -> list[Budget]: ...

    @abstractmethod
    def remove_budget(self, budget_id: int) -> None:
        """:class:`ConfigError` if there is no such budget."""

    @abstractmethod
    def record_alert(self, alert: Alert) -> Alert | None:
        """Store an alert unless one with its ``dedupe_key`` exists; the stored alert, or ``None`` if not new."""

    @abstractmethod
    def list_alerts(self, name: str | None = None, *, limit: int = 100) -> list[Alert]:
        """Newest first."""

    @abstractmethod
    def daily_spend(
        self,
        name: str,
        *,
        since: datetime,
        until: datetime,
        currency: str,
        api_key_label: str | None = None,
        model: str | None = None,
    ) -> dict[str, Decimal]:
        """Exact cost per UTC day (``YYYY-MM-DD``) of the cost rows with ``since <= period_start < until``."""

    @abstractmethod
    def daily_spend_by_label(
        self, name: str, *, since: datetime, until: datetime, currency: str
    ) -> dict[str, dict[str, Decimal]]:
        """Exact cost per API key label, then per UTC day (``YYYY-MM-DD``), of one currency's cost rows in the
        window."""

    @abstractmethod
    def cached_prices(self, connector: str, models: Sequence[str], *, fresh_after: datetime) -> list[Price]: ...

    @abstractmethod
    def cache_prices(self, connector: str, prices: Sequence[Price]) -> None: ...

    @abstractmethod
    def grouped_spend(
        self, name: str | None, *, since: datetime, until: datetime, by: Sequence[str]
    ) -> dict[tuple[Any, ...], tuple[int, Decimal]]:
        """Row count and exact billed cost (cost rows only) per value of the columns ``by`` (each one of
        :data:`SPEND_GROUPS`; a NULL column groups as ``None``) of the rows with ``since <= period_start < until``,
        of one connection or of all."""

    def person_spend(self, name: str | None, *, since: datetime, until: datetime) -> dict[tuple[str, str], Decimal]:
        """Web-UI spend: the exact billed cost of the rows no API key accounts for (``api_key_id`` null) that their
        connector labels ``"User key"``, per person (``login_username``, or ``"User key"`` when the vendor names no
        one) and currency. Other rows without a key are spend the vendor did not break down by key (Anthropic's cost
        report per workspace, spend past its 100-group cap), not anyone's web-UI use."""
        people: dict[tuple[str, str], Decimal] = {}
        spend = self.grouped_spend(
            name, since=since, until=until, by=("api_key_id", "api_key_label", "login_username", "currency")
        )
        for (key_id, label, person, currency), (_count, cost) in spend.items():
            if key_id is None and label == USER_KEY and currency is not None:
                who = (person or USER_KEY, currency)
                people[who] = EXACT.add(people.get(who, Decimal(0)), cost)
        return dict(sorted(people.items()))

    # -- key inventory -------------------------------------------------------------------------------------
    @abstractmethod
    def record_listing(self, name: str, keys: Sequence[ListedKey], *, now: datetime) -> list[KeyEvent]:
        """Record a complete listing of the connection's keys, in one transaction; returns the history it added.

        A key never listed before is ``listed``; one listed before under another name ``renamed``; one whose other
        fields changed (scope, owner, owner access, status, workspace) ``changed``; one that had gone and is back
        ``returned``. A key the previous listing named and this one does not is ``gone``: its row and its history
        stay. The first listing of a connection records ``listed`` with ``{"baseline": true}``.
        """

    @abstractmethod
    def key_listing(self, name: str) -> KeyListingInfo | None:
        """When the connection's keys were first and last listed; ``None`` before its first listing."""

    @abstractmethod
    def key_inventory(self, name: str | None, *, now: datetime) -> list[KeyRecord]:
        """Every key of the connection (or of all of them): each key a listing ever named, and each key id that
        rows name, by connection then key id.

        With what the last listing said of it, when listings first and last named it and when it left them, when
        rows first and last named it (any row kind; the start of the period), and its billed spend over the 7 and
        30 days before ``now`` (cost rows only, exact) in the currency it spent most in.
        """

    @abstractmethod
    def key_events(self, name: str, key_id: str | None = None) -> list[KeyEvent]:
        """The connection's key history (of one key when given), oldest first."""

    # -- findings --------------------------------------------------------------------------------------------
    @abstractmethod
    def list_findings(
        self, name: str | None = None, *, open_only: bool = False, kind: FindingKind | None = None
    ) -> list[Finding]:
        """Findings of a connection (or all), newest first."""

    @abstractmethod
    def get_finding(self, finding_id: int) -> Finding:
        """:class:`ConfigError` naming the id when there is no such finding."""

    @abstractmethod
    def reconcile_findings(
        self,
        name: str,
        conditions: Sequence[Finding],
        *,
        kinds: Sequence[FindingKind],
        now: datetime,
        outbox: FindingOutbox,
        adopt: Sequence[str] = (),
    ) -> list[tuple[Finding, str]]:
        """Bring the connection's findings of ``kinds`` in line with the ``conditions`` that hold now, in one
        transaction; returns each change, ``(finding, "opened" | "resolved")``, in the order made.

        A condition without an open finding of its kind and subject opens one (its ``opened_at`` is ``now``); one
        with an open finding updates that finding's severity, label, message and evidence (``updated_at`` set when
        any changed). An open finding of ``kinds`` whose condition is absent resolves at ``now``. Findings of other
        kinds are left alone. Each change queues ``outbox(finding, change)`` in the same transaction, for the
        connection the finding is on.

        ``adopt`` names other connections (of the same vendor account) whose open findings of ``kinds`` are judged
        here too: one whose condition holds moves to ``name`` as it is (its id, opening date and acknowledgement
        kept; ``updated_at`` set; no change returned), one whose condition is absent resolves where it is, and one
        whose condition ``name`` or an earlier adopted finding already holds open resolves as a duplicate.
        """

    @abstractmethod
    def acknowledge_finding(
        self, finding_id: int, note: str, *, now: datetime, resolve: bool, outbox: FindingOutbox
    ) -> tuple[Finding, bool]:
        """Mark a finding acknowledged with ``note`` (a later acknowledgement replaces the note); with ``resolve``,
        also resolve it if open, queueing ``outbox(finding, "resolved")`` in the same transaction. Returns the
        finding and whether it was resolved by this call. :class:`ConfigError` when there is no such finding."""

    # -- sinks and their outbox ----------------------------------------------------------------------------
    @abstractmethod
    def add_sink(
        self, name: str, sink: str, *, kind: str, config: dict[str, Any], secret: bytes | None, now: datetime
    ) -> SinkRecord:
        """Configure a sink on a connection; :class:`ConfigError` if the connection already has one so named."""

    @abstractmethod
    def list_sinks(self, name: str) -> list[SinkRecord]: ...

    @abstractmethod
    def get_sink_secret(self, name: str, sink: str) -> bytes | None: ...

    @abstractmethod
    def remove_sink(self, name: str, sink: str) -> None:
        """Remove the sink and whatever it had not delivered yet; :class:`ConfigError` if there is no such sink."""

    @abstractmethod
    def enqueue(self, name: str, sink: str, payload: str, *, now: datetime) -> None:
        """Queue one payload outside a page commit (an alert, say)."""

    @abstractmethod
    def pending(self, name: str, sink: str, *, now: datetime, limit: int = 100) -> list[OutboxItem]:
        """The sink's oldest undelivered items, in order, stopping at the first that waits for a retry time."""

    @abstractmethod
    def delivered(self, item_ids: Sequence[int]) -> None:
        """Remove delivered items."""

    @abstractmethod
    def delivery_failed(self, item_id: int, error: str, *, retry_at: datetime) -> None:
        """Count a failed attempt and hold the item (and those after it) until ``retry_at``."""

    @abstractmethod
    def backlog(self, name: str) -> dict[str, int]:
        """Undelivered items per sink of the connection (every sink listed, zero included)."""
