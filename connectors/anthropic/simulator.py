"""A simulator of Anthropic's Admin API for usage, cost and keys, serving real HTTP on loopback (tests and demos).

It answers the GET operations the Anthropic connector reads, shaped as ``shared/anthropic/README.md`` and the
official SDK's types describe them, under ``/v1``: ``organizations/me``, ``usage_report/messages``, ``cost_report``,
the beta cost analytics (``analytics/cost``), ``api_keys`` and ``workspaces``. The server, routing, faults, keys,
paging and the ``/_sim`` control plane are the connector kit's (:mod:`connector_sdk.kit.simulator`); this module is
what is Anthropic about it. Usage is synthetic but deterministic: an organization's hour is a pure function of
(seed, organization, hour), built on demand and cached.

Choices made where the facts are silent:

* An hour's usage is visible in full once the hour has started; a day's cost is the priced usage of its started
  hours, times ``1 + 0.03 * revision`` (:meth:`AnthropicSimulator.restate` bumps a day's revision, as cost that
  lands late changes a day already read).
* Prices are list prices in cents per token; batch is half price; an organization's negotiated discount on some
  models makes ``amount`` lower than ``list_amount``. Money is sent as exact decimal strings of (fractional) cents.
* ``/api_keys`` without ``status`` lists active keys only, so a reader that wants every key asks for each status.
* The cost analytics endpoint answers one row per (bucket, group) as ``{starting_at, ending_at, group, cost}``,
  paged by buckets; a grouped bucket holds the ``max_groups`` (100) largest groups and no remainder row.
* ``analytics`` of an organization is ``"on"``, ``"forbidden"`` (403: the key lacks ``read:analytics``) or
  ``"absent"`` (404: the beta is not offered), for the connector's fallback to the cost report.
* A deleted key (:meth:`AnthropicSimulator.revoke_key` on a listed key) leaves every listing; its usage goes on
  being reported under its id.
* Traffic added by :meth:`AnthropicSimulator.add_traffic` is steady (a random stream of its own, so the rest of the
  organization's usage stays as it was) and, like any source stopped by :meth:`AnthropicSimulator.stop_traffic`,
  shows only in hours that start in its ``[since, until)``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any

from connector_sdk.kit.simulator import (
    ApiError,
    Fault,
    PageSize,
    Request,
    SimKey,
    Simulator,
    after_page,
    control_call,
    decode_offset,
    encode_offset,
    instant,
    utc,
)

__all__ = ["MODELS", "AnthropicSimulator", "Fault"]

API_VERSION = "2023-06-01"
ANALYTICS_BETA = "analytics-usage-cost-2026-08-24"
ANALYTICS_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
TOKEN_TYPES = (
    "uncached_input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation.ephemeral_1h_input_tokens",
    "cache_creation.ephemeral_5m_input_tokens",
)
_DESCRIPTIONS = {
    "uncached_input_tokens": "Input Tokens",
    "output_tokens": "Output Tokens",
    "cache_read_input_tokens": "Cache Read Input Tokens",
    "cache_creation.ephemeral_1h_input_tokens": "Cache Write Input Tokens (1h)",
    "cache_creation.ephemeral_5m_input_tokens": "Cache Write Input Tokens (5m)",
}
WEB_SEARCH_CENTS = Decimal(1)
"""$10 per 1,000 searches."""

# model -> (display name, cents per token of each token type in TOKEN_TYPES' order)
MODELS: dict[str, tuple[str, tuple[Decimal, ...]]] = {
    "claude-opus-4-1-20250805": (
        "Claude Opus 4.1",
        tuple(Decimal(c) for c in ("0.0015", "0.0075", "0.00015", "0.003", "0.001875")),
    ),
    "claude-sonnet-4-20250514": (
        "Claude Sonnet 4",
        tuple(Decimal(c) for c in ("0.0003", "0.0015", "0.00003", "0.0006", "0.000375")),
    ),
    "claude-3-5-haiku-20241022": (
        "Claude Haiku 3.5",
        tuple(Decimal(c) for c in ("0.00008", "0.0004", "0.000008", "0.00016", "0.0001")),
    ),
}
OPUS, SONNET, HAIKU = MODELS
_DISCOUNTS = {OPUS: Decimal("0.10"), SONNET: Decimal("0.05")}
"""The organization's negotiated discount per model (list price minus this share is billed)."""

