"""From OpenAI's organization API answers to normalized rows and key records: pure functions, no I/O.

Bodies arrive decoded with every fractional JSON number as an exact ``Decimal`` (the SDK's client decodes them so),
never a float: ``amount.value`` is the billed money exactly as OpenAI wrote it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from connector_sdk.errors import ResponseError
from connector_sdk.fields import json_list, json_number, json_object, optional_text, required_text
from connector_sdk.models import ListedKey, SyncContext, UsageRow, floor_hour
from connector_sdk.paging import unix_time

USER_KEY_LABEL = "User key"
"""What the product calls use that no API key accounts for: OpenAI's Playground and other web UI use."""

USAGE_ENDPOINTS = ("completions", "embeddings", "moderations", "images", "audio_speeches", "audio_transcriptions")
"""The usage endpoints that group by API key (``vector_stores`` and ``code_interpreter_sessions`` cannot)."""

# Fields of a usage result that say whose or what usage it is; every other whole number is a quantity, so the
# token splits newer API versions add become rows without a change here.
GROUPING_FIELDS = frozenset(
    {"object", "project_id", "user_id", "api_key_id", "model", "batch", "service_tier", "source", "size"}
    | {"context_level", "vector_store_id"}
)


def model_of_line_item(line_item: str | None) -> str | None:
    """The model a billing line is for: its text before the first comma, trimmed (``"gpt-4o, input"`` → ``gpt-4o``)."""
    if line_item is None:
        return None
    return line_item.split(",", 1)[0].strip() or None


@dataclass(frozen=True)
class Project:
    id: str
    name: str | None
    archived: bool


@dataclass(frozen=True)
class OpenAIKey:
    """One key an organization listing names: a project key or an Admin key, with its owner where OpenAI says."""

    id: str
    name: str | None
    scope: Literal["project", "admin"]
    project_id: str | None
    created_at: datetime | None
    last_used_at: datetime | None
    owner_type: str | None = None
    owner_name: str | None = None
    owner_email: str | None = None
    owner_project_access: str | None = None
    expires_at: datetime | None = None

    @property
    def label(self) -> str:
        return self.name or self.id

    @property
    def listing(self) -> str:
        """The listing that names the key, as a finding quotes it."""
        if self.scope == "admin":
            return "OpenAI /organization/admin_api_keys"
        return f"OpenAI /organization/projects/{self.project_id}/api_keys"


@dataclass
class Directory:
    """The organization's projects and keys, to name the ids that costs and usage carry."""

    projects: dict[str, Project] = field(default_factory=dict)
    keys: dict[str, OpenAIKey] = field(default_factory=dict)

    def key_label(self, api_key_id: str | None) -> str:
        """The key's name; ``User key`` for use without a key; its id for a key no listing names (deleted)."""
        if api_key_id is None:
            return USER_KEY_LABEL
        key = self.keys.get(api_key_id)
        return key.label if key is not None else api_key_id

    def project_name(self, project_id: str | None) -> str | None:
        if project_id is None:
            return None
        project = self.projects.get(project_id)
        return project.name or project_id if project is not None else project_id


# -- small readers ----------------------------------------------------------------------------------------------
def _time(body: Mapping[str, Any], name: str, what: str) -> datetime | None:
    value = body.get(name)
    return None if value is None else unix_time(value, what=f"{what}.{name}")


def list_data(body: Any, what: str) -> list[dict[str, Any]]:
    """The items of a ``{object: "list", data, has_more, last_id}`` listing page."""
    page = json_object(body, what)
    return [json_object(item, f"{what} data[{i}]") for i, item in enumerate(json_list(page, "data", what))]


def parse_project(raw: dict[str, Any], what: str) -> Project:
    project_id = required_text(raw, "id", what)
    return Project(id=project_id, name=optional_text(raw, "name", what), archived=raw.get("archived_at") is not None)


