"""From fal's ``/models/usage`` and ``/keys`` responses to normalized rows and listed keys: pure functions, no I/O.

Two readers give the same rows. :func:`parse_usage_page` is the exact one: it takes the decoded JSON and names the
first field that breaks fal's schema. :class:`UsageReader` is the fast one, for the millions of items of a big
account's backfill: it decodes the response's bytes straight into typed structs (msgspec, in C) and builds the rows
with no second validation. Whenever it cannot vouch for a body, it returns ``None`` and the exact reader decides,
so the fast path never accepts what the exact one refuses.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from hashlib import sha256
from typing import Annotated, Any, NamedTuple

import msgspec
from pydantic import BaseModel, BeforeValidator, ConfigDict, SecretStr, ValidationError

from connector_sdk.errors import ResponseError
from connector_sdk.fields import json_object, optional_text, required_text
from connector_sdk.models import HOUR, OWN_KEY_LISTING, ListedKey, SyncContext, UsageRow, decimal_text, iso
from connector_sdk.paging import hour_of

USER_KEY_LABEL = "User key"
"""What the product calls activity not made with an API key: the web UI, the playground, login tokens."""
KEYS_LISTING = "fal /keys"


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


def parse_listed_key(raw: Any, what: str) -> ListedKey:
    """One item of ``GET /keys?expand=creator_info``: the key, its alias, scope and when and by whom it was made."""
    key = json_object(raw, what)
    created = optional_text(key, "created_at", what)
    created_at = None
    if created is not None:
        try:
            created_at = datetime.fromisoformat(created.replace("Z", "+00:00"))
        except ValueError:
            raise ResponseError(f"{what}: field 'created_at' is not an ISO 8601 time: {created!r}") from None
        if created_at.tzinfo is None:
            raise ResponseError(f"{what}: field 'created_at' has no UTC offset: {created!r}")
    scope = optional_text(key, "scope", what)
    nickname = optional_text(key, "creator_nickname", what) or None
    email = optional_text(key, "creator_email", what) or None
    return ListedKey(
        key_id=required_text(key, "key_id", what),
        name=optional_text(key, "alias", what) or None,
        scope=scope.lower() if scope else None,
        owner=nickname or email,
        owner_email=email,
        owner_type="user" if nickname or email else None,
        created_at=created_at,
        listing=KEYS_LISTING,
    )


def own_admin_key(api_key: SecretStr) -> ListedKey:
    """The connection's own credential as a listed key: its id (``KEY_ID`` of ``KEY_ID:KEY_SECRET``), never the
    secret. fal reports its traffic like any key's, so an Admin key used for traffic can be told apart."""
    return ListedKey(key_id=api_key.get_secret_value().partition(":")[0], scope="admin", listing=OWN_KEY_LISTING)


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


# -- the fast reader -----------------------------------------------------------------------------------------------
class _Who(msgspec.Struct):
    detail: str
    api_key_id: str | None = None
    login_username: str | None = None


class _Item(msgspec.Struct):
    # Numbers are left untyped so that a JSON string in their place stays a string (msgspec would turn "4" into a
    # Decimal): the row builder takes only int and Decimal, which is what the exact reader accepts.
    endpoint_id: str
    unit: str
    currency: str
    auth_method_structured: _Who
    quantity: Any
    unit_price: Any
    percent_discount: Any = None
    cost_subtotal: Any = None
    cost_discount: Any = None
    cost_total: Any = None
    cost: Any = None
    auth_method: str | None = None


class _Bucket(msgspec.Struct):
    bucket: str
    results: list[_Item]


class _UsageBody(msgspec.Struct):
    time_series: list[_Bucket]
    next_cursor: Any


# Fractional JSON numbers become exact Decimals from their text; integers stay ints.
_DECODER = msgspec.json.Decoder(_UsageBody, float_hook=Decimal)
_BOUND = 10**MAX_DIGITS
_ZERO = Decimal(0)


class UsagePage(NamedTuple):
    """One ``/models/usage`` response: its hour buckets with their rows, and the cursor of the next page."""

    buckets: list[tuple[datetime, list[UsageRow]]]
    next_cursor: Any


class _Unsure(Exception):
    """The fast reader met something only the exact reader may judge."""


