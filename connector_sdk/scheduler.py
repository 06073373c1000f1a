"""The embedded runner: syncs every due connection on its interval, a few at a time, until told to stop."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime

import structlog

from connector_sdk.delivery import deliver_backlog
from connector_sdk.errors import ConnectorHostError, SyncInProgress
from connector_sdk.host import Host
from connector_sdk.models import Connection, ConnectionState, SyncRun
from connector_sdk.sync import run_sync

log = structlog.get_logger()

RUNNABLE = frozenset({ConnectionState.CONNECTED, ConnectionState.ERROR})


def is_due(connection: Connection, now: datetime) -> bool:
    """Due when it can sync (not waiting for a new key, not disconnected) and its next sync time has come: what
    :meth:`Store.due_connections` selects, for one connection."""
    if connection.state not in RUNNABLE:
        return False
    return connection.next_sync_at is None or connection.next_sync_at <= now


class Scheduler:
    """Polls the store for due connections and syncs them on a bounded thread pool.

    A connection is never synced twice at once: in this process the scheduler tracks what is in flight, across
    processes the store's lease does. Connections in ``reconnect_required`` wait for ``reconnect``.
    """

    def __init__(
        self,
        host: Host,
        *,
        interval_seconds: float | None = None,
        concurrency: int = 16,
        jitter: float = 0.1,
        tick_seconds: float = 1.0,
    ) -> None:
        if concurrency < 1:
            raise ConnectorHostError("concurrency must be at least 1")
        self.host = host
        self.interval_seconds = interval_seconds
        self.concurrency = concurrency
        self.jitter = jitter
        self.tick_seconds = tick_seconds
        self.busy_retry_seconds = 30.0
        self.delivery_interval_seconds = 60.0
        self.stop_event = threading.Event()
        self._in_flight: dict[str, Future[SyncRun | None]] = {}
        self._busy_until: dict[str, float] = {}

    def stop(self) -> None:
        """Ask running syncs to stop after their current page and the loop to end."""
        self.stop_event.set()

    def _sync(self, name: str) -> SyncRun | None:
        try:
            return run_sync(
                self.host,
                name,
                cancel=self.stop_event,
                interval_seconds=self.interval_seconds,
                jitter=self.jitter,
                only_if_due=True,
            )
        except SyncInProgress as error:
            # Another process syncs it; ask again later rather than every tick.
            self._busy_until[name] = time.monotonic() + self.busy_retry_seconds
            log.info("sync_skipped", connection=name, reason=str(error))
            return None
        except ConnectorHostError as error:  # skipped: disconnected meanwhile, ...
            log.info("sync_skipped", connection=name, reason=str(error))
            return None
        except Exception:
            log.exception("sync_runner_failed", connection=name)
            return None

    def _submit_due(self, pool: ThreadPoolExecutor) -> None:
        now = self.host.now()
        for name, future in list(self._in_flight.items()):
            if future.done():
                del self._in_flight[name]
        clock = time.monotonic()
        for connection in self.host.store.due_connections(now):
            if self._busy_until.get(connection.name, 0.0) > clock:
                continue
            if connection.name not in self._in_flight:
                self._in_flight[connection.name] = pool.submit(self._sync, connection.name)

    def run_once(self) -> list[SyncRun]:
        """One cycle: sync every connection that is due now, wait for all of them, return their runs."""
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="sync") as pool:
            self._submit_due(pool)
            runs = [future.result() for future in self._in_flight.values()]
        self._in_flight.clear()
        return [run for run in runs if run is not None]

    def run_forever(self) -> None:
        """Run until :meth:`stop`; syncs in progress finish their current page and record where they got to."""
        log.info("scheduler_started", concurrency=self.concurrency, interval_s=self.interval_seconds)
        next_delivery = time.monotonic() + self.delivery_interval_seconds
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="sync") as pool:
            while not self.stop_event.is_set():
                try:
                    self._submit_due(pool)
                    if time.monotonic() >= next_delivery:
                        next_delivery = time.monotonic() + self.delivery_interval_seconds
                        deliver_backlog(self.host, skip=frozenset(self._in_flight))
                except ConnectorHostError as error:
                    log.error("scheduler_cycle_failed", reason=str(error))
                self.stop_event.wait(self.tick_seconds)
            log.info("scheduler_stopping", in_flight=len(self._in_flight))
        log.info("scheduler_stopped")
