"""A simulator of fal.ai's Platform APIs serving real HTTP on loopback, for tests, benchmarks and demos.

It answers the operations the fal connector uses, shaped like ``shared/fal/openapi.json``:
``GET /models/usage``, ``GET /keys``, ``GET /account/billing``, ``GET /models/pricing`` and
``POST /models/pricing/estimate``, all under ``/v1``. Usage is synthetic but deterministic: one
account's hour is a pure function of (seed, username, hour, revision), built on demand and cached, so
long histories stay cheap. Faults (errors, hangs, resets, truncated bodies) can be injected per path.

Choices made where fal's documentation is silent:

* Every generated usage item sits at a fixed second inside its hour. ``bound_to_timeframe=false``
  windows, ``minute`` buckets and the still-running current hour (partly visible, growing as ``now``
  advances) use it.
* All five timeframes are served; ``day``/``week`` (from Monday)/``month`` buckets sum the hours they
  hold. Without an ``auth_method``/``auth_method_structured`` expansion, items of different auth
  methods are merged too.
* Paging counts items across buckets; the cursor is base64 of the item offset. ``summary`` comes with
  the first page only and is never split; a summary-only request is a single page.
* Only the ``UTC`` (or ``Etc/UTC``) timezone is accepted; any other is a 400 ``validation_error``.
* Keys made by :meth:`FalSimulator.issue_key` carry no usage. A revoked key leaves ``/keys`` but keeps
  its past usage, like a deleted key.
* ``/models/pricing/estimate`` rounds ``total_cost`` to cents; ``historical_api_price`` assumes a
  typical number of billing units per call for each model.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import math
import random
import re
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

__all__ = ["MODEL_CATALOGUE", "FalSimulator", "Fault", "main"]

API_PREFIX = "/v1"
CURRENCY = "USD"
INVALID_KEY_MESSAGE = "Invalid API key or malformed Authorization header"
ADMIN_REQUIRED_MESSAGE = (
    "This endpoint requires an Admin API key; the key sent has API scope. Create an Admin-scoped key to use it."
)

_HOUR = 3600
_DAY = 86400
_Q9 = Decimal("1e-9")
_CENT = Decimal("0.01")
_HUNDRED = Decimal(100)
_ZERO = Decimal(0)
_JSON = "application/json"
_MAX_FILTER_VALUES = 50
_EMPTY_HOUR_CHANCE = 0.08
_MODEL_USE_CHANCE = 0.55
_SPLIT_CHANCE = 0.4
_DISCOUNTED_ONLY_CHANCE = 0.75
# UTC hour of day -> how busy the team is.
_DIURNAL = tuple(0.35 if h < 6 else 0.7 if h < 9 or h >= 19 else 1.0 for h in range(24))
_TIMEFRAMES = ("minute", "hour", "day", "week", "month")
_FIXED_SIZES = {"minute": 60, "hour": _HOUR, "day": _DAY}
_USAGE_EXPANSIONS = frozenset({"time_series", "summary", "auth_method", "auth_method_structured"})
_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")
_STATUS_TYPES = {
    400: "validation_error",
    401: "authorization_error",
    403: "authorization_error",
    404: "not_found",
    405: "validation_error",
    422: "validation_error",
    429: "rate_limited",
    501: "not_implemented",
}
_FAULT_ACTIONS = ("respond", "hang", "reset", "truncate")

_BASE_MODELS: tuple[tuple[str, str, str], ...] = (
    ("fal-ai/flux/dev", "image", "0.025"),
    ("fal-ai/flux-pro/v1.1", "image", "0.04"),
    ("fal-ai/flux/schnell", "megapixel", "0.003"),
    ("fal-ai/kling-video/v2/master/text-to-video", "video_second", "0.28"),
    ("fal-ai/stable-audio", "second", "0.0012"),
    ("fal-ai/recraft-v3", "image", "0.04"),
    ("fal-ai/fast-sdxl", "gpu_second", "0.00111"),
    ("fal-ai/flux-pro/v1.1-ultra", "image", "0.06"),
    ("fal-ai/minimax/video-01/image-to-video", "video", "0.5"),
    ("fal-ai/wan/v2.2-a14b/text-to-video", "video_second", "0.08"),
    ("fal-ai/ideogram/v2", "image", "0.08"),
    ("fal-ai/whisper", "second", "0.00012"),
    ("fal-ai/flux-lora", "megapixel", "0.035"),
    ("fal-ai/birefnet", "request", "0.002"),
    ("fal-ai/aura-sr", "megapixel", "0.0015"),
    ("fal-ai/hunyuan-video", "video", "0.4"),
)

MODEL_CATALOGUE: tuple[tuple[str, str, Decimal], ...] = tuple(
    [(ep, unit, Decimal(price)) for ep, unit, price in _BASE_MODELS]
    + [
        (f"{ep}/v{version}", unit, (Decimal(price) * (1 + Decimal(version) / 10)).normalize())
        for version in (2, 3)
        for ep, unit, price in _BASE_MODELS
    ]
)
"""Every endpoint the simulator knows, as ``(endpoint_id, unit, list unit_price)``.

