"""Building blocks for a vendor simulator: a real HTTP server on loopback that a connector's tests and demo talk to.

A vendor simulator subclasses :class:`Simulator`, sets its ``api_prefix`` and ``error_kinds``, writes
:meth:`Simulator.error_body` in the vendor's error envelope and :meth:`Simulator.authenticate` for its auth scheme,
and registers its operations in ``self.routes``. The base gives it, without another line:

* a threaded server (``start``/``stop``/``with``; ``port=0`` picks a free port) that answers on keep-alive
  connections and stops promptly even while a request hangs;
* routing with ``{name}`` path parameters, 404 and 405 (with ``Allow``) in the vendor's envelope, and a 500 in that
  envelope instead of a dropped connection when a handler raises;
* a log of every API request (``requests``: method, path, query, whether credentials came, status) that never
  holds the credentials themselves;
* faults (:class:`Fault`): any status with any headers (``Retry-After``) or raw body, hangs, truncated bodies,
  connection resets, per path, after ``n`` good requests, ``times`` times; and a ``latency`` on every answer;
* keys (:class:`KeyRing`: issue, revoke, constant-time checks) and a simulated clock (``now``);
* a **control plane** on the same port under ``/_sim`` (JSON, never logged, never faulted), so a person with
  ``curl`` or a test in another process can drive it. It answers only requests addressed to a loopback name and
  takes bodies only as ``Content-Type: application/json``, so that a web page open in a browser cannot drive it:

  ==========================  ==================================================================================
  ``GET /_sim``               what is served: name, API base URL, accounts (:meth:`Simulator.describe`)
  ``POST /_sim/keys``         ``{"account": ..., **options}`` -> ``{"key": secret, "key_id": id}`` (201)
  ``DELETE /_sim/keys/{id}``  revoke a key by its id (the secret never has to travel)
  ``POST /_sim/faults``       a :class:`Fault` as JSON (``body`` as text) (201); ``DELETE /_sim/faults`` clears
  ``GET /_sim/truth``         ``?account=&start=&end=`` (ISO 8601): what the API serves for that window
  ``PUT /_sim/now``           ``{"now": "2026-01-01T00:00:00Z"}`` moves the clock; ``{"now": null}`` follows the
                              wall clock
  ``GET /_sim/requests``      the request log
  ==========================  ==================================================================================

  A vendor adds its own operations (a scenario to drive: traffic from a new key, an owner losing access) to
  ``self.control_routes``, usually as :func:`control_call` of a Python method, so tests in-process and a person
  with ``curl`` drive the same code.

Paging helpers cover the three common styles: offset cursors (fal's ``cursor``/``next_cursor``, OpenAI's
``page``/``next_page`` are both an opaque offset), :func:`after_page` for ``after``/``has_more``/``last_id``
listings, and :class:`PageSize` for a ``limit`` parameter with a default, a silent cap and a hard maximum.

The kit imports only the standard library: connectors and tests may import it, and it imports nothing of the host.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import json
import re
import socket
import struct
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple, Self, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = [
    "CONTROL_PREFIX",
    "FAULT_ACTIONS",
    "JSON",
    "ApiError",
    "Fault",
    "KeyRing",
    "PageSize",
    "Request",
    "Response",
    "Route",
    "Routes",
    "SimKey",
    "Simulator",
    "after_page",
    "control_call",
    "credentials",
    "decode_offset",
    "encode_offset",
    "instant",
    "json_bytes",
    "json_response",
    "offset_page",
    "utc",
]

JSON = "application/json"
CONTROL_PREFIX = "/_sim"
_LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
FAULT_ACTIONS = ("respond", "hang", "reset", "truncate")

T = TypeVar("T")


def utc(moment: datetime) -> datetime:
    """``moment`` as aware UTC; a naive datetime is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def instant(value: datetime | str) -> datetime:
    """A moment given as a ``datetime`` (Python callers) or ISO 8601 text (the control plane's JSON), as aware UTC;
    ``ValueError`` for anything else."""
    if isinstance(value, datetime):
        return utc(value)
    if isinstance(value, str):
        return utc(datetime.fromisoformat(value.strip().replace("Z", "+00:00")))
    raise ValueError(f"expected an ISO 8601 date-time, got {value!r}")


