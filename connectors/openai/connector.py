"""The OpenAI connector: daily billed cost and hourly usage per API key and project, from OpenAI's organization
Admin APIs (costs, usage, projects and their keys, Admin keys)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from connector_sdk.connector import Connector, packaged_manifest
from connector_sdk.errors import CredentialError
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
    utcnow,
)
from connector_sdk.paging import DAY, day_pages, floor_day, follow_cursor, has_more_cursor
from connectors.openai.config import OpenAIConfig
from connectors.openai.mapping import (
    USAGE_ENDPOINTS,
    Directory,
    OpenAIKey,
    cost_rows,
    list_data,
    listed_keys,
    parse_admin_key,
    parse_project,
    parse_project_key,
    usage_rows,
)

SETUP_HINT = (
    "An Organization Owner creates one at platform.openai.com under Settings > Organization > Admin keys "
    "(Create new admin key; read-only permissions are enough); then reconnect with it."
)
ORGANIZATION_HEADER = "openai-organization"
DAYS_PER_REQUEST = 7
"""Days read per request: 168 hourly buckets, the most one usage page holds."""
LIST_LIMIT = 100
GROUP_COSTS_BY = ["api_key_id", "project_id", "line_item"]
GROUP_USAGE_BY = ["api_key_id", "project_id", "model", "user_id"]


def openai_auth_error(status: int, message: str) -> CredentialError:
    """401: the key is unknown or revoked; 403: a valid key that may not read usage (a project key, say)."""
    if status == 403:
        return CredentialError(
            "OpenAI accepted the key but it may not read the organization's usage and costs: they need an Admin "
            f"key (sk-admin-...), not a project or user key (OpenAI said: {message}). {SETUP_HINT}",
            kind="insufficient_scope",
            status=status,
        )
    return CredentialError(
        f"OpenAI rejected the key: it is invalid, mistyped or revoked (OpenAI said: {message}). {SETUP_HINT}",
        kind="invalid",
        status=status,
    )


def _unix(moment: datetime) -> int:
    return int(moment.timestamp())


class OpenAIConnector(Connector):
    id = "openai"
    config_model = OpenAIConfig
    config: OpenAIConfig

    def __init__(
        self, config: OpenAIConfig, *, cancel: threading.Event | None = None, retry: RetryPolicy | None = None
    ) -> None:
        super().__init__(config, cancel=cancel)
        self.client = ApiClient(
            config.base_url,
            authorization=lambda: f"Bearer {config.api_key.get_secret_value()}",
            vendor="OpenAI",
            timeout=(min(10.0, config.timeout_seconds), config.timeout_seconds),
            retry=retry or RetryPolicy.from_env(),
            auth_error=openai_auth_error,
            sleep=self.sleep,
        )

    def __repr__(self) -> str:
        return f"OpenAIConnector(base_url={self.config.base_url!r})"

    @classmethod
    def manifest(cls) -> Manifest:
        return packaged_manifest("connectors.openai", "openai")

    def close(self) -> None:
        self.client.close()

    def check(self) -> AccountInfo:
        """Read a day of costs (only an Admin key may) and name the organization OpenAI says the key belongs to."""
        today = floor_day(utcnow())
        answer = self.client.get_answer(
            "/organization/costs",
            {"start_time": _unix(today - DAY), "end_time": _unix(today + DAY), "bucket_width": "1d", "limit": 2},
        )
        directory = self.directory()
        account = answer.headers.get(ORGANIZATION_HEADER) or "OpenAI organization"
        details = {
            "projects": len(directory.projects),
            "project_keys": sum(key.scope == "project" for key in directory.keys.values()),
            "admin_keys": sum(key.scope == "admin" for key in directory.keys.values()),
        }
        return AccountInfo(account=account, details=details)

    def sync_window(self, window: SyncWindow) -> SyncWindow:
        """Whole days, reaching back ``restated_days`` before the window's last day: OpenAI restates recent costs."""
        restated = floor_day(window.end - HOUR) - timedelta(days=self.config.restated_days)
        return SyncWindow(start=floor_day(min(window.start, restated)), end=window.end)

    # -- listings ----------------------------------------------------------------------------------------------
    def _listing(self, path: str, params: dict[str, Any], what: str) -> Iterator[dict[str, Any]]:
        """Every item of an ``after``/``has_more``/``last_id`` listing."""

        def fetch(after: str | None) -> Any:
            return self.client.get_json(path, {**params, "limit": LIST_LIMIT} | ({"after": after} if after else {}))

        for page in follow_cursor(fetch, what=what, cursor_of=has_more_cursor("last_id", what=what)):
            yield from list_data(page, what)

    def directory(self) -> Directory:
        """Projects (archived ones too), every project's keys and the Admin keys: what names the ids in costs."""
        directory = Directory()
        what = "OpenAI /organization/projects"
        for i, raw in enumerate(self._listing("/organization/projects", {"include_archived": "true"}, what)):
            project = parse_project(raw, f"{what} item {i}")
            directory.projects[project.id] = project
        for project_id in directory.projects:
            path = f"/organization/projects/{project_id}/api_keys"
            for i, raw in enumerate(self._listing(path, {}, f"OpenAI {path}")):
                key = parse_project_key(raw, project_id, f"OpenAI {path} item {i}")
                directory.keys[key.id] = key
        what = "OpenAI /organization/admin_api_keys"
        for i, raw in enumerate(self._listing("/organization/admin_api_keys", {}, what)):
            key = parse_admin_key(raw, f"{what} item {i}")
            directory.keys[key.id] = key
        return directory

    def inventory(self) -> list[OpenAIKey]:
        """The organization's key inventory: project keys with their owners, and Admin keys."""
        return list(self.directory().keys.values())

    def list_keys(self) -> list[ListedKey]:
        """Every project's keys (archived projects' too) with their owners and owners' access, and the Admin keys."""
        return listed_keys(self.directory(), now=utcnow())

    # -- costs and usage -----------------------------------------------------------------------------------------
    def _buckets(self, path: str, params: dict[str, Any], read: Callable[[Any], list[UsageRow]]) -> list[UsageRow]:
        """Every row of a ``page``/``next_page`` paged costs or usage query."""
        what = f"OpenAI {path}"

        def fetch(page: str | None) -> Any:
            return self.client.get_json(path, params | ({"page": page} if page else {}))

        rows: list[UsageRow] = []
        for body in follow_cursor(fetch, what=what, cursor_of=has_more_cursor("next_page", what=what)):
            rows += read(body)
        return rows

    def _costs(self, start: datetime, end: datetime, context: SyncContext, directory: Directory) -> list[UsageRow]:
        """The daily cost rows of every day whose midnight lies in ``[start, end)``."""
        first = floor_day(start) if floor_day(start) == start else floor_day(start) + DAY
        if first >= end:
            return []
        last = floor_day(end - HOUR) + DAY
        params = {
            "start_time": _unix(first),
            "end_time": _unix(last),
            "bucket_width": "1d",
            "group_by": GROUP_COSTS_BY,
            "limit": (last - first) // DAY,
        }
        return self._buckets(
            "/organization/costs",
            params,
            lambda body: cost_rows(body, context, directory, start=first, end=end),
        )

    def _usage(self, start: datetime, end: datetime, context: SyncContext, directory: Directory) -> list[UsageRow]:
        params = {
            "start_time": _unix(start),
            "end_time": _unix(end),
            "bucket_width": "1h",
            "group_by": GROUP_USAGE_BY,
            "limit": (end - start) // HOUR,
        }
        rows: list[UsageRow] = []
        for endpoint in USAGE_ENDPOINTS:
            rows += self._buckets(
                f"/organization/usage/{endpoint}",
                params,
                lambda body, endpoint=endpoint: usage_rows(body, endpoint, context, directory, start=start, end=end),
            )
        return rows

    def sync(self, window: SyncWindow, context: SyncContext) -> Iterator[Page]:
        """One page per UTC day of ``window`` (the first and last may be partial), read a week at a time: each
        day's cost row and its hours' usage rows. A day whose midnight precedes ``window.start`` keeps the cost
        rows stored before; :meth:`sync_window` widens windows so that never leaves a restated day unread."""
        directory = self.directory()

        def read(start: datetime, end: datetime) -> list[UsageRow]:
            return self._costs(start, end, context, directory) + self._usage(start, end, context, directory)

        yield from day_pages(
            window, read, days_per_read=DAYS_PER_REQUEST, requests_sent=lambda: self.client.requests_sent
        )
