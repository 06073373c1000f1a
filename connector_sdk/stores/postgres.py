"""The store for many workers: PostgreSQL through psycopg 3, one connection per thread.

Timestamps are ``TIMESTAMPTZ`` and money ``NUMERIC``, so sums are exact in the database. Values are written the way
:class:`~connector_sdk.stores.sqlite.SQLiteStore` writes them (timestamps to the whole second, decimals in their
plain shortest form), so both backends give back the same values for the same calls.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from operator import attrgetter
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.json import Jsonb

from connector_sdk.errors import ConfigError, StoreError, UnknownConnection
from connector_sdk.models import (
    MONEY_FIELDS,
    ROW_FIELDS,
    TIME_FIELDS,
    Alert,
    Budget,
    Connection,
    ConnectionState,
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
)
from connector_sdk.stores.base import ALERT_COLUMNS, Store, alert_from_row, ready_items, row_order
from connector_sdk.stores.migrations import LATEST_VERSION, MIGRATIONS

CONNECTION_COLUMNS = (
    "name, connector, config, state, reason, account, created_at, watermark, last_sync_at, last_success_at, "
    "next_sync_at"
)
RUN_COLUMNS = (
    "run_id, connection, started_at, finished_at, outcome, window_start, window_end, rows_written, pages, message"
)
ROW_COLUMNS = ", ".join(ROW_FIELDS)
ROW_TYPES = tuple("numeric" if f in MONEY_FIELDS else "timestamptz" if f in TIME_FIELDS else "text" for f in ROW_FIELDS)
# Normalized in the database as SQLiteStore normalizes in Python: decimals in their shortest spelling (``1.50`` is
# stored ``1.5``), timestamps to the whole second.
ROW_VALUES = ", ".join(
    f"trim_scale({f})" if f in MONEY_FIELDS else f"date_trunc('second', {f})" if f in TIME_FIELDS else f
    for f in ROW_FIELDS
)
ROW_UPDATES = ", ".join(f"{f} = excluded.{f}" for f in ROW_FIELDS if f != "row_id")
row_values = attrgetter(*ROW_FIELDS)
# Any constant works, as long as every connector-host process uses the same one; advisory locks are per database.
MIGRATION_LOCK = 0x636F6E6E686F7374
FETCH_BATCH = 2000


def _ts(value: datetime | None) -> datetime | None:
    """UTC to the whole second: what SQLiteStore keeps, so lease and watermark comparisons agree across backends."""
    return None if value is None else value.astimezone(UTC).replace(microsecond=0)


def _dt(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is UTC:
        return value
    return value.astimezone(UTC)


def _num(value: Decimal | None) -> Decimal | None:
    """The plain shortest spelling (``1.50`` -> ``1.5``): NUMERIC keeps the scale it is given."""
    return None if value is None else Decimal(decimal_text(value))


def _usage_rows(batch: Iterable[Sequence[Any]]) -> Iterator[UsageRow]:
    """Rows read back from usage_rows (ROW_FIELDS in order)."""
    for values in batch:
        fields = dict(zip(ROW_FIELDS, values, strict=True))
        for f in TIME_FIELDS:
            fields[f] = _dt(fields[f])
        # Rows were validated on their way in; re-validating millions on the way out buys nothing.
        yield UsageRow.trusted(fields)


def redact_url(url: str) -> str:
    """The URL without a password, in the user info or in a ``password`` query parameter."""
    if "://" not in url:
        try:
            params = conninfo_to_dict(url)
        except psycopg.ProgrammingError:
            return "postgresql://?"
        params.pop("password", None)
        return make_conninfo(**params)
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}@{hostport}" if user else hostport
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "password"])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class PostgresStore(Store):
    def __init__(self, url: str) -> None:
        self._dsn = url
        self.url = redact_url(url)
        try:
            params = conninfo_to_dict(url)
        except psycopg.ProgrammingError:
            # libpq's message may quote the part it could not read, which may be the password.
            raise ConfigError(
                f"cannot read the store URL {self.url}: expected postgresql://user@host:port/database"
            ) from None
        self._connect_args: dict[str, Any] = {}
        if "connect_timeout" not in params:
            self._connect_args["connect_timeout"] = 10
        if "application_name" not in params:
            self._connect_args["application_name"] = "connector-host"
        self._local = threading.local()
        self._all: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        self._migrate()

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r})"

    # -- plumbing ------------------------------------------------------------------------------------------
    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(self._dsn, autocommit=False, **self._connect_args)
        except psycopg.Error as error:
            raise StoreError(f"cannot open the store at {self.url}: {error}") from None
        conn.execute("SET TIME ZONE 'UTC'")
        conn.commit()
        return conn

    def _conn(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._all = [c for c in self._all if not c.closed]
                self._all.append(conn)
        return conn

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Cursor[Any]]:
        """One transaction on this thread's connection: committed if the block returns, rolled back if it raises."""
        conn = self._conn()
        try:
            with conn.cursor() as cursor:
                yield cursor
            conn.commit()
        except BaseException as error:
            if not conn.closed:
                # A failed rollback leaves the connection closed, and the next call opens a new one.
                with suppress(psycopg.Error):
                    conn.rollback()
            if isinstance(error, psycopg.OperationalError):
                raise StoreError(f"the store at {self.url} failed: {error}") from error
            raise

    def _migrate(self) -> None:
        conn = self._connect()
        try:
            with conn.transaction(), conn.cursor() as cursor:
                # Two processes opening a new database at once: the second waits here, then finds it migrated.
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                cursor.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                    "description TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                )
                current = self._version(cursor)
                if current > LATEST_VERSION:
                    raise StoreError(
                        f"the store at {self.url} has schema version {current}, newer than this connector-host "
                        f"understands ({LATEST_VERSION}); upgrade connector-host"
                    )
                for migration in MIGRATIONS:
                    if migration.version > current:
                        cursor.execute(migration.postgres)
                        cursor.execute(
                            "INSERT INTO schema_version (version, description) VALUES (%s, %s)",
                            (migration.version, migration.description),
                        )
        except psycopg.Error as error:
            raise StoreError(f"cannot prepare the store at {self.url}: {error}") from None
        finally:
            conn.close()

    @staticmethod
    def _version(cursor: psycopg.Cursor[Any]) -> int:
        row = cursor.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    def _require(cursor: psycopg.Cursor[Any], name: str, *, lock: bool = False) -> None:
        query = "SELECT 1 FROM connections WHERE name = %s" + (" FOR UPDATE" if lock else "")
        if cursor.execute(query, (name,)).fetchone() is None:
            raise UnknownConnection(name)

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()

    def schema_version(self) -> int:
        with self._tx() as cursor:
            return self._version(cursor)

    # -- connections ---------------------------------------------------------------------------------------
    @staticmethod
    def _connection(row: tuple[Any, ...]) -> Connection:
        return Connection(
            name=row[0],
            connector=row[1],
            config=row[2],
            state=ConnectionState(row[3]),
            reason=row[4],
            account=row[5],
            created_at=_dt(row[6]),
            watermark=_dt(row[7]),
            last_sync_at=_dt(row[8]),
            last_success_at=_dt(row[9]),
            next_sync_at=_dt(row[10]),
        )

    def add_connection(
        self, *, name: str, connector: str, config: dict[str, Any], credential: bytes, account: str, now: datetime
    ) -> Connection:
        try:
            with self._tx() as cursor:
                cursor.execute(
                    "INSERT INTO connections (name, connector, config, credential, state, account, created_at, "
                    "next_sync_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        name,
                        connector,
                        Jsonb(config),
                        credential,
                        ConnectionState.CONNECTED.value,
                        account,
                        _ts(now),
                        _ts(now),
                    ),
                )
                cursor.execute(
                    "INSERT INTO status_history (connection, at, old, new, reason) VALUES (%s, %s, NULL, %s, NULL)",
                    (name, _ts(now), ConnectionState.CONNECTED.value),
                )
        except pg_errors.UniqueViolation:
            raise ConfigError(f"a connection named {name!r} already exists; choose another name") from None
        return self.get_connection(name)

    def get_connection(self, name: str) -> Connection:
        with self._tx() as cursor:
            row = cursor.execute(f"SELECT {CONNECTION_COLUMNS} FROM connections WHERE name = %s", (name,)).fetchone()
        if row is None:
            raise UnknownConnection(name)
        return self._connection(row)

    def list_connections(self) -> list[Connection]:
        with self._tx() as cursor:
            rows = cursor.execute(f'SELECT {CONNECTION_COLUMNS} FROM connections ORDER BY name COLLATE "C"').fetchall()
        return [self._connection(row) for row in rows]

    def due_connections(self, now: datetime, *, limit: int | None = None) -> list[Connection]:
        with self._tx() as cursor:
            rows = cursor.execute(
                f"SELECT {CONNECTION_COLUMNS} FROM connections WHERE state IN ('connected', 'error') "
                "AND (next_sync_at IS NULL OR next_sync_at <= %s) "
                'ORDER BY next_sync_at NULLS FIRST, name COLLATE "C" LIMIT %s',
                (_ts(now), None if limit is None else max(0, limit)),
            ).fetchall()
        return [self._connection(row) for row in rows]

    def get_credential(self, name: str) -> bytes | None:
        with self._tx() as cursor:
            row = cursor.execute("SELECT credential FROM connections WHERE name = %s", (name,)).fetchone()
        if row is None:
            raise UnknownConnection(name)
        return None if row[0] is None else bytes(row[0])

    def set_credential(self, name: str, credential: bytes | None, *, account: str | None = None) -> None:
        with self._tx() as cursor:
            cursor.execute(
                "UPDATE connections SET credential = %s, account = COALESCE(%s, account) WHERE name = %s",
                (credential, account, name),
            )
            if cursor.rowcount == 0:
                raise UnknownConnection(name)

    def delete_connection(self, name: str) -> None:
        with self._tx() as cursor:
            if cursor.execute("DELETE FROM connections WHERE name = %s", (name,)).rowcount == 0:
                raise UnknownConnection(name)
            for table in ("usage_rows", "sync_runs", "status_history", "sinks", "outbox", "budgets", "alerts"):
                cursor.execute(f"DELETE FROM {table} WHERE connection = %s", (name,))

    def set_state(self, name: str, state: ConnectionState, reason: str | None, *, now: datetime) -> StatusChange | None:
        state = ConnectionState(state)
        with self._tx() as cursor:
            row = cursor.execute("SELECT state, reason FROM connections WHERE name = %s FOR UPDATE", (name,)).fetchone()
            if row is None:
                raise UnknownConnection(name)
            old = ConnectionState(row[0])
            if old == state and row[1] == reason:
                return None
            cursor.execute(
                "UPDATE connections SET state = %s, reason = %s WHERE name = %s", (state.value, reason, name)
            )
            if old == state:
                return None
            cursor.execute(
                "INSERT INTO status_history (connection, at, old, new, reason) VALUES (%s, %s, %s, %s, %s)",
                (name, _ts(now), old.value, state.value, reason),
            )
        return StatusChange(connection=name, at=now, old=old, new=state, reason=reason)

    def status_history(self, name: str) -> list[StatusChange]:
        with self._tx() as cursor:
            self._require(cursor, name)
            rows = cursor.execute(
                "SELECT at, old, new, reason FROM status_history WHERE connection = %s ORDER BY id", (name,)
            ).fetchall()
        return [
            StatusChange(
                connection=name,
                at=_dt(at),
                old=ConnectionState(old) if old else None,
                new=ConnectionState(new),
                reason=reason,
            )
            for at, old, new, reason in rows
        ]

    def set_next_sync(self, name: str, at: datetime | None) -> None:
        with self._tx() as cursor:
            cursor.execute("UPDATE connections SET next_sync_at = %s WHERE name = %s", (_ts(at), name))
            if cursor.rowcount == 0:
                raise UnknownConnection(name)

    # -- single flight -------------------------------------------------------------------------------------
    def acquire_lease(self, name: str, owner: str, *, now: datetime, ttl_seconds: float) -> bool:
        with self._tx() as cursor:
            cursor.execute(
                "UPDATE connections SET lease_owner = %s, lease_expires_at = %s WHERE name = %s AND "
                "(lease_owner IS NULL OR lease_owner = %s OR lease_expires_at <= %s)",
                (owner, _ts(now + timedelta(seconds=ttl_seconds)), name, owner, _ts(now)),
            )
            if cursor.rowcount == 1:
                return True
            self._require(cursor, name)
            return False

    def renew_lease(self, name: str, owner: str, *, now: datetime, ttl_seconds: float) -> bool:
        with self._tx() as cursor:
            cursor.execute(
                "UPDATE connections SET lease_expires_at = %s WHERE name = %s AND lease_owner = %s",
                (_ts(now + timedelta(seconds=ttl_seconds)), name, owner),
            )
            if cursor.rowcount == 1:
                return True
            self._require(cursor, name)
            return False

    def release_lease(self, name: str, owner: str) -> None:
        with self._tx() as cursor:
            cursor.execute(
                "UPDATE connections SET lease_owner = NULL, lease_expires_at = NULL "
                "WHERE name = %s AND lease_owner = %s",
                (name, owner),
            )
            if cursor.rowcount == 0:
                self._require(cursor, name)

    def lease_holder(self, name: str, *, now: datetime) -> str | None:
        with self._tx() as cursor:
            row = cursor.execute(
                "SELECT CASE WHEN lease_expires_at > %s THEN lease_owner END FROM connections WHERE name = %s",
                (_ts(now), name),
            ).fetchone()
        if row is None:
            raise UnknownConnection(name)
        return row[0]

    # -- runs ----------------------------------------------------------------------------------------------
    @staticmethod
    def _run(row: tuple[Any, ...]) -> SyncRun:
        return SyncRun(
            run_id=row[0],
            connection=row[1],
            started_at=_dt(row[2]),
            finished_at=_dt(row[3]),
            outcome=RunOutcome(row[4]),
            window_start=_dt(row[5]),
            window_end=_dt(row[6]),
            rows_written=row[7],
            pages=row[8],
            message=row[9],
        )

    def start_run(self, name: str, run_id: str, window: SyncWindow, *, now: datetime) -> SyncRun:
        with self._tx() as cursor:
            cursor.execute("UPDATE connections SET last_sync_at = %s WHERE name = %s", (_ts(now), name))
            if cursor.rowcount == 0:
                raise UnknownConnection(name)
            row = cursor.execute(
                "INSERT INTO sync_runs (run_id, connection, started_at, outcome, window_start, window_end) "
                f"VALUES (%s, %s, %s, %s, %s, %s) RETURNING {RUN_COLUMNS}",
                (run_id, name, _ts(now), RunOutcome.RUNNING.value, _ts(window.start), _ts(window.end)),
            ).fetchone()
        assert row is not None
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
    ) -> None:
        # Later rows win over earlier ones with the same id, as they would upserted one by one; one INSERT may not
        # touch a row twice.
        latest = {row.row_id: row for row in page.rows}
        with self._tx() as cursor:
            # GREATEST skips NULL, so this raises a never-set watermark too; it also locks the connection's row,
            # which keeps two commits to one connection from interleaving their deletes and inserts.
            cursor.execute(
                "UPDATE connections SET watermark = GREATEST(watermark, %s) WHERE name = %s", (_ts(watermark), name)
            )
            if cursor.rowcount == 0:
                raise UnknownConnection(name)
            cursor.execute(
                "DELETE FROM usage_rows WHERE connection = %s AND period_start >= %s AND period_start < %s",
                (name, _ts(page.covers_from), _ts(page.complete_through)),
            )
            if latest:
                cursor.execute("CREATE TEMP TABLE page_rows (LIKE usage_rows) ON COMMIT DROP")
                with cursor.copy(f"COPY page_rows ({ROW_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(ROW_TYPES)
                    for row in latest.values():
                        copy.write_row(row_values(row))
                cursor.execute(
                    f"INSERT INTO usage_rows ({ROW_COLUMNS}) SELECT {ROW_VALUES} FROM page_rows "
                    f"ON CONFLICT (row_id) DO UPDATE SET {ROW_UPDATES}"
                )
            cursor.execute(
                "UPDATE sync_runs SET rows_written = rows_written + %s, pages = pages + 1 WHERE run_id = %s",
                (len(page.rows), run_id),
            )
            self._enqueue(cursor, name, outbox, now or watermark)

    def finish_run(self, run_id: str, outcome: RunOutcome, message: str | None, *, now: datetime) -> SyncRun:
        outcome = RunOutcome(outcome)
        with self._tx() as cursor:
            row = cursor.execute(
                "UPDATE sync_runs SET finished_at = %s, outcome = %s, message = %s WHERE run_id = %s "
                f"RETURNING {RUN_COLUMNS}",
                (_ts(now), outcome.value, message, run_id),
            ).fetchone()
            if row is None:
                raise StoreError(f"no sync run {run_id!r}")
            if outcome == RunOutcome.SUCCEEDED:
                cursor.execute("UPDATE connections SET last_success_at = %s WHERE name = %s", (_ts(now), row[1]))
        return self._run(row)

    def list_runs(self, name: str, *, limit: int = 20) -> list[SyncRun]:
        with self._tx() as cursor:
            self._require(cursor, name)
            rows = cursor.execute(
                f"SELECT {RUN_COLUMNS} FROM sync_runs WHERE connection = %s "
                "ORDER BY started_at DESC, seq DESC LIMIT %s",
                (name, limit),
            ).fetchall()
        return [self._run(row) for row in rows]

    # -- rows ----------------------------------------------------------------------------------------------
    @staticmethod
    def _where(
        name: str | None, since: datetime | None, until: datetime | None, **equal: str | None
    ) -> tuple[str, list[Any]]:
        """The WHERE clause of rows of ``name`` (every connection when None) in the window, whose columns equal
        ``equal`` (a None value: any)."""
        clauses: list[str] = []
        params: list[Any] = []
        if name is not None:
            clauses.append("connection = %s")
            params.append(name)
        if since is not None:
            clauses.append("period_start >= %s")
            params.append(_ts(since))
        if until is not None:
            clauses.append("period_start < %s")
            params.append(_ts(until))
        for column, value in equal.items():
            if value is not None:
                clauses.append(f"{column} = %s")
                params.append(value)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

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
        # A connection of its own: a server-side cursor lives in a transaction, which must not be this thread's.
        conn = self._connect()
        try:
            with conn.transaction():
                if name is not None:
                    with conn.cursor() as check:
                        self._require(check, name)
                with conn.cursor(name="connector_host_rows") as cursor:
                    cursor.itersize = FETCH_BATCH
                    cursor.execute(
                        f'SELECT {ROW_COLUMNS} FROM usage_rows{where} ORDER BY period_start, row_id COLLATE "C"',
                        params,
                    )
                    while batch := cursor.fetchmany(FETCH_BATCH):
                        yield from _usage_rows(batch)
        finally:
            conn.close()

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
        columns = {"row_id": 'row_id COLLATE "C"', "key": 'api_key_label COLLATE "C"', "model": 'model COLLATE "C"'}
        order_by = row_order(order, columns | {"cost": "cost"})
        with self._tx() as cursor:
            self._require(cursor, name)
            # One statement, so the count and the page agree whatever commits meanwhile.
            batch = cursor.execute(
                f"SELECT {ROW_COLUMNS}, COUNT(*) OVER () FROM usage_rows{where} ORDER BY {order_by} LIMIT %s OFFSET %s",
                [*params, max(0, limit), max(0, offset)],
            ).fetchall()
            if batch:
                total = batch[0][-1]
            else:
                (total,) = cursor.execute(f"SELECT COUNT(*) FROM usage_rows{where}", params).fetchone()
        return list(_usage_rows(row[:-1] for row in batch)), int(total)

    def count_rows(self, name: str | None = None) -> int:
        where, params = self._where(name, None, None)
        with self._tx() as cursor:
            if name is not None:
                self._require(cursor, name)
            row = cursor.execute(f"SELECT COUNT(*) FROM usage_rows{where}", params).fetchone()
        return int(row[0]) if row else 0

    def report(self, name: str | None, *, since: datetime, until: datetime) -> list[ReportLine]:
        where, params = self._where(name, since, until)
        with self._tx() as cursor:
            if name is not None:
                self._require(cursor, name)
            rows = cursor.execute(
                "SELECT api_key_label, currency, array_agg(DISTINCT model), SUM(cost), COUNT(*) "
                f"FROM usage_rows{where} GROUP BY api_key_label, currency",
                params,
            ).fetchall()
        lines = [
            ReportLine(
                api_key_label=label,
                currency=currency,
                models=sorted(models),
                cost=_num(cost),
                row_count=count,
            )
            for label, currency, models, cost, count in rows
        ]
        return sorted(lines, key=lambda line: (-line.cost, line.api_key_label, line.currency))

    def delete_rows(self, name: str) -> int:
        with self._tx() as cursor:
            self._require(cursor, name, lock=True)
            return cursor.execute("DELETE FROM usage_rows WHERE connection = %s", (name,)).rowcount

    # -- sinks and their outbox ----------------------------------------------------------------------------
    @staticmethod
    def _enqueue(cursor: psycopg.Cursor[Any], name: str, items: Sequence[tuple[str, str]], now: datetime) -> None:
        if items:
            cursor.executemany(
                "INSERT INTO outbox (connection, sink, payload, created_at, next_attempt_at) "
                "VALUES (%s, %s, %s, %s, %s)",
                [(name, sink, payload, _ts(now), _ts(now)) for sink, payload in items],
            )

    def add_sink(
        self, name: str, sink: str, *, kind: str, config: dict[str, Any], secret: bytes | None, now: datetime
    ) -> SinkRecord:
        try:
            with self._tx() as cursor:
                self._require(cursor, name)
                cursor.execute(
                    "INSERT INTO sinks (connection, name, kind, config, secret, created_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s)",
                    (name, sink, kind, Jsonb(config), secret, _ts(now)),
                )
        except pg_errors.UniqueViolation:
            raise ConfigError(f"connection {name!r} already has a sink named {sink!r}") from None
        return next(s for s in self.list_sinks(name) if s.name == sink)

    def list_sinks(self, name: str) -> list[SinkRecord]:
        with self._tx() as cursor:
            self._require(cursor, name)
            rows = cursor.execute(
                'SELECT name, kind, config, created_at FROM sinks WHERE connection = %s ORDER BY name COLLATE "C"',
                (name,),
            ).fetchall()
        return [SinkRecord(connection=name, name=n, kind=k, config=c, created_at=_dt(at)) for n, k, c, at in rows]

    def get_sink_secret(self, name: str, sink: str) -> bytes | None:
        with self._tx() as cursor:
            row = cursor.execute(
                "SELECT secret FROM sinks WHERE connection = %s AND name = %s", (name, sink)
            ).fetchone()
        if row is None:
            raise ConfigError(f"connection {name!r} has no sink named {sink!r}")
        return bytes(row[0]) if row[0] is not None else None

    def remove_sink(self, name: str, sink: str) -> None:
        with self._tx() as cursor:
            if cursor.execute("DELETE FROM sinks WHERE connection = %s AND name = %s", (name, sink)).rowcount == 0:
                self._require(cursor, name)
                raise ConfigError(f"connection {name!r} has no sink named {sink!r}")
            cursor.execute("DELETE FROM outbox WHERE connection = %s AND sink = %s", (name, sink))

    def enqueue(self, name: str, sink: str, payload: str, *, now: datetime) -> None:
        with self._tx() as cursor:
            self._require(cursor, name)
            self._enqueue(cursor, name, [(sink, payload)], now)

    def pending(self, name: str, sink: str, *, now: datetime, limit: int = 100) -> list[OutboxItem]:
        with self._tx() as cursor:
            rows = cursor.execute(
                "SELECT id, payload, created_at, attempts, next_attempt_at, last_error FROM outbox "
                "WHERE connection = %s AND sink = %s ORDER BY id LIMIT %s",
                (name, sink, limit),
            ).fetchall()
        return ready_items(name, sink, rows, now=now, to_datetime=_dt)

    def delivered(self, item_ids: Sequence[int]) -> None:
        with self._tx() as cursor:
            cursor.execute("DELETE FROM outbox WHERE id = ANY(%s)", (list(item_ids),))

    def delivery_failed(self, item_id: int, error: str, *, retry_at: datetime) -> None:
        with self._tx() as cursor:
            cursor.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = %s, next_attempt_at = %s WHERE id = %s",
                (error[:1000], _ts(retry_at), item_id),
            )

    def backlog(self, name: str) -> dict[str, int]:
        with self._tx() as cursor:
            self._require(cursor, name)
            rows = cursor.execute(
                "SELECT s.name, COUNT(o.id) FROM sinks s LEFT JOIN outbox o ON o.connection = s.connection "
                'AND o.sink = s.name WHERE s.connection = %s GROUP BY s.name ORDER BY s.name COLLATE "C"',
                (name,),
            ).fetchall()
        return {sink: int(count) for sink, count in rows}

    # -- budgets, alerts, prices ---------------------------------------------------------------------------
    BUDGET_COLUMNS = "id, connection, api_key_label, model, monthly_amount, currency, thresholds, anomaly, created_at"

    @staticmethod
    def _budget(row: tuple[Any, ...]) -> Budget:
        return Budget(
            id=row[0],
            connection=row[1],
            api_key_label=row[2],
            model=row[3],
            monthly_amount=_num(row[4]),
            currency=row[5],
            thresholds=row[6],
            anomaly=row[7],
            created_at=_dt(row[8]),
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
        with self._tx() as cursor:
            self._require(cursor, name)
            row = cursor.execute(
                "INSERT INTO budgets (connection, api_key_label, model, monthly_amount, currency, thresholds, "
                f"anomaly, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING {self.BUDGET_COLUMNS}",
                (name, api_key_label, model, monthly_amount, currency, Jsonb(thresholds), anomaly, _ts(now)),
            ).fetchone()
        return self._budget(row)

    def list_budgets(self, name: str | None = None) -> list[Budget]:
        with self._tx() as cursor:
            if name is not None:
                self._require(cursor, name)
            where, params = ("WHERE connection = %s", [name]) if name is not None else ("", [])
            rows = cursor.execute(f"SELECT {self.BUDGET_COLUMNS} FROM budgets {where} ORDER BY id", params).fetchall()
        return [self._budget(row) for row in rows]

    def remove_budget(self, budget_id: int) -> None:
        with self._tx() as cursor:
            if cursor.execute("DELETE FROM budgets WHERE id = %s", (budget_id,)).rowcount == 0:
                raise ConfigError(f"there is no budget {budget_id}; `connector-host budget list` shows them")

    def record_alert(self, alert: Alert) -> Alert | None:
        with self._tx() as cursor:
            row = cursor.execute(
                "INSERT INTO alerts (connection, budget_id, kind, dedupe_key, fired_at, message, evidence) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
                (
                    alert.connection,
                    alert.budget_id,
                    alert.kind,
                    alert.dedupe_key,
                    _ts(alert.fired_at),
                    alert.message,
                    json.dumps(alert.evidence, sort_keys=True),
                ),
            ).fetchone()
        return None if row is None else alert.model_copy(update={"id": row[0]})

    def list_alerts(self, name: str | None = None, *, limit: int = 100) -> list[Alert]:
        where, params = ("WHERE connection = %s", [name]) if name is not None else ("", [])
        with self._tx() as cursor:
            rows = cursor.execute(
                f"SELECT {ALERT_COLUMNS} FROM alerts {where} ORDER BY id DESC LIMIT %s",
                [*params, limit],
            ).fetchall()
        return [alert_from_row(r, to_datetime=_dt) for r in rows]

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
        where, params = self._where(name, since, until, currency=currency, api_key_label=api_key_label, model=model)
        with self._tx() as cursor:
            self._require(cursor, name)
            rows = cursor.execute(
                "SELECT to_char(period_start AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, SUM(cost) "
                f"FROM usage_rows{where} GROUP BY day ORDER BY day",
                params,
            ).fetchall()
        return {day: _num(total) for day, total in rows}

    def daily_spend_by_label(
        self, name: str, *, since: datetime, until: datetime, currency: str
    ) -> dict[str, dict[str, Decimal]]:
        where, params = self._where(name, since, until, currency=currency)
        with self._tx() as cursor:
            self._require(cursor, name)
            rows = cursor.execute(
                "SELECT api_key_label, to_char(period_start AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, SUM(cost) "
                f"FROM usage_rows{where} GROUP BY api_key_label, day ORDER BY api_key_label, day",
                params,
            ).fetchall()
        spend: dict[str, dict[str, Decimal]] = {}
        for label, day, total in rows:
            spend.setdefault(label, {})[day] = _num(total)
        return spend

    def cached_prices(self, connector: str, models: Sequence[str], *, fresh_after: datetime) -> list[Price]:
        with self._tx() as cursor:
            rows = cursor.execute(
                "SELECT model, unit_price, unit, currency, fetched_at FROM price_cache "
                "WHERE connector = %s AND model = ANY(%s) AND fetched_at > %s",
                (connector, list(models), _ts(fresh_after)),
            ).fetchall()
        return [Price(model=m, unit_price=_num(p), unit=u, currency=c, fetched_at=_dt(at)) for m, p, u, c, at in rows]

    def cache_prices(self, connector: str, prices: Sequence[Price]) -> None:
        with self._tx() as cursor:
            cursor.executemany(
                "INSERT INTO price_cache (connector, model, unit_price, unit, currency, fetched_at) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (connector, model) DO UPDATE SET "
                "unit_price = excluded.unit_price, unit = excluded.unit, currency = excluded.currency, "
                "fetched_at = excluded.fetched_at",
                [(connector, p.model, p.unit_price, p.unit, p.currency, _ts(p.fetched_at)) for p in prices],
            )
