"""From fal's ``/models/usage`` and ``/keys`` responses to normalized rows and listed keys: pure functions, no I/O.

Two readers give the same rows. :func:`parse_usage_page` is the exact one: it takes the decoded JSON and names the
first field that breaks fal's schema. :class:`UsageReader` is the fast one, for the millions of items of a big
account's backfill: it decodes the response's bytes straight into typed structs (msgspec, in C) and builds the rows
with no second validation. Whenever it cannot vouch for a body, it returns ``None`` and the exact reader decides,
so the fast path never accepts what the exact one refuses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from hashlib import sha256
from itertools import chain, repeat
from operator import add, itemgetter, methodcaller
from typing import Annotated, Any, NamedTuple

import msgspec
from msgspec.structs import astuple
from pydantic import BaseModel, BeforeValidator, ConfigDict, SecretStr, ValidationError

from connector_sdk.errors import ResponseError
from connector_sdk.fields import json_object, optional_text, required_text
from connector_sdk.models import (
    HOUR,
    OWN_KEY_LISTING,
    ListedKey,
    StoredRow,
    SyncContext,
    UsageRow,
    amount_text,
    decimal_text,
    iso,
    nanos_of_text,
)
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
_NULL = msgspec.Raw(b"null")
_NUMBERS = ("quantity", "unit_price", "percent_discount", "cost_subtotal", "cost_discount", "cost_total", "cost")


class _Who(msgspec.Struct):
    detail: str
    api_key_id: str | None = None
    login_username: str | None = None


class _Item(msgspec.Struct):
    # Numbers stay their JSON text (msgspec checks its grammar): that text is what the store keeps, so no Decimal is
    # made on the way, and a JSON string in a number's place still starts with a quote, for the exact reader to refuse.
    # An absent optional number reads as null, like a null one (msgspec.Raw takes no union with None). The reader
    # takes the fields in this order (astuple).
    endpoint_id: str
    unit: str
    currency: str
    auth_method_structured: msgspec.Raw  # a _Who, read once per distinct text (UsageReader._tail)
    quantity: msgspec.Raw
    unit_price: msgspec.Raw
    percent_discount: msgspec.Raw = _NULL
    cost_subtotal: msgspec.Raw = _NULL
    cost_discount: msgspec.Raw = _NULL
    cost_total: msgspec.Raw = _NULL
    cost: msgspec.Raw = _NULL
    auth_method: str | None = None


class _Bucket(msgspec.Struct):
    bucket: str
    results: list[_Item]


class _UsageBody(msgspec.Struct):
    time_series: list[_Bucket]
    next_cursor: Any


_DECODER = msgspec.json.Decoder(_UsageBody)


class UsagePage(NamedTuple):
    """One ``/models/usage`` response: its hour buckets with their rows, and the cursor of the next page. The fast
    reader gives the rows in stored form (:data:`~connector_sdk.models.StoredRow`), the exact one as row objects."""

    buckets: list[tuple[datetime, list[UsageRow]]] | list[tuple[datetime, list[StoredRow]]]
    next_cursor: Any


class _Unsure(Exception):
    """The fast reader met something only the exact reader may judge."""


# The fast reader works a page at a time, a column at a time: each column of the page's rows is made by iteration in
# C (join, split, map, zip), so that what the interpreter runs per item is next to nothing. A backfill has a million.
_PLAIN = b"-.0123456789"  # the characters of plain JSON numbers
# Numbers joined by \x1f, read a byte at a time: d for a digit or minus sign, . and \x1f as they are, x for anything
# else (an exponent, a quote, a letter). No x: plain numbers. No run of MAX_DIGITS + 1 d's: none is out of bounds.
# No run of ten: each has at most nine digits before and after the point, and its nano-units are a 64-bit integer.
_SHAPES = bytes(
    ord("d") if byte in _PLAIN and byte != ord(".") else byte if byte in b".\x1f" else ord("x") for byte in range(256)
)
_TOO_LONG = b"d" * (MAX_DIGITS + 1)
_NULLS = {"null": None}
_HEX = methodcaller("hexdigest")
_ROW_ID = itemgetter(slice(32))  # the first 32 hex digits, as UsageRow.natural_key_id keeps them
_TAIL_KEY, _KEY_ID, _LABEL, _LOGIN = (itemgetter(i) for i in range(4))
_WHO_DECODER = msgspec.json.Decoder(_Who)


def _numbers(raws: Sequence[msgspec.Raw], *, optional: bool) -> tuple[list[Any], bytes]:
    """The text of one number of every item, as the store keeps it (``None`` for an optional one absent or null),
    when the exact reader would take every one of them; and the shape of the numbers (:data:`_SHAPES`)."""
    joined = b"\x1f".join(raws)  # the numbers' JSON text, one after the other
    texts: list[Any] = joined.decode().split("\x1f") if raws else []
    if optional and b"null" in joined:
        texts = list(map(_NULLS.get, texts, texts))
        joined = joined.replace(b"null", b"")
    shape = joined.translate(_SHAPES)
    if b"x" in shape or _TOO_LONG in shape:
        # Not every one is a plain number short enough to be within bounds: one by one, as the exact reader would.
        texts = [None if text is None else _amount(text) for text in texts]
        shape = b"x"
    return texts, shape


def _amount(text: str) -> str:
    """A JSON number's text as the store keeps it, when the exact reader would take the number."""
    if text[0] in "-0123456789":  # a number (msgspec checked its grammar), not a string, boolean or null
        if len(text) <= MAX_DIGITS and not text.encode().translate(None, _PLAIN):  # as _numbers judges a column
            return text  # plain, and too short to have MAX_DIGITS digits before or after the point
        number = Decimal(text)
        if -MAX_DIGITS < number.adjusted() < MAX_DIGITS:
            return amount_text(number)
    raise _Unsure


