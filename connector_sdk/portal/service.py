"""What the API and the pages both do with the host, written once: the portal's single path to the store."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from pydantic import ValidationError

from connector_sdk.errors import ConnectorHostError, CredentialError, SyncInProgress, UnknownConnection, Unreachable
from connector_sdk.host import NAME_PATTERN, Host
from connector_sdk.models import (
    Connection,
    ConnectionState,
    ConnectionStatus,
    Finding,
    FindingKind,
    KeyEvent,
    KeyRecord,
    Manifest,
    ReportLine,
    Severity,
    UsageRow,
    floor_hour,
)
from connector_sdk.portal.forms import field_errors, form_fields
from connector_sdk.portal.jobs import SyncJob, SyncJobs

STATE_LABELS = {
    ConnectionState.CONNECTED: "Connected",
    ConnectionState.SYNCING: "Syncing",
    ConnectionState.RECONNECT_REQUIRED: "Reconnect required",
    ConnectionState.ERROR: "Error",
    ConnectionState.DISCONNECTED: "Disconnected",
}
USER_KEY = "User key"
# Far longer than any vendor's key (they are under 200 characters): a longer one is refused before any vendor call.
MAX_SECRET_LENGTH = 1024
CURRENCY_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£"}


class PortalError(ConnectorHostError):
    """An error answered with HTTP ``status``; ``fields`` says which form fields are wrong and why."""

    def __init__(
        self, message: str, *, status: int = 422, fields: dict[str, str] | None = None, kind: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.fields = fields or {}
        self.kind = kind


# A vendor host that cannot be reached while a new key is checked: one answer for the form and the API.
UNREACHABLE_STATUS = 502


class NotFound(PortalError):
    def __init__(self, message: str) -> None:
        super().__init__(message, status=404)


def money(value: Decimal | None, currency: str | None = "USD") -> str:
    """``$1,234.57``: rounded half-up to cents, for people (exports keep every digit); a dash for no money (a usage
    row counts quantities only)."""
    if value is None:
        return "—"
    currency = currency or ""
    cents = value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    symbol = CURRENCY_SYMBOLS.get(currency)
    sign = "-" if cents < 0 else ""
    return f"{sign}{symbol}{abs(cents):,.2f}" if symbol else f"{cents:,.2f} {currency}"


# -- connectors and connections ------------------------------------------------------------------------------------
def manifests(host: Host) -> list[Manifest]:
    return [host.plugins.connector(cid).manifest() for cid in sorted(host.plugins.connectors)]


def manifest(host: Host, connector_id: str) -> Manifest:
    if connector_id not in host.plugins.connectors:
        raise NotFound(f"There is no connector named {connector_id!r}. The catalog lists the ones installed.")
    return host.plugins.connector(connector_id).manifest()


def connection(host: Host, name: str) -> Connection:
    """The stored connection; a name that cannot exist is answered like an unknown one, without a store query."""
    if not NAME_PATTERN.match(name):
        raise NotFound(f"There is no connection named {name!r}.")
    try:
        return host.store.get_connection(name)
    except UnknownConnection:
        raise NotFound(f"There is no connection named {name!r}.") from None


def status(host: Host, jobs: SyncJobs, conn: Connection) -> ConnectionStatus:
    """The host's status, showing "syncing" too while a sync this portal started waits for its lease."""
    current = host.status(conn)
    if current.state != ConnectionState.SYNCING and jobs.active(conn.name) is not None:
        return current.model_copy(update={"state": ConnectionState.SYNCING})
    return current