class ApiError(Exception):
    """Raise it in a handler to answer ``status`` in the vendor's envelope.

    ``kind`` is the envelope's error type; ``None`` takes the simulator's ``error_kinds`` entry for the status.
    ``details`` are whatever else the vendor's envelope carries (OpenAI's ``param`` and ``code``, say).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str | None = None,
        headers: dict[str, str] | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.headers = headers or {}
        self.details = dict(details or {})


class Response(NamedTuple):
    """An answer: status, body bytes and headers (``Content-Length`` is added when sent)."""

    status: int
    body: bytes
    headers: dict[str, str]


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_NUMBER_MARK = "\x00number\x00"
_MARKED_NUMBER = re.compile(r'"\\u0000number\\u0000([-+0-9.Ee]+)"')


def _jsonable_number(value: Any) -> Any:
    if isinstance(value, Decimal) and value.is_finite():
        return _NUMBER_MARK + str(value)
    return _jsonable(value)


def json_bytes(value: Any) -> bytes:
    """``value`` as a vendor's JSON body: a ``Decimal`` as the exact number it holds (``0.0000025``, never a rounded
    float), a ``datetime`` as ISO 8601."""
    return _MARKED_NUMBER.sub(r"\1", json.dumps(value, default=_jsonable_number)).encode()


def json_response(value: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """``value`` as a JSON answer (``Decimal`` as text, ``datetime`` as ISO 8601)."""
    return Response(status, json.dumps(value, default=_jsonable).encode(), {"Content-Type": JSON, **(headers or {})})


@dataclass
class Request:
    """One request as a handler sees it.

    ``path`` is as sent (with the API prefix); ``route`` is the path after the prefix, ``params`` the values of the
    route's ``{name}`` segments, ``principal`` whatever :meth:`Simulator.authenticate` returned.
    """

    method: str
    path: str
    route: str
    query: dict[str, list[str]]
    headers: Mapping[str, str]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)
    principal: Any = None

    @property
    def authorization(self) -> str | None:
        return self.headers.get("Authorization")

    def one(self, name: str) -> str | None:
        """A query parameter given at most once (400 when repeated); ``None`` when absent."""
        values = self.query.get(name)
        if not values:
            return None
        if len(values) > 1:
            raise ApiError(400, f"Parameter {name!r} may be given only once", details={"param": name})
        return values[0]

    def many(self, name: str) -> list[str] | None:
        """A repeated and/or comma-separated query parameter (400 on an empty value); ``None`` when absent."""
        raw = self.query.get(name)
        if raw is None:
            return None
        values = [part.strip() for value in raw for part in value.split(",")]
        if any(not value for value in values):
            raise ApiError(400, f"Parameter {name!r} has an empty value", details={"param": name})
        return values

    def json(self) -> Any:
        """The body as JSON (numbers with a fraction as ``Decimal``); 400 when it is not JSON."""
        try:
            return json.loads(self.body, parse_float=Decimal)
        except ValueError:
            raise ApiError(400, "Request body must be JSON") from None


Handler = Callable[[Request], "Response | bytes | dict[str, Any] | list[Any]"]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str
    handler: Handler
    auth: Any = None  # handed to Simulator.authenticate; None means the operation needs no credentials


class Routes:
    """The route table: ``add("GET", "/projects/{project_id}/api_keys", handler, auth="admin")``."""

    def __init__(self) -> None:
        self._exact: dict[str, dict[str, Route]] = {}
        self._patterns: list[tuple[re.Pattern[str], dict[str, Route]]] = []

    def add(self, method: str, pattern: str, handler: Handler, *, auth: Any = None) -> None:
        route = Route(method.upper(), pattern, handler, auth)
        if "{" not in pattern:
            self._exact.setdefault(pattern, {})[route.method] = route
            return
        regex = re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(pattern)) + "$")
        for existing, operations in self._patterns:
            if existing.pattern == regex.pattern:
                operations[route.method] = route
                return
        self._patterns.append((regex, {route.method: route}))

    def match(self, path: str) -> tuple[dict[str, Route], dict[str, str]] | None:
        """The operations served at ``path`` (by method) and its path parameters; ``None`` when nothing is."""
        operations = self._exact.get(path)
        if operations is not None:
            return operations, {}
        for regex, operations in self._patterns:
            found = regex.match(path)
            if found:
                return operations, {name: unquote(value) for name, value in found.groupdict().items()}
        return None


# -- faults ----------------------------------------------------------------------------------------------------
@dataclass
class Fault:
    """A misbehaviour shown for requests to ``path`` (after the API prefix, which may be included; ``"*"`` matches
    every path).

    Each request is offered to the faults in injection order: a matching fault whose ``after`` is still positive
    counts it down and lets the request on to the next fault; the first matching fault with ``after == 0`` takes
    the request and counts ``times`` down (it is dropped at zero). After waiting ``delay`` seconds it acts:

    * ``respond``: answer ``status`` with ``headers`` and ``body`` (``None``: the vendor's error envelope for the
      status, or the real body when ``status`` is below 400);
    * ``hang``: say nothing and close the connection (the client's read timeout fires if ``delay`` is longer; with
      no delay it is a dropped connection);
    * ``reset``: send the real status and headers with the full ``Content-Length``, half the body, then abort the
      connection (TCP reset);
    * ``truncate``: answer the real status with the real body cut in half (a malformed body).
    """

    path: str
    status: int = 500
    times: int = 1
    after: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    action: str = "respond"
    delay: float = 0.0

    @classmethod
    def from_json(cls, value: Any) -> Fault:
        """A fault from the control plane's JSON (``body`` as text); ``ValueError`` names what is wrong."""
        if not isinstance(value, dict):
            raise ValueError("a fault is a JSON object")
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(unknown)}")
        if not isinstance(value.get("path"), str):
            raise ValueError("a fault needs a 'path' (a string; '*' for every path)")
        options = dict(value)
        body = options.get("body")
        if body is not None:
            if not isinstance(body, str):
                raise ValueError("'body' must be text")
            options["body"] = body.encode()
        for name in ("status", "times", "after"):
            if name in options and (isinstance(options[name], bool) or not isinstance(options[name], int)):
                raise ValueError(f"{name!r} must be an integer")
        if "delay" in options:
            if isinstance(options["delay"], bool) or not isinstance(options["delay"], int | float | Decimal):
                raise ValueError("'delay' must be a number of seconds")
            options["delay"] = float(options["delay"])
        headers = options.get("headers", {})
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise ValueError("'headers' must be an object of strings")
        fault = cls(**options)
        fault.check()
        if not 100 <= fault.status <= 599:
            raise ValueError("'status' must be an HTTP status (100-599)")
        if fault.times < 1 or fault.after < 0 or fault.delay < 0:
            raise ValueError("'times' must be >= 1, 'after' and 'delay' >= 0")
        return fault

    def check(self) -> None:
        """Refuse an unknown action (a spent fault injected again still acts once, as tests that reuse one expect)."""
        if self.action not in FAULT_ACTIONS:
            raise ValueError(f"unknown fault action {self.action!r}; use one of {', '.join(FAULT_ACTIONS)}")


