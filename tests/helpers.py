"""Comparing what the host stored with what the simulator says is true."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from connector_sdk.models import SyncContext, UsageRow, decimal_text

Key = tuple[Any, ...]


def truth_rows(items: Iterable[dict[str, Any]]) -> dict[Key, tuple[Decimal, Decimal]]:
    """natural key -> (quantity, cost) of the simulator's items; a repeated key adds up."""
    out: dict[Key, tuple[Decimal, Decimal]] = {}
    for item in items:
        who = item["auth_method_structured"]
        key = (
            item["bucket"],
            who.get("api_key_id"),
            None if who.get("api_key_id") else who.get("login_username"),
            item["endpoint_id"],
            item["unit"],
            decimal_text(item["unit_price"]),
            None if item["percent_discount"] is None else decimal_text(Decimal(item["percent_discount"])),
        )
        cost = item.get("cost_total", item.get("cost"))
        q, c = out.get(key, (Decimal(0), Decimal(0)))
        out[key] = (q + item["quantity"], c + cost)
    return out


def row_key(row: UsageRow) -> Key:
    """A stored row's natural key, spelled as :func:`truth_rows` spells an item's."""
    return (
        row.period_start,
        row.api_key_id,
        row.login_username,
        row.model,
        row.unit,
        decimal_text(row.unit_price),
        None if row.percent_discount is None else decimal_text(row.percent_discount),
    )


def stored_rows(rows: Iterable[UsageRow]) -> dict[Key, tuple[Decimal, Decimal]]:
    """natural key -> (quantity, cost) of stored rows; a natural key stored twice fails the test."""
    out: dict[Key, tuple[Decimal, Decimal]] = {}
    for row in rows:
        key = row_key(row)
        assert key not in out, f"duplicate row for {key}"
        out[key] = (row.quantity, row.cost)
    return out


def window_bounds(now: datetime, days: int) -> tuple[datetime, datetime]:
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return end - timedelta(days=days, hours=1), end


# -- fal usage pages built by hand, for the mapping and fuzz tests ----------------------------------------------

H0 = datetime(2026, 3, 1, 10, tzinfo=UTC)
CONTEXT = SyncContext(connector="fal", connection="c1", account="acme-ai", synced_at=H0 + timedelta(days=1))
ALIASES = {"k-prod": "Production Key"}


def item(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "endpoint_id": "fal-ai/flux/dev",
        "unit": "image",
        "quantity": 4,
        "unit_price": Decimal("0.1"),
        "percent_discount": None,
        "cost_subtotal": Decimal("0.4"),
        "cost_discount": 0,
        "cost_total": Decimal("0.4"),
        "cost": Decimal("0.4"),
        "currency": "USD",
        "auth_method": "Production Key",
        "auth_method_structured": {"detail": "Production Key", "api_key_id": "k-prod"},
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def page(*buckets: tuple[datetime, list[dict[str, Any]]], cursor: str | None = None) -> dict[str, Any]:
    return {
        "time_series": [{"bucket": hour.isoformat(), "results": items} for hour, items in buckets],
        "next_cursor": cursor,
        "has_more": cursor is not None,
    }
