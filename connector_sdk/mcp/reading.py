"""The questions the MCP tools answer, asked of the host's store: the same rows `report` and `rows` read.

Money comes only from billed rows (``kind == "cost"``); usage rows count quantities and never add money. Across
connections, a vendor account that several connections reach is read once, as :meth:`Host.report` does. Grouping by
any dimension reads the period's rows once, bounded by :data:`MAX_ROWS_SCANNED`, summing exact ``Decimal``s.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from connector_sdk.budgets import month_start, next_month
from connector_sdk.errors import ConfigError, UnknownConnection
from connector_sdk.host import Host
from connector_sdk.mcp.answers import (
    AlertLine,
    Amount,
    BudgetLine,
    BudgetStatusAnswer,
    ConnectionLine,
    ConnectionsAnswer,
    FindingLine,
    FindingsAnswer,
    KeyLine,
    KeysAnswer,
    Period,
    SpendAnswer,
    Spender,
    SpendLine,
    TopSpendersAnswer,
    UsageRowsAnswer,
)
from connector_sdk.models import FindingKind, Overview, Severity, UsageRow, floor_hour, iso

DEFAULT_DAYS = 30
MAX_DAYS = 3660  # as `report --days`: ten years
MAX_ROWS_SCANNED = 2_000_000
ROWS_CAP = 200
MAX_TOP = 100
MAX_LINES = 500  # keys or findings in one answer
DIMENSIONS = ("vendor", "connection", "key", "person", "model", "day")
RANKED = ("key", "person", "model")


class Question(ConfigError):
    """An argument the tools cannot answer: said in one line, as a tool error."""


@dataclass(frozen=True)
class Filters:
    vendor: str | None = None
    connection: str | None = None
    key: str | None = None
    person: str | None = None
    model: str | None = None

    def given(self) -> dict[str, str]:
        return {name: value for name, value in self.__dict__.items() if value is not None}

    def keeps(self, row: UsageRow) -> bool:
        return all(value is None or _value(row, name) == value for name, value in self.given().items())


def _value(row: UsageRow, dimension: str) -> str | None:
    if dimension == "vendor":
        return row.connector
    if dimension == "connection":
        return row.connection
    if dimension == "key":
        return row.api_key_label
    if dimension == "person":
        return row.login_username
    if dimension == "model":
        return row.model
    return row.period_start.strftime("%Y-%m-%d")


def _moment(text: str, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise Question(f"{name}: {text[:40]!r} is not an ISO 8601 date or timestamp (e.g. 2026-11-01)") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def period(host: Host, since: str | None, until: str | None, days: int | None) -> Period:
    """``since``/``until`` as given, or the last ``days`` (30 by default) up to the end of the current hour, as
    ``report`` counts them; a period backwards, empty or longer than ten years is refused."""
    if days is not None and (since is not None):
        raise Question("give either days or since/until, not both")
    if days is not None and not 1 <= days <= MAX_DAYS:
        raise Question(f"days must be between 1 and {MAX_DAYS} (got {days})")
    end = _moment(until, "until") if until is not None else floor_hour(host.now()) + timedelta(hours=1)
    start = _moment(since, "since") if since is not None else end - timedelta(days=days or DEFAULT_DAYS)
    if start >= end:
        raise Question(f"since ({iso(start)}) must be before until ({iso(end)}): until is the first instant left out")
    if end - start > timedelta(days=MAX_DAYS):
        raise Question(f"a period of at most {MAX_DAYS} days can be asked for (got {(end - start).days} days)")
    return Period(since=start, until=end)


def connections(host: Host, name: str | None, vendor: str | None = None) -> list[str]:
    """The connections to read: the one named, or all of them with each shared vendor account read once."""
    if vendor is not None:
        known_vendors = sorted({*host.plugins.connectors, *(c.connector for c in host.store.list_connections())})
        if vendor not in known_vendors:
            listed = ", ".join(known_vendors) or "none"
            raise Question(f"there is no vendor {vendor[:40]!r}: filter by a connector id ({listed})")
    if name is not None:
        try:
            host.store.get_connection(name)
        except UnknownConnection:
            known = ", ".join(c.name for c in host.store.list_connections()) or "none"
            raise Question(f"there is no connection named {name[:64]!r} (connections: {known})") from None
        return [name]
    left_out = {other for shared in host.shared_accounts() for other in shared.merged}
    return [c.name for c in host.store.list_connections() if c.name not in left_out]


def _merged_notes(host: Host, name: str | None) -> list[str]:
    if name is not None:
        return []
    return [
        f"{shared.connector} account {shared.account} is reached by {shared.counted} and {', '.join(shared.merged)}: "
        f"counted once, from {shared.counted}'s rows"
        for shared in host.shared_accounts()
    ]


def _rows(host: Host, names: list[str], window: Period, filters: Filters) -> Iterator[UsageRow]:
    scanned = 0
    for name in names:
        for row in host.store.iter_rows(
            name, since=window.since, until=window.until, api_key_label=filters.key, model=filters.model
        ):
            scanned += 1
            if scanned > MAX_ROWS_SCANNED:
                raise Question(
                    f"more than {MAX_ROWS_SCANNED:,} rows in this period: ask for a shorter period or a connection"
                )
            if filters.keeps(row):
                yield row


def _check_dimensions(group_by: list[str]) -> None:
    unknown = [d for d in group_by if d not in DIMENSIONS]
    if unknown:
        raise Question(f"cannot group by {unknown[0][:40]!r}: group by any of {', '.join(DIMENSIONS)}")


def list_connections(host: Host) -> ConnectionsAnswer:
    counted = set(connections(host, None))
    lines = []
    for status in host.statuses():
        try:
            vendor = host.plugins.connector(status.connector).manifest().vendor
        except ConfigError:  # a connector whose plugin is not loaded here: its rows are still readable
            vendor = status.connector
        lines.append(
            ConnectionLine(
                name=status.name,
                connector=status.connector,
                vendor=vendor,
                account=status.account,
                state=status.state.value,
                reason=status.reason,
                last_sync=status.last_sync,
                last_success=status.last_success,
                next_sync=status.next_sync,
                rows=status.rows,
                counted_in_totals=status.name in counted,
            )
        )
    return ConnectionsAnswer(connections=lines, notes=_merged_notes(host, None))


def _sum(
    host: Host, names: list[str], window: Period, filters: Filters, group_by: list[str]
) -> tuple[dict[tuple[Any, ...], tuple[Decimal, int]], int]:
    """Billed cost and row count per (grouped values..., currency); and how many usage rows were left out."""
    sums: dict[tuple[Any, ...], tuple[Decimal, int]] = {}
    usage = 0
    for row in _rows(host, names, window, filters):
        if row.kind == "usage" or row.cost is None:
            usage += 1
            continue
        key = (*(_value(row, d) for d in group_by), row.currency or "")
        cost, count = sums.get(key, (Decimal(0), 0))
        sums[key] = (cost + row.cost, count + 1)
    return sums, usage


def spend(
    host: Host,
    *,
    since: str | None,
    until: str | None,
    days: int | None,
    group_by: list[str],
    filters: Filters,
) -> SpendAnswer:
    _check_dimensions(group_by)
    group_by = list(dict.fromkeys(group_by))
    window = period(host, since, until, days)
    names = connections(host, filters.connection, filters.vendor)
    sums, usage = _sum(host, names, window, filters, group_by)
    totals: dict[str, Decimal] = {}
    lines = []
    for key, (cost, count) in sums.items():
        currency = key[-1]
        totals[currency] = totals.get(currency, Decimal(0)) + cost
        group = dict(zip(group_by, key[:-1], strict=True))
        lines.append(SpendLine(group=group, currency=currency, cost=cost, rows=count))
    lines.sort(key=lambda line: (-line.cost, line.currency, [v or "" for v in line.group.values()]))
    notes = _merged_notes(host, filters.connection)
    if usage:
        notes.append(f"{usage} usage rows (quantities without money) are left out of every amount")
    return SpendAnswer(
        period=window,
        group_by=group_by,
        filters=filters.given(),
        totals=[Amount(currency=c, cost=v) for c, v in sorted(totals.items())],
        lines=lines,
        usage_rows_left_out=usage,
        connections=names,
        notes=notes,
    )


def top_spenders(
    host: Host,
    *,
    by: str,
    n: int,
    since: str | None,
    until: str | None,
    days: int | None,
    filters: Filters,
) -> TopSpendersAnswer:
    if by not in RANKED:
        raise Question(f"cannot rank by {by[:40]!r}: rank keys, people or models (key, person, model)")
    if not 1 <= n <= MAX_TOP:
        raise Question(f"n must be between 1 and {MAX_TOP} (got {n})")
    window = period(host, since, until, days)
    before = Period(since=window.since - (window.until - window.since), until=window.since)
    names = connections(host, filters.connection, filters.vendor)
    now, _ = _sum(host, names, window, filters, [by])
    then, _ = _sum(host, names, before, filters, [by])
    spenders = []
    for (who, currency), (cost, _count) in now.items():
        if by == "person" and who is None:
            continue  # spend without a login is no person's
        previous = then.get((who, currency), (Decimal(0), 0))[0]
        change = cost - previous
        percent = (change * 100 / previous).quantize(Decimal("0.1")) if previous else None
        spenders.append(
            Spender(
                name=who, currency=currency, cost=cost, previous_cost=previous, change=change, change_percent=percent
            )
        )
    spenders.sort(key=lambda s: (-s.cost, s.currency, s.name or ""))
    return TopSpendersAnswer(
        period=window,
        previous_period=before,
        by=by,
        spenders=spenders[:n],
        connections=names,
        notes=_merged_notes(host, filters.connection),
    )


def budget_status(host: Host, connection: str | None) -> BudgetStatusAnswer:
    if connection is not None:
        connections(host, connection)
    start = month_start(host.now())
    lines = []
    for budget in host.store.list_budgets(connection):
        daily = host.store.daily_spend(
            budget.connection,
            since=start,
            until=next_month(start),
            currency=budget.currency,
            api_key_label=budget.api_key_label,
            model=budget.model,
        )
        spent = sum(daily.values(), Decimal(0))
        lines.append(
            BudgetLine(
                id=budget.id,
                connection=budget.connection,
                scope=budget.scope,
                monthly_amount=budget.monthly_amount,
                currency=budget.currency,
                spent=spent,
                percent_used=(spent * 100 / budget.monthly_amount).quantize(Decimal("0.1")),
                thresholds=budget.thresholds,
                thresholds_reached=[t for t in budget.thresholds if spent >= budget.monthly_amount * t / 100],
            )
        )
    alerts = [
        AlertLine(connection=a.connection, budget_id=a.budget_id, kind=a.kind, fired_at=a.fired_at, message=a.message)
        for a in host.store.list_alerts(connection, limit=100)
        if a.fired_at >= start
    ]
    return BudgetStatusAnswer(month=start.strftime("%Y-%m"), budgets=lines, alerts=alerts)


def usage_rows(
    host: Host,
    *,
    since: str | None,
    until: str | None,
    days: int | None,
    filters: Filters,
    offset: int,
    limit: int,
) -> UsageRowsAnswer:
    if offset < 0 or limit < 1:
        raise Question("offset must be 0 or more and limit 1 or more")
    window = period(host, since, until, days)
    names = connections(host, filters.connection, filters.vendor)
    taken = min(limit, ROWS_CAP)
    page: list[dict[str, Any]] = []
    more = False
    if len(names) == 1 and filters.person is None and filters.vendor is None:
        # One connection: the store filters, skips and counts in the database, as the portal's rows screen does.
        rows, total = host.store.rows_page(
            names[0],
            since=window.since,
            until=window.until,
            api_key_label=filters.key,
            model=filters.model,
            offset=offset,
            limit=taken,
        )
        page = [{**row.export(), "kind": row.kind} for row in rows]
        more = offset + len(rows) < total
    else:
        for index, row in enumerate(_rows(host, names, window, filters)):
            if index < offset:
                continue
            if len(page) == taken:
                more = True
                break
            page.append({**row.export(), "kind": row.kind})
    notes = _merged_notes(host, filters.connection)
    if limit > ROWS_CAP:
        notes.append(f"at most {ROWS_CAP} rows are returned per call; page on with offset")
    return UsageRowsAnswer(
        period=window,
        filters=filters.given(),
        offset=offset,
        limit=taken,
        cap=ROWS_CAP,
        capped=limit > ROWS_CAP,
        more=more,
        rows=page,
        notes=notes,
    )


def _vendor_name(host: Host, connector: str) -> str:
    try:
        return host.plugins.connector(connector).manifest().display_name
    except ConfigError:  # a connector whose plugin is not loaded here: its keys are still readable
        return connector


def keys(host: Host, *, vendor: str | None, connection: str | None, key: str | None) -> KeysAnswer:
    """The inventory, highest 30-day spend first; with ``key`` (an id, or a name), that key and its history."""
    connections(host, connection, vendor)  # an unknown connection or vendor is said so
    # Every connection's keys, a shared account's too: each line names its connection, and a key listed by two
    # connections of one account is what the duplicate_account finding is about.
    found = host.keys(connection, vendor=vendor)
    if key is not None:
        found = [k for k in found if k.key_id == key] or [k for k in found if k.name == key]
        if not found:
            raise Question(f"no key has the id or name {key[:64]!r}: call keys without `key` to list them")
    found.sort(key=lambda k: (-k.spend_30d, k.connection, k.name or "", k.key_id))
    notes = []
    if len(found) > MAX_LINES:
        notes.append(f"{len(found)} keys: the first {MAX_LINES} are listed; narrow by vendor or connection")
    lines = [
        KeyLine(
            **k.model_dump(),
            vendor=_vendor_name(host, k.connector),
        )
        for k in found[:MAX_LINES]
    ]
    history = []
    if key is not None:
        for k in found:
            history += host.key_history(k.connection, k.key_id)
        history.sort(key=lambda event: event.at)
    return KeysAnswer(keys=lines, history=history, notes=notes)


def findings(
    host: Host,
    *,
    include_resolved: bool,
    kind: str | None,
    connection: str | None,
    min_severity: str | None,
) -> FindingsAnswer:
    """Findings, open first and most severe first, narrowed by kind, connection and least severity."""
    if kind is not None and kind not in {k.value for k in FindingKind}:
        raise Question(f"no finding kind {kind[:40]!r}: ask for one of {', '.join(k.value for k in FindingKind)}")
    if min_severity is not None and min_severity not in {s.value for s in Severity}:
        raise Question(f"no severity {min_severity[:40]!r}: ask for info, low, medium or high")
    connections(host, connection)
    least = Severity(min_severity).rank if min_severity else 0
    found = [
        f
        for f in host.findings(connection, open_only=not include_resolved, kind=FindingKind(kind) if kind else None)
        if f.severity.rank >= least
    ]
    counts: dict[str, int] = {}
    for f in found:
        if f.state == "open":
            counts[f.severity.value] = counts.get(f.severity.value, 0) + 1
    notes = []
    if len(found) > MAX_LINES:
        notes.append(f"{len(found)} findings: the first {MAX_LINES} are listed; narrow by kind or connection")
    lines = [FindingLine(**f.model_dump()) for f in found[:MAX_LINES]]
    return FindingsAnswer(findings=lines, open_by_severity=counts, notes=notes)


def overview(host: Host, *, days: int) -> Overview:
    if not 1 <= days <= MAX_DAYS:
        raise Question(f"days must be between 1 and {MAX_DAYS} (got {days})")
    return host.overview(days)
