"""One sync of one connection: the single code path every runner (CLI, scheduler, workers) calls."""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from connector_sdk import logs
from connector_sdk.budgets import evaluate
from connector_sdk.delivery import deliver_pending
from connector_sdk.errors import (
    ConfigError,
    ConnectorHostError,
    CredentialError,
    StoreError,
    SyncCancelled,
    SyncInProgress,
    TransientError,
)
from connector_sdk.inventory import evaluate_findings, refresh_listing
from connector_sdk.models import (
    STATE_FACTS,
    ConnectionState,
    Page,
    RunOutcome,
    SyncContext,
    SyncRun,
    SyncWindow,
    connector_view,
    floor_hour,
    state_facts,
)
from connector_sdk.sinks import ROWS, rows_payload

if TYPE_CHECKING:
    from connector_sdk.connector import Connector
    from connector_sdk.host import Host

log = structlog.get_logger()

LEASE_TTL_SECONDS = 600.0


def compute_window(watermark: datetime | None, now: datetime, *, backfill_days: int, lookback_hours: int) -> SyncWindow:
    """The hours a sync asks for, up to and including the current (partial) hour.

    The first sync backfills ``backfill_days``. A later one starts at the watermark or ``lookback_hours`` before
    now, whichever is earlier: the trailing hours the vendor may still revise, and any gap since the last sync.
    """
    current = floor_hour(now)
    end = current + timedelta(hours=1)
    if watermark is None:
        start = current - timedelta(days=backfill_days)
    else:
        start = min(floor_hour(watermark), current - timedelta(hours=lookback_hours))
    return SyncWindow(start=start, end=end)


def widened_window(connector: Connector, window: SyncWindow) -> SyncWindow:
    """The window the connector asks to sync instead of ``window`` (:meth:`Connector.sync_window`): a vendor that
    bills by the day or restates recent days reaches further back. It may widen the window, never narrow it."""
    wanted = connector.sync_window(window)
    if wanted.start > window.start or wanted.end < window.end:
        raise ConnectorHostError(
            f"connector {connector.id!r} narrowed its sync window [{window.start.isoformat()}, "
            f"{window.end.isoformat()}) to [{wanted.start.isoformat()}, {wanted.end.isoformat()}); it may only widen it"
        )
    return wanted


def page_watermark(page: Page, now: datetime) -> datetime:
    """How far the connection's usage is complete once ``page`` is committed.

    The page's end, but never past the current hour (its usage is still growing), and never past the start of a
    row whose period is not over by then: a vendor that bills a day as one row has a complete day only once the day
    has ended, so the next sync reaches back to that day's start, whatever its lookback.
    """
    mark = min(page.complete_through, floor_hour(now))
    periods = page.periods()
    while unfinished := [start for start, end in periods if start < mark < end]:
        mark = min(unfinished)
    return mark


@dataclass(frozen=True)
class Progress:
    run: SyncRun
    window: SyncWindow
    covered_through: datetime
    rows: int

    @property
    def fraction(self) -> float:
        done = (self.covered_through - self.window.start) / (self.window.end - self.window.start)
        return max(0.0, min(1.0, done))


ProgressCallback = Callable[[Progress], None]


def next_sync_time(now: datetime, interval_seconds: float, jitter: float) -> datetime:
    """``now + interval``, spread by ±``jitter`` of the interval so connections do not all fire together."""
    spread = interval_seconds * jitter * random.uniform(-1.0, 1.0)
    return now + timedelta(seconds=interval_seconds + spread)


