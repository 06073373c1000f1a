"""The embedded store: one SQLite file in WAL mode, through the standard library's ``sqlite3``."""

from __future__ import annotations

import decimal
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from operator import itemgetter
from pathlib import Path
from typing import Any

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
    iso,
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


def _ts(value: datetime | None) -> str | None:
    return None if value is None else iso(value)


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _text(value: Decimal) -> str:
    # str() is exact and C-fast; only its exponent form (1E-7, 1.5E+3) is written out plainly, for people
    # reading the file. Trailing zeros may stay: every reader parses the text back to a Decimal.
    text = str(value)
    return decimal_text(value) if "E" in text else text


_NANO_CONTEXT = decimal.Context(prec=40, traps=[decimal.Inexact, decimal.InvalidOperation, decimal.Overflow])
_INT64 = 2**63


def _nanos(value: Decimal) -> int | None:
    """The amount in integer nano-units when that is exact and fits SQLite's 64-bit integers, else ``None``."""
    try:
        scaled = _NANO_CONTEXT.scaleb(value, 9)
    except decimal.DecimalException:
        return None
    whole = int(scaled)
    return whole if whole == scaled and -_INT64 < whole < _INT64 else None


def _nanos_of_text(value: str | None) -> int | None:
    """The nano-units of plain decimal text (as str() writes a Decimal without exponent), else ``None``."""
    if value is None:
        return None
    whole, _, fraction = value.partition(".")
    if len(fraction) > 9 or "E" in fraction or "E" in whole or not whole.lstrip("-").isdigit():
        return _nanos(Decimal(value))
    nanos = int(whole + fraction.ljust(9, "0"))
    return nanos if -_INT64 < nanos < _INT64 else None


def _money_of(units: int, nanos: int, rest: str | None = None) -> Decimal:
    """Exact total of whole units, nano-units and (the costs with more than nine decimals) decimal text."""
    total = Decimal(units) + Decimal(nanos).scaleb(-9, _NANO_CONTEXT)
    if rest is not None:
        total += Decimal(rest)
    return Decimal(decimal_text(total))


row_values = itemgetter(*ROW_FIELDS)  # of a row's __dict__: a third of the time attribute access takes
ROW_COLUMNS = ", ".join(ROW_FIELDS)
# Money, summed exactly in C: whole units and nano-units apart (neither sum can overflow 64 bits), and the rare
# cost with more than nine decimals as a decimal.
UNITS_AND_NANOS = "COALESCE(SUM(cost_nanos / 1000000000), 0), COALESCE(SUM(cost_nanos % 1000000000), 0)"
COST_SUM = f"{UNITS_AND_NANOS}, dsum(cost) FILTER (WHERE cost_nanos IS NULL)"
DAY = timedelta(days=1)


REPORT_KEYS = ("api_key_label", "currency", "model")
RECOUNT_DAY = f"""
    INSERT INTO usage_daily
        (connection, day, api_key_label, currency, model, row_count, cost_units, cost_nanos, inexact)
    SELECT connection, substr(period_start, 1, 10), api_key_label, currency, model, COUNT(*), {UNITS_AND_NANOS},
        COUNT(*) - COUNT(cost_nanos)
    FROM usage_rows WHERE connection = ? AND period_start >= ? AND period_start < ?
    GROUP BY 2, 3, 4, 5
"""


class _Formatted(dict[Any, Any]):
    """Values formatted once each: rows share their hours and their sync time."""

    def __init__(self, formatter: Any) -> None:
        super().__init__()
        self.formatter = formatter

    def __missing__(self, key: Any) -> Any:
        value = self[key] = self.formatter(key)
        return value


def _whole_days(since: datetime, until: datetime) -> tuple[datetime, datetime] | None:
    """The whole UTC days inside ``[since, until)``, or ``None`` when there is none."""
    first = since.replace(hour=0, minute=0, second=0, microsecond=0)
    if first < since:
        first += DAY
    last = until.replace(hour=0, minute=0, second=0, microsecond=0)
    return (first, last) if first < last else None