USAGE_GROUPS = frozenset(
    {"api_key_id", "workspace_id", "model", "service_tier", "context_window", "inference_geo", "speed"}
    | {"account_id", "service_account_id"}
)
ANALYTICS_GROUPS = frozenset({"api_key_id", "workspace_id", "model", "cost_type", "token_type"})
COST_REPORT_GROUPS = frozenset({"workspace_id", "description"})
_WIDTHS = {"1h": HOUR, "1d": DAY}
_USAGE_LIMITS = {"1h": PageSize(24, 168, 168), "1d": PageSize(7, 31, 31)}


def _text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _hour_at_or_after(moment: datetime) -> datetime:
    """The start of the first hour that starts at or after ``moment``."""
    hour = utc(moment).replace(minute=0, second=0, microsecond=0)
    return hour if hour == utc(moment) else hour + HOUR


def _cents(value: Decimal) -> str:
    """Exact decimal text of an amount of cents, no exponent: ``"123.45"``, ``"0.0003"``."""
    return "0" if value == 0 else format(value.normalize(), "f")


def _instant(request: Request, name: str, *, required: bool = False) -> datetime | None:
    text = request.one(name)
    if text is None:
        if required:
            raise ApiError(400, f"{name}: Field required")
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace(" ", "+").replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, f"{name}: Input should be a valid RFC 3339 datetime, got {text!r}") from None
    if moment.tzinfo is None:
        raise ApiError(400, f"{name}: a timezone is required")
    return utc(moment)


def _floor(moment: datetime, width: timedelta) -> datetime:
    if width == DAY:
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return moment.replace(minute=0, second=0, microsecond=0)