# -- keys ------------------------------------------------------------------------------------------------------
@dataclass
class SimKey:
    """A key the simulated vendor issued. ``extra`` holds what only one vendor has (a project id, say)."""

    key_id: str
    secret: str
    account: str
    scope: str
    alias: str
    created_at: str
    creator: str | None = None
    revoked: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:  # the secret stays out of reprs and assertion messages
        return f"SimKey(key_id={self.key_id!r}, account={self.account!r}, scope={self.scope!r}, revoked={self.revoked})"


class KeyRing:
    """Every key of every account: found by id or by secret, compared in constant time, revoked in place."""

    def __init__(self) -> None:
        self._by_id: dict[str, SimKey] = {}
        self._by_secret: dict[str, SimKey] = {}
        self._lock = threading.Lock()

    def add(self, key: SimKey) -> SimKey:
        """Register an issued key; a key id or secret already used is a ``ValueError``."""
        with self._lock:
            if key.key_id in self._by_id or key.secret in self._by_secret:
                raise ValueError("key id collision; choose another seed")
            self._by_id[key.key_id] = key
            self._by_secret[key.secret] = key
        return key

    def discard(self, key_id: str) -> None:
        """Forget a key entirely (undoing an ``add``); unknown ids are ignored."""
        with self._lock:
            key = self._by_id.pop(key_id, None)
            if key is not None:
                self._by_secret.pop(key.secret, None)

    def get(self, key_id: str) -> SimKey:
        try:
            return self._by_id[key_id]
        except KeyError:
            raise KeyError(f"unknown key {key_id!r}") from None

    def find(self, text: str) -> SimKey | None:
        """The key (revoked or not) whose id or secret is ``text``, for a control plane that takes either."""
        key = self._by_id.get(text)
        if key is not None:
            return key
        key = self._by_secret.get(text)
        return key if key is not None and hmac.compare_digest(key.secret.encode(), text.encode()) else None

    def revoke(self, key_id: str) -> SimKey:
        """Revoke a key by id (``KeyError`` when unknown); it stays listed here, marked ``revoked``."""
        key = self.get(key_id)
        key.revoked = True
        return key

    def verify(self, secret: str, key_id: str | None = None) -> SimKey | None:
        """The live key with this secret (and this id, when the vendor sends one); ``None`` otherwise."""
        key = self._by_secret.get(secret) if key_id is None else self._by_id.get(key_id)
        if key is None or key.revoked or not hmac.compare_digest(key.secret.encode(), secret.encode()):
            return None
        return key

    def of(self, account: str) -> list[SimKey]:
        """An account's keys, revoked ones included, in the order they were issued."""
        return [key for key in self._by_id.values() if key.account == account]


