"""The distributed runner: Celery workers run each connection's sync, a scheduler process enqueues what is due.

* :func:`enqueue_due` (``connector-host schedule``) finds the connections that are due, exactly as the embedded
  scheduler does (:func:`~connector_sdk.scheduler.is_due`: never one that waits for a new key or is disconnected),
  *claims* each one by moving its ``next_sync_at`` to a claim time, and sends one task carrying that claim.
* The task (:data:`TASK_NAME`, ``connector-host worker``) calls :func:`connector_sdk.sync.run_sync`, the one sync
  code path, if the connection's ``next_sync_at`` still equals the claim. Anything that synced the connection since
  moved ``next_sync_at`` on, so a redelivered or duplicated message finds a stale claim and does nothing: a task is
  safe to deliver any number of times. The store's lease keeps two workers off one connection at any moment.
* A claim whose task never ran (lost with a broker that kept no copy) expires at the claim time; the connection is
  then due again and the scheduler sends a new task, which makes any older message for it stale.

Configuration comes from the environment: ``CONNECTOR_HOST_BROKER`` (``amqp://`` RabbitMQ, recommended, or
``redis://``), ``CONNECTOR_HOST_STORE`` (``postgresql://...``), ``CONNECTOR_HOST_HOME`` (the encryption key's
folder, or ``CONNECTOR_HOST_SECRET_KEY``), and the optional shared request limit of :mod:`connector_sdk.ratelimit`.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from connector_sdk import ratelimit
from connector_sdk.delivery import deliver_backlog
from connector_sdk.environment import number
from connector_sdk.errors import ConfigError, ConnectorHostError, StoreError, SyncInProgress, UnknownConnection
from connector_sdk.host import Host
from connector_sdk.models import RunOutcome
from connector_sdk.scheduler import RUNNABLE
from connector_sdk.sync import LEASE_TTL_SECONDS, run_sync

if TYPE_CHECKING:
    from celery import Celery, Task

log = structlog.get_logger()

BROKER_ENV = "CONNECTOR_HOST_BROKER"
QUEUE_ENV = "CONNECTOR_HOST_QUEUE"
VISIBILITY_ENV = "CONNECTOR_HOST_VISIBILITY_TIMEOUT"
RETRY_BASE_ENV = "CONNECTOR_HOST_TASK_RETRY_BASE"
TASK_NAME = "connector_host.sync"
DEFAULT_QUEUE = "connector-host"
MAX_RETRIES = 5
# A retried task's claim lasts this long past its countdown, so a retry sitting in a busy queue is not overtaken.
RETRY_GRACE_SECONDS = 300.0


def broker_url(environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    url = env.get(BROKER_ENV, "").strip()
    if not url:
        raise ConfigError(
            f"no broker: set {BROKER_ENV} to amqp://user:password@host:5672// (RabbitMQ, recommended) "
            "or redis://host:6379/0"
        )
    if not url.startswith(("amqp://", "amqps://", "pyamqp://", "redis://", "rediss://")):
        raise ConfigError(f"{BROKER_ENV} must be an amqp:// (RabbitMQ) or redis:// URL")
    return url


def queue_name(environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return env.get(QUEUE_ENV, "").strip() or DEFAULT_QUEUE


def make_app(url: str | None = None, *, queue: str | None = None) -> Celery:
    """A Celery app for connector-host: the broker at ``url`` (default ``CONNECTOR_HOST_BROKER``), one queue, and
    the sync task registered, with the settings that make a task survive the death of the worker running it."""
    from celery import Celery

    url = url or broker_url()
    queue = queue or queue_name()
    visibility = int(number(VISIBILITY_ENV))
    transport: dict[str, Any] = (
        {"visibility_timeout": visibility} if url.startswith(("redis", "rediss")) else {"confirm_publish": True}
    )
    app = Celery("connector_host", broker=url, set_as_current=False)
    app.conf.update(
        task_default_queue=queue,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        # Acknowledge after the sync, and give the message back if the worker dies: a killed sync is redone.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        # One message reserved per free slot: a worker that dies holds (and returns) as few as possible.
        worker_prefetch_multiplier=1,
        broker_transport_options=transport,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_heartbeat=30,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    app.task(bind=True, name=TASK_NAME, max_retries=MAX_RETRIES)(_sync_task)
    return app


# -- the worker side ---------------------------------------------------------------------------------------------
_host_lock = threading.Lock()
_host: Host | None = None
_active_lock = threading.Lock()
_active: set[str] = set()
# Connections whose sync ended in a store error: run_sync could not release their lease, so this process does it
# once the store is back (no other process may: the holder, this process, is alive).
_leaked: set[str] = set()
_reaper: threading.Thread | None = None
stopping = threading.Event()
"""Set when the worker shuts down: running syncs stop after their current page and are due again at once."""


def use_host(host: Host | None) -> None:
    """Run this process's tasks on ``host`` (tests, embedding) instead of one opened from the environment."""
    global _host
    with _host_lock:
        _host = host