An account uses a prefix of it."""

# unit -> (low, high, step, units in a typical call); a quantity is randint(low, high) * scale * step.
_UNIT_SHAPES: dict[str, tuple[int, int, Decimal, Decimal]] = {
    "image": (1, 24, Decimal(1), Decimal(1)),
    "video": (1, 4, Decimal(1), Decimal(1)),
    "request": (1, 150, Decimal(1), Decimal(1)),
    "video_second": (1, 12, Decimal(5), Decimal(5)),
    "megapixel": (500, 60_000, Decimal("0.001"), Decimal(1)),
    "second": (5_000, 600_000, Decimal("0.001"), Decimal(30)),
    "gpu_second": (1_000, 300_000, Decimal("0.001"), Decimal(6)),
}
_PRICES = {ep: (unit, price) for ep, unit, price in MODEL_CATALOGUE}


@dataclass
class Fault:
    """A misbehaviour shown for requests to ``path`` (after ``/v1``; ``"*"`` matches every path).

    Each request is offered to the faults in injection order: a matching fault whose ``after`` is still
    positive counts it down and lets the request on to the next fault; the first matching fault with
    ``after == 0`` takes the request and counts ``times`` down (it is dropped at zero). After waiting
    ``delay`` seconds it acts:

    * ``respond``: answer ``status`` with ``headers`` and ``body`` (``None``: fal's error envelope for the
      status, or the real body when ``status`` is below 400);
    * ``hang``: say nothing and close the connection (the client's read timeout fires if ``delay`` is
      longer);
    * ``reset``: send the real status and headers with the full ``Content-Length``, half the body, then
      abort the connection (TCP reset);
    * ``truncate``: answer the real status (200 for a valid request) with the real body cut in half.
    """

    path: str  # "/v1/models/usage" is accepted too
    status: int = 500
    times: int = 1
    after: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    action: str = "respond"
    delay: float = 0.0


class _ApiError(Exception):
    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.headers = headers or {}


class _Response(NamedTuple):
    status: int
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class _Model:
    endpoint_id: str
    unit: str
    unit_price: Decimal
    low: int
    high: int
    step: Decimal
    head_json: str
    price_json: str


@dataclass(slots=True)
class _Source:
    """Who made requests: an API key (listed, admin or deleted), a member's login, or a bare user token."""

    label: str
    key_id: str | None
    login: str | None
    p_active: float
    scale: int
    models: tuple[int, ...]
    am_json: str = ""
    ams_json: str = ""

    def structured(self) -> dict[str, str]:
        out = {"detail": self.label}
        if self.key_id is not None:
            out["api_key_id"] = self.key_id
        if self.login is not None:
            out["login_username"] = self.login
        return out


@dataclass(slots=True)
class _Key:
    key_id: str
    secret: str
    scope: str
    alias: str
    username: str
    created_at: str
    creator: str
    revoked: bool = False


class _Item:
    """One usage line: a source's use of a model at one discount within one hour (or an aggregate of such)."""

    __slots__ = (
        "cost_discount",
        "cost_subtotal",
        "cost_total",
        "json",
        "model",
        "offset",
        "pct",
        "quantity",
        "source",
    )

    def __init__(
        self,
        source: int,
        model: int,
        offset: int,
        quantity: Decimal,
        unit_price: Decimal,
        pct: Decimal | None,
    ) -> None:
        self.source = source
        self.model = model
        self.offset = offset
        self.quantity = quantity
        self.pct = pct
        subtotal = quantity * unit_price
        discount = _ZERO if pct is None else (subtotal * pct / _HUNDRED).quantize(_Q9)
        self.cost_subtotal = subtotal
        self.cost_discount = discount
        self.cost_total = subtotal - discount
        self.json: str | None = None

    def merged_copy(self, source: int) -> _Item:
        copy = _Item.__new__(_Item)
        copy.source, copy.model, copy.offset, copy.pct = source, self.model, -1, self.pct
        copy.quantity, copy.cost_subtotal = self.quantity, self.cost_subtotal
        copy.cost_discount, copy.cost_total, copy.json = self.cost_discount, self.cost_total, None
        return copy

    def signature(self) -> tuple[Any, ...]:
        return (self.source, self.model, self.offset, self.quantity, self.pct)


def _fmt(value: Decimal) -> str:
    """Exact decimal text, no exponent, no trailing zeros (what ``repr(float)`` prints for such values)."""
    return format(value.normalize(), "f")


def _canon(value: Decimal) -> Decimal:
    return Decimal(_fmt(value))


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _floor(ts: float, timeframe: str) -> int:
    size = _FIXED_SIZES.get(timeframe)
    if size is not None:
        return math.floor(ts / size) * size
    day = math.floor(ts / _DAY)
    if timeframe == "week":
        # 1970-01-01 was a Thursday; weeks start on Monday.
        return (day - (day + 3) % 7) * _DAY
    moment = datetime.fromtimestamp(day * _DAY, UTC)
    return int(datetime(moment.year, moment.month, 1, tzinfo=UTC).timestamp())


def _next(boundary: int, timeframe: str) -> int:
    size = _FIXED_SIZES.get(timeframe)
    if size is not None:
        return boundary + size
    if timeframe == "week":
        return boundary + 7 * _DAY
    moment = datetime.fromtimestamp(boundary, UTC)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp())


def _ceil(ts: float, timeframe: str) -> int:
    floor = _floor(ts, timeframe)
    return floor if floor == ts else _next(floor, timeframe)


@lru_cache(maxsize=4096)
def _coarse_bucket(hour: int, timeframe: str) -> int:
    return _floor(hour, timeframe)


@lru_cache(maxsize=65536)
def _bucket_text(bucket: int) -> str:
    return datetime.fromtimestamp(bucket, UTC).isoformat()


def _encode_cursor(offset: int) -> str:
    return base64.b64encode(str(offset).encode()).decode()


def _decode_cursor(cursor: str) -> int:
    try:
        text = base64.b64decode(cursor.encode("ascii"), validate=True).decode("ascii")
    except (ValueError, UnicodeError):
        text = ""
    if not text.isdigit():
        raise _ApiError(400, "validation_error", f"Invalid cursor {cursor!r}")
    return int(text)


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise _ApiError(400, "validation_error", f"Parameter {name!r} may be given only once")
    return values[0]


def _many(query: dict[str, list[str]], name: str) -> list[str] | None:
    """A repeated and/or comma-separated parameter; ``None`` when absent."""
    raw = query.get(name)
    if raw is None:
        return None
    values = [part.strip() for value in raw for part in value.split(",")]
    if any(not value for value in values):
        raise _ApiError(400, "validation_error", f"Parameter {name!r} has an empty value")
    return values


def _filter_values(query: dict[str, list[str]], name: str) -> list[str] | None:
    values = _many(query, name)
    if values is not None and not 1 <= len(values) <= _MAX_FILTER_VALUES:
        raise _ApiError(400, "validation_error", f"Parameter {name!r} accepts 1-{_MAX_FILTER_VALUES} values")
    return values


