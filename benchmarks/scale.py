"""One scheduling cycle of many small fal connections: Celery workers (1, 2, 4 processes) and the embedded runner.

Needs PostgreSQL, RabbitMQ (and Redis with ``--limit``) on loopback, as the distributed tests do. For each runner it
clones one prepared database (``CREATE DATABASE ... TEMPLATE``), so every run starts from the same never-synced
connections, then measures: the cycle time (first enqueue to last finished run), requests per second the simulator
answered, store writes per second (committed transactions and rows inserted/updated/deleted, from
``pg_stat_database``), and the peak number of server connections to the run's database.

    .venv/bin/python -m benchmarks.scale --connections 10000 --workers 1,2,4
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg

import connector_sdk.sinks
import connectors.fal
from connector_sdk.host import Host
from connector_sdk.models import floor_hour, utcnow
from connector_sdk.plugins import get_plugin_manager
from connectors.fal.simulator import FalSimulator

ADMIN_URL = os.environ.get("CONNECTOR_HOST_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_URL = os.environ.get("CONNECTOR_HOST_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
REDIS_URL = os.environ.get("CONNECTOR_HOST_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# The CLI (its group offers worker and schedule when the workers extra is installed).
LAUNCH = "from connector_sdk.cli import main\nmain()\n"


def db_url(name: str) -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def admin(sql: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


def prepare(sim: FalSimulator, home: Path, template: str, n: int) -> None:
    """A database holding ``n`` connected, never-synced connections, one fal account (one key, one model) each."""
    admin(f"CREATE DATABASE {template}")
    keys = [sim.add_account(f"t{i:06d}", n_keys=1, n_models=1, user_traffic=False) for i in range(n)]
    plugins = get_plugin_manager(load_entrypoints=False, plugins=[connectors.fal, connector_sdk.sinks])
    with Host.open(home, store_url=db_url(template), plugins=plugins) as host, ThreadPoolExecutor(16) as pool:
        list(
            pool.map(
                lambda i: host.connect(
                    "fal", f"c{i:06d}", {"api_key": keys[i], "base_url": sim.base_url, "backfill_days": 1}
                ),
                range(n),
            )
        )


class Sampler:
    """Peak server connections to one database, sampled every 0.2 s."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            while not self._stop.is_set():
                row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (self.database,))
                self.peak = max(self.peak, int(row.fetchone()[0]))  # type: ignore[index]
                self._stop.wait(0.2)


def db_stats(database: str) -> tuple[int, int]:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted FROM pg_stat_database WHERE datname = %s",
            (database,),
        ).fetchone()
    return int(row[0]), int(row[1])  # type: ignore[index]


def finished(database: str) -> int:
    with psycopg.connect(db_url(database)) as conn:
        row = conn.execute("SELECT count(*) FROM sync_runs WHERE outcome <> 'running'").fetchone()
    return int(row[0])  # type: ignore[index]