def _sql_values(rows: Sequence[UsageRow]) -> list[tuple[Any, ...]]:
    """Rows as the usage_rows columns hold them: ROW_FIELDS, then cost_nanos."""
    times = _Formatted(iso)
    out = []
    for row in rows:
        (
            row_id,
            connector,
            connection,
            account,
            period_start,
            period_end,
            api_key_id,
            api_key_label,
            login_username,
            model,
            unit,
            quantity,
            unit_price,
            percent_discount,
            list_cost,
            discount,
            cost,
            currency,
            synced_at,
        ) = row_values(row.__dict__)
        amounts = (str(quantity), str(unit_price), str(list_cost), str(discount), str(cost))
        if "E" in "".join(amounts):
            amounts = tuple(map(_text, (quantity, unit_price, list_cost, discount, cost)))
        out.append(
            (
                row_id,
                connector,
                connection,
                account,
                times[period_start],
                times[period_end],
                api_key_id,
                api_key_label,
                login_username,
                model,
                unit,
                amounts[0],
                amounts[1],
                None if percent_discount is None else _text(percent_discount),
                amounts[2],
                amounts[3],
                amounts[4],
                currency,
                times[synced_at],
                _nanos_of_text(amounts[4]),
            )
        )
    return out


def _usage_rows(batch: Sequence[tuple[Any, ...]], times: _Formatted) -> Iterator[UsageRow]:
    """Rows read back from usage_rows (ROW_FIELDS in order)."""
    for values in batch:
        fields = dict(zip(ROW_FIELDS, values, strict=True))
        for f in MONEY_FIELDS:
            if (v := fields[f]) is not None:
                fields[f] = Decimal(v)
        for f in TIME_FIELDS:
            fields[f] = times[fields[f]]
        # Rows were validated on their way in; re-validating millions on the way out buys nothing.
        yield UsageRow.trusted(fields)


class _DecimalSum:
    """``dsum(text)``: an exact sum of decimal text; SQLite's own SUM would go through binary floats."""

    def __init__(self) -> None:
        self.total = Decimal(0)

    def step(self, value: str | None) -> None:
        if value is not None:
            self.total += Decimal(value)

    def finalize(self) -> str:
        return decimal_text(self.total)


