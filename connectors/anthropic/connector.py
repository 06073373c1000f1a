"""The Anthropic connector: hourly usage per API key and workspace, and billed cost per key from the cost analytics
endpoint (per workspace from the cost report where the key cannot read analytics), from Anthropic's Admin API.

Where the sources disagree on cost analytics, this follows ``shared/anthropic/README.md`` and Anthropic's API reference
("Usage and Cost Analytics API"; the Go and C# SDKs' ``Beta.Organization.Analytics.Cost``): ``GET
/v1/organizations/analytics/cost`` with the ``anthropic-beta`` header and ``time_bucket_width``, one row per bucket
and group, ``{starting_at, ending_at, group: {api_key_id, workspace_id, model, ...}, cost: {amount, list_amount,
currency, requests}}``. The Python SDK's types describe another beta report, ``GET
/v1/organizations/analytics/cost_report?beta=true`` (``resources/beta/organization/analytics/cost_report.py``):
``bucket_width``, buckets of flat ``results``, and no ``api_key_id`` or ``workspace_id`` to group by (Claude
Enterprise, per product and user), so it cannot split cost by key. Should Anthropic move per-key cost there, the
analytics path answers 404 and cost falls back to the cost report per workspace, which ``status`` then shows.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import structlog

from connector_sdk.connector import Connector, packaged_manifest
from connector_sdk.errors import ApiError, CredentialError
from connector_sdk.http import ApiClient, RetryPolicy
from connector_sdk.models import (
    HOUR,
    AccountInfo,
    ListedKey,
    Manifest,
    Page,
    SyncContext,
    SyncWindow,
    UsageRow,
    iso,
    utcnow,
)
from connector_sdk.paging import DAY, day_pages, floor_day, follow_cursor, has_more_cursor
from connectors.anthropic.config import AnthropicConfig
from connectors.anthropic.mapping import (
    AnthropicKey,
    Directory,
    analytics_cost_rows,
    analytics_total,
    beyond_cap_row,
    cost_report_rows,
    list_data,
    listed_keys,
    organization_name,
    parse_key,
    parse_workspace,
    usage_rows,
)

log = structlog.get_logger()

API_VERSION = "2023-06-01"
ANALYTICS_BETA = {"anthropic-beta": "analytics-usage-cost-2026-08-24"}
SETUP_HINT = (
    "An organization member with the admin role creates one in the Claude Console (platform.claude.com) under "
    "Settings > Admin keys; workspace API keys cannot read usage or cost. Then reconnect with it."
)
DAYS_PER_REQUEST = 7
"""Days read per request: 168 hourly buckets, the most one usage page holds."""
LIST_LIMIT = 100
KEY_STATUSES = ("active", "inactive", "archived", "expired")
GROUP_USAGE_BY = ["api_key_id", "workspace_id", "model", "service_tier"]
GROUP_COST_BY = ["api_key_id", "workspace_id", "model"]
ANALYTICS_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
ANALYTICS_REACH = timedelta(days=365)
"""Cost analytics answers only from its epoch on, and no further back than a year: older days come from the cost
report, per workspace."""
GROUP_CAP = 100
"""The most groups one cost analytics bucket holds; a full bucket may have left groups out (no remainder row)."""

CostSource = Literal["cost analytics", "cost report"]
COST_SOURCES: dict[CostSource, str] = {
    "cost analytics": "per API key, from cost analytics (billed cost, list price and discount)",
    "cost report": (
        "per workspace, from the cost report: cost analytics refused the key (no read:analytics scope, or the "
        "organization lacks the beta)"
    ),
}
COST_SOURCE_STATE = "cost_source"
"""Where the connection's connector state keeps the cost source its last sync read (status and the portal show it)."""


def anthropic_auth_error(status: int, message: str) -> CredentialError:
    """401: the key is unknown or revoked; 403: a valid key that may not read the organization (a workspace key)."""
    if status == 403:
        return CredentialError(
            "Anthropic accepted the key but it may not read the organization's usage and cost: that needs an Admin "
            f"key (sk-ant-admin...), not a workspace API key (Anthropic said: {message}). {SETUP_HINT}",
            kind="insufficient_scope",
            status=status,
        )
    return CredentialError(
        f"Anthropic rejected the key: it is invalid, mistyped or revoked (Anthropic said: {message}). {SETUP_HINT}",
        kind="invalid",
        status=status,
    )


