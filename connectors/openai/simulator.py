"""A simulator of OpenAI's organization Admin APIs serving real HTTP on loopback, for tests and demos.

It answers the GET operations the OpenAI connector reads, shaped like ``shared/openai/openapi.json``: costs, the
usage endpoints, projects, each project's API keys and the Admin keys, all under ``/v1``. Usage is synthetic but
deterministic: an organization's hour is a pure function of (seed, organization, hour), built on demand and cached.
The server, routing, error envelopes, keys, faults, paging and the ``/_sim`` control plane are the connector kit's
(:mod:`connector_sdk.kit.simulator`); this module is what is OpenAI about it: the data model
(:class:`_Organization`: projects, keys, hourly usage, daily priced costs, restatements) and the endpoint handlers.

Choices made where OpenAI's documentation is silent:

* Buckets start at ``start_time`` floored to the bucket width and run to ``end_time`` (or ``now``), one per
  width, empty ones included; only buckets that have started by ``now`` are served. An hour's usage is visible
  once the hour has started.
* A day's cost is the priced usage of its hours that have started, times ``1 + 0.03 * revision``: ``restate``
  bumps a day's revision, as OpenAI restates recent days when billing settles.
* ``quantity``/``quantity_unit`` of a cost result are given when grouped by ``line_item``, null otherwise.
* ``next_page`` is ``page_`` and the base64 of the next bucket's offset; list cursors are key or project ids (an
  ``after`` that names none is a 400).
* A project key (``sk-proj-``) gets 403, an unknown or revoked key 401, in OpenAI's error envelope.
* ``user_id`` (under ``group_by=user_id``) is the person whose Playground use it was; key traffic carries none.
  The organization's own Playground use names nobody; :meth:`OpenAISimulator.add_traffic` adds a named person's.
* A key's ``last_used_at`` is the start of the last hour its usage shows (or a moment set by
  :meth:`OpenAISimulator.update_key`, whichever is later); ``null`` when it has none. An Admin key's is the
  last request it authenticated (or a moment set by hand, whichever is later).
* Traffic added by :meth:`OpenAISimulator.add_traffic` is steady (a random stream of its own, so the rest of the
  organization's usage stays as it was) and, like any source stopped by :meth:`OpenAISimulator.stop_traffic`,
  shows only in hours that start in its ``[since, until)``.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import random
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
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
    credentials,
    decode_offset,
    encode_offset,
    instant,
    json_bytes,
    offset_page,
)

__all__ = ["USAGE_FIELDS", "Fault", "OpenAISimulator", "main"]

API_PREFIX = "/v1"
HOUR = 3600
DAY = 86400
PAGE_PREFIX = "page_"

USAGE_FIELDS: dict[str, tuple[str, ...]] = {
    "completions": ("input_tokens", "output_tokens", "input_cached_tokens", "num_model_requests"),
    "embeddings": ("input_tokens", "num_model_requests"),
    "moderations": ("input_tokens", "num_model_requests"),
    "images": ("images", "num_model_requests"),
    "audio_speeches": ("characters", "num_model_requests"),
    "audio_transcriptions": ("seconds", "num_model_requests"),
}
"""The quantity fields each served usage endpoint reports."""

# (endpoint, model, {quantity field: (line item suffix, USD per unit, quantity_unit)}); moderations are free.
_CATALOGUE: tuple[tuple[str, str, dict[str, tuple[str, Decimal, str]]], ...] = (
    (
        "completions",
        "gpt-4o-2024-08-06",
        {
            "input_tokens": (", input", Decimal("0.0000025"), "tokens"),
            "output_tokens": (", output", Decimal("0.00001"), "tokens"),
            "input_cached_tokens": (", cached input", Decimal("0.00000125"), "tokens"),
        },
    ),
    (
        "completions",
        "gpt-4o-mini-2024-07-18",
        {
            "input_tokens": (", input", Decimal("0.00000015"), "tokens"),
            "output_tokens": (", output", Decimal("0.0000006"), "tokens"),
        },
    ),
    ("embeddings", "text-embedding-3-small", {"input_tokens": ("", Decimal("0.00000002"), "tokens")}),
    ("moderations", "omni-moderation-latest", {}),
    ("images", "dall-e-3", {"images": ("", Decimal("0.04"), "images")}),
    ("audio_speeches", "tts-1", {"characters": ("", Decimal("0.000015"), "characters")}),
    ("audio_transcriptions", "whisper-1", {"seconds": ("", Decimal("0.0001"), "duration_seconds")}),
)
_PRICES = {(endpoint, model): prices for endpoint, model, prices in _CATALOGUE}
_USAGE_GROUPS = frozenset({"project_id", "user_id", "api_key_id", "model"})
_COST_GROUPS = frozenset({"project_id", "line_item", "api_key_id"})


# -- the vendor's data model ---------------------------------------------------------------------------------------
@dataclass
class _Project:
    id: str
    name: str
    created_at: int
    archived_at: int | None = None


@dataclass
class _Source:
    """Who uses what: a key (or ``None``: the Playground, by ``user_id`` when named) in a project, on one model of
    one endpoint. A ``steady`` source (a scenario's) draws from a random stream of its own; any source shows usage
    only in hours that start in ``[since, until)`` (Unix seconds; ``None``: unbounded)."""

    api_key_id: str | None
    project_id: str
    endpoint: str
    model: str
    activity: float  # chance that the source is busy in an hour
    scale: int  # typical requests per busy hour
    user_id: str | None = None
    steady: bool = False
    since: int | None = None
    until: int | None = None

    def shows(self, hour: int) -> bool:
        return (self.since is None or self.since <= hour) and (self.until is None or hour < self.until)

    def describe(self) -> dict[str, Any]:
        def text(moment: int | None) -> str | None:
            return None if moment is None else datetime.fromtimestamp(moment, UTC).isoformat()

        return {
            "api_key_id": self.api_key_id,
            "user_id": self.user_id,
            "project_id": self.project_id,
            "endpoint": self.endpoint,
            "model": self.model,
            "since": text(self.since),
            "until": text(self.until),
        }


class _Organization:
    def __init__(self, name: str, seed: int, created: int, history_days: int) -> None:
        self.name = name
        self.seed = seed
        self.id = f"org-{hashlib.sha256(f'{seed}:{name}'.encode()).hexdigest()[:24]}"
        self.first_hour = created - history_days * DAY
        self.projects: list[_Project] = []
        self.keys: list[SimKey] = []
        self.sources: list[_Source] = []
        self.revisions: dict[int, int] = {}
        self._counter = itertools.count(1)

    def _id(self, prefix: str) -> str:
        digest = hashlib.sha256(f"{self.seed}:{self.name}:{next(self._counter)}".encode()).hexdigest()
        return f"{prefix}{digest[:24]}"

    def add_project(self, name: str, created_at: int, archived_at: int | None = None) -> _Project:
        project = _Project(self._id("proj_"), name, created_at, archived_at)
        self.projects.append(project)
        return project

    def add_key(self, scope: str, name: str, created_at: int, project_id: str | None = None, **extra: Any) -> SimKey:
        """A new key of this organization (not yet on the simulator's key ring); ``extra``: ``owner``,
        ``owner_project_access``, ``listed`` (``False``: deleted, in no listing, yet its past usage stays)."""
        prefix = "sk-admin-" if scope == "admin" else "sk-proj-"
        key = SimKey(
            key_id=self._id("key_"),
            secret=prefix + secrets.token_urlsafe(36),
            account=self.name,
            scope=scope,
            alias=name,
            created_at=datetime.fromtimestamp(created_at, UTC).isoformat(),
            extra={"project_id": project_id, "owner": {}, "owner_project_access": "active", "listed": True, **extra},
        )
        self.keys.append(key)
        return key

    @lru_cache(maxsize=8192)  # noqa: B019 - an organization lives as long as its simulator
    def hour_usage(self, hour: int) -> tuple[tuple[_Source, tuple[tuple[str, int], ...]], ...]:
        """The quantities of every busy source in ``hour``: a pure function of (seed, organization, hour)."""
        if hour < self.first_hour:
            return ()
        shared = random.Random(f"{self.seed}:{self.name}:{hour}")
        busy = []
        for index, source in enumerate(self.sources):
            rng = random.Random(f"{self.seed}:{self.name}:{hour}:{index}") if source.steady else shared
            if rng.random() >= source.activity:
                continue
            requests = rng.randint(1, source.scale)
            quantities = {"num_model_requests": requests}
            for name in USAGE_FIELDS[source.endpoint]:
                if name == "input_tokens":
                    quantities[name] = requests * rng.randint(50, 4000)
                elif name == "output_tokens":
                    quantities[name] = requests * rng.randint(10, 800)
                elif name == "input_cached_tokens":
                    quantities[name] = rng.choice((0, quantities["input_tokens"] // 2))
                elif name == "images":
                    quantities[name] = requests * rng.randint(1, 2)
                elif name == "characters":
                    quantities[name] = requests * rng.randint(100, 3000)
                elif name == "seconds":
                    quantities[name] = requests * rng.randint(5, 600)
            # Bounds are applied after the draws, so a source stopped early leaves the others' usage as it was.
            if source.shows(hour):
                busy.append((source, tuple(quantities.items())))
        return tuple(busy)

    def sources_changed(self) -> None:
        """Forget every generated hour: the sources changed."""
        _Organization.hour_usage.cache_clear()

    def day_costs(self, day: int, now: int) -> list[tuple[str | None, str, str, Decimal, int, str]]:
        """``(api_key_id, project_id, line_item, amount, quantity, quantity_unit)`` of ``day`` as billed by ``now``."""
        totals: dict[tuple[str | None, str, str, str], list[Any]] = {}
        for hour in range(day, min(day + DAY, now), HOUR):
            for source, quantities in self.hour_usage(hour):
                counts = dict(quantities)
                for name, (suffix, price, unit) in _PRICES[(source.endpoint, source.model)].items():
                    billed = counts.get(name, 0)
                    if name == "input_tokens":
                        billed -= counts.get("input_cached_tokens", 0)
                    if billed <= 0:
                        continue
                    slot = totals.setdefault(
                        (source.api_key_id, source.project_id, source.model + suffix, unit), [0, 0]
                    )
                    slot[0] += billed * price
                    slot[1] += billed
        factor = 1 + Decimal("0.03") * self.revisions.get(day, 0)
        return [
            (key, project, line_item, amount * factor, quantity, unit)
            for (key, project, line_item, unit), (amount, quantity) in totals.items()
        ]


# -- the simulator and its endpoint handlers ----------------------------------------------------------------------
def _ts(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return int(moment.timestamp())


def _unix(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp())


def _redacted(key: SimKey) -> str:
    return f"{key.secret[:8]}****{key.secret[-4:]}"


class OpenAISimulator(Simulator):
    """OpenAI's organization Admin APIs on loopback: organizations with deterministic usage, keys and faults.

    ``now`` (aware UTC; the wall clock at construction, then standing still until set) decides what exists: usage
    for hours that started in ``[now - history_days, now)``. ``requests`` logs every request as ``{"method",
    "path", "query", "has_auth", "status"}``. ``max_list_limit`` and ``max_buckets`` cap the items and buckets of
    one page below OpenAI's own caps, so that tests can make every listing page.
    """

    name = "openai-simulator"
    api_prefix = API_PREFIX
    error_kinds = {429: "rate_limit_exceeded"}
    default_error_kind = "invalid_request_error"

    def __init__(
        self,
        *,
        now: datetime | None = None,
        history_days: int = 35,
        seed: int = 1,
        host: str = "127.0.0.1",
        port: int = 0,
        max_list_limit: int = 100,
        max_buckets: int | None = None,
        latency: float = 0.0,
    ) -> None:
        super().__init__(host=host, port=port, latency=latency, now=now)
        self.history_days = history_days
        self.seed = seed
        self.max_list_limit = max_list_limit
        self.max_buckets = max_buckets
        self._orgs: dict[str, _Organization] = {}
        self._org_lock = threading.Lock()
        self._request_ids = itertools.count(1)
        self.routes.add("GET", "/organization/costs", self._get_costs, auth="admin")
        self.routes.add("GET", "/organization/projects", self._get_projects, auth="admin")
        self.routes.add("GET", "/organization/projects/{project_id}/api_keys", self._get_project_keys, auth="admin")
        self.routes.add("GET", "/organization/admin_api_keys", self._get_admin_keys, auth="admin")
        self.control_routes.add("PATCH", "/keys/{key_id}", control_call(self.update_key))
        self.control_routes.add("POST", "/traffic", control_call(self.add_traffic, status=201))
        self.control_routes.add("POST", "/traffic/stop", control_call(self.stop_traffic))
        for endpoint in USAGE_FIELDS:
            self.routes.add("GET", f"/organization/usage/{endpoint}", self._usage_handler(endpoint), auth="admin")

    @property
    def _unix_now(self) -> int:
        return int(self.now.timestamp())

    # -- organizations and keys --------------------------------------------------------------------------------
    def add_organization(self, name: str, *, seed: int | None = None, user_traffic: bool = True) -> str:
        """Create an organization and return an Admin key (``sk-admin-…``) for it.

        Projects ``Default project``, ``Research`` and the archived ``Legacy bot``; project keys ``Production``,
        ``Staging`` (owned by a person who has lost access to the project), ``CI pipeline`` (a service account),
        ``Batch jobs`` and ``Old bot key`` (in the archived project), ``Notebook key`` (deleted: in no listing,
        yet it has spend); the Admin key ``Spend reader``; and (``user_traffic``) Playground use without a key.
        """
        with self._org_lock:
            if name in self._orgs:
                raise ValueError(f"organization {name!r} already exists")
            now = self._unix_now
            org = _Organization(name, self.seed if seed is None else seed, now, self.history_days)
            created = org.first_hour - 30 * DAY
            default = org.add_project("Default project", created)
            research = org.add_project("Research", created + DAY)
            legacy = org.add_project("Legacy bot", created, archived_at=now - 2 * DAY)
            ann = {"type": "user", "user": _user("user_ann", "ann@example.test", "Ann Owner", created)}
            bo = {"type": "user", "user": _user("user_bo", "bo@example.test", "Bo Builder", created)}
            ci = {"type": "service_account", "service_account": _service_account("svc_ci", "ci-bot", created)}
            production = org.add_key("project", "Production", created, default.id, owner=ann)
            staging = org.add_key("project", "Staging", created, default.id, owner=bo, owner_project_access="inactive")
            ci_key = org.add_key("project", "CI pipeline", created, research.id, owner=ci)
            batch = org.add_key("project", "Batch jobs", created, research.id, owner=ann)
            old = org.add_key("project", "Old bot key", created, legacy.id, owner=bo)
            notebook = org.add_key("project", "Notebook key", created, research.id, owner=bo, listed=False)
            admin = org.add_key("admin", "Spend reader", created, owner={"type": "user", "name": "Ann Owner"})
            org.sources = [
                _Source(production.key_id, default.id, "completions", "gpt-4o-2024-08-06", 0.9, 40),
                _Source(production.key_id, default.id, "embeddings", "text-embedding-3-small", 0.6, 30),
                _Source(production.key_id, default.id, "moderations", "omni-moderation-latest", 0.5, 20),
                _Source(staging.key_id, default.id, "completions", "gpt-4o-mini-2024-07-18", 0.4, 10),
                _Source(ci_key.key_id, research.id, "images", "dall-e-3", 0.2, 3),
                _Source(batch.key_id, research.id, "audio_transcriptions", "whisper-1", 0.3, 4),
                _Source(old.key_id, legacy.id, "audio_speeches", "tts-1", 0.3, 5),
                _Source(notebook.key_id, research.id, "completions", "gpt-4o-2024-08-06", 0.3, 8),
            ]
            if user_traffic:
                org.sources.append(_Source(None, default.id, "completions", "gpt-4o-2024-08-06", 0.25, 6))
            for key in org.keys:
                self.keyring.add(key)
            self._orgs[name] = org
        return admin.secret

    def issue_key(
        self,
        account: str,
        *,
        scope: str = "admin",
        name: str | None = None,
        project_id: str | None = None,
        owner_name: str = "Ann Owner",
        owner_email: str = "ann@example.test",
        owner_type: str = "user",
        created_at: datetime | str | None = None,
    ) -> str:
        """Create a key for the organization ``account`` and return its secret: ``"admin"``, or ``"project"`` in
        ``project_id`` (default: the first project). Its owner is a user (``owner_name``, ``owner_email``) or, with
        ``owner_type="service_account"``, a service account named ``owner_name``. ``created_at`` (default ``now``)
        back-dates it, as a key made long ago and never used."""
        if scope not in ("admin", "project"):
            raise ValueError("scope must be 'admin' or 'project'")
        if owner_type not in ("user", "service_account"):
            raise ValueError("owner_type must be 'user' or 'service_account'")
        org = self._org(account)
        created = self._unix_now if created_at is None else int(instant(created_at).timestamp())
        with self._org_lock:
            if scope == "admin":
                project, owner = None, {"type": "user", "name": owner_name}
            else:
                project = project_id or org.projects[0].id
                if not any(p.id == project for p in org.projects):
                    raise KeyError(f"unknown project {project!r}")
                person = _slug(owner_name)
                who = (
                    _user(f"user_{person}", owner_email, owner_name, created)
                    if owner_type == "user"
                    else _service_account(f"svc_{person}", owner_name, created)
                )
                owner = {"type": owner_type, owner_type: who}
            label = name or f"Issued {scope} key {len(org.keys) + 1}"
            return self.keyring.add(org.add_key(scope, label, created, project, owner=owner)).secret

    def update_key(
        self,
        key_id: str,
        *,
        name: str | None = None,
        owner_project_access: str | None = None,
        last_used_at: datetime | str | None = None,
        expires_at: datetime | str | None = None,
    ) -> dict[str, Any]:
        """Change what the listings say of a key (``PATCH /_sim/keys/{key_id}``): rename it, say its owner lost
        (``"inactive"``) or regained (``"active"``) access to its project, set when it was last used (the later of
        this and its usage counts), or when an Admin key expires."""
        key = self.keyring.get(key_id)
        if owner_project_access is not None:
            if owner_project_access not in ("active", "inactive"):
                raise ValueError("owner_project_access must be 'active' or 'inactive'")
            if key.scope != "project":
                raise ValueError("only project keys have owner_project_access")
            key.extra["owner_project_access"] = owner_project_access
        if name is not None:
            if not name.strip():
                raise ValueError("'name' must not be empty")
            key.alias = name
        if last_used_at is not None:
            key.extra["last_used_at"] = int(instant(last_used_at).timestamp())
        if expires_at is not None:
            key.extra["expires_at"] = int(instant(expires_at).timestamp())
        return {"key_id": key_id, "name": key.alias, "owner_project_access": key.extra["owner_project_access"]}

    def add_traffic(
        self,
        account: str,
        *,
        key_id: str | None = None,
        user_id: str | None = None,
        project_id: str | None = None,
        endpoint: str = "completions",
        model: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        activity: float = 1.0,
        scale: int = 5,
    ) -> dict[str, Any]:
        """Make requests from now on, as a scenario needs (``POST /_sim/traffic``); returns the source described.

        ``key_id`` spends with a project key of the organization (listed or deleted: a key no listing names) in
        its project; an id the organization never issued needs ``project_id``. Without ``key_id`` it is Playground
        use (``api_key_id`` null), by the person ``user_id`` when given, in ``project_id`` (default: the first
        project). ``endpoint`` and ``model`` (default: the endpoint's first) say what is used. Usage shows in hours
        that start in ``[since, until)``; ``since`` defaults to the key's creation for a known key, else the start
        of the history. Each hour it is busy with chance ``activity`` (1: every hour), up to ``scale`` requests.
        """
        org = self._org(account)
        if endpoint not in USAGE_FIELDS:
            raise ValueError(f"endpoint must be one of {', '.join(USAGE_FIELDS)}")
        models = [m for e, m, _prices in _CATALOGUE if e == endpoint]
        chosen = model or models[0]
        if chosen not in models:
            raise ValueError(f"the {endpoint} endpoint serves {', '.join(models)}")
        if not 0 < activity <= 1 or scale < 1:
            raise ValueError("'activity' must be in (0, 1] and 'scale' >= 1")
        known = next((key for key in org.keys if key.key_id == key_id), None)
        if known is not None and known.scope == "admin":
            raise ValueError("an Admin key cannot make model requests")
        project = known.extra["project_id"] if known is not None else project_id or org.projects[0].id
        if key_id is not None and known is None and project_id is None:
            raise ValueError("a key the organization never issued needs a 'project_id'")
        if not any(p.id == project for p in org.projects):
            raise KeyError(f"unknown project {project!r}")
        start = since if since is not None else known.created_at if known is not None else None
        source = _Source(
            key_id,
            project,
            endpoint,
            chosen,
            activity,
            scale,
            user_id=user_id,
            steady=True,
            since=None if start is None else _hour_at_or_after(instant(start)),
            until=None if until is None else _hour_at_or_after(instant(until)),
        )
        with self._org_lock:
            org.sources.append(source)
            org.sources_changed()
        return {"account": account, **source.describe()}

    def stop_traffic(
        self,
        account: str,
        *,
        key_id: str | None = None,
        user_id: str | None = None,
        at: datetime | str | None = None,
    ) -> dict[str, Any]:
        """End the usage of every source with ``key_id`` and/or ``user_id`` from the first hour starting at or after
        ``at`` (default ``now``), the organization's own sources included: an idle key from then on
        (``POST /_sim/traffic/stop``). ``KeyError`` when no source matches."""
        org = self._org(account)
        if key_id is None and user_id is None:
            raise ValueError("say whose traffic to stop: 'key_id', 'user_id' or both")
        end = _hour_at_or_after(self.now if at is None else instant(at))
        with self._org_lock:
            stopped = [
                source
                for source in org.sources
                if (key_id is None or source.api_key_id == key_id) and (user_id is None or source.user_id == user_id)
            ]
            if not stopped:
                raise KeyError(f"no traffic from {key_id or user_id!r} in organization {account!r}")
            for source in stopped:
                source.until = end if source.until is None else min(source.until, end)
            org.sources_changed()
        return {"account": account, "stopped": [source.describe() for source in stopped]}

    def revoke_key(self, key: str) -> None:
        """Revoke a key (its secret or id): it gets 401 and leaves the listings, and keeps its past usage."""
        record = self.keyring.find(key)
        if record is None:
            raise KeyError("unknown key")
        record.revoked = True
        record.extra["listed"] = False

    def delete_key(self, key: str) -> None:
        """Delete a key from the listings, as a person would in the dashboard; its past spend stays billed."""
        self.revoke_key(key)

    def restate(self, organization: str, day: datetime) -> None:
        """Restate the costs of the UTC day containing ``day`` (each amount grows by 3% of the original)."""
        org = self._org(organization)
        start = _ts(day) - _ts(day) % DAY
        org.revisions[start] = org.revisions.get(start, 0) + 1

    def truth(self, account: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """What the connector should read for ``[start, end)``: each day's cost per (key, project, line item) whose
        day starts in it and each hour's non-zero quantity per (key, project, model, field), as dicts with
        ``kind``, ``period_start`` (aware UTC), ``api_key_id``, ``project_id``, ``line_item`` or ``model``,
        ``unit``, ``quantity`` and (costs) ``cost``."""
        org = self._org(account)
        now = self._unix_now
        lo, hi = _ts(start), min(_ts(end), now)
        out: list[dict[str, Any]] = []
        for day in range(lo - lo % DAY + (DAY if lo % DAY else 0), hi, DAY):
            for key, project, line_item, amount, quantity, unit in org.day_costs(day, now):
                out.append(
                    {
                        "kind": "cost",
                        "period_start": datetime.fromtimestamp(day, UTC),
                        "api_key_id": key,
                        "project_id": project,
                        "line_item": line_item,
                        "unit": unit,
                        "quantity": Decimal(quantity),
                        "cost": amount,
                    }
                )
        for hour in range(lo - lo % HOUR, hi, HOUR):
            for source, quantities in org.hour_usage(hour):
                for name, value in quantities:
                    if value:
                        out.append(
                            {
                                "kind": "usage",
                                "period_start": datetime.fromtimestamp(hour, UTC),
                                "api_key_id": source.api_key_id,
                                "user_id": source.user_id,
                                "project_id": source.project_id,
                                "model": source.model,
                                "unit": name,
                                "quantity": Decimal(value),
                            }
                        )
        return out

    def describe(self) -> dict[str, Any]:
        organizations = [
            {
                "account": name,
                "keys": [
                    {"key_id": key.key_id, "name": key.alias, "scope": key.scope, "revoked": key.revoked}
                    for key in org.keys
                ],
                "projects": [{"id": p.id, "name": p.name, "archived": p.archived_at is not None} for p in org.projects],
                "traffic": [source.describe() for source in org.sources],
            }
            for name, org in self._orgs.items()
        ]
        return {**super().describe(), "accounts": organizations}

    # -- OpenAI's auth, envelope and headers -----------------------------------------------------------------------
    def error_body(self, status: int, kind: str, message: str, details: Mapping[str, Any]) -> bytes:
        error = {"message": message, "type": kind, "param": details.get("param"), "code": details.get("code")}
        return json.dumps({"error": error}).encode()

    def authenticate(self, request: Request, requirement: Any) -> SimKey:
        token = credentials(request.authorization, "Bearer") or ""
        key = self.keyring.verify(token)
        if key is None:
            shown = f"{token[:8]}****{token[-4:]}" if len(token) > 12 else "****"
            raise ApiError(
                401,
                f"Incorrect API key provided: {shown}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                details={"code": "invalid_api_key"},
            )
        if key.scope != requirement:
            raise ApiError(
                403,
                "You have insufficient permissions for this operation. Missing scopes: api.usage.read. "
                "Check that you have the correct role in your organization, and if you're using a restricted API "
                "key, that it has the necessary scopes.",
            )
        if key.scope == "admin":  # an Admin key is used by the requests it authenticates, as OpenAI reports it
            key.extra["last_used_at"] = max(key.extra.get("last_used_at") or 0, self._unix_now)
        return key

    def answer_headers(self, request: Request) -> dict[str, str]:
        headers = {"x-request-id": f"req_{next(self._request_ids):08d}"}
        if request.principal is not None:
            headers |= {"openai-organization": request.principal.account, "openai-version": "2020-10-01"}
        return headers

    def _org(self, name: str) -> _Organization:
        try:
            return self._orgs[name]
        except KeyError:
            raise KeyError(f"unknown organization {name!r}") from None

    # -- endpoint handlers -------------------------------------------------------------------------------------
    def _listing(self, items: list[dict[str, Any]], request: Request) -> bytes:
        limit = PageSize(default=20, cap=min(100, self.max_list_limit), reject_above=100).read(_one(request, "limit"))
        page, more = after_page(items, _one(request, "after"), limit, lambda item: item["id"])
        return json_bytes(
            {
                "object": "list",
                "data": list(page),
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": more,
            }
        )

    def _get_projects(self, request: Request) -> bytes:
        org = self._orgs[request.principal.account]
        archived = _one(request, "include_archived") in ("true", "True", "1")
        items = [
            {
                "id": p.id,
                "object": "organization.project",
                "name": p.name,
                "created_at": p.created_at,
                "archived_at": p.archived_at,
                "status": "archived" if p.archived_at else "active",
            }
            for p in org.projects
            if archived or p.archived_at is None
        ]
        return self._listing(items, request)

    def _get_project_keys(self, request: Request) -> bytes:
        org = self._orgs[request.principal.account]
        project_id = request.params["project_id"]
        if not any(p.id == project_id for p in org.projects):
            raise ApiError(404, f"No such project: {project_id}", details={"param": "project_id"})
        items = [
            {
                "object": "organization.project.api_key",
                "redacted_value": _redacted(k),
                "name": k.alias,
                "created_at": _unix(k.created_at),
                "last_used_at": self._last_used(org, k),
                "id": k.key_id,
                "owner_project_access": k.extra["owner_project_access"],
                "owner": k.extra["owner"],
            }
            for k in org.keys
            if k.scope == "project" and k.extra["project_id"] == project_id and k.extra["listed"]
        ]
        return self._listing(items, request)

    def _get_admin_keys(self, request: Request) -> bytes:
        org = self._orgs[request.principal.account]
        items = [
            {
                "object": "organization.admin_api_key",
                "id": k.key_id,
                "name": k.alias,
                "redacted_value": _redacted(k),
                "created_at": _unix(k.created_at),
                "expires_at": k.extra.get("expires_at"),
                "last_used_at": k.extra.get("last_used_at"),
                "owner": {"type": "user", "object": "organization.user", "id": "user_ann", **k.extra["owner"]},
            }
            for k in org.keys
            if k.scope == "admin" and k.extra["listed"]
        ]
        return self._listing(items, request)

    def _last_used(self, org: _Organization, key: SimKey) -> int | None:
        set_by_hand = key.extra.get("last_used_at")
        if not any(source.api_key_id == key.key_id for source in org.sources):
            return set_by_hand
        now = self._unix_now
        for hour in range(now - now % HOUR, org.first_hour - 1, -HOUR):
            if any(source.api_key_id == key.key_id for source, _ in org.hour_usage(hour)):
                return hour if set_by_hand is None else max(hour, set_by_hand)
        return set_by_hand

    def _buckets(self, request: Request, width: int, sizes: PageSize) -> tuple[list[int], str | None]:
        now = self._unix_now
        start = _integer(request, "start_time", None, 0, 2**40)
        end = _integer(request, "end_time", now, 0, 2**40)
        if self.max_buckets is not None:
            sizes = PageSize(sizes.default, min(sizes.cap, self.max_buckets), sizes.reject_above)
        limit = sizes.read(_one(request, "limit"))
        offset = decode_offset(_one(request, "page"), param="page", prefix=PAGE_PREFIX)
        first = start - start % width
        chosen, following = offset_page(range(first, min(end, now), width), offset, limit)
        return list(chosen), None if following is None else encode_offset(following, prefix=PAGE_PREFIX)

    def _page(self, data: list[dict[str, Any]], next_page: str | None) -> bytes:
        return json_bytes({"object": "page", "data": data, "has_more": next_page is not None, "next_page": next_page})

    def _get_costs(self, request: Request) -> bytes:
        org = self._orgs[request.principal.account]
        if (_one(request, "bucket_width") or "1d") != "1d":
            raise ApiError(
                400, "Invalid value for 'bucket_width': only '1d' is supported.", details={"param": "bucket_width"}
            )
        groups = _group_by(request, _COST_GROUPS)
        chosen, next_page = self._buckets(request, DAY, PageSize(default=7, cap=180, reject_above=180))
        data = []
        for day in chosen:
            totals: dict[tuple[Any, ...], list[Any]] = {}
            for key, project, line_item, amount, quantity, unit in org.day_costs(day, self._unix_now):
                fields = {"api_key_id": key, "project_id": project, "line_item": line_item}
                group = tuple(fields[name] if name in groups else None for name in ("api_key_id", "project_id"))
                group += (line_item if "line_item" in groups else None, unit if "line_item" in groups else None)
                slot = totals.setdefault(group, [Decimal(0), 0])
                slot[0] += amount
                slot[1] += quantity
            results = [
                {
                    "object": "organization.costs.result",
                    "amount": {"value": amount, "currency": "usd"},
                    "line_item": line_item,
                    "project_id": project,
                    "api_key_id": key,
                    "quantity": quantity if line_item is not None else None,
                    "quantity_unit": unit,
                }
                for (key, project, line_item, unit), (amount, quantity) in totals.items()
            ]
            data.append({"object": "bucket", "start_time": day, "end_time": day + DAY, "results": results})
        return self._page(data, next_page)

    def _usage_handler(self, endpoint: str) -> Callable[[Request], bytes]:
        def handler(request: Request) -> bytes:
            org = self._orgs[request.principal.account]
            width = {"1m": 60, "1h": HOUR, "1d": DAY}.get(_one(request, "bucket_width") or "1d")
            if width is None:
                raise ApiError(400, "Invalid value for 'bucket_width'.", details={"param": "bucket_width"})
            default_limit, max_limit = {60: (60, 1440), HOUR: (24, 168), DAY: (7, 31)}[width]
            groups = _group_by(request, _USAGE_GROUPS)
            chosen, next_page = self._buckets(request, width, PageSize(default_limit, max_limit, max_limit))
            data = []
            for bucket in chosen:
                totals: dict[tuple[Any, ...], dict[str, int]] = {}
                # Minute buckets show an hour's usage in its first minute; day buckets sum their hours.
                hours = range(bucket, bucket + width, HOUR) if bucket % HOUR == 0 else range(0)
                for hour in hours:
                    for source, quantities in org.hour_usage(hour):
                        if source.endpoint != endpoint:
                            continue
                        group = (
                            source.api_key_id if "api_key_id" in groups else None,
                            source.project_id if "project_id" in groups else None,
                            source.model if "model" in groups else None,
                            source.user_id if "user_id" in groups else None,
                        )
                        slot = totals.setdefault(group, dict.fromkeys(USAGE_FIELDS[endpoint], 0))
                        for name, value in quantities:
                            slot[name] += value
                results = [
                    {
                        "object": f"organization.usage.{endpoint}.result",
                        **counts,
                        "project_id": project,
                        "user_id": user,
                        "api_key_id": key,
                        "model": model,
                    }
                    for (key, project, model, user), counts in totals.items()
                ]
                data.append({"object": "bucket", "start_time": bucket, "end_time": bucket + width, "results": results})
            return self._page(data, next_page)

        return handler


def _user(user_id: str, email: str, name: str, created: int) -> dict[str, Any]:
    return {"id": user_id, "email": email, "name": name, "created_at": created, "role": "owner"}


def _service_account(account_id: str, name: str, created: int) -> dict[str, Any]:
    return {"id": account_id, "name": name, "created_at": created, "role": "member"}


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_") or "someone"


def _hour_at_or_after(moment: datetime) -> int:
    """The start of the first hour that starts at or after ``moment`` (Unix seconds)."""
    ts = _ts(moment)
    return ts if ts % HOUR == 0 else ts - ts % HOUR + HOUR


def _one(request: Request, name: str) -> str | None:
    """A scalar parameter; OpenAI takes the last of repeated values and PHP-style ``name[]`` alike."""
    values = request.query.get(name) or request.query.get(f"{name}[]")
    return values[-1] if values else None


def _integer(request: Request, name: str, default: int | None, low: int, high: int) -> int:
    text = _one(request, name)
    if text is None:
        if default is None:
            raise ApiError(400, f"Missing required parameter: '{name}'.", details={"param": name})
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, f"Invalid value for '{name}': expected an integer.", details={"param": name}) from None
    if not low <= value <= high:
        raise ApiError(400, f"Invalid value for '{name}': must be between {low} and {high}.", details={"param": name})
    return value


def _group_by(request: Request, allowed: frozenset[str]) -> set[str]:
    groups = set(request.query.get("group_by", []) + request.query.get("group_by[]", []))
    if unknown := groups - allowed:
        raise ApiError(400, f"Invalid value for 'group_by': {sorted(unknown)[0]}.", details={"param": "group_by"})
    return groups


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until Ctrl-C with ``now`` following the wall clock, printing the base URL and Admin keys."""
    parser = argparse.ArgumentParser(
        prog="python -m connectors.openai.simulator", description="Serve a simulator of OpenAI's organization APIs."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--organization", action="append", help="organization name (repeatable; default My Org)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--history-days", type=int, default=35)
    args = parser.parse_args(argv)
    sim = OpenAISimulator(host=args.host, port=args.port, seed=args.seed, history_days=args.history_days).start()
    try:
        sim.follow_wall_clock()
        print(f"OpenAI simulator serving at {sim.base_url} (control plane: {sim.root_url}/_sim)", flush=True)
        for name in args.organization or ["My Org"]:
            print(f"organization {name}: admin key {sim.add_organization(name)}", flush=True)
        print("press Ctrl-C to stop", flush=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
