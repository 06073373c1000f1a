"""From Anthropic's Admin API answers to normalized rows and key records: pure functions, no I/O.

Money arrives in cents: the cost analytics endpoint's ``amount``/``list_amount`` in fractional cents, the cost
report's ``amount`` as a decimal string of cents. Both become exact ``Decimal`` dollars by moving the decimal point
(``scaleb``), never by a division that could round.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from connector_sdk.errors import ResponseError
from connector_sdk.fields import bounded, json_list, json_number, json_object, optional_text, required_text
from connector_sdk.models import HOUR, ListedKey, SyncContext, UsageRow
from connector_sdk.paging import hour_of

USER_KEY_LABEL = "User key"
"""Usage no API key accounts for: Anthropic's Workbench (``api_key_id`` null)."""
DEFAULT_WORKSPACE_NAME = "Default workspace"
"""Anthropic reports the organization's default workspace as ``workspace_id`` null."""
ALL_KEYS_LABEL = "All keys"
"""The label of cost-report rows: that report has no per-key dimension, so the cost is every key's in the workspace."""
KEYS_LISTING = "Anthropic /organizations/api_keys"
BEYOND_CAP_LABEL = "Beyond the 100-group cap"
BEYOND_CAP_LINE_ITEM = "Spend Anthropic did not attribute: its cost buckets hold at most 100 groups"

USAGE_QUANTITIES: tuple[tuple[str, ...], ...] = (
    ("uncached_input_tokens",),
    ("cache_read_input_tokens",),
    ("cache_creation", "ephemeral_1h_input_tokens"),
    ("cache_creation", "ephemeral_5m_input_tokens"),
    ("output_tokens",),
    ("server_tool_use", "web_search_requests"),
)
"""Where each quantity of a usage result sits: cache writes are an object by TTL, not a flat field."""


def unit_of(path: tuple[str, ...]) -> str:
    """The row unit of a usage quantity: the cost report's ``token_type`` spelling, or the field's own name."""
    return ".".join(path) if path[0] == "cache_creation" else path[-1]


@dataclass(frozen=True)
class AnthropicKey:
    """One API key the organization listing names."""

    id: str
    name: str | None
    status: str | None
    workspace_id: str | None
    created_at: datetime | None
    created_by: str | None = None
    created_by_type: str | None = None
    scope: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.id


@dataclass
class Directory:
    """The organization's workspaces and keys, to name the ids usage and cost carry."""

    workspaces: dict[str, str | None] = field(default_factory=dict)
    keys: dict[str, AnthropicKey] = field(default_factory=dict)

    def key_label(self, api_key_id: str | None) -> str:
        """The key's name; ``User key`` for the Workbench; its id for a key no listing names."""
        if api_key_id is None:
            return USER_KEY_LABEL
        key = self.keys.get(api_key_id)
        return key.label if key is not None else api_key_id

    def workspace_name(self, workspace_id: str | None) -> str:
        if workspace_id is None:
            return DEFAULT_WORKSPACE_NAME
        return self.workspaces.get(workspace_id) or workspace_id


# -- small readers ----------------------------------------------------------------------------------------------
def quantity(value: Any, what: str) -> Decimal:
    """A count sent as a JSON number (null counts nothing)."""
    return Decimal(0) if value is None else json_number(value, what)


def dollars_from_cents(value: Any, what: str) -> Decimal:
    """Exact dollars from cents sent as a decimal string (``"123.45"`` → ``1.2345``) or a JSON number."""
    if isinstance(value, str):
        try:
            cents = Decimal(value.strip())
        except InvalidOperation:
            raise ResponseError(f"{what}: {value!r} is not a decimal amount of cents") from None
    elif isinstance(value, int | Decimal) and not isinstance(value, bool):
        cents = Decimal(value)
    else:
        raise ResponseError(f"{what}: expected an amount of cents, got {value!r}")
    return bounded(cents, what).scaleb(-2)