class SQLiteStore(Store):
    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self.read_only = read_only
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        if read_only:
            self._check_readable()
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            # Created 0600 before SQLite opens it; SQLite gives its -wal and -shm files the same mode.
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._migrate()

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    # -- plumbing ------------------------------------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            try:
                if self.read_only:
                    db = sqlite3.connect(self._read_only_uri(), uri=True, isolation_level=None, check_same_thread=False)
                else:
                    db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
                    self._enable_wal(db)
            except sqlite3.DatabaseError as error:
                raise StoreError(f"cannot open the store at {self.path}: {error}") from None
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA busy_timeout=30000")
            db.create_aggregate("dsum", 1, _DecimalSum)
            db.create_function("cost_nanos", 1, _nanos_of_text, deterministic=True)
            self._local.db = db
            with self._lock:
                self._all.append(db)
        return db

    def _read_only_uri(self) -> str:
        # A WAL database is read through its -shm file, which SQLite must be able to create beside it. In a folder
        # nobody can write to, no writer can be running either, so the file is opened as immutable instead.
        folder_writable = os.access(self.path.parent, os.W_OK)
        return f"{self.path.resolve().as_uri()}?mode=ro" + ("" if folder_writable else "&immutable=1")

    def _check_readable(self) -> None:
        if not self.path.is_file():
            raise StoreError(f"no store at {self.path}")
        current = self.schema_version()
        if current != LATEST_VERSION:
            raise StoreError(
                f"the store at {self.path} has schema version {current} and this connector-host uses "
                f"{LATEST_VERSION}; it cannot be upgraded while it is read-only"
            )

    @staticmethod
    def _enable_wal(db: sqlite3.Connection) -> None:
        # Switching a new file to WAL can fail at once with "database is locked" while another connection opens it
        # too: SQLite does not call the busy handler there. Retry for as long as the busy timeout would wait.
        deadline = time.monotonic() + 30
        while True:
            try:
                db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    @staticmethod
    def _require(db: sqlite3.Connection, name: str) -> None:
        if db.execute("SELECT 1 FROM connections WHERE name = ?", (name,)).fetchone() is None:
            raise UnknownConnection(name)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        if self.read_only:
            raise StoreError(f"the store at {self.path} is open read-only; nothing can be changed in it")
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _migrate(self) -> None:
        with self._write() as db:
            current = db.execute("PRAGMA user_version").fetchone()[0]
            if current > LATEST_VERSION:
                raise StoreError(
                    f"the store at {self.path} has schema version {current}, newer than this connector-host "
                    f"understands ({LATEST_VERSION}); upgrade connector-host"
                )
            for migration in MIGRATIONS:
                if migration.version > current:
                    for statement in migration.sqlite.split(";"):
                        if statement.strip():
                            db.execute(statement)
                    db.execute(f"PRAGMA user_version = {migration.version}")

    def close(self) -> None:
        with self._lock:
            for db in self._all:
                db.close()
            self._all.clear()
        self._local = threading.local()

    def schema_version(self) -> int:
        return int(self._db().execute("PRAGMA user_version").fetchone()[0])

    # -- connections ---------------------------------------------------------------------------------------
    @staticmethod
    def _connection(row: tuple[Any, ...]) -> Connection:
        return Connection(
            name=row[0],
            connector=row[1],
            config=json.loads(row[2]),
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
            with self._write() as db:
                db.execute(
                    "INSERT INTO connections (name, connector, config, credential, state, account, created_at, "
                    "next_sync_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        name,
                        connector,
                        json.dumps(config, sort_keys=True),
                        credential,
                        ConnectionState.CONNECTED.value,
                        account,
                        _ts(now),
                        _ts(now),
                    ),
                )
                db.execute(
                    "INSERT INTO status_history (connection, at, old, new, reason) VALUES (?, ?, NULL, ?, NULL)",
                    (name, _ts(now), ConnectionState.CONNECTED.value),
                )
        except sqlite3.IntegrityError:
            raise ConfigError(f"a connection named {name!r} already exists; choose another name") from None
        return self.get_connection(name)

    def get_connection(self, name: str) -> Connection:
        row = self._db().execute(f"SELECT {CONNECTION_COLUMNS} FROM connections WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise UnknownConnection(name)
        return self._connection(row)

    def list_connections(self) -> list[Connection]:
        rows = self._db().execute(f"SELECT {CONNECTION_COLUMNS} FROM connections ORDER BY name").fetchall()
        return [self._connection(row) for row in rows]

    def due_connections(self, now: datetime, *, limit: int | None = None) -> list[Connection]:
        rows = (
            self._db()
            .execute(
                f"SELECT {CONNECTION_COLUMNS} FROM connections WHERE state IN ('connected', 'error') "
                "AND (next_sync_at IS NULL OR next_sync_at <= ?) ORDER BY next_sync_at, name LIMIT ?",
                (_ts(now), -1 if limit is None else max(0, limit)),
            )
            .fetchall()
        )
        return [self._connection(row) for row in rows]

    def get_credential(self, name: str) -> bytes | None:
        row = self._db().execute("SELECT credential FROM connections WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise UnknownConnection(name)
        return row[0]

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
            for table in (
                "usage_rows",
                "usage_daily",
                "usage_daily_dirty",
                "sync_runs",
                "status_history",
                "sinks",
                "outbox",
                "budgets",
                "alerts",
            ):
                db.execute(f"DELETE FROM {table} WHERE connection = ?", (name,))

    def set_state(self, name: str, state: ConnectionState, reason: str | None, *, now: datetime) -> StatusChange | None:
        state = ConnectionState(state)
        with self._write() as db:
            row = db.execute("SELECT state, reason FROM connections WHERE name = ?", (name,)).fetchone()
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
                (name, _ts(now), old.value, state.value, reason),
            )
        return StatusChange(connection=name, at=now, old=old, new=state, reason=reason)

    def status_history(self, name: str) -> list[StatusChange]:
        self._require(self._db(), name)
        rows = (
            self._db()
            .execute("SELECT at, old, new, reason FROM status_history WHERE connection = ? ORDER BY id", (name,))
            .fetchall()
        )
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
        with self._write() as db:
            if db.execute("UPDATE connections SET next_sync_at = ? WHERE name = ?", (_ts(at), name)).rowcount == 0:
                raise UnknownConnection(name)

    # -- single flight -------------------------------------------------------------------------------------
    def acquire_lease(self, name: str, owner: str, *, now: datetime, ttl_seconds: float) -> bool:
        with self._write() as db:
            cursor = db.execute(
                "UPDATE connections SET lease_owner = ?, lease_expires_at = ? WHERE name = ? AND "
                "(lease_owner IS NULL OR lease_owner = ? OR lease_expires_at <= ?)",
                (owner, _ts(now + timedelta(seconds=ttl_seconds)), name, owner, _ts(now)),
            )
            exists = db.execute("SELECT 1 FROM connections WHERE name = ?", (name,)).fetchone()
            if exists is None:
                raise UnknownConnection(name)
            return cursor.rowcount == 1

    def renew_lease(self, name: str, owner: str, *, now: datetime, ttl_seconds: float) -> bool:
        with self._write() as db:
            cursor = db.execute(
                "UPDATE connections SET lease_expires_at = ? WHERE name = ? AND lease_owner = ?",
                (_ts(now + timedelta(seconds=ttl_seconds)), name, owner),
            )
            if cursor.rowcount == 0:
                self._require(db, name)
            return cursor.rowcount == 1

    def release_lease(self, name: str, owner: str) -> None:
        with self._write() as db:
            cursor = db.execute(
                "UPDATE connections SET lease_owner = NULL, lease_expires_at = NULL WHERE name = ? AND lease_owner = ?",
                (name, owner),
            )
            if cursor.rowcount == 0:
                self._require(db, name)

    def lease_holder(self, name: str, *, now: datetime) -> str | None:
        row = (
            self._db()
            .execute(
                "SELECT CASE WHEN lease_expires_at > ? THEN lease_owner END FROM connections WHERE name = ?",
                (_ts(now), name),
            )
            .fetchone()
        )
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
        with self._write() as db:
            if db.execute("UPDATE connections SET last_sync_at = ? WHERE name = ?", (_ts(now), name)).rowcount == 0:
                raise UnknownConnection(name)
            db.execute(
                "INSERT INTO sync_runs (run_id, connection, started_at, outcome, window_start, window_end) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, name, _ts(now), RunOutcome.RUNNING.value, _ts(window.start), _ts(window.end)),
            )
        return self._get_run(run_id)

    def _get_run(self, run_id: str) -> SyncRun:
        row = self._db().execute(f"SELECT {RUN_COLUMNS} FROM sync_runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise StoreError(f"no sync run {run_id!r}")
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
        values = _sql_values(page.rows)
        placeholders = ", ".join("?" * (len(ROW_FIELDS) + 1))
        updates = ", ".join(f"{f} = excluded.{f}" for f in (*ROW_FIELDS[1:], "cost_nanos"))
        with self._write() as db:
            self._require(db, name)
            span = (name, _ts(page.covers_from), _ts(page.complete_through))
            db.execute("DELETE FROM usage_rows WHERE connection = ? AND period_start >= ? AND period_start < ?", span)
            db.executemany(
                f"INSERT INTO usage_rows ({ROW_COLUMNS}, cost_nanos) VALUES ({placeholders}) "
                f"ON CONFLICT (connection, period_start, row_id) DO UPDATE SET {updates}",
                values,
            )
            # The days whose daily totals this page changed: every row it replaced or upserted, wherever it lies.
            touched = {v[4][:10] for v in values}
            last = page.complete_through - timedelta(microseconds=1)
            day = page.covers_from.replace(hour=0, minute=0, second=0, microsecond=0)
            while day <= last:
                touched.add(_ts(day)[:10])
                day += DAY
            db.executemany(
                "INSERT OR IGNORE INTO usage_daily_dirty (connection, day) VALUES (?, ?)",
                [(name, day) for day in sorted(touched)],
            )
            db.execute(
                "UPDATE connections SET watermark = ? WHERE name = ? AND (watermark IS NULL OR watermark < ?)",
                (_ts(watermark), name, _ts(watermark)),
            )
            db.execute(
                "UPDATE sync_runs SET rows_written = rows_written + ?, pages = pages + 1 WHERE run_id = ?",
                (len(values), run_id),
            )
            self._enqueue(db, name, outbox, now or watermark)

    @staticmethod
    def _recount_days(db: sqlite3.Connection, name: str) -> None:
        """Bring the daily totals of the days a connection's pages touched up to date."""
        days = [day for (day,) in db.execute("SELECT day FROM usage_daily_dirty WHERE connection = ?", (name,))]
        for day in days:
            start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
            db.execute("DELETE FROM usage_daily WHERE connection = ? AND day = ?", (name, day))
            db.execute(RECOUNT_DAY, (name, _ts(start), _ts(start + DAY)))
        db.execute("DELETE FROM usage_daily_dirty WHERE connection = ?", (name,))

    def finish_run(self, run_id: str, outcome: RunOutcome, message: str | None, *, now: datetime) -> SyncRun:
        with self._write() as db:
            for (name,) in db.execute("SELECT connection FROM sync_runs WHERE run_id = ?", (run_id,)).fetchall():
                self._recount_days(db, name)
            db.execute(
                "UPDATE sync_runs SET finished_at = ?, outcome = ?, message = ? WHERE run_id = ?",
                (_ts(now), outcome.value, message, run_id),
            )
            if outcome == RunOutcome.SUCCEEDED:
                db.execute(
                    "UPDATE connections SET last_success_at = ? WHERE name = "
                    "(SELECT connection FROM sync_runs WHERE run_id = ?)",
                    (_ts(now), run_id),
                )
        return self._get_run(run_id)

    def list_runs(self, name: str, *, limit: int = 20) -> list[SyncRun]:
        self._require(self._db(), name)
        rows = (
            self._db()
            .execute(
                f"SELECT {RUN_COLUMNS} FROM sync_runs WHERE connection = ? "
                "ORDER BY started_at DESC, rowid DESC LIMIT ?",
                (name, limit),
            )
            .fetchall()
        )
        return [self._run(row) for row in rows]

    # -- rows ----------------------------------------------------------------------------------------------
    @staticmethod
    def _where(
        name: str | None, since: datetime | None, until: datetime | None, **equal: str | None
    ) -> tuple[str, list[Any]]:
        """The WHERE clause of rows of ``name`` (every connection when None) in the window, whose columns equal
        ``equal`` (a None value: any)."""
        clauses, params = [], []
        if name is not None:
            clauses.append("connection = ?")
            params.append(name)
        if since is not None:
            clauses.append("period_start >= ?")
            params.append(_ts(since))
        if until is not None:
            clauses.append("period_start < ?")
            params.append(_ts(until))
        for column, value in equal.items():
            if value is not None:
                clauses.append(f"{column} = ?")
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
        # A connection of its own, so a long export never holds a read transaction open on the shared one.
        if self.read_only:
            db = sqlite3.connect(self._read_only_uri(), uri=True, check_same_thread=False)
        else:
            db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        try:
            if name is not None:
                self._require(db, name)
            cursor = db.execute(f"SELECT {ROW_COLUMNS} FROM usage_rows{where} ORDER BY period_start, row_id", params)
            times = _Formatted(_dt)
            while batch := cursor.fetchmany(2000):
                yield from _usage_rows(batch, times)
        finally:
            db.close()

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
        columns = {"row_id": "row_id", "key": "api_key_label", "model": "model", "cost": "CAST(cost AS REAL)"}
        order_by = row_order(order, columns)
        with self._snapshot() as db:
            self._require(db, name)
            (total,) = db.execute(f"SELECT COUNT(*) FROM usage_rows{where}", params).fetchone()
            batch = db.execute(
                f"SELECT {ROW_COLUMNS} FROM usage_rows{where} ORDER BY {order_by} LIMIT ? OFFSET ?",
                [*params, max(0, limit), max(0, offset)],
            ).fetchall()
        return list(_usage_rows(batch, _Formatted(_dt))), int(total)

    def count_rows(self, name: str | None = None) -> int:
        where, params = self._where(name, None, None)
        if name is not None:
            self._require(self._db(), name)
        return int(self._db().execute(f"SELECT COUNT(*) FROM usage_rows{where}", params).fetchone()[0])

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: its queries all see the store as it was at the first, whatever commits meanwhile."""
        db = self._db()
        if db.in_transaction:
            yield db
            return
        db.execute("BEGIN")
        try:
            yield db
        finally:
            db.execute("COMMIT")

    def report(self, name: str | None, *, since: datetime, until: datetime) -> list[ReportLine]:
        # Daily totals, dirty days and rows are read by several queries: a run finishing between two of them would
        # otherwise let a day be counted twice or not at all.
        with self._snapshot() as db:
            return self._report(db, name, since, until)

    def _sums(
        self,
        db: sqlite3.Connection,
        name: str | None,
        since: datetime,
        until: datetime,
        keys: Sequence[str],
        only: dict[str, str] | None = None,
    ) -> dict[tuple[Any, ...], list[int]]:
        """Row count, whole units, nano-units and inexact rows (costs past nine decimals) of the rows in the window
        whose columns equal ``only``, per value of ``keys``. Both name columns that usage_daily and usage_rows share
        (label, currency, model); ``day`` is the UTC day."""
        if name is not None:
            self._require(db, name)
        scope = "connection = ?" if name is not None else "connection IN (SELECT name FROM connections)"
        scoped: list[Any] = [name] if name is not None else []
        matching = "".join(f" AND {column} = ?" for column in only or {})
        matching_values = list((only or {}).values())
        which, named = scope + matching, scoped + matching_values
        daily_keys = ", ".join(keys)
        row_keys = ", ".join("substr(period_start, 1, 10)" if key == "day" else key for key in keys)
        groups = ", ".join(str(i + 1) for i in range(len(keys)))
        parts: list[tuple[str, list[Any]]] = []
        from_rows = (
            f"SELECT {row_keys}, COUNT(*), {UNITS_AND_NANOS}, COUNT(*) - COUNT(cost_nanos) "
            f"FROM usage_rows WHERE {{which}} AND period_start >= ? AND period_start < ? GROUP BY {groups}"
        )
        edges = [(which, named, since, until)]
        if days := _whole_days(since, until):
            # Whole days from the daily totals, except days a page changed since they were counted; those days and
            # the hours before and after the whole days from the rows.
            first, last = _ts(days[0])[:10], _ts(days[1])[:10]
            parts.append(
                (
                    f"SELECT {daily_keys}, SUM(row_count), SUM(cost_units), SUM(cost_nanos), SUM(inexact) "
                    f"FROM usage_daily WHERE {which} AND day >= ? AND day < ? AND NOT EXISTS "
                    "(SELECT 1 FROM usage_daily_dirty AS dirty "
                    "WHERE dirty.connection = usage_daily.connection AND dirty.day = usage_daily.day) "
                    f"GROUP BY {groups}",
                    [*named, first, last],
                )
            )
            edges = [(which, named, since, days[0]), (which, named, days[1], until)]
            dirty = db.execute(
                f"SELECT connection, day FROM usage_daily_dirty WHERE {scope} AND day >= ? AND day < ?",
                [*scoped, first, last],
            ).fetchall()
            for connection, day in dirty:
                start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
                edges.append(("connection = ?" + matching, [connection, *matching_values], start, start + DAY))
        for where, values, start, end in edges:
            if start < end:
                parts.append((from_rows.format(which=where), [*values, _ts(start), _ts(end)]))
        sums: dict[tuple[Any, ...], list[int]] = {}
        width = len(keys)
        for sql, params in parts:
            for found in db.execute(sql, params):
                group = sums.setdefault(found[:width], [0, 0, 0, 0])
                for i, value in enumerate(found[width:]):
                    group[i] += value
        return sums

    def _report(self, db: sqlite3.Connection, name: str | None, since: datetime, until: datetime) -> list[ReportLine]:
        groups: dict[tuple[str, str], list[Any]] = {}
        for (label, currency, model), sums in self._sums(db, name, since, until, REPORT_KEYS).items():
            group = groups.setdefault((label, currency), [set(), 0, 0, 0, 0])
            group[0].add(model)
            for i, value in enumerate(sums):
                group[i + 1] += value
        lines = []
        for (label, currency), (models, count, units, nanos, inexact) in groups.items():
            rest = None
            if inexact:  # costs with more than nine decimals: summed as decimals, from the rows
                where, params = self._where(name, since, until, api_key_label=label, currency=currency)
                rest = db.execute(
                    f"SELECT dsum(cost) FROM usage_rows{where} AND cost_nanos IS NULL", params
                ).fetchone()[0]
            lines.append(
                ReportLine(
                    api_key_label=label,
                    currency=currency,
                    models=sorted(models),
                    cost=_money_of(units, nanos, rest),
                    row_count=count,
                )
            )
        return sorted(lines, key=lambda line: (-line.cost, line.api_key_label))

    def delete_rows(self, name: str) -> int:
        with self._write() as db:
            self._require(db, name)
            db.execute("DELETE FROM usage_daily WHERE connection = ?", (name,))
            db.execute("DELETE FROM usage_daily_dirty WHERE connection = ?", (name,))
            return db.execute("DELETE FROM usage_rows WHERE connection = ?", (name,)).rowcount

    # -- sinks and their outbox ----------------------------------------------------------------------------
    @staticmethod
    def _enqueue(db: sqlite3.Connection, name: str, items: Sequence[tuple[str, str]], now: datetime) -> None:
        db.executemany(
            "INSERT INTO outbox (connection, sink, payload, created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?)",
            [(name, sink, payload, _ts(now), _ts(now)) for sink, payload in items],
        )

    def add_sink(
        self, name: str, sink: str, *, kind: str, config: dict[str, Any], secret: bytes | None, now: datetime
    ) -> SinkRecord:
        try:
            with self._write() as db:
                self._require(db, name)
                db.execute(
                    "INSERT INTO sinks (connection, name, kind, config, secret, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (name, sink, kind, json.dumps(config, sort_keys=True), secret, _ts(now)),
                )
        except sqlite3.IntegrityError:
            raise ConfigError(f"connection {name!r} already has a sink named {sink!r}") from None
        return next(s for s in self.list_sinks(name) if s.name == sink)

    def list_sinks(self, name: str) -> list[SinkRecord]:
        db = self._db()
        self._require(db, name)
        rows = db.execute(
            "SELECT name, kind, config, created_at FROM sinks WHERE connection = ? ORDER BY name", (name,)
        ).fetchall()
        return [
            SinkRecord(connection=name, name=n, kind=k, config=json.loads(c), created_at=_dt(at))
            for n, k, c, at in rows
        ]

    def get_sink_secret(self, name: str, sink: str) -> bytes | None:
        row = self._db().execute("SELECT secret FROM sinks WHERE connection = ? AND name = ?", (name, sink)).fetchone()
        if row is None:
            raise ConfigError(f"connection {name!r} has no sink named {sink!r}")
        return row[0]

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
        rows = (
            self._db()
            .execute(
                "SELECT id, payload, created_at, attempts, next_attempt_at, last_error FROM outbox "
                "WHERE connection = ? AND sink = ? ORDER BY id LIMIT ?",
                (name, sink, limit),
            )
            .fetchall()
        )
        return ready_items(name, sink, rows, now=now, to_datetime=_dt)

    def delivered(self, item_ids: Sequence[int]) -> None:
        with self._write() as db:
            db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in item_ids])

    def delivery_failed(self, item_id: int, error: str, *, retry_at: datetime) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? WHERE id = ?",
                (error[:1000], _ts(retry_at), item_id),
            )

    def backlog(self, name: str) -> dict[str, int]:
        db = self._db()
        self._require(db, name)
        rows = db.execute(
            "SELECT s.name, COUNT(o.id) FROM sinks s LEFT JOIN outbox o ON o.connection = s.connection "
            "AND o.sink = s.name WHERE s.connection = ? GROUP BY s.name ORDER BY s.name",
            (name,),
        ).fetchall()
        return dict(rows)

    # -- budgets, alerts, prices ---------------------------------------------------------------------------
    BUDGET_COLUMNS = "id, connection, api_key_label, model, monthly_amount, currency, thresholds, anomaly, created_at"

    @staticmethod
    def _budget(row: tuple[Any, ...]) -> Budget:
        return Budget(
            id=row[0],
            connection=row[1],
            api_key_label=row[2],
            model=row[3],
            monthly_amount=Decimal(row[4]),
            currency=row[5],
            thresholds=json.loads(row[6]),
            anomaly=bool(row[7]),
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
        with self._write() as db:
            self._require(db, name)
            cursor = db.execute(
                "INSERT INTO budgets (connection, api_key_label, model, monthly_amount, currency, thresholds, "
                "anomaly, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    name,
                    api_key_label,
                    model,
                    decimal_text(monthly_amount),
                    currency,
                    json.dumps(thresholds),
                    int(anomaly),
                    _ts(now),
                ),
            )
            row = db.execute(f"SELECT {self.BUDGET_COLUMNS} FROM budgets WHERE id = ?", (cursor.lastrowid,)).fetchone()
        return self._budget(row)

    def list_budgets(self, name: str | None = None) -> list[Budget]:
        db = self._db()
        if name is not None:
            self._require(db, name)
        where, params = ("WHERE connection = ?", [name]) if name is not None else ("", [])
        rows = db.execute(f"SELECT {self.BUDGET_COLUMNS} FROM budgets {where} ORDER BY id", params).fetchall()
        return [self._budget(row) for row in rows]

    def remove_budget(self, budget_id: int) -> None:
        with self._write() as db:
            if db.execute("DELETE FROM budgets WHERE id = ?", (budget_id,)).rowcount == 0:
                raise ConfigError(f"there is no budget {budget_id}; `connector-host budget list` shows them")

    def record_alert(self, alert: Alert) -> Alert | None:
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO alerts (connection, budget_id, kind, dedupe_key, fired_at, message, evidence) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dedupe_key) DO NOTHING",
                (
                    alert.connection,
                    alert.budget_id,
                    alert.kind,
                    alert.dedupe_key,
                    _ts(alert.fired_at),
                    alert.message,
                    json.dumps(alert.evidence, sort_keys=True),
                ),
            )
            if cursor.rowcount == 0:
                return None
            return alert.model_copy(update={"id": cursor.lastrowid})

    def list_alerts(self, name: str | None = None, *, limit: int = 100) -> list[Alert]:
        where, params = ("WHERE connection = ?", [name]) if name is not None else ("", [])
        rows = (
            self._db()
            .execute(
                f"SELECT {ALERT_COLUMNS} FROM alerts {where} ORDER BY id DESC LIMIT ?",
                [*params, limit],
            )
            .fetchall()
        )
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
        self, name: str, since: datetime, until: datetime, keys: Sequence[str], only: dict[str, str | None]
    ) -> dict[tuple[Any, ...], Decimal]:
        """Exact cost per value of ``keys`` (which include ``day``) of the rows that match ``only``."""
        only = {column: value for column, value in only.items() if value is not None}
        costs: dict[tuple[Any, ...], Decimal] = {}
        with self._snapshot() as db:
            for group, (_count, units, nanos, inexact) in sorted(
                self._sums(db, name, since, until, keys, only).items()
            ):
                rest = None
                if inexact:  # costs with more than nine decimals: summed as decimals, from the rows
                    of_group = dict(zip(keys, group, strict=True))
                    midnight = datetime.strptime(of_group.pop("day"), "%Y-%m-%d").replace(tzinfo=UTC)
                    start, end = max(since, midnight), min(until, midnight + DAY)
                    where, params = self._where(name, start, end, **only, **of_group)
                    rest = db.execute(
                        f"SELECT dsum(cost) FROM usage_rows{where} AND cost_nanos IS NULL", params
                    ).fetchone()[0]
                costs[group] = _money_of(units, nanos, rest)
        return costs

    def cached_prices(self, connector: str, models: Sequence[str], *, fresh_after: datetime) -> list[Price]:
        marks = ", ".join("?" * len(models))
        rows = (
            self._db()
            .execute(
                "SELECT model, unit_price, unit, currency, fetched_at FROM price_cache "
                f"WHERE connector = ? AND model IN ({marks}) AND fetched_at > ?",
                [connector, *models, _ts(fresh_after)],
            )
            .fetchall()
        )
        return [
            Price(model=m, unit_price=Decimal(p), unit=u, currency=c, fetched_at=_dt(at)) for m, p, u, c, at in rows
        ]

    def cache_prices(self, connector: str, prices: Sequence[Price]) -> None:
        with self._write() as db:
            db.executemany(
                "INSERT INTO price_cache (connector, model, unit_price, unit, currency, fetched_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (connector, model) DO UPDATE SET "
                "unit_price = excluded.unit_price, unit = excluded.unit, currency = excluded.currency, "
                "fetched_at = excluded.fetched_at",
                [
                    (connector, p.model, decimal_text(p.unit_price), p.unit, p.currency, _ts(p.fetched_at))
                    for p in prices
                ],
            )
