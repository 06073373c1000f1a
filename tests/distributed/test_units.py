"""The pieces of the distributed runner on their own: the Redis request limit, the enqueue claim, the task."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from connector_sdk import workers
from connector_sdk.errors import ConfigError, TransientError
from connector_sdk.host import Host
from connector_sdk.models import ConnectionState, RunOutcome
from connector_sdk.ratelimit import RedisConcurrencyLimit, from_env, parse_limits
from connectors.fal.simulator import FalSimulator
from tests.conftest import fal_plugins
from tests.distributed.conftest import REDIS_URL

pytestmark = pytest.mark.distributed


@pytest.fixture
def limit() -> Iterator[RedisConcurrencyLimit]:
    limiter = RedisConcurrencyLimit(REDIS_URL, 3, namespace=f"ch-test-{uuid.uuid4().hex[:8]}", slot_seconds=2)
    yield limiter
    limiter.close()


def test_the_redis_limit_never_lets_more_than_the_limit_in_flight(limit: RedisConcurrencyLimit) -> None:
    in_flight, peak, lock = 0, 0, threading.Lock()

    def request() -> None:
        nonlocal in_flight, peak
        with limit("api.fal.ai"):
            with lock:
                in_flight += 1
                peak = max(peak, in_flight)
            time.sleep(0.02)
            with lock:
                in_flight -= 1

    threads = [threading.Thread(target=lambda: [request() for _ in range(5)]) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak == 3
    assert limit.in_use("api.fal.ai") == 0


def test_slots_of_a_dead_holder_expire_and_other_hosts_are_not_limited(limit: RedisConcurrencyLimit) -> None:
    for _ in range(3):
        limit.acquire("api.fal.ai")  # never released, as by a worker killed mid-request
    with limit("other.example"):
        pass
    limit.max_wait_seconds = 0.2
    with pytest.raises(TransientError, match="no free request slot"):
        limit.acquire("api.fal.ai")
    limit.max_wait_seconds = 10
    started = time.monotonic()
    limit.release("api.fal.ai", limit.acquire("api.fal.ai"))
    assert 0.5 < time.monotonic() - started < 5


def test_an_unreachable_redis_is_a_transient_error_and_limits_are_parsed() -> None:
    dead = RedisConcurrencyLimit("redis://127.0.0.1:1/0", 2)
    with pytest.raises(TransientError, match="unreachable"):
        dead.acquire("api.fal.ai")
    assert parse_limits("8, api.fal.ai=2") == (8, {"api.fal.ai": 2})
    with pytest.raises(ConfigError):
        parse_limits("0")
    assert from_env({}) is None
    configured = from_env({"CONNECTOR_HOST_RATE_LIMIT_REDIS": REDIS_URL, "CONNECTOR_HOST_MAX_CONCURRENT_PER_HOST": "5"})
    assert configured is not None and configured.limit_for("API.FAL.AI") == 5


class RecordingApp:
    """Stands in for the Celery app: records what would be sent, or fails like a broker that is down."""

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[Any, ...]] = []
        self.fail = fail

    def send_task(self, name: str, *, args: tuple[Any, ...], **_: Any) -> None:
        if self.fail:
            raise ConnectionRefusedError("broker down")
        self.sent.append(args)


@pytest.fixture
def sqlite_host(tmp_path: Path) -> Iterator[Host]:
    with Host.open(tmp_path / "home", store_url=f"sqlite:///{tmp_path / 'store.db'}", plugins=fal_plugins()) as host:
        yield host


def test_enqueue_claims_each_due_connection_once_and_never_one_waiting_for_a_key(
    sqlite_host: Host, sim: FalSimulator
) -> None:
    for name in ("a", "b", "revoked"):
        key = sim.add_account(name, n_keys=1, n_models=1)
        sqlite_host.connect("fal", name, {"api_key": key, "base_url": sim.base_url, "backfill_days": 1})
    sqlite_host.change_state("revoked", ConnectionState.RECONNECT_REQUIRED, "key revoked")

    down = RecordingApp(fail=True)
    with pytest.raises(ConnectionRefusedError):
        workers.enqueue_due(sqlite_host, down)  # type: ignore[arg-type]
    assert sqlite_host.store.get_connection("a").next_sync_at <= sqlite_host.now(), "a failed send keeps it due"

    app = RecordingApp()
    assert workers.enqueue_due(sqlite_host, app, claim_seconds=600) == ["a", "b"]  # type: ignore[arg-type]
    assert workers.enqueue_due(sqlite_host, app) == []  # type: ignore[arg-type]
    claim = sqlite_host.store.get_connection("a").next_sync_at
    assert claim is not None and timedelta(seconds=590) < claim - sqlite_host.now() <= timedelta(seconds=600)
    assert app.sent[0] == ("a", workers.claim_text(claim), None, 0.1)


def test_a_task_syncs_under_its_claim_once_and_a_redelivered_copy_does_nothing(
    sqlite_host: Host, sim: FalSimulator
) -> None:
    key = sim.add_account("team", n_keys=1, n_models=2)
    sqlite_host.connect("fal", "team", {"api_key": key, "base_url": sim.base_url, "backfill_days": 1})
    app = RecordingApp()
    workers.enqueue_due(sqlite_host, app)  # type: ignore[arg-type]
    name, claim, interval, jitter = app.sent[0]

    first = workers.execute(sqlite_host, name, claim, interval_seconds=interval, jitter=jitter)
    assert first.status == "synced" and first.outcome == RunOutcome.SUCCEEDED and first.retry_in is None
    again = workers.execute(sqlite_host, name, claim)
    assert again.status == "stale"
    assert len(sqlite_host.store.list_runs("team")) == 1
    assert workers.execute(sqlite_host, "nobody", None).status == "gone"

    sim.revoke_key(key)
    assert workers.execute(sqlite_host, name, None).outcome == RunOutcome.RECONNECT_REQUIRED
    assert workers.execute(sqlite_host, name, None).status == "not_runnable"


def test_a_transient_failure_is_retried_under_a_new_claim(
    sqlite_host: Host, sim: FalSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from connectors.fal.simulator import Fault

    monkeypatch.setenv(workers.RETRY_BASE_ENV, "1")
    key = sim.add_account("team", n_keys=1, n_models=2)
    sqlite_host.connect("fal", "team", {"api_key": key, "base_url": sim.base_url, "backfill_days": 1})
    sim.inject(Fault(path="/models/usage", status=503, times=100))
    result = workers.execute(sqlite_host, "team", None)
    assert result.outcome == RunOutcome.GAVE_UP and result.retry_in is not None and result.retry_in <= 1
    stored = sqlite_host.store.get_connection("team").next_sync_at
    assert stored is not None and result.claim == workers.claim_text(stored)
    sim.clear_faults()
    assert workers.execute(sqlite_host, "team", result.claim).outcome == RunOutcome.SUCCEEDED


def test_the_broker_must_be_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(workers.BROKER_ENV, raising=False)
    with pytest.raises(ConfigError, match="CONNECTOR_HOST_BROKER"):
        workers.make_app()
    with pytest.raises(ConfigError, match="amqp"):
        workers.broker_url({workers.BROKER_ENV: "kafka://x"})
    app = workers.make_app("redis://127.0.0.1:6379/0")
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost
    assert app.conf.broker_transport_options["visibility_timeout"] > 600
    assert workers.TASK_NAME in app.tasks
