"""The JSON the REST API reads and writes. Money and quantities are exact decimal strings; no model holds a secret."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from connector_sdk.models import ConnectionState, FindingKind, RunOutcome, Severity


class ErrorDetail(BaseModel):
    status: int
    message: str = Field(description="What went wrong and what to do about it, for a person.")
    fields: dict[str, str] = Field(default_factory=dict, description="Field name -> what is wrong with it.")


class ErrorBody(BaseModel):
    error: ErrorDetail


class Links(BaseModel):
    self: str
    dashboard: str
    rows: str
    report: str
    sync: str


class ConnectionOut(BaseModel):
    name: str
    connector: str
    account: str | None
    state: ConnectionState
    state_label: str = Field(description="The state as the portal shows it, e.g. 'Reconnect required'.")
    reason: str | None
    created_at: datetime
    last_sync: datetime | None
    last_success: datetime | None
    watermark: datetime | None
    next_sync: datetime | None
    rows: int
    facts: dict[str, str] = Field(
        description="What the connector learned about the vendor account in its syncs, as label: text "
        "(e.g. which cost source it reads); empty until a sync taught it something worth showing."
    )
    config: dict[str, Any] = Field(description="The configuration without its secrets, which are write-only.")
    links: Links


class CreateConnection(BaseModel):
    """A new connection. ``config`` follows the connector's ``config_schema``; its secret fields are write-only."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "connector": "CONNECTOR_ID",
                    "name": "prod",
                    "config": {
                        "api_key": "THE_KEY (its shape: key_example in the connector's manifest)",
                        "backfill_days": 30,
                    },
                }
            ]
        },
    )

    connector: str = Field(min_length=1, max_length=64, description="A connector id from GET /api/v1/connectors.")
    name: str = Field(min_length=1, max_length=64, description="1-64 letters, digits, '.', '_' or '-'.")
    config: dict[str, Any] = Field(default_factory=dict)


class Disconnect(BaseModel):
    model_config = ConfigDict(extra="forbid")

    purge: bool = Field(False, description="Also delete the connection's rows, runs and history.")


class Disconnected(BaseModel):
    name: str
    purged: bool
    rows_deleted: int
    rows_kept: int


class SyncJobOut(BaseModel):
    id: str
    connection: str
    state: str = Field(description="queued, running, finished or skipped (another worker was already syncing).")
    outcome: RunOutcome | None = Field(description="The run's outcome once it is known.")
    run_id: str | None
    progress: float = Field(ge=0, le=1)
    rows_written: int
    message: str | None
    created_at: datetime
    finished_at: datetime | None
    status_url: str


class ConnectionCreated(BaseModel):
    connection: ConnectionOut
    sync: SyncJobOut | None = Field(description="The first sync, started at once (null if the scheduler took it).")


class RunOut(BaseModel):
    run_id: str
    started_at: datetime
    finished_at: datetime | None
    outcome: RunOutcome
    window_start: datetime
    window_end: datetime
    rows_written: int
    pages: int
    message: str | None


class RowOut(BaseModel):
    """A usage row; a vendor's missing figure is null (never invented), and a ``usage`` row counts quantities only:
    its cost, list cost, discount and currency are null."""

    row_id: str
    connector: str
    connection: str
    account: str
    period_start: str
    period_end: str
    api_key_id: str | None
    api_key_label: str
    login_username: str | None
    model: str | None
    unit: str | None
    quantity: str | None
    unit_price: str | None
    percent_discount: str | None
    list_cost: str | None
    discount: str | None
    cost: str | None
    currency: str | None
    synced_at: str
    kind: str = Field("cost", description="cost (billed money) or usage (quantities only).")
    workspace_id: str | None = None
    workspace_name: str | None = None
    line_item: str | None = None


class RowsOut(BaseModel):
    rows: list[RowOut]
    page: int
    per_page: int
    total: int = Field(description="Rows matching the filters, over all pages.")
    pages: int
    next: str | None = Field(description="The next page's URL, if there is one.")


class ReportLineOut(BaseModel):
    api_key_label: str = Field(description="The key's name, or 'User key' for web-interface activity.")
    models: list[str]
    active_models: int
    cost: str
    currency: str
    row_count: int


class ReportOut(BaseModel):
    connection: str | None
    since: datetime
    until: datetime
    days: int
    lines: list[ReportLineOut]
    totals: dict[str, str] = Field(description="Currency -> total cost.")


class DailySeries(BaseModel):
    api_key_label: str
    costs: list[str] = Field(description="Cost per day, aligned with ``days``.")