class AnthropicConnector(Connector):
    id = "anthropic"
    config_model = AnthropicConfig
    config: AnthropicConfig

    def __init__(
        self, config: AnthropicConfig, *, cancel: threading.Event | None = None, retry: RetryPolicy | None = None
    ) -> None:
        super().__init__(config, cancel=cancel)
        self.client = ApiClient(
            config.base_url,
            authorization=config.api_key.get_secret_value,
            auth_header="x-api-key",
            headers={"anthropic-version": API_VERSION},
            vendor="Anthropic",
            timeout=(min(10.0, config.timeout_seconds), config.timeout_seconds),
            retry=retry or RetryPolicy.from_env(),
            auth_error=anthropic_auth_error,
            sleep=self.sleep,
        )
        self.group_cap = GROUP_CAP
        """How many groups make a cost bucket full (Anthropic's cap; a test sets a simulator's smaller one)."""
        self.cost_source: CostSource | None = None
        """Where the last check or sync read cost from; ``None`` until one has."""

    def __repr__(self) -> str:
        return f"AnthropicConnector(base_url={self.config.base_url!r})"

    @classmethod
    def manifest(cls) -> Manifest:
        return packaged_manifest("connectors.anthropic", "anthropic")

    @classmethod
    def describe_state(cls, state: Mapping[str, Any]) -> dict[str, str]:
        source = state.get(COST_SOURCE_STATE)
        return {"cost source": COST_SOURCES[source]} if isinstance(source, str) and source in COST_SOURCES else {}

    def close(self) -> None:
        self.client.close()

    def check(self) -> AccountInfo:
        """Name the organization (only an Admin key may ask), and find out which cost source the key can read."""
        account = organization_name(self.client.get_json("/organizations/me"))
        today = floor_day(utcnow())
        self._analytics_or_none(today - DAY, today, {"limit": 1})
        directory = self.directory()
        details = {
            "workspaces": len(directory.workspaces),
            "api_keys": len(directory.keys),
            "cost_source": self.cost_source,
            "cost_detail": COST_SOURCES[self.cost_source or "cost report"],
        }
        return AccountInfo(account=account, details=details)

    def sync_window(self, window: SyncWindow) -> SyncWindow:
        """Whole days, reaching back ``settling_days`` before the window's last day: cost lands up to a day late,
        so the days that may still change are read again on every sync."""
        settling = floor_day(window.end - HOUR) - timedelta(days=self.config.settling_days)
        return SyncWindow(start=floor_day(min(window.start, settling)), end=window.end)

    # -- listings ----------------------------------------------------------------------------------------------
    def _listing(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Every item of an ``after_id``/``has_more``/``last_id`` listing."""
        what = f"Anthropic {path}"

        def fetch(after: str | None) -> Any:
            return self.client.get_json(path, {**params, "limit": LIST_LIMIT} | ({"after_id": after} if after else {}))

        for page in follow_cursor(fetch, what=what, cursor_of=has_more_cursor("last_id", what=what)):
            yield from list_data(page, what)

    def directory(self) -> Directory:
        """Workspaces (archived ones too) and the keys of every status: what names the ids in usage and cost."""
        directory = Directory()
        for i, raw in enumerate(self._listing("/organizations/workspaces", {"include_archived": "true"})):
            workspace_id, name = parse_workspace(raw, f"Anthropic /organizations/workspaces item {i}")
            directory.workspaces[workspace_id] = name
        for status in KEY_STATUSES:
            for i, raw in enumerate(self._listing("/organizations/api_keys", {"status": status})):
                key = parse_key(raw, f"Anthropic /organizations/api_keys?status={status} item {i}")
                directory.keys[key.id] = key
        return directory

    def inventory(self) -> list[AnthropicKey]:
        """The organization's API keys, whatever their status."""
        return list(self.directory().keys.values())

    def list_keys(self) -> list[ListedKey]:
        """The organization's API keys of every status, with creator and workspace."""
        return listed_keys(self.directory())

    # -- usage and cost ------------------------------------------------------------------------------------------
    def _pages(self, path: str, params: dict[str, Any], headers: dict[str, str] | None = None) -> Iterator[Any]:
        """Every page of a ``page``/``next_page`` paged report."""
        what = f"Anthropic {path}"

        def fetch(page: str | None) -> Any:
            return self.client.get_json(path, params | ({"page": page} if page else {}), headers=headers)

        yield from follow_cursor(fetch, what=what, cursor_of=has_more_cursor("next_page", what=what))

    def _usage(self, start: datetime, end: datetime, context: SyncContext, directory: Directory) -> list[UsageRow]:
        params = {
            "starting_at": iso(start),
            "ending_at": iso(end),
            "bucket_width": "1h",
            "group_by[]": GROUP_USAGE_BY,
            "limit": (end - start) // HOUR,
        }
        rows: list[UsageRow] = []
        for body in self._pages("/organizations/usage_report/messages", params):
            rows += usage_rows(body, context, directory, start=start, end=end)
        return rows

    def _analytics(self, first: datetime, last: datetime, params: dict[str, Any]) -> Iterator[Any]:
        query = {
            "starting_at": iso(first),
            "ending_at": iso(last),
            "time_bucket_width": "1d",
            "limit": (last - first) // DAY,
        }
        return self._pages("/organizations/analytics/cost", query | params, ANALYTICS_BETA)

    def _analytics_or_none(self, first: datetime, last: datetime, params: dict[str, Any]) -> list[Any] | None:
        """Every page of a cost analytics query, or ``None`` when this key may not use the beta (403) or the
        organization does not have it (404): the cost report is read instead."""
        if self.cost_source == "cost report":
            return None
        try:
            pages = list(self._analytics(first, last, params))
        except (CredentialError, ApiError) as error:
            if error.status not in (403, 404):
                raise
            if self.cost_source != "cost report":
                log.info("anthropic_cost_source", source="cost report", status=error.status)
            self.cost_source = "cost report"
            return None
        self.cost_source = "cost analytics"
        return pages

    def _costs(
        self, start: datetime, end: datetime, context: SyncContext, directory: Directory, usage: list[UsageRow]
    ) -> list[UsageRow]:
        """The daily cost rows of every day whose midnight lies in ``[start, end)``."""
        first = floor_day(start) if floor_day(start) == start else floor_day(start) + DAY
        if first >= end:
            return []
        last = floor_day(end - HOUR) + DAY
        if first < max(ANALYTICS_EPOCH, utcnow() - ANALYTICS_REACH):
            return self._cost_report(first, last, context, directory, end)
        pages = self._analytics_or_none(first, last, {"group_by[]": GROUP_COST_BY})
        if pages is None:
            return self._cost_report(first, last, context, directory, end)
        rows: list[UsageRow] = []
        for body in pages:
            for day, day_rows in analytics_cost_rows(body, context, directory, start=first, end=end).items():
                if len(day_rows) < self.group_cap:
                    rows += day_rows
                else:
                    rows += self._narrowed(day, context, directory, usage, day_rows)
        return rows

    def _narrowed(
        self,
        day: datetime,
        context: SyncContext,
        directory: Directory,
        usage: list[UsageRow],
        capped: list[UsageRow],
    ) -> list[UsageRow]:
        """A full bucket's day read again one model at a time (and a full model one workspace at a time); what the
        narrowed reads still miss against the day's ungrouped total is kept as a row of its own, never dropped."""
        models = sorted({row.model for row in usage + capped if row.model and day <= row.period_start < day + DAY})
        log.info("anthropic_cost_bucket_full", day=iso(day), groups=len(capped), models=len(models))
        workspaces = [*directory.workspaces]
        rows: list[UsageRow] = []

        def read(params: dict[str, Any]) -> list[UsageRow]:
            found: list[UsageRow] = []
            for body in self._analytics(day, day + DAY, params | {"group_by[]": GROUP_COST_BY}):
                found += analytics_cost_rows(body, context, directory, start=day, end=day + DAY).get(day, [])
            return found

        for model in models:
            by_model = read({"models[]": model})
            if len(by_model) >= self.group_cap and workspaces:
                by_model = [row for w in workspaces for row in read({"models[]": model, "workspace_ids[]": w})]
            rows += by_model
        amount, listed, requests = Decimal(0), Decimal(0), Decimal(0)
        for body in self._analytics(day, day + DAY, {}):
            page_amount, page_listed, page_requests = analytics_total(body, start=day, end=day + DAY)
            amount, listed = amount + page_amount, listed + page_listed
            requests = None if requests is None or page_requests is None else requests + page_requests
        missing = amount - sum((row.cost or Decimal(0) for row in rows), Decimal(0))
        missing_list = listed - sum((row.list_cost or Decimal(0) for row in rows), Decimal(0))
        if missing or missing_list:
            log.warning("anthropic_cost_unattributed", day=iso(day), cost=str(missing))
            if requests is not None:
                requests -= sum((row.quantity or Decimal(0) for row in rows if row.unit == "requests"), Decimal(0))
            period = (day, day + DAY)
            rows.append(
                beyond_cap_row(
                    context, directory, period=period, cost=missing, list_cost=missing_list, requests=requests
                )
            )
        return rows

    def _cost_report(
        self, first: datetime, last: datetime, context: SyncContext, directory: Directory, end: datetime
    ) -> list[UsageRow]:
        params = {
            "starting_at": iso(first),
            "ending_at": iso(last),
            "bucket_width": "1d",
            "group_by[]": ["workspace_id", "description"],
            "limit": (last - first) // DAY,
        }
        rows: list[UsageRow] = []
        for body in self._pages("/organizations/cost_report", params):
            rows += cost_report_rows(body, context, directory, start=first, end=end)
        return rows

    def sync(self, window: SyncWindow, context: SyncContext) -> Iterator[Page]:
        """One page per UTC day of ``window`` (the first and last may be partial), read a week at a time: each
        day's cost rows and its hours' usage rows. A day whose midnight precedes ``window.start`` keeps the cost
        rows stored before; :meth:`sync_window` widens windows so that never leaves a settling day unread."""
        directory = self.directory()
        remembered = context.state.get(COST_SOURCE_STATE)

        def read(start: datetime, end: datetime) -> list[UsageRow]:
            nonlocal remembered
            usage = self._usage(start, end, context, directory)
            rows = self._costs(start, end, context, directory, usage) + usage
            if self.cost_source is not None and self.cost_source != remembered:
                context.remember(COST_SOURCE_STATE, self.cost_source)
                remembered = self.cost_source
            return rows

        yield from day_pages(
            window, read, days_per_read=DAYS_PER_REQUEST, requests_sent=lambda: self.client.requests_sent
        )