def outcomes(database: str) -> dict[str, int]:
    with psycopg.connect(db_url(database)) as conn:
        return dict(conn.execute("SELECT outcome, count(*) FROM sync_runs GROUP BY outcome").fetchall())


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def environment(home: Path, database: str, queue: str, limit: int | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAL_", "CONNECTOR_HOST_"))}
    env.update(
        {
            "CONNECTOR_HOST_HOME": str(home),
            "CONNECTOR_HOST_STORE": db_url(database),
            "CONNECTOR_HOST_BROKER": AMQP_URL,
            "CONNECTOR_HOST_QUEUE": queue,
        }
    )
    if limit:
        env["CONNECTOR_HOST_RATE_LIMIT_REDIS"] = REDIS_URL
        env["CONNECTOR_HOST_MAX_CONCURRENT_PER_HOST"] = str(limit)
        env["CONNECTOR_HOST_RATE_LIMIT_NAMESPACE"] = f"bench-{queue}"
    return env


def wait_workers(env: dict[str, str], count: int) -> None:
    from celery import Celery

    app = Celery(broker=AMQP_URL, set_as_current=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if len(app.control.ping(timeout=1.0)) >= count:
            return
    raise RuntimeError("workers did not come up")


def one_cycle(
    sim: FalSimulator, home: Path, template: str, n: int, runner: str, workers: int, concurrency: int, limit: int | None
) -> dict[str, Any]:
    database = f"ch_bench_{uuid.uuid4().hex[:10]}"
    admin(f"CREATE DATABASE {database} TEMPLATE {template}")
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    env = environment(home, database, queue, limit)
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryFile() as logs:
        return _measure(sim, database, env, procs, logs, n, runner, workers, concurrency)


def _measure(
    sim: FalSimulator,
    database: str,
    env: dict[str, str],
    procs: list[subprocess.Popen[bytes]],
    logs: Any,
    n: int,
    runner: str,
    workers: int,
    concurrency: int,
) -> dict[str, Any]:
    try:
        if runner == "celery":
            for _ in range(workers):
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-c", LAUNCH, "worker", f"--concurrency={concurrency}", "--loglevel=error"],
                        env={**env, "CONNECTOR_HOST_LOG_LEVEL": "error"},
                        stdout=logs,
                        stderr=logs,
                    )
                )
            wait_workers(env, workers)
        requests_before = len(sim.requests)
        sim_cpu_before = time.process_time()
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        workers_cpu_before = sum(cpu_seconds(p.pid) for p in procs)
        commits_before, tuples_before = db_stats(database)
        with Sampler(database) as sampler:
            started = time.monotonic()
            if runner == "celery":
                subprocess.run(
                    [sys.executable, "-c", LAUNCH, "--log-level", "error", "schedule", "--once"],
                    env=env,
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
                while finished(database) < n:
                    time.sleep(0.5)
            else:
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "connector_sdk",
                        "--log-level",
                        "error",
                        "run",
                        "--once",
                        f"--concurrency={concurrency}",
                    ],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=logs,
                    check=False,
                )
            elapsed = time.monotonic() - started
        sim_cpu = time.process_time() - sim_cpu_before
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        runner_cpu = (
            sum(cpu_seconds(p.pid) for p in procs)
            - workers_cpu_before
            + (children.ru_utime + children.ru_stime - children_before.ru_utime - children_before.ru_stime)
        )
        time.sleep(1.5)  # pg_stat_database is updated when backends report, about once a second
        commits_after, tuples_after = db_stats(database)
        return {
            "runner": runner,
            "workers": workers if runner == "celery" else 1,
            "concurrency": concurrency,
            "connections": n,
            "cycle_s": round(elapsed, 1),
            "requests": len(sim.requests) - requests_before,
            "requests_per_s": round((len(sim.requests) - requests_before) / elapsed, 1),
            "commits_per_s": round((commits_after - commits_before) / elapsed, 1),
            "row_writes_per_s": round((tuples_after - tuples_before) / elapsed, 1),
            "peak_pg_connections": sampler.peak,
            "runner_cpu_s": round(runner_cpu, 1),
            "simulator_cpu_s": round(sim_cpu, 1),
            "outcomes": outcomes(database),
        }
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=60)
        admin(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--workers", default="1,2,4", help="worker process counts to measure, comma-separated")
    parser.add_argument("--concurrency", type=int, default=8, help="threads per worker, and the embedded runner's")
    parser.add_argument("--limit", type=int, help="shared limit on requests in flight to the simulator (Redis)")
    parser.add_argument("--no-embedded", action="store_true", help="skip the embedded runner")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="ch-bench-"))
    template = f"ch_bench_tpl_{uuid.uuid4().hex[:8]}"
    results = []
    with FalSimulator(now=floor_hour(utcnow()), seed=5, page_size=100) as sim:
        try:
            started = time.monotonic()
            prepare(sim, home, template, args.connections)
            print(f"prepared {args.connections} connections in {time.monotonic() - started:.0f} s", flush=True)
            runs = [("celery", int(w)) for w in args.workers.split(",") if w.strip()]
            if not args.no_embedded:
                runs.append(("embedded", 1))
            for runner, workers in runs:
                result = one_cycle(sim, home, template, args.connections, runner, workers, args.concurrency, args.limit)
                print(json.dumps(result), flush=True)
                results.append(result)
        finally:
            admin(f"DROP DATABASE IF EXISTS {template} WITH (FORCE)")
            shutil.rmtree(home, ignore_errors=True)
    header = "| runner | processes x threads | cycle (s) | requests/s | commits/s | row writes/s | peak PG conns |"
    print("\n" + header + "\n|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['runner']} | {r['workers']} x {r['concurrency']} | {r['cycle_s']} | {r['requests_per_s']} | "
            f"{r['commits_per_s']} | {r['row_writes_per_s']} | {r['peak_pg_connections']} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
