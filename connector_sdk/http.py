"""A read-only JSON-over-HTTPS client with the retry, timeout and error policy every connector needs."""

from __future__ import annotations

import ipaddress
import json
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import requests
import structlog

from connector_sdk import __version__
from connector_sdk.environment import number
from connector_sdk.errors import ApiError, ConfigError, CredentialError, ResponseError, TransientError, Unreachable

log = structlog.get_logger()

LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}
HOSTNAME = re.compile(r"[A-Za-z0-9.-]+|[0-9A-Fa-f:.]+")


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def validate_base_url(url: str) -> str:
    """Accept ``https://`` URLs, and plain ``http://`` only on loopback (a local simulator or proxy).

    A key sent over plain HTTP to another machine could be read on the way, so that is refused outright.
    """
    # Messages never repeat the URL: a key pasted into the wrong field, or a proxy password, must not be echoed.
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) URL: expected https://host/path")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError("the URL must not carry credentials, a query or a fragment")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the port is not a number from 1 to 65535") from None
    if port == 0 or not HOSTNAME.fullmatch(parts.hostname):
        raise ValueError("the host or port is not valid")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ValueError("plain http:// is only allowed for loopback hosts; use https://")
    return url.rstrip("/")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try before a request counts as failed for this cycle."""

    max_attempts: int = 6
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    retry_after_max: float = 300.0

    @classmethod
    def from_env(cls) -> RetryPolicy:
        """The default policy, tunable by ``CONNECTOR_HOST_MAX_ATTEMPTS`` and ``CONNECTOR_HOST_BACKOFF_BASE``."""
        return cls(
            max_attempts=int(number("CONNECTOR_HOST_MAX_ATTEMPTS")),
            backoff_base=number("CONNECTOR_HOST_BACKOFF_BASE"),
        )

    def backoff(self, attempt: int) -> float:
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        return ceiling * random.uniform(0.5, 1.0)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, in either of its forms (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


# While a new key is checked there is no next sync to retry for a person waiting on the answer: a host that cannot
# be reached is said so at once, after a short connect timeout, instead of after the retry ladder.
CHECK_TIMEOUT = (3.0, 15.0)
_first_contact: ContextVar[bool] = ContextVar("first_contact", default=False)


@contextmanager
def first_contact() -> Iterator[None]:
    """Requests made inside fail fast: a connect timeout of at most 3 s, and a refused or timed-out connection
    raises :class:`Unreachable` at once instead of being retried. Vendor answers (429, 5xx) are still retried."""
    token = _first_contact.set(True)
    try:
        yield
    finally:
        _first_contact.reset(token)


class JsonAnswer(NamedTuple):
    """A decoded answer with the response's headers, for a connector that reads one (an account name, say)."""

    body: Any
    headers: Mapping[str, str]


AuthErrorFactory = Callable[[int, str], CredentialError]
RequestLimiter = Callable[[str], AbstractContextManager[Any]]


def _no_limit(_host: str) -> AbstractContextManager[Any]:
    return nullcontext()


_request_limiter: RequestLimiter = _no_limit


def set_request_limiter(limiter: RequestLimiter | None) -> None:
    """Install a process-wide limit on requests: ``limiter(vendor_host)`` is entered around every request.

    Workers of a fleet share one (e.g. a Redis semaphore) so that many connections never hammer one vendor host at
    once; ``None`` removes it.
    """
    global _request_limiter
    _request_limiter = limiter or _no_limit


def default_auth_error(status: int, message: str) -> CredentialError:
    if status == 403:
        return CredentialError(
            f"the credential lacks a permission this connector needs ({message})",
            kind="insufficient_scope",
            status=status,
        )
    return CredentialError(f"the credential was refused ({message})", kind="invalid", status=status)


