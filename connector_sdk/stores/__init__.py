"""The stores: one contract (:mod:`.base`), the SQL core that implements it (:mod:`.core`), its SQLite and
PostgreSQL dialects (:mod:`.sqlite`, :mod:`.postgres`), and the schema versions they share (:mod:`.migrations`).

:func:`open_store` is where a backend is chosen; nothing else names one.
"""

from __future__ import annotations

from pathlib import Path

from connector_sdk.errors import ConfigError
from connector_sdk.stores.base import STORE_ENV, Store

__all__ = ["STORE_ENV", "Store", "open_store", "sqlite_path"]


def sqlite_path(url: str | None, *, home: Path) -> Path | None:
    """The file of the SQLite store ``url`` names (by default the one in ``home``); ``None`` for another backend."""
    if not url:
        return home / "connector-host.db"
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


def open_store(url: str | None, *, home: Path, read_only: bool = False) -> Store:
    """Open the store a URL names (``postgresql://...`` or ``sqlite:///path``); by default SQLite in ``home``.

    ``read_only`` opens a SQLite store without writing anything (no schema upgrade, no file created); a PostgreSQL
    store is opened as usual, its role decides what it may write."""
    if not url:
        from connector_sdk.stores.sqlite import SQLiteStore

        return SQLiteStore(home / "connector-host.db", read_only=read_only)
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from connector_sdk.stores.postgres import PostgresStore
        except ImportError as error:
            raise ConfigError(
                f"a PostgreSQL store needs psycopg: pip install 'connector-host[postgres]' ({error})"
            ) from None
        return PostgresStore(url)
    if url.startswith("sqlite:///"):
        from connector_sdk.stores.sqlite import SQLiteStore

        return SQLiteStore(Path(url.removeprefix("sqlite:///")), read_only=read_only)
    raise ConfigError(f"unsupported store URL {url.split(':', 1)[0]!r}: use postgresql://... or sqlite:///path")