def worker_host() -> Host:
    """This process's host, opened on first use from ``CONNECTOR_HOST_HOME`` / ``CONNECTOR_HOST_STORE``, with the
    shared request limit installed when ``CONNECTOR_HOST_RATE_LIMIT_REDIS`` is set."""
    global _host
    with _host_lock:
        if _host is None:
            ratelimit.install_from_env()
            _host = Host.open()
            log.info("worker_host_opened", store=_host.store.url)
        return _host


@dataclass(frozen=True)
class TaskResult:
    """What a delivery of the sync task did; ``retry_in`` asks the caller to send it again that much later."""

    status: str
    outcome: RunOutcome | None = None
    retry_in: float | None = None
    claim: str | None = None


def claim_text(moment: datetime) -> str:
    """A claim as the message carries it: the whole-second UTC instant both stores keep."""
    return moment.replace(microsecond=0).isoformat()


def retry_delay(attempt: int) -> float:
    """Exponential backoff with jitter: about base, 2 x base, 4 x base... (base 10 s), at most 10 minutes."""
    base = number(RETRY_BASE_ENV)
    return min(600.0, base * 2**attempt) * random.uniform(0.5, 1.0)


def _reap_leaked_leases(host: Host) -> None:
    """Release, once the store answers again, the leases of syncs that raised a store error (see ``execute``)."""
    while True:
        with _active_lock:
            names = sorted(_leaked)
        if not names:
            return
        for name in names:
            try:
                _release_leftover_lease(host, name)
            except UnknownConnection:
                pass
            except StoreError:
                continue
            with _active_lock:
                _leaked.discard(name)
        time.sleep(1.0)


def _remember_leak(host: Host, name: str) -> None:
    global _reaper
    with _active_lock:
        _leaked.add(name)
        if _reaper is None or not _reaper.is_alive():
            _reaper = threading.Thread(target=_reap_leaked_leases, args=(host,), name="lease-reaper", daemon=True)
            _reaper.start()


def _release_leftover_lease(host: Host, name: str) -> bool:
    """Free a lease this process holds but no thread of it uses: a sync whose store failed before it could
    release its lease. A lease of another live process is left to expire."""
    holder = host.store.lease_holder(name, now=host.now())
    prefix = f"{socket.gethostname()}:{os.getpid()}:"
    with _active_lock:
        if holder is None or not holder.startswith(prefix) or name in _active:
            return False
    host.store.release_lease(name, holder)
    log.warning("leftover_lease_released", connection=name, holder=holder)
    return True


def execute(
    host: Host,
    name: str,
    claim: str | None,
    *,
    interval_seconds: float | None = None,
    jitter: float = 0.1,
    attempt: int = 0,
) -> TaskResult:
    """One delivery of the sync task: sync ``name`` through :func:`run_sync` if ``claim`` is still its claim
    (``None``: sync unconditionally), and say whether to retry. Never raises for an expected condition."""
    try:
        connection = host.store.get_connection(name)
    except UnknownConnection:
        return TaskResult("gone")
    except StoreError:
        return TaskResult("store_unavailable", retry_in=retry_delay(attempt), claim=claim)
    if connection.state not in RUNNABLE:
        return TaskResult("not_runnable")
    if claim is not None and (connection.next_sync_at is None or claim_text(connection.next_sync_at) != claim):
        return TaskResult("stale")
    with _active_lock:
        _active.add(name)
    try:
        run = run_sync(host, name, cancel=stopping, interval_seconds=interval_seconds, jitter=jitter)
    except SyncInProgress:
        with _active_lock:
            _active.discard(name)
        try:
            if _release_leftover_lease(host, name):
                return TaskResult("leftover_lease", retry_in=0.0, claim=claim)
        except StoreError:
            pass
        # The holder finishes and moves the claim on (then the retry is stale), or dies and its lease expires.
        return TaskResult("busy", retry_in=min(LEASE_TTL_SECONDS, retry_delay(attempt) * 4), claim=claim)
    except StoreError:
        _remember_leak(host, name)
        return TaskResult("store_unavailable", retry_in=retry_delay(attempt), claim=claim)
    except ConnectorHostError as error:  # a credential or configuration problem found at start: nothing to retry
        log.info("sync_not_started", connection=name, reason=str(error))
        return TaskResult("not_runnable")
    finally:
        with _active_lock:
            _active.discard(name)
    assert run is not None, "only a due-only sync can be skipped"
    if run.outcome == RunOutcome.GAVE_UP:
        delay = retry_delay(attempt)
        try:
            new_claim = host.now() + timedelta(seconds=delay + RETRY_GRACE_SECONDS)
            host.store.set_next_sync(name, new_claim)
        except StoreError:
            return TaskResult("synced", run.outcome)
        return TaskResult("synced", run.outcome, retry_in=delay, claim=claim_text(new_claim))
    return TaskResult("synced", run.outcome)


