"""A simulator of OpenAI's organization Admin APIs serving real HTTP on loopback, for tests and demos.

It answers the GET operations the OpenAI connector reads, shaped like ``shared/openai/openapi.json``: costs, the
usage endpoints, projects, each project's API keys and the Admin keys, all under ``/v1``. Usage is synthetic but
deterministic: an organization's hour is a pure function of (seed, organization, hour), built on demand and cached.

Three layers, kept apart so that the HTTP plumbing can move into the SDK's simulator kit:

* the vendor's data model (:class:`_Organization`: projects, keys, hourly usage, daily priced costs, restatements);
* the endpoint handlers (``OpenAISimulator._get_*``): query parameters in, OpenAI's JSON out, errors as
  OpenAI's envelope;
* the plumbing (:class:`_LoopbackServer`): a threaded HTTP server on loopback that hands every request to
  ``OpenAISimulator.handle``.

Choices made where OpenAI's documentation is silent:

* Buckets start at ``start_time`` floored to the bucket width and run to ``end_time`` (or ``now``), one per
  width, empty ones included; only buckets that have started by ``now`` are served. An hour's usage is visible
  once the hour has started.
* A day's cost is the priced usage of its hours that have started, times ``1 + 0.03 * revision``: ``restate``
  bumps a day's revision, as OpenAI restates recent days when billing settles.
* ``quantity``/``quantity_unit`` of a cost result are given when grouped by ``line_item``, null otherwise.
* ``next_page`` is ``page_`` and the base64 of the next bucket's offset; list cursors are key or project ids.
* A project key (``sk-proj-``) gets 403, an unknown or revoked key 401, in OpenAI's error envelope.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import itertools
import json
import random
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from connector_sdk.http import ApiClient

__all__ = ["USAGE_FIELDS", "Fault", "OpenAISimulator", "main"]

API_PREFIX = "/v1"
HOUR = 3600
DAY = 86400
_JSON = "application/json"

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
_STATUS_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "invalid_request_error"}
_USAGE_GROUPS = frozenset({"project_id", "user_id", "api_key_id", "model"})
_COST_GROUPS = frozenset({"project_id", "line_item", "api_key_id"})


@dataclass
class Fault:
    """A misbehaviour for requests to ``path`` (after ``/v1``; ``"*"`` matches every path).

    A matching fault lets ``after`` requests through first, then answers the next ``times`` requests with
    ``status``, ``headers`` and ``body`` (``None``: OpenAI's error envelope for the status).
    """

    path: str
    status: int = 500
    times: int = 1
    after: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None


class _ApiError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


# -- the vendor's data model ---------------------------------------------------------------------------------------
@dataclass
class _Project:
    id: str
    name: str
    created_at: int
    archived_at: int | None = None


@dataclass
class _Key:
    id: str
    name: str
    secret: str
    scope: str  # "admin" or "project"
    org: _Organization
    created_at: int
    project_id: str | None = None
    owner: dict[str, Any] = field(default_factory=dict)
    owner_project_access: str = "active"
    listed: bool = True  # a deleted key is in no listing but keeps its past usage
    revoked: bool = False

    @property
    def redacted(self) -> str:
        return f"{self.secret[:8]}****{self.secret[-4:]}"


@dataclass(frozen=True)
class _Source:
    """Who uses what: a key (or ``None``: the Playground) in a project, on one model of one endpoint."""

    api_key_id: str | None
    project_id: str
    endpoint: str
    model: str
    activity: float  # chance that the source is busy in an hour
    scale: int  # typical requests per busy hour


class _Organization:
    def __init__(self, name: str, seed: int, created: int, history_days: int) -> None:
        self.name = name
        self.seed = seed
        self.id = f"org-{hashlib.sha256(f'{seed}:{name}'.encode()).hexdigest()[:24]}"
        self.first_hour = created - history_days * DAY
        self.projects: list[_Project] = []
        self.keys: list[_Key] = []
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

    def add_key(self, scope: str, name: str, created_at: int, project_id: str | None = None, **extra: Any) -> _Key:
        token = secrets.token_urlsafe(36)
        prefix = "sk-admin-" if scope == "admin" else "sk-proj-"
        key = _Key(self._id("key_"), name, prefix + token, scope, self, created_at, project_id, **extra)
        self.keys.append(key)
        return key

    @lru_cache(maxsize=8192)  # noqa: B019 - an organization lives as long as its simulator
    def hour_usage(self, hour: int) -> tuple[tuple[_Source, tuple[tuple[str, int], ...]], ...]:
        """The quantities of every busy source in ``hour``: a pure function of (seed, organization, hour)."""
        if hour < self.first_hour:
            return ()
        rng = random.Random(f"{self.seed}:{self.name}:{hour}")
        busy = []
        for source in self.sources:
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
            busy.append((source, tuple(quantities.items())))
        return tuple(busy)

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


# -- the HTTP plumbing ------------------------------------------------------------------------------------------
Handler = Callable[[str, str, Mapping[str, str]], tuple[int, dict[str, str], bytes]]


class _LoopbackServer:
    """Serves ``handler(method, target, headers) -> (status, headers, body)`` over HTTP/1.1 on loopback."""

    def __init__(self, handler: Handler, host: str, port: int, name: str) -> None:
        class RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > 0:
                    self.rfile.read(length)
                status, headers, body = handler(self.command, self.path, dict(self.headers.items()))
                self.send_response(status)
                for header, value in headers.items():
                    self.send_header(header, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        self._server = ThreadingHTTPServer((host, port), RequestHandler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True
        )
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


# -- the simulator and its endpoint handlers ----------------------------------------------------------------------
def _ts(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return int(moment.timestamp())


def _encode_page(offset: int) -> str:
    return "page_" + base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def _decode_page(token: str) -> int:
    try:
        text = base64.urlsafe_b64decode(token.removeprefix("page_") + "==").decode()
        if not text.startswith("o:"):
            raise ValueError
        return int(text[2:])
    except ValueError:
        raise _ApiError(400, "Invalid page token.", param="page") from None


class OpenAISimulator:
    """OpenAI's organization Admin APIs on loopback: organizations with deterministic usage, keys and faults.

    ``now`` (aware UTC, whole seconds; the wall clock at construction, then standing still until set) decides what
    exists: usage for hours that started in ``[now - history_days, now)``. ``requests`` logs every request as
    ``{"method", "path", "query", "status"}``. ``max_list_limit`` and ``max_buckets`` cap the items and buckets of
    one page below OpenAI's own caps, so that tests can make every listing page.
    """

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
    ) -> None:
        self._now = _ts(now or datetime.now(UTC))
        self.history_days = history_days
        self.seed = seed
        self.host, self.port = host, port
        self.max_list_limit = max_list_limit
        self.max_buckets = max_buckets
        self.requests: list[dict[str, Any]] = []
        self._orgs: dict[str, _Organization] = {}
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._server: _LoopbackServer | None = None
        self._request_ids = itertools.count(1)
        self._routes: dict[str, Callable[[_Organization, dict[str, list[str]]], Any]] = {
            "/organization/costs": self._get_costs,
            "/organization/projects": self._get_projects,
            "/organization/admin_api_keys": self._get_admin_keys,
            **{f"/organization/usage/{name}": self._usage_handler(name) for name in USAGE_FIELDS},
        }

    # -- control plane ---------------------------------------------------------------------------------------
    @property
    def now(self) -> datetime:
        return datetime.fromtimestamp(self._now, UTC)

    @now.setter
    def now(self, value: datetime) -> None:
        self._now = _ts(value)

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the simulator is not started")
        host, port = self._server.address
        return f"http://{host}:{port}{API_PREFIX}"

    def start(self) -> OpenAISimulator:
        if self._server is not None:
            raise RuntimeError("the simulator is already started")
        self._server = _LoopbackServer(self.handle, self.host, self.port, "openai-simulator")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> OpenAISimulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def add_organization(self, name: str, *, seed: int | None = None, user_traffic: bool = True) -> str:
        """Create an organization and return an Admin key (``sk-admin-…``) for it.

        Projects ``Default project``, ``Research`` and the archived ``Legacy bot``; project keys ``Production``,
        ``Staging`` (owned by a person who has lost access to the project), ``CI pipeline`` (a service account),
        ``Batch jobs`` and ``Old bot key`` (in the archived project), ``Notebook key`` (deleted: in no listing,
        yet it has spend); the Admin key ``Spend reader``; and (``user_traffic``) Playground use without a key.
        """
        with self._lock:
            if name in self._orgs:
                raise ValueError(f"organization {name!r} already exists")
            org = _Organization(name, self.seed if seed is None else seed, self._now, self.history_days)
            created = org.first_hour - 30 * DAY
            default = org.add_project("Default project", created)
            research = org.add_project("Research", created + DAY)
            legacy = org.add_project("Legacy bot", created, archived_at=self._now - 2 * DAY)
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
                _Source(production.id, default.id, "completions", "gpt-4o-2024-08-06", 0.9, 40),
                _Source(production.id, default.id, "embeddings", "text-embedding-3-small", 0.6, 30),
                _Source(production.id, default.id, "moderations", "omni-moderation-latest", 0.5, 20),
                _Source(staging.id, default.id, "completions", "gpt-4o-mini-2024-07-18", 0.4, 10),
                _Source(ci_key.id, research.id, "images", "dall-e-3", 0.2, 3),
                _Source(batch.id, research.id, "audio_transcriptions", "whisper-1", 0.3, 4),
                _Source(old.id, legacy.id, "audio_speeches", "tts-1", 0.3, 5),
                _Source(notebook.id, research.id, "completions", "gpt-4o-2024-08-06", 0.3, 8),
            ]
            if user_traffic:
                org.sources.append(_Source(None, default.id, "completions", "gpt-4o-2024-08-06", 0.25, 6))
            self._orgs[name] = org
        return admin.secret

    def issue_key(self, organization: str, *, scope: str = "admin", name: str | None = None) -> str:
        """Create a key (``"admin"`` or ``"project"``, in the default project) and return its secret."""
        if scope not in ("admin", "project"):
            raise ValueError("scope must be 'admin' or 'project'")
        org = self._org(organization)
        with self._lock:
            project = org.projects[0].id if scope == "project" else None
            return org.add_key(scope, name or f"Issued {scope} key {len(org.keys) + 1}", self._now, project).secret

    def revoke_key(self, key: str) -> None:
        """Revoke a key (its secret or id): it gets 401 and leaves the listings, and keeps its past usage."""
        record = self._find_key(key)
        if record is None:
            raise KeyError("unknown key")
        record.revoked, record.listed = True, False

    def delete_key(self, key: str) -> None:
        """Delete a key from the listings, as a person would in the dashboard; its past spend stays billed."""
        self.revoke_key(key)

    def restate(self, organization: str, day: datetime) -> None:
        """Restate the costs of the UTC day containing ``day`` (each amount grows by 3% of the original)."""
        org = self._org(organization)
        start = _ts(day) - _ts(day) % DAY
        org.revisions[start] = org.revisions.get(start, 0) + 1

    def truth(self, organization: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """What the connector should read for ``[start, end)``: each day's cost per (key, project, line item) whose
        day starts in it and each hour's non-zero quantity per (key, project, model, field), as dicts with
        ``kind``, ``period_start`` (aware UTC), ``api_key_id``, ``project_id``, ``line_item`` or ``model``,
        ``unit``, ``quantity`` and (costs) ``cost``."""
        org = self._org(organization)
        lo, hi = _ts(start), min(_ts(end), self._now)
        out: list[dict[str, Any]] = []
        for day in range(lo - lo % DAY + (DAY if lo % DAY else 0), hi, DAY):
            for key, project, line_item, amount, quantity, unit in org.day_costs(day, self._now):
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
                                "project_id": source.project_id,
                                "model": source.model,
                                "unit": name,
                                "quantity": Decimal(value),
                            }
                        )
        return out

    def inject(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    # -- request handling ------------------------------------------------------------------------------------------
    def handle(self, method: str, target: str, headers: Mapping[str, str]) -> tuple[int, dict[str, str], bytes]:
        split = urlsplit(target)
        query = parse_qs(split.query, keep_blank_values=True)
        entry: dict[str, Any] = {"method": method, "path": split.path, "query": query, "status": 0}
        self.requests.append(entry)
        path = split.path.rstrip("/")
        relative = path[len(API_PREFIX) :] if path.startswith(API_PREFIX + "/") else path
        status, body, org = 200, b"", None
        try:
            fault = self._claim_fault(relative)
            if fault is not None:
                status = fault.status
                body = fault.body if fault.body is not None else self._error_body(fault.status, "Simulated fault.")
                extra = fault.headers
            else:
                extra = {}
                org = self._authenticate(headers)
                if method != "GET":
                    raise _ApiError(405, f"Method {method} not allowed on {relative}.")
                body = ApiClient.encode(self._route(org, relative, query))
        except _ApiError as error:
            status, body = error.status, self._error_body(error.status, error.message, error.code, error.param)
        entry["status"] = status
        answer = {"Content-Type": _JSON, "x-request-id": f"req_{next(self._request_ids):08d}"}
        if org is not None:
            answer |= {"openai-organization": org.name, "openai-version": "2020-10-01"}
        return status, answer | extra, body

    def _route(self, org: _Organization, path: str, query: dict[str, list[str]]) -> Any:
        handler = self._routes.get(path)
        if handler is not None:
            return handler(org, query)
        parts = path.split("/")
        if len(parts) == 5 and parts[1:3] == ["organization", "projects"] and parts[4] == "api_keys":
            return self._get_project_keys(org, parts[3], query)
        raise _ApiError(404, f"Invalid URL (GET /v1{path})")

    def _authenticate(self, headers: Mapping[str, str]) -> _Organization:
        value = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        scheme, _, token = value.partition(" ")
        key = self._find_key(token.strip()) if scheme.lower() == "bearer" else None
        if key is None or key.revoked or key.secret != token.strip():
            shown = f"{token[:8]}****{token[-4:]}" if len(token) > 12 else "****"
            raise _ApiError(
                401,
                f"Incorrect API key provided: {shown}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )
        if key.scope != "admin":
            raise _ApiError(
                403,
                "You have insufficient permissions for this operation. Missing scopes: api.usage.read. "
                "Check that you have the correct role in your organization, and if you're using a restricted API "
                "key, that it has the necessary scopes.",
            )
        return key.org

    def _find_key(self, text: str) -> _Key | None:
        for org in self._orgs.values():
            for key in org.keys:
                if text in (key.secret, key.id):
                    return key
        return None

    def _claim_fault(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.path not in ("*", path, API_PREFIX + path):
                    continue
                if fault.after > 0:
                    fault.after -= 1
                    continue
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    @staticmethod
    def _error_body(status: int, message: str, code: str | None = None, param: str | None = None) -> bytes:
        kind = _STATUS_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        if status == 429:
            kind = "rate_limit_exceeded"
        return json.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}}).encode()

    def _org(self, name: str) -> _Organization:
        try:
            return self._orgs[name]
        except KeyError:
            raise KeyError(f"unknown organization {name!r}") from None

    # -- endpoint handlers -------------------------------------------------------------------------------------
    def _listing(self, items: list[dict[str, Any]], query: dict[str, list[str]]) -> dict[str, Any]:
        limit = _integer(query, "limit", 20, 1, 100)
        after = _one(query, "after")
        start = 0
        if after:
            ids = [item["id"] for item in items]
            start = ids.index(after) + 1 if after in ids else len(items)
        page = items[start : start + min(limit, self.max_list_limit)]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": start + len(page) < len(items),
        }

    def _get_projects(self, org: _Organization, query: dict[str, list[str]]) -> dict[str, Any]:
        archived = _one(query, "include_archived") in ("true", "True", "1")
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
        return self._listing(items, query)

    def _get_project_keys(self, org: _Organization, project_id: str, query: dict[str, list[str]]) -> dict[str, Any]:
        if not any(p.id == project_id for p in org.projects):
            raise _ApiError(404, f"No such project: {project_id}", param="project_id")
        items = [
            {
                "object": "organization.project.api_key",
                "redacted_value": k.redacted,
                "name": k.name,
                "created_at": k.created_at,
                "last_used_at": self._last_used(org, k),
                "id": k.id,
                "owner_project_access": k.owner_project_access,
                "owner": k.owner,
            }
            for k in org.keys
            if k.scope == "project" and k.project_id == project_id and k.listed
        ]
        return self._listing(items, query)

    def _get_admin_keys(self, org: _Organization, query: dict[str, list[str]]) -> dict[str, Any]:
        items = [
            {
                "object": "organization.admin_api_key",
                "id": k.id,
                "name": k.name,
                "redacted_value": k.redacted,
                "created_at": k.created_at,
                "expires_at": None,
                "last_used_at": None,
                "owner": {"type": "user", "object": "organization.user", "id": "user_ann", **k.owner},
            }
            for k in org.keys
            if k.scope == "admin" and k.listed
        ]
        return self._listing(items, query)

    def _last_used(self, org: _Organization, key: _Key) -> int | None:
        for hour in range(self._now - self._now % HOUR, max(org.first_hour, self._now - 7 * DAY) - 1, -HOUR):
            if any(source.api_key_id == key.id for source, _ in org.hour_usage(hour)):
                return hour
        return None

    def _buckets(
        self, query: dict[str, list[str]], width: int, default_limit: int, max_limit: int
    ) -> tuple[list[int], str | None]:
        start = _integer(query, "start_time", None, 0, 2**40)
        end = _integer(query, "end_time", self._now, 0, 2**40)
        limit = _integer(query, "limit", default_limit, 1, max_limit)
        first = start - start % width
        starts = list(range(first, min(end, self._now), width))
        offset = _decode_page(page) if (page := _one(query, "page")) else 0
        size = min(limit, self.max_buckets or limit)
        chosen = starts[offset : offset + size]
        more = offset + size < len(starts)
        return chosen, _encode_page(offset + size) if more else None

    def _get_costs(self, org: _Organization, query: dict[str, list[str]]) -> dict[str, Any]:
        if (_one(query, "bucket_width") or "1d") != "1d":
            raise _ApiError(400, "Invalid value for 'bucket_width': only '1d' is supported.", param="bucket_width")
        groups = _group_by(query, _COST_GROUPS)
        chosen, next_page = self._buckets(query, DAY, 7, 180)
        data = []
        for day in chosen:
            totals: dict[tuple[Any, ...], list[Any]] = {}
            for key, project, line_item, amount, quantity, unit in org.day_costs(day, self._now):
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
        return {"object": "page", "data": data, "has_more": next_page is not None, "next_page": next_page}

    def _usage_handler(self, endpoint: str) -> Callable[[_Organization, dict[str, list[str]]], Any]:
        def handler(org: _Organization, query: dict[str, list[str]]) -> dict[str, Any]:
            width = {"1m": 60, "1h": HOUR, "1d": DAY}.get(_one(query, "bucket_width") or "1d")
            if width is None:
                raise _ApiError(400, "Invalid value for 'bucket_width'.", param="bucket_width")
            default_limit, max_limit = {60: (60, 1440), HOUR: (24, 168), DAY: (7, 31)}[width]
            groups = _group_by(query, _USAGE_GROUPS)
            chosen, next_page = self._buckets(query, width, default_limit, max_limit)
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
                        )
                        slot = totals.setdefault(group, dict.fromkeys(USAGE_FIELDS[endpoint], 0))
                        for name, value in quantities:
                            slot[name] += value
                results = [
                    {
                        "object": f"organization.usage.{endpoint}.result",
                        **counts,
                        "project_id": project,
                        "user_id": None,
                        "api_key_id": key,
                        "model": model,
                    }
                    for (key, project, model), counts in totals.items()
                ]
                data.append({"object": "bucket", "start_time": bucket, "end_time": bucket + width, "results": results})
            return {"object": "page", "data": data, "has_more": next_page is not None, "next_page": next_page}

        return handler


def _user(user_id: str, email: str, name: str, created: int) -> dict[str, Any]:
    return {"id": user_id, "email": email, "name": name, "created_at": created, "role": "owner"}


def _service_account(account_id: str, name: str, created: int) -> dict[str, Any]:
    return {"id": account_id, "name": name, "created_at": created, "role": "member"}


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name) or query.get(f"{name}[]")
    return values[-1] if values else None


def _integer(query: dict[str, list[str]], name: str, default: int | None, low: int, high: int) -> int:
    text = _one(query, name)
    if text is None:
        if default is None:
            raise _ApiError(400, f"Missing required parameter: '{name}'.", param=name)
        return default
    try:
        value = int(text)
    except ValueError:
        raise _ApiError(400, f"Invalid value for '{name}': expected an integer.", param=name) from None
    if not low <= value <= high:
        raise _ApiError(400, f"Invalid value for '{name}': must be between {low} and {high}.", param=name)
    return value


def _group_by(query: dict[str, list[str]], allowed: frozenset[str]) -> set[str]:
    groups = set(query.get("group_by", []) + query.get("group_by[]", []))
    if unknown := groups - allowed:
        raise _ApiError(400, f"Invalid value for 'group_by': {sorted(unknown)[0]}.", param="group_by")
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
        print(f"OpenAI simulator serving at {sim.base_url}", flush=True)
        for name in args.organization or ["My Org"]:
            print(f"organization {name}: admin key {sim.add_organization(name)}", flush=True)
        print("press Ctrl-C to stop", flush=True)
        while True:
            time.sleep(1)
            sim.now = datetime.now(UTC).replace(microsecond=0)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