def rfc3339(value: Any, what: str) -> datetime:
    """An aware UTC instant on a whole hour from an RFC 3339 bucket boundary."""
    return hour_of(value, what=what)


def list_data(body: Any, what: str) -> list[dict[str, Any]]:
    """The items of a ``{data, has_more, first_id, last_id}`` listing page."""
    page = json_object(body, what)
    return [json_object(item, f"{what} data[{i}]") for i, item in enumerate(json_list(page, "data", what))]


def parse_key(raw: dict[str, Any], what: str) -> AnthropicKey:
    created = optional_text(raw, "created_at", what)
    created_at = None
    if created is not None:
        try:
            created_at = datetime.fromisoformat(created.replace("Z", "+00:00"))
        except ValueError:
            raise ResponseError(f"{what}: created_at {created!r} is not an RFC 3339 time") from None
        if created_at.tzinfo is None:
            raise ResponseError(f"{what}: created_at {created!r} has no UTC offset")
    creator = raw.get("created_by")
    if creator is not None:
        creator = json_object(creator, f"{what}.created_by")
    scope = raw.get("scope")  # newer API versions only; its shape is not documented, so only a word is read
    return AnthropicKey(
        id=required_text(raw, "id", what),
        name=optional_text(raw, "name", what),
        status=optional_text(raw, "status", what),
        workspace_id=optional_text(raw, "workspace_id", what),
        created_at=created_at,
        created_by=None if creator is None else optional_text(creator, "id", f"{what}.created_by"),
        created_by_type=None if creator is None else optional_text(creator, "type", f"{what}.created_by"),
        scope=scope.lower() if isinstance(scope, str) and scope else None,
    )


def listed_keys(directory: Directory) -> list[ListedKey]:
    """Every key of the directory as the host's inventory takes it: who created it (Anthropic gives an id and a
    type, no name), its workspace (the default one by name), status as Anthropic says it. Anthropic gives no
    ``last_used_at``: idle keys are found from usage."""
    return [
        ListedKey(
            key_id=key.id,
            name=key.name,
            scope=key.scope or "api",
            owner=key.created_by,
            owner_type=key.created_by_type,
            workspace_id=key.workspace_id,
            workspace_name=directory.workspace_name(key.workspace_id),
            created_at=key.created_at,
            status=key.status or "active",
            listing=KEYS_LISTING,
        )
        for key in directory.keys.values()
    ]


def parse_workspace(raw: dict[str, Any], what: str) -> tuple[str, str | None]:
    return required_text(raw, "id", what), optional_text(raw, "name", what)


def organization_name(body: Any) -> str:
    me = json_object(body, "Anthropic /organizations/me")
    return optional_text(me, "name", "Anthropic /organizations/me") or required_text(
        me, "id", "Anthropic /organizations/me"
    )


# -- usage and cost -----------------------------------------------------------------------------------------------
def _period(raw: Mapping[str, Any], where: str, start: datetime, end: datetime) -> tuple[datetime, datetime]:
    period_start = rfc3339(raw.get("starting_at"), f"{where}.starting_at")
    period_end = rfc3339(raw.get("ending_at"), f"{where}.ending_at")
    if period_end <= period_start:
        raise ResponseError(f"{where}: the bucket ends before it starts")
    if not start <= period_start < end:
        raise ResponseError(f"{where}: bucket {period_start.isoformat()} lies outside the requested window")
    return period_start, period_end


def buckets(
    body: Any, what: str, *, start: datetime, end: datetime
) -> Iterator[tuple[datetime, datetime, list[dict[str, Any]], str]]:
    """``(period_start, period_end, results, where)`` of each ``{starting_at, ending_at, results}`` bucket."""
    page = json_object(body, what)
    for i, raw in enumerate(json_list(page, "data", what)):
        where = f"{what} data[{i}]"
        bucket = json_object(raw, where)
        period_start, period_end = _period(bucket, where, start, end)
        results = [json_object(r, f"{where}.results[{j}]") for j, r in enumerate(json_list(bucket, "results", where))]
        yield period_start, period_end, results, where