def _config_errors(host: Host, connector_id: str, values: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    model = host.plugins.connector(connector_id).config_model
    too_long = {
        k: f"This is longer than any real key ({MAX_SECRET_LENGTH} characters at most); paste the key alone."
        for k in model.secret_field_names()
        if isinstance(values.get(k), str) and len(values[k]) > MAX_SECRET_LENGTH
    }
    if too_long:
        return too_long, []
    # JSON's NaN and Infinity arrive as floats (a form's as text); a range check would call them "not less than 600".
    numbers = {f.name for f in form_fields(model.model_json_schema()) if f.kind == "number"}
    not_numbers = {
        k: "Not a number: NaN and Infinity are not numbers."
        for k, v in values.items()
        if (isinstance(v, float) and not math.isfinite(v))
        or (k in numbers and isinstance(v, str) and v.strip().lower().lstrip("+-") in ("nan", "inf", "infinity"))
    }
    if not_numbers:
        return not_numbers, []
    # The key's shape in the manifest's words (the format it should have), before the config model's own check.
    manifest = host.plugins.connector(connector_id).manifest()
    secret_field = manifest.authentication.secret_field
    problem = manifest.key_problem(values[secret_field]) if isinstance(values.get(secret_field), str) else None
    key_error = {secret_field: problem[0].upper() + problem[1:] + "."} if problem else {}
    try:
        model.model_validate(values)
    except ValidationError as error:
        fields, general = field_errors(error, set(model.model_fields))
        return fields | key_error, general
    return key_error, []


def _refused(host: Host, connector_id: str, error: CredentialError) -> PortalError:
    secret = host.plugins.connector(connector_id).manifest().authentication.secret_field
    return PortalError(str(error), fields={secret: str(error)}, kind=error.kind)


def create_connection(
    host: Host, jobs: SyncJobs, connector_id: str, name: str, values: dict[str, Any]
) -> SyncJob | None:
    """Validate the config, check the key with the vendor, store the connection and start its first sync."""
    manifest(host, connector_id)
    fields: dict[str, str] = {}
    if not NAME_PATTERN.match(name or ""):
        fields["name"] = "Use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit."
    config_fields, general = _config_errors(host, connector_id, values)
    fields.update(config_fields)
    if "name" not in fields:
        try:
            host.store.get_connection(name)
        except UnknownConnection:
            pass
        else:
            taken = f"A connection named {name!r} already exists; choose another name."
            raise PortalError(taken, status=409, fields={"name": taken, **fields})
    if fields or general:
        problems = "; ".join([f"{k}: {v}" for k, v in fields.items()] + general)
        raise PortalError(f"Please correct the highlighted fields ({problems}).", fields=fields)
    try:
        host.connect(connector_id, name, values)
    except CredentialError as error:
        raise _refused(host, connector_id, error) from None
    except Unreachable as error:  # the same answer, at once, from the form and the API (documented: 502)
        raise PortalError(str(error), status=UNREACHABLE_STATUS) from None
    return _first_sync(jobs, name)


def _first_sync(jobs: SyncJobs, name: str) -> SyncJob | None:
    """Start the sync a new or reconnected connection is due for; ``None`` if the scheduler took it first."""
    try:
        return jobs.start(name)
    except SyncInProgress:
        return None


def reconnect(host: Host, jobs: SyncJobs, name: str, secrets: dict[str, Any]) -> SyncJob | None:
    """Check a new key, put the connection back to connected, and start the sync that fills the gap."""
    conn = connection(host, name)
    secret_names = host.plugins.connector(conn.connector).config_model.secret_field_names()
    fields = {k: "Only the connector's key can be replaced here." for k in secrets if k not in secret_names}
    for k in secret_names:
        if not isinstance(secrets.get(k), str) or not secrets[k].strip():
            fields[k] = "Paste the new key."
    if not fields:
        config_fields, general = _config_errors(host, conn.connector, {**conn.config, **secrets})
        fields = {k: v for k, v in config_fields.items() if k in secret_names}
        if not fields and (config_fields or general):
            problems = [f"{k}: {v}" for k, v in config_fields.items()] + general
            raise PortalError("The stored configuration no longer validates: " + "; ".join(problems))
    if fields:
        raise PortalError("Please correct the highlighted fields.", fields=fields)
    if jobs.active(name) is not None or host.store.lease_holder(name, now=host.now()) is not None:
        raise PortalError("A sync of this connection is running; reconnect when it has finished.", status=409)
    try:
        host.reconnect(name, secrets)
    except CredentialError as error:
        raise _refused(host, conn.connector, error) from None
    except Unreachable as error:  # as for a new connection: at once, documented, and nothing changed
        raise PortalError(
            str(error).replace("nothing was stored", "nothing was changed"), status=UNREACHABLE_STATUS
        ) from None
    return _first_sync(jobs, name)


def start_sync(host: Host, jobs: SyncJobs, name: str) -> SyncJob:
    conn = connection(host, name)
    if conn.state == ConnectionState.DISCONNECTED:
        raise PortalError(f"{name} is disconnected; reconnect it with a key to sync again.", status=409)
    if conn.state == ConnectionState.RECONNECT_REQUIRED:
        raise PortalError(f"{name} needs a new key before it can sync: {conn.reason}", status=409)
    return jobs.start(name)


def disconnect(host: Host, jobs: SyncJobs, name: str, *, purge: bool) -> int:
    """Delete the credential (and with ``purge`` the rows and the connection); returns the rows it had."""
    connection(host, name)
    if jobs.active(name) is not None or host.store.lease_holder(name, now=host.now()) is not None:
        raise PortalError("A sync of this connection is running; disconnect it when the sync has finished.", status=409)
    rows = host.store.count_rows(name)
    host.disconnect(name, purge=purge)
    return rows


# -- rows and spend ------------------------------------------------------------------------------------------------
def parse_moment(value: str | None, field_name: str) -> datetime | None:
    """An ISO 8601 date or timestamp (UTC when it names no offset)."""
    if value is None or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise PortalError(
            f"{field_name}: {value!r} is not an ISO 8601 date or timestamp, e.g. 2026-01-31 or 2026-01-31T10:00:00Z",
            fields={field_name: "Use an ISO 8601 date or timestamp."},
        ) from None


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    try:
        return start, start + timedelta(days=1)
    except OverflowError:
        return start, datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True)
