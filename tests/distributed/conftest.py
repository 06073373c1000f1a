"""Fixtures for the distributed runner: real RabbitMQ, Redis and PostgreSQL, and workers in subprocesses.

CI guarantees the three services, so a test fails when one is down; ``CONNECTOR_HOST_SKIP_DISTRIBUTED=1`` skips
instead, on a machine that has none.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

from connector_sdk.host import Host
from connector_sdk.models import floor_hour, utcnow
from connectors.fal.simulator import FalSimulator
from tests.conftest import FAST_RETRIES, fal_plugins
from tests.helpers import stored_rows, truth_rows, window_bounds
from tests.store_fixtures import POSTGRES_ADMIN_URL

SKIP_ENV = "CONNECTOR_HOST_SKIP_DISTRIBUTED"
AMQP_URL = os.environ.get("CONNECTOR_HOST_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
REDIS_URL = os.environ.get("CONNECTOR_HOST_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

# The CLI (its group offers worker and schedule when the workers extra is installed).
LAUNCH = "from connector_sdk.cli import main\nmain()\n"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "distributed: the Celery runner against RabbitMQ, Redis and PostgreSQL")


def unavailable(message: str) -> NoReturn:
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(message)
    pytest.fail(f"{message}; set {SKIP_ENV}=1 to skip the distributed tests", pytrace=False)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def wait_port(port: int, *, up: bool = True, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while port_open(port) != up:
        if time.monotonic() > deadline:
            raise AssertionError(f"port {port} did not go {'up' if up else 'down'} within {timeout} s")
        time.sleep(0.2)


@pytest.fixture(autouse=True)
def _services() -> None:
    try:
        import celery  # noqa: F401
        import redis  # noqa: F401
    except ImportError as error:
        unavailable(f"the workers extra is not installed ({error})")
    for name, port in (("PostgreSQL", 5432), ("RabbitMQ", 5672), ("Redis", 6379)):
        if not port_open(port):
            unavailable(f"{name} is not listening on 127.0.0.1:{port}")


def _admin() -> Any:
    import psycopg

    return psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards (with a new admin connection: a test may restart the server)."""
    database = f"ch_dist_{uuid.uuid4().hex[:12]}"
    with _admin() as admin:
        admin.execute(f"CREATE DATABASE {database}")
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{database}"
    finally:
        wait_port(5432)
        for _ in range(20):
            try:
                with _admin() as admin:
                    admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
                break
            except Exception:  # the server may still be starting after a restart test
                time.sleep(0.5)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def pg_host(home: Path, pg_url: str) -> Iterator[Host]:
    with Host.open(home, store_url=pg_url, plugins=fal_plugins()) as host:
        yield host


@pytest.fixture
def sim() -> Iterator[FalSimulator]:
    with FalSimulator(now=floor_hour(utcnow()), seed=11, page_size=50, max_page_size=50) as simulator:
        yield simulator


@dataclass
class Fleet:
    """Worker and scheduler subprocesses sharing one store, broker queue and rate-limit namespace."""

    home: Path
    store_url: str
    broker_url: str
    queue: str
    logs: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FAL_", "CONNECTOR_HOST_"))}
        env.update(
            {
                "CONNECTOR_HOST_HOME": str(self.home),
                "CONNECTOR_HOST_STORE": self.store_url,
                "CONNECTOR_HOST_BROKER": self.broker_url,
                "CONNECTOR_HOST_QUEUE": self.queue,
                "CONNECTOR_HOST_TASK_RETRY_BASE": "0.5",
                **FAST_RETRIES,
                **self.extra_env,
            }
        )
        return env

    def spawn(self, *args: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{args[0]}-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCH, "--log-format", "json", *args],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def worker(self, concurrency: int = 4) -> subprocess.Popen[bytes]:
        return self.spawn("worker", "--concurrency", str(concurrency), "--loglevel", "warning")

    def schedule_once(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-c", LAUNCH, "schedule", "--once", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def log_text(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in sorted(self.logs.glob("*")))

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture
def fleet(home: Path, pg_url: str, tmp_path: Path, pg_host: Host) -> Iterator[Fleet]:
    """A fleet on its own queue and rate-limit namespace; its processes are stopped and the queue deleted after."""
    logs = tmp_path / "logs"
    logs.mkdir()
    namespace = f"ch-test-{uuid.uuid4().hex[:8]}"
    fleet = Fleet(
        home=home,
        store_url=pg_url,
        broker_url=AMQP_URL,
        queue=f"connector-host-test-{uuid.uuid4().hex[:8]}",
        logs=logs,
        extra_env={"CONNECTOR_HOST_RATE_LIMIT_REDIS": REDIS_URL, "CONNECTOR_HOST_RATE_LIMIT_NAMESPACE": namespace},
    )
    try:
        yield fleet
    finally:
        fleet.stop()
        _delete_queue(fleet.broker_url, fleet.queue)


def _delete_queue(url: str, queue: str) -> None:
    from kombu import Connection

    if url.startswith("redis"):
        return
    try:
        with Connection(url, connect_timeout=5) as connection:
            connection.default_channel.queue_delete(queue)
    except Exception:  # the broker may be down after a failed outage test; the queue is then gone with it anyway
        pass


def run_outcomes(store_url: str) -> dict[str, list[tuple[str, str | None]]]:
    """connection -> [(outcome, message)] of its runs, in the order they started."""
    import psycopg

    with psycopg.connect(store_url, connect_timeout=5) as db:
        rows = db.execute("SELECT connection, outcome, message FROM sync_runs ORDER BY started_at, seq").fetchall()
    out: dict[str, list[tuple[str, str | None]]] = {}
    for name, outcome, message in rows:
        out.setdefault(name, []).append((outcome, message))
    return out


def wait_for(condition: Callable[[], bool], *, timeout: float, fleet: Fleet, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except Exception:  # the store may be restarting; ask again
            pass
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{fleet.log_text()}")


def assert_rows_match_truth(host: Host, sim: FalSimulator, team: str, name: str, days: int) -> int:
    """The connection's rows equal the simulator's truth over every window synced; no natural key twice."""
    start, end = window_bounds(host.now(), days)
    start = min([start, *(run.window_start for run in host.store.list_runs(name, limit=1000))])
    stored = stored_rows(host.store.iter_rows(name))
    assert stored == truth_rows(sim.truth(team, start, end)), f"rows of {name} differ from the simulator's"
    return len(stored)


class InFlightProbe:
    """Samples how many requests the simulator is answering at once (its request log has status 0 until then)."""

    def __init__(self, sim: FalSimulator) -> None:
        self.sim = sim
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> InFlightProbe:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        low = 0
        while not self._stop.is_set():
            requests = self.sim.requests
            high = len(requests)
            while low < high and requests[low]["status"] != 0:
                low += 1
            self.peak = max(self.peak, sum(1 for entry in requests[low:high] if entry["status"] == 0))
            time.sleep(0.002)
