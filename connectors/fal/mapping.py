"""From fal's ``/models/usage`` responses to normalized rows: pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from connector_sdk.errors import ResponseError
from connector_sdk.models import HOUR, SyncContext, UsageRow
from connector_sdk.paging import hour_of

USER_KEY_LABEL = "User key"
"""What the product calls activity not made with an API key: the web UI, the playground, login tokens."""


MAX_DIGITS = 30
"""A number may have at most this many digits before and after the point: more than any bill or price needs."""


def _number(value: Any) -> Any:
    # JSON numbers arrive as int or Decimal (parsed with parse_float=Decimal); a string or bool is a wrong type.
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise ValueError(f"expected a JSON number, got {type(value).__name__}")
    number = Decimal(value)
    # JSON allows 1e999999999 (or 1e-999999999): it would overflow Decimal arithmetic, and writing it out takes a
    # gigabyte. Bounding the magnitude is enough; more digits than that would already be in the response's text.
    if not number.is_finite() or not -MAX_DIGITS < number.adjusted() < MAX_DIGITS:
        raise ValueError(f"expected a number of magnitude between 1e-{MAX_DIGITS} and 1e{MAX_DIGITS}")
    return number


Number = Annotated[Decimal, BeforeValidator(_number)]


class AuthMethod(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    detail: str
    api_key_id: str | None = None
    login_username: str | None = None


class UsageItem(BaseModel):
    """One usage line item as fal serves it. Unknown extra fields are accepted: fal may add some."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    endpoint_id: str
    unit: str
    quantity: Number
    unit_price: Number
    percent_discount: Number | None = None
    cost_subtotal: Number | None = None
    cost_discount: Number | None = None
    cost_total: Number | None = None
    cost: Number | None = None
    currency: str
    auth_method: str | None = None
    auth_method_structured: AuthMethod


def _where(path: str, error: ValidationError) -> str:
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"])
    return f"{path}.{field}: {first['msg']}"


def parse_item(raw: Any, *, path: str) -> UsageItem:
    if not isinstance(raw, dict):
        raise ResponseError(f"fal /models/usage: {path} must be an object, got {type(raw).__name__}")
    try:
        return UsageItem.model_validate(raw)
    except ValidationError as error:
        raise ResponseError(f"fal /models/usage: {_where(path, error)}") from None


def to_row(item: UsageItem, hour: datetime, context: SyncContext, aliases: Mapping[str, str], *, path: str) -> UsageRow:
    """Map one item of one hour bucket to a row, naming its key by ``/keys`` alias when fal lists the key."""
    cost = item.cost_total if item.cost_total is not None else item.cost
    if cost is None:
        raise ResponseError(f"fal /models/usage: {path}.cost_total: missing (and no 'cost' to fall back to)")
    discount = item.cost_discount if item.cost_discount is not None else Decimal(0)
    list_cost = item.cost_subtotal if item.cost_subtotal is not None else cost + discount

    who = item.auth_method_structured
    if who.api_key_id:
        api_key_id: str | None = who.api_key_id
        label = aliases.get(who.api_key_id) or who.detail or who.api_key_id
        login_username = who.login_username or None
    else:
        api_key_id, label, login_username = None, USER_KEY_LABEL, who.login_username or None

    return UsageRow(
        row_id=UsageRow.natural_key_id(
            connection=context.connection,
            period_start=hour,
            api_key_id=api_key_id,
            login_username=login_username,
            model=item.endpoint_id,
            unit=item.unit,
            unit_price=item.unit_price,
            percent_discount=item.percent_discount,
        ),
        connector=context.connector,
        connection=context.connection,
        account=context.account,
        period_start=hour,
        period_end=hour + HOUR,
        api_key_id=api_key_id,
        api_key_label=label,
        login_username=login_username,
        model=item.endpoint_id,
        unit=item.unit,
        quantity=item.quantity,
        unit_price=item.unit_price,
        percent_discount=item.percent_discount,
        list_cost=list_cost,
        discount=discount,
        cost=cost,
        currency=item.currency,
        synced_at=context.synced_at,
    )


def parse_usage_page(
    body: Any, context: SyncContext, aliases: Mapping[str, str]
) -> list[tuple[datetime, list[UsageRow]]]:
    """The hour buckets of one ``/models/usage`` page, each with its rows."""
    if not isinstance(body, dict):
        raise ResponseError(f"fal /models/usage: expected a JSON object, got {type(body).__name__}")
    if "next_cursor" not in body:
        raise ResponseError("fal /models/usage: field 'next_cursor' is missing")
    series = body.get("time_series")
    if not isinstance(series, list):
        raise ResponseError(f"fal /models/usage: field 'time_series' must be a list, got {type(series).__name__}")
    buckets = []
    for i, bucket in enumerate(series):
        where = f"time_series[{i}]"
        if not isinstance(bucket, dict):
            raise ResponseError(f"fal /models/usage: {where} must be an object")
        hour = hour_of(bucket.get("bucket"), what=f"fal /models/usage {where}")
        results = bucket.get("results")
        if not isinstance(results, list):
            raise ResponseError(f"fal /models/usage: {where}.results must be a list, got {type(results).__name__}")
        rows = []
        for j, raw in enumerate(results):
            path = f"{where}.results[{j}]"
            rows.append(to_row(parse_item(raw, path=path), hour, context, aliases, path=path))
        buckets.append((hour, rows))
    return buckets