def _plus(first: str, second: str) -> str:
    # As the exact reader adds them: in Decimal's default context.
    return amount_text(Decimal(first) + Decimal(second))


def _cost_nanos(costs: list[str], shape: bytes) -> list[int | None]:
    """:func:`~connector_sdk.models.nanos_of_text` of every cost, given their shape (:func:`_numbers`)."""
    if b"x" in shape or b"dddddddddd" in shape:
        return list(map(nanos_of_text, costs))
    return [int(whole + fraction.ljust(9, "0")) for whole, _, fraction in map(str.partition, costs, repeat("."))]


class UsageReader:
    """The fast reader of one sync's ``/models/usage`` responses.

    It checks every item as the exact reader would and maps it straight to the row's stored form. It remembers,
    across pages, what each source, model and price contributes to a row's natural key and label: an account has a
    few thousand such combinations and a backfill a million rows.
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

    def _tail(self, signature: tuple[Any, ...]) -> tuple[bytes, str | None, str, str | None]:
        who_text, model, unit, unit_price, pct = signature
        try:
            who = _WHO_DECODER.decode(who_text)
        except msgspec.DecodeError:  # not an object of the fields the exact reader wants
            raise _Unsure from None
        return _key_tail(who, model, unit, unit_price, pct, self.aliases)

    def _buckets(self, body: _UsageBody) -> list[tuple[datetime, list[StoredRow]]]:
        context = self.context
        hours, starts, ends, heads, items = [], [], [], [], []
        for i, bucket in enumerate(body.time_series):
            hour = hour_of(bucket.bucket, what=f"fal /models/usage time_series[{i}]")
            start, count = iso(hour), len(bucket.results)
            hours.append((hour, count))
            starts.append(repeat(start, count))
            ends.append(repeat(iso(hour + HOUR), count))
            heads.append(repeat(f"{context.connection}\x1f{start}\x1f".encode(), count))
            items.extend(bucket.results)

        # The page's items as columns (_Item's fields in order), each a tuple of every item's value.
        models, units, currencies, sources, *numbers, _auth_method = (
            zip(*map(astuple, items), strict=True) if items else [()] * len(_Item.__struct_fields__)
        )
        quantities, _ = _numbers(numbers[0], optional=False)
        prices, _ = _numbers(numbers[1], optional=False)
        discounts_pct, _ = _numbers(numbers[2], optional=True)
        subtotals, _ = _numbers(numbers[3], optional=True)
        discounts, _ = _numbers(numbers[4], optional=True)
        totals, shape = _numbers(numbers[5], optional=True)
        costs, _ = _numbers(numbers[6], optional=True)
        if None in totals:  # cost_total, else cost; and one of them there
            totals = [cost if total is None else total for total, cost in zip(totals, costs, strict=True)]
            shape = b"x"
            if None in totals:
                raise _Unsure
        if None in discounts:
            discounts = ["0" if discount is None else discount for discount in discounts]
        if None in subtotals:
            subtotals = [
                _plus(total, discount) if subtotal is None else subtotal
                for subtotal, total, discount in zip(subtotals, totals, discounts, strict=True)
            ]

        # What a source (its key, login and name), model and price give a row, made once per combination: the
        # source's JSON text stands for it, so an item's source is read only the first time it is seen.
        signatures = list(zip(map(bytes, sources), models, units, prices, discounts_pct, strict=True))
        tails = self._tails
        if len(tails) > self.CACHE_LIMIT:
            tails.clear()
        found = list(map(tails.get, signatures))
        if None in found:
            for i, tail in enumerate(found):
                if tail is None:
                    tail = tails.get(signatures[i]) or self._tail(signatures[i])
                    found[i] = tails[signatures[i]] = tail
        row_ids = map(_ROW_ID, map(_HEX, map(sha256, map(add, chain.from_iterable(heads), map(_TAIL_KEY, found)))))
        rows = list(  # in stored form: STORED_FIELDS in order
            zip(
                row_ids,
                map(_KEY_ID, found),
                map(_LABEL, found),
                map(_LOGIN, found),
                models,
                units,
                quantities,
                prices,
                discounts_pct,
                subtotals,
                discounts,
                totals,
                _cost_nanos(totals, shape),
                chain.from_iterable(starts),
                chain.from_iterable(ends),
                currencies,
                repeat(context.connector),
                repeat(context.connection),
                repeat(context.account),
                repeat(iso(context.synced_at)),
                repeat("cost"),
                repeat(None),
                repeat(None),
                repeat(None),
            )
        )
        buckets, done = [], 0
        for hour, count in hours:
            buckets.append((hour, rows[done : done + count]))
            done += count
        return buckets


def _key_tail(
    who: _Who, model: str, unit: str, unit_price: str, pct: str | None, aliases: Mapping[str, str]
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
    pct_text = "" if pct is None else decimal_text(Decimal(pct))
    parts = (source, model, unit, decimal_text(Decimal(unit_price)), pct_text)
    return "\x1f".join(parts).encode(), api_key_id, label, login_username