class RowFilter:
    """Rows with ``since <= period_start < until``, of one API key label and one model when given."""

    since: datetime | None = None
    until: datetime | None = None
    key_label: str | None = None
    model: str | None = None


@dataclass
class RowsPage:
    rows: list[UsageRow]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))


def rows_page(
    host: Host,
    name: str,
    row_filter: RowFilter,
    *,
    page: int,
    per_page: int,
    within: tuple[datetime, datetime] | None = None,
    order: str = "hour",
    clamp: bool = False,
) -> RowsPage:
    """One page of the rows ``row_filter`` selects (inside ``within`` when given), filtered, ordered (``order``
    as the store's ``rows_page`` takes it) and counted by the store. With ``clamp`` a page past the last is the
    last."""
    connection(host, name)
    since, until = row_filter.since, row_filter.until
    if within is not None:
        since = within[0] if since is None else max(since, within[0])
        until = within[1] if until is None else min(until, within[1])

    def fetch(number: int) -> tuple[list[UsageRow], int]:
        return host.store.rows_page(
            name,
            since=since,
            until=until,
            api_key_label=row_filter.key_label,
            model=row_filter.model,
            offset=(number - 1) * per_page,
            limit=per_page,
            order=order,
        )

    rows, total = fetch(page)
    last = max(1, math.ceil(total / per_page))
    if clamp and page > last:
        page = last
        rows, total = fetch(page)
    return RowsPage(rows=rows, total=total, page=page, per_page=per_page)


def daily_by_label(
    host: Host, name: str, *, since: datetime, until: datetime, currency: str
) -> dict[str, dict[date, Decimal]]:
    """Cost per API key label and UTC day, in one currency: what the dashboard's chart stacks."""
    spend = host.store.daily_spend_by_label(name, since=since, until=until, currency=currency)
    return {label: {date.fromisoformat(day): cost for day, cost in days.items()} for label, days in spend.items()}


def days_between(since: datetime, until: datetime) -> list[date]:
    last = (until - timedelta(microseconds=1)).date()
    days, day = [], since.date()
    while day <= last:
        days.append(day)
        day += timedelta(days=1)
    return days


def totals(lines: list[ReportLine]) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for line in lines:
        out[line.currency] = out.get(line.currency, Decimal(0)) + line.cost
    return out


def main_currency(lines: list[ReportLine]) -> str:
    by_currency = totals(lines)
    return max(by_currency, key=lambda c: by_currency[c]) if by_currency else "USD"


# -- the key inventory and the findings ----------------------------------------------------------------------------
SEVERITY_LABELS = {
    Severity.HIGH: "High",
    Severity.MEDIUM: "Medium",
    Severity.LOW: "Low",
    Severity.INFO: "Info",
}
FINDING_TITLES = {
    FindingKind.UNLISTED_KEY_SPEND: "Spend from a key no listing names",
    FindingKind.NEW_KEY: "New key",
    FindingKind.IDLE_KEY: "Idle key",
    FindingKind.WEB_UI_SPEND: "Web-UI spend by a person",
    FindingKind.OWNER_GONE: "Owner gone",
    FindingKind.ADMIN_KEY_TRAFFIC: "Admin key used for traffic",
    FindingKind.DUPLICATE_ACCOUNT: "Same account connected twice",
    FindingKind.SPEND_SPIKE: "New model or sudden spend",
}
# The keys page's columns a person can sort by, and each one's words in the table head.
KEY_SORTS = {
    "name": "Key",
    "connection": "Connection",
    "owner": "Owner",
    "scope": "Scope",
    "status": "Status",
    "last_used": "Last used",
    "spend_7d": "7 days",
    "spend_30d": "30 days",
}
DEFAULT_KEY_SORT = "-spend_30d"
MAX_NOTE_LENGTH = 2000
# Evidence fields that hold money (decimal text in the finding's currency), shown first and as money.
MONEY_WORDS = ("spend", "cost", "amount", "threshold", "baseline", "limit")
# Finding ids are the store's 64-bit integers: a larger one is no finding, answered 404 without a query.
MAX_FINDING_ID = 2**63 - 1


