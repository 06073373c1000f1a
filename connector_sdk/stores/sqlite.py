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
from functools import lru_cache
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any

from connector_sdk.errors import StoreError
from connector_sdk.models import (
    HOUR,
    SHARED_FIELDS,
    STORED_FIELDS,
    Converted,
    Page,
    StoredRow,
    UsageRow,
    decimal_text,
    floor_hour,
    iso,
    nanos_of_text,
)
from connector_sdk.stores.core import Handle, Keys, Only, Spend, SQLStore, usage_rows
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


_NANO_CONTEXT = decimal.Context(prec=40, traps=[decimal.Inexact, decimal.InvalidOperation, decimal.Overflow])
_BILLION = 1_000_000_000


def _money_of(units: int, nanos: int, rest: str | None = None) -> Decimal:
    """Exact total of whole units, nano-units and (the costs with more than nine decimals) decimal text."""
    total = Decimal(units) + Decimal(nanos).scaleb(-9, _NANO_CONTEXT)
    if rest is not None:
        total += Decimal(rest)
    return Decimal(decimal_text(total))


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


def _whole_days(since: datetime, until: datetime) -> tuple[datetime, datetime] | None:
    """The whole UTC days inside ``[since, until)``, or ``None`` when there is none."""
    first = since.replace(hour=0, minute=0, second=0, microsecond=0)
    if first < since:
        first += DAY
    last = until.replace(hour=0, minute=0, second=0, microsecond=0)
    return (first, last) if first < last else None


# -- daily totals kept as pages are written --------------------------------------------------------------------
# A run that replaces a whole UTC day (every hour of it, in its own pages) knows that day's totals without reading it
# back: they are the sums of the rows it wrote, added up as its pages are written. They are written in the
# transaction of the page that completes the day. A day a run touches only in part (the first and last of a window)
# is left to the recount at the run's end, as is any day where a page overlapped another of the run, held rows the
# sums cannot vouch for (a repeated id, a row outside the page), or failed to commit.
Group = tuple[Any, ...]  # connector, api_key_label, currency, model
Totals = dict[Group, list[int]]  # rows, exact cost in nano-units, rows whose cost is not a whole nano-unit
WHOLE_DAY = (1 << 24) - 1  # a bit for each hour
_ID = itemgetter(STORED_FIELDS.index("row_id"))
_START = itemgetter(STORED_FIELDS.index("period_start"))
#: The order of the daily totals' report index (migration 9).
_REPORT_ORDER = ("connector", "api_key_label", "currency", "model")
_DAILY_GROUP = ("connector", "api_key_label", "api_key_id", "login_username", "currency", "model")
_GROUP = itemgetter(*(STORED_FIELDS.index(f) for f in _DAILY_GROUP))
_KIND = STORED_FIELDS.index("kind")
_COST_NANOS = STORED_FIELDS.index("cost_nanos")
_PERIOD_START = STORED_FIELDS.index("period_start")


class _Day:
    """A day a run is replacing: the hours its pages have covered (a bit each) and the totals of their rows."""

    __slots__ = ("hours", "totals")

    def __init__(self) -> None:
        self.hours = 0
        self.totals: Totals = {}