def _groups(request: Request, allowed: frozenset[str]) -> set[str]:
    groups = set(request.many("group_by[]") or []) | set(request.many("group_by") or [])
    if unknown := sorted(groups - allowed):
        raise ApiError(400, f"group_by[]: unknown value {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
    return groups


def _filter(request: Request, name: str) -> frozenset[str] | None:
    values = request.many(name)
    return None if values is None else frozenset(values)


@dataclass
class _Key:
    """An API key of the organization's listing (``listed=False``: deleted, in no listing, usage kept)."""

    id: str
    name: str
    status: str
    workspace_id: str | None
    created_at: datetime
    listed: bool = True
    created_by: str | None = None

    @property
    def creator(self) -> str:
        return self.created_by or "user_01" + self.id[-22:]


@dataclass
class _Workspace:
    id: str
    name: str
    created_at: datetime
    archived_at: datetime | None = None


@dataclass(frozen=True)
class _Source:
    """Who uses what: a key (or ``None``: the Workbench) in a workspace (``None``: the default one), on a model.

    A ``steady`` source (a scenario's) draws from a random stream of its own; any source shows usage only in hours
    that start in ``[since, until)`` (``None``: unbounded)."""

    api_key_id: str | None
    workspace_id: str | None
    model: str
    activity: float
    scale: int
    steady: bool = False
    since: datetime | None = None
    until: datetime | None = None

    def shows(self, hour: datetime) -> bool:
        return (self.since is None or self.since <= hour) and (self.until is None or hour < self.until)

    def describe(self) -> dict[str, Any]:
        return {
            "api_key_id": self.api_key_id,
            "workspace_id": self.workspace_id,
            "model": self.model,
            "since": None if self.since is None else _text(self.since),
            "until": None if self.until is None else _text(self.until),
        }


@dataclass
class _Organization:
    name: str
    seed: int
    first_hour: datetime
    analytics: str = "on"
    id: str = ""
    workspaces: list[_Workspace] = field(default_factory=list)
    keys: list[_Key] = field(default_factory=list)
    sources: list[_Source] = field(default_factory=list)
    revisions: dict[datetime, int] = field(default_factory=dict)
    counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def new_id(self, prefix: str) -> str:
        digest = hashlib.sha256(f"{self.seed}:{self.name}:{next(self.counter)}".encode()).hexdigest()
        return f"{prefix}01{digest[:22]}"

    def hour_usage(self, hour: datetime) -> tuple[tuple[_Source, str, tuple[int, ...]], ...]:
        """``(source, service tier, quantities)`` of every busy source in ``hour``; quantities are TOKEN_TYPES'
        counts then web searches and requests."""
        return _hour_usage(self.name, self.seed, tuple(self.sources), self.first_hour, hour)


@lru_cache(maxsize=16384)
def _hour_usage(
    name: str, seed: int, sources: tuple[_Source, ...], first_hour: datetime, hour: datetime
) -> tuple[tuple[_Source, str, tuple[int, ...]], ...]:
    if hour < first_hour:
        return ()
    shared = random.Random(f"{seed}:{name}:{hour.isoformat()}")
    busy = []
    for index, source in enumerate(sources):
        rng = random.Random(f"{seed}:{name}:{hour.isoformat()}:{index}") if source.steady else shared
        if rng.random() >= source.activity:
            continue
        # Bounds are applied after the draws, so a source stopped early leaves the others' usage as it was.
        shown = source.shows(hour)
        for tier in ("standard", "batch") if rng.random() < 0.3 else ("standard",):
            requests = rng.randint(1, source.scale)
            uncached = requests * rng.randint(200, 6000)
            output = requests * rng.randint(20, 1500)
            cache_read = rng.choice((0, uncached * 3))
            write_1h = rng.choice((0, 0, requests * rng.randint(100, 2000)))
            write_5m = rng.choice((0, requests * rng.randint(100, 4000)))
            searches = rng.choice((0, 0, 0, rng.randint(1, 5)))
            if shown:
                busy.append((source, tier, (uncached, output, cache_read, write_1h, write_5m, searches, requests)))
    return tuple(busy)


@dataclass
class _Charge:
    amount: Decimal = Decimal(0)
    list_amount: Decimal = Decimal(0)
    requests: int = 0


class AnthropicSimulator(Simulator):
    """Anthropic's Admin API on loopback: organizations with deterministic usage, priced cost, keys and faults.

    ``now`` decides what exists: usage for hours that started in ``[now - history_days, now)``. ``max_groups`` caps
    the groups of one cost analytics bucket (Anthropic's cap is 100); ``max_buckets`` and ``max_list_limit`` cap
    a report page's buckets and a listing page's items, so that tests can make every kind of page.
    """

    name = "anthropic-simulator"
    api_prefix = "/v1"
    error_kinds = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        405: "invalid_request_error",
        429: "rate_limit_error",
        500: "api_error",
        529: "overloaded_error",
    }
    default_error_kind = "invalid_request_error"

    def __init__(
        self,
        *,
        now: datetime | None = None,
        history_days: int = 35,
        seed: int = 1,
        max_groups: int = 100,
        max_buckets: int | None = None,
        max_list_limit: int = 1000,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
    ) -> None:
        super().__init__(host=host, port=port, latency=latency, now=now)
        if max_groups < 1 or max_list_limit < 1 or (max_buckets is not None and max_buckets < 1):
            raise ValueError("max_groups, max_buckets and max_list_limit must be >= 1")
        self.history_days = history_days
        self.seed = seed
        self.max_groups = max_groups
        self.max_buckets = max_buckets
        self.max_list_limit = max_list_limit
        self._orgs: dict[str, _Organization] = {}
        self._request_ids = itertools.count(1)
        for path, handler in (
            ("/organizations/me", self._get_me),
            ("/organizations/usage_report/messages", self._get_usage),
            ("/organizations/cost_report", self._get_cost_report),
            ("/organizations/analytics/cost", self._get_analytics_cost),
            ("/organizations/api_keys", self._get_api_keys),
            ("/organizations/workspaces", self._get_workspaces),
        ):
            self.routes.add("GET", path, handler, auth="admin")
        self.control_routes.add("PATCH", "/keys/{key_id}", control_call(self.update_key))
        self.control_routes.add("POST", "/traffic", control_call(self.add_traffic, status=201))
        self.control_routes.add("POST", "/traffic/stop", control_call(self.stop_traffic))

    # -- organizations and keys ------------------------------------------------------------------------------
    def add_organization(self, name: str, *, analytics: str = "on") -> str:
        """Create an organization with workspaces, keys of every status and traffic; return an Admin key.

        Workspaces ``Production``, ``Research`` and the archived ``Old experiments``, besides the default one.
        Keys ``Production backend``, ``Batch summarizer`` (Production), ``Research notebook`` (inactive, Research),
        ``Old prototype`` (archived, Old experiments), ``CI smoke tests`` (expired, default workspace), and a
        deleted key in Research that no listing names; Workbench use (no key) in the default workspace and in
        Research.
        """
        if name in self._orgs:
            raise ValueError(f"organization {name!r} already exists")
        if analytics not in ("on", "forbidden", "absent"):
            raise ValueError("analytics must be 'on', 'forbidden' or 'absent'")
        created = self.now.replace(microsecond=0) - timedelta(days=self.history_days + 30)
        first_hour = _floor(self.now, HOUR) - timedelta(days=self.history_days)
        org = _Organization(name, self.seed, first_hour, analytics)
        org.id = org.new_id("org_")
        production, research, old = (
            _Workspace(org.new_id("wrkspc_"), label, created + timedelta(hours=i))
            for i, label in enumerate(("Production", "Research", "Old experiments"))
        )
        old.archived_at = self.now.replace(microsecond=0) - timedelta(days=2)
        org.workspaces += [production, research, old]

        def key(label: str, status: str, workspace: _Workspace | None, listed: bool = True) -> str:
            record = _Key(org.new_id("apikey_"), label, status, workspace and workspace.id, created, listed)
            org.keys.append(record)
            return record.id

        backend = key("Production backend", "active", production)
        batch = key("Batch summarizer", "active", production)
        notebook = key("Research notebook", "inactive", research)
        prototype = key("Old prototype", "archived", old)
        smoke = key("CI smoke tests", "expired", None)
        deleted = key("Deleted key", "archived", research, listed=False)
        org.sources = [
            _Source(backend, production.id, SONNET, 0.9, 40),
            _Source(backend, production.id, OPUS, 0.6, 8),
            _Source(batch, production.id, HAIKU, 0.7, 60),
            _Source(batch, production.id, SONNET, 0.5, 20),
            _Source(notebook, research.id, OPUS, 0.5, 5),
            _Source(prototype, old.id, HAIKU, 0.4, 10),
            _Source(smoke, None, HAIKU, 0.5, 3),
            _Source(deleted, research.id, SONNET, 0.5, 6),
            _Source(None, None, SONNET, 0.6, 4),
            _Source(None, research.id, OPUS, 0.4, 3),
        ]
        self._orgs[name] = org
        return self.issue_key(name, scope="admin", name="Spend reader")

    def issue_key(
        self,
        account: str,
        *,
        scope: str = "admin",
        name: str | None = None,
        workspace_id: str | None = None,
        created_at: datetime | str | None = None,
        created_by: str | None = None,
    ) -> str:
        """Issue an Admin key (``scope="admin"``) or a workspace API key (``"workspace"``, listed by
        ``/api_keys`` and refused by the Admin API with 403); returns the secret. A workspace key is made in
        ``workspace_id`` (default: the first workspace; ``"default"``: the default workspace) by the user
        ``created_by``; ``created_at`` (default ``now``) back-dates it, as a key made long ago and never used."""
        if scope not in ("admin", "workspace"):
            raise ValueError("scope must be 'admin' or 'workspace'")
        org = self._org(account)
        workspace = self._workspace(org, workspace_id)
        key_id = org.new_id("apikey_" if scope == "workspace" else "adminkey_")
        prefix = "sk-ant-admin01-" if scope == "admin" else "sk-ant-api03-"
        secret = prefix + hashlib.sha256(f"{org.seed}:{key_id}:secret".encode()).hexdigest()
        created = (self.now if created_at is None else instant(created_at)).replace(microsecond=0)
        self.keyring.add(SimKey(key_id, secret, account, scope, name or key_id, created.isoformat()))
        if scope == "workspace":
            org.keys.append(_Key(key_id, name or "Issued key", "active", workspace, created, created_by=created_by))
        return secret

    def revoke_key(self, key: str) -> None:
        """Revoke a key by its id or its secret: it gets 401 from then on. A key the listing names (by its id) is
        deleted: no listing names it any more, and its usage goes on being reported."""
        found = self.keyring.verify(key)
        key_id = found.key_id if found is not None else key
        listed = [k for org in self._orgs.values() for k in org.keys if k.id == key_id and k.listed]
        for record in listed:
            record.listed = False
        try:
            self.keyring.revoke(key_id)
        except KeyError:
            if not listed:
                raise

    def update_key(self, key_id: str, *, name: str | None = None, status: str | None = None) -> dict[str, Any]:
        """Change what ``/api_keys`` says of a listed key (``PATCH /_sim/keys/{key_id}``): rename it, or set its
        status (``active``, ``inactive``, ``archived``, ``expired``), as an admin or the calendar would."""
        record = self._listed(key_id)
        if status is not None:
            if status not in ("active", "inactive", "archived", "expired"):
                raise ValueError("status must be 'active', 'inactive', 'archived' or 'expired'")
            record.status = status
        if name is not None:
            if not name.strip():
                raise ValueError("'name' must not be empty")
            record.name = name
        return {"key_id": key_id, "name": record.name, "status": record.status}

    def add_traffic(
        self,
        account: str,
        *,
        key_id: str | None = None,
        workspace_id: str | None = None,
        model: str = SONNET,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        activity: float = 1.0,
        scale: int = 5,
    ) -> dict[str, Any]:
        """Make requests from now on, as a scenario needs (``POST /_sim/traffic``); returns the source described.

        ``key_id`` spends with a key of the organization (listed or deleted) in its workspace; an id the
        organization never issued spends in ``workspace_id`` (default: the default workspace), a key no listing
        names. Without ``key_id`` it is Workbench use (``api_key_id`` null) in ``workspace_id``. Usage shows in
        hours that start in ``[since, until)``; ``since`` defaults to the key's creation for a known key, else the
        start of the history. Each hour it is busy with chance ``activity`` (1: every hour), up to ``scale``
        requests, on ``model``.
        """
        org = self._org(account)
        if model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)}")
        if not 0 < activity <= 1 or scale < 1:
            raise ValueError("'activity' must be in (0, 1] and 'scale' >= 1")
        known = next((k for k in org.keys if k.id == key_id), None)
        if known is not None:
            workspace = known.workspace_id
        else:
            workspace = None if workspace_id in (None, "default") else self._workspace(org, workspace_id)
        start = instant(since) if since is not None else known.created_at if known is not None else None
        source = _Source(
            key_id,
            workspace,
            model,
            activity,
            scale,
            steady=True,
            since=None if start is None else _hour_at_or_after(start),
            until=None if until is None else _hour_at_or_after(instant(until)),
        )
        org.sources.append(source)
        return {"account": account, **source.describe()}

    def stop_traffic(self, account: str, *, key_id: str | None, at: datetime | str | None = None) -> dict[str, Any]:
        """End the usage of every source of ``key_id`` from the first hour starting at or after ``at`` (default
        ``now``), the organization's own sources included: an idle key from then on (``POST /_sim/traffic/stop``).
        ``key_id`` null (said, not left out) ends the Workbench's use, which no key makes. ``KeyError`` when there
        is no such traffic."""
        org = self._org(account)
        end = _hour_at_or_after(self.now if at is None else instant(at))
        stopped = []
        for index, source in enumerate(org.sources):
            if source.api_key_id == key_id:
                until = end if source.until is None else min(source.until, end)
                org.sources[index] = replace(source, until=until)
                stopped.append(org.sources[index])
        if not stopped:
            raise KeyError(f"no traffic from {key_id or 'the Workbench'!r} in organization {account!r}")
        return {"account": account, "stopped": [source.describe() for source in stopped]}

    def _listed(self, key_id: str) -> _Key:
        for org in self._orgs.values():
            for record in org.keys:
                if record.id == key_id and record.listed:
                    return record
        raise KeyError(f"no listed key {key_id!r}")

    @staticmethod
    def _workspace(org: _Organization, workspace_id: str | None) -> str | None:
        """The id of ``workspace_id`` (default: the first workspace; ``"default"``: the default one, ``None``)."""
        if workspace_id == "default":
            return None
        if workspace_id is None:
            return org.workspaces[0].id
        if not any(w.id == workspace_id for w in org.workspaces):
            raise KeyError(f"unknown workspace {workspace_id!r}")
        return workspace_id

    def restate(self, account: str, day: datetime) -> None:
        """Change the cost of the UTC day containing ``day`` by 3%, as cost that lands late does."""
        org = self._org(account)
        start = _floor(utc(day), DAY)
        org.revisions[start] = org.revisions.get(start, 0) + 1

    def describe(self) -> dict[str, Any]:
        organizations = [
            {
                "account": name,
                "analytics": org.analytics,
                "keys": [{"key_id": k.key_id, "scope": k.scope, "revoked": k.revoked} for k in self.keyring.of(name)],
                "api_keys": [
                    {"id": k.id, "name": k.name, "status": k.status, "workspace_id": k.workspace_id, "listed": k.listed}
                    for k in org.keys
                ],
                "workspaces": [{"id": w.id, "name": w.name} for w in org.workspaces],
                "traffic": [source.describe() for source in org.sources],
            }
            for name, org in self._orgs.items()
        ]
        return {**super().describe(), "accounts": organizations, "max_groups": self.max_groups}

    # -- the vendor's conventions ------------------------------------------------------------------------------
    def error_body(self, status: int, kind: str, message: str, details: Mapping[str, Any]) -> bytes:
        return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()

    def authenticate(self, request: Request, requirement: Any) -> _Organization:
        secret = (request.headers.get("x-api-key") or "").strip()
        key = self.keyring.verify(secret) if secret else None
        if key is None:
            raise ApiError(401, "invalid x-api-key")
        if request.headers.get("anthropic-version") != API_VERSION:
            raise ApiError(400, "anthropic-version: header is required and must be a supported version")
        if key.scope != "admin":
            raise ApiError(
                403, "This API key does not have permission to use the Admin API; an Admin API key is required."
            )
        return self._orgs[key.account]

    def _org(self, name: str) -> _Organization:
        try:
            return self._orgs[name]
        except KeyError:
            raise KeyError(f"unknown organization {name!r}") from None

    # -- what exists -------------------------------------------------------------------------------------------
    def _started_hours(self, org: _Organization, start: datetime, end: datetime) -> Iterable[datetime]:
        hour = max(_floor(start, HOUR) if start == _floor(start, HOUR) else _floor(start, HOUR) + HOUR, org.first_hour)
        while hour < end and hour < self.now:
            yield hour
            hour += HOUR

    def _charges(self, org: _Organization, day: datetime) -> dict[tuple[Any, ...], _Charge]:
        """The day's cost by (key, workspace, model, tier, cost type, token type), as billed by ``now``."""
        factor = 1 + Decimal("0.03") * org.revisions.get(day, 0)
        charges: dict[tuple[Any, ...], _Charge] = {}
        for hour in self._started_hours(org, day, day + DAY):
            for source, tier, counts in org.hour_usage(hour):
                prices = MODELS[source.model][1]
                share = Decimal("0.5") if tier == "batch" else Decimal(1)
                discount = 1 - _DISCOUNTS.get(source.model, Decimal(0))
                lines = [("tokens", t, counts[i] * prices[i] * share) for i, t in enumerate(TOKEN_TYPES)]
                lines.append(("web_search", None, counts[5] * WEB_SEARCH_CENTS))
                first = True
                for cost_type, token_type, listed in lines:
                    if not listed:
                        continue
                    charge = charges.setdefault(
                        (source.api_key_id, source.workspace_id, source.model, tier, cost_type, token_type), _Charge()
                    )
                    charge.list_amount += listed * factor
                    charge.amount += listed * discount * factor
                    if first:  # a request is counted once, on its first billed line
                        charge.requests += counts[6]
                        first = False
        return charges

    def truth(self, account: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """What the API serves for ``[start, end)``: usage per (hour, key, workspace, model, unit) summed over
        service tiers, and cost per (day, key, workspace, model) in cents for each day that starts in the window."""
        org = self._org(account)
        start, end = utc(start), utc(end)
        out: list[dict[str, Any]] = []
        units = (*TOKEN_TYPES, "web_search_requests")
        for hour in self._started_hours(org, start, end):
            usage: dict[tuple[Any, ...], list[int]] = {}
            for source, _tier, counts in org.hour_usage(hour):
                slot = usage.setdefault((source.api_key_id, source.workspace_id, source.model), [0] * 6)
                for i in range(6):
                    slot[i] += counts[i]
            for (key, workspace, model), counts in usage.items():
                for unit, count in zip(units, counts, strict=True):
                    if count:
                        out.append(
                            {"kind": "usage", "period_start": hour, "api_key_id": key, "workspace_id": workspace}
                            | {"model": model, "unit": unit, "quantity": count}
                        )
        day = _floor(start, DAY) if start == _floor(start, DAY) else _floor(start, DAY) + DAY
        while day < end and day < self.now:
            costs: dict[tuple[Any, ...], _Charge] = {}
            for (key, workspace, model, *_), charge in self._charges(org, day).items():
                slot = costs.setdefault((key, workspace, model), _Charge())
                slot.amount += charge.amount
                slot.list_amount += charge.list_amount
                slot.requests += charge.requests
            for (key, workspace, model), charge in costs.items():
                out.append(
                    {"kind": "cost", "period_start": day, "api_key_id": key, "workspace_id": workspace}
                    | {"model": model, "amount": charge.amount, "list_amount": charge.list_amount}
                    | {"requests": charge.requests}
                )
            day += DAY
        return out

    # -- paging of reports ---------------------------------------------------------------------------------------
    def _bucket_starts(
        self, request: Request, width: timedelta, limits: PageSize, *, end: datetime | None = None
    ) -> tuple[list[datetime], str | None]:
        start = _instant(request, "starting_at", required=True)
        assert start is not None
        end = end or _instant(request, "ending_at") or self.now
        first = _floor(start, width)
        starts = []
        moment = first
        while moment < end and moment < self.now:
            starts.append(moment)
            moment += width
        offset = decode_offset(request.one("page"), param="page")
        size = limits.read(request.one("limit"))
        size = min(size, self.max_buckets or size)
        chosen = starts[offset : offset + size]
        more = offset + size < len(starts)
        return chosen, encode_offset(offset + size) if more else None

    @staticmethod
    def _page(data: list[Any], next_page: str | None) -> dict[str, Any]:
        return {"data": data, "has_more": next_page is not None, "next_page": next_page}

    # -- endpoints -------------------------------------------------------------------------------------------------
    def _get_me(self, request: Request) -> dict[str, Any]:
        org: _Organization = request.principal
        return {"id": org.id, "type": "organization", "name": org.name}

    def _get_usage(self, request: Request) -> dict[str, Any]:
        org: _Organization = request.principal
        width_name = request.one("bucket_width") or "1d"
        if width_name not in _WIDTHS:
            raise ApiError(400, f"bucket_width: this simulator serves '1h' and '1d', not {width_name!r}")
        width = _WIDTHS[width_name]
        groups = _groups(request, USAGE_GROUPS)
        keys, workspaces, models, tiers = (
            _filter(request, name) for name in ("api_key_ids[]", "workspace_ids[]", "models[]", "service_tiers[]")
        )
        chosen, next_page = self._bucket_starts(request, width, _USAGE_LIMITS[width_name])
        data = []
        for bucket in chosen:
            totals: dict[tuple[Any, ...], list[int]] = {}
            for hour in self._started_hours(org, bucket, bucket + width):
                for source, tier, counts in org.hour_usage(hour):
                    if (
                        (keys is not None and source.api_key_id not in keys)
                        or (workspaces is not None and source.workspace_id not in workspaces)
                        or (models is not None and source.model not in models)
                        or (tiers is not None and tier not in tiers)
                    ):
                        continue
                    group = (
                        source.api_key_id if "api_key_id" in groups else None,
                        source.workspace_id if "workspace_id" in groups else None,
                        source.model if "model" in groups else None,
                        tier if "service_tier" in groups else None,
                    )
                    slot = totals.setdefault(group, [0] * 6)
                    for i in range(6):
                        slot[i] += counts[i]
            results = [
                {
                    "api_key_id": key,
                    "workspace_id": workspace,
                    "model": model,
                    "service_tier": tier,
                    "context_window": None,
                    "inference_geo": None,
                    "uncached_input_tokens": counts[0],
                    "cache_read_input_tokens": counts[2],
                    "cache_creation": {"ephemeral_1h_input_tokens": counts[3], "ephemeral_5m_input_tokens": counts[4]},
                    "output_tokens": counts[1],
                    "server_tool_use": {"web_search_requests": counts[5]},
                }
                for (key, workspace, model, tier), counts in totals.items()
            ]
            data.append({"starting_at": _text(bucket), "ending_at": _text(bucket + width), "results": results})
        return self._page(data, next_page)

    def _get_cost_report(self, request: Request) -> dict[str, Any]:
        org: _Organization = request.principal
        if (request.one("bucket_width") or "1d") != "1d":
            raise ApiError(400, "bucket_width: only '1d' is supported")
        groups = _groups(request, COST_REPORT_GROUPS)
        chosen, next_page = self._bucket_starts(request, DAY, PageSize(7, 31, 31))
        data = []
        for day in chosen:
            totals: dict[tuple[Any, ...], Decimal] = {}
            for (_key, workspace, model, tier, cost_type, token_type), charge in self._charges(org, day).items():
                described = "description" in groups
                name = MODELS[model][0] + (" Batch" if tier == "batch" else "")
                what = _DESCRIPTIONS[token_type] if token_type else "Web Search"
                group = (
                    workspace if "workspace_id" in groups else None,
                    f"{name} Usage - {what}" if described else None,
                    model if described and cost_type == "tokens" else None,
                    cost_type if described else None,
                    token_type if described else None,
                    tier if described and cost_type == "tokens" else None,
                )
                totals[group] = totals.get(group, Decimal(0)) + charge.amount
            results = [
                {
                    "amount": _cents(amount),
                    "currency": "USD",
                    "workspace_id": workspace,
                    "description": description,
                    "model": model,
                    "cost_type": cost_type,
                    "token_type": token_type,
                    "service_tier": tier,
                    "context_window": "0-200k" if token_type else None,
                    "inference_geo": None,
                }
                for (workspace, description, model, cost_type, token_type, tier), amount in totals.items()
            ]
            data.append({"starting_at": _text(day), "ending_at": _text(day + DAY), "results": results})
        return self._page(data, next_page)

    def _get_analytics_cost(self, request: Request) -> dict[str, Any]:
        org: _Organization = request.principal
        betas = {b.strip() for b in (request.headers.get("anthropic-beta") or "").split(",")}
        if org.analytics == "absent":
            raise ApiError(404, "Not found: the cost analytics API is not available to this organization")
        if ANALYTICS_BETA not in betas:
            raise ApiError(400, f"this endpoint is in beta: send the anthropic-beta: {ANALYTICS_BETA} header")
        if org.analytics == "forbidden":
            raise ApiError(403, "This API key does not have the read:analytics scope required by this endpoint")
        start = _instant(request, "starting_at", required=True)
        assert start is not None
        if start < ANALYTICS_EPOCH or start < self.now - timedelta(days=365):
            raise ApiError(400, "starting_at: must be within the last 365 days and not before 2026-01-01T00:00:00Z")
        end = _instant(request, "ending_at") or min(self.now, start + timedelta(days=31))
        if end - start > timedelta(days=31):
            raise ApiError(400, "ending_at: the range may span at most 31 days")
        width_name = request.one("time_bucket_width") or "1d"
        if width_name != "1d":
            raise ApiError(400, f"time_bucket_width: this simulator serves '1d', not {width_name!r}")
        groups = _groups(request, ANALYTICS_GROUPS)
        keys, workspaces, models = (_filter(request, n) for n in ("api_key_ids[]", "workspace_ids[]", "models[]"))
        chosen, next_page = self._bucket_starts(request, DAY, PageSize(7, 31, 31), end=end)
        order = ("api_key_id", "workspace_id", "model", "cost_type", "token_type")
        data = []
        for day in chosen:
            totals: dict[tuple[Any, ...], _Charge] = {}
            for (key, workspace, model, _tier, cost_type, token_type), charge in self._charges(org, day).items():
                if (
                    (keys is not None and key not in keys)
                    or (workspaces is not None and workspace not in workspaces)
                    or (models is not None and model not in models)
                ):
                    continue
                values = dict(zip(order, (key, workspace, model, cost_type, token_type), strict=True))
                group = tuple(values[name] if name in groups else None for name in order)
                slot = totals.setdefault(group, _Charge())
                slot.amount += charge.amount
                slot.list_amount += charge.list_amount
                slot.requests += charge.requests
            ranked = sorted(totals.items(), key=lambda item: (-item[1].amount, repr(item[0])))
            if groups:
                ranked = ranked[: self.max_groups]  # the rest has no row, and no remainder row either
            split_requests = bool(groups & {"cost_type", "token_type"})
            for group, charge in ranked:
                cost = {
                    "amount": _cents(charge.amount),
                    "list_amount": _cents(charge.list_amount),
                    "currency": "USD",
                    "requests": None if split_requests else charge.requests,
                }
                shown = {name: value for name, value in zip(order, group, strict=True) if name in groups}
                data.append({"starting_at": _text(day), "ending_at": _text(day + DAY), "group": shown, "cost": cost})
        return self._page(data, next_page)

    def _listing(self, request: Request, items: list[dict[str, Any]]) -> dict[str, Any]:
        limit = PageSize(20, self.max_list_limit, 1000).read(request.one("limit"))
        page, more = after_page(items, request.one("after_id"), limit, lambda item: item["id"])
        return {
            "data": list(page),
            "has_more": more,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
        }

    def _get_api_keys(self, request: Request) -> dict[str, Any]:
        org: _Organization = request.principal
        status = request.one("status") or "active"
        if status not in ("active", "inactive", "archived", "expired"):
            raise ApiError(400, f"status: unknown value {status!r}")
        workspace = request.one("workspace_id")
        items = [
            {
                "id": k.id,
                "type": "api_key",
                "name": k.name,
                "created_at": _text(k.created_at),
                "created_by": {"id": k.creator, "type": "user"},
                "expires_at": None,
                "partial_key_hint": f"sk-ant-api03-{k.id[-3:]}...{k.id[-6:-3]}",
                "status": k.status,
                "workspace_id": k.workspace_id,
            }
            for k in org.keys
            if k.listed and k.status == status and (workspace is None or k.workspace_id == workspace)
        ]
        return self._listing(request, items)

    def _get_workspaces(self, request: Request) -> dict[str, Any]:
        org: _Organization = request.principal
        archived = (request.one("include_archived") or "false").lower() == "true"
        items = [
            {
                "id": w.id,
                "type": "workspace",
                "name": w.name,
                "created_at": _text(w.created_at),
                "archived_at": None if w.archived_at is None else _text(w.archived_at),
                "display_color": "#6C5BB9",
            }
            for w in org.workspaces
            if archived or w.archived_at is None
        ]
        return self._listing(request, items)