def parse_project_key(raw: dict[str, Any], project_id: str, what: str) -> OpenAIKey:
    key_id = required_text(raw, "id", what)
    owner = raw.get("owner") if isinstance(raw.get("owner"), dict) else {}
    owner_type = owner.get("type") if isinstance(owner.get("type"), str) else None
    who = owner.get(owner_type) if owner_type in ("user", "service_account") else None
    who = who if isinstance(who, dict) else {}
    return OpenAIKey(
        id=key_id,
        name=optional_text(raw, "name", what),
        scope="project",
        project_id=project_id,
        created_at=_time(raw, "created_at", what),
        last_used_at=_time(raw, "last_used_at", what),
        owner_type=owner_type,
        owner_name=who.get("name") if isinstance(who.get("name"), str) else None,
        owner_email=who.get("email") if isinstance(who.get("email"), str) else None,
        owner_project_access=optional_text(raw, "owner_project_access", what),
    )


def parse_admin_key(raw: dict[str, Any], what: str) -> OpenAIKey:
    key_id = required_text(raw, "id", what)
    owner = raw.get("owner") if isinstance(raw.get("owner"), dict) else {}
    return OpenAIKey(
        id=key_id,
        name=optional_text(raw, "name", what),
        scope="admin",
        project_id=None,
        created_at=_time(raw, "created_at", what),
        last_used_at=_time(raw, "last_used_at", what),
        owner_type=owner.get("type") if isinstance(owner.get("type"), str) else None,
        owner_name=owner.get("name") if isinstance(owner.get("name"), str) else None,
        owner_email=owner.get("email") if isinstance(owner.get("email"), str) else None,
        expires_at=_time(raw, "expires_at", what),
    )


OWNER_ACCESS = {"active": True, "inactive": False}
"""``owner_project_access`` as whether the key's owner still has access to its project."""


def listed_keys(directory: Directory, *, now: datetime) -> list[ListedKey]:
    """Every key of the directory as the host's inventory takes it: the project (archived or not) as the workspace,
    the owner and whether they still have access, and a status: ``archived`` for a key of an archived project,
    ``expired`` for an Admin key past its ``expires_at`` (``now``), else ``active``."""
    listed = []
    for key in directory.keys.values():
        project = directory.projects.get(key.project_id) if key.project_id is not None else None
        status = "active"
        if project is not None and project.archived:
            status = "archived"
        elif key.expires_at is not None and key.expires_at <= now:
            status = "expired"
        listed.append(
            ListedKey(
                key_id=key.id,
                name=key.name,
                scope=key.scope,
                owner=key.owner_name or key.owner_email,
                owner_email=key.owner_email,
                owner_type=key.owner_type,
                owner_active=OWNER_ACCESS.get(key.owner_project_access or ""),
                workspace_id=key.project_id,
                workspace_name=directory.project_name(key.project_id),
                created_at=key.created_at,
                last_used_at=key.last_used_at,
                status=status,
                listing=key.listing,
            )
        )
    return listed


# -- costs and usage ----------------------------------------------------------------------------------------------
def buckets(
    body: Any, what: str, *, start: datetime, end: datetime
) -> Iterator[tuple[datetime, datetime, list[dict[str, Any]], str]]:
    """``(period_start, period_end, results, where)`` of each bucket of a costs or usage page; each bucket must be
    whole hours that start inside ``[start, end)``."""
    page = json_object(body, what)
    data = page.get("data")
    if not isinstance(data, list):
        raise ResponseError(f"{what}: field 'data' must be a list, got {type(data).__name__}")
    for i, raw in enumerate(data):
        where = f"{what} data[{i}]"
        bucket = json_object(raw, where)
        period_start = unix_time(bucket.get("start_time"), what=f"{where}.start_time")
        period_end = unix_time(bucket.get("end_time"), what=f"{where}.end_time")
        if floor_hour(period_start) != period_start or floor_hour(period_end) != period_end:
            raise ResponseError(f"{where}: the bucket does not start and end on whole hours")
        if period_end <= period_start:
            raise ResponseError(f"{where}: the bucket ends before it starts")
        if not start <= period_start < end:
            raise ResponseError(f"{where}: bucket {period_start.isoformat()} lies outside the requested window")
        results = bucket.get("results")
        if not isinstance(results, list):
            raise ResponseError(f"{where}.results must be a list, got {type(results).__name__}")
        yield period_start, period_end, [json_object(r, f"{where}.results[{j}]") for j, r in enumerate(results)], where


