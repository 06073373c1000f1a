"""The JSON the REST API reads and writes. Money and quantities are exact decimal strings; no model holds a secret."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from connector_sdk.models import ConnectionState, RunOutcome


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
    row_id: str
    connector: str
    connection: str
    account: str
    period_start: str
    period_end: str
    api_key_id: str | None
    api_key_label: str
    login_username: str | None
    model: str
    unit: str
    quantity: str
    unit_price: str
    percent_discount: str | None
    list_cost: str
    discount: str
    cost: str
    currency: str
    synced_at: str


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
