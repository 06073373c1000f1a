"""The embedded store: SQLite's dialect of the SQL core (:class:`~connector_sdk.stores.core.SQLStore`).

This module holds what only SQLite needs: one file in WAL mode through the standard library's ``sqlite3``, one
connection per thread, decimals kept as text and summed exactly (integer nano-units, and ``dsum`` for costs past nine
decimals), and the daily totals (``usage_daily``) that pages mark dirty and the end of a run recounts, so that a
report over months reads thousands of totals instead of a million rows.
"""

from __future__ import annotations

import decimal
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from operator import itemgetter
from pathlib import Path
from typing import Any

from connector_sdk.errors import StoreError
from connector_sdk.models import ROW_FIELDS, Page, UsageRow, decimal_text, iso
from connector_sdk.stores.core import ROW_COLUMNS, Handle, Keys, Only, Spend, SQLStore, usage_rows
from connector_sdk.stores.migrations import LATEST_VERSION


def _ts(value: datetime | None) -> str | None:
    return None if value is None else iso(value)


def _dt(value: str | None) -> datetime | None:
    # The one form _ts writes (2026-01-02T03:00:00Z): fromisoformat reads its Z as UTC, 40x faster than strptime,
    # whose first call also imports locale and calendar. It would also read a time without Z, as a naive one.
    if value is None:
        return None
    if value[-1:] != "Z":
        raise ValueError(f"not a UTC timestamp as this store writes them: {value!r}")
    return datetime.fromisoformat(value)


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
# Money, summed exactly in C: whole units and nano-units apart (neither sum can overflow 64 bits), and the rare
# cost with more than nine decimals as a decimal.
UNITS_AND_NANOS = "COALESCE(SUM(cost_nanos / 1000000000), 0), COALESCE(SUM(cost_nanos % 1000000000), 0)"
DAY = timedelta(days=1)
# Key ids and people are kept too (schema v8): the inventory and its findings read spend per key per day every sync.
DAILY_COLUMNS = frozenset(
    {"connection", "connector", "api_key_label", "api_key_id", "login_username", "currency", "model", "day"}
)


# Billed money only: usage rows (kind 'usage') have no cost and are not in the daily totals.
RECOUNT_DAY = f"""
    INSERT INTO usage_daily (
        connection, day, n, connector, api_key_label, api_key_id, login_username, currency, model,
        row_count, cost_units, cost_nanos, inexact
    )
    SELECT connection, substr(period_start, 1, 10), ROW_NUMBER() OVER (), connector, api_key_label, api_key_id,
        login_username, currency, model, COUNT(*), {UNITS_AND_NANOS}, COUNT(*) - COUNT(cost_nanos)
    FROM usage_rows WHERE connection = ? AND period_start >= ? AND period_start < ? AND kind = 'cost'
    GROUP BY 2, connector, api_key_label, api_key_id, login_username, currency, model
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


def _amount(value: Decimal | None) -> str | None:
    """A nullable amount as its column holds it: NULL stays NULL (``str(None)`` would store ``"None"``)."""
    return None if value is None else _text(value)


def _sql_values(rows: Sequence[UsageRow]) -> list[tuple[Any, ...]]:
    """Rows as the usage_rows columns hold them: ROW_FIELDS, then cost_nanos (NULL for a row without cost)."""
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
            kind,
            workspace_id,
            workspace_name,
            line_item,
        ) = row_values(row.__dict__)
        cost_text = _amount(cost)
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
                _amount(quantity),
                _amount(unit_price),
                _amount(percent_discount),
                _amount(list_cost),
                _amount(discount),
                cost_text,
                currency,
                times[synced_at],
                kind,
                workspace_id,
                workspace_name,
                line_item,
                _nanos_of_text(cost_text),
            )
        )
    return out


class _DecimalSum:
    """``dsum(text)``: an exact sum of decimal text; SQLite's own SUM would go through binary floats."""

    def __init__(self) -> None:
        self.total = Decimal(0)

    def step(self, value: str | None) -> None:
        if value is not None:
            self.total += Decimal(value)

    def finalize(self) -> str:
        return decimal_text(self.total)


UPSERT_ROWS = (
    f"INSERT INTO usage_rows ({ROW_COLUMNS}, cost_nanos) VALUES ({', '.join('?' * (len(ROW_FIELDS) + 1))}) "
    "ON CONFLICT (connection, period_start, row_id) DO UPDATE SET "
    + ", ".join(f"{f} = excluded.{f}" for f in (*ROW_FIELDS[1:], "cost_nanos"))
)