def _expansions(query: dict[str, list[str]], allowed: frozenset[str], default: Sequence[str] = ()) -> set[str]:
    values = _many(query, "expand")
    if values is None:
        return set(default)
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise _ApiError(
            400,
            "validation_error",
            f"Unknown expand value(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}",
        )
    return set(values)


def _limit(query: dict[str, list[str]], default: int, cap: int) -> int:
    text = _one(query, "limit")
    if text is None:
        return min(default, cap)
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise _ApiError(400, "validation_error", f"Parameter 'limit' must be an integer >= 1, got {text!r}")
    return min(value, cap)


def _offset(query: dict[str, list[str]]) -> int:
    cursor = _one(query, "cursor")
    return 0 if cursor is None else _decode_cursor(cursor)


def _parse_date(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d")


def _instant(text: str, name: str) -> float:
    value = text.strip()
    if "T" in value and " " in value:
        # A '+' sent unencoded in a query string arrives as a space.
        value = value.replace(" ", "+")
    try:
        parse = _parse_date if _DATE_ONLY.fullmatch(value) else datetime.fromisoformat
        moment = parse(value)
    except ValueError:
        raise _ApiError(
            400,
            "validation_error",
            f"Parameter {name!r} must be an ISO 8601 date-time or YYYY-MM-DD, got {text!r}",
        ) from None
    return _utc(moment).timestamp()


def _auto_timeframe(span: float) -> str:
    if span < 2 * _HOUR:
        return "minute"
    if span < 2 * _DAY:
        return "hour"
    if span < 64 * _DAY:
        return "day"
    if span < 183 * _DAY:
        return "week"
    return "month"


def _merge(items: Sequence[_Item], by_source: bool) -> list[_Item]:
    """Sum items that fal would show as one line: same model and discount (and source, when auth is shown)."""
    groups: dict[tuple[int, int, Decimal | None], _Item] = {}
    for item in items:
        key = (item.source if by_source else -1, item.model, item.pct)
        group = groups.get(key)
        if group is None:
            groups[key] = item
            continue
        if group.offset != -1:
            group = groups[key] = group.merged_copy(key[0])
        group.quantity += item.quantity
        group.cost_subtotal += item.cost_subtotal
        group.cost_discount += item.cost_discount
        group.cost_total += item.cost_total
    return list(groups.values())


@dataclass(slots=True)
class _UsageQuery:
    start: float
    end: float
    timeframe: str
    endpoints: frozenset[str] | None
    key_ids: frozenset[str] | None
    logins: frozenset[str] | None
    series: bool
    summary: bool
    auth_label: bool
    auth_structured: bool
    limit: int
    offset: int


class _Account:
    """A team's keys, traffic sources and the recipe for its usage; hours are generated lazily and cached."""

    def __init__(
        self,
        username: str,
        seed: int,
        *,
        n_keys: int,
        n_models: int,
        user_traffic: bool,
        discounts: bool,
        empty: bool,
        legacy_cost: bool,
        created: datetime,
        history_days: int,
        models_per_source: int | None = None,
        activity: float = 1.0,
    ) -> None:
        if not 0 <= n_models <= len(MODEL_CATALOGUE):
            raise ValueError(f"n_models must be between 0 and {len(MODEL_CATALOGUE)}")
        if n_keys < 0:
            raise ValueError("n_keys must be >= 0")
        if models_per_source is not None and models_per_source < 1:
            raise ValueError("models_per_source must be >= 1")
        if activity <= 0:
            raise ValueError("activity must be > 0")
        self.username = username
        self.seed = seed
        self.empty = empty
        self.legacy = legacy_cost
        self.revisions: dict[int, int] = {}
        self.cache: dict[int, tuple[int, tuple[_Item, ...]]] = {}
        self.keys: list[_Key] = []
        self.issued = 0
        self.hash_key = hashlib.blake2b(f"{seed}\x00{username}".encode(), digest_size=16).digest()
        rng = random.Random(int.from_bytes(self.hash_key, "big"))
        self.rng = rng
        self.members = ["alice", "bob"]
        self.credits = Decimal(rng.randint(500, 500_000)) / 100

        self.models: list[_Model] = []
        for endpoint_id, unit, price in MODEL_CATALOGUE[:n_models]:
            low, high, step, _per_call = _UNIT_SHAPES[unit]
            head = f'"endpoint_id":{json.dumps(endpoint_id)},"unit":{json.dumps(unit)}'
            self.models.append(_Model(endpoint_id, unit, price, low, high, step, head, _fmt(price)))
        self.discount: list[Decimal | None] = []
        for index in range(n_models):
            if discounts and (index == 0 or rng.random() < 0.5):
                self.discount.append(Decimal(20) if index == 0 or rng.random() < 0.6 else Decimal(10))
            else:
                self.discount.append(None)

        # Keys predate the history, oldest first in alias order.
        age = timedelta(days=history_days + rng.randint(30, 200), seconds=rng.randrange(_DAY))
        key_created = created - age
        self.admin_key = self._new_key("ADMIN", "Admin Key", key_created)
        aliases = ["Production Key", "Staging Key"] + [f"Key {n}" for n in range(3, n_keys + 1)]
        sources: list[_Source] = []
        for index, alias in enumerate(aliases[:n_keys]):
            key_created += timedelta(hours=rng.randint(1, 48), seconds=rng.randrange(_HOUR))
            key = self._new_key("API", alias, key_created)
            scale = 3 if index == 0 else rng.randint(1, 2)
            sources.append(_Source(alias, key.key_id, None, rng.uniform(0.35, 0.9), scale, ()))
        sources.append(_Source("Admin Key", self.admin_key.key_id, None, 0.2, 1, ()))
        self.deleted_key_id = f"{rng.getrandbits(64):016x}"
        sources.append(_Source("Old Pipeline Key", self.deleted_key_id, None, 0.25, 1, ()))
        if user_traffic:
            sources.extend(_Source(member, None, member, 0.2, 1, ()) for member in self.members)
            sources.append(_Source("User token", None, None, 0.15, 1, ()))
        if n_models:
            for source in sources:
                size = rng.randint(1, min(n_models, 6))
                if models_per_source is not None:  # drawn above all the same, so other accounts stay as they were
                    size = min(n_models, models_per_source)
                source.models = tuple(rng.sample(range(n_models), size))
            covered = {model for source in sources for model in source.models}
            for model in range(n_models):
                if model not in covered:
                    owner = sources[model % len(sources)]
                    owner.models = (*owner.models, model)
            for source in sources:
                source.models = tuple(sorted(source.models))
        for source in sources:
            source.p_active = min(1.0, source.p_active * activity)
            source.am_json = f',"auth_method":{json.dumps(source.label)}'
            source.ams_json = f',"auth_method_structured":{json.dumps(source.structured(), separators=(",", ":"))}'
        self.sources = sources

    def _new_key(self, scope: str, alias: str, created_at: datetime) -> _Key:
        creator = self.members[len(self.keys) % len(self.members)]
        key = _Key(
            f"{self.rng.getrandbits(64):016x}",
            f"{self.rng.getrandbits(128):032x}",
            scope,
            alias,
            self.username,
            created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            creator,
        )
        self.keys.append(key)
        return key

    def generate(self, hour: int, revision: int) -> tuple[_Item, ...]:
        """The usage of one hour at one revision: a pure function of (seed, username, hour, revision)."""
        if self.empty or not self.models:
            return ()
        digest = hashlib.blake2b(f"{hour}:{revision}".encode(), key=self.hash_key, digest_size=8).digest()
        rng = random.Random(int.from_bytes(digest, "big"))
        if rng.random() < _EMPTY_HOUR_CHANCE:
            return ()
        busy = _DIURNAL[(hour // _HOUR) % 24]
        rand, randint, randrange = rng.random, rng.randint, rng.randrange
        models, discount = self.models, self.discount
        items: list[_Item] = []
        for index, source in enumerate(self.sources):
            if rand() >= source.p_active * busy:
                continue
            for m in source.models:
                if rand() >= _MODEL_USE_CHANCE:
                    continue
                model = models[m]
                count = randint(model.low, model.high) * source.scale
                offset = randrange(_HOUR)
                pct = discount[m]
                if pct is None:
                    items.append(_Item(index, m, offset, count * model.step, model.unit_price, None))
                    continue
                roll = rand()
                if roll < _SPLIT_CHANCE and count >= 2:
                    part = randint(1, count - 1)
                    items.append(_Item(index, m, offset, part * model.step, model.unit_price, pct))
                    items.append(_Item(index, m, offset, (count - part) * model.step, model.unit_price, None))
                else:
                    chosen = pct if roll < _DISCOUNTED_ONLY_CHANCE else None
                    items.append(_Item(index, m, offset, count * model.step, model.unit_price, chosen))
        return tuple(items)

    def hour_items(self, hour: int) -> tuple[_Item, ...]:
        revision = self.revisions.get(hour, 0)
        hit = self.cache.get(hour)
        if hit is not None and hit[0] == revision:
            return hit[1]
        items = self.generate(hour, revision)
        self.cache[hour] = (revision, items)
        return items

    def revise(self, hour: int) -> None:
        before = [item.signature() for item in self.hour_items(hour)]
        revision = self.revisions.get(hour, 0)
        for _attempt in range(100):
            revision += 1
            if [item.signature() for item in self.generate(hour, revision)] != before:
                break
        self.revisions[hour] = revision

    def render(self, item: _Item, auth_label: bool, auth_structured: bool) -> str:
        text = item.json
        if text is None:
            model = self.models[item.model]
            pct = "null" if item.pct is None else _fmt(item.pct)
            total = _fmt(item.cost_total)
            if self.legacy:
                money = f'"cost":{total}'
            else:
                money = (
                    f'"cost_subtotal":{_fmt(item.cost_subtotal)},"cost_discount":{_fmt(item.cost_discount)},'
                    f'"cost_total":{total},"cost":{total}'
                )
            text = item.json = (
                f'{{{model.head_json},"quantity":{_fmt(item.quantity)},'
                f'"unit_price":{model.price_json},"percent_discount":{pct},{money},'
                f'"currency":"{CURRENCY}"'
            )
        if item.source >= 0 and (auth_label or auth_structured):
            source = self.sources[item.source]
            if auth_label:
                text += source.am_json
            if auth_structured:
                text += source.ams_json
        return text + "}"

    def as_dict(self, item: _Item, bucket: datetime) -> dict[str, Any]:
        model = self.models[item.model]
        source = self.sources[item.source]
        out: dict[str, Any] = {
            "endpoint_id": model.endpoint_id,
            "unit": model.unit,
            "quantity": _canon(item.quantity),
            "unit_price": _canon(model.unit_price),
            "percent_discount": None if item.pct is None else _canon(item.pct),
        }
        if not self.legacy:
            out["cost_subtotal"] = _canon(item.cost_subtotal)
            out["cost_discount"] = _canon(item.cost_discount)
            out["cost_total"] = _canon(item.cost_total)
        out["cost"] = _canon(item.cost_total)
        out["currency"] = CURRENCY
        out["auth_method"] = source.label
        out["auth_method_structured"] = source.structured()
        out["bucket"] = bucket
        return out


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], sim: FalSimulator) -> None:
        self.sim = sim
        self.aborted: set[socket.socket] = set()
        super().__init__(address, _Handler)

    def shutdown_request(self, request: Any) -> None:
        if request in self.aborted:
            self.aborted.discard(request)
            # SO_LINGER is 0 on this socket, so closing without shutdown() sends a TCP reset.
            request.close()
            return
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (a killed sync, a timeout) is ordinary traffic here, not a server fault.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fal-simulator/1.0"
    timeout = 60
    # Without TCP_NODELAY every answer after the first on a kept-alive connection waits ~40 ms for a delayed ACK.
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.sim._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.sim._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        sim = self.server.sim
        split = urlsplit(self.path)
        query = parse_qs(split.query, keep_blank_values=True)
        authorization = self.headers.get("Authorization")
        entry: dict[str, Any] = {
            "method": method,
            "path": split.path,
            "query": query,
            "has_auth": authorization is not None,
            "status": 0,
        }
        sim.requests.append(entry)
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length > 0 else b""
        except ValueError:
            self.close_connection = True
            self._send(sim._error(400, "validation_error", "Bad Content-Length header"), entry)
            return
        path = split.path.rstrip("/") or "/"
        relative = path[len(API_PREFIX) :] if path.startswith(API_PREFIX + "/") else path
        fault = sim._claim_fault(relative)

        def answer() -> _Response:
            return sim._answer(method, path, query, authorization, body)

        if sim.latency > 0:
            sim._stopping.wait(sim.latency)

        if fault is None:
            self._send(answer(), entry)
            return
        if fault.delay > 0:
            sim._stopping.wait(fault.delay)
        if fault.action == "hang":
            self.close_connection = True
            return
        if fault.action == "respond":
            if fault.body is not None:
                response = _Response(fault.status, fault.body, {"Content-Type": _JSON})
            elif fault.status >= 400:
                default_kind = "validation_error" if fault.status < 500 else "server_error"
                response = sim._error(
                    fault.status,
                    _STATUS_TYPES.get(fault.status, default_kind),
                    f"Simulated fault: HTTP {fault.status}",
                )
            else:
                real = answer()
                response = _Response(fault.status, real.body, real.headers)
            self._send(response._replace(headers={**response.headers, **fault.headers}), entry)
            return
        real = answer()
        if fault.action == "truncate":
            cut = real._replace(body=real.body[: len(real.body) // 2], headers={**real.headers, **fault.headers})
            self._send(cut, entry)
            return
        entry["status"] = real.status
        self.send_response(real.status)
        for name, value in {**real.headers, **fault.headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(real.body)))
        self.end_headers()
        self.wfile.write(real.body[: len(real.body) // 2])
        self.wfile.flush()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.server.aborted.add(self.connection)
        self.close_connection = True

    def _send(self, response: _Response, entry: dict[str, Any]) -> None:
        entry["status"] = response.status
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)


class FalSimulator:
    """fal.ai's Platform APIs on loopback: accounts with deterministic synthetic usage, keys and faults.

    ``now`` (aware UTC; defaults to the wall clock at construction and then stands still until set) decides
    what exists: usage for whole hours ``h`` with
    ``now - history_days <= h <= floor_hour(now)``; the current hour shows only what happened before
    ``now``. ``requests`` logs every request received as
    ``{"method", "path", "query", "has_auth", "status"}`` (``path`` as sent, including ``/v1``; ``status``
    is 0 while unanswered or when a fault answered nothing).

    ``latency`` (seconds) delays every answer, as the network to a remote API would; ``cache_responses`` keeps
    each ``/models/usage`` body it rendered and serves it again to the same request while ``now`` and the
    account's revisions stand still, so that a benchmark measures its client rather than the simulator.
    """

    def __init__(
        self,
        *,
        now: datetime | None = None,
        history_days: int = 35,
        page_size: int = 100,
        max_page_size: int = 1000,
        seed: int = 1,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        cache_responses: bool = False,
    ) -> None:
        if page_size < 1 or max_page_size < 1:
            raise ValueError("page sizes must be >= 1")
        if latency < 0:
            raise ValueError("latency must be >= 0")
        self._now = _utc(now if now is not None else datetime.now(UTC))
        self.history_days = history_days
        self.page_size = page_size
        self.max_page_size = max_page_size
        self.seed = seed
        self.host = host
        self.port = port
        self.latency = latency
        self.cache_responses = cache_responses
        self._usage_cache: dict[tuple[Any, ...], bytes] = {}
        self.requests: list[dict[str, Any]] = []
        self._accounts: dict[str, _Account] = {}
        self._keys: dict[str, _Key] = {}
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._request_ids = itertools.count(1)
        self._routes: dict[str, dict[str, tuple[Callable[[_Key, dict[str, list[str]], bytes], bytes], bool]]] = {
            "/models/usage": {"GET": (self._get_usage, True)},
            "/keys": {"GET": (self._get_keys, True)},
            "/account/billing": {"GET": (self._get_billing, True)},
            "/models/pricing": {"GET": (self._get_pricing, False)},
            "/models/pricing/estimate": {"POST": (self._post_estimate, False)},
        }

    @property
    def now(self) -> datetime:
        """The simulated present (aware UTC); set it to move time forward or back."""
        return self._now

    @now.setter
    def now(self, value: datetime) -> None:
        self._now = _utc(value)

    @property
    def base_url(self) -> str:
        """``http://<host>:<port>/v1`` once started."""
        if self._server is None:
            raise RuntimeError("the simulator is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{API_PREFIX}"

    def start(self) -> FalSimulator:
        """Bind and serve in a daemon thread; returns ``self``."""
        if self._server is not None:
            raise RuntimeError("the simulator is already started")
        self._stopping.clear()
        self._server = _Server((self.host, self.port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fal-simulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving promptly, waking hung fault handlers and closing open connections."""
        server = self._server
        if server is None:
            return
        self._stopping.set()
        stopper = threading.Thread(target=server.shutdown, daemon=True)
        stopper.start()
        address = server.server_address[:2]
        while stopper.is_alive():
            # A connection wakes the accept loop at once instead of after its poll interval.
            with contextlib.suppress(OSError), socket.create_connection(address, timeout=0.5):
                pass
            stopper.join(timeout=0.01)
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FalSimulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def add_account(
        self,
        username: str,
        *,
        seed: int | None = None,
        n_keys: int = 3,
        n_models: int = 5,
        user_traffic: bool = True,
        discounts: bool = True,
        empty: bool = False,
        legacy_cost: bool = False,
        models_per_source: int | None = None,
        activity: float = 1.0,
    ) -> str:
        """Create a team account and return an Admin key for it as ``"key_id:key_secret"``.

        The team has ``n_keys`` API-scope keys (``Production Key``, ``Staging Key``, ``Key 3``...), an
        Admin key and a deleted key that both carry traffic but are not listed by ``/keys``, and
        (``user_traffic``) web-UI traffic from members ``alice`` and ``bob`` and from a bare ``User token``.
        It uses the first ``n_models`` endpoints of :data:`MODEL_CATALOGUE`. ``discounts`` gives some models
        a 20% or 10% discount, often splitting a source's hour of one model into a discounted and an
        undiscounted item. ``legacy_cost`` serves only ``cost`` (no ``cost_total``/``cost_subtotal``/
        ``cost_discount``); ``empty`` serves no usage. A big account for benchmarks: ``models_per_source``
        makes every key, member and token use that many models (instead of one to six), and ``activity``
        multiplies how often each of them is active in an hour (capped at every hour).
        """
        with self._lock:
            if username in self._accounts:
                raise ValueError(f"account {username!r} already exists")
            account = _Account(
                username,
                self.seed if seed is None else seed,
                n_keys=n_keys,
                n_models=n_models,
                user_traffic=user_traffic,
                discounts=discounts,
                empty=empty,
                legacy_cost=legacy_cost,
                created=self._now,
                history_days=self.history_days,
                models_per_source=models_per_source,
                activity=activity,
            )
            for key in account.keys:
                if key.key_id in self._keys:
                    raise ValueError("key id collision; choose another seed")
            self._accounts[username] = account
            for key in account.keys:
                self._keys[key.key_id] = key
        return f"{account.admin_key.key_id}:{account.admin_key.secret}"

    def issue_key(self, username: str, *, scope: str = "ADMIN", alias: str | None = None) -> str:
        """Create another key (``scope`` ``"ADMIN"`` or ``"API"``); returns ``"key_id:key_secret"``."""
        if scope not in ("ADMIN", "API"):
            raise ValueError("scope must be 'ADMIN' or 'API'")
        account = self._account(username)
        with self._lock:
            account.issued += 1
            if alias is None:
                alias = f"Issued {scope.title()} Key {account.issued}"
            key = account._new_key(scope, alias, self._now.replace(microsecond=0))
            self._keys[key.key_id] = key
        return f"{key.key_id}:{key.secret}"

    def revoke_key(self, key: str) -> None:
        """Revoke a key (``"key_id:key_secret"`` or a bare key id): it gets 401 and leaves ``/keys``."""
        key_id = key.partition(":")[0].strip()
        record = self._keys.get(key_id)
        if record is None:
            raise KeyError(f"unknown key {key_id!r}")
        record.revoked = True

    def truth(self, username: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Every usage item served for hours ``start <= h < end``, in order, as ``timeframe=hour`` with all
        expansions serves them.

        Each dict holds the item's fields as served (numbers as exact ``Decimal``) plus ``"bucket"``, the
        aware UTC start of its hour.
        """
        account = self._account(username)
        now_ts = self._now.timestamp()
        lo = max(_ceil(_utc(start).timestamp(), "hour"), self._first_hour(now_ts))
        hi = _utc(end).timestamp()
        out: list[dict[str, Any]] = []
        for hour in range(lo, _floor(now_ts, "hour") + 1, _HOUR):
            if hour >= hi:
                break
            bucket = datetime.fromtimestamp(hour, UTC)
            out.extend(
                account.as_dict(item, bucket) for item in account.hour_items(hour) if hour + item.offset < now_ts
            )
        return out

    def revise(self, username: str, hour: datetime) -> None:
        """Change the usage of the hour containing ``hour`` (new quantities; items may appear or vanish)."""
        self._account(username).revise(_floor(_utc(hour).timestamp(), "hour"))

    def inject(self, fault: Fault) -> None:
        """Add a fault; see :class:`Fault` for how requests meet faults."""
        if fault.action not in _FAULT_ACTIONS:
            raise ValueError(f"unknown fault action {fault.action!r}; use one of {', '.join(_FAULT_ACTIONS)}")
        with self._lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        with self._lock:
            self._faults.clear()

    def _account(self, username: str) -> _Account:
        try:
            return self._accounts[username]
        except KeyError:
            raise KeyError(f"unknown account {username!r}") from None

    def _first_hour(self, now_ts: float) -> int:
        return _ceil(now_ts - self.history_days * _DAY, "hour")

    def _track(self, connection: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

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

    def _error(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> _Response:
        error = {"type": kind, "message": message, "request_id": f"sim-{next(self._request_ids):08d}"}
        body = json.dumps({"error": error}).encode()
        return _Response(status, body, {"Content-Type": _JSON, **(headers or {})})

    def _answer(
        self, method: str, path: str, query: dict[str, list[str]], authorization: str | None, body: bytes
    ) -> _Response:
        try:
            if not path.startswith(API_PREFIX + "/"):
                raise _ApiError(404, "not_found", f"No such path: {path}")
            operations = self._routes.get(path[len(API_PREFIX) :])
            if operations is None:
                raise _ApiError(404, "not_found", f"No such path: {path}")
            operation = operations.get(method)
            if operation is None:
                allowed = ", ".join(sorted(operations))
                raise _ApiError(405, "validation_error", f"Method {method} not allowed on {path}", {"Allow": allowed})
            handler, admin_only = operation
            key = self._authenticate(authorization, admin_only)
            return _Response(200, handler(key, query, body), {"Content-Type": _JSON})
        except _ApiError as error:
            return self._error(error.status, error.kind, error.message, error.headers)
        except Exception as error:  # the simulator must answer like a server, not drop the connection
            return self._error(500, "server_error", f"Simulator error: {type(error).__name__}: {error}")

    def _authenticate(self, authorization: str | None, admin_only: bool) -> _Key:
        scheme, _, credentials = (authorization or "").strip().partition(" ")
        key_id, _, secret = credentials.strip().partition(":")
        record = self._keys.get(key_id) if scheme.lower() == "key" else None
        if record is None or record.revoked or not hmac.compare_digest(record.secret.encode(), secret.encode()):
            raise _ApiError(401, "authorization_error", INVALID_KEY_MESSAGE)
        if admin_only and record.scope != "ADMIN":
            raise _ApiError(403, "authorization_error", ADMIN_REQUIRED_MESSAGE)
        return record

    def _usage_query(self, query: dict[str, list[str]]) -> _UsageQuery:
        now_ts = self._now.timestamp()
        zone = _one(query, "timezone")
        if zone is not None and zone.upper() not in ("UTC", "ETC/UTC"):
            raise _ApiError(400, "validation_error", f"Unsupported timezone {zone!r}: this simulator serves UTC only")
        start_text, end_text = _one(query, "start"), _one(query, "end")
        start = now_ts - _DAY if start_text is None else _instant(start_text, "start")
        end = now_ts if end_text is None else _instant(end_text, "end")
        if start >= end:
            raise _ApiError(400, "validation_error", "'start' must be before 'end'")
        timeframe = _one(query, "timeframe")
        if timeframe is None:
            timeframe = _auto_timeframe(end - start)
        elif timeframe not in _TIMEFRAMES:
            raise _ApiError(400, "validation_error", f"'timeframe' must be one of {', '.join(_TIMEFRAMES)}")
        bound = _one(query, "bound_to_timeframe") or "true"
        if bound not in ("true", "false"):
            raise _ApiError(400, "validation_error", "'bound_to_timeframe' must be 'true' or 'false'")
        if bound == "true":
            start, end = _floor(start, timeframe), _ceil(end, timeframe)
        expand = _expansions(query, _USAGE_EXPANSIONS, ("time_series",))
        if not expand & {"time_series", "summary"}:
            raise _ApiError(400, "validation_error", "'expand' must include 'time_series' or 'summary'")
        endpoints, key_ids, logins = (
            _filter_values(query, name) for name in ("endpoint_id", "api_key_id", "login_username")
        )
        return _UsageQuery(
            start=start,
            end=end,
            timeframe=timeframe,
            endpoints=None if endpoints is None else frozenset(endpoints),
            key_ids=None if key_ids is None else frozenset(key_ids),
            logins=None if logins is None else frozenset(logins),
            series="time_series" in expand,
            summary="summary" in expand,
            auth_label="auth_method" in expand,
            auth_structured="auth_method_structured" in expand,
            limit=_limit(query, self.page_size, self.max_page_size),
            offset=_offset(query),
        )

    def _visible_hours(
        self, account: _Account, uq: _UsageQuery, now_ts: float
    ) -> Iterator[tuple[int, Sequence[_Item]]]:
        """Each hour with usage inside the window, after filters: ``(hour, items)`` in ascending order."""
        sources = None
        if uq.key_ids is not None or uq.logins is not None:
            sources = frozenset(
                index
                for index, source in enumerate(account.sources)
                if (uq.key_ids is None or source.key_id in uq.key_ids)
                and (uq.logins is None or source.login in uq.logins)
            )
        models = None
        if uq.endpoints is not None:
            models = frozenset(index for index, model in enumerate(account.models) if model.endpoint_id in uq.endpoints)
        first = max(self._first_hour(now_ts), _floor(uq.start, "hour"))
        stop = min(_floor(now_ts, "hour") + _HOUR, _ceil(uq.end, "hour"))
        until = min(uq.end, now_ts)
        for hour in range(first, stop, _HOUR):
            items: Sequence[_Item] = account.hour_items(hour)
            if not items:
                continue
            low, high = uq.start - hour, until - hour
            if low > 0 or high < _HOUR:
                items = [item for item in items if low <= item.offset < high]
            if sources is not None or models is not None:
                items = [
                    item
                    for item in items
                    if (sources is None or item.source in sources) and (models is None or item.model in models)
                ]
            if items:
                yield hour, items

    def _buckets(self, account: _Account, uq: _UsageQuery, now_ts: float) -> Iterator[tuple[int, Sequence[_Item]]]:
        by_source = uq.auth_label or uq.auth_structured
        hours = self._visible_hours(account, uq, now_ts)
        if uq.timeframe == "hour":
            for hour, items in hours:
                yield hour, (items if by_source else _merge(items, False))
        elif uq.timeframe == "minute":
            for hour, items in hours:
                minutes: dict[int, list[_Item]] = {}
                for item in items:
                    minutes.setdefault(hour + item.offset // 60 * 60, []).append(item)
                for bucket in sorted(minutes):
                    yield bucket, _merge(minutes[bucket], by_source)
        else:
            current, pending = -1, []
            for hour, items in hours:
                bucket = _coarse_bucket(hour, uq.timeframe)
                if bucket != current:
                    if pending:
                        yield current, _merge(pending, by_source)
                    current, pending = bucket, []
                pending.extend(items)
            if pending:
                yield current, _merge(pending, by_source)

    def _get_usage(self, key: _Key, query: dict[str, list[str]], body: bytes) -> bytes:
        if not self.cache_responses:
            return self._render_usage(key, query)
        account = self._accounts[key.username]
        revisions = tuple(sorted(account.revisions.items()))
        cache_key = (key.username, self._now, revisions, tuple(sorted((k, tuple(v)) for k, v in query.items())))
        rendered = self._usage_cache.get(cache_key)
        if rendered is None:
            rendered = self._usage_cache[cache_key] = self._render_usage(key, query)
        return rendered

    def _render_usage(self, key: _Key, query: dict[str, list[str]]) -> bytes:
        account = self._accounts[key.username]
        uq = self._usage_query(query)
        now_ts = self._now.timestamp()
        fields: list[str] = []
        more = False
        if uq.series:
            page, more = _take_page(self._buckets(account, uq, now_ts), uq.offset, uq.limit)
            series = ",".join(
                f'{{"bucket":"{_bucket_text(bucket)}","results":['
                + ",".join(account.render(item, uq.auth_label, uq.auth_structured) for item in rows)
                + "]}"
                for bucket, rows in page
            )
            fields.append(f'"time_series":[{series}]')
        if uq.summary and uq.offset == 0:
            everything = [item for _hour, items in self._visible_hours(account, uq, now_ts) for item in items]
            rows = _merge(everything, uq.auth_label or uq.auth_structured)
            summary = ",".join(account.render(item, uq.auth_label, uq.auth_structured) for item in rows)
            fields.append(f'"summary":[{summary}]')
        cursor = json.dumps(_encode_cursor(uq.offset + uq.limit) if more else None)
        fields.append(f'"next_cursor":{cursor},"has_more":{"true" if more else "false"}')
        return ("{" + ",".join(fields) + "}").encode()

    def _get_keys(self, key: _Key, query: dict[str, list[str]], body: bytes) -> bytes:
        account = self._accounts[key.username]
        expand = _expansions(query, frozenset({"creator_info"}))
        limit = _limit(query, self.page_size, self.max_page_size)
        offset = _offset(query)
        listed = [record for record in account.keys if record.scope == "API" and not record.revoked]
        listed.sort(key=lambda record: record.created_at)
        keys = []
        for record in listed[offset : offset + limit]:
            entry = {
                "key_id": record.key_id,
                "alias": record.alias,
                "scope": record.scope,
                "created_at": record.created_at,
            }
            if "creator_info" in expand:
                entry["creator_nickname"] = record.creator
                entry["creator_email"] = f"{record.creator}@{account.username}.example.com"
            keys.append(entry)
        more = offset + limit < len(listed)
        return json.dumps(
            {"keys": keys, "next_cursor": _encode_cursor(offset + limit) if more else None, "has_more": more}
        ).encode()

    def _get_billing(self, key: _Key, query: dict[str, list[str]], body: bytes) -> bytes:
        account = self._accounts[key.username]
        expand = _expansions(query, frozenset({"credits"}))
        out: dict[str, Any] = {"username": account.username}
        if "credits" in expand:
            out["credits"] = {"current_balance": float(account.credits), "currency": CURRENCY}
        return json.dumps(out).encode()

    def _get_pricing(self, key: _Key, query: dict[str, list[str]], body: bytes) -> bytes:
        wanted = _filter_values(query, "endpoint_id")
        if wanted is None:
            raise _ApiError(400, "validation_error", "Parameter 'endpoint_id' is required (1-50 endpoint ids)")
        unknown = [endpoint for endpoint in wanted if endpoint not in _PRICES]
        if unknown:
            raise _ApiError(404, "not_found", f"No pricing found for endpoint(s): {', '.join(unknown)}")
        prices = [
            f'{{"endpoint_id":{json.dumps(endpoint)},"unit_price":{_fmt(_PRICES[endpoint][1])},'
            f'"unit":{json.dumps(_PRICES[endpoint][0])},"currency":"{CURRENCY}"}}'
            for endpoint in dict.fromkeys(wanted)
        ]
        return ('{"prices":[' + ",".join(prices) + '],"next_cursor":null,"has_more":false}').encode()

    def _post_estimate(self, key: _Key, query: dict[str, list[str]], body: bytes) -> bytes:
        try:
            request = json.loads(body, parse_float=Decimal)
        except ValueError:
            raise _ApiError(400, "validation_error", "Request body must be JSON") from None
        if not isinstance(request, dict):
            raise _ApiError(400, "validation_error", "Request body must be a JSON object")
        kind = request.get("estimate_type")
        if kind not in ("unit_price", "historical_api_price"):
            raise _ApiError(400, "validation_error", "'estimate_type' must be 'unit_price' or 'historical_api_price'")
        endpoints = request.get("endpoints")
        if not isinstance(endpoints, dict):
            raise _ApiError(400, "validation_error", "'endpoints' must be an object of endpoint id -> quantities")
        name = "unit_quantity" if kind == "unit_price" else "call_quantity"
        total = _ZERO
        for endpoint, spec in endpoints.items():
            value = spec.get(name) if isinstance(spec, dict) else None
            if isinstance(value, bool) or not isinstance(value, int | Decimal):
                raise _ApiError(400, "validation_error", f"endpoints[{endpoint!r}].{name} must be a number")
            quantity = Decimal(value)
            if kind == "unit_price" and quantity < Decimal("0.000001"):
                raise _ApiError(400, "validation_error", f"endpoints[{endpoint!r}].{name} must be >= 0.000001")
            if kind == "historical_api_price" and (quantity < 1 or quantity != quantity.to_integral_value()):
                raise _ApiError(400, "validation_error", f"endpoints[{endpoint!r}].{name} must be an integer >= 1")
            if endpoint not in _PRICES:
                raise _ApiError(404, "not_found", f"No pricing found for endpoint {endpoint}")
            unit, price = _PRICES[endpoint]
            per_call = _UNIT_SHAPES[unit][3] if kind == "historical_api_price" else Decimal(1)
            total += quantity * per_call * price
        try:
            rounded = total.quantize(_CENT, rounding=ROUND_HALF_UP)
        except InvalidOperation:
            raise _ApiError(400, "validation_error", "Quantities are too large") from None
        return (f'{{"estimate_type":"{kind}","total_cost":{_fmt(rounded)},"currency":"{CURRENCY}"}}').encode()


def _take_page(
    buckets: Iterator[tuple[int, Sequence[_Item]]], offset: int, limit: int
) -> tuple[list[tuple[int, Sequence[_Item]]], bool]:
    """Items ``offset .. offset+limit`` of the bucketed stream, and whether any item follows them."""
    skip, room = offset, limit
    page: list[tuple[int, Sequence[_Item]]] = []
    for bucket, rows in buckets:
        if skip >= len(rows):
            skip -= len(rows)
            continue
        taken = rows[skip : skip + room]
        left = len(rows) - skip - len(taken)
        skip = 0
        page.append((bucket, taken))
        room -= len(taken)
        if room == 0:
            return page, left > 0 or next(buckets, None) is not None
    return page, False


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until Ctrl-C with ``now`` following the wall clock, printing the base URL and Admin keys."""
    parser = argparse.ArgumentParser(
        prog="python -m connectors.fal.simulator", description="Serve a simulator of fal.ai's Platform APIs."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--account", action="append", help="team username (repeatable; default my-team)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--history-days", type=int, default=35)
    parser.add_argument("--keys", type=int, default=3, help="API keys per account")
    parser.add_argument("--models", type=int, default=5, help="endpoints per account")
    args = parser.parse_args(argv)
    sim = FalSimulator(host=args.host, port=args.port, seed=args.seed, history_days=args.history_days)
    sim.start()
    try:
        print(f"fal simulator serving at {sim.base_url}", flush=True)
        for username in args.account or ["my-team"]:
            key = sim.add_account(username, n_keys=args.keys, n_models=args.models)
            print(f"account {username}: admin key {key}", flush=True)
        print("press Ctrl-C to stop", flush=True)
        while True:
            time.sleep(1)
            sim.now = datetime.now(UTC)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