def _money(value: Any) -> Decimal:
    kind = type(value)
    if kind is Decimal:
        if not -MAX_DIGITS < value.adjusted() < MAX_DIGITS:
            raise _Unsure
        return value  # type: ignore[no-any-return]
    if kind is int and -_BOUND < value < _BOUND:
        return Decimal(value)
    raise _Unsure


class UsageReader:
    """The fast reader of one sync's ``/models/usage`` responses.

    It remembers, across pages, what each source, model and price contributes to a row's natural key and label:
    an account has a few thousand such combinations and a backfill a million rows.
    """

    CACHE_LIMIT = 100_000

    def __init__(self, context: SyncContext, aliases: Mapping[str, str]) -> None:
        self.context = context
        self.aliases = aliases
        self._tails: dict[tuple[Any, ...], tuple[bytes, str | None, str, str | None]] = {}

    def __call__(self, content: bytes) -> UsagePage | None:
        """The rows of one response body, or ``None`` when the exact reader must judge it."""
        try:
            body = _DECODER.decode(content)
            return UsagePage(self._buckets(body), body.next_cursor)
        except (msgspec.DecodeError, _Unsure, ResponseError):
            return None

    def _buckets(self, body: _UsageBody) -> list[tuple[datetime, list[UsageRow]]]:
        context = self.context
        connector, connection, account, synced_at = (
            context.connector,
            context.connection,
            context.account,
            context.synced_at,
        )
        trusted = UsageRow.trusted
        tails = self._tails
        if len(tails) > self.CACHE_LIMIT:
            tails.clear()
        buckets = []
        # The hottest loop of a backfill: a million turns, so nothing in it that a page or a source could do once.
        for i, bucket in enumerate(body.time_series):
            hour = hour_of(bucket.bucket, what=f"fal /models/usage time_series[{i}]")
            end = hour + HOUR
            head = f"{connection}\x1f{iso(hour)}\x1f".encode()
            rows = []
            for item in bucket.results:
                unit_price = _money(item.unit_price)
                pct = None if item.percent_discount is None else _money(item.percent_discount)
                cost = None if item.cost is None else _money(item.cost)
                total = cost if item.cost_total is None else _money(item.cost_total)
                if total is None:
                    raise _Unsure
                discount = _ZERO if item.cost_discount is None else _money(item.cost_discount)
                subtotal = total + discount if item.cost_subtotal is None else _money(item.cost_subtotal)
                who = item.auth_method_structured
                # str() of the prices: hashing a Decimal costs more than printing it.
                signature = (who.api_key_id, who.login_username, who.detail, item.endpoint_id, item.unit)
                signature += (str(unit_price), str(pct))
                tail = tails.get(signature)
                if tail is None:
                    tail = tails[signature] = _key_tail(who, item, unit_price, pct, self.aliases)
                values = {
                    "row_id": sha256(head + tail[0]).hexdigest()[:32],
                    "connector": connector,
                    "connection": connection,
                    "account": account,
                    "period_start": hour,
                    "period_end": end,
                    "api_key_id": tail[1],
                    "api_key_label": tail[2],
                    "login_username": tail[3],
                    "model": item.endpoint_id,
                    "unit": item.unit,
                    "quantity": _money(item.quantity),
                    "unit_price": unit_price,
                    "percent_discount": pct,
                    "list_cost": subtotal,
                    "discount": discount,
                    "cost": total,
                    "currency": item.currency,
                    "synced_at": synced_at,
                }
                rows.append(trusted(values))  # every value was checked above
            buckets.append((hour, rows))
        return buckets


def _key_tail(
    who: _Who, item: _Item, unit_price: Decimal, pct: Decimal | None, aliases: Mapping[str, str]
) -> tuple[bytes, str | None, str, str | None]:
    """What follows connection and hour in a row's natural key (as :meth:`UsageRow.natural_key_id` spells it),
    with the key id, label and login the row carries."""
    if who.api_key_id:
        api_key_id: str | None = who.api_key_id
        label = aliases.get(who.api_key_id) or who.detail or who.api_key_id
        login_username = who.login_username or None
        source = f"key:{api_key_id}"
    else:
        api_key_id, label, login_username = None, USER_KEY_LABEL, who.login_username or None
        source = f"user:{login_username or ''}"
    pct_text = "" if pct is None else decimal_text(pct)
    parts = (source, item.endpoint_id, item.unit, decimal_text(unit_price), pct_text)
    return "\x1f".join(parts).encode(), api_key_id, label, login_username