class _RunDays:
    """The days one run is replacing, and those it is done with (written whole, or left to its recount)."""

    def __init__(self) -> None:
        self.days: dict[str, _Day] = {}
        self.done: set[str] = set()

    def add(self, page: Page, values: list[StoredRow]) -> tuple[dict[str, Totals], set[str]]:
        """Count a page's rows (just written); return the days it completed, with their totals, and the days it
        touched that the run's end must recount, unless a later page completes them."""
        start, end = page.covers_from, page.complete_through
        vouched = start.tzinfo is not None and start == floor_hour(start) and end == floor_hour(end)
        if values and vouched:
            low, high = iso(start), iso(end)
            unique = len(set(map(_ID, values))) == len(values)
            vouched = unique and low <= min(map(_START, values)) and max(map(_START, values)) < high
        covered: dict[str, int] = {}
        hour = start.replace(minute=0, second=0, microsecond=0)
        while hour < end:
            day = iso(hour)[:10]
            covered[day] = covered.get(day, 0) | 1 << hour.hour
            hour += HOUR
        if not vouched:  # recount every day it touched, and the days of its rows, wherever they lie
            for day in covered:
                self.spoil(day)
            return {}, {*covered, *(begins[:10] for begins in set(map(_START, values)))}
        into: dict[str, Totals] = {}
        for day, hours in covered.items():
            known = self.days.get(day)
            if day in self.done or (known is not None and known.hours & hours):
                self.spoil(day)
                into[day] = {}  # counted, then dropped
            else:
                known = known or self.days.setdefault(day, _Day())
                known.hours |= hours
                into[day] = known.totals
        _count(values, into)
        written, dirty = {}, set()
        for day in covered:
            known = self.days.get(day)
            if known is not None and known.hours == WHOLE_DAY:
                written[day] = known.totals
                del self.days[day]
                self.done.add(day)
            else:
                dirty.add(day)
        return written, dirty

    def spoil(self, day: str) -> None:
        """Leave ``day`` to the recount at the run's end."""
        self.days.pop(day, None)
        self.done.add(day)


def _count(values: list[StoredRow], into: dict[str, Totals]) -> None:
    """Add the billed rows of ``values`` to the totals of their day (each row's day is in ``into``)."""
    totals_of: dict[str, Totals] = {}  # of each period start: its day's
    for value in values:
        if value[_KIND] != "cost":
            continue
        start = value[_PERIOD_START]
        totals = totals_of.get(start)
        if totals is None:
            totals = totals_of[start] = into[start[:10]]
        group = _GROUP(value)
        cost = value[_COST_NANOS]
        found = totals.get(group)
        if found is None:
            totals[group] = [1, 0, 1] if cost is None else [1, cost, 0]
        elif cost is None:
            found[0] += 1
            found[2] += 1
        else:
            found[0] += 1
            found[1] += cost


class _DecimalSum:
    """``dsum(text)``: an exact sum of decimal text; SQLite's own SUM would go through binary floats."""

    def __init__(self) -> None:
        self.total = Decimal(0)

    def step(self, value: str | None) -> None:
        if value is not None:
            self.total += Decimal(value)

    def finalize(self) -> str:
        return decimal_text(self.total)


def _upsert_rows(values: Sequence[str]) -> str:
    """The upsert of rows in stored form given the SQL of each value (a ``?`` where it is bound)."""
    return (
        f"INSERT INTO usage_rows ({', '.join(STORED_FIELDS)}) VALUES ({', '.join(values)}) "
        "ON CONFLICT (connection, period_start, row_id) DO UPDATE SET "
        + ", ".join(f"{f} = excluded.{f}" for f in STORED_FIELDS if f != "row_id")
    )


UPSERT_ROWS = _upsert_rows(["?"] * len(STORED_FIELDS))
# Binding a value costs sqlite3 more than anything else an insert does. The values rows next to each other usually
# share (an hour, a connection, its sync's time, no workspace) are written into the statement instead, once.
_OWN = len(STORED_FIELDS) - len(SHARED_FIELDS)
_SHARED_VALUES = itemgetter(slice(_OWN, None))
_OWN_VALUES = itemgetter(slice(_OWN))


def _literal(value: Any) -> str | None:
    """``value`` as an SQL literal, when it is text or NULL that one can be written safely."""
    if value is None:
        return "NULL"
    if type(value) is not str or "\x00" in value or not value.isprintable():
        return None
    return "'" + value.replace("'", "''") + "'"


@lru_cache(maxsize=256)
def _upsert_shared(shared: tuple[Any, ...]) -> str | None:
    """The upsert of rows that share ``shared`` (their values of :data:`SHARED_FIELDS`), those written in; ``None``
    when one of them cannot be written as a literal."""
    literals = list(map(_literal, shared))
    if None in literals:
        return None
    return _upsert_rows(["?"] * _OWN + literals)


def _put(db: Handle, values: list[StoredRow]) -> None:
    """Upsert rows in stored form: each run of rows that share their values of :data:`SHARED_FIELDS` (an hour of
    a connection's sync, as a fast reader makes them) with one statement that has those values written in."""
    for shared, rows in groupby(values, _SHARED_VALUES):
        statement = _upsert_shared(shared)
        if statement is None:
            db.executemany(UPSERT_ROWS, rows)
        else:
            db.executemany(statement, map(_OWN_VALUES, rows))