def period(host: Host, days: int) -> tuple[datetime, datetime]:
    """The last ``days`` up to the end of the current hour: the window the report and the overview use."""
    until = floor_hour(host.now()) + timedelta(hours=1)
    return until - timedelta(days=days), until


def key_status(record: KeyRecord) -> tuple[str, str]:
    """A key's state as a badge says it, ``(state, words)``: billed but never listed, gone from the listing, or
    what the vendor's listing says of it."""
    if not record.listed:
        return "unlisted", "Never listed"
    if record.gone_at is not None:
        return "gone", "Gone from listing"
    status = (record.status or "active").strip().lower()
    return ("active", "Active") if status == "active" else ("inactive", status.replace("_", " ").capitalize())


def key_last_used(record: KeyRecord) -> datetime | None:
    """When the key was last used: the vendor's word when it gives one, else the last row that names the key."""
    moments = [m for m in (record.last_used_at, record.last_usage_at) if m is not None]
    return max(moments) if moments else None


def key_label(record: KeyRecord) -> str:
    return record.name or record.key_id


def _sort_value(record: KeyRecord, column: str) -> Any:
    if column == "name":
        return key_label(record).casefold()
    if column == "connection":
        return record.connection.casefold()
    if column == "owner":
        return (record.owner or record.owner_email or "").casefold() or None
    if column == "scope":
        return (record.scope or "").casefold() or None
    if column == "status":
        return key_status(record)[1].casefold()
    if column == "last_used":
        return key_last_used(record)
    if column == "spend_7d":
        return record.spend_7d
    return record.spend_30d


def sort_keys(records: list[KeyRecord], order: str) -> list[KeyRecord]:
    """``order`` is a :data:`KEY_SORTS` column, ``-`` first for descending; keys without the value (no owner, never
    used) come last either way, and ties go by connection and key id so the order is the same on every reload."""
    column = order.removeprefix("-")
    if column not in KEY_SORTS:
        raise PortalError(f"sort: {order!r} is not one of {', '.join(KEY_SORTS)} (with '-' for descending)")
    descending = order.startswith("-")
    tie = sorted(records, key=lambda r: (r.connection, r.key_id))
    known = [r for r in tie if _sort_value(r, column) is not None]
    unknown = [r for r in tie if _sort_value(r, column) is None]
    return sorted(known, key=lambda r: _sort_value(r, column), reverse=descending) + unknown


def search_keys(records: list[KeyRecord], term: str) -> list[KeyRecord]:
    """The keys whose name, id, owner, owner's e-mail, connection, vendor, scope or workspace contains ``term``
    (case-insensitive)."""
    wanted = term.strip().casefold()
    if not wanted:
        return records

    def haystack(r: KeyRecord) -> str:
        fields = (r.name, r.key_id, r.owner, r.owner_email, r.connection, r.connector, r.scope, r.workspace_name)
        return "\x1f".join(f for f in fields if f).casefold()

    return [r for r in records if wanted in haystack(r)]


def key_record(host: Host, name: str, key_id: str) -> KeyRecord:
    """One key of a connection's inventory; 404 for a connection or a key it does not have."""
    connection(host, name)
    found = next((r for r in host.keys(name) if r.key_id == key_id), None)
    if found is None:
        raise NotFound(f"{name} has no key {key_id!r} in its inventory.")
    return found


def daily_by_key(
    host: Host, name: str | None, *, since: datetime, until: datetime
) -> dict[tuple[str, str, str], dict[date, Decimal]]:
    """Billed cost per ``(connection, key id, currency)`` and UTC day, in one store query: the keys' sparklines."""
    by = ("connection", "api_key_id", "currency", "day")
    grouped = host.store.grouped_spend(name, since=since, until=until, by=by)
    out: dict[tuple[str, str, str], dict[date, Decimal]] = {}
    for (conn, key_id, currency, day), (_, cost) in grouped.items():
        if key_id is None or currency is None:
            continue
        out.setdefault((conn, key_id, currency), {})[date.fromisoformat(str(day)[:10])] = cost
    return out