def run_sync(
    host: Host,
    name: str,
    *,
    cancel: threading.Event | None = None,
    progress: ProgressCallback | None = None,
    interval_seconds: float | None = None,
    jitter: float = 0.1,
    only_if_due: bool = False,
) -> SyncRun | None:
    """Sync one connection now and return the finished run.

    With ``only_if_due`` (the scheduler's way) it returns ``None`` without syncing when, once the lease is held,
    the connection turns out not to be due any more: another runner synced it since the caller looked.

    Failures are recorded, not raised: the run's outcome says what happened and the connection's state follows it
    (``reconnect_required`` on a refused credential, ``error`` otherwise). Raises only before a run starts:
    :class:`UnknownConnection`, :class:`SyncInProgress`, :class:`CredentialError` for a connection that already
    waits for a new key, and :class:`ConfigError` for a disconnected one.
    """
    store = host.store
    connection = store.get_connection(name)
    if connection.state == ConnectionState.DISCONNECTED:
        raise ConfigError(f"connection {name!r} is disconnected; `connector-host reconnect {name}` to resume it")
    if connection.state == ConnectionState.RECONNECT_REQUIRED:
        raise CredentialError(
            f"connection {name!r} needs a new key before it can sync: {connection.reason} "
            f"Then run `connector-host reconnect {name}`."
        )
    cls = host.plugins.connector(connection.connector)
    manifest = cls.manifest()
    interval = interval_seconds or manifest.poll_interval_seconds

    run_id = uuid.uuid4().hex[:16]
    owner = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}:{run_id}"
    if not store.acquire_lease(name, owner, now=host.now(), ttl_seconds=LEASE_TTL_SECONDS):
        holder = store.lease_holder(name, now=host.now())
        if holder is None or not holder_is_dead(holder):
            raise SyncInProgress(name, holder)
        log.warning("lease_taken_over", connection=name, dead_holder=holder)
        store.release_lease(name, holder)
        if not store.acquire_lease(name, owner, now=host.now(), ttl_seconds=LEASE_TTL_SECONDS):
            raise SyncInProgress(name, store.lease_holder(name, now=host.now()))
    if only_if_due:
        current = store.get_connection(name)
        due = current.next_sync_at is None or current.next_sync_at <= host.now()
        if not due or current.state not in (ConnectionState.CONNECTED, ConnectionState.ERROR):
            store.release_lease(name, owner)
            return None
    _close_interrupted_runs(host, name)

    outcome, message, rows_total = RunOutcome.FAILED, None, 0
    listed = False
    run: SyncRun | None = None
    connector = None
    with structlog.contextvars.bound_contextvars(connection=name, run_id=run_id, connector=connection.connector):
        try:
            config = host.config_for(name)
            connector = cls(config, cancel=cancel)
            window = widened_window(
                connector,
                compute_window(
                    connection.watermark,
                    host.now(),
                    backfill_days=config.backfill_days,
                    lookback_hours=config.lookback_hours,
                ),
            )
            run = store.start_run(name, run_id, window, now=host.now())
            log.info("sync_started", window_start=window.start.isoformat(), window_end=window.end.isoformat())
            stored = store.connector_state(name)
            context = SyncContext(
                connector=connection.connector,
                connection=name,
                account=connection.account or "",
                synced_at=host.now(),
                state=connector_view(stored),
            )
            facts = StateFacts(cls, context.state, state_facts(stored))
            expected = window.start
            sinks = _row_sinks(host, name)
            for page in connector.sync(window, context):
                _check_page(page, expected, window)
                watermark = page_watermark(page, host.now())
                outbox = [(sink, rows_payload(name, page.rows)) for sink in sinks] if page.row_count else []
                store.commit_page(
                    name,
                    run_id,
                    page,
                    watermark=max(watermark, window.start),
                    outbox=outbox,
                    now=host.now(),
                    state=facts.to_store(context.take_state()),  # what the connector remembered: in this transaction
                )
                if outbox:
                    _deliver(host, name)
                rows_total += page.row_count
                expected = page.complete_through
                if not store.renew_lease(name, owner, now=host.now(), ttl_seconds=LEASE_TTL_SECONDS):
                    raise ConnectorHostError(f"lost the sync lease of {name!r} to another worker; stopped")
                if host.listens("connector_sdk_rows_emitted"):  # the page's row objects, made only for listeners
                    host.fire("connector_sdk_rows_emitted", connection=connection, rows=page.rows)
                if progress is not None:
                    progress(Progress(run=run, window=window, covered_through=expected, rows=rows_total))
                if cancel is not None and cancel.is_set():
                    outcome, message = RunOutcome.CANCELLED, "stopped on request; the next sync resumes from here"
                    break
            else:
                if expected != window.end:
                    raise ConnectorHostError(
                        f"connector {connection.connector!r} ended its sync at {expected.isoformat()}, before the "
                        f"window's end {window.end.isoformat()}"
                    )
                outcome = RunOutcome.SUCCEEDED
                # Asked while the connector is open; a listing that fails is logged and changes nothing.
                listed = refresh_listing(host, name, connector)
        except SyncCancelled as error:
            outcome, message = RunOutcome.CANCELLED, f"{error}; the next sync resumes from here"
        except KeyboardInterrupt:  # Ctrl-C in a process that did not ask for a clean stop: still a stop, not a fault
            outcome, message = RunOutcome.CANCELLED, "interrupted (Ctrl-C); the next sync resumes from here"
            raise
        except CredentialError as error:
            outcome, message = RunOutcome.RECONNECT_REQUIRED, str(error)
        except (TransientError, StoreError) as error:  # a restarting database is as passing as a 503
            outcome, message = RunOutcome.GAVE_UP, str(error)
        except ConnectorHostError as error:
            outcome, message = RunOutcome.FAILED, str(error)
        except Exception as error:
            outcome = RunOutcome.FAILED
            message = logs.secrets.scrub(f"internal error ({type(error).__name__}: {error}); please report it")
            log.exception("sync_crashed")
        finally:
            if connector is not None:
                connector.close()
            try:
                finished = _finish(host, name, run, outcome, message, rows_total, interval, jitter, listed=listed)
            finally:  # a store that fails here (a restarting database) must not keep the lease until it expires
                store.release_lease(name, owner)
    return finished