class DailyOut(BaseModel):
    connection: str
    currency: str
    since: datetime
    until: datetime
    days: list[str]
    series: list[DailySeries]


class Health(BaseModel):
    status: str
    version: str


# -- spend across connections, the key inventory, findings ---------------------------------------------------------
class SpendLineOut(BaseModel):
    key: str = Field(description="What the line groups by: a connector id, a key, a person or a model.")
    label: str = Field(description="The line in words, as the overview shows it.")
    connector: str | None = Field(description="The vendor's connector id, when the line belongs to one.")
    currency: str
    cost: str = Field(description="Billed cost in the period, exact.")
    previous_cost: str = Field(description="Billed cost in the period before, of the same length, exact.")
    change: str = Field(description="cost - previous_cost, exact.")
    change_percent: str | None = Field(description="The change in percent of previous_cost; null when that was 0.")
    row_count: int
    links: dict[str, str] = Field(default_factory=dict, description="The key's API and page, on a key's line.")


class FindingLinks(BaseModel):
    self: str
    acknowledge: str
    key: str | None = Field(description="The key the finding is about (API), when its subject is a key.")
    page: str | None = Field(description="The key's page in the portal, when its subject is a key.")


class FindingOut(BaseModel):
    id: int
    connection: str
    connector: str
    kind: FindingKind
    title: str = Field(description="The kind in words, e.g. 'Idle key'.")
    severity: Severity
    subject: str = Field(description="A key id, a person (login name, or 'User key') or an account.")
    subject_label: str
    message: str
    evidence: dict[str, Any] = Field(description="The figures: money as decimal text, dates as ISO 8601.")
    open: bool = Field(description="Whether the condition still holds (resolved_at is null).")
    opened_at: datetime
    updated_at: datetime | None
    resolved_at: datetime | None
    acknowledged_at: datetime | None
    ack_note: str | None = Field(description="The note an admin acknowledged it with.")
    links: FindingLinks


class Acknowledge(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"note": "Batch jobs of the data team"}]})

    note: str = Field(min_length=1, max_length=2000, description="Why this is fine, or what was done about it.")


class KeyLinks(BaseModel):
    self: str
    history: str
    rows: str
    page: str


class KeyOut(BaseModel):
    connection: str
    connector: str
    key_id: str
    name: str | None
    state: str = Field(description="active, inactive (the vendor's status), gone (from the listing) or unlisted.")
    state_label: str
    scope: str | None
    owner: str | None
    owner_email: str | None
    owner_type: str | None
    owner_active: bool | None = Field(description="false when the vendor says the owner lost access.")
    workspace_id: str | None
    workspace_name: str | None
    created_at: datetime | None
    last_used_at: datetime | None = Field(description="The vendor's last use, when it says.")
    last_used: datetime | None = Field(description="The later of the vendor's last use and the last row naming it.")
    status: str | None = Field(description="The vendor's status in the last listing.")
    listing: str | None
    listed: bool
    first_seen_at: datetime | None
    first_listed_at: datetime | None
    last_listed_at: datetime | None
    gone_at: datetime | None
    first_usage_at: datetime | None
    last_usage_at: datetime | None
    spend_7d: str
    spend_30d: str
    currency: str | None
    open_findings: int
    links: KeyLinks


class KeyEventOut(BaseModel):
    at: datetime
    event: str = Field(description="listed, renamed, changed, gone or returned.")
    detail: dict[str, Any]


class DailyCosts(BaseModel):
    currency: str
    since: datetime
    until: datetime
    days: list[str]
    costs: list[str] = Field(description="Billed cost per UTC day, aligned with days.")


class KeyDetailOut(BaseModel):
    key: KeyOut
    daily: DailyCosts
    findings: list[FindingOut] = Field(description="Findings about the key, open first.")
    history: list[KeyEventOut] = Field(description="Oldest first.")


class OverviewOut(BaseModel):
    days: int
    since: datetime
    until: datetime
    previous_since: datetime = Field(description="The previous period is [previous_since, since).")
    connections: list[str]
    totals: list[SpendLineOut] = Field(description="One line per currency; money is never added across currencies.")
    by_vendor: list[SpendLineOut]
    by_key: list[SpendLineOut]
    by_person: list[SpendLineOut] = Field(description="Web-UI spend, named where the vendor names the person.")
    by_model: list[SpendLineOut]
    open_findings: list[FindingOut] = Field(description="Highest severity first.")