def _sync_task(
    task: Task, name: str, claim: str | None = None, interval_seconds: float | None = None, jitter: float = 0.1
) -> str:
    """The Celery task: one sync of connection ``name`` under ``claim``; retried with backoff when transient."""
    result = execute(
        worker_host(), name, claim, interval_seconds=interval_seconds, jitter=jitter, attempt=task.request.retries
    )
    log.info(
        "sync_task_done",
        connection=name,
        status=result.status,
        outcome=result.outcome.value if result.outcome else None,
        retry_in_s=None if result.retry_in is None else round(result.retry_in, 1),
    )
    if result.retry_in is not None and task.request.retries < MAX_RETRIES and not stopping.is_set():
        raise task.retry(
            args=(name, result.claim, interval_seconds, jitter), countdown=result.retry_in, max_retries=MAX_RETRIES
        )
    return result.outcome.value if result.outcome else result.status


def install_worker_signals() -> None:
    """On worker shutdown, ask running syncs to stop after their page (they are due again at once)."""
    from celery.signals import worker_shutting_down

    def _stop(**_: Any) -> None:
        stopping.set()

    worker_shutting_down.connect(_stop, weak=False)


# -- the scheduling side -----------------------------------------------------------------------------------------
def enqueue_due(
    host: Host,
    app: Celery,
    *,
    interval_seconds: float | None = None,
    jitter: float = 0.1,
    claim_seconds: float | None = None,
    spread_seconds: float = 0.0,
) -> list[str]:
    """Send one sync task for each connection due now, claimed for ``claim_seconds`` (default: its interval).

    ``spread_seconds`` delays each task by a random part of it, so a fleet that is due all at once (the first cycle
    after a mass import) reaches the vendor spread out. Raises what the broker raises if it cannot take a task;
    the claim of that connection is undone first, so it stays due.
    """
    now = host.now()
    sent: list[str] = []
    intervals: dict[str, float] = {}
    for connection in host.store.due_connections(now):
        if connection.connector not in intervals:
            intervals[connection.connector] = float(
                host.plugins.connector(connection.connector).manifest().poll_interval_seconds
            )
        horizon = claim_seconds or interval_seconds or intervals[connection.connector]
        claim = (now + timedelta(seconds=horizon)).replace(microsecond=0)
        host.store.set_next_sync(connection.name, claim)
        try:
            app.send_task(
                TASK_NAME,
                args=(connection.name, claim_text(claim), interval_seconds, jitter),
                countdown=random.uniform(0, spread_seconds) if spread_seconds > 0 else None,
                retry=True,
                retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2.0},
            )
        except BaseException:
            host.store.set_next_sync(connection.name, connection.next_sync_at)
            raise
        sent.append(connection.name)
    if sent:
        log.info("syncs_enqueued", count=len(sent))
    return sent


DELIVERY_INTERVAL_SECONDS = 60.0


def run_scheduler(
    host: Host,
    app: Celery,
    stop: threading.Event,
    *,
    tick_seconds: float = 10.0,
    interval_seconds: float | None = None,
    jitter: float = 0.1,
    claim_seconds: float | None = None,
    spread_seconds: float = 0.0,
) -> None:
    """Enqueue due connections every ``tick_seconds`` until ``stop`` is set; outages of the store or the broker
    are logged and the next tick tries again."""
    log.info("distributed_scheduler_started", tick_s=tick_seconds, interval_s=interval_seconds)
    next_delivery = time.monotonic() + DELIVERY_INTERVAL_SECONDS
    while not stop.is_set():
        try:
            if time.monotonic() >= next_delivery:
                # Sink deliveries that failed wait in the outbox; retry them here, not only at each next sync.
                next_delivery = time.monotonic() + DELIVERY_INTERVAL_SECONDS
                deliver_backlog(host)
            enqueue_due(
                host,
                app,
                interval_seconds=interval_seconds,
                jitter=jitter,
                claim_seconds=claim_seconds,
                spread_seconds=spread_seconds,
            )
        except ConnectorHostError as error:
            log.error("enqueue_failed", reason=str(error))
        except Exception as error:  # the broker's errors vary by transport; the scheduler must outlive them all
            log.error("enqueue_failed", reason=f"{type(error).__name__}: {error}")
        stop.wait(tick_seconds)
    log.info("distributed_scheduler_stopped")