def _row(
    context: SyncContext,
    directory: Directory,
    *,
    period: tuple[datetime, datetime],
    api_key_id: str | None,
    workspace_id: str | None,
    model: str | None,
    unit: str | None,
    quantity: Decimal | None,
    cost: Decimal | None = None,
    list_cost: Decimal | None = None,
    line_item: str | None = None,
    label: str | None = None,
) -> UsageRow:
    kind = "usage" if cost is None else "cost"
    return UsageRow(
        row_id=UsageRow.natural_key_id(
            connection=context.connection,
            period_start=period[0],
            api_key_id=api_key_id,
            login_username=None,
            model=model,
            unit=unit,
            unit_price=None,
            percent_discount=None,
            kind=kind,
            workspace_id=workspace_id,
            line_item=line_item,
        ),
        connector=context.connector,
        connection=context.connection,
        account=context.account,
        period_start=period[0],
        period_end=period[1],
        api_key_id=api_key_id,
        api_key_label=label or directory.key_label(api_key_id),
        login_username=None,
        model=model,
        unit=unit,
        quantity=quantity,
        unit_price=None,
        percent_discount=None,
        list_cost=list_cost,
        discount=None if list_cost is None or cost is None else list_cost - cost,
        cost=cost,
        currency=None if cost is None else "USD",
        synced_at=context.synced_at,
        kind=kind,
        workspace_id=workspace_id,
        workspace_name=directory.workspace_name(workspace_id),
        line_item=line_item,
    )


def usage_rows(
    body: Any, context: SyncContext, directory: Directory, *, start: datetime, end: datetime
) -> list[UsageRow]:
    """The rows of one ``usage_report/messages`` page: one per (hour, key, workspace, model, quantity) for each
    non-zero quantity; results that differ only by service tier are summed by the caller's merge."""
    what = "Anthropic /organizations/usage_report/messages"
    rows = []
    for period_start, period_end, results, where in buckets(body, what, start=start, end=end):
        if period_end - period_start != HOUR:
            raise ResponseError(f"{where}: expected an hourly bucket")
        for j, result in enumerate(results):
            path = f"{where}.results[{j}]"
            api_key_id = optional_text(result, "api_key_id", path)
            workspace_id = optional_text(result, "workspace_id", path)
            model = optional_text(result, "model", path)
            for fields in USAGE_QUANTITIES:
                holder: Any = result
                for name in fields[:-1]:
                    holder = holder.get(name) if isinstance(holder, dict) else None
                if holder is not None and not isinstance(holder, dict):
                    raise ResponseError(f"{path}.{fields[0]}: expected an object, got {holder!r}")
                count = quantity(None if holder is None else holder.get(fields[-1]), f"{path}.{'.'.join(fields)}")
                if count == 0:
                    continue
                rows.append(
                    _row(
                        context,
                        directory,
                        period=(period_start, period_end),
                        api_key_id=api_key_id,
                        workspace_id=workspace_id,
                        model=model,
                        unit=unit_of(fields),
                        quantity=count,
                    )
                )
    return rows


