"""Fixtures for the store contract suite: every test runs once on SQLite and once on a fresh PostgreSQL database.

The PostgreSQL runs need the server at :data:`POSTGRES_ADMIN_URL`. Without it they fail, since CI guarantees the
server; set ``CONNECTOR_HOST_SKIP_POSTGRES=1`` to skip them instead on a machine that has none.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from connector_sdk.models import Page, UsageRow
from connector_sdk.stores import Store, open_store

if TYPE_CHECKING:
    import psycopg

POSTGRES_ADMIN_URL = os.environ.get("CONNECTOR_HOST_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SKIP_POSTGRES_ENV = "CONNECTOR_HOST_SKIP_POSTGRES"

T0 = datetime(2026, 1, 5, tzinfo=UTC)


def hour(n: int) -> datetime:
    """The n-th whole hour after :data:`T0`."""
    return T0 + timedelta(hours=n)


def usage_row(
    connection: str = "acme",
    at: int = 0,
    *,
    key: str | None = "key-1",
    label: str = "production",
    user: str | None = None,
    model: str = "fal-ai/flux/dev",
    unit: str = "images",
    quantity: str = "1",
    unit_price: str = "0.025",
    percent_discount: str | None = None,
    cost: str | None = None,
    currency: str = "USD",
) -> UsageRow:
    """A usage row in hour ``at``, its id computed from its natural key like a connector computes it."""
    start = hour(at)
    price = Decimal(unit_price)
    pct = None if percent_discount is None else Decimal(percent_discount)
    list_cost = Decimal(quantity) * price
    total = Decimal(cost) if cost is not None else list_cost * (100 - (pct or 0)) / 100
    return UsageRow(
        row_id=UsageRow.natural_key_id(
            connection=connection,
            period_start=start,
            api_key_id=key,
            login_username=user,
            model=model,
            unit=unit,
            unit_price=price,
            percent_discount=pct,
        ),
        connector="fal",
        connection=connection,
        account="acme-ai",
        period_start=start,
        period_end=start + timedelta(hours=1),
        api_key_id=key,
        api_key_label=label,
        login_username=user,
        model=model,
        unit=unit,
        quantity=Decimal(quantity),
        unit_price=price,
        percent_discount=pct,
        list_cost=list_cost,
        discount=list_cost - total,
        cost=total,
        currency=currency,
        synced_at=hour(at + 1),
    )


def quantity_row(
    connection: str = "acme",
    at: int = 0,
    *,
    key: str | None = "key-1",
    label: str = "production",
    model: str = "gpt-4o-2024-08-06",
    unit: str = "input_tokens",
    quantity: str = "1000",
    workspace_id: str | None = "proj_default",
) -> UsageRow:
    """A ``kind="usage"`` row in hour ``at``: a quantity without money, as OpenAI's hourly usage gives it."""
    start = hour(at)
    return UsageRow(
        row_id=UsageRow.natural_key_id(
            connection=connection,
            period_start=start,
            api_key_id=key,
            login_username=None,
            model=model,
            unit=unit,
            unit_price=None,
            percent_discount=None,
            kind="usage",
            workspace_id=workspace_id,
        ),
        connector="openai",
        connection=connection,
        account="acme-org",
        period_start=start,
        period_end=start + timedelta(hours=1),
        api_key_id=key,
        api_key_label=label,
        login_username=None,
        model=model,
        unit=unit,
        quantity=Decimal(quantity),
        unit_price=None,
        percent_discount=None,
        list_cost=None,
        discount=None,
        cost=None,
        currency=None,
        synced_at=hour(at + 1),
        kind="usage",
        workspace_id=workspace_id,
        workspace_name=None if workspace_id is None else f"Project {workspace_id}",
    )


def daily_cost_row(
    connection: str = "acme",
    day: int = 0,
    *,
    key: str | None = "key-1",
    label: str = "production",
    line_item: str | None = "gpt-4o-2024-08-06, input",
    cost: str = "1.25",
    currency: str = "USD",
    workspace_id: str | None = "proj_default",
) -> UsageRow:
    """A billed cost row for the whole UTC day ``day`` after :data:`T0`, without prices (OpenAI gives none); its
    model is the line item up to its first comma."""
    start = T0 + timedelta(days=day)
    model = None if line_item is None else line_item.split(",", 1)[0].strip()
    return UsageRow(
        row_id=UsageRow.natural_key_id(
            connection=connection,
            period_start=start,
            api_key_id=key,
            login_username=None,
            model=model,
            unit=None,
            unit_price=None,
            percent_discount=None,
            workspace_id=workspace_id,
            line_item=line_item,
        ),
        connector="openai",
        connection=connection,
        account="acme-org",
        period_start=start,
        period_end=start + timedelta(days=1),
        api_key_id=key,
        api_key_label=label,
        login_username=None,
        model=model,
        unit=None,
        quantity=None,
        unit_price=None,
        percent_discount=None,
        list_cost=None,
        discount=None,
        cost=Decimal(cost),
        currency=currency,
        synced_at=start + timedelta(days=1),
        workspace_id=workspace_id,
        workspace_name=None if workspace_id is None else f"Project {workspace_id}",
        line_item=line_item,
    )


def page(rows: list[UsageRow], start: int, end: int) -> Page:
    """A page covering hours ``[start, end)``."""
    return Page(rows=rows, covers_from=hour(start), complete_through=hour(end))


def _postgres_unavailable(message: str) -> NoReturn:
    if os.environ.get(SKIP_POSTGRES_ENV) == "1":
        pytest.skip(message)
    pytest.fail(f"{message}; set {SKIP_POSTGRES_ENV}=1 to skip the PostgreSQL tests", pytrace=False)


def _postgres_admin() -> psycopg.Connection[Any]:
    """An autocommit connection to the server's maintenance database; fails the test (or skips it) without one."""
    try:
        import psycopg
    except ImportError as error:
        _postgres_unavailable(f"psycopg is not installed ({error})")
    try:
        return psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        _postgres_unavailable(f"PostgreSQL at {POSTGRES_ADMIN_URL} is unreachable: {error}")


@pytest.fixture(
    name="store_url",
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def store_url_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty store: a SQLite file in ``tmp_path``, or a PostgreSQL database made for this test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    admin = _postgres_admin()
    database = f"ch_test_{uuid.uuid4().hex[:16]}"
    with admin:
        admin.execute(f"CREATE DATABASE {database}")
        try:
            yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{database}"
        finally:
            admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


@pytest.fixture(name="store")
def store_fixture(store_url: str, tmp_path: Path) -> Iterator[Store]:
    """An open store on an empty database, closed after the test (before its database is dropped)."""
    store = open_store(store_url, home=tmp_path)
    try:
        yield store
    finally:
        store.close()


def set_schema_version(url: str, version: int) -> None:
    """Record ``version`` as the store's schema version, behind the store's back."""
    if url.startswith("sqlite:///"):
        db = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            db.execute(f"PRAGMA user_version = {int(version)}")
        finally:
            db.close()
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        db.execute(
            "INSERT INTO schema_version (version, description) VALUES (%s, 'from a newer connector-host')",
            (version,),
        )