class ApiClient:
    """GET (and explicitly allowed read-only POST) requests to one vendor API.

    * Every request has a connect and a read timeout.
    * 429, 5xx, timeouts and dropped connections are retried with exponential backoff and jitter, honouring
      ``Retry-After``; when attempts run out, :class:`TransientError`.
    * 401/403 become the connector's :class:`CredentialError`; other 4xx an :class:`ApiError`.
    * Redirects are not followed, so the ``Authorization`` header never travels to another host.
    * JSON numbers are parsed as ``Decimal``: money never passes through a binary float.
    * The authorization value is only built when a header is, and scrubbed from any text the vendor echoes.
    """

    def __init__(
        self,
        base_url: str,
        *,
        authorization: Callable[[], str],
        vendor: str,
        timeout: tuple[float, float] = (10.0, 60.0),
        retry: RetryPolicy | None = None,
        read_only_posts: frozenset[str] = frozenset(),
        auth_error: AuthErrorFactory = default_auth_error,
        sleep: Callable[[float], Any] = time.sleep,
        auth_header: str = "Authorization",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = validate_base_url(base_url)
        self._host = urlsplit(self.base_url).hostname or ""
        self._netloc = urlsplit(self.base_url).netloc
        self.vendor = vendor
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.read_only_posts = read_only_posts
        self.requests_sent = 0
        self._authorization = authorization
        self._auth_header = auth_header
        self._auth_error = auth_error
        self._sleep = sleep
        self._session = requests.Session()
        # trust_env would let a ~/.netrc entry replace our Authorization header; the CA bundle is still honoured.
        self._session.trust_env = False
        self._session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE") or True
        self._session.headers["User-Agent"] = f"connector-host/{__version__}"
        self._session.headers["Accept"] = "application/json"
        # A vendor's fixed headers (an API version, say); the credential never goes here, only into each request.
        self._session.headers.update(headers or {})

    def __repr__(self) -> str:
        return f"ApiClient(base_url={self.base_url!r}, vendor={self.vendor!r})"

    def close(self) -> None:
        self._session.close()

    def get_json(
        self,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        read: Callable[[bytes], Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """GET ``path`` and decode its JSON body (numbers with a fraction as exact ``Decimal``).

        ``read`` is a faster reader of the body for a connector that knows its shape: what it returns is returned,
        unless it returns ``None``, which leaves the body to the standard JSON decoding (and its error messages).
        ``headers`` are sent with this request only (a vendor's beta flag, say).
        """
        return self._request("GET", path, params=params, read=read, headers=headers).body

    def get_answer(self, path: str, params: Mapping[str, Any] | None = None) -> JsonAnswer:
        """GET ``path`` like :meth:`get_json`, and keep the response's headers beside the body."""
        return self._request("GET", path, params=params)

    def post_json(self, path: str, body: Any) -> Any:
        """POST to an endpoint the connector declared read-only (a price estimate, say); anything else is refused."""
        if path not in self.read_only_posts:
            raise ConfigError(f"refusing to POST to {path}: the connector is read-only and did not allow it")
        return self._request("POST", path, body=body).body

    @staticmethod
    def encode(body: Any) -> bytes:
        """JSON with ``Decimal``s written as exact numbers (the json module would refuse them or round them)."""
        text = json.dumps(body, default=lambda value: f"\x00{value}\x00" if isinstance(value, Decimal) else str(value))
        return re.sub(r'"\\u0000([-0-9.Ee+]+)\\u0000"', r"\1", text).encode()

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        read: Callable[[bytes], Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> JsonAnswer:
        if method not in ("GET", "POST"):
            raise ConfigError(f"refusing to send {method}: the connector is read-only")
        url = f"{self.base_url}/{path.lstrip('/')}"
        last_problem = "no attempt made"
        quick = _first_contact.get()
        timeout = self.timeout
        if quick:
            timeout = (min(timeout[0], CHECK_TIMEOUT[0]), min(timeout[1], CHECK_TIMEOUT[1]))
        for attempt in range(1, self.retry.max_attempts + 1):
            wait: float | None = None
            try:
                with _request_limiter(self._host):
                    response = self._session.request(
                        method,
                        url,
                        params=params,
                        data=None if body is None else self.encode(body),
                        headers={**(headers or {}), self._auth_header: self._authorization()}
                        | ({"Content-Type": "application/json"} if body is not None else {}),
                        timeout=timeout,
                        allow_redirects=False,
                    )
                    self.requests_sent += 1
                    content = response.content
            except requests.Timeout as error:
                waited = timeout[0] if isinstance(error, requests.ConnectTimeout) else timeout[1]
                last_problem = f"no answer within {waited:g} s"
                if quick:
                    raise Unreachable(f"could not reach {self._netloc} ({last_problem})") from None
            except requests.RequestException as error:
                last_problem = f"connection failed ({type(error).__name__})"
                if quick:
                    refused = isinstance(error, requests.ConnectionError) and "refused" in str(error).lower()
                    reason = "connection refused" if refused else last_problem
                    raise Unreachable(f"could not reach {self._netloc} ({reason})") from None
            else:
                status = response.status_code
                if 200 <= status < 300:
                    if read is not None and (fast := read(content)) is not None:
                        return JsonAnswer(fast, response.headers)
                    return JsonAnswer(self._decode(path, response, content), response.headers)
                message = self._error_message(response, content)
                if status == 429 or status >= 500:
                    last_problem = f"HTTP {status}: {message}"
                    wait = parse_retry_after(response.headers.get("Retry-After"))
                    if wait is not None:
                        wait = min(wait, self.retry.retry_after_max)
                elif status in (401, 403):
                    raise self._auth_error(status, message)
                elif 300 <= status < 400:
                    target = urlsplit(response.headers.get("Location", "")).hostname or "another location"
                    raise ApiError(
                        f"{self.vendor} redirected {path} to {target}; redirects are not followed so the key is "
                        "never sent elsewhere. Check the base URL.",
                        status=status,
                    )
                else:
                    raise ApiError(
                        f"{self.vendor} refused {path} with HTTP {status}: {message}", status=status, detail=message
                    )
            if attempt == self.retry.max_attempts:
                break
            delay = wait if wait is not None else self.retry.backoff(attempt)
            log.info("http_retry", path=path, attempt=attempt, problem=last_problem, delay_s=round(delay, 3))
            self._sleep(delay)
        raise TransientError(
            f"{self.vendor} did not answer {path} after {self.retry.max_attempts} attempts "
            f"(last: {last_problem}); the next sync will try again"
        )

    def _decode(self, path: str, response: requests.Response, content: bytes) -> Any:
        try:
            return json.loads(content, parse_float=Decimal)
        except (ValueError, UnicodeDecodeError) as error:
            kind = response.headers.get("Content-Type", "unknown content type").split(";")[0]
            raise ResponseError(
                f"{self.vendor} answered {path} with a body that is not valid JSON ({kind}, {len(content)} bytes: "
                f"{type(error).__name__} {self._scrub(str(error))})"
            ) from None

    def _error_message(self, response: requests.Response, content: bytes) -> str:
        try:
            envelope = json.loads(content)
            error = envelope["error"]
            text = f"{error.get('type', 'error')}: {error.get('message', '')}".strip()
        except (ValueError, KeyError, TypeError, AttributeError):
            text = response.reason or "no error message"
        return self._scrub(text)[:500]

    def _scrub(self, text: str) -> str:
        credential = self._authorization().split(" ", 1)[-1]
        if credential:
            text = text.replace(credential, "[redacted]")
        # A KEY_ID:KEY_SECRET credential: a vendor may echo the secret half alone (a half under 6 chars is left).
        secret = credential.partition(":")[2]
        if len(secret) >= 6:
            text = text.replace(secret, "[redacted]")
        return text
