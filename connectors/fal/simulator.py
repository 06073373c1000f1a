"""A simulator of fal.ai's Platform APIs serving real HTTP on loopback, for tests, benchmarks and demos.

It answers the operations the fal connector uses, shaped like ``shared/fal/openapi.json``:
``GET /models/usage``, ``GET /keys``, ``GET /account/billing``, ``GET /models/pricing`` and
``POST /models/pricing/estimate``, all under ``/v1``. Usage is synthetic but deterministic: one
account's hour is a pure function of (seed, username, hour, revision), built on demand and cached, so
long histories stay cheap. The server, routing, faults, keys, paging and the ``/_sim`` control plane are the
connector kit's (:mod:`connector_sdk.kit.simulator`); this module is what is fal about it.

Choices made where fal's documentation is silent:

* Every generated usage item sits at a fixed second inside its hour. ``bound_to_timeframe=false``
  windows, ``minute`` buckets and the still-running current hour (partly visible, growing as ``now``
  advances) use it.
* All five timeframes are served; ``day``/``week`` (from Monday)/``month`` buckets sum the hours they
  hold. Without an ``auth_method``/``auth_method_structured`` expansion, items of different auth
  methods are merged too.
* Paging counts items across buckets; the cursor is base64 of the item offset. ``summary`` comes with
  the first page only and is never split; a summary-only request is a single page. By default a page holds
  ``page_size`` (100) items and a ``limit`` is capped at ``max_page_size`` (1,000); ``stand_in=True`` behaves
  like fal at its least generous: 50 items without a ``limit``, at most 200, and a 400 ``validation_error``
  about ``limit`` above ``reject_above`` (200 unless given).
* Only the ``UTC`` (or ``Etc/UTC``) timezone is accepted; any other is a 400 ``validation_error``.
* Keys made by :meth:`FalSimulator.issue_key` carry no usage until :meth:`FalSimulator.add_traffic` gives them
  some. A revoked key leaves ``/keys`` but its usage goes on being reported, like a deleted key's.
* Traffic added by :meth:`FalSimulator.add_traffic` (a scenario's) is steady: drawn from its own random stream, so
  the rest of the account's usage stays exactly as it was, and shown only between its ``since`` and ``until``;
  :meth:`FalSimulator.stop_traffic` ends any source's traffic, the account's own included, at a moment.
* ``/models/pricing/estimate`` rounds ``total_cost`` to cents; ``historical_api_price`` assumes a
  typical number of billing units per call for each model.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from connector_sdk.kit.simulator import (
    ApiError,
    Fault,
    PageSize,
    Request,
    SimKey,
    Simulator,
    control_call,
    credentials,
    decode_offset,
    encode_offset,
    instant,
    offset_page,
    utc,
)

__all__ = ["MODEL_CATALOGUE", "FalSimulator", "Fault"]

API_PREFIX = "/v1"
CURRENCY = "USD"
INVALID_KEY_MESSAGE = "Invalid API key or malformed Authorization header"
ADMIN_REQUIRED_MESSAGE = (
    "This endpoint requires an Admin API key; the key sent has API scope. Create an Admin-scoped key to use it."
)
STAND_IN_PAGE_SIZE = 50
STAND_IN_MAX_PAGE_SIZE = 200

_HOUR = 3600
_DAY = 86400
_Q9 = Decimal("1e-9")
_CENT = Decimal("0.01")
_HUNDRED = Decimal(100)
_ZERO = Decimal(0)
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
    """Who made requests: an API key (listed, admin or deleted), a member's login, or a bare user token.

    ``steady`` sources are a scenario's (:meth:`FalSimulator.add_traffic`): they draw from a stream of their own.
    Any source shows traffic only at moments in ``[since, until)`` (Unix seconds; ``None``: unbounded).
    """

    label: str
    key_id: str | None
    login: str | None
    p_active: float
    scale: int
    models: tuple[int, ...]
    am_json: str = ""
    ams_json: str = ""
    steady: bool = False
    since: float | None = None
    until: float | None = None

    def render_auth(self) -> None:
        self.am_json = f',"auth_method":{json.dumps(self.label)}'
        self.ams_json = f',"auth_method_structured":{json.dumps(self.structured(), separators=(",", ":"))}'

    def shows(self, moment: float) -> bool:
        return (self.since is None or self.since <= moment) and (self.until is None or moment < self.until)

    def describe(self) -> dict[str, Any]:
        def text(moment: float | None) -> str | None:
            return None if moment is None else datetime.fromtimestamp(moment, UTC).isoformat()

        return {
            "label": self.label,
            "key_id": self.key_id,
            "login": self.login,
            "since": text(self.since),
            "until": text(self.until),
        }

    def structured(self) -> dict[str, str]:
        out = {"detail": self.label}
        if self.key_id is not None:
            out["api_key_id"] = self.key_id
        if self.login is not None:
            out["login_username"] = self.login
        return out


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


def _filter_values(request: Request, name: str) -> list[str] | None:
    values = request.many(name)
    if values is not None and not 1 <= len(values) <= _MAX_FILTER_VALUES:
        raise ApiError(400, f"Parameter {name!r} accepts 1-{_MAX_FILTER_VALUES} values")
    return values


def _expansions(request: Request, allowed: frozenset[str], default: Sequence[str] = ()) -> set[str]:
    values = request.many("expand")
    if values is None:
        return set(default)
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ApiError(400, f"Unknown expand value(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    return set(values)


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
        raise ApiError(400, f"Parameter {name!r} must be an ISO 8601 date-time or YYYY-MM-DD, got {text!r}") from None
    return utc(moment).timestamp()


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
        self.keys: list[SimKey] = []
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
            source.render_auth()
        self.sources = sources

    def _new_key(self, scope: str, alias: str, created_at: datetime, creator: str | None = None) -> SimKey:
        key = SimKey(
            key_id=f"{self.rng.getrandbits(64):016x}",
            secret=f"{self.rng.getrandbits(128):032x}",
            account=self.username,
            scope=scope,
            alias=alias,
            created_at=created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            creator=creator or self.members[len(self.keys) % len(self.members)],
        )
        self.keys.append(key)
        return key

    def forget_usage(self) -> None:
        """Drop the cached hours: the sources changed, so every hour is generated again."""
        self.cache.clear()

    def generate(self, hour: int, revision: int) -> tuple[_Item, ...]:
        """The usage of one hour at one revision: a pure function of (seed, username, hour, revision)."""
        if self.empty or not self.models:
            return ()
        digest = hashlib.blake2b(f"{hour}:{revision}".encode(), key=self.hash_key, digest_size=8).digest()
        rng = random.Random(int.from_bytes(digest, "big"))
        # A quiet hour silences the account's own traffic, never a scenario's: its sources promise every hour.
        quiet_hour = rng.random() < _EMPTY_HOUR_CHANCE
        busy = _DIURNAL[(hour // _HOUR) % 24]
        rand, randint, randrange = rng.random, rng.randint, rng.randrange
        models, discount = self.models, self.discount
        items: list[_Item] = []
        for index, source in enumerate(self.sources):
            if source.steady or quiet_hour:
                continue
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
        items += self._steady(hour, revision)
        # Bounds are applied after every draw, so a source stopped early leaves the others' usage as it was.
        return tuple(item for item in items if self.sources[item.source].shows(hour + item.offset))

    def _steady(self, hour: int, revision: int) -> list[_Item]:
        """The items of the scenario sources in ``hour``, each from a random stream of its own."""
        items: list[_Item] = []
        for index, source in enumerate(self.sources):
            if not source.steady:
                continue
            seed = hashlib.blake2b(f"{hour}:{revision}:{index}".encode(), key=self.hash_key, digest_size=8).digest()
            rng = random.Random(int.from_bytes(seed, "big"))
            if rng.random() >= source.p_active:
                continue
            for m in source.models:
                model = self.models[m]
                count = rng.randint(model.low, model.high) * source.scale
                items.append(
                    _Item(index, m, rng.randrange(_HOUR), count * model.step, model.unit_price, self.discount[m])
                )
        return items

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


class FalSimulator(Simulator):
    """fal.ai's Platform APIs on loopback: accounts with deterministic synthetic usage, keys and faults.

    ``now`` (aware UTC; defaults to the wall clock at construction and then stands still until set) decides
    what exists: usage for whole hours ``h`` with
    ``now - history_days <= h <= floor_hour(now)``; the current hour shows only what happened before
    ``now``. ``requests`` logs every request received as
    ``{"method", "path", "query", "has_auth", "status"}`` (``path`` as sent, including ``/v1``; ``status``
    is 0 while unanswered or when a fault answered nothing).

    Pages: ``page_size`` items when no ``limit`` is sent, a ``limit`` capped at ``max_page_size``, and a 400
    ``validation_error`` for a ``limit`` above ``reject_above`` (``None``: never). ``stand_in=True`` sets the
    ones not given to fal at its least generous: 50, 200 and 200.

    ``latency`` (seconds) delays every answer, as the network to a remote API would; ``cache_responses`` keeps
    each ``/models/usage`` body it rendered and serves it again to the same request while ``now`` and the
    account's revisions stand still, so that a benchmark measures its client rather than the simulator.
    """

    name = "fal-simulator"
    api_prefix = API_PREFIX
    error_kinds = {
        400: "validation_error",
        401: "authorization_error",
        403: "authorization_error",
        404: "not_found",
        405: "validation_error",
        422: "validation_error",
        429: "rate_limited",
        501: "not_implemented",
    }
    default_error_kind = "validation_error"

    def __init__(
        self,
        *,
        now: datetime | None = None,
        history_days: int = 35,
        page_size: int | None = None,
        max_page_size: int | None = None,
        reject_above: int | None = None,
        stand_in: bool = False,
        seed: int = 1,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        cache_responses: bool = False,
    ) -> None:
        super().__init__(host=host, port=port, latency=latency, now=now)
        if stand_in:
            page_size = STAND_IN_PAGE_SIZE if page_size is None else page_size
            max_page_size = STAND_IN_MAX_PAGE_SIZE if max_page_size is None else max_page_size
            reject_above = max_page_size if reject_above is None else reject_above
        self.history_days = history_days
        self.page_size = 100 if page_size is None else page_size
        self.max_page_size = 1000 if max_page_size is None else max_page_size
        self.reject_above = reject_above
        self._paging()  # refuses sizes below 1 now rather than at the first request
        self.seed = seed
        self.cache_responses = cache_responses
        self._usage_cache: dict[tuple[Any, ...], bytes] = {}
        self._accounts: dict[str, _Account] = {}
        self._request_ids = itertools.count(1)
        self.routes.add("GET", "/models/usage", self._get_usage, auth="ADMIN")
        self.routes.add("GET", "/keys", self._get_keys, auth="ADMIN")
        self.routes.add("GET", "/account/billing", self._get_billing, auth="ADMIN")
        self.routes.add("GET", "/models/pricing", self._get_pricing, auth="ANY")
        self.routes.add("POST", "/models/pricing/estimate", self._post_estimate, auth="ANY")
        self.control_routes.add("PATCH", "/keys/{key_id}", control_call(self.update_key))
        self.control_routes.add("POST", "/traffic", control_call(self.add_traffic, status=201))
        self.control_routes.add("POST", "/traffic/stop", control_call(self.stop_traffic))

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
            created=self.now,
            history_days=self.history_days,
            models_per_source=models_per_source,
            activity=activity,
        )
        added: list[SimKey] = []
        try:
            for key in account.keys:
                added.append(self.keyring.add(key))
        except ValueError:
            for key in added:
                self.keyring.discard(key.key_id)
            raise
        self._accounts[username] = account
        return f"{account.admin_key.key_id}:{account.admin_key.secret}"

    def issue_key(
        self,
        account: str,
        *,
        scope: str = "ADMIN",
        alias: str | None = None,
        created_at: datetime | str | None = None,
        creator: str | None = None,
    ) -> str:
        """Create another key for the team ``account`` (``scope`` ``"ADMIN"`` or ``"API"``); returns
        ``"key_id:key_secret"``. ``created_at`` (default ``now``) back-dates it, as a key made long ago and never
        used; ``creator`` is the member's nickname ``/keys`` names (``creator_email`` is made from it)."""
        if scope not in ("ADMIN", "API"):
            raise ValueError("scope must be 'ADMIN' or 'API'")
        team = self._account(account)
        team.issued += 1
        if alias is None:
            alias = f"Issued {scope.title()} Key {team.issued}"
        created = self.now if created_at is None else instant(created_at)
        key = self.keyring.add(team._new_key(scope, alias, created.replace(microsecond=0), creator))
        return f"{key.key_id}:{key.secret}"

    def update_key(self, key_id: str, *, alias: str) -> dict[str, Any]:
        """Rename a key (``PATCH /_sim/keys/{key_id}`` ``{"alias": ...}``): ``/keys`` and the usage's
        ``auth_method`` show the new alias from now on."""
        key = self.keyring.get(key_id)
        if not isinstance(alias, str) or not alias.strip():
            raise ValueError("'alias' must be a non-empty string")
        key.alias = alias
        team = self._account(key.account)
        for source in team.sources:
            if source.key_id == key_id:
                source.label = alias
                source.render_auth()
        self._usage_cache.clear()
        return {"key_id": key_id, "alias": alias}

    def add_traffic(
        self,
        account: str,
        *,
        key_id: str | None = None,
        login: str | None = None,
        label: str | None = None,
        models: Sequence[str] | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        activity: float = 1.0,
        scale: int = 1,
    ) -> dict[str, Any]:
        """Make requests from now on, as a scenario needs (``POST /_sim/traffic``); returns the source described.

        ``key_id`` spends with that key (listed, issued, revoked, or an id fal never listed: a key no listing
        names); ``login`` alone is a member working in fal's web UI (``auth_method_structured.login_username``, no
        ``api_key_id``); both is that member's login token on a key. ``label`` is ``auth_method`` (default: the
        key's alias, the login, or the key id). ``models`` are endpoint ids of the account (default: its first
        two). Traffic shows at moments in ``[since, until)``: ``since`` defaults to the key's creation when it is a
        known key, else the start of the history. Each hour it is active with chance ``activity`` (1: every
        hour), using every model, ``scale`` times a typical quantity.
        """
        team = self._account(account)
        if key_id is None and login is None:
            raise ValueError("say whose traffic it is: 'key_id', 'login' or both")
        if not 0 < activity <= 1 or scale < 1:
            raise ValueError("'activity' must be in (0, 1] and 'scale' >= 1")
        known = next((key for key in team.keys if key.key_id == key_id), None)
        wanted = list(models) if models is not None else [model.endpoint_id for model in team.models[:2]]
        by_id = {model.endpoint_id: index for index, model in enumerate(team.models)}
        unknown = [endpoint for endpoint in wanted if endpoint not in by_id]
        if unknown or not wanted:
            raise ValueError(f"models must be endpoint ids the account uses: {', '.join(by_id)}")
        start = instant(since) if since is not None else instant(known.created_at) if known is not None else None
        end = None if until is None else instant(until)
        source = _Source(
            label or (known.alias if known is not None else login or key_id or ""),
            key_id,
            login,
            activity,
            scale,
            tuple(sorted({by_id[endpoint] for endpoint in wanted})),
            steady=True,
            since=None if start is None else start.timestamp(),
            until=None if end is None else end.timestamp(),
        )
        source.render_auth()
        team.sources.append(source)
        team.forget_usage()
        self._usage_cache.clear()
        return {"account": account, **source.describe()}

    def stop_traffic(
        self, account: str, *, key_id: str | None = None, login: str | None = None, at: datetime | str | None = None
    ) -> dict[str, Any]:
        """End the traffic of every source with ``key_id`` and/or ``login`` at ``at`` (default ``now``), the
        account's own sources included: an idle key from then on (``POST /_sim/traffic/stop``). Traffic before
        ``at`` stays as it was. ``KeyError`` when no source matches."""
        team = self._account(account)
        if key_id is None and login is None:
            raise ValueError("say whose traffic to stop: 'key_id', 'login' or both")
        moment = (self.now if at is None else instant(at)).timestamp()
        stopped = [
            source
            for source in team.sources
            if (key_id is None or source.key_id == key_id) and (login is None or source.login == login)
        ]
        if not stopped:
            raise KeyError(f"no traffic from {key_id or login!r} in account {account!r}")
        for source in stopped:
            source.until = moment if source.until is None else min(source.until, moment)
        team.forget_usage()
        self._usage_cache.clear()
        return {"account": account, "stopped": [source.describe() for source in stopped]}

    def revoke_key(self, key: str) -> None:
        """Revoke a key (``"key_id:key_secret"`` or a bare key id): it gets 401 and leaves ``/keys``."""
        self.keyring.revoke(key.partition(":")[0].strip())

    def truth(self, account: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Every usage item served for hours ``start <= h < end``, in order, as ``timeframe=hour`` with all
        expansions serves them.

        Each dict holds the item's fields as served (numbers as exact ``Decimal``) plus ``"bucket"``, the
        aware UTC start of its hour.
        """
        team = self._account(account)
        now_ts = self.now.timestamp()
        lo = max(_ceil(utc(start).timestamp(), "hour"), self._first_hour(now_ts))
        hi = utc(end).timestamp()
        out: list[dict[str, Any]] = []
        for hour in range(lo, _floor(now_ts, "hour") + 1, _HOUR):
            if hour >= hi:
                break
            bucket = datetime.fromtimestamp(hour, UTC)
            out.extend(team.as_dict(item, bucket) for item in team.hour_items(hour) if hour + item.offset < now_ts)
        return out

    def revise(self, username: str, hour: datetime) -> None:
        """Change the usage of the hour containing ``hour`` (new quantities; items may appear or vanish)."""
        self._account(username).revise(_floor(utc(hour).timestamp(), "hour"))

    def describe(self) -> dict[str, Any]:
        accounts = [
            {
                "account": name,
                "keys": [
                    {"key_id": key.key_id, "alias": key.alias, "scope": key.scope, "revoked": key.revoked}
                    for key in self.keyring.of(name)
                ],
                "admin_key_id": team.admin_key.key_id,
                "traffic": [source.describe() for source in team.sources],
            }
            for name, team in self._accounts.items()
        ]
        paging = {"page_size": self.page_size, "max_page_size": self.max_page_size, "reject_above": self.reject_above}
        return {**super().describe(), "accounts": accounts, "paging": paging}

    def error_body(self, status: int, kind: str, message: str, details: Mapping[str, Any]) -> bytes:
        error = {"type": kind, "message": message, "request_id": f"sim-{next(self._request_ids):08d}"}
        return json.dumps({"error": error}).encode()

    def authenticate(self, request: Request, requirement: Any) -> SimKey:
        key_id, _, secret = (credentials(request.authorization, "Key") or "").partition(":")
        record = self.keyring.verify(secret, key_id) if key_id else None
        if record is None:
            raise ApiError(401, INVALID_KEY_MESSAGE)
        if requirement == "ADMIN" and record.scope != "ADMIN":
            raise ApiError(403, ADMIN_REQUIRED_MESSAGE)
        return record

    def _paging(self) -> PageSize:
        return PageSize(self.page_size, self.max_page_size, self.reject_above)

    def _account(self, username: str) -> _Account:
        try:
            return self._accounts[username]
        except KeyError:
            raise KeyError(f"unknown account {username!r}") from None

    def _first_hour(self, now_ts: float) -> int:
        return _ceil(now_ts - self.history_days * _DAY, "hour")

    def _usage_query(self, request: Request) -> _UsageQuery:
        now_ts = self.now.timestamp()
        zone = request.one("timezone")
        if zone is not None and zone.upper() not in ("UTC", "ETC/UTC"):
            raise ApiError(400, f"Unsupported timezone {zone!r}: this simulator serves UTC only")
        start_text, end_text = request.one("start"), request.one("end")
        start = now_ts - _DAY if start_text is None else _instant(start_text, "start")
        end = now_ts if end_text is None else _instant(end_text, "end")
        if start >= end:
            raise ApiError(400, "'start' must be before 'end'")
        timeframe = request.one("timeframe")
        if timeframe is None:
            timeframe = _auto_timeframe(end - start)
        elif timeframe not in _TIMEFRAMES:
            raise ApiError(400, f"'timeframe' must be one of {', '.join(_TIMEFRAMES)}")
        bound = request.one("bound_to_timeframe") or "true"
        if bound not in ("true", "false"):
            raise ApiError(400, "'bound_to_timeframe' must be 'true' or 'false'")
        if bound == "true":
            start, end = _floor(start, timeframe), _ceil(end, timeframe)
        expand = _expansions(request, _USAGE_EXPANSIONS, ("time_series",))
        if not expand & {"time_series", "summary"}:
            raise ApiError(400, "'expand' must include 'time_series' or 'summary'")
        endpoints, key_ids, logins = (
            _filter_values(request, name) for name in ("endpoint_id", "api_key_id", "login_username")
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
            limit=self._paging().read(request.one("limit")),
            offset=decode_offset(request.one("cursor")),
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

    def _get_usage(self, request: Request) -> bytes:
        if not self.cache_responses:
            return self._render_usage(request)
        username = request.principal.account
        revisions = tuple(sorted(self._accounts[username].revisions.items()))
        query = tuple(sorted((k, tuple(v)) for k, v in request.query.items()))
        cache_key = (username, self.now, revisions, query)
        rendered = self._usage_cache.get(cache_key)
        if rendered is None:
            rendered = self._usage_cache[cache_key] = self._render_usage(request)
        return rendered

    def _render_usage(self, request: Request) -> bytes:
        account = self._accounts[request.principal.account]
        uq = self._usage_query(request)
        now_ts = self.now.timestamp()
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
        cursor = json.dumps(encode_offset(uq.offset + uq.limit) if more else None)
        fields.append(f'"next_cursor":{cursor},"has_more":{"true" if more else "false"}')
        return ("{" + ",".join(fields) + "}").encode()

    def _get_keys(self, request: Request) -> bytes:
        account = self._accounts[request.principal.account]
        expand = _expansions(request, frozenset({"creator_info"}))
        offset = decode_offset(request.one("cursor"))
        listed = [record for record in account.keys if record.scope == "API" and not record.revoked]
        listed.sort(key=lambda record: record.created_at)
        page, following = offset_page(listed, offset, self._paging().read(request.one("limit")))
        keys = []
        for record in page:
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
        cursor = None if following is None else encode_offset(following)
        return json.dumps({"keys": keys, "next_cursor": cursor, "has_more": following is not None}).encode()

    def _get_billing(self, request: Request) -> bytes:
        account = self._accounts[request.principal.account]
        expand = _expansions(request, frozenset({"credits"}))
        out: dict[str, Any] = {"username": account.username}
        if "credits" in expand:
            out["credits"] = {"current_balance": float(account.credits), "currency": CURRENCY}
        return json.dumps(out).encode()

    def _get_pricing(self, request: Request) -> bytes:
        wanted = _filter_values(request, "endpoint_id")
        if wanted is None:
            raise ApiError(400, "Parameter 'endpoint_id' is required (1-50 endpoint ids)")
        unknown = [endpoint for endpoint in wanted if endpoint not in _PRICES]
        if unknown:
            raise ApiError(404, f"No pricing found for endpoint(s): {', '.join(unknown)}")
        prices = [
            f'{{"endpoint_id":{json.dumps(endpoint)},"unit_price":{_fmt(_PRICES[endpoint][1])},'
            f'"unit":{json.dumps(_PRICES[endpoint][0])},"currency":"{CURRENCY}"}}'
            for endpoint in dict.fromkeys(wanted)
        ]
        return ('{"prices":[' + ",".join(prices) + '],"next_cursor":null,"has_more":false}').encode()

    def _post_estimate(self, request: Request) -> bytes:
        body = request.json()
        if not isinstance(body, dict):
            raise ApiError(400, "Request body must be a JSON object")
        kind = body.get("estimate_type")
        if kind not in ("unit_price", "historical_api_price"):
            raise ApiError(400, "'estimate_type' must be 'unit_price' or 'historical_api_price'")
        endpoints = body.get("endpoints")
        if not isinstance(endpoints, dict):
            raise ApiError(400, "'endpoints' must be an object of endpoint id -> quantities")
        name = "unit_quantity" if kind == "unit_price" else "call_quantity"
        total = _ZERO
        for endpoint, spec in endpoints.items():
            value = spec.get(name) if isinstance(spec, dict) else None
            if isinstance(value, bool) or not isinstance(value, int | Decimal):
                raise ApiError(400, f"endpoints[{endpoint!r}].{name} must be a number")
            quantity = Decimal(value)
            if kind == "unit_price" and quantity < Decimal("0.000001"):
                raise ApiError(400, f"endpoints[{endpoint!r}].{name} must be >= 0.000001")
            if kind == "historical_api_price" and (quantity < 1 or quantity != quantity.to_integral_value()):
                raise ApiError(400, f"endpoints[{endpoint!r}].{name} must be an integer >= 1")
            if endpoint not in _PRICES:
                raise ApiError(404, f"No pricing found for endpoint {endpoint}")
            unit, price = _PRICES[endpoint]
            per_call = _UNIT_SHAPES[unit][3] if kind == "historical_api_price" else Decimal(1)
            total += quantity * per_call * price
        try:
            rounded = total.quantize(_CENT, rounding=ROUND_HALF_UP)
        except InvalidOperation:
            raise ApiError(400, "Quantities are too large") from None
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
