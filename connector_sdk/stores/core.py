"""The SQL both stores speak, written once: :class:`SQLStore` implements the store contract over a DB-API handle.

A backend subclasses it and supplies its dialect, the way Django's database backends override only what their engine
does differently: how a transaction is had (:meth:`SQLStore._read`, :meth:`SQLStore._write`,
:meth:`SQLStore._snapshot`), how values travel (timestamps, JSON, money), a few spellings (byte-wise ordering, row
locks, the UTC day of a row), how a page's rows are written, and how rows are streamed. Queries here use ``?``
placeholders; a backend whose driver wants another style translates them. Spend is summed in SQL by default; a
backend that keeps its own totals overrides :meth:`SQLStore._spend`.
"""

from __future__ import annotations

import json
import threading
from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar, Protocol

from connector_sdk.errors import ConfigError, StoreError, UnknownConnection
from connector_sdk.models import (
    EXACT,
    MONEY_FIELDS,
    ROW_FIELDS,
    STORED_FIELDS,
    TIME_FIELDS,
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
    decimal_text,
    floor_hour,
    instant,
    iso,
)
from connector_sdk.stores.base import SPEND_GROUPS, FindingOutbox, Migration, Store, row_order
from connector_sdk.stores.migrations import LATEST_VERSION, MIGRATIONS

_STORED_KEY = STORED_FIELDS.index("api_key_id")
_STORED_START = STORED_FIELDS.index("period_start")

CONNECTION_FIELDS = (
    "name", "connector", "config", "state", "reason", "account",
    "created_at", "watermark", "last_sync_at", "last_success_at", "next_sync_at",
)  # fmt: skip
CONNECTION_COLUMNS = ", ".join(CONNECTION_FIELDS)
RUN_FIELDS = (
    "run_id", "connection", "started_at", "finished_at", "outcome", "window_start", "window_end", "rows_written",
    "pages", "message",
)  # fmt: skip
RUN_COLUMNS = ", ".join(RUN_FIELDS)
# The timestamp columns of the records read back by name, which travel through the backend's _dt.
STORED_TIMES = frozenset(
    {"created_at", "watermark", "last_sync_at", "last_success_at", "next_sync_at"}
    | {"started_at", "finished_at", "window_start", "window_end", "fired_at"}
    | {"last_used_at", "first_listed_at", "last_listed_at", "gone_at"}
    | {"opened_at", "updated_at", "resolved_at", "acknowledged_at"}
)
ROW_COLUMNS = ", ".join(ROW_FIELDS)
BUDGET_FIELDS = (
    "id", "connection", "api_key_label", "model", "monthly_amount", "currency", "thresholds", "anomaly", "created_at",
)  # fmt: skip
BUDGET_COLUMNS = ", ".join(BUDGET_FIELDS)
ALERT_FIELDS = ("id", "connection", "budget_id", "kind", "dedupe_key", "fired_at", "message", "evidence")
ALERT_COLUMNS = ", ".join(ALERT_FIELDS)
REPORT_KEYS = ("connector", "api_key_label", "currency", "model")
# What a listing says of a key, as api_keys holds it (after connection and key_id).
LISTED_FIELDS = (
    "name", "scope", "owner", "owner_email", "owner_type", "owner_active", "workspace_id", "workspace_name",
    "created_at", "last_used_at", "status", "listing",
)  # fmt: skip
KEY_FIELDS = ("connection", "connector", "key_id", *LISTED_FIELDS, "first_listed_at", "last_listed_at", "gone_at")
KEY_COLUMNS = ", ".join(f"c.{f}" if f == "connector" else f"k.{f}" for f in KEY_FIELDS)
# A change in these is a "changed" event; the name has its own ("renamed"), and last use changes all the time.
TRACKED_FIELDS = (
    "scope", "owner", "owner_email", "owner_type", "owner_active", "workspace_id", "workspace_name", "status",
)  # fmt: skip
FINDING_FIELDS = (
    "id", "connection", "connector", "kind", "subject", "subject_label", "severity", "message", "evidence",
    "opened_at", "updated_at", "resolved_at", "acknowledged_at", "ack_note",
)  # fmt: skip
FINDING_COLUMNS = ", ".join(FINDING_FIELDS)
# The tables that hold a connection's own records; a backend may keep more (its derived totals). The key
# inventory, its history and the findings go only with the connection itself (a purge).
CONNECTION_TABLES = (
    "usage_rows", "sync_runs", "status_history", "sinks", "outbox", "budgets", "alerts",
    "api_keys", "key_listings", "key_events", "key_usage", "findings",
)  # fmt: skip
Keys = Sequence[str]  # columns to group by
Only = dict[str, str | None]  # columns to match (None: any value)
Spend = dict[tuple[Any, ...], tuple[int, Decimal]]  # row count and exact cost per group


class Handle(Protocol):
    """What a backend hands the core for one transaction: a DB-API connection or cursor taking ``?`` placeholders,
    whose ``execute`` returns a cursor with ``fetchone``, ``fetchall`` and ``rowcount``."""

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Any: ...

    def executemany(self, sql: str, params: Iterable[Sequence[Any]], /) -> Any: ...


def usage_rows(
    batch: Iterable[Sequence[Any]], *, time: Callable[[Any], datetime | None], money: Callable[[Any], Decimal] | None
) -> Iterator[UsageRow]:
    """Rows read back from usage_rows (ROW_FIELDS in order), their times read by ``time`` and, where the database
    does not hand back decimals itself, their amounts by ``money``."""
    for values in batch:
        fields = dict(zip(ROW_FIELDS, values, strict=True))
        if money is not None:
            for f in MONEY_FIELDS:
                if (v := fields[f]) is not None:
                    fields[f] = money(v)
        for f in TIME_FIELDS:
            fields[f] = time(fields[f])
        # Rows were validated on their way in; re-validating millions on the way out buys nothing.
        yield UsageRow.trusted(fields)


def _evidence(finding: Finding) -> str:
    """A finding's evidence as stored: JSON text with sorted keys, so the same figures compare equal."""
    return json.dumps(finding.evidence, sort_keys=True)


def _only_row(cursor: Any) -> Any:
    """The one row a statement returned (``None`` if none). ``fetchall``, so that SQLite finishes the statement."""
    rows = cursor.fetchall()
    return rows[0] if rows else None


