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
from connector_sdk.models import Connection, ConnectionState, ConnectionStatus, Manifest, ReportLine, UsageRow
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