def credentials(authorization: str | None, scheme: str) -> str | None:
    """What follows ``scheme`` (``"Bearer"``, ``"Key"``; any case) in an ``Authorization`` header, else ``None``."""
    given, _, rest = (authorization or "").strip().partition(" ")
    if given.lower() != scheme.lower() or not rest.strip():
        return None
    return rest.strip()


# -- paging ----------------------------------------------------------------------------------------------------
def encode_offset(offset: int, *, prefix: str = "") -> str:
    """An opaque cursor for an item offset: ``prefix`` and the base64 of the number (OpenAI's cursors start
    ``page_``; fal's have no prefix)."""
    return prefix + base64.b64encode(str(offset).encode()).decode()


def decode_offset(cursor: str | None, *, param: str = "cursor", prefix: str = "") -> int:
    """The offset in a cursor from :func:`encode_offset` (0 for ``None``); a 400 names ``param`` otherwise."""
    if cursor is None:
        return 0
    text = ""
    if cursor.startswith(prefix):
        try:
            text = base64.b64decode(cursor[len(prefix) :].encode("ascii"), validate=True).decode("ascii")
        except (ValueError, UnicodeError):
            text = ""
    if not text.isdigit():
        raise ApiError(400, f"Invalid {param} {cursor!r}", details={"param": param})
    return int(text)


@dataclass(frozen=True)
class PageSize:
    """How a ``limit`` parameter is read: ``default`` when absent, silently capped at ``cap``, and refused with a
    400 above ``reject_above`` (``None``: never refused, only capped)."""

    default: int = 100
    cap: int = 1000
    reject_above: int | None = None
    param: str = "limit"

    def __post_init__(self) -> None:
        if self.default < 1 or self.cap < 1 or (self.reject_above is not None and self.reject_above < 1):
            raise ValueError("page sizes must be >= 1")

    def read(self, text: str | None) -> int:
        if text is None:
            return min(self.default, self.cap)
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise ApiError(
                400, f"Parameter {self.param!r} must be an integer >= 1, got {text!r}", details={"param": self.param}
            )
        if self.reject_above is not None and value > self.reject_above:
            raise ApiError(
                400,
                f"Parameter {self.param!r} must be at most {self.reject_above}, got {value}",
                details={"param": self.param},
            )
        return min(value, self.cap)