#: The most the facts of one connection may weigh, as JSON text: a few lines for ``status``, never data.
MAX_STATE_FACTS = 4096


class StateFacts:
    """What a sync stores of its connector state, page by page: the state the connector remembered, with what
    :meth:`Connector.describe_state` makes of it kept beside it (:data:`~connector_sdk.models.STATE_FACTS`), so
    that ``status`` and the portal show it without loading the connector's plugin."""

    def __init__(self, cls: type[Connector], state: dict[str, Any], shown: dict[str, str]) -> None:
        self.cls = cls
        self.state = state
        self.shown = shown
        self.described = False

    def to_store(self, remembered: dict[str, Any] | None) -> dict[str, Any] | None:
        """The whole state to store with the page being committed, or ``None`` to leave it as it is: stored when the
        connector remembered something, or when the facts read differently from those stored (the first page of a
        sync finds out: a new connector version may describe an unchanged state differently)."""
        if remembered is None and self.described:
            return None
        self.state = self.state if remembered is None else remembered
        facts, self.described = self.describe(), True
        if remembered is None and facts == self.shown:
            return None
        self.shown = facts
        return {**self.state, STATE_FACTS: facts} if facts else dict(self.state)

    def describe(self) -> dict[str, str]:
        """The connector's facts; a description that fails or is not label → text shows nothing, and the sync goes
        on: what ``status`` shows must never cost a sync."""
        try:
            facts = self.cls.describe_state(dict(self.state))
            texts = isinstance(facts, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in facts.items())
            if not texts:
                problem = f"describe_state returned {type(facts).__name__}, not a dict of label: text"
            elif len(json.dumps(facts)) > MAX_STATE_FACTS:
                problem = f"describe_state returned more than {MAX_STATE_FACTS} bytes of facts"
            else:
                return dict(facts)
        except Exception as error:
            problem = f"describe_state failed ({type(error).__name__}: {error})"
        log.warning("connector_state_undescribed", problem=logs.secrets.scrub(problem))
        return {}


def holder_is_dead(holder: str) -> bool:
    """A lease held by a process of this machine that no longer exists (killed, crashed) can be taken over
    at once; a holder elsewhere is only presumed dead when its lease expires."""
    hostname, _, rest = holder.partition(":")
    pid_text = rest.split(":", 1)[0]
    if hostname != socket.gethostname() or not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _close_interrupted_runs(host: Host, name: str) -> None:
    """Runs still marked running while we hold the lease died with their process; say so in their record."""
    for run in host.store.list_runs(name, limit=10):
        if run.outcome == RunOutcome.RUNNING:
            host.store.finish_run(
                run.run_id,
                RunOutcome.FAILED,
                "interrupted: the process running this sync stopped without finishing; the next sync resumed",
                now=host.now(),
            )


