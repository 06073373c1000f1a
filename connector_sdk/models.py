"""Typed records that cross the host's boundaries: configs, rows, pages, connections, runs and manifests.

Every model is built when it first validates or serializes (``defer_build``), not when this module is imported:
every command imports them all, and ``status`` and ``report``, which read records back from the store, build none.
"""

from __future__ import annotations

import decimal
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from operator import itemgetter
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    TypeAdapter,
    field_validator,
    model_validator,
)

HOUR = timedelta(hours=1)
#: Adds sums of exact decimals without rounding, whatever their number of digits (money is never rounded).
EXACT = decimal.Context(prec=decimal.MAX_PREC, traps=[decimal.Inexact, decimal.InvalidOperation, decimal.Overflow])


def utcnow() -> datetime:
    return datetime.now(UTC)


def floor_hour(moment: datetime) -> datetime:
    """The start of the UTC hour that contains ``moment``."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


@lru_cache(maxsize=8192)
def iso(moment: datetime) -> str:
    """``2026-01-02T03:00:00Z``: the one timestamp format the host writes (cached: rows repeat their hours)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def decimal_text(value: Decimal) -> str:
    """Exact, plain decimal text without exponent or trailing zeros: ``0.3``, ``12``, ``0.000125``."""
    text = str(value)  # plain unless the exponent is large, and several times faster than format()
    if "E" in text:
        text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


class ConnectorConfig(BaseModel):
    """Base of every connector's configuration model.

    Secret fields are ``SecretStr``: their JSON Schema says ``writeOnly`` and the host stores them encrypted, apart
    from the rest. The two sync settings live here because the host, not the connector, owns sync windows.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    backfill_days: int = Field(
        30, title="Backfill days", ge=1, le=400, description="How many days of history the first sync collects."
    )
    lookback_hours: int = Field(
        48,
        title="Lookback hours",
        ge=0,
        le=24 * 31,
        description="How many recent hours every later sync polls again, for late revisions.",
    )

    @field_validator("backfill_days", "lookback_hours", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: Any) -> Any:
        # The published JSON Schema says integer, which refuses true/false; pydantic alone would take them as 1/0.
        if isinstance(value, bool):
            raise ValueError("expected a whole number, not true/false")
        return value

    @field_validator("*", mode="before")
    @classmethod
    def _number_within_reason(cls, value: Any) -> Any:
        # JSON allows 1e999999999, decoded exactly as a Decimal; pydantic would spend minutes turning it into an
        # integer to compare it with a bound. No setting needs a number beyond 1e18, or a fraction below 1e-18.
        if isinstance(value, Decimal) and (not value.is_finite() or not -18 <= value.adjusted() <= 18):
            raise ValueError("number out of range")
        return value

    @classmethod
    def secret_field_names(cls) -> list[str]:
        return [name for name, field in cls.model_fields.items() if field.annotation is SecretStr]

    def public_values(self) -> dict[str, Any]:
        """The configuration without its secrets, as JSON-compatible values."""
        return self.model_dump(mode="json", exclude=set(self.secret_field_names()))

    def secret_values(self) -> dict[str, str]:
        return {name: getattr(self, name).get_secret_value() for name in self.secret_field_names()}


class ConnectionState(StrEnum):
    CONNECTED = "connected"
    SYNCING = "syncing"
    RECONNECT_REQUIRED = "reconnect_required"
    ERROR = "error"
    DISCONNECTED = "disconnected"


class RunOutcome(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    RECONNECT_REQUIRED = "reconnect_required"
    GAVE_UP = "gave_up"
    FAILED = "failed"
    CANCELLED = "cancelled"


class SyncWindow(BaseModel):
    """Whole UTC hours ``[start, end)``."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    start: datetime
    end: datetime

    @model_validator(mode="after")
    def _whole_hours(self) -> SyncWindow:
        for moment in (self.start, self.end):
            if moment.tzinfo is None or moment != floor_hour(moment):
                raise ValueError(f"sync windows are whole UTC hours, got {moment.isoformat()}")
        if self.start >= self.end:
            raise ValueError("a sync window must end after it starts")
        return self

    @property
    def hours(self) -> int:
        return int((self.end - self.start) / HOUR)


#: The most a connection's connector state may weigh, as JSON text: a few settings, never data.
MAX_CONNECTOR_STATE = 64 * 1024
#: The key under which the host keeps, inside a stored connector state, what the connector's ``describe_state`` made
#: of it (label → text), so that ``status`` shows it without loading any plugin. Connectors never see or set it.
STATE_FACTS = "connector_sdk:facts"


