"""A limit on concurrent requests to one vendor host, shared by every worker of a fleet through Redis.

Installed with :func:`connector_sdk.http.set_request_limiter`, it is entered around every vendor request: a worker
takes one of ``limit`` slots of the vendor host before sending and gives it back after the answer, so ten thousand
connections on any number of workers never have more than ``limit`` requests in flight at one vendor.

A slot is a member of a Redis sorted set scored with its expiry (Redis's own clock, so workers' clocks do not
matter). A worker killed while holding slots loses them after ``slot_seconds``; the limit heals by itself. Taking a
slot is one Lua script, so it is atomic however many workers compete.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import structlog

from connector_sdk.errors import ConfigError, TransientError
from connector_sdk.http import set_request_limiter

log = structlog.get_logger()

REDIS_ENV = "CONNECTOR_HOST_RATE_LIMIT_REDIS"
LIMIT_ENV = "CONNECTOR_HOST_MAX_CONCURRENT_PER_HOST"
NAMESPACE_ENV = "CONNECTOR_HOST_RATE_LIMIT_NAMESPACE"
DEFAULT_LIMIT = 16

# KEYS[1]: the host's slot set. ARGV: limit, token, slot lifetime in ms. Returns 1 when the slot is taken.
_ACQUIRE = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], ms + tonumber(ARGV[3]), ARGV[2])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
  return 1
end
return 0
"""


def parse_limits(text: str) -> tuple[int, dict[str, int]]:
    """``"16"`` or ``"16,api.fal.ai=8"``: the default limit per host, then overrides for named hosts."""
    default, overrides = DEFAULT_LIMIT, {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        host, sep, value = part.rpartition("=")
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"{LIMIT_ENV}: {part!r} is not N or HOST=N") from None
        if number < 1:
            raise ConfigError(f"{LIMIT_ENV}: a limit must be at least 1 (got {part!r})")
        if sep:
            overrides[host.strip().lower()] = number
        else:
            default = number
    return default, overrides


class RedisConcurrencyLimit:
    """At most ``limit`` requests in flight per vendor host, across every process sharing the Redis at ``url``."""

    def __init__(
        self,
        url: str,
        limit: int = DEFAULT_LIMIT,
        *,
        per_host: Mapping[str, int] | None = None,
        namespace: str = "connector-host",
        slot_seconds: float = 120.0,
        max_wait_seconds: float = 300.0,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        import redis

        if limit < 1:
            raise ConfigError("the concurrency limit per vendor host must be at least 1")
        self.limit = limit
        self.per_host = {k.lower(): v for k, v in (per_host or {}).items()}
        self.namespace = namespace
        # Longer than the HTTP client's connect + read timeouts, so a slot outlives any request that still runs.
        self.slot_ms = int(slot_seconds * 1000)
        self.max_wait_seconds = max_wait_seconds
        self._sleep = sleep
        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self.url = url.split("@")[-1]  # never log a password

    def __repr__(self) -> str:
        return f"RedisConcurrencyLimit({self.url!r}, limit={self.limit})"

    def __call__(self, host: str) -> AbstractContextManager[None]:
        return self.slot(host)

    def limit_for(self, host: str) -> int:
        return self.per_host.get(host.lower(), self.limit)

    def key(self, host: str) -> str:
        return f"{self.namespace}:inflight:{host.lower()}"

    @contextmanager
    def slot(self, host: str) -> Iterator[None]:
        """Hold one of the host's slots for the duration of the block (one request)."""
        token = self.acquire(host)
        try:
            yield
        finally:
            self.release(host, token)

    def acquire(self, host: str) -> str:
        """Wait for a free slot and take it; :class:`TransientError` after ``max_wait_seconds`` or without Redis."""
        token = uuid.uuid4().hex
        deadline = time.monotonic() + self.max_wait_seconds
        delay = 0.01
        while True:
            try:
                if self._acquire(keys=[self.key(host)], args=[self.limit_for(host), token, self.slot_ms]) == 1:
                    return token
            except self._errors as error:
                raise TransientError(
                    f"the shared request limit (Redis at {self.url}) is unreachable ({type(error).__name__}); "
                    "the next sync will try again"
                ) from None
            if time.monotonic() >= deadline:
                raise TransientError(
                    f"no free request slot for {host} within {self.max_wait_seconds:g} s "
                    f"(limit {self.limit_for(host)} in flight); the next sync will try again"
                )
            self._sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, 0.25)

    def release(self, host: str, token: str) -> None:
        try:
            self._redis.zrem(self.key(host), token)
        except self._errors as error:  # the slot expires by itself; the request itself went fine
            log.warning("rate_limit_release_failed", host=host, error=type(error).__name__)

    def in_use(self, host: str) -> int:
        """Slots of ``host`` held now (expired ones not counted)."""
        now_ms = int(time.time() * 1000)
        return int(self._redis.zcount(self.key(host), now_ms, "+inf"))

    def close(self) -> None:
        self._redis.close()


def from_env(environ: Mapping[str, str] | None = None) -> RedisConcurrencyLimit | None:
    """The limit ``CONNECTOR_HOST_RATE_LIMIT_REDIS`` and ``CONNECTOR_HOST_MAX_CONCURRENT_PER_HOST`` describe, if any."""
    env = os.environ if environ is None else environ
    url = env.get(REDIS_ENV, "").strip()
    if not url:
        return None
    default, overrides = parse_limits(env.get(LIMIT_ENV, str(DEFAULT_LIMIT)))
    return RedisConcurrencyLimit(
        url, default, per_host=overrides, namespace=env.get(NAMESPACE_ENV, "connector-host") or "connector-host"
    )


def install_from_env(environ: Mapping[str, str] | None = None) -> RedisConcurrencyLimit | None:
    """Install the limit the environment describes as this process's request limiter; ``None`` if none is set."""
    limiter = from_env(environ)
    if limiter is not None:
        set_request_limiter(limiter)
        log.info("rate_limit_installed", redis=limiter.url, limit=limiter.limit, per_host=limiter.per_host)
    return limiter