def _row_sinks(host: Host, name: str) -> list[str]:
    """The connection's sinks that take rows; one whose plugin is missing is skipped with a warning."""
    names = []
    for record in host.store.list_sinks(name):
        kind = host.plugins.sinks.get(record.kind)
        if kind is None:
            log.warning("sink_kind_not_loaded", sink=record.name, kind=record.kind)
        elif ROWS in kind.accepts:
            names.append(record.name)
    return names


def _evaluate_budgets(host: Host, name: str) -> None:
    try:
        if evaluate(host, name):
            _deliver(host, name)
    except Exception:  # an alert that could not be evaluated is retried after the next sync; never fail this one
        log.exception("budget_evaluation_failed")


def _evaluate_findings(host: Host, name: str, *, listed: bool) -> None:
    try:
        changes = evaluate_findings(host, name, listed=listed)
        # A finding the judge took over and found cleared is queued for the sinks of the connection it was on.
        for connection in sorted({finding.connection for finding, _change in changes}):
            _deliver(host, connection)
    except Exception:  # judged again after the next sync; a finding never fails this one
        log.exception("finding_evaluation_failed")


def _deliver(host: Host, name: str) -> None:
    try:
        deliver_pending(host, name)
    except Exception:  # delivery is retried from the outbox; it never fails the sync
        log.exception("sink_delivery_pass_failed")


def _check_page(page: Page, expected: datetime, window: SyncWindow) -> None:
    if page.covers_from != expected or not (expected <= page.complete_through <= window.end):
        raise ConnectorHostError(
            f"connector produced a page for [{page.covers_from.isoformat()}, {page.complete_through.isoformat()}) "
            f"where [{expected.isoformat()}, ...) was due"
        )
    for start, _end in sorted(page.periods()):
        if not (page.covers_from <= start < page.complete_through):
            raise ConnectorHostError(f"connector produced a row for {start.isoformat()} outside its page")


def _finish(
    host: Host,
    name: str,
    run: SyncRun | None,
    outcome: RunOutcome,
    message: str | None,
    rows: int,
    interval: float,
    jitter: float,
    *,
    listed: bool = False,
) -> SyncRun:
    store = host.store
    now = host.now()
    if outcome == RunOutcome.SUCCEEDED:
        host.change_state(name, ConnectionState.CONNECTED, None)
    elif outcome == RunOutcome.RECONNECT_REQUIRED:
        host.change_state(name, ConnectionState.RECONNECT_REQUIRED, message)
    elif outcome in (RunOutcome.GAVE_UP, RunOutcome.FAILED):
        host.change_state(name, ConnectionState.ERROR, message)
    # A stopped sync is due again at once, so the next start resumes it instead of waiting an interval.
    resume = outcome == RunOutcome.CANCELLED
    store.set_next_sync(name, now if resume else next_sync_time(now, interval, jitter))
    if run is None:  # failed before the run could be recorded (the credential could not be decrypted, say)
        log.error("sync_not_started", outcome=outcome.value, reason=message)
        return SyncRun(
            run_id="-",
            connection=name,
            started_at=now,
            finished_at=now,
            outcome=outcome,
            window_start=floor_hour(now),
            window_end=floor_hour(now),
            message=message,
        )
    finished = store.finish_run(run.run_id, outcome, message, now=now)
    if finished.rows_written:
        _evaluate_budgets(host, name)
    if outcome == RunOutcome.SUCCEEDED:
        _evaluate_findings(host, name, listed=listed)
    log.info("sync_finished", outcome=outcome.value, rows=rows, pages=finished.pages, reason=message)
    host.fire("connector_sdk_sync_finished", connection=store.get_connection(name), run=finished)
    return finished


def sync_now(host: Host, name: str, **options: Any) -> SyncRun:
    """Sync one connection now and return the finished run (:func:`run_sync` without ``only_if_due``)."""
    run = run_sync(host, name, **options)
    assert run is not None, "only a due-only sync can be skipped"
    return run