def cost_rows(
    body: Any, context: SyncContext, directory: Directory, *, start: datetime, end: datetime
) -> list[UsageRow]:
    """The rows of one ``/organization/costs`` page: one per (day, key, project, line item), money exact."""
    rows = []
    for period_start, period_end, results, where in buckets(body, "OpenAI /organization/costs", start=start, end=end):
        for j, result in enumerate(results):
            path = f"{where}.results[{j}]"
            amount = json_object(result.get("amount"), f"{path}.amount")
            currency = required_text(amount, "currency", f"{path}.amount")
            line_item = optional_text(result, "line_item", path)
            api_key_id = optional_text(result, "api_key_id", path)
            project_id = optional_text(result, "project_id", path)
            quantity = result.get("quantity")
            unit = optional_text(result, "quantity_unit", path) if quantity is not None else None
            model = model_of_line_item(line_item)
            rows.append(
                UsageRow(
                    row_id=UsageRow.natural_key_id(
                        connection=context.connection,
                        period_start=period_start,
                        api_key_id=api_key_id,
                        login_username=None,
                        model=model,
                        unit=unit,
                        unit_price=None,
                        percent_discount=None,
                        kind="cost",
                        workspace_id=project_id,
                        line_item=line_item,
                    ),
                    connector=context.connector,
                    connection=context.connection,
                    account=context.account,
                    period_start=period_start,
                    period_end=period_end,
                    api_key_id=api_key_id,
                    api_key_label=directory.key_label(api_key_id),
                    login_username=None,
                    model=model,
                    unit=unit,
                    quantity=None if quantity is None else json_number(quantity, f"{path}.quantity"),
                    unit_price=None,
                    percent_discount=None,
                    list_cost=None,
                    discount=None,
                    cost=json_number(amount.get("value"), f"{path}.amount.value"),
                    currency=currency.upper(),
                    synced_at=context.synced_at,
                    kind="cost",
                    workspace_id=project_id,
                    workspace_name=directory.project_name(project_id),
                    line_item=line_item,
                )
            )
    return rows


def usage_rows(
    body: Any, endpoint: str, context: SyncContext, directory: Directory, *, start: datetime, end: datetime
) -> list[UsageRow]:
    """The rows of one ``/organization/usage/{endpoint}`` page: one per (hour, key, project, model, quantity field)
    for each non-zero quantity; usage rows carry no money."""
    what = f"OpenAI /organization/usage/{endpoint}"
    rows = []
    for period_start, period_end, results, where in buckets(body, what, start=start, end=end):
        for j, result in enumerate(results):
            path = f"{where}.results[{j}]"
            api_key_id = optional_text(result, "api_key_id", path)
            project_id = optional_text(result, "project_id", path)
            model = optional_text(result, "model", path)
            # The person whose use it was, when OpenAI names one (the Playground's, under group_by=user_id).
            user_id = optional_text(result, "user_id", path) or None
            for name, value in result.items():
                if name in GROUPING_FIELDS or value is None or isinstance(value, str | bool):
                    continue
                quantity = json_number(value, f"{path}.{name}")
                if quantity == 0:
                    continue
                rows.append(
                    UsageRow(
                        row_id=UsageRow.natural_key_id(
                            connection=context.connection,
                            period_start=period_start,
                            api_key_id=api_key_id,
                            login_username=user_id,
                            model=model,
                            unit=name,
                            unit_price=None,
                            percent_discount=None,
                            kind="usage",
                            workspace_id=project_id,
                        ),
                        connector=context.connector,
                        connection=context.connection,
                        account=context.account,
                        period_start=period_start,
                        period_end=period_end,
                        api_key_id=api_key_id,
                        api_key_label=directory.key_label(api_key_id),
                        login_username=user_id,
                        model=model,
                        unit=name,
                        quantity=quantity,
                        unit_price=None,
                        percent_discount=None,
                        list_cost=None,
                        discount=None,
                        cost=None,
                        currency=None,
                        synced_at=context.synced_at,
                        kind="usage",
                        workspace_id=project_id,
                        workspace_name=directory.project_name(project_id),
                    )
                )
    return rows
