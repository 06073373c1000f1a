"""The store for many workers: PostgreSQL through psycopg 3, one connection per thread.

This module holds PostgreSQL's dialect of the SQL core (:class:`~connector_sdk.stores.core.SQLStore`): connections
and transactions, migrations under an advisory lock, binary COPY of a page's rows, server-side cursors for exports,
and the placeholder style psycopg takes. Timestamps are ``TIMESTAMPTZ`` and money ``NUMERIC``, so sums are exact in
the database. Values are written the way :class:`~connector_sdk.stores.sqlite.SQLiteStore` writes them (timestamps
to the whole second, decimals in their plain shortest form), so both backends give back the same values for the same
calls.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from operator import attrgetter
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.json import Jsonb

from connector_sdk.errors import ConfigError, StoreError
from connector_sdk.models import MONEY_FIELDS, ROW_FIELDS, TIME_FIELDS, Page, UsageRow, decimal_text
from connector_sdk.stores.core import ROW_COLUMNS, SQLStore, usage_rows

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


def _same(value: Any) -> Any:
    return value


@lru_cache(maxsize=1024)
def _format_style(sql: str) -> str:
    """A query written with ``?`` placeholders as psycopg takes it: ``%s``, and a literal ``%`` doubled."""
    return sql.replace("%", "%%").replace("?", "%s")


class _Cursor(psycopg.Cursor[Any]):
    """A cursor that takes the SQL core's ``?`` placeholders (so no query here may use PostgreSQL's JSON ``?``
    operators). A query without parameters is sent as written, as psycopg sends it."""

    def execute(
        self, query: Any, params: Any = None, *, prepare: bool | None = None, binary: bool | None = None
    ) -> Any:
        if params is not None and isinstance(query, str):
            query = _format_style(query)
        return super().execute(query, params, prepare=prepare, binary=binary)

    def executemany(self, query: Any, params_seq: Iterable[Any], *, returning: bool = False) -> None:
        if isinstance(query, str):
            query = _format_style(query)
        super().executemany(query, params_seq, returning=returning)


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


class PostgresStore(SQLStore):
    """The SQL core on PostgreSQL: the dialect, binary COPY of pages and server-side cursors for exports."""

    BYTEWISE = ' COLLATE "C"'  # the database's collation may follow a locale; names sort by code point everywhere
    FOR_UPDATE = " FOR UPDATE"
    NO_LIMIT = None
    DAY = "to_char(period_start AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
    DUPLICATE = (pg_errors.UniqueViolation,)
    RUN_SEQUENCE = "seq"

    _ts = staticmethod(_ts)
    _dt = staticmethod(_dt)
    _decimal = staticmethod(_num)
    _money = staticmethod(_same)
    _json = staticmethod(Jsonb)
    _unjson = staticmethod(_same)

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
            conn = psycopg.connect(self._dsn, autocommit=False, cursor_factory=_Cursor, **self._connect_args)
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

    _read = _tx
    _write = _tx

    @contextmanager
    def _snapshot(self) -> Iterator[psycopg.Cursor[Any]]:
        with self._tx() as cursor:
            # Under the default READ COMMITTED each statement would see what committed since the one before.
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield cursor

    def _migrate(self) -> None:
        conn = self._connect()
        try:
            with conn.transaction(), conn.cursor() as cursor:
                # Two processes opening a new database at once: the second waits here, then finds it migrated.
                cursor.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
                cursor.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                    "description TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                )
                for migration in self._migrations_after(self._version(cursor)):
                    cursor.execute(migration.postgres)
                    cursor.execute(
                        "INSERT INTO schema_version (version, description) VALUES (?, ?)",
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

    def schema_version(self) -> int:
        with self._tx() as cursor:
            return self._version(cursor)

    # -- rows ----------------------------------------------------------------------------------------------
    def _rows(self, batch: Iterable[Sequence[Any]]) -> Iterator[UsageRow]:
        # NUMERIC comes back as Decimal, already in its shortest spelling (trim_scale on the way in).
        return usage_rows(batch, time=_dt, money=None)

    def _stream(self, name: str | None, sql: str, params: Sequence[Any]) -> Iterator[UsageRow]:
        # A server-side cursor lives in a transaction, which must not be this thread's.
        conn = self._connect()
        try:
            with conn.transaction():
                if name is not None:
                    with conn.cursor() as check:
                        self._require(check, name)
                with conn.cursor(name="connector_host_rows") as cursor:
                    cursor.itersize = FETCH_BATCH
                    cursor.execute(_format_style(sql), params)
                    while batch := cursor.fetchmany(FETCH_BATCH):
                        yield from self._rows(batch)
        finally:
            conn.close()

    def _page_values(self, page: Page) -> list[UsageRow]:
        # Later rows win over earlier ones with the same id, as they would upserted one by one; one INSERT may not
        # touch a row twice.
        return list({row.row_id: row for row in page.rows}.values())

    def _put_rows(self, db: psycopg.Cursor[Any], name: str, run_id: str, page: Page, values: list[UsageRow]) -> None:
        if not values:
            return
        db.execute("CREATE TEMP TABLE page_rows (LIKE usage_rows) ON COMMIT DROP")
        with db.copy(f"COPY page_rows ({ROW_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(ROW_TYPES)
            for row in values:
                copy.write_row(row_values(row))
        db.execute(
            f"INSERT INTO usage_rows ({ROW_COLUMNS}) SELECT {ROW_VALUES} FROM page_rows "
            f"ON CONFLICT (row_id) DO UPDATE SET {ROW_UPDATES}"
        )
