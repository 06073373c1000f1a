"""What the MCP tools answer: typed records an assistant reads as structured output, money as exact decimal text.

Every answer carries its period (``since`` inclusive, ``until`` exclusive, whole UTC hours) and the currency of each
amount, so a figure is never quoted without what it is of.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from connector_sdk.models import Finding, KeyEvent, KeyRecord

Dimension = Literal["vendor", "connection", "key", "person", "model", "day"]
Ranked = Literal["key", "person", "model"]


class Period(BaseModel):
    since: datetime = Field(description="First instant included (UTC).")
    until: datetime = Field(description="First instant left out (UTC).")


class ConnectionLine(BaseModel):
    name: str
    connector: str = Field(description="The connector plugin id (what `vendor` filters and groups by).")
    vendor: str = Field(description="The vendor's name, from the connector's manifest.")
    account: str | None = Field(description="The vendor account (team, organization) the connection reaches.")
    state: str = Field(description="connected, syncing, reconnect_required, error or disconnected.")
    reason: str | None = Field(description="Why the state is what it is, when it is not plainly connected.")
    last_sync: datetime | None
    last_success: datetime | None
    next_sync: datetime | None
    rows: int
    counted_in_totals: bool = Field(
        description="False when another connection reaches the same vendor account and its rows stand for it."
    )


class ConnectionsAnswer(BaseModel):
    connections: list[ConnectionLine]
    notes: list[str] = Field(default_factory=list)


class Amount(BaseModel):
    currency: str
    cost: Decimal = Field(description="Billed cost, exact.")


class SpendLine(BaseModel):
    group: dict[str, str | None] = Field(description="Each grouped dimension's value (null: none, e.g. no person).")
    currency: str
    cost: Decimal
    rows: int = Field(description="Billed rows summed.")


class SpendAnswer(BaseModel):
    period: Period
    group_by: list[Dimension]
    filters: dict[str, str]
    totals: list[Amount] = Field(description="Total billed cost per currency.")
    lines: list[SpendLine] = Field(description="The breakdown, highest cost first.")
    usage_rows_left_out: int = Field(description="Rows that count quantities only (no money), not summed.")
    connections: list[str] = Field(description="The connections whose rows were read.")
    notes: list[str] = Field(default_factory=list)


class Spender(BaseModel):
    name: str | None
    currency: str
    cost: Decimal
    previous_cost: Decimal = Field(description="Cost in the period of equal length just before.")
    change: Decimal = Field(description="cost - previous_cost.")
    change_percent: Decimal | None = Field(description="Change against the previous period; null when it was 0.")


class TopSpendersAnswer(BaseModel):
    period: Period
    previous_period: Period
    by: Ranked
    spenders: list[Spender]
    connections: list[str]
    notes: list[str] = Field(default_factory=list)


class BudgetLine(BaseModel):
    id: int
    connection: str
    scope: str = Field(description="What the budget covers: all usage, one key label, one model.")
    monthly_amount: Decimal
    currency: str
    spent: Decimal = Field(description="Billed cost this month so far, in the budget's currency and scope.")
    percent_used: Decimal
    thresholds: list[int]
    thresholds_reached: list[int]


class AlertLine(BaseModel):
    connection: str
    budget_id: int | None
    kind: str = Field(description="budget (a threshold crossed) or anomaly (a day far above its usual).")
    fired_at: datetime
    message: str


class BudgetStatusAnswer(BaseModel):
    month: str
    budgets: list[BudgetLine]
    alerts: list[AlertLine] = Field(description="Alerts fired this month, newest first.")


class UsageRowsAnswer(BaseModel):
    period: Period
    filters: dict[str, str]
    offset: int
    limit: int = Field(description="Rows asked for, after the cap.")
    cap: int = Field(description="The most rows one call returns.")
    capped: bool = Field(description="True when more rows were asked for than the cap allows.")
    more: bool = Field(description="True when rows follow this page: ask again with offset + len(rows).")
    rows: list[dict[str, Any]] = Field(description="Normalized rows; money and quantities as exact decimal text.")
    notes: list[str] = Field(default_factory=list)


ListingStatus = Literal["listed", "gone", "never listed"]
FindingState = Literal["open", "acknowledged", "resolved"]


class KeyLine(KeyRecord):
    """A key of the inventory as the vendor lists it and the rows bill it."""

    model_config = ConfigDict(json_schema_mode_override="serialization")  # the schema names listing_status
    vendor: str = Field(description="The vendor's name, from the connector's manifest.")

    @computed_field(  # type: ignore[prop-decorator]
        description="listed: in the vendor's key listing now; gone: it left the listing (its history is kept); "
        "never listed: rows bill it but no listing ever named it (a deleted or hidden key)."
    )
    @property
    def listing_status(self) -> ListingStatus:
        return super().listing_status


class KeysAnswer(BaseModel):
    keys: list[KeyLine] = Field(description="Highest 30-day spend first.")
    history: list[KeyEvent] = Field(
        default_factory=list,
        description="When one key is asked for: its history (listed, renamed, gone...), oldest first.",
    )
    notes: list[str] = Field(default_factory=list)


class FindingLine(Finding):
    """A finding: what it is about, how severe, the evidence in figures, and where it stands."""

    model_config = ConfigDict(json_schema_mode_override="serialization")  # the schema names state

    @computed_field(  # type: ignore[prop-decorator]
        description="open; acknowledged (still open, an admin has seen it and left a note); resolved (it cleared)."
    )
    @property
    def state(self) -> FindingState:
        return super().state


class FindingsAnswer(BaseModel):
    findings: list[FindingLine] = Field(
        description="Open findings first (acknowledged ones too), most severe first, then newest first."
    )
    open_by_severity: dict[str, int] = Field(description="Open, unacknowledged findings per severity.")
    notes: list[str] = Field(default_factory=list)