def key_rows(host: Host, record: KeyRecord, *, since: datetime, until: datetime, page: int, per_page: int) -> RowsPage:
    """The rows that name the key, newest first, one page of them.

    The store filters rows by label, not by key id, so this reads the rows of each label the key's rows carried in
    the window and keeps the key's own: a label two keys share (a rename) cannot mix their rows.
    """
    labels = host.store.grouped_spend(record.connection, since=since, until=until, by=("api_key_id", "api_key_label"))
    mine = sorted({label for key_id, label in labels if key_id == record.key_id})
    rows = [
        row
        for label in mine
        for row in host.store.iter_rows(record.connection, since=since, until=until, api_key_label=label)
        if row.api_key_id == record.key_id
    ]
    rows.sort(key=lambda r: (r.period_start, r.row_id), reverse=True)
    last = max(1, math.ceil(len(rows) / per_page))
    page = min(page, last)
    return RowsPage(rows=rows[(page - 1) * per_page : page * per_page], total=len(rows), page=page, per_page=per_page)


def finding(host: Host, finding_id: int) -> Finding:
    if not 1 <= finding_id <= MAX_FINDING_ID:
        raise NotFound(f"There is no finding {finding_id}.")
    try:
        return host.store.get_finding(finding_id)
    except ConnectorHostError:
        raise NotFound(f"There is no finding {finding_id}.") from None


def acknowledge(host: Host, finding_id: int, note: str) -> Finding:
    """Acknowledge a finding with an admin's note (why it is fine, or what was done): 404 for no such finding, 422
    for an empty or overlong note."""
    text = note.strip()
    if not text:
        raise PortalError("Say in a note why this is fine or what was done.", fields={"note": "Write a note."})
    if len(text) > MAX_NOTE_LENGTH:
        too_long = f"Keep the note under {MAX_NOTE_LENGTH} characters."
        raise PortalError(too_long, fields={"note": too_long})
    finding(host, finding_id)
    return host.acknowledge_finding(finding_id, text)


def is_money(field: str) -> bool:
    """Whether an evidence field holds money: ``spend_30d`` and ``baseline_median`` do, ``baseline_days`` does not."""
    return any(word in field for word in MONEY_WORDS) and not field.endswith("days")


def _evidence_value(key: str, value: Any, currency: str | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_evidence_value(key, v, currency) for v in value) or "—"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_evidence_value(str(k), v, currency)}" for k, v in value.items()) or "—"
    text = str(value)
    if is_money(key):
        try:
            return money(Decimal(text), currency or "USD")
        except (ArithmeticError, ValueError):
            return text
    if len(text) >= 10 and text[4:5] == "-" and text[7:8] == "-":
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return text
        if len(text) == 10:
            return moment.strftime("%d %b %Y")
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
        return moment.strftime("%d %b %Y, %H:%M UTC")
    return text


def evidence_items(item: Finding) -> list[tuple[str, str]]:
    """A finding's evidence as ``(words, value)`` pairs for a page: the money first, then the rest in the order the
    engine wrote it; money as money, dates as dates. What the vendor did not say, and the subject the finding
    already names (its key id, its name), are left out."""
    raw = item.evidence.get("currency")
    currency = raw if isinstance(raw, str) else None
    named = {item.subject, item.subject_label}
    present = [
        (str(k), v)
        for k, v in item.evidence.items()
        if k != "currency" and v not in (None, "", [], {}) and not (isinstance(v, str) and v in named)
    ]
    present.sort(key=lambda kv: not is_money(kv[0]))
    return [(key.replace("_", " ").capitalize(), _evidence_value(key, value, currency)) for key, value in present]


def event_items(event: KeyEvent) -> list[tuple[str, str]]:
    """What a history event says of the key, in words, dates as dates; ``baseline`` is said by the event's name."""
    return [
        (str(k).replace("_", " ").capitalize(), _evidence_value(str(k), v, None))
        for k, v in event.detail.items()
        if k != "baseline" and v not in (None, "", [], {})
    ]


def key_targets(records: list[KeyRecord], counted: list[str]) -> dict[tuple[str | None, str], tuple[str, str]]:
    """Where an overview's key line leads: ``(connector, key id)`` to ``(connection, key id)``. The overview groups
    keys by vendor, not by connection; a key two connections to one account both list leads to the connection whose
    rows the overview counts."""
    targets: dict[tuple[str | None, str], tuple[str, str]] = {}
    for record in sorted(records, key=lambda r: (r.connection not in counted, r.connection)):
        targets.setdefault((record.connector, record.key_id), (record.connection, record.key_id))
    return targets
