"""Syncs started from the portal: each runs in a background thread, so no request waits for a backfill."""

from __future__ import annotations

import threading
import traceback
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import structlog

from connector_sdk.errors import ConnectorHostError, SyncInProgress
from connector_sdk.host import Host
from connector_sdk.models import SyncRun
from connector_sdk.sync import Progress, sync_now

log = structlog.get_logger()


def where(error: BaseException) -> dict[str, str]:
    """An unexpected error's type and stack for the log, without its message or local variables: either could hold
    a key that was never registered with the log redactor."""
    return {"error_type": type(error).__name__, "stack": "".join(traceback.format_tb(error.__traceback__))}


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    SKIPPED = "skipped"


@dataclass
class SyncJob:
    """One sync the portal started, as the API reports it; ``run`` is the store's record once it has one."""

    id: str
    connection: str
    created_at: datetime
    state: JobState = JobState.QUEUED
    run: SyncRun | None = None
    fraction: float = 0.0
    rows: int = 0
    message: str | None = None
    finished_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.state in (JobState.QUEUED, JobState.RUNNING)


class SyncJobs:
    """Starts syncs in daemon threads, one per connection at a time, and remembers the last ``keep`` of them."""

    def __init__(self, host: Host, *, keep: int = 200) -> None:
        self.host = host
        self.keep = keep
        self.cancel = threading.Event()
        self._jobs: OrderedDict[str, SyncJob] = OrderedDict()
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def start(self, name: str) -> SyncJob:
        """Start a sync of ``name`` now, or return the one of it already running in this portal.

        Raises :class:`SyncInProgress` when another worker (the scheduler, another process) holds its lease.
        """
        with self._lock:
            for job in reversed(self._jobs.values()):
                if job.connection == name and job.active:
                    return job
            if self.host.store.lease_holder(name, now=self.host.now()) is not None:
                raise SyncInProgress(name, None)
            job = SyncJob(id=uuid.uuid4().hex[:16], connection=name, created_at=self.host.now())
            self._jobs[job.id] = job
            while len(self._jobs) > self.keep:
                oldest = next(iter(self._jobs))
                if self._jobs[oldest].active:
                    break
                del self._jobs[oldest]
            thread = threading.Thread(target=self._run, args=(job,), name=f"portal-sync-{name}", daemon=True)
            self._threads[job.id] = thread
        thread.start()
        return job

    def _run(self, job: SyncJob) -> None:
        job.state = JobState.RUNNING

        def progress(p: Progress) -> None:
            job.run, job.fraction, job.rows = p.run, p.fraction, p.rows

        try:
            run = sync_now(self.host, job.connection, cancel=self.cancel, progress=progress)
            job.run, job.rows, job.message = run, run.rows_written, run.message
            job.fraction = 1.0
            job.state = JobState.FINISHED
        except ConnectorHostError as error:  # another worker got there first, or it was disconnected meanwhile
            job.state, job.message = JobState.SKIPPED, str(error)
        except Exception as error:
            log.error("portal_sync_crashed", connection=job.connection, **where(error))
            job.state, job.message = JobState.FINISHED, "the sync stopped on an internal error; see the server log"
        finally:
            job.finished_at = self.host.now()
            with self._lock:
                self._threads.pop(job.id, None)

    def get(self, job_id: str) -> SyncJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def active(self, name: str) -> SyncJob | None:
        """The sync of ``name`` this portal is running, if any."""
        with self._lock:
            return next((j for j in reversed(self._jobs.values()) if j.connection == name and j.active), None)

    def wait(self, timeout: float | None = None) -> None:
        """Wait for every running sync (tests; shutdown)."""
        with self._lock:
            threads = list(self._threads.values())
        for thread in threads:
            thread.join(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Ask running syncs to stop after their current page, and wait for them."""
        self.cancel.set()
        self.wait(timeout)
