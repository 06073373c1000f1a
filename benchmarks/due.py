"""What a scheduler tick costs: finding the due connections among many, by reading them all or through the index.

    .venv/bin/python -m benchmarks.due --connections 10000,100000

Each size gets a new SQLite store (and, with ``--postgres ADMIN_URL``, a new PostgreSQL database on that server,
dropped afterwards) of that many connections,
all scheduled an hour ahead except a few that are due. Timed: ``list_connections()`` filtered by ``is_due`` (what
the scheduler did before schema v5) and ``due_connections(now)`` (what it does now); the median of several calls.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from connector_sdk.scheduler import is_due
from connector_sdk.stores import Store, open_store

NOW = datetime(2026, 1, 5, 12, tzinfo=UTC)
DUE = 3


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    import psycopg

    name = "connector_host_bench_due"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
        try:
            yield admin_url.rsplit("/", 1)[0] + f"/{name}"
        finally:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def fill(store: Store, connections: int) -> None:
    for i in range(connections):
        name = f"c{i:06d}"
        store.add_connection(
            name=name, connector="fal", config={"backfill_days": 1}, credential=b"sealed", account="a", now=NOW
        )
        store.set_next_sync(name, NOW + (timedelta(minutes=-5) if i < DUE else timedelta(hours=1)))


def timed(call: Callable[[], Any], runs: int = 7) -> float:
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def measure(store: Store, connections: int) -> tuple[float, float]:
    fill(store, connections)
    scanned = [c.name for c in store.list_connections() if is_due(c, NOW)]
    indexed = [c.name for c in store.due_connections(NOW)]
    assert sorted(indexed) == scanned and len(indexed) == DUE
    return (
        timed(lambda: [c for c in store.list_connections() if is_due(c, NOW)]),
        timed(lambda: store.due_connections(NOW)),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.due", description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", default="10000", help="comma-separated store sizes [default: 10000]")
    parser.add_argument(
        "--postgres", help="a PostgreSQL server's URL, e.g. postgresql://postgres@127.0.0.1:5432/postgres"
    )
    args = parser.parse_args(argv)
    print("| store | connections | read all, filter (ms) | due_connections (ms) |")
    print("|---|---:|---:|---:|")
    for size in (int(n) for n in args.connections.split(",")):
        with tempfile.TemporaryDirectory() as work:
            stores = [("SQLite", lambda work=work: nullcontext(f"sqlite:///{work}/store.sqlite"))]
            if args.postgres:
                stores.append(("PostgreSQL", lambda: fresh_database(args.postgres)))
            for label, database in stores:
                with database() as url:
                    store = open_store(url, home=Path(work))
                    try:
                        scan, index = measure(store, size)
                    finally:
                        store.close()
                print(f"| {label} | {size:,} | {scan * 1000:.1f} | {index * 1000:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