def offset_page(items: Sequence[T], offset: int, limit: int) -> tuple[Sequence[T], int | None]:
    """Items ``offset .. offset+limit`` and the offset of the next page (``None`` on the last page)."""
    page = items[offset : offset + limit]
    return page, (offset + limit if offset + limit < len(items) else None)


def after_page(
    items: Sequence[T], after: str | None, limit: int, id_of: Callable[[T], str]
) -> tuple[Sequence[T], bool]:
    """The ``limit`` items after the one whose id is ``after`` (from the start for ``None``) and ``has_more``.

    An ``after`` that names no item is a 400, as it is on the vendors that page this way.
    """
    start = 0
    if after is not None:
        ids = [id_of(item) for item in items]
        if after not in ids:
            raise ApiError(400, f"Parameter 'after' names no item: {after!r}", details={"param": "after"})
        start = ids.index(after) + 1
    page = items[start : start + limit]
    return page, start + limit < len(items)


# -- the server ------------------------------------------------------------------------------------------------
class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], sim: Simulator) -> None:
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
    timeout = 60
    # Without TCP_NODELAY every answer after the first on a kept-alive connection waits ~40 ms for a delayed ACK.
    disable_nagle_algorithm = True
    server: _Server

    @property
    def server_version(self) -> str:  # type: ignore[override]
        return f"{self.server.sim.name}/1.0"

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
        self._api_request: Request | None = None  # set once the request is known to be the API's
        split = urlsplit(self.path)
        path = split.path.rstrip("/") or "/"
        query = parse_qs(split.query, keep_blank_values=True)
        control = path == CONTROL_PREFIX or path.startswith(CONTROL_PREFIX + "/")
        entry: dict[str, Any] = {
            "method": method,
            "path": split.path,
            "query": query,
            "has_auth": self.headers.get("Authorization") is not None,
            "status": 0,
        }
        if not control:
            sim.requests.append(entry)
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length > 0 else b""
        except ValueError:
            self.close_connection = True
            self._send(sim._error(ApiError(400, "Bad Content-Length header")), entry)
            return
        prefix = sim.api_prefix
        route = path[len(prefix) :] if prefix and path.startswith(prefix + "/") else path
        request = Request(method, split.path, route, query, self.headers, body)
        if control:
            self._send(sim._control(request, path[len(CONTROL_PREFIX) :] or "/"), entry)
            return
        self._api_request = request
        fault = sim._claim_fault(route)
        if sim.latency > 0:
            sim._stopping.wait(sim.latency)
        if fault is None:
            self._send(sim._answer(request), entry)
            return
        if fault.delay > 0:
            sim._stopping.wait(fault.delay)
        if fault.action == "hang":
            self.close_connection = True
            return
        if fault.action == "respond":
            if fault.body is not None:
                response = Response(fault.status, fault.body, {"Content-Type": JSON})
            elif fault.status >= 400:
                response = sim._error(ApiError(fault.status, f"Simulated fault: HTTP {fault.status}"))
            else:
                real = sim._answer(request)
                response = Response(fault.status, real.body, real.headers)
            self._send(response._replace(headers={**response.headers, **fault.headers}), entry)
            return
        real = sim._answer(request)
        if fault.action == "truncate":
            cut = real._replace(body=real.body[: len(real.body) // 2], headers={**real.headers, **fault.headers})
            self._send(cut, entry)
            return
        entry["status"] = real.status
        self.send_response(real.status)
        for name, value in {**sim.answer_headers(request), **real.headers, **fault.headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(real.body)))
        self.end_headers()
        self.wfile.write(real.body[: len(real.body) // 2])
        self.wfile.flush()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.server.aborted.add(self.connection)
        self.close_connection = True

    def _send(self, response: Response, entry: dict[str, Any]) -> None:
        entry["status"] = response.status
        request, self._api_request = self._api_request, None
        headers = (
            response.headers if request is None else {**self.server.sim.answer_headers(request), **response.headers}
        )
        self.send_response(response.status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)


class Simulator:
    """A vendor's API on loopback; subclass it (see the module's description for what the base provides).

    What a subclass sets or overrides:

    * ``name`` (the ``Server`` header and thread name), ``api_prefix`` (``"/v1"``; ``""`` for none) and
      ``error_kinds`` (status -> the envelope's error type; ``default_error_kind`` for the rest);
    * :meth:`error_body` in the vendor's envelope, :meth:`authenticate` for its auth scheme;
    * ``self.routes.add(...)`` for each operation, in ``__init__`` after ``super().__init__()``;
    * for the control plane: :meth:`issue_key`, :meth:`revoke_key`, :meth:`truth` and :meth:`describe`, and
      its own operations in ``self.control_routes`` (paths after ``/_sim``; see :func:`control_call`).

    ``now`` is the simulated present (aware UTC): pinned at the value given (the wall clock at construction when
    ``None``) until set, or following the wall clock after ``follow_wall_clock()``.
    """

    name = "simulator"
    api_prefix = ""
    error_kinds: Mapping[int, str] = {}
    default_error_kind = "error"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        now: datetime | None = None,
    ) -> None:
        if latency < 0:
            raise ValueError("latency must be >= 0")
        if not 0 <= port <= 65535:
            raise ValueError("port must be between 0 and 65535")
        self.host = host
        self.port = port
        self.latency = latency
        self.routes = Routes()
        self.control_routes = Routes()
        self.keyring = KeyRing()
        self.requests: list[dict[str, Any]] = []
        self._now: datetime | None = utc(now if now is not None else datetime.now(UTC))
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- the clock -------------------------------------------------------------------------------------------
    @property
    def now(self) -> datetime:
        """The simulated present (aware UTC); set it to move time forward or back."""
        return self._now if self._now is not None else datetime.now(UTC)

    @now.setter
    def now(self, value: datetime) -> None:
        self._now = utc(value)

    def follow_wall_clock(self) -> None:
        """Let ``now`` be the wall clock from here on (a served demo), until it is set again."""
        self._now = None

    # -- serving ---------------------------------------------------------------------------------------------
    @property
    def root_url(self) -> str:
        """``http://<host>:<port>`` once started (the control plane is at ``root_url + "/_sim"``)."""
        if self._server is None:
            raise RuntimeError("the simulator is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def base_url(self) -> str:
        """The API's base URL (``root_url`` + ``api_prefix``) once started."""
        return self.root_url + self.api_prefix

    def start(self) -> Self:
        """Bind and serve in a daemon thread; returns ``self``. A busy port raises ``OSError``."""
        if self._server is not None:
            raise RuntimeError("the simulator is already started")
        self._stopping.clear()
        self._server = _Server((self.host, self.port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=self.name, daemon=True
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

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- faults ----------------------------------------------------------------------------------------------
    def inject(self, fault: Fault) -> None:
        """Add a fault; see :class:`Fault` for how requests meet faults."""
        fault.check()
        with self._lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        with self._lock:
            self._faults.clear()

    # -- what a vendor overrides -----------------------------------------------------------------------------
    def error_body(self, status: int, kind: str, message: str, details: Mapping[str, Any]) -> bytes:
        """The vendor's error envelope; the default is ``{"error": {"type": kind, "message": message, **details}}``."""
        return json.dumps({"error": {"type": kind, "message": message, **details}}).encode()

    def authenticate(self, request: Request, requirement: Any) -> Any:
        """Check the request's credentials against the route's ``auth`` requirement and return the principal
        (a :class:`SimKey`, say), or raise :class:`ApiError` (401, 403)."""
        raise NotImplementedError(f"{type(self).__name__} has routes that need auth but no authenticate()")

    def issue_key(self, account: str, **options: Any) -> str:
        """Issue a key for ``account`` and return what a client sends (the control plane's ``POST /_sim/keys``)."""
        raise NotImplementedError(f"{type(self).__name__} does not issue keys")

    def revoke_key(self, key: str) -> None:
        """Revoke a key by id (the control plane's ``DELETE /_sim/keys/{id}``); ``KeyError`` when unknown."""
        self.keyring.revoke(key)

    def truth(self, account: str, start: datetime, end: datetime) -> Any:
        """What the API serves ``account`` for ``start <= t < end``, as JSON-able values (``GET /_sim/truth``)."""
        raise NotImplementedError(f"{type(self).__name__} has no truth accessor")

    def answer_headers(self, request: Request) -> dict[str, str]:
        """Headers every API answer carries, faults' included (a request id, say); the answer's own headers win.
        ``request.principal`` is set when the request got past :meth:`authenticate`."""
        return {}

    def describe(self) -> dict[str, Any]:
        """What ``GET /_sim`` answers; subclasses add their accounts."""
        return {"name": self.name, "base_url": self.base_url, "now": self.now.isoformat()}

    # -- internals -------------------------------------------------------------------------------------------
    def _track(self, connection: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def _claim_fault(self, route: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.path not in ("*", route, self.api_prefix + route):
                    continue
                if fault.after > 0:
                    fault.after -= 1
                    continue
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _error(self, error: ApiError) -> Response:
        fallback = self.default_error_kind if error.status < 500 else "server_error"
        kind = error.kind or self.error_kinds.get(error.status, fallback)
        return Response(
            error.status,
            self.error_body(error.status, kind, error.message, error.details),
            {"Content-Type": JSON, **error.headers},
        )

    def _answer(self, request: Request) -> Response:
        try:
            if self.api_prefix and not request.path.rstrip("/").startswith(self.api_prefix + "/"):
                raise ApiError(404, f"No such path: {request.path}")
            found = self.routes.match(request.route)
            if found is None:
                raise ApiError(404, f"No such path: {request.path}")
            operations, request.params = found
            route = operations.get(request.method)
            if route is None:
                allowed = ", ".join(sorted(operations))
                raise ApiError(
                    405, f"Method {request.method} not allowed on {request.path}", headers={"Allow": allowed}
                )
            if route.auth is not None:
                request.principal = self.authenticate(request, route.auth)
            return _as_response(route.handler(request))
        except ApiError as error:
            return self._error(error)
        except Exception as error:  # the simulator must answer like a server, not drop the connection
            return self._error(ApiError(500, f"Simulator error: {type(error).__name__}: {error}"))

    def _control(self, request: Request, path: str) -> Response:
        try:
            return self._control_answer(request, path)
        except ApiError as error:
            return json_response({"error": error.message}, error.status)
        except Exception as error:
            return json_response({"error": f"{type(error).__name__}: {error}"}, 500)

    def _control_answer(self, request: Request, path: str) -> Response:
        method = request.method
        # A web page the person has open must not drive the simulator: a rebound DNS name fails the Host check,
        # and a cross-site POST cannot send a JSON content type without a CORS preflight this server never grants.
        host = (request.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]").lower()
        if host not in _LOOPBACK_NAMES:
            raise ApiError(403, f"the control plane answers only to loopback names, not {host!r}")
        if method in ("POST", "PUT") and request.body:
            content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if content_type != JSON:
                raise ApiError(415, "send the control plane JSON with Content-Type: application/json")
        if path == "/" and method == "GET":
            return json_response(self.describe())
        if path == "/keys" and method == "POST":
            options = _control_json(request)
            account = options.pop("account", None)
            if not isinstance(account, str):
                raise ApiError(400, 'say which account the key is for: {"account": ...}')
            try:
                key = self.issue_key(account, **options)
            except KeyError as error:
                raise ApiError(404, str(error.args[0] if error.args else error)) from None
            except (TypeError, ValueError) as error:
                raise ApiError(400, str(error)) from None
            key_id = self._key_id_of(key)
            return json_response({"account": account, "key_id": key_id, "key": key}, 201)
        if path.startswith("/keys/") and method == "DELETE":
            key_id = unquote(path[len("/keys/") :])
            try:
                self.revoke_key(key_id)
            except KeyError as error:
                raise ApiError(404, str(error.args[0] if error.args else error)) from None
            return json_response({"key_id": key_id, "revoked": True})
        if path == "/faults" and method == "POST":
            try:
                fault = Fault.from_json(_control_json(request))
                self.inject(fault)
            except (TypeError, ValueError) as error:
                raise ApiError(400, str(error)) from None
            shown = asdict(fault)
            shown["body"] = None if fault.body is None else fault.body.decode("utf-8", "replace")
            return json_response(shown, 201)
        if path == "/faults" and method == "DELETE":
            self.clear_faults()
            return json_response({"faults": 0})
        if path == "/truth" and method == "GET":
            account, start, end = (request.one(name) for name in ("account", "start", "end"))
            if account is None or start is None or end is None:
                raise ApiError(400, "truth needs ?account=&start=&end= (ISO 8601)")
            try:
                window = [utc(datetime.fromisoformat(text.replace(" ", "+"))) for text in (start, end)]
            except ValueError:
                raise ApiError(400, "start and end must be ISO 8601 date-times") from None
            try:
                return json_response(self.truth(account, window[0], window[1]))
            except KeyError as error:
                raise ApiError(404, str(error.args[0] if error.args else error)) from None
        if path == "/now" and method == "PUT":
            value = _control_json(request).get("now")
            if value is None:
                self.follow_wall_clock()
            else:
                try:
                    self.now = datetime.fromisoformat(str(value))
                except ValueError:
                    raise ApiError(400, "'now' must be an ISO 8601 date-time or null") from None
            return json_response({"now": self.now.isoformat(), "follows_wall_clock": self._now is None})
        if path == "/requests" and method == "GET":
            return json_response(list(self.requests))
        found = self.control_routes.match(path)
        if found is not None:
            operations, request.params = found
            route = operations.get(method)
            if route is not None:
                try:
                    return _as_response(route.handler(request))
                except KeyError as error:
                    raise ApiError(404, str(error.args[0] if error.args else error)) from None
                except (TypeError, ValueError) as error:
                    raise ApiError(400, str(error)) from None
        raise ApiError(404, f"no control operation {method} {CONTROL_PREFIX}{path}")

    def _key_id_of(self, key: str) -> str | None:
        for candidate in (key, key.partition(":")[0]):
            with contextlib.suppress(KeyError):
                return self.keyring.get(candidate).key_id
        found = self.keyring.verify(key)
        return None if found is None else found.key_id


def _control_json(request: Request) -> dict[str, Any]:
    if not request.body:
        return {}
    try:
        value = json.loads(request.body)
    except ValueError:
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise ApiError(400, "the body must be a JSON object")
    return value


def control_call(operation: Callable[..., Any], *, status: int = 200) -> Handler:
    """A control-plane handler that calls ``operation`` with the JSON body's fields and the route's path parameters
    as keyword arguments, and answers what it returns as JSON with ``status``: ``control_routes.add("POST",
    "/traffic", control_call(self.add_traffic, status=201))``. A ``KeyError`` it raises answers 404 (an unknown
    account or key), a ``ValueError`` or ``TypeError`` (a wrong or unknown field) 400."""

    def handler(request: Request) -> Response:
        return json_response(operation(**_control_json(request), **request.params), status)

    return handler


def _as_response(value: Response | bytes | dict[str, Any] | list[Any]) -> Response:
    if isinstance(value, Response):
        return value
    if isinstance(value, bytes):
        return Response(200, value, {"Content-Type": JSON})
    return json_response(value)