class SQLiteStore(SQLStore):
    """The SQL core on one SQLite file: the dialect, plus the daily totals that keep reports over months fast."""

    BYTEWISE = ""  # SQLite's default collation already compares bytes
    FOR_UPDATE = ""  # every write transaction is BEGIN IMMEDIATE: it holds the file's write lock already
    NO_LIMIT = -1
    DAY = "substr(period_start, 1, 10)"
    DUPLICATE = (sqlite3.IntegrityError,)
    DERIVED_TABLES = ("usage_daily", "usage_daily_dirty")
    RUN_SEQUENCE = "rowid"
    COST_ORDER = "CAST(cost AS REAL)"  # costs are kept as exact decimal text; sorting by them may round

    _ts = staticmethod(_ts)
    _dt = staticmethod(_dt)
    _decimal = staticmethod(Decimal)
    _money = staticmethod(decimal_text)
    _unjson = staticmethod(json.loads)

    @staticmethod
    def _json(value: Any) -> str:
        return json.dumps(value, sort_keys=True)

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

    def _read(self) -> AbstractContextManager[sqlite3.Connection]:
        # Autocommit: each statement reads in a transaction of its own.
        return nullcontext(self._db())

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

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        if db.in_transaction:
            yield db
            return
        db.execute("BEGIN")
        try:
            yield db
        finally:
            db.execute("COMMIT")

    def _migrate(self) -> None:
        with self._write() as db:
            for migration in self._migrations_after(db.execute("PRAGMA user_version").fetchone()[0]):
                for statement in migration.sqlite.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {migration.version}")

    def schema_version(self) -> int:
        return int(self._db().execute("PRAGMA user_version").fetchone()[0])

    # -- rows ----------------------------------------------------------------------------------------------
    def _rows(self, batch: Iterable[Sequence[Any]]) -> Iterator[UsageRow]:
        # Rows share their hours and their sync time: each distinct text is parsed once.
        return usage_rows(batch, time=_Formatted(_dt).__getitem__, money=Decimal)

    def _stream(self, name: str | None, sql: str, params: Sequence[Any]) -> Iterator[UsageRow]:
        # A connection of its own, so a long export never holds a read transaction open on the shared one.
        if self.read_only:
            db = sqlite3.connect(self._read_only_uri(), uri=True, check_same_thread=False)
        else:
            db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        try:
            if name is not None:
                self._require(db, name)
            cursor = db.execute(sql, params)
            times = _Formatted(_dt).__getitem__
            while batch := cursor.fetchmany(2000):
                yield from usage_rows(batch, time=times, money=Decimal)
        finally:
            db.close()

    def _page_values(self, page: Page) -> list[tuple[Any, ...]]:
        return _sql_values(page.rows)

    def _put_rows(self, db: Handle, name: str, page: Page, values: list[tuple[Any, ...]]) -> None:
        db.executemany(UPSERT_ROWS, values)
        # The days whose daily totals this page changed: every row it replaced or upserted, wherever it lies.
        touched = {v[4][:10] for v in values}
        last = page.complete_through - timedelta(microseconds=1)
        day = page.covers_from.replace(hour=0, minute=0, second=0, microsecond=0)
        while day <= last:
            touched.add(iso(day)[:10])
            day += DAY
        db.executemany(
            "INSERT OR IGNORE INTO usage_daily_dirty (connection, day) VALUES (?, ?)",
            [(name, day) for day in sorted(touched)],
        )

    def _finishing_run(self, db: Handle, run_id: str) -> None:
        # Bring the daily totals of the days the run's pages touched up to date.
        for (name,) in db.execute("SELECT connection FROM sync_runs WHERE run_id = ?", (run_id,)).fetchall():
            days = db.execute("SELECT day FROM usage_daily_dirty WHERE connection = ?", (name,)).fetchall()
            for (day,) in days:
                start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
                db.execute("DELETE FROM usage_daily WHERE connection = ? AND day = ?", (name, day))
                db.execute(RECOUNT_DAY, (name, iso(start), iso(start + DAY)))
            db.execute("DELETE FROM usage_daily_dirty WHERE connection = ?", (name,))

    # -- spend, from the daily totals ----------------------------------------------------------------------
    def _spend(self, db: Handle, name: str | None, since: datetime, until: datetime, keys: Keys, only: Only) -> Spend:
        # SQLite's SUM() would add the costs as binary floats: integer nano-units are summed instead, and the rare
        # cost with more than nine decimals as a decimal, with dsum, in one query over the rows for every group.
        matching = {column: value for column, value in only.items() if value is not None}
        sums = self._sums(db, name, since, until, keys, matching)
        rests: dict[tuple[Any, ...], str] = {}
        if any(inexact for _count, _units, _nanos, inexact in sums.values()):
            where, params = self._where(name, since, until, kind="cost", **matching)
            columns, groups = self._grouping(keys)
            found = db.execute(
                f"SELECT {columns}, dsum(cost) FROM usage_rows{where} AND cost_nanos IS NULL GROUP BY {groups}", params
            )
            rests = {tuple(row[:-1]): row[-1] for row in found.fetchall()}
        return {
            group: (count, _money_of(units, nanos, rests.get(group)))
            for group, (count, units, nanos, _inexact) in sums.items()
        }

    def _sums(
        self, db: Handle, name: str | None, since: datetime, until: datetime, keys: Keys, only: dict[str, str]
    ) -> dict[tuple[Any, ...], list[int]]:
        """Row count, whole units, nano-units and inexact rows (costs past nine decimals) of the rows in the window
        whose columns equal ``only``, per value of ``keys``: billed cost rows only (usage_daily holds nothing else).
        ``keys`` and ``only`` name usage_rows columns; ``day`` is the UTC day. Whole days come from the daily
        totals when every column named is one they keep (:data:`DAILY_COLUMNS`), from the rows otherwise."""
        scope = "connection = ?" if name is not None else "connection IN (SELECT name FROM connections)"
        scoped: list[Any] = [name] if name is not None else []
        matching = "".join(f" AND {column} = ?" for column in only)
        matching_values = list(only.values())
        which, named = scope + matching, scoped + matching_values
        daily_keys = ", ".join(keys)
        row_keys, groups = self._grouping(keys)
        parts: list[tuple[str, list[Any]]] = []
        from_rows = (
            f"SELECT {row_keys}, COUNT(*), {UNITS_AND_NANOS}, COUNT(*) - COUNT(cost_nanos) "
            f"FROM usage_rows WHERE {{which}} AND kind = 'cost' AND period_start >= ? AND period_start < ? "
            f"GROUP BY {groups}"
        )
        edges = [(which, named, since, until)]
        # The daily totals keep some columns only (not workspaces or line items); the rest is read from the rows.
        daily = {*keys, *only} <= DAILY_COLUMNS
        if daily and (days := _whole_days(since, until)):
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
