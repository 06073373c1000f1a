"""Who may use the portal: signed session cookies, the admin token, CSRF tokens and same-origin checks."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from urllib.parse import urlsplit

from starlette.requests import Request

from connector_sdk.http import is_loopback

SESSION_COOKIE = "connector_host_session"
CSRF_FIELD = "csrf_token"
SESSION_SECONDS = 12 * 3600
MIN_TOKEN_LENGTH = 16
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Session:
    """A browser's session: a random id (the CSRF token is derived from it) and whether it signed in."""

    sid: str
    authenticated: bool
    issued: int


class SessionSigner:
    """Issues and verifies session cookies: ``base64(json).base64(hmac-sha256)``, valid for ``max_age`` seconds.

    The signing key is random per process unless given, so restarting the portal signs everyone out.
    """

    def __init__(self, secret: bytes | None = None, *, max_age: int = SESSION_SECONDS) -> None:
        self._secret = secret or secrets.token_bytes(32)
        self.max_age = max_age

    def _mac(self, purpose: str, data: bytes) -> bytes:
        return hmac.new(self._secret, purpose.encode() + b"\x00" + data, hashlib.sha256).digest()

    def new(self, *, authenticated: bool = False) -> Session:
        return Session(sid=secrets.token_urlsafe(18), authenticated=authenticated, issued=int(time.time()))

    def dumps(self, session: Session) -> str:
        payload = json.dumps({"sid": session.sid, "auth": session.authenticated, "iat": session.issued}).encode()
        return f"{_b64(payload)}.{_b64(self._mac('session', payload))}"

    def loads(self, value: str | None) -> Session | None:
        """The session a cookie holds, or ``None`` if it is missing, forged, malformed or expired."""
        if not value or value.count(".") != 1:
            return None
        body, _, mac = value.partition(".")
        try:
            payload, signature = _unb64(body), _unb64(mac)
        except (ValueError, TypeError):
            return None
        if not hmac.compare_digest(signature, self._mac("session", payload)):
            return None
        try:
            data = json.loads(payload)
            session = Session(sid=str(data["sid"]), authenticated=data["auth"] is True, issued=int(data["iat"]))
        except (ValueError, KeyError, TypeError):
            return None
        if not 0 <= time.time() - session.issued <= self.max_age:
            return None
        return session

    def csrf_token(self, session: Session) -> str:
        return _b64(self._mac("csrf", session.sid.encode()))

    def csrf_ok(self, session: Session | None, token: object) -> bool:
        if session is None or not isinstance(token, str) or not token:
            return False
        return hmac.compare_digest(token.encode(), self.csrf_token(session).encode())


def token_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented admin token with the configured one."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def bearer_token(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def host_name(host_header: str) -> str:
    """``127.0.0.1`` from ``127.0.0.1:8080``, ``::1`` from ``[::1]:8080``."""
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")] if "]" in host_header else host_header
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def loopback_host_header(request: Request) -> bool:
    """Whether the request names this machine; anything else reaching a loopback portal is DNS rebinding."""
    return is_loopback(host_name(request.headers.get("host", "")))


def same_origin(request: Request) -> bool:
    """Whether a state-changing request comes from the portal's own pages (or from a script, which sends no Origin).

    Browsers send ``Origin`` on every cross-site POST and ``Sec-Fetch-Site`` everywhere modern; both are checked
    so a page elsewhere cannot make a signed-in (or loopback) browser act on the portal.
    """
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc.lower() == request.headers.get("host", "").lower()


def safe_next(target: str | None) -> str:
    """A redirect target after sign-in: a path on this site only, never ``//elsewhere`` or a full URL."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    return target


def parse_proxies(entries: Iterable[str]) -> tuple[IPv4Network | IPv6Network, ...]:
    """Trusted proxy addresses or networks (``10.0.0.5``, ``10.0.0.0/8``); blank entries are skipped."""
    networks = []
    for entry in entries:
        if entry.strip():
            try:
                networks.append(ip_network(entry.strip(), strict=False))
            except ValueError:
                example = "e.g. 10.0.0.5 or 10.0.0.0/8"
                raise ValueError(f"{entry.strip()!r} is not an IP address or network ({example})") from None
    return tuple(networks)


def _trusted(address: str, proxies: tuple[IPv4Network | IPv6Network, ...]) -> bool:
    try:
        ip = ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in proxies)


def client_address(request: Request, proxies: tuple[IPv4Network | IPv6Network, ...]) -> str:
    """The address a request comes from. ``X-Forwarded-For`` counts only when the peer is a trusted proxy, and then
    its right-most entry that is not itself a trusted proxy: anything to the left of it the client wrote itself."""
    peer = request.client.host if request.client else "?"
    if not proxies or not _trusted(peer, proxies):
        return peer
    hops = [h.strip() for h in ",".join(request.headers.getlist("x-forwarded-for")).split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, proxies):
            return hop
    return peer


class LoginThrottle:
    """Slows wrong sign-ins down without ever locking the right token out.

    Failures are counted per client address and per attempted token (a hash of it) in ``window`` seconds. Past
    ``limit`` failures, each further wrong attempt from that address (or with that token) waits ``delay`` seconds,
    doubling up to ``max_delay``, one at a time per address: guessing slows to a crawl. The right token is checked
    first and always signs in, so a client that floods the form (or every client behind one proxy) cannot keep an
    admin out.
    """

    def __init__(self, limit: int = 10, window: float = 300.0, delay: float = 1.0, max_delay: float = 30.0) -> None:
        self.limit = limit
        self.window = window
        self.delay = delay
        self.max_delay = max_delay
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._queues: dict[str, asyncio.Lock] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(key, deque())
        while failures and now - failures[0] > self.window:
            failures.popleft()
        return failures

    @staticmethod
    def _keys(client: str, token: str | None) -> tuple[str, str]:
        digest = hashlib.sha256((token or "").encode()).hexdigest()[:16]
        return f"address:{client}", f"token:{digest}"

    def penalty(self, client: str, token: str | None) -> float:
        """Seconds a wrong attempt from ``client`` with ``token`` waits before it is answered (0 under the limit)."""
        now = time.monotonic()
        with self._lock:
            excess = max(len(self._recent(key, now)) for key in self._keys(client, token)) - self.limit
        if excess < 0:
            return 0.0
        return min(self.max_delay, self.delay * 2 ** min(excess, 30))

    def blocked(self, client: str, token: str | None = None) -> bool:
        """Whether wrong attempts from ``client`` (or with ``token``) are being slowed down; they answer 429."""
        now = time.monotonic()
        with self._lock:
            return any(len(self._recent(key, now)) >= self.limit for key in self._keys(client, token))

    def failed(self, client: str, token: str | None = None) -> None:
        now = time.monotonic()
        with self._lock:
            for key in self._keys(client, token):
                self._recent(key, now).append(now)
            # Bounded memory whatever a client sends: forget the oldest keys first.
            while len(self._failures) > 10_000:
                self._failures.pop(next(iter(self._failures)))

    def queue(self, client: str) -> asyncio.Lock:
        """One slowed-down attempt at a time per address, so parallel requests do not multiply the guessing rate."""
        with self._lock:
            if len(self._queues) > 10_000:
                self._queues = {k: v for k, v in self._queues.items() if v.locked()}
            return self._queues.setdefault(client, asyncio.Lock())

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(f"address:{client}", None)