# sqlite3 binds None through its adapter registry: finding no adapter for it raises and clears two AttributeErrors
# per value (CPython 3.11), a third of an insert's time for rows with a few empty columns. An adapter that returns
# None as it is changes nothing else, for any user of sqlite3 in the process.
sqlite3.register_adapter(type(None), {}.get)  # {}.get(None) is None, and no Python call


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
        self._runs: dict[str, _RunDays] = {}  # the daily totals of the days each run is replacing
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
            db.create_function("cost_nanos", 1, nanos_of_text, deterministic=True)
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
        return usage_rows(batch, time=Converted(_dt).__getitem__, money=Decimal)

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
            times = Converted(_dt).__getitem__
            while batch := cursor.fetchmany(2000):
                yield from usage_rows(batch, time=times, money=Decimal)
        finally:
            db.close()

    def _page_values(self, page: Page) -> list[StoredRow]:
        return page.stored()

    def _put_rows(self, db: Handle, name: str, run_id: str, page: Page, values: list[StoredRow]) -> None:
        _put(db, values)
        written, dirty = self._runs.setdefault(run_id, _RunDays()).add(page, values)
        if written:
            days = [(name, day) for day in written]
            db.executemany("DELETE FROM usage_daily WHERE connection = ? AND day = ?", days)
            db.executemany(
                f"INSERT INTO usage_daily (connection, day, n, {', '.join(_DAILY_GROUP)}, row_count, cost_units, "
                "cost_nanos, inexact) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (name, day, n, *group, count, *divmod(nanos, _BILLION), inexact)
                    for day, totals in written.items()
                    for n, (group, (count, nanos, inexact)) in enumerate(totals.items(), 1)
                ],
            )
            db.executemany("DELETE FROM usage_daily_dirty WHERE connection = ? AND day = ?", days)
        # The days a report reads from the rows until the run's end recounts them (or a later page completes them).
        db.executemany(
            "INSERT OR IGNORE INTO usage_daily_dirty (connection, day) VALUES (?, ?)",
            [(name, day) for day in sorted(dirty)],
        )

    def _page_failed(self, run_id: str) -> None:
        # Its rows are gone with its transaction, but not from the sums: every day the run was counting is recounted.
        if (run := self._runs.get(run_id)) is not None:
            for day in list(run.days):
                run.spoil(day)

    def _finishing_run(self, db: Handle, run_id: str) -> None:
        self._runs.pop(run_id, None)
        # Bring the daily totals of the days the run's pages touched but did not replace whole up to date.
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
        parts: list[tuple[str, list[Any], int]] = []
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
            # Grouped by the report's columns (or the first of them), per connection: the totals are read in the
            # order of their index (migration 9) and nothing is sorted. Connections are added up below.
            ordered = len(keys) > 0 and tuple(keys) == _REPORT_ORDER[: len(keys)]
            by = "connection, " if ordered else ""
            parts.append(
                (
                    f"SELECT {by}{daily_keys}, SUM(row_count), SUM(cost_units), SUM(cost_nanos), SUM(inexact) "
                    f"FROM usage_daily{' INDEXED BY usage_daily_report' if ordered else ''} "
                    f"WHERE {which} AND day >= ? AND day < ? AND NOT EXISTS "
                    "(SELECT 1 FROM usage_daily_dirty AS dirty "
                    "WHERE dirty.connection = usage_daily.connection AND dirty.day = usage_daily.day) "
                    f"GROUP BY {by}{daily_keys if ordered else groups}",
                    [*named, first, last],
                    1 if ordered else 0,
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
                parts.append((from_rows.format(which=where), [*values, _ts(start), _ts(end)], 0))
        sums: dict[tuple[Any, ...], list[int]] = {}
        width = len(keys)
        for sql, params, skip in parts:  # skip: the leading columns that are not keys (the connection)
            for found in db.execute(sql, params):
                group = sums.setdefault(found[skip : skip + width], [0, 0, 0, 0])
                for i, value in enumerate(found[skip + width :]):
                    group[i] += value
        return sums