def analytics_cost_rows(
    body: Any, context: SyncContext, directory: Directory, *, start: datetime, end: datetime
) -> dict[datetime, list[UsageRow]]:
    """The rows of one cost analytics page by the day they start: one per (day, key, workspace, model), with
    ``cost`` (post-discount), ``list_cost`` (pre-discount) and their difference as ``discount``, all exact."""
    what = "Anthropic /organizations/analytics/cost"
    page = json_object(body, what)
    by_day: dict[datetime, list[UsageRow]] = {}
    for i, raw in enumerate(json_list(page, "data", what)):
        where = f"{what} data[{i}]"
        item = json_object(raw, where)
        period = _period(item, where, start, end)
        group = json_object(item.get("group") or {}, f"{where}.group")
        cost = json_object(item.get("cost"), f"{where}.cost")
        currency = required_text(cost, "currency", f"{where}.cost")
        if currency.upper() != "USD":
            raise ResponseError(f"{where}.cost: currency {currency!r} is not USD, the only one Anthropic bills in")
        requests = cost.get("requests")
        by_day.setdefault(period[0], []).append(
            _row(
                context,
                directory,
                period=period,
                api_key_id=optional_text(group, "api_key_id", f"{where}.group"),
                workspace_id=optional_text(group, "workspace_id", f"{where}.group"),
                model=optional_text(group, "model", f"{where}.group"),
                unit=None if requests is None else "requests",
                quantity=None if requests is None else quantity(requests, f"{where}.cost.requests"),
                cost=dollars_from_cents(cost.get("amount"), f"{where}.cost.amount"),
                list_cost=dollars_from_cents(cost.get("list_amount"), f"{where}.cost.list_amount"),
            )
        )
    return by_day


def analytics_total(body: Any, *, start: datetime, end: datetime) -> tuple[Decimal, Decimal, Decimal | None]:
    """``(amount, list_amount, requests)`` (money in dollars) of an ungrouped cost analytics page: exact totals that
    no group cap cuts; ``requests`` is ``None`` when Anthropic leaves it out."""
    what = "Anthropic /organizations/analytics/cost"
    amount, listed, requests = Decimal(0), Decimal(0), Decimal(0)
    counted = True
    for i, raw in enumerate(json_list(json_object(body, what), "data", what)):
        where = f"{what} data[{i}]"
        item = json_object(raw, where)
        _period(item, where, start, end)
        cost = json_object(item.get("cost"), f"{where}.cost")
        amount += dollars_from_cents(cost.get("amount"), f"{where}.cost.amount")
        listed += dollars_from_cents(cost.get("list_amount"), f"{where}.cost.list_amount")
        counted = counted and cost.get("requests") is not None
        requests += quantity(cost.get("requests"), f"{where}.cost.requests")
    return amount, listed, requests if counted else None


def beyond_cap_row(
    context: SyncContext,
    directory: Directory,
    *,
    period: tuple[datetime, datetime],
    cost: Decimal,
    list_cost: Decimal,
    requests: Decimal | None,
) -> UsageRow:
    """The spend of a day that no group of a narrowed query accounts for: kept, and said to be unattributed."""
    return _row(
        context,
        directory,
        period=period,
        api_key_id=None,
        workspace_id=None,
        model=None,
        unit=None if requests is None else "requests",
        quantity=requests,
        cost=cost,
        list_cost=list_cost,
        line_item=BEYOND_CAP_LINE_ITEM,
        label=BEYOND_CAP_LABEL,
    )


def cost_report_rows(
    body: Any, context: SyncContext, directory: Directory, *, start: datetime, end: datetime
) -> list[UsageRow]:
    """The rows of one ``cost_report`` page: one per (day, workspace, description), cents made exact dollars; the
    report has no key dimension, so ``api_key_id`` is null and the label says it is every key's."""
    what = "Anthropic /organizations/cost_report"
    rows = []
    for period_start, period_end, results, where in buckets(body, what, start=start, end=end):
        for j, result in enumerate(results):
            path = f"{where}.results[{j}]"
            currency = required_text(result, "currency", path)
            if currency.upper() != "USD":
                raise ResponseError(f"{path}: currency {currency!r} is not USD, the only one Anthropic bills in")
            rows.append(
                _row(
                    context,
                    directory,
                    period=(period_start, period_end),
                    api_key_id=None,
                    workspace_id=optional_text(result, "workspace_id", path),
                    model=optional_text(result, "model", path),
                    unit=None,
                    quantity=None,
                    cost=dollars_from_cents(result.get("amount"), f"{path}.amount"),
                    line_item=optional_text(result, "description", path),
                    label=ALL_KEYS_LABEL,
                )
            )
    return rows