def state_facts(stored: Mapping[str, Any]) -> dict[str, str]:
    """The facts the host kept in a stored connector state: label → text, ``{}`` when there are none."""
    facts = stored.get(STATE_FACTS)
    if not isinstance(facts, dict):
        return {}
    return {label: text for label, text in facts.items() if isinstance(label, str) and isinstance(text, str)}


def connector_view(stored: Mapping[str, Any]) -> dict[str, Any]:
    """A stored connector state as its connector wrote it: without the facts the host keeps beside it."""
    return {key: value for key, value in stored.items() if key != STATE_FACTS}


class SyncContext(BaseModel):
    """What a connector knows about the connection it syncs: what to stamp on its rows, and what it remembered.

    ``state`` is the connection's connector state as the sync started: a small JSON object the connector keeps
    between syncs (a page size the vendor accepted, a query it had to narrow). The connector changes it with
    :meth:`remember`; the host stores the change with the next page it commits, in that page's transaction, so a
    later sync reads it in ``state``, and a sync that fails before committing a page leaves it as it was.
    """

    model_config = ConfigDict(frozen=True, defer_build=True)

    connector: str
    connection: str
    account: str
    synced_at: datetime
    state: dict[str, Any] = Field(default_factory=dict)
    _remembered: dict[str, Any] = PrivateAttr(default_factory=dict)
    _unsaved: bool = PrivateAttr(default=False)

    def remember(self, key: str, value: Any) -> None:
        """Keep ``value`` under ``key`` in this connection's connector state, from the next committed page on.

        ``value`` is plain JSON (text, numbers, booleans, ``None``, and lists and objects of them). Raises
        :class:`ValueError` for anything else, or when the state would outgrow :data:`MAX_CONNECTOR_STATE`: that is
        a connector's bug, found at once rather than when the page is stored.
        """
        if key == STATE_FACTS:
            raise ValueError(f"connector state {key!r} is the host's: describe the state in describe_state instead")
        merged = {**self.state, **self._remembered, key: value}
        try:
            text = json.dumps(merged, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise ValueError(f"connector state {key!r} is not plain JSON ({error})") from None
        if len(text) > MAX_CONNECTOR_STATE:
            raise ValueError(f"connector state would be {len(text)} bytes, over the {MAX_CONNECTOR_STATE} allowed")
        self._remembered[key] = value
        self._unsaved = True

    def take_state(self) -> dict[str, Any] | None:
        """For the host, as it commits a page: the whole state to store with it, or ``None`` when nothing was
        remembered since the last call."""
        if not self._unsaved:
            return None
        self._unsaved = False
        return {**self.state, **self._remembered}


RowKind = Literal["cost", "usage"]


class UsageRow(BaseModel):
    """One normalized row: what one API key (or user) spent on, or used of, one model in one billing period.

    ``kind`` says what the row counts. A ``"cost"`` row is billed money (``cost`` set): every total, budget and
    export sums these. A ``"usage"`` row is a quantity only (``cost``, ``list_cost`` and ``discount`` null), such as
    hourly tokens that tell who is spending before the bill arrives: it never adds money. The period is whatever
    the vendor bills in (an hour, a day): whole UTC hours, ending after it starts. Fields a vendor does not have are
    null (a price the vendor does not give is never invented); ``workspace_*`` is the vendor's project or workspace
    and ``line_item`` its billing line, verbatim. Money and quantities are exact ``Decimal``s.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    row_id: str
    connector: str
    connection: str
    account: str
    period_start: datetime
    period_end: datetime
    api_key_id: str | None
    api_key_label: str
    login_username: str | None
    model: str | None
    unit: str | None
    quantity: Decimal | None
    unit_price: Decimal | None
    percent_discount: Decimal | None
    list_cost: Decimal | None
    discount: Decimal | None
    cost: Decimal | None
    currency: str | None
    synced_at: datetime
    # Added after the first release: defaults keep older rows, readers and stores valid.
    kind: RowKind = "cost"
    workspace_id: str | None = None
    workspace_name: str | None = None
    line_item: str | None = None

    @model_validator(mode="after")
    def _period_and_money(self) -> UsageRow:
        for moment in (self.period_start, self.period_end):
            if moment.tzinfo is None or moment != floor_hour(moment):
                raise ValueError(f"a row's period is whole UTC hours, got {moment.isoformat()}")
        if self.period_end <= self.period_start:
            raise ValueError("a row's period must end after it starts")
        if self.kind == "usage" and (self.cost, self.list_cost, self.discount) != (None, None, None):
            raise ValueError("a usage row counts quantities only: cost, list_cost and discount must be null")
        if self.kind == "cost" and self.cost is None:
            raise ValueError("a cost row needs its cost")
        return self

    @classmethod
    def natural_key_id(
        cls,
        *,
        connection: str,
        period_start: datetime,
        api_key_id: str | None,
        login_username: str | None,
        model: str | None,
        unit: str | None,
        unit_price: Decimal | None,
        percent_discount: Decimal | None,
        kind: RowKind = "cost",
        workspace_id: str | None = None,
        line_item: str | None = None,
    ) -> str:
        """A stable id of the natural key: equal keys give equal ids, whatever the decimals' spelling.

        A cost row without workspace or line item keeps the id it had before those fields existed, so rows
        stored by earlier versions are replaced, not duplicated, when their period is synced again.
        """
        who = f"key:{api_key_id}" if api_key_id is not None else f"user:{login_username or ''}"
        pct = "" if percent_discount is None else decimal_text(percent_discount)
        price = "" if unit_price is None else decimal_text(unit_price)
        parts: tuple[str, ...] = (connection, iso(period_start), who, model or "", unit or "", price, pct)
        if kind != "cost" or workspace_id is not None or line_item is not None:
            # \x00 marks a null, which no vendor's text contains: a null and an empty line item stay apart.
            parts += (
                kind,
                "\x00" if workspace_id is None else workspace_id,
                "\x00" if line_item is None else line_item,
            )
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]

    @classmethod
    def trusted(cls, values: dict[str, Any]) -> UsageRow:
        """A row from values that are already known to be valid: every field, each of its declared type.

        For readers that validated their input on the way in (a connector's typed decoder, the store reading back
        what it wrote): pydantic's ``model_construct`` does the same generically, and at a million rows the
        difference is seconds. The dict becomes the row's own; do not reuse it.
        """
        if len(values) != len(_ALL_ROW_FIELDS):  # a reader written before the newer fields existed
            for name, default in _ROW_DEFAULTS.items():
                values.setdefault(name, default)
        row = object.__new__(cls)
        object.__setattr__(row, "__dict__", values)
        object.__setattr__(row, "__pydantic_fields_set__", _ROW_FIELD_SET)
        object.__setattr__(row, "__pydantic_extra__", None)
        object.__setattr__(row, "__pydantic_private__", None)
        return row

    def export(self) -> dict[str, Any]:
        """JSON-ready values: timestamps as ISO 8601 UTC, money and quantities as exact decimal strings."""
        out = {name: self.__dict__[name] for name in ROW_FIELDS}
        for name in MONEY_FIELDS:
            if (value := out[name]) is not None:
                out[name] = decimal_text(value)
        for name in TIME_FIELDS:
            out[name] = iso(out[name])
        return out


NEW_ROW_FIELDS: tuple[str, ...] = ("kind", "workspace_id", "workspace_name", "line_item")
"""Fields rows gained for a second vendor (store schema v6): the last columns, after the first release's."""
# ROW_FIELDS is what the stores' columns, the CSV exports and the sinks carry, in order: every field, the newer
# ones last, so a reader of the first release's columns finds them where they were.
ROW_FIELDS: tuple[str, ...] = tuple(UsageRow.model_fields)
_ALL_ROW_FIELDS: tuple[str, ...] = tuple(UsageRow.model_fields)
_ROW_FIELD_SET = frozenset(_ALL_ROW_FIELDS)
_ROW_DEFAULTS: dict[str, Any] = {
    name: field.default for name, field in UsageRow.model_fields.items() if not field.is_required()
}
# The row's fields that hold exact decimals, and those that hold instants: each store converts them its own way.
MONEY_FIELDS: tuple[str, ...] = tuple(
    name for name, field in UsageRow.model_fields.items() if Decimal in (field.annotation, *get_args(field.annotation))
)
TIME_FIELDS: tuple[str, ...] = tuple(
    name for name, field in UsageRow.model_fields.items() if field.annotation is datetime
)


def merge_duplicates(rows: list[UsageRow]) -> list[UsageRow]:
    """Sum rows that share a natural key, so an item the vendor repeats adds its money instead of overwriting it."""
    by_id: dict[str, UsageRow] = {}
    for row in rows:
        seen = by_id.get(row.row_id)
        by_id[row.row_id] = (
            row
            if seen is None
            else seen.model_copy(update={name: _add(seen.__dict__[name], row.__dict__[name]) for name in _SUMMED})
        )
    return list(by_id.values()) if len(by_id) != len(rows) else rows


_SUMMED = ("quantity", "list_cost", "discount", "cost")


def _add(first: Decimal | None, second: Decimal | None) -> Decimal | None:
    """A sum where null means "not given": two nulls stay null."""
    if first is None:
        return second
    return first if second is None else first + second


# -- rows in stored form ---------------------------------------------------------------------------------------
SHARED_FIELDS: tuple[str, ...] = (
    "period_start", "period_end", "currency", "connector", "connection", "account", "synced_at", "kind",
    "workspace_id", "workspace_name", "line_item",
)  # fmt: skip
"""The fields that rows next to each other usually share: their period and currency, whose rows they are, when they
were synced, what they count."""
STORED_FIELDS: tuple[str, ...] = (
    *(name for name in ROW_FIELDS if name not in SHARED_FIELDS), "cost_nanos", *SHARED_FIELDS
)  # fmt: skip
"""The values of a row in stored form, in order: each field of :data:`ROW_FIELDS` and ``cost_nanos``, those rows
usually share last (:data:`SHARED_FIELDS`), so that a store can take the others as one slice."""

StoredRow = tuple[Any, ...]
"""A row as the stores write it, one value per :data:`STORED_FIELDS`: instants as ISO text (:func:`iso`), money and
quantities as exact plain decimal text (:func:`amount_text`; ``None`` stays ``None``), the rest as the row holds it,
and last ``cost_nanos``, the cost in integer nano-units when that is exact and fits 64 bits (:func:`nanos_of_text`),
with which a store sums money in integer arithmetic. A reader that checks its input as it decodes it (the fal
connector's) builds these directly: a backfill of a million items would otherwise build a million row objects only
to take them apart again. :class:`Page` turns one form into the other when something asks for it."""

_INT64 = 2**63
_NANO_CONTEXT = decimal.Context(prec=40, traps=[decimal.Inexact, decimal.InvalidOperation, decimal.Overflow])
ZEROS = tuple("0" * (9 - n) for n in range(10))
"""What pads a fraction of ``n`` digits to nine: ``ZEROS[n]``."""
_STORED_MONEY = tuple(STORED_FIELDS.index(name) for name in MONEY_FIELDS)
_STORED_TIMES = tuple(STORED_FIELDS.index(name) for name in TIME_FIELDS)
_COST = STORED_FIELDS.index("cost")
_COST_NANOS = STORED_FIELDS.index("cost_nanos")
_ROW_ID = STORED_FIELDS.index("row_id")
_STORED_FROM_ROW = itemgetter(*(name for name in STORED_FIELDS if name != "cost_nanos"))  # of a row's __dict__
_PERIOD = itemgetter(STORED_FIELDS.index("period_start"), STORED_FIELDS.index("period_end"))
_SUMMED_STORED = tuple(STORED_FIELDS.index(name) for name in _SUMMED)


def amount_text(value: Decimal) -> str:
    """An amount as stored: exact decimal text as ``str()`` writes it (trailing zeros kept), except that an exponent
    (``1E-7``) is written out plainly (``0.0000001``) for people reading the store."""
    text = str(value)  # exact and C-fast
    return decimal_text(value) if "E" in text else text


def nanos(value: Decimal) -> int | None:
    """The amount in integer nano-units when that is exact and fits 64 bits, else ``None``."""
    try:
        scaled = _NANO_CONTEXT.scaleb(value, 9)
    except decimal.DecimalException:
        return None
    whole = int(scaled)
    return whole if whole == scaled and -_INT64 < whole < _INT64 else None


def nanos_of_text(value: str | None) -> int | None:
    """The nano-units of an amount's decimal text when that is exact and fits 64 bits, else ``None``."""
    if value is None:
        return None
    whole, _, fraction = value.partition(".")
    digits = whole.removeprefix("-")
    if len(fraction) > 9 or len(digits) > 9 or not digits.isdecimal() or not (fraction.isdecimal() or not fraction):
        return nanos(Decimal(value))  # many digits or an exponent: rare, and exact this way
    return int(whole + fraction + ZEROS[len(fraction)])


def instant(text: str) -> datetime:
    """The aware UTC instant of :func:`iso`'s text (``2026-01-02T03:00:00Z``, and nothing else)."""
    # fromisoformat reads the Z as UTC, 40x faster than strptime; the checks keep strptime's strictness: it would
    # also read a date alone, a fraction or another offset.
    if len(text) != 20 or text[-1] != "Z" or text[10] != "T":
        raise ValueError(f"not a UTC time as iso() writes it: {text!r}")
    return datetime.fromisoformat(text)


class Converted(dict[Any, Any]):
    """Values converted once each (rows share their hours and their sync time): ``Converted(iso)[moment]``."""

    def __init__(self, convert: Callable[[Any], Any]) -> None:
        super().__init__()
        self.convert = convert

    def __missing__(self, key: Any) -> Any:
        value = self[key] = self.convert(key)
        return value


def stored_rows(rows: Iterable[UsageRow]) -> list[StoredRow]:
    """Rows in stored form (:data:`StoredRow`)."""
    times = Converted(iso)
    out = []
    for row in rows:
        values = list(_STORED_FROM_ROW(row.__dict__))
        values.insert(_COST_NANOS, None)
        for i in _STORED_MONEY:
            if (amount := values[i]) is not None:
                values[i] = amount_text(amount)
        for i in _STORED_TIMES:
            values[i] = times[values[i]]
        values[_COST_NANOS] = nanos_of_text(values[_COST])
        out.append(tuple(values))
    return out


def rows_from_stored(values: Iterable[StoredRow]) -> list[UsageRow]:
    """The rows that values in stored form hold: what :func:`stored_rows` made them from."""
    times = Converted(instant)
    trusted = UsageRow.trusted
    out = []
    for stored in values:
        fields = dict(zip(STORED_FIELDS, stored, strict=True))
        del fields["cost_nanos"]  # a value of the stored form only
        for name in MONEY_FIELDS:
            if (text := fields[name]) is not None:
                fields[name] = Decimal(text)
        for name in TIME_FIELDS:
            fields[name] = times[fields[name]]
        out.append(trusted(fields))
    return out


def merge_stored_duplicates(values: list[StoredRow]) -> list[StoredRow]:
    """:func:`merge_duplicates` of rows in stored form."""
    if len(set(map(itemgetter(_ROW_ID), values))) == len(values):
        return values  # the rule: a vendor seldom repeats an item
    by_id: dict[str, StoredRow] = {}
    for stored in values:
        seen = by_id.get(stored[_ROW_ID])
        if seen is not None:
            merged = list(seen)
            for i in _SUMMED_STORED:
                first, second = (None if v[i] is None else Decimal(v[i]) for v in (seen, stored))
                total = _add(first, second)
                merged[i] = None if total is None else amount_text(total)
            merged[_COST_NANOS] = nanos_of_text(merged[_COST])
            stored = tuple(merged)
        by_id[stored[_ROW_ID]] = stored
    return list(by_id.values())


@lru_cache(maxsize=1)
def _rows_adapter() -> TypeAdapter[list[UsageRow]]:
    """Made on first use: a TypeAdapter builds its schema when made, which reading commands never need."""
    return TypeAdapter(list[UsageRow])


class Page(BaseModel):
    """A unit of progress in a sync: every row whose period starts in ``[covers_from, complete_through)``.

    The host replaces the connection's rows in that range with ``rows`` in one transaction, so a vendor that revises
    or drops an hour's usage is mirrored exactly and a page written twice is written once.

    A connector gives ``rows``, or ``stored``: the same rows in stored form (:data:`StoredRow`), each of which it
    vouches for as it would for a row object. Each form is made from the other only when something asks for it: the
    SQLite store writes the stored form, sinks and event listeners get ``rows``.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, defer_build=True)

    covers_from: datetime
    complete_through: datetime
    requests: int = 0
    _rows: list[UsageRow] | None = PrivateAttr(None)
    _stored: list[StoredRow] | None = PrivateAttr(None)
    _periods: set[tuple[datetime, datetime]] | None = PrivateAttr(None)

    def __init__(
        self, rows: list[UsageRow] | None = None, *, stored: list[StoredRow] | None = None, **fields: Any
    ) -> None:
        super().__init__(**fields)
        if (rows is None) == (stored is None):
            raise ValueError("a page holds rows or stored rows: give one of the two")
        if rows is not None:
            # Row objects were checked when they were made and cannot change: only anything else is validated.
            if type(rows) is not list or not all(isinstance(row, UsageRow) for row in rows):
                rows = _rows_adapter().validate_python(rows)
            self._rows = rows
        else:
            self._stored = list(stored)  # type: ignore[arg-type]

    @property
    def rows(self) -> list[UsageRow]:
        if self._rows is None:
            self._rows = rows_from_stored(self._stored or ())
        return self._rows

    def stored(self) -> list[StoredRow]:
        """The page's rows in stored form."""
        if self._stored is None:
            self._stored = stored_rows(self._rows or ())
        return self._stored

    @property
    def row_count(self) -> int:
        return len(self._rows if self._rows is not None else self._stored or ())

    def periods(self) -> set[tuple[datetime, datetime]]:
        """The distinct periods (start, end) of the page's rows: what the host checks against the page's range."""
        if self._periods is None:
            if self._rows is not None:
                self._periods = {(row.period_start, row.period_end) for row in self._rows}
            else:
                self._periods = {(instant(start), instant(end)) for start, end in set(map(_PERIOD, self._stored or ()))}
        return self._periods


class AccountInfo(BaseModel):
    """What a credential check learned: the vendor account's name and anything worth showing beside it."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    account: str
    details: dict[str, Any] = Field(default_factory=dict)


class Connection(BaseModel):
    """A stored connection, without its credential."""

    model_config = ConfigDict(defer_build=True)

    name: str
    connector: str
    config: dict[str, Any]
    state: ConnectionState
    reason: str | None = None
    account: str | None = None
    created_at: datetime
    watermark: datetime | None = None
    last_sync_at: datetime | None = None
    last_success_at: datetime | None = None
    next_sync_at: datetime | None = None


class StatusChange(BaseModel):
    model_config = ConfigDict(defer_build=True)

    connection: str
    at: datetime
    old: ConnectionState | None
    new: ConnectionState
    reason: str | None = None


class SyncRun(BaseModel):
    model_config = ConfigDict(defer_build=True)

    run_id: str
    connection: str
    started_at: datetime
    finished_at: datetime | None = None
    outcome: RunOutcome = RunOutcome.RUNNING
    window_start: datetime
    window_end: datetime
    rows_written: int = 0
    pages: int = 0
    message: str | None = None


class ConnectionStatus(BaseModel):
    """What ``status`` shows for one connection."""

    model_config = ConfigDict(defer_build=True)

    name: str
    connector: str
    account: str | None
    state: ConnectionState
    reason: str | None
    last_sync: datetime | None
    last_success: datetime | None
    watermark: datetime | None
    next_sync: datetime | None
    rows: int
    sinks: dict[str, int] = Field(default_factory=dict, description="Undelivered payloads per sink.")
    facts: dict[str, str] = Field(
        default_factory=dict,
        description="What the connector learned about the vendor account in its syncs, as label: text "
        "(e.g. which cost source it reads); empty until a sync taught it something worth showing.",
    )


class SinkRecord(BaseModel):
    """A sink configured on a connection: where committed rows (and alerts) are delivered."""

    model_config = ConfigDict(defer_build=True)

    connection: str
    name: str
    kind: str
    config: dict[str, Any]
    created_at: datetime


class OutboxItem(BaseModel):
    """A payload waiting for delivery to one sink; delivered at least once, in order, then removed."""

    model_config = ConfigDict(defer_build=True)

    id: int
    connection: str
    sink: str
    payload: str
    created_at: datetime
    attempts: int = 0
    next_attempt_at: datetime
    last_error: str | None = None


class Budget(BaseModel):
    """A monthly budget on a connection, optionally narrowed to one API key label or model."""

    model_config = ConfigDict(defer_build=True)

    id: int
    connection: str
    api_key_label: str | None = None
    model: str | None = None
    monthly_amount: Decimal
    currency: str = "USD"
    thresholds: list[int] = Field(default_factory=lambda: [50, 80, 100])
    anomaly: bool = False
    created_at: datetime

    @property
    def scope(self) -> str:
        parts = [
            p for p in (self.api_key_label and f"key {self.api_key_label}", self.model and f"model {self.model}") if p
        ]
        return ", ".join(parts) or "all usage"


class Alert(BaseModel):
    """A budget threshold crossed or an anomalous day, recorded once with the figures that triggered it."""

    model_config = ConfigDict(defer_build=True)

    id: int | None = None
    connection: str
    budget_id: int | None
    kind: str
    dedupe_key: str
    fired_at: datetime
    message: str
    evidence: dict[str, Any]


class ListedKey(BaseModel):
    """One key as a vendor's key listing names it (:meth:`Connector.list_keys`), verbatim where the vendor says.

    ``scope`` is the vendor's word for what the key may do, lower case (``admin``, ``api``, ``project``,
    ``workspace``); ``admin`` matters to the host, which flags an admin key's own traffic. ``owner`` is who the vendor
    says owns or created the key (a user's name, e-mail or a service account), ``owner_active`` ``False`` when the
    vendor says that owner no longer has access, ``None`` when it does not say. ``listing`` names the listing the key
    came from (``fal /keys``), the evidence a finding quotes. Never carries a secret.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    key_id: str = Field(min_length=1)
    name: str | None = None
    scope: str | None = None
    owner: str | None = None
    owner_email: str | None = None
    owner_type: str | None = None
    owner_active: bool | None = None
    workspace_id: str | None = None
    workspace_name: str | None = None
    created_at: datetime | None = None
    last_used_at: datetime | None = None
    status: str = "active"
    listing: str

    @field_validator("created_at", "last_used_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        # A naive time would be read as the host's local time: a key's age and idleness off by the UTC offset.
        if value is not None and value.tzinfo is None:
            raise ValueError("a listed key's times are aware (UTC), not naive")
        return value


OWN_KEY_LISTING = "the connection's own Admin key"
"""The ``listing`` of a key that no vendor listing names but the connection reads with, listed by its connector
(fal bills its Admin key's own traffic, yet ``/keys`` names API-scope keys only). The host uses it at every sync:
it is never idle."""


KeyEventKind = Literal["listed", "renamed", "gone", "returned", "changed"]


class KeyEvent(BaseModel):
    """One change in a key's history on a connection: never deleted, the evidence behind findings."""

    model_config = ConfigDict(defer_build=True)

    connection: str
    key_id: str
    at: datetime
    event: KeyEventKind
    detail: dict[str, Any] = Field(default_factory=dict)


class KeyRecord(BaseModel):
    """A key in the inventory: what the last listing said, its history, and its spend from the rows.

    A key some row names but no listing ever did has ``listed=False`` and ``first_listed_at`` null. Spend counts cost
    rows only; ``*_usage_at`` counts any row (usage rows too). ``last_used_at`` is the vendor's, when it gives one.
    """

    model_config = ConfigDict(defer_build=True)

    connection: str
    connector: str
    key_id: str
    name: str | None
    scope: str | None = None
    owner: str | None = None
    owner_email: str | None = None
    owner_type: str | None = None
    owner_active: bool | None = None
    workspace_id: str | None = None
    workspace_name: str | None = None
    created_at: datetime | None = None
    last_used_at: datetime | None = None
    status: str | None = None
    listing: str | None = None
    listed: bool = False
    first_seen_at: datetime | None = None
    first_listed_at: datetime | None = None
    last_listed_at: datetime | None = None
    gone_at: datetime | None = None
    first_usage_at: datetime | None = None
    last_usage_at: datetime | None = None
    spend_7d: Decimal = Decimal(0)
    spend_30d: Decimal = Decimal(0)
    currency: str | None = None

    @property
    def listing_status(self) -> Literal["listed", "gone", "never listed"]:
        """Where the vendor's listings stand on the key: ``listed`` now, ``gone`` from them, or ``never listed``
        (rows bill it, no listing ever named it)."""
        if self.listed:
            return "listed"
        return "gone" if self.first_listed_at is not None else "never listed"


#: Who web-UI spend (rows no API key accounts for) is when the vendor names no one: fal's own word for it.
USER_KEY = "User key"


class Severity(StrEnum):
    """How urgent a finding is, in rising order (``--fail-on`` compares them)."""

    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"

    @property
    def rank(self) -> int:
        return list(Severity).index(self)


class FindingKind(StrEnum):
    """What a finding is about; the README's "Finding shadow AI spend" table says what each means and what to do."""

    UNLISTED_KEY_SPEND = "unlisted_key_spend"
    NEW_KEY = "new_key"
    IDLE_KEY = "idle_key"
    WEB_UI_SPEND = "web_ui_spend"
    OWNER_GONE = "owner_gone"
    ADMIN_KEY_TRAFFIC = "admin_key_traffic"
    DUPLICATE_ACCOUNT = "duplicate_account"
    SPEND_SPIKE = "spend_spike"


class Finding(BaseModel):
    """A condition worth an admin's attention, opened once while it holds and resolved when it clears.

    ``subject`` is what it is about: a key id, a person (``login_username``, or ``User key`` when the vendor names no
    one) or an account. ``evidence`` holds the figures (money as decimal text, dates as ISO 8601, the listing).
    """

    model_config = ConfigDict(defer_build=True)

    id: int | None = None
    connection: str
    connector: str
    kind: FindingKind
    severity: Severity
    subject: str
    subject_label: str
    message: str
    evidence: dict[str, Any] = Field(default_factory=dict)
    opened_at: datetime
    updated_at: datetime | None = None
    resolved_at: datetime | None = None
    acknowledged_at: datetime | None = None
    ack_note: str | None = None

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None

    @property
    def state(self) -> Literal["open", "acknowledged", "resolved"]:
        """``acknowledged``: still open, an admin has seen it (``--fail-on`` no longer counts it)."""
        if not self.is_open:
            return "resolved"
        return "acknowledged" if self.acknowledged_at is not None else "open"


#: Finding kinds an admin's acknowledgement closes: a new key is news, and once seen it is no longer new. Other
#: kinds stay open, marked acknowledged, until their condition clears.
ACK_RESOLVES: frozenset[FindingKind] = frozenset({FindingKind.NEW_KEY})


class KeyListingInfo(BaseModel):
    """When a connection's keys were listed: its first listing (the baseline, which opens no new-key finding) and
    its last, and how many listings were recorded."""

    model_config = ConfigDict(defer_build=True)

    connection: str
    first_listed_at: datetime
    last_listed_at: datetime
    listings: int


class SpendLine(BaseModel):
    """One group of an overview (a vendor, a key, a person or a model) in one currency, this period and the one
    before it. ``change_percent`` is ``None`` when the previous period had nothing to compare with."""

    model_config = ConfigDict(defer_build=True)

    key: str
    label: str
    connector: str | None = None
    currency: str
    cost: Decimal
    previous_cost: Decimal
    change: Decimal
    change_percent: Decimal | None
    row_count: int = 0


class Overview(BaseModel):
    """Spend across every connection over ``[since, until)`` against ``[previous_since, since)``, by vendor, key,
    person and model, with the open findings (highest severity first).

    Money is per currency and never added across currencies. Each vendor account is counted once, from the
    connection whose rows are freshest (as :meth:`Host.report` counts it), so ``totals`` equal the report's.
    ``by_person`` is web-UI spend (rows no API key accounts for), named where the vendor names the person.
    """

    model_config = ConfigDict(defer_build=True)

    days: int
    since: datetime
    until: datetime
    previous_since: datetime
    connections: list[str]
    totals: list[SpendLine]
    by_vendor: list[SpendLine]
    by_key: list[SpendLine]
    by_person: list[SpendLine]
    by_model: list[SpendLine]
    open_findings: list[Finding]


class Price(BaseModel):
    model_config = ConfigDict(defer_build=True)

    model: str
    unit_price: Decimal
    unit: str
    currency: str
    fetched_at: datetime


class ReportLine(BaseModel):
    """One line of the spend report: an API key label of one connector, with its active models and billed cost.

    Only cost rows count: ``models`` are the models of the label's billed rows (a row without a model adds none)
    and ``row_count`` their number.
    """

    model_config = ConfigDict(defer_build=True)

    api_key_label: str
    models: list[str]
    cost: Decimal
    currency: str
    row_count: int
    connector: str = Field("", description="The connector (vendor) whose rows these are.")

    @field_validator("models", mode="before")
    @classmethod
    def _skip_null_models(cls, value: Any) -> Any:
        # A billed row may have no model (a vendor line item that names none): it adds cost, not a model.
        if isinstance(value, set | frozenset):
            return sorted(model for model in value if model is not None)
        if isinstance(value, list | tuple):
            return [model for model in value if model is not None]
        return value


class ManifestAuthentication(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    type: str
    header: str
    format: str
    required_scope: str
    secret_field: str
    env_var: str | None = Field(None, description="Environment variable the CLI reads the secret from.")
    setup_steps: list[str] = Field(min_length=1)
    help: str | None = Field(
        None,
        description="One line saying which key the connector needs and where it is made, starting with an article "
        "(\"an Admin key (sk-admin-...) that ...\"): the CLI's help and the portal's form and refusals quote it.",
    )
    key_example: str | None = Field(
        None, description="What a key looks like, e.g. KEY_ID:KEY_SECRET: the form's placeholder and the format hint."
    )
    key_pattern: str | None = Field(
        None,
        description="A regular expression the whole key (spaces around it trimmed) must match; a key that does not is "
        "refused before the vendor is asked. Loose on purpose: the vendor, not the pattern, says whether it works.",
    )

    @field_validator("key_pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"key_pattern is not a regular expression: {error}") from None
        return value


class ManifestDataSet(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    name: str
    description: str
    dimensions: list[str]
    measures: list[str]


class Manifest(BaseModel):
    """What an admin portal needs to offer a connector and configure a connection of it."""

    model_config = ConfigDict(defer_build=True)

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    id: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    display_name: str
    vendor: str
    description: str
    version: str
    category: str
    homepage: str | None = None
    authentication: ManifestAuthentication
    config_schema: dict[str, Any]
    poll_interval_seconds: int = Field(gt=0)
    data_collected: list[ManifestDataSet] = Field(min_length=1)
    labels: dict[str, str] = Field(default_factory=dict)
    limitations: list[str] = Field(default_factory=list)
    permissions: dict[str, Any]
    initial_sync: str

    @field_validator("permissions")
    @classmethod
    def _read_only(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("read_only") is not True:
            raise ValueError("connectors collect spend read-only: permissions.read_only must be true")
        return value

    @property
    def settings(self) -> list[str]:
        """The names of the connector's config fields, in schema order."""
        return list(self.config_schema.get("properties") or {})

    def key_problem(self, key: str) -> str | None:
        """Why ``key`` cannot be one of this connector's keys, in one line that never repeats it; ``None`` when its
        shape fits (or the manifest gives no pattern)."""
        auth = self.authentication
        if auth.key_pattern is None or re.fullmatch(auth.key_pattern, key.strip()):
            return None
        schema = (self.config_schema.get("properties") or {}).get(auth.secret_field) or {}
        title = schema.get("title") or auth.secret_field.replace("_", " ")
        example = f" ({auth.key_example})" if auth.key_example else ""
        return f"the {title} is not in {self.display_name}'s key format{example}; copy the whole key, nothing else"