class SQLStore(Store):
    """The store contract in the SQL both backends speak. Subclasses supply the dialect: the attributes and
    abstract methods under "the dialect" below, and an override wherever their engine does better."""

    # -- the dialect ---------------------------------------------------------------------------------------
    #: Appended to an ORDER BY on text, so that names and ids sort by code point on every backend.
    BYTEWISE: ClassVar[str] = ""
    #: Appended to the read of a connection's row that must keep other writers off it until the commit.
    FOR_UPDATE: ClassVar[str] = ""
    #: What ``LIMIT`` takes for "no limit".
    NO_LIMIT: ClassVar[int | None] = None
    #: The UTC day (``YYYY-MM-DD``) of a row's ``period_start``, in SQL.
    DAY: ClassVar[str]
    #: What an INSERT raises on a unique key that is taken.
    DUPLICATE: ClassVar[tuple[type[Exception], ...]]
    #: Tables a backend derives from usage_rows: emptied whenever a connection's rows go.
    DERIVED_TABLES: ClassVar[tuple[str, ...]] = ()
    #: The column that orders runs started in the same second by when they were recorded.
    RUN_SEQUENCE: ClassVar[str]
    #: How rows_page compares costs when sorting by them (the stored form may be text).
    COST_ORDER: ClassVar[str] = "cost"

    @abstractmethod
    def _read(self) -> AbstractContextManager[Handle]:
        """A handle for reads that need no consistency across statements."""

    @abstractmethod
    def _write(self) -> AbstractContextManager[Handle]:
        """One write transaction: committed if the block returns, rolled back if it raises."""

    @abstractmethod
    def _snapshot(self) -> AbstractContextManager[Handle]:
        """One read transaction whose statements all see the store as of the first of them."""

    # How values travel: each backend sets these to plain functions (staticmethods).
    #: A timestamp as the store keeps it: UTC, to the whole second.
    _ts: Callable[[datetime | None], Any]
    #: A stored timestamp as an aware UTC datetime.
    _dt: Callable[[Any], datetime | None]
    #: A JSON document as its column takes it, and a JSON column's value as Python.
    _json: Callable[[Any], Any]
    _unjson: Callable[[Any], Any]
    #: An amount as a money column takes it, and a money column's value (or a sum of one) as a Decimal in its
    #: plain shortest spelling.
    _money: Callable[[Decimal], Any]
    _decimal: Callable[[Any], Decimal]

    @abstractmethod
    def _rows(self, batch: Iterable[Sequence[Any]]) -> Iterator[UsageRow]:
        """Rows read back from usage_rows (ROW_FIELDS in order); see :func:`usage_rows`."""

    @abstractmethod
    def _stream(self, name: str | None, sql: str, params: Sequence[Any]) -> Iterator[UsageRow]:
        """Stream the rows a query selects, on a connection of its own, checking first that ``name`` (if given)
        exists: a long export must not hold a transaction open on the thread's shared connection."""

    def _page_values(self, page: Page) -> Any:
        """A page's rows made ready for :meth:`_put_rows`, before its transaction starts."""
        return page.rows

    @abstractmethod
    def _put_rows(self, db: Handle, name: str, run_id: str, page: Page, values: Any) -> None:
        """Upsert a page's rows (the page's window was emptied just before) in the page's transaction."""

    def _page_failed(self, run_id: str) -> None:
        """A page of the run failed to commit (its transaction was rolled back)."""

    def _finishing_run(self, db: Handle, run_id: str) -> None:
        """Work at the end of a run, in the transaction that closes it."""

    def _spend(self, db: Handle, name: str | None, since: datetime, until: datetime, keys: Keys, only: Only) -> Spend:
        """Row count and exact cost per value of ``keys`` (usage_rows columns, or ``day``: the UTC day) of the billed
        cost rows in the window whose columns equal ``only`` (a None value: any). Usage rows never add money."""
        where, params = self._where(name, since, until, kind="cost", **only)
        columns, groups = self._grouping(keys)
        found = db.execute(f"SELECT {columns}, COUNT(*), SUM(cost) FROM usage_rows{where} GROUP BY {groups}", params)
        return {tuple(row[:-2]): (int(row[-2]), self._decimal(row[-1])) for row in found.fetchall()}

    # -- shared plumbing -----------------------------------------------------------------------------------
    # One connection per thread in _local, and every one of them in _all (under _lock), for close().
    _local: threading.local
    _all: list[Any]
    _lock: threading.Lock

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()

    def _migrations_after(self, current: int) -> list[Migration]:
        """The schema versions a store at ``current`` lacks, in order; an error if it is newer than this code."""
        if current > LATEST_VERSION:
            raise StoreError(
                f"the store at {self.url} has schema version {current}, newer than this connector-host "
                f"understands ({LATEST_VERSION}); upgrade connector-host"
            )
        return [migration for migration in MIGRATIONS if migration.version > current]

    def _grouping(self, keys: Keys) -> tuple[str, str]:
        """The SELECT columns of ``keys`` (``day``: the UTC day of the row) and the GROUP BY that goes with them."""
        columns = ", ".join(self.DAY if key == "day" else key for key in keys)
        return columns, ", ".join(str(i + 1) for i in range(len(keys)))

    def _require(self, db: Handle, name: str, *, lock: bool = False) -> None:
        query = "SELECT 1 FROM connections WHERE name = ?" + (self.FOR_UPDATE if lock else "")
        if db.execute(query, (name,)).fetchone() is None:
            raise UnknownConnection(name)

    def _where(
        self, name: str | None, since: datetime | None, until: datetime | None, **equal: str | None
    ) -> tuple[str, list[Any]]:
        """The WHERE clause of rows of ``name`` (every connection when None) in the window, whose columns equal
        ``equal`` (a None value: any)."""
        clauses: list[str] = []
        params: list[Any] = []
        if name is not None:
            clauses.append("connection = ?")
            params.append(name)
        if since is not None:
            clauses.append("period_start >= ?")
            params.append(self._ts(since))
        if until is not None:
            clauses.append("period_start < ?")
            params.append(self._ts(until))
        for column, value in equal.items():
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    # -- connections ---------------------------------------------------------------------------------------
    def _fields(self, names: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
        """A row as fields by column name, its timestamps read back (the model validates the rest)."""
        dt = self._dt
        return {name: dt(value) if name in STORED_TIMES else value for name, value in zip(names, row, strict=True)}

    def _connection(self, row: Sequence[Any]) -> Connection:
        fields = self._fields(CONNECTION_FIELDS, row)
        # Read back as this store wrote it: not validated again (rows are not either, see usage_rows), so that a
        # command that only reads never builds the model's validator (models.py builds them on first use).
        return Connection.model_construct(
            **{**fields, "state": ConnectionState(fields["state"]), "config": self._unjson(fields["config"])}
        )

    def add_connection(
        self, *, name: str, connector: str, config: dict[str, Any], credential: bytes, account: str, now: datetime
    ) -> Connection:
        connected = ConnectionState.CONNECTED.value
        try:
            with self._write() as db:
                db.execute(
                    "INSERT INTO connections (name, connector, config, credential, state, account, created_at, "
                    "next_sync_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (name, connector, self._json(config), credential, connected, account, self._ts(now), self._ts(now)),
                )
                db.execute(
                    "INSERT INTO status_history (connection, at, old, new, reason) VALUES (?, ?, NULL, ?, NULL)",
                    (name, self._ts(now), connected),
                )
        except self.DUPLICATE:
            raise ConfigError(f"a connection named {name!r} already exists; choose another name") from None
        return self.get_connection(name)

    def get_connection(self, name: str) -> Connection:
        with self._read() as db:
            row = db.execute(f"SELECT {CONNECTION_COLUMNS} FROM connections WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise UnknownConnection(name)
        return self._connection(row)

    def list_connections(self) -> list[Connection]:
        return self._connections_by_name("", ())

    def account_connections(self, connector: str, account: str) -> list[Connection]:
        return self._connections_by_name(" WHERE connector = ? AND account = ?", (connector, account))

    def _connections_by_name(self, where: str, params: Sequence[Any]) -> list[Connection]:
        with self._read() as db:
            query = f"SELECT {CONNECTION_COLUMNS} FROM connections{where} ORDER BY name{self.BYTEWISE}"
            rows = db.execute(query, params).fetchall()
        return [self._connection(row) for row in rows]

    def due_connections(self, now: datetime, *, limit: int | None = None) -> list[Connection]:
        with self._read() as db:
            rows = db.execute(
                f"SELECT {CONNECTION_COLUMNS} FROM connections WHERE state IN ('connected', 'error') "
                "AND (next_sync_at IS NULL OR next_sync_at <= ?) "
                f"ORDER BY next_sync_at NULLS FIRST, name{self.BYTEWISE} LIMIT ?",
                (self._ts(now), self.NO_LIMIT if limit is None else max(0, limit)),
            ).fetchall()
        return [self._connection(row) for row in rows]

    def get_credential(self, name: str) -> bytes | None:
        with self._read() as db:
            row = db.execute("SELECT credential FROM connections WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise UnknownConnection(name)
        return None if row[0] is None else bytes(row[0])

    def set_credential(self, name: str, credential: bytes | None, *, account: str | None = None) -> None:
        with self._write() as db:
            cursor = db.execute(
                "UPDATE connections SET credential = ?, account = COALESCE(?, account) WHERE name = ?",
                (credential, account, name),
            )
            if cursor.rowcount == 0:
                raise UnknownConnection(name)

    def delete_connection(self, name: str) -> None:
        with self._write() as db:
            if db.execute("DELETE FROM connections WHERE name = ?", (name,)).rowcount == 0:
                raise UnknownConnection(name)
            for table in (*CONNECTION_TABLES, *self.DERIVED_TABLES):
                db.execute(f"DELETE FROM {table} WHERE connection = ?", (name,))

    def set_state(self, name: str, state: ConnectionState, reason: str | None, *, now: datetime) -> StatusChange | None:
        state = ConnectionState(state)
        with self._write() as db:
            row = db.execute(
                f"SELECT state, reason FROM connections WHERE name = ?{self.FOR_UPDATE}", (name,)
            ).fetchone()
            if row is None:
                raise UnknownConnection(name)
            old = ConnectionState(row[0])
            if old == state and row[1] == reason:
                return None
            db.execute("UPDATE connections SET state = ?, reason = ? WHERE name = ?", (state.value, reason, name))
            if old == state:
                return None
            db.execute(
                "INSERT INTO status_history (connection, at, old, new, reason) VALUES (?, ?, ?, ?, ?)",
                (name, self._ts(now), old.value, state.value, reason),
            )
        return StatusChange(connection=name, at=now, old=old, new=state, reason=reason)

    def status_history(self, name: str) -> list[StatusChange]:
        with self._read() as db:
            self._require(db, name)
            rows = db.execute(
                "SELECT at, old, new, reason FROM status_history WHERE connection = ? ORDER BY id", (name,)
            ).fetchall()
        return [
            StatusChange(
                connection=name,
                at=self._dt(at),
                old=ConnectionState(old) if old else None,
                new=ConnectionState(new),
                reason=reason,
            )
            for at, old, new, reason in rows
        ]

    def set_next_sync(self, name: str, at: datetime | None) -> None:
        with self._write() as db:
            if db.execute("UPDATE connections SET next_sync_at = ? WHERE name = ?", (self._ts(at), name)).rowcount == 0:
                raise UnknownConnection(name)

    # -- single flight -------------------------------------------------------------------------------------
    def acquire_lease(self, name: str, owner: str, *, now: datetime, ttl_seconds: float) -> bool:
        with self._write() as db:
            cursor = db.execute(
                "UPDATE connections SET lease_owner = ?, lease_expires_at = ? WHERE name = ? AND "
                "(lease_owner IS NULL OR lease_owner = ? OR lease_expires_at <= ?)",
                (owner, self._ts(now + timedelta(seconds=ttl_seconds)), name, owner, self._ts(now)),
            )
            if cursor.rowcount == 1:
                return True
            self._require(db, name)
            return False

    def renew_lease(self, name: str, owner: str, *, now: datetime, ttl_seconds: float) -> bool:
        with self._write() as db:
            cursor = db.execute(
                "UPDATE connections SET lease_expires_at = ? WHERE name = ? AND lease_owner = ?",
                (self._ts(now + timedelta(seconds=ttl_seconds)), name, owner),
            )
            if cursor.rowcount == 1:
                return True
            self._require(db, name)
            return False

    def release_lease(self, name: str, owner: str) -> None:
        with self._write() as db:
            cursor = db.execute(
                "UPDATE connections SET lease_owner = NULL, lease_expires_at = NULL WHERE name = ? AND lease_owner = ?",
                (name, owner),
            )
            if cursor.rowcount == 0:
                self._require(db, name)

    def lease_holder(self, name: str, *, now: datetime) -> str | None:
        with self._read() as db:
            row = db.execute(
                "SELECT CASE WHEN lease_expires_at > ? THEN lease_owner END FROM connections WHERE name = ?",
                (self._ts(now), name),
            ).fetchone()
        if row is None:
            raise UnknownConnection(name)
        return row[0]

    # -- runs ----------------------------------------------------------------------------------------------
    def _run(self, row: Sequence[Any]) -> SyncRun:
        return SyncRun(**self._fields(RUN_FIELDS, row))

    def start_run(self, name: str, run_id: str, window: SyncWindow, *, now: datetime) -> SyncRun:
        with self._write() as db:
            if (
                db.execute("UPDATE connections SET last_sync_at = ? WHERE name = ?", (self._ts(now), name)).rowcount
                == 0
            ):
                raise UnknownConnection(name)
            row = _only_row(
                db.execute(
                    "INSERT INTO sync_runs (run_id, connection, started_at, outcome, window_start, window_end) "
                    f"VALUES (?, ?, ?, ?, ?, ?) RETURNING {RUN_COLUMNS}",
                    (
                        run_id,
                        name,
                        self._ts(now),
                        RunOutcome.RUNNING.value,
                        self._ts(window.start),
                        self._ts(window.end),
                    ),
                )
            )
        return self._run(row)

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
        values = self._page_values(page)
        try:
            with self._write() as db:
                # Locked where the backend locks rows: two commits to one connection must not interleave their
                # deletes and inserts.
                self._require(db, name, lock=True)
                if state is not None:
                    db.execute(
                        "UPDATE connections SET connector_state = ? WHERE name = ?", (self._json(dict(state)), name)
                    )
                db.execute(
                    "DELETE FROM usage_rows WHERE connection = ? AND period_start >= ? AND period_start < ?",
                    (name, self._ts(page.covers_from), self._ts(page.complete_through)),
                )
                self._put_rows(db, name, run_id, page, values)
                self._note_key_usage(db, name, page)
                db.execute(
                    "UPDATE connections SET watermark = ? WHERE name = ? AND (watermark IS NULL OR watermark < ?)",
                    (self._ts(watermark), name, self._ts(watermark)),
                )
                db.execute(
                    "UPDATE sync_runs SET rows_written = rows_written + ?, pages = pages + 1 WHERE run_id = ?",
                    (page.row_count, run_id),
                )
                self._enqueue(db, name, outbox, now or watermark)
        except BaseException:
            self._page_failed(run_id)
            raise

    def _note_key_usage(self, db: Handle, name: str, page: Page) -> None:
        """Widen each key's first and last use to the periods of the page's rows that name it (read from the stored
        form, which a fast reader's page carries without row objects; its instants are ISO text that sorts)."""
        spans: dict[str, tuple[str, str]] = {}
        for row in page.stored():
            if (key := row[_STORED_KEY]) is not None:
                start = row[_STORED_START]
                span = spans.get(key)
                spans[key] = (start, start) if span is None else (min(span[0], start), max(span[1], start))
        if spans:
            db.executemany(
                "INSERT INTO key_usage (connection, key_id, first_usage_at, last_usage_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (connection, key_id) DO UPDATE SET "
                "first_usage_at = CASE WHEN excluded.first_usage_at < key_usage.first_usage_at "
                "THEN excluded.first_usage_at ELSE key_usage.first_usage_at END, "
                "last_usage_at = CASE WHEN excluded.last_usage_at > key_usage.last_usage_at "
                "THEN excluded.last_usage_at ELSE key_usage.last_usage_at END",
                [
                    (name, key, self._ts(instant(first)), self._ts(instant(last)))
                    for key, (first, last) in sorted(spans.items())
                ],
            )

    def connector_state(self, name: str) -> dict[str, Any]:
        with self._read() as db:
            row = db.execute("SELECT connector_state FROM connections WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise UnknownConnection(name)
        return {} if row[0] is None else dict(self._unjson(row[0]))

    def finish_run(self, run_id: str, outcome: RunOutcome, message: str | None, *, now: datetime) -> SyncRun:
        outcome = RunOutcome(outcome)
        with self._write() as db:
            self._finishing_run(db, run_id)
            row = _only_row(
                db.execute(
                    f"UPDATE sync_runs SET finished_at = ?, outcome = ?, message = ? WHERE run_id = ? "
                    f"RETURNING {RUN_COLUMNS}",
                    (self._ts(now), outcome.value, message, run_id),
                )
            )
            if row is None:
                raise StoreError(f"no sync run {run_id!r}")
            if outcome == RunOutcome.SUCCEEDED:
                db.execute("UPDATE connections SET last_success_at = ? WHERE name = ?", (self._ts(now), row[1]))
        return self._run(row)

    def list_runs(self, name: str, *, limit: int = 20) -> list[SyncRun]:
        with self._read() as db:
            self._require(db, name)
            rows = db.execute(
                f"SELECT {RUN_COLUMNS} FROM sync_runs WHERE connection = ? "
                f"ORDER BY started_at DESC, {self.RUN_SEQUENCE} DESC LIMIT ?",
                (name, limit),
            ).fetchall()
        return [self._run(row) for row in rows]

    # -- rows ----------------------------------------------------------------------------------------------
    def iter_rows(
        self,
        name: str | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        api_key_label: str | None = None,
        model: str | None = None,
    ) -> Iterator[UsageRow]:
        where, params = self._where(name, since, until, api_key_label=api_key_label, model=model)
        yield from self._stream(
            name, f"SELECT {ROW_COLUMNS} FROM usage_rows{where} ORDER BY period_start, row_id{self.BYTEWISE}", params
        )

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
        where, params = self._where(name, since, until, api_key_label=api_key_label, model=model)
        text = {column: f"{column}{self.BYTEWISE}" for column in ("row_id", "api_key_label", "model")}
        order_by = row_order(
            order,
            {"row_id": text["row_id"], "key": text["api_key_label"], "model": text["model"]}
            | {"cost": self.COST_ORDER},
        )
        # One snapshot, so the count and the page agree whatever commits meanwhile.
        with self._snapshot() as db:
            self._require(db, name)
            (total,) = db.execute(f"SELECT COUNT(*) FROM usage_rows{where}", params).fetchone()
            batch = db.execute(
                f"SELECT {ROW_COLUMNS} FROM usage_rows{where} ORDER BY {order_by} LIMIT ? OFFSET ?",
                [*params, max(0, limit), max(0, offset)],
            ).fetchall()
        return list(self._rows(batch)), int(total)

    def count_rows(self, name: str | None = None) -> int:
        where, params = self._where(name, None, None)
        with self._read() as db:
            if name is not None:
                self._require(db, name)
            return int(db.execute(f"SELECT COUNT(*) FROM usage_rows{where}", params).fetchone()[0])

    def report(self, name: str | None, *, since: datetime, until: datetime) -> list[ReportLine]:
        # A backend may read its spend in several queries (totals, then the rows they do not cover): one snapshot,
        # or a run finishing between two of them could count a day twice or not at all.
        with self._snapshot() as db:
            if name is not None:
                self._require(db, name)
            spend = self._spend(db, name, since, until, REPORT_KEYS, {})
        groups: dict[tuple[str, str, str], tuple[set[str], int, Decimal]] = {}
        for (connector, label, currency, model), (count, cost) in spend.items():
            models, rows, total = groups.get((connector, label, currency)) or (set(), 0, Decimal(0))
            if model is not None:  # a billed row without a model adds its cost, not a model
                models.add(model)
            groups[connector, label, currency] = (models, rows + count, EXACT.add(total, cost))
        lines = [  # of exact sums of stored rows: built as they are, like a connection (_connection)
            ReportLine.model_construct(
                connector=connector,
                api_key_label=label,
                currency=currency,
                models=sorted(models),
                cost=Decimal(decimal_text(total)),
                row_count=rows,
            )
            for (connector, label, currency), (models, rows, total) in groups.items()
        ]
        return sorted(lines, key=lambda line: (-line.cost, line.api_key_label, line.currency, line.connector))

    def delete_rows(self, name: str) -> int:
        with self._write() as db:
            self._require(db, name, lock=True)
            for table in (*self.DERIVED_TABLES, "key_usage"):
                db.execute(f"DELETE FROM {table} WHERE connection = ?", (name,))
            return int(db.execute("DELETE FROM usage_rows WHERE connection = ?", (name,)).rowcount)

    def grouped_spend(
        self, name: str | None, *, since: datetime, until: datetime, by: Sequence[str]
    ) -> dict[tuple[Any, ...], tuple[int, Decimal]]:
        unknown = [column for column in by if column not in SPEND_GROUPS]
        if unknown or not by:
            raise ValueError(f"cannot group spend by {unknown or 'nothing'}; choose from {sorted(SPEND_GROUPS)}")
        with self._snapshot() as db:
            if name is not None:
                self._require(db, name)
            return self._spend(db, name, since, until, tuple(by), {})

    # -- budgets, alerts, prices ---------------------------------------------------------------------------
    def _budget(self, row: Sequence[Any]) -> Budget:
        fields = self._fields(BUDGET_FIELDS, row)
        amount, thresholds = self._decimal(fields["monthly_amount"]), self._unjson(fields["thresholds"])
        return Budget(
            **{**fields, "monthly_amount": amount, "thresholds": thresholds, "anomaly": bool(fields["anomaly"])}
        )

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
    ) -> Budget:
        with self._write() as db:
            self._require(db, name)
            row = _only_row(
                db.execute(
                    "INSERT INTO budgets (connection, api_key_label, model, monthly_amount, currency, thresholds, "
                    f"anomaly, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING {BUDGET_COLUMNS}",
                    (
                        name,
                        api_key_label,
                        model,
                        self._money(monthly_amount),
                        currency,
                        self._json(thresholds),
                        bool(anomaly),
                        self._ts(now),
                    ),
                )
            )
        return self._budget(row)

    def list_budgets(self, name: str | None = None) -> list[Budget]:
        where, params = ("WHERE connection = ?", [name]) if name is not None else ("", [])
        with self._read() as db:
            if name is not None:
                self._require(db, name)
            rows = db.execute(f"SELECT {BUDGET_COLUMNS} FROM budgets {where} ORDER BY id", params).fetchall()
        return [self._budget(row) for row in rows]

    def remove_budget(self, budget_id: int) -> None:
        with self._write() as db:
            if db.execute("DELETE FROM budgets WHERE id = ?", (budget_id,)).rowcount == 0:
                raise ConfigError(f"there is no budget {budget_id}; `connector-host budget list` shows them")

    def record_alert(self, alert: Alert) -> Alert | None:
        with self._write() as db:
            row = _only_row(
                db.execute(
                    "INSERT INTO alerts (connection, budget_id, kind, dedupe_key, fired_at, message, evidence) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
                    (
                        alert.connection,
                        alert.budget_id,
                        alert.kind,
                        alert.dedupe_key,
                        self._ts(alert.fired_at),
                        alert.message,
                        # Text on both backends: the evidence is kept as it was written, key order included.
                        json.dumps(alert.evidence, sort_keys=True),
                    ),
                )
            )
        return None if row is None else alert.model_copy(update={"id": row[0]})

    def _alert(self, row: Sequence[Any]) -> Alert:
        fields = self._fields(ALERT_FIELDS, row)
        return Alert(**{**fields, "evidence": json.loads(fields["evidence"])})

    def list_alerts(self, name: str | None = None, *, limit: int = 100) -> list[Alert]:
        where, params = ("WHERE connection = ?", [name]) if name is not None else ("", [])
        with self._read() as db:
            rows = db.execute(
                f"SELECT {ALERT_COLUMNS} FROM alerts {where} ORDER BY id DESC LIMIT ?", [*params, limit]
            ).fetchall()
        return [self._alert(row) for row in rows]

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
        only = {"currency": currency, "api_key_label": api_key_label, "model": model}
        return {day: cost for (day,), cost in self._daily(name, since, until, ("day",), only).items()}

    def daily_spend_by_label(
        self, name: str, *, since: datetime, until: datetime, currency: str
    ) -> dict[str, dict[str, Decimal]]:
        spend: dict[str, dict[str, Decimal]] = {}
        for (label, day), cost in self._daily(
            name, since, until, ("api_key_label", "day"), {"currency": currency}
        ).items():
            spend.setdefault(label, {})[day] = cost
        return spend

    def _daily(
        self, name: str, since: datetime, until: datetime, keys: Keys, only: Only
    ) -> dict[tuple[Any, ...], Decimal]:
        """Exact cost per value of ``keys`` of one connection's rows that match ``only``, in the order of ``keys``."""
        with self._snapshot() as db:
            self._require(db, name)
            spend = self._spend(db, name, since, until, keys, only)
        return {group: cost for group, (_count, cost) in sorted(spend.items())}

    def cached_prices(self, connector: str, models: Sequence[str], *, fresh_after: datetime) -> list[Price]:
        if not models:
            return []
        marks = ", ".join("?" * len(models))
        with self._read() as db:
            rows = db.execute(
                "SELECT model, unit_price, unit, currency, fetched_at FROM price_cache "
                f"WHERE connector = ? AND model IN ({marks}) AND fetched_at > ?",
                [connector, *models, self._ts(fresh_after)],
            ).fetchall()
        return [
            Price(model=m, unit_price=self._decimal(p), unit=u, currency=c, fetched_at=self._dt(at))
            for m, p, u, c, at in rows
        ]

    def cache_prices(self, connector: str, prices: Sequence[Price]) -> None:
        if not prices:
            return
        with self._write() as db:
            db.executemany(
                "INSERT INTO price_cache (connector, model, unit_price, unit, currency, fetched_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (connector, model) DO UPDATE SET "
                "unit_price = excluded.unit_price, unit = excluded.unit, currency = excluded.currency, "
                "fetched_at = excluded.fetched_at",
                [
                    (connector, p.model, self._money(p.unit_price), p.unit, p.currency, self._ts(p.fetched_at))
                    for p in prices
                ],
            )

    # -- key inventory -------------------------------------------------------------------------------------
    def record_listing(self, name: str, keys: Sequence[ListedKey], *, now: datetime) -> list[KeyEvent]:
        listed = {key.key_id: key for key in keys}  # a key the vendor repeats counts once, as last given
        at = self._ts(now)
        with self._write() as db:
            self._require(db, name, lock=True)
            baseline = db.execute("SELECT 1 FROM key_listings WHERE connection = ?", (name,)).fetchone() is None
            known = {
                row[0]: dict(zip(("key_id", *LISTED_FIELDS, "gone_at", "last_listed_at"), row, strict=True))
                for row in db.execute(
                    f"SELECT key_id, {', '.join(LISTED_FIELDS)}, gone_at, last_listed_at FROM api_keys "
                    "WHERE connection = ?",
                    (name,),
                ).fetchall()
            }
            events: list[KeyEvent] = []
            for key_id in sorted(listed):
                events.extend(self._listing_events(name, listed[key_id], known.get(key_id), now, baseline=baseline))
            for key_id in sorted(set(known) - set(listed)):
                before = known[key_id]
                if before["gone_at"] is None:
                    detail = {"name": before["name"], "last_listed_at": iso(self._dt(before["last_listed_at"]))}
                    events.append(KeyEvent(connection=name, key_id=key_id, at=now, event="gone", detail=detail))
            db.executemany(
                f"INSERT INTO api_keys (connection, key_id, {', '.join(LISTED_FIELDS)}, first_listed_at, "
                f"last_listed_at, gone_at) VALUES ({', '.join('?' * (len(LISTED_FIELDS) + 5))}) "
                "ON CONFLICT (connection, key_id) DO UPDATE SET "
                + ", ".join(f"{f} = excluded.{f}" for f in (*LISTED_FIELDS, "last_listed_at", "gone_at")),
                [(name, key.key_id, *self._listed_values(key), at, at, None) for key in listed.values()],
            )
            db.executemany(
                "UPDATE api_keys SET gone_at = ? WHERE connection = ? AND key_id = ?",
                [(at, name, event.key_id) for event in events if event.event == "gone"],
            )
            db.executemany(
                "INSERT INTO key_events (connection, key_id, at, event, detail) VALUES (?, ?, ?, ?, ?)",
                [(name, e.key_id, at, e.event, json.dumps(e.detail, sort_keys=True)) for e in events],
            )
            db.execute(
                "INSERT INTO key_listings (connection, first_listed_at, last_listed_at, listings) VALUES (?, ?, ?, 1) "
                "ON CONFLICT (connection) DO UPDATE SET last_listed_at = excluded.last_listed_at, "
                "listings = key_listings.listings + 1",
                (name, at, at),
            )
        return events

    def _listed_values(self, key: ListedKey) -> tuple[Any, ...]:
        return tuple(
            self._ts(value) if f in ("created_at", "last_used_at") else value
            for f, value in ((f, getattr(key, f)) for f in LISTED_FIELDS)
        )

    def _listing_events(
        self, name: str, key: ListedKey, before: dict[str, Any] | None, now: datetime, *, baseline: bool
    ) -> list[KeyEvent]:
        """What a listing's mention of ``key`` adds to its history, given the stored row (``None``: never listed)."""

        def event(kind: str, detail: dict[str, Any]) -> KeyEvent:
            return KeyEvent(connection=name, key_id=key.key_id, at=now, event=kind, detail=detail)  # type: ignore[arg-type]

        if before is None:
            detail = {
                "name": key.name,
                "scope": key.scope,
                "owner": key.owner,
                "owner_email": key.owner_email,
                "status": key.status,
                "listing": key.listing,
                "created_at": None if key.created_at is None else iso(key.created_at),
                "baseline": baseline,
            }
            return [event("listed", detail)]
        events = []
        if before["gone_at"] is not None:
            events.append(event("returned", {"name": key.name, "gone_at": iso(self._dt(before["gone_at"]))}))
        if before["name"] != key.name:
            events.append(event("renamed", {"from": before["name"], "to": key.name}))
        changes = {}
        for f in TRACKED_FIELDS:
            old = before[f]
            if f == "owner_active" and old is not None:
                old = bool(old)
            if old != getattr(key, f):
                changes[f] = {"from": old, "to": getattr(key, f)}
        if changes:
            events.append(event("changed", changes))
        return events

    def key_listing(self, name: str) -> KeyListingInfo | None:
        with self._read() as db:
            self._require(db, name)
            row = db.execute(
                "SELECT first_listed_at, last_listed_at, listings FROM key_listings WHERE connection = ?", (name,)
            ).fetchone()
        if row is None:
            return None
        return KeyListingInfo(
            connection=name, first_listed_at=self._dt(row[0]), last_listed_at=self._dt(row[1]), listings=int(row[2])
        )

    def key_inventory(self, name: str | None, *, now: datetime) -> list[KeyRecord]:
        only, params = ("WHERE k.connection = ?", [name]) if name is not None else ("", [])
        until = floor_hour(now) + timedelta(hours=1)
        with self._snapshot() as db:
            if name is not None:
                self._require(db, name)
            listed = db.execute(
                f"SELECT {KEY_COLUMNS} FROM api_keys k JOIN connections c ON c.name = k.connection {only}", params
            ).fetchall()
            used = db.execute(
                "SELECT k.connection, c.connector, k.key_id, k.first_usage_at, k.last_usage_at FROM key_usage k "
                f"JOIN connections c ON c.name = k.connection {only}",
                params,
            ).fetchall()
            groups = ("connection", "api_key_id", "currency")
            month = self._spend(db, name, until - timedelta(days=30), until, groups, {})
            week = self._spend(db, name, until - timedelta(days=7), until, groups, {})
            records: dict[tuple[str, str], dict[str, Any]] = {}
            for row in listed:
                fields = self._fields(KEY_FIELDS, row)
                if fields["owner_active"] is not None:
                    fields["owner_active"] = bool(fields["owner_active"])
                records[fields["connection"], fields["key_id"]] = fields | {
                    "listed": fields["gone_at"] is None,
                    "first_seen_at": fields["first_listed_at"],
                }
            for connection, connector, key_id, first, last in used:
                fields = records.get((connection, key_id))
                if fields is None:
                    # Never listed: named after the label of its latest rows (read at one period, through the index).
                    label = db.execute(
                        "SELECT api_key_label FROM usage_rows WHERE connection = ? AND period_start = ? "
                        "AND api_key_id = ? LIMIT 1",
                        (connection, last, key_id),
                    ).fetchone()
                    fields = records[connection, key_id] = {
                        "connection": connection,
                        "connector": connector,
                        "key_id": key_id,
                        "name": label[0] if label else None,
                    }
                first_usage, last_usage = self._dt(first), self._dt(last)
                fields["first_usage_at"], fields["last_usage_at"] = first_usage, last_usage
                seen = fields.get("first_seen_at")
                fields["first_seen_at"] = first_usage if seen is None else min(seen, first_usage)
        spent: dict[tuple[str, str], dict[str, list[Decimal]]] = {}
        for which, spend in ((0, month), (1, week)):
            for (connection, key_id, currency), (_count, cost) in spend.items():
                if key_id is not None and currency is not None:
                    sums = spent.setdefault((connection, key_id), {}).setdefault(currency, [Decimal(0), Decimal(0)])
                    sums[which] = cost
        out = []
        for where in sorted(records, key=lambda pair: (pair[0].encode(), pair[1].encode())):
            fields = records[where]
            if by_currency := spent.get(where):
                # A key spends in its vendor's currency; were there several, the one it spent most in.
                currency, (month_cost, week_cost) = max(by_currency.items(), key=lambda item: (item[1][0], item[0]))
                fields |= {"currency": currency, "spend_30d": month_cost, "spend_7d": week_cost}
            out.append(KeyRecord(**fields))
        return out

    def key_events(self, name: str, key_id: str | None = None) -> list[KeyEvent]:
        where, params = "connection = ?", [name]
        if key_id is not None:
            where, params = where + " AND key_id = ?", [name, key_id]
        with self._read() as db:
            self._require(db, name)
            rows = db.execute(
                f"SELECT key_id, at, event, detail FROM key_events WHERE {where} ORDER BY id", params
            ).fetchall()
        return [
            KeyEvent(connection=name, key_id=key, at=self._dt(at), event=event, detail=json.loads(detail))
            for key, at, event, detail in rows
        ]

    # -- findings --------------------------------------------------------------------------------------------
    def _finding(self, row: Sequence[Any]) -> Finding:
        fields = self._fields(FINDING_FIELDS, row)
        return Finding(**{**fields, "evidence": json.loads(fields["evidence"])})

    def list_findings(
        self, name: str | None = None, *, open_only: bool = False, kind: FindingKind | None = None
    ) -> list[Finding]:
        clauses, params = [], []
        if name is not None:
            clauses.append("connection = ?")
            params.append(name)
        if open_only:
            clauses.append("resolved_at IS NULL")
        if kind is not None:
            clauses.append("kind = ?")
            params.append(FindingKind(kind).value)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        with self._read() as db:
            if name is not None:
                self._require(db, name)
            rows = db.execute(f"SELECT {FINDING_COLUMNS} FROM findings{where} ORDER BY id DESC", params).fetchall()
        return [self._finding(row) for row in rows]

    def get_finding(self, finding_id: int) -> Finding:
        with self._read() as db:
            row = db.execute(f"SELECT {FINDING_COLUMNS} FROM findings WHERE id = ?", (finding_id,)).fetchone()
        if row is None:
            raise ConfigError(f"there is no finding {finding_id}; `connector-host findings --all` lists them")
        return self._finding(row)

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
        wanted = {(FindingKind(c.kind), c.subject): c for c in conditions}
        judged = {FindingKind(kind) for kind in kinds}
        others = [other for other in dict.fromkeys(adopt) if other != name]
        at = self._ts(now)
        changes: list[tuple[Finding, str]] = []
        with self._write() as db:
            self._require(db, name, lock=True)
            held = [
                self._finding(row)
                for row in db.execute(
                    f"SELECT {FINDING_COLUMNS} FROM findings WHERE connection IN "
                    f"({', '.join('?' * (1 + len(others)))}) AND resolved_at IS NULL ORDER BY id",
                    (name, *others),
                ).fetchall()
            ]
            # This connection's own first, then the adopted ones, oldest first: a second open finding of one
            # condition (two connections judged it before they had one judge) is a duplicate.
            current: dict[tuple[FindingKind, str], Finding] = {}
            duplicates: list[Finding] = []
            for finding in sorted(held, key=lambda f: f.connection != name):
                if finding.connection != name and finding.kind not in judged:
                    continue
                if (finding.kind, finding.subject) in current:
                    duplicates.append(finding)
                else:
                    current[finding.kind, finding.subject] = finding
            for finding in duplicates:
                changes.append((self._resolve_finding(db, finding, at), "resolved"))
            for (kind, subject), condition in wanted.items():
                evidence = _evidence(condition)
                found = current.get((kind, subject))
                if found is None:
                    row = _only_row(
                        db.execute(
                            "INSERT INTO findings (connection, connector, kind, subject, subject_label, severity, "
                            "message, evidence, opened_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                            f"RETURNING {FINDING_COLUMNS}",
                            (
                                name,
                                condition.connector,
                                kind.value,
                                subject,
                                condition.subject_label,
                                condition.severity.value,
                                condition.message,
                                evidence,
                                at,
                            ),
                        )
                    )
                    changes.append((self._finding(row), "opened"))
                    continue
                # One taken over moves here as it is (id, opening, acknowledgement); evidence follows the condition.
                said = (condition.severity, condition.subject_label, condition.message, evidence)
                if (
                    found.connection != name
                    or (found.severity, found.subject_label, found.message, _evidence(found)) != said
                ):
                    db.execute(
                        "UPDATE findings SET connection = ?, severity = ?, subject_label = ?, message = ?, "
                        "evidence = ?, updated_at = ? WHERE id = ?",
                        (
                            name,
                            condition.severity.value,
                            condition.subject_label,
                            condition.message,
                            evidence,
                            at,
                            found.id,
                        ),
                    )
            for (kind, subject), found in current.items():
                if kind in judged and (kind, subject) not in wanted:
                    changes.append((self._resolve_finding(db, found, at), "resolved"))
            for finding, change in changes:
                self._enqueue(db, finding.connection, outbox(finding, change), now)
        return changes

    def _resolve_finding(self, db: Handle, finding: Finding, at: Any) -> Finding:
        return self._finding(
            _only_row(
                db.execute(
                    f"UPDATE findings SET resolved_at = ? WHERE id = ? RETURNING {FINDING_COLUMNS}", (at, finding.id)
                )
            )
        )

    def acknowledge_finding(
        self, finding_id: int, note: str, *, now: datetime, resolve: bool, outbox: FindingOutbox
    ) -> tuple[Finding, bool]:
        at = self._ts(now)
        with self._write() as db:
            row = db.execute(
                f"SELECT resolved_at FROM findings WHERE id = ?{self.FOR_UPDATE}", (finding_id,)
            ).fetchone()
            if row is None:
                raise ConfigError(f"there is no finding {finding_id}; `connector-host findings --all` lists them")
            closing = resolve and row[0] is None
            finding = self._finding(
                _only_row(
                    db.execute(
                        "UPDATE findings SET acknowledged_at = ?, ack_note = ?, resolved_at = COALESCE(resolved_at, ?) "
                        f"WHERE id = ? RETURNING {FINDING_COLUMNS}",
                        (at, note, at if closing else None, finding_id),
                    )
                )
            )
            if closing:
                self._enqueue(db, finding.connection, outbox(finding, "resolved"), now)
        return finding, closing

    # -- sinks and their outbox ----------------------------------------------------------------------------
    def _enqueue(self, db: Handle, name: str, items: Sequence[tuple[str, str]], now: datetime) -> None:
        if items:
            at = self._ts(now)
            db.executemany(
                "INSERT INTO outbox (connection, sink, payload, created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?)",
                [(name, sink, payload, at, at) for sink, payload in items],
            )

    def add_sink(
        self, name: str, sink: str, *, kind: str, config: dict[str, Any], secret: bytes | None, now: datetime
    ) -> SinkRecord:
        try:
            with self._write() as db:
                self._require(db, name)
                db.execute(
                    "INSERT INTO sinks (connection, name, kind, config, secret, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (name, sink, kind, self._json(config), secret, self._ts(now)),
                )
        except self.DUPLICATE:
            raise ConfigError(f"connection {name!r} already has a sink named {sink!r}") from None
        return next(s for s in self.list_sinks(name) if s.name == sink)

    def list_sinks(self, name: str) -> list[SinkRecord]:
        with self._read() as db:
            self._require(db, name)
            rows = db.execute(
                f"SELECT name, kind, config, created_at FROM sinks WHERE connection = ? ORDER BY name{self.BYTEWISE}",
                (name,),
            ).fetchall()
        return [
            SinkRecord(connection=name, name=n, kind=k, config=self._unjson(c), created_at=self._dt(at))
            for n, k, c, at in rows
        ]

    def get_sink_secret(self, name: str, sink: str) -> bytes | None:
        with self._read() as db:
            row = db.execute("SELECT secret FROM sinks WHERE connection = ? AND name = ?", (name, sink)).fetchone()
        if row is None:
            raise ConfigError(f"connection {name!r} has no sink named {sink!r}")
        return None if row[0] is None else bytes(row[0])

    def remove_sink(self, name: str, sink: str) -> None:
        with self._write() as db:
            if db.execute("DELETE FROM sinks WHERE connection = ? AND name = ?", (name, sink)).rowcount == 0:
                self._require(db, name)
                raise ConfigError(f"connection {name!r} has no sink named {sink!r}")
            db.execute("DELETE FROM outbox WHERE connection = ? AND sink = ?", (name, sink))

    def enqueue(self, name: str, sink: str, payload: str, *, now: datetime) -> None:
        with self._write() as db:
            self._require(db, name)
            self._enqueue(db, name, [(sink, payload)], now)

    def pending(self, name: str, sink: str, *, now: datetime, limit: int = 100) -> list[OutboxItem]:
        with self._read() as db:
            rows = db.execute(
                "SELECT id, payload, created_at, attempts, next_attempt_at, last_error FROM outbox "
                "WHERE connection = ? AND sink = ? ORDER BY id LIMIT ?",
                (name, sink, limit),
            ).fetchall()
        # In order, up to the first item that waits for its retry time: nothing overtakes it, so a sink sees its
        # payloads in the order they were made.
        items = []
        for item_id, payload, created, attempts, retry_at, error in rows:
            if self._dt(retry_at) > now:
                break
            items.append(
                OutboxItem(
                    id=item_id,
                    connection=name,
                    sink=sink,
                    payload=payload,
                    created_at=self._dt(created),
                    attempts=attempts,
                    next_attempt_at=self._dt(retry_at),
                    last_error=error,
                )
            )
        return items

    def delivered(self, item_ids: Sequence[int]) -> None:
        if item_ids:
            with self._write() as db:
                db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in item_ids])

    def delivery_failed(self, item_id: int, error: str, *, retry_at: datetime) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? WHERE id = ?",
                (error[:1000], self._ts(retry_at), item_id),
            )

    def backlog(self, name: str) -> dict[str, int]:
        with self._read() as db:
            self._require(db, name)
            rows = db.execute(
                "SELECT s.name, COUNT(o.id) FROM sinks s LEFT JOIN outbox o ON o.connection = s.connection "
                f"AND o.sink = s.name WHERE s.connection = ? GROUP BY s.name ORDER BY s.name{self.BYTEWISE}",
                (name,),
            ).fetchall()
        return {sink: int(count) for sink, count in rows}
