"""Backfill, incremental sync, report and many connections: connector-host against the floor and against dlt.

One command measures everything side by side, so the ratios hold on a noisy machine:

    .venv/bin/python -m benchmarks.performance --write

The fal simulator runs in a process of its own with every ``/models/usage`` page cached after its first rendering
(a warm-up pass renders them), so what is timed is the client. Every contender runs in a fresh process of its own:
its wall time is measured inside it, around the work alone (imports and set-up excluded), and its peak RSS is the
process's ``ru_maxrss``. ``--write`` puts the table into ``benchmarks/RESULTS.md`` between its markers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
START_MARK = "<!-- performance:start -->"
END_MARK = "<!-- performance:end -->"
TEAM = "bench-team"
KEY_ENV = "BENCH_FAL_KEY"
# Real fal at its least generous: 50 usage items a page unless a ``limit`` asks for more, at most 200, and a 400 about
# ``limit`` above that (the simulator's stand-in mode). The floors and dlt are told the cap and ask for exactly that;
# connector-host is told nothing and finds it (it asks for 1,000, is refused, and asks for the maximum fal names).
PAGE_SIZE = 200
USAGE_PARAMS: dict[str, Any] = {
    "timezone": "UTC",
    "timeframe": "hour",
    "bound_to_timeframe": "true",
    "expand": ["time_series", "auth_method", "auth_method_structured"],
    "limit": PAGE_SIZE,
}


@dataclass(frozen=True)
class Scale:
    """The shape of the benchmark's data: the big account and the many small connections."""

    days: int = 90
    small_days: int = 10
    keys: int = 24
    models: int = 40
    activity: float = 3.0
    connections: int = 1000
    latency: float = 0.1
    concurrency: int = 16  # the default of `run --concurrency`
    runs: int = 3
    dlt_runs: int = 3
    startup_runs: int = 10
    dlt_shape: str = "flat"  # the faster of dlt's two shapes here (see RESULTS.md); `--dlt-shape nested` for the other


QUICK = Scale(
    days=2,
    small_days=1,
    keys=3,
    models=5,
    activity=1.0,
    connections=8,
    latency=0.01,
    concurrency=4,
    runs=1,
    dlt_runs=1,
    startup_runs=1,
)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def usage_params(days: int, now: datetime) -> dict[str, Any]:
    """The query every contender sends for a backfill of ``days``: the window the host computes for it."""
    current = now.replace(minute=0, second=0, microsecond=0)
    return {"start": iso(current - timedelta(days=days)), "end": iso(current + timedelta(hours=1)), **USAGE_PARAMS}


# -- the simulator, in a process of its own ----------------------------------------------------------------------
def serve(spec: dict[str, Any]) -> None:
    """Serve the simulator; print its base URL and keys as one JSON line; obey ``now <iso>`` lines on stdin."""
    from connectors.fal.simulator import FalSimulator

    now = datetime.fromisoformat(spec["now"])
    sim = FalSimulator(
        now=now,
        history_days=spec["history_days"],
        stand_in=True,
        latency=spec["latency"],
        cache_responses=spec["cache"],
    )
    keys: dict[str, str] = {}
    if spec.get("big"):
        big = spec["big"]
        keys[TEAM] = sim.add_account(
            TEAM,
            n_keys=big["keys"],
            n_models=big["models"],
            models_per_source=big["models"],
            activity=big["activity"],
        )
    for i in range(spec.get("small", 0)):
        keys[f"t{i:05d}"] = sim.add_account(f"t{i:05d}", n_keys=1, n_models=1, user_traffic=False)
    sim.start()
    print(json.dumps({"base_url": sim.base_url, "keys": keys}), flush=True)
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command == "now":
            sim.now = datetime.fromisoformat(argument)
        elif command == "requests":
            argument = str(len(sim.requests))
        print(f"ok {argument}", flush=True)
    sim.stop()


class Simulator:
    """The simulator's process, driven over its stdin."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.performance", "serve", json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert self.process.stdout is not None and self.process.stdin is not None
        hello = json.loads(self.process.stdout.readline())
        self.base_url: str = hello["base_url"]
        self.keys: dict[str, str] = hello["keys"]

    def command(self, line: str) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def set_now(self, now: datetime) -> None:
        self.command(f"now {now.isoformat()}")

    def requests(self) -> int:
        """How many requests the simulator has received so far."""
        return int(self.command("requests").split()[1])

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


# -- contenders: each runs in a fresh process and prints one JSON line --------------------------------------------
class Clock:
    """Wall time and CPU time (this process and the children it waited for) from its creation to ``figures()``."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = self._cpu()

    @staticmethod
    def _cpu() -> float:
        import resource

        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    def figures(self) -> dict[str, float]:
        return {"seconds": time.perf_counter() - self.wall, "cpu": self._cpu() - self.cpu}


def contender_raw(args: dict[str, Any]) -> dict[str, Any]:
    """The simulator alone: every page fetched and read as bytes, nothing parsed but the cursor."""
    import re

    import requests

    cursor_re = re.compile(rb'"next_cursor":(null|"([^"]*)")')
    session = requests.Session()
    session.headers["Authorization"] = f"Key {os.environ[KEY_ENV]}"
    params, pages, size = dict(args["params"]), 0, 0
    clock = Clock()
    while True:
        response = session.get(f"{args['base_url']}/models/usage", params=params)
        response.raise_for_status()
        pages, size = pages + 1, size + len(response.content)
        found = cursor_re.search(response.content, max(0, len(response.content) - 200))
        if found is None or found.group(2) is None:
            break
        params["cursor"] = found.group(2).decode()
    return {**clock.figures(), "pages": pages, "bytes": size}


def contender_floor(args: dict[str, Any]) -> dict[str, Any]:
    """The floor: every page fetched with ``requests`` and parsed with ``json``, doing nothing else."""
    import requests

    session = requests.Session()
    session.headers["Authorization"] = f"Key {os.environ[KEY_ENV]}"
    params, pages, items = dict(args["params"]), 0, 0
    clock = Clock()
    while True:
        response = session.get(f"{args['base_url']}/models/usage", params=params)
        response.raise_for_status()
        body = response.json()
        pages += 1
        items += sum(len(bucket["results"]) for bucket in body["time_series"])
        if not body["next_cursor"]:
            break
        params["cursor"] = body["next_cursor"]
    return {**clock.figures(), "pages": pages, "items": items}


LOADER_FIELDS = (
    "endpoint_id", "unit", "quantity", "unit_price", "percent_discount", "cost_subtotal", "cost_discount",
    "cost_total", "cost", "currency", "auth_method",
)  # fmt: skip


def contender_loader(args: dict[str, Any]) -> dict[str, Any]:
    """The floor, and every item written as one row into SQLite: what any Python loader into SQLite pays.

    Each item's fields as ``json`` decoded them (binary floats), flattened into one table with no key, one
    ``executemany`` and one commit a page. No validation, no mapping, no idempotence: less than any real loader does.
    """
    import sqlite3

    import requests

    db = sqlite3.connect(Path(args["home"]) / "loader.sqlite")
    # The journal connector-host's store uses: without it every commit would wait for the disk, and this would be
    # no floor at all.
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    columns = ("bucket", *LOADER_FIELDS, "api_key_id", "detail", "login_username")
    db.execute(f"CREATE TABLE usage ({', '.join(columns)})")
    insert = f"INSERT INTO usage VALUES ({', '.join('?' * len(columns))})"
    session = requests.Session()
    session.headers["Authorization"] = f"Key {os.environ[KEY_ENV]}"
    params, pages, items = dict(args["params"]), 0, 0
    clock = Clock()
    while True:
        response = session.get(f"{args['base_url']}/models/usage", params=params)
        response.raise_for_status()
        body = response.json()
        values = []
        for bucket in body["time_series"]:
            hour = bucket["bucket"]
            for item in bucket["results"]:
                who = item["auth_method_structured"]
                who_values = (who.get("api_key_id"), who["detail"], who.get("login_username"))
                values.append((hour, *map(item.get, LOADER_FIELDS), *who_values))
        with db:
            db.executemany(insert, values)
        pages, items = pages + 1, items + len(values)
        if not body["next_cursor"]:
            break
        params["cursor"] = body["next_cursor"]
    figures = clock.figures()
    stored = db.execute("SELECT COUNT(*) FROM usage").fetchone()[0]
    db.close()
    return {**figures, "pages": pages, "items": items, "rows": stored}


def _host(home: Path, now: datetime) -> Any:
    from connector_sdk.host import Host

    return Host.open(home, store_url=f"sqlite:///{home / 'store.sqlite'}", clock=lambda: now)


def contender_ours(args: dict[str, Any]) -> dict[str, Any]:
    """connector-host: a new connection's first sync into the SQLite store."""
    config = {
        "api_key": os.environ[KEY_ENV],
        "base_url": args["base_url"],
        "backfill_days": args["days"],
    }
    return _timed_sync(args, connect=config)


def contender_incremental(args: dict[str, Any]) -> dict[str, Any]:
    """The next hourly sync of a backfilled connection: the lookback hours fetched again and upserted."""
    return _timed_sync(args)


def _timed_sync(args: dict[str, Any], *, connect: dict[str, Any] | None = None) -> dict[str, Any]:
    from connector_sdk.sync import sync_now

    with _host(Path(args["home"]), datetime.fromisoformat(args["now"])) as host:
        if connect is not None:
            host.connect("fal", "bench", connect)
        clock = Clock()
        run = sync_now(host, "bench")
        figures = clock.figures()
    return {**figures, "rows": run.rows_written, "pages": run.pages, "outcome": run.outcome.value}


def contender_report(args: dict[str, Any]) -> dict[str, Any]:
    """``Host.report`` over every row: the query behind ``connector-host report``."""
    now = datetime.fromisoformat(args["now"])
    with _host(Path(args["home"]), now) as host:
        started = time.perf_counter()
        _since, _until, lines = host.report(None, days=args["days"] + 1)
        seconds = time.perf_counter() - started
        rows = host.store.count_rows()
    return {"seconds": seconds, "lines": len(lines), "rows": rows}


def contender_dashboard(args: dict[str, Any]) -> dict[str, Any]:
    """What the portal's dashboard asks the store over the whole backfill: the report, the chart's daily spend per
    label, and page 1,000 of its rows (50 a page) with how many there are."""
    now = datetime.fromisoformat(args["now"])
    with _host(Path(args["home"]), now) as host:
        started = time.perf_counter()
        since, until, _lines = host.report("bench", days=args["days"] + 1)
        host.store.daily_spend_by_label("bench", since=since, until=until, currency="USD")
        rows, total = host.store.rows_page("bench", since=since, until=until, offset=999 * 50, limit=50)
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "rows": total, "page_rows": len(rows)}


# The money and quantity columns as double: without hints a column that first meets 0 (an integer) and then 0.052
# becomes a bigint plus a `__v_double` variant column, which nobody would keep.
DLT_DOUBLE_COLUMNS = (
    "quantity", "unit_price", "percent_discount", "cost_subtotal", "cost_discount", "cost_total", "cost",
)  # fmt: skip
DLT_SHAPES = ("nested", "flat")


def dlt_settings(shape: str) -> dict[str, str]:
    """dlt tuned as its performance guide says, for this machine's two CPUs: big in-memory buffers, extract files
    rotated so that two normalize processes share the work, load files rotated so that the loader has several."""
    # A nested bucket is a whole page fragment (about 200 items); a flat one is one item.
    extract_file_items = 500 if shape == "nested" else 100_000
    return {
        "DATA_WRITER__BUFFER_MAX_ITEMS": "100000",
        "DATA_WRITER__DISABLE_COMPRESSION": "true",  # intermediary files are read once, on the same disk
        "EXTRACT__DATA_WRITER__FILE_MAX_ITEMS": str(extract_file_items),
        "NORMALIZE__WORKERS": "2",
        "NORMALIZE__DATA_WRITER__FILE_MAX_ITEMS": "200000",
        "LOAD__WORKERS": "2",
        "RUNTIME__DLTHUB_TELEMETRY": "false",
    }


def contender_dlt(args: dict[str, Any]) -> dict[str, Any]:
    """dlt into duckdb, configured the way its own guide tunes a pipeline: parquet load files, hinted double money
    columns, buffers and workers set for two CPUs. ``shape`` is ``nested`` (``rest_api``, ``data_selector:
    time_series``, items in dlt's ``results`` child table) or ``flat`` (a resource on dlt's ``RESTClient`` that
    yields each page's items with their hour, one table)."""
    shape = args["dlt_shape"]
    os.environ.update(dlt_settings(shape))
    import dlt

    doubles: dict[str, Any] = {name: {"name": name, "data_type": "double"} for name in DLT_DOUBLE_COLUMNS}
    auth = {"type": "api_key", "name": "Authorization", "api_key": f"Key {os.environ[KEY_ENV]}", "location": "header"}
    paginator = {"type": "cursor", "cursor_path": "next_cursor", "cursor_param": "cursor"}
    if shape == "nested":
        from dlt.sources.rest_api import rest_api_source

        source = rest_api_source(
            {
                "client": {"base_url": args["base_url"] + "/", "auth": auth, "paginator": paginator},
                "resources": [
                    {
                        "name": "usage",
                        "endpoint": {"path": "models/usage", "params": args["params"], "data_selector": "time_series"},
                        "write_disposition": "append",
                    }
                ],
            }
        )
        source.resources["usage"].apply_hints(
            columns={"bucket": {"data_type": "timestamp"}}, nested_hints={"results": {"columns": doubles}}
        )
        table = "usage__results"
    else:
        from dlt.sources.helpers.rest_client import RESTClient
        from dlt.sources.helpers.rest_client.auth import APIKeyAuth
        from dlt.sources.helpers.rest_client.paginators import JSONResponseCursorPaginator

        client = RESTClient(
            base_url=args["base_url"] + "/",
            auth=APIKeyAuth(name="Authorization", api_key=f"Key {os.environ[KEY_ENV]}", location="header"),
            paginator=JSONResponseCursorPaginator(cursor_path="next_cursor", cursor_param="cursor"),
        )

        @dlt.resource(
            name="usage", write_disposition="append", columns={"bucket": {"data_type": "timestamp"}, **doubles}
        )
        def usage() -> Any:
            for page in client.paginate("models/usage", params=args["params"], data_selector="time_series"):
                yield [{"bucket": bucket["bucket"], **item} for bucket in page for item in bucket["results"]]

        source = usage()
        table = "usage"
    home = Path(args["home"])
    pipeline = dlt.pipeline(
        pipeline_name="fal_usage",
        destination=dlt.destinations.duckdb(str(home / "fal_usage.duckdb")),
        dataset_name="fal",
        pipelines_dir=str(home / "pipelines"),
        progress=None,
    )
    clock = Clock()
    pipeline.run(source, loader_file_format="parquet")
    figures = clock.figures()
    with pipeline.sql_client() as client:
        items = client.execute_sql(f"SELECT COUNT(*) FROM {table}")[0][0]
        columns = [row[0] for row in client.execute_sql(f"DESCRIBE {table}")]
    # A column whose type dlt could not settle gets a variant column beside it (`cost__v_double`): none should exist.
    variants = [name for name in columns if "__v_" in name]
    return {**figures, "items": int(items), "shape": shape, "variant_columns": variants}


CONTENDERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "raw": contender_raw,
    "floor": contender_floor,
    "loader": contender_loader,
    "ours": contender_ours,
    "incremental": contender_incremental,
    "report": contender_report,
    "dashboard": contender_dashboard,
    "dlt": contender_dlt,
}


@dataclass
class Measure:
    seconds: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def peak_rss(self) -> float:
        return max(self.rss_mb)

    @property
    def cpu_median(self) -> float | None:
        return statistics.median(self.cpu) if self.cpu else None

    def add(self, answer: dict[str, Any], rss: float) -> None:
        self.seconds.append(answer["seconds"])
        self.rss_mb.append(rss)
        if "cpu" in answer:
            self.cpu.append(answer["cpu"])
        self.detail = answer


def spawn(name: str, args: dict[str, Any], key: str, *, cwd: Path = ROOT) -> tuple[dict[str, Any], float]:
    """Run one contender in a fresh process: its JSON answer and its peak RSS in MB."""
    env = {**os.environ, KEY_ENV: key, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.performance", "contender", name, json.dumps(args)],
        stdout=subprocess.PIPE,
        env=env,
        cwd=cwd,
    )
    assert process.stdout is not None
    output = process.stdout.read()
    _pid, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise RuntimeError(f"contender {name} failed with status {status}")
    return json.loads(output.decode().strip().splitlines()[-1]), usage.ru_maxrss / 1024


def measure(
    name: str,
    args: dict[str, Any],
    key: str,
    runs: int,
    *,
    prepare: Callable[[int], dict[str, Any]] | None = None,
    into: Measure | None = None,
    first: int = 0,
    sim: Simulator | None = None,
) -> Measure:
    """``runs`` runs of a contender (numbered from ``first``), added to ``into``; with ``sim``, each run's answer
    says how many requests the simulator received meanwhile."""
    result = into if into is not None else Measure()
    for run in range(first, first + runs):
        extra = prepare(run) if prepare else {}
        before = sim.requests() if sim is not None else 0
        answer, rss = spawn(name, {**args, **extra}, key, cwd=Path(extra.get("home", ROOT)))
        if sim is not None:
            answer["requests"] = sim.requests() - before
        result.add(answer, rss)
        print(f"  {name:<12} run {run + 1}: {answer['seconds']:8.3f} s  {rss:6.0f} MB  {answer}", flush=True)
    return result


def cli_time(argv: Sequence[str], home: Path, runs: int) -> Measure:
    """Wall time of a whole ``connector-host`` command (interpreter start included), output discarded."""
    result = Measure()
    env = {**os.environ, "CONNECTOR_HOST_HOME": str(home), "CONNECTOR_HOST_STORE": f"sqlite:///{home / 'store.sqlite'}"}
    for _ in range(runs):
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "connector_sdk", *argv],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=home,
        )
        _pid, status, usage = os.wait4(process.pid, 0)
        result.seconds.append(time.perf_counter() - started)
        result.rss_mb.append(usage.ru_maxrss / 1024)
        result.cpu.append(usage.ru_utime + usage.ru_stime)
        if status != 0:
            raise RuntimeError(f"connector-host {' '.join(argv)} failed with status {status}")
    print(f"  {' '.join(argv):<40} {result.median:8.3f} s", flush=True)
    return result


def many_connections(scale: Scale, work: Path, now: datetime) -> dict[str, Measure]:
    """``run --once`` over many small connections, with the host's concurrency and with one sync at a time."""
    sim = Simulator(
        {
            "now": now.isoformat(),
            "history_days": 30,
            "latency": scale.latency,
            "cache": False,
            "small": scale.connections,
        }
    )
    try:
        template = work / "many-template"
        from concurrent.futures import ThreadPoolExecutor

        from connector_sdk.host import Host

        with (
            Host.open(template, store_url=f"sqlite:///{template / 'store.sqlite'}") as host,
            ThreadPoolExecutor(32) as pool,
        ):
            accounts = sorted(sim.keys)

            def connect(i: int) -> None:
                host.connect(
                    "fal",
                    f"c{i:05d}",
                    {"api_key": sim.keys[accounts[i]], "base_url": sim.base_url, "backfill_days": 1},
                )

            list(pool.map(connect, range(scale.connections)))
        results = {}
        for label, concurrency in (("concurrent", scale.concurrency), ("sequential", 1)):
            home = work / f"many-{label}"
            shutil.rmtree(home, ignore_errors=True)
            shutil.copytree(template, home)
            results[label] = cli_time(["run", "--once", "--concurrency", str(concurrency)], home, 1)
        return results
    finally:
        sim.close()


MEASURES = (
    "raw", "floor", "loader", "ours", "ours_short", "dlt", "incremental", "report", "dashboard", "report_cli",
    "rows_cli", "startup", "many",
)  # fmt: skip


def run_all(scale: Scale, work: Path, *, only: frozenset[str] = frozenset(MEASURES)) -> dict[str, Any]:
    now = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)
    measures: dict[str, Measure] = {}
    load = os.getloadavg()[0]
    if only - {"many", "startup"}:
        measures.update(big_account(scale, work, now, only))
    if "startup" in only:
        measures.update(startup(work, scale.startup_runs))
    if "many" in only:
        measures.update(many_connections(scale, work, now))
    figures = {"scale": scale.__dict__, "now": now.isoformat(), "load": [load, os.getloadavg()[0]]}
    figures["measures"] = {
        name: {
            "seconds": m.seconds,
            "median": m.median,
            "cpu": m.cpu,
            "cpu_median": m.cpu_median,
            "peak_rss_mb": m.peak_rss,
            "detail": m.detail,
        }
        for name, m in measures.items()
    }
    return figures


def big_account(scale: Scale, work: Path, now: datetime, only: frozenset[str]) -> dict[str, Measure]:
    """Every measure of the big account: its backfill by each contender, then what follows on the backfilled store.

    The backfills run in rounds, each contender once a round, so that a change in the machine's load falls on all
    of them alike."""
    spec = {
        "now": now.isoformat(),
        "history_days": scale.days,
        "latency": 0.0,
        "cache": True,
        "big": {"keys": scale.keys, "models": scale.models, "activity": scale.activity},
    }
    print("starting the simulator and generating the account...", flush=True)
    sim = Simulator(spec)
    key = sim.keys[TEAM]
    measures: dict[str, Measure] = {}
    try:
        base = {"base_url": sim.base_url, "now": now.isoformat()}
        backfill = {**base, "params": usage_params(scale.days, now), "days": scale.days}
        short = {**base, "params": usage_params(scale.small_days, now), "days": scale.small_days}
        print("warm-up: rendering every page once...", flush=True)
        spawn("raw", backfill, key)
        spawn("raw", short, key)

        def fresh(prefix: str) -> Callable[[int], dict[str, Any]]:
            def prepare(run: int) -> dict[str, Any]:
                home = work / f"{prefix}-{run}"
                shutil.rmtree(home, ignore_errors=True)
                home.mkdir(parents=True)
                return {"home": str(home)}

            return prepare

        dlt_args = {**backfill, "dlt_shape": scale.dlt_shape}
        rounds = max(scale.runs, scale.dlt_runs if "dlt" in only else 0)
        for run in range(rounds):
            print(f"round {run + 1}/{rounds}", flush=True)
            for name in ("raw", "floor", "loader"):
                if name in only and run < scale.runs:
                    measure(name, backfill, key, 1, prepare=fresh(name), into=measures.setdefault(name, Measure()),
                            first=run)  # fmt: skip
            if run < scale.runs:  # always: the measures after it need the backfilled store
                measure("ours", backfill, key, 1, prepare=fresh("ours"), into=measures.setdefault("ours", Measure()),
                        first=run, sim=sim)  # fmt: skip
            if "dlt" in only and run < scale.dlt_runs:
                measure("dlt", dlt_args, key, 1, prepare=fresh("dlt"), into=measures.setdefault("dlt", Measure()),
                        first=run)  # fmt: skip
        if "ours_short" in only:
            measures["ours_short"] = measure("ours", short, key, scale.runs, prepare=fresh("short"))
        backfilled = work / "ours-0"
        later = now + timedelta(hours=1)
        sim.set_now(later)

        def copy(run: int) -> dict[str, Any]:
            home = work / f"incremental-{run}"
            shutil.rmtree(home, ignore_errors=True)
            shutil.copytree(backfilled, home)
            return {"home": str(home)}

        incremental = {**base, "now": later.isoformat(), "days": scale.days}
        if "incremental" in only:
            measures["incremental"] = measure("incremental", incremental, key, scale.runs, prepare=copy)
        report = {**base, "home": str(backfilled), "days": scale.days}
        if "report" in only:
            measures["report"] = measure("report", report, key, scale.runs)
        if "dashboard" in only:
            measures["dashboard"] = measure("dashboard", report, key, scale.runs)
        if "report_cli" in only:
            measures["report_cli"] = cli_time(["report", "--days", str(scale.days + 1)], backfilled, scale.runs)
        since = iso(now - timedelta(days=scale.days + 1))
        if "rows_cli" in only:
            measures["rows_cli"] = cli_time(["rows", "--since", since, "--format", "csv"], backfilled, scale.runs)
    finally:
        sim.close()
    return measures


def startup(work: Path, runs: int) -> dict[str, Measure]:
    """``connector-host --version``, ``status`` and ``report`` as whole processes, as ``benchmarks.startup``
    times them (a home of 10 connections synced for a day; the commands interleaved; medians)."""
    from benchmarks import startup as commands

    home = work / "startup-home"
    commands.make_home(home)
    measures = {}
    for timing in commands.time_commands(home, runs):
        measures[f"startup {timing.command}"] = Measure(seconds=timing.wall, cpu=timing.cpu, rss_mb=[0.0])
    return measures


# -- the table -------------------------------------------------------------------------------------------------
def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} vCPUs ({cpu}), Python {platform.python_version()}, {platform.system()}"


def table(figures: dict[str, Any]) -> str:
    """The targets table: the issue's targets first, side by side, then the other figures."""
    m = figures["measures"]
    scale = figures["scale"]

    def sec(name: str) -> float:
        return float(m[name]["median"])

    def cpu(name: str) -> str:
        value = m[name].get("cpu_median")
        return "" if value is None else f"{value:.2f} s"

    rows = int(m["ours"]["detail"]["rows"])
    load = figures.get("load")
    lines = [
        f"Measured {datetime.now(UTC).strftime('%Y-%m-%d')} on {machine()}"
        + (f", load average {load[0]:.1f} at the start and {load[1]:.1f} at the end" if load else "")
        + f"; medians of {scale['runs']} runs (dlt: {scale['dlt_runs']}), the backfills in rounds of one run each; "
        f"{rows:,} usage items ({scale['keys']} API keys + User key, {scale['models']} models, {scale['days']} days "
        f"of hourly usage, discounts) from a fal stand-in: 50 items a page unless asked, at most {PAGE_SIZE}, a 400 "
        "above. CPU is the contender's own (its child processes' too), without the simulator's.",
        "",
        "| measure | wall time | CPU | rows/s | peak RSS | target | met |",
        "|---|---:|---:|---:|---:|---|---|",
    ]

    def line(label: str, name: str, target: str, met: bool | None, count: int | None = None) -> None:
        rate = f"{count / sec(name):,.0f}" if count else ""
        verdict = "" if met is None else ("yes" if met else "**no**")
        rss = f"{m[name]['peak_rss_mb']:.0f} MB" if m[name]["peak_rss_mb"] else ""
        lines.append(f"| {label} | {sec(name):.2f} s | {cpu(name)} | {rate} | {rss} | {target} | {verdict} |")

    floor, loader, ours = sec("floor"), sec("loader"), sec("ours")
    line(
        f"**connector-host** backfill into SQLite: {ours / floor:.2f}x the floor, "
        f"{ours / loader:.2f}x the storage floor",
        "ours",
        "<= 2.0x floor, <= 1.5x storage floor",
        ours <= 2.0 * floor and ours <= 1.5 * loader,
        rows,
    )
    if "dlt" in m:  # always there in a full run; kept optional for figures read back from older JSON
        faster = sec("dlt") / ours
        memory = m["dlt"]["peak_rss_mb"] / m["ours"]["peak_rss_mb"]
        shape = m["dlt"]["detail"].get("shape", "nested")  # older JSON: the nested rest_api source
        how = "`rest_api`, items in a child table" if shape == "nested" else "items flattened into one table"
        line(
            f"dlt -> duckdb, parquet, {how}: ours is {faster:.1f}x faster, with {memory:.1f}x less peak memory",
            "dlt",
            "ours >= 3x faster, >= 10x less memory",
            faster >= 3 and memory >= 10,
            rows,
        )
    requests = m["ours"]["detail"].get("requests")
    if requests:
        fewest = -(-rows // PAGE_SIZE)
        lines.append(
            f"| requests a backfill: {requests:,} for {rows:,} items, {requests / fewest:.3f}x "
            f"ceil(items / {PAGE_SIZE}) = {fewest:,} |  |  |  |  | <= 1.05x | "
            + ("yes" if requests <= 1.05 * fewest else "**no**")
            + " |"
        )
    commands = [name for name in m if name.startswith("startup ")]
    if commands:
        slowest = max(sec(name) for name in commands)
        figures_text = ", ".join(f"`{name.removeprefix('startup ')}` {sec(name):.2f} s" for name in commands)
        cpus = ", ".join(cpu(name) for name in commands)
        lines.append(
            f"| start-up, whole processes, median of {len(m[commands[0]]['seconds'])} (10 connections): "
            f"{figures_text} | {slowest:.2f} s | {cpus} |  |  | <= 0.25 s each | "
            + ("yes" if slowest <= 0.25 else "**no**")
            + " |"
        )
    growth = m["ours"]["peak_rss_mb"] / m["ours_short"]["peak_rss_mb"] - 1
    line(
        f"connector-host backfill of {scale['small_days']} days: peak RSS {m['ours_short']['peak_rss_mb']:.0f} MB, "
        f"{growth:+.0%} at {scale['days']} days",
        "ours_short",
        "< 100 MB, within 10%",
        m["ours"]["peak_rss_mb"] < 100 and abs(growth) <= 0.10,
        int(m["ours_short"]["detail"]["rows"]),
    )
    line(
        "incremental hourly sync (48 h lookback)",
        "incremental",
        "<= 0.59 s",
        sec("incremental") <= 0.59,
        int(m["incremental"]["detail"]["rows"]),
    )
    line(f"`Host.report` over {rows:,} rows", "report", "<= 0.08 s", sec("report") <= 0.08)
    line("simulator alone (pages read as bytes)", "raw", "", None, rows)
    line("**floor**: `requests` + `json`, nothing else", "floor", "", None, rows)
    line(
        f"storage floor: the floor + `sqlite3` `executemany` of every item, WAL ({loader / floor:.2f}x the floor)",
        "loader",
        "",
        None,
        rows,
    )
    if "dashboard" in m:  # kept optional for figures read back from older JSON
        line(
            f"the portal dashboard's queries over {rows:,} rows (report, chart, page 1,000 of rows)",
            "dashboard",
            "",
            None,
        )
    line("`connector-host report` (whole command)", "report_cli", "", None)
    line(f"`connector-host rows --since ... --format csv` ({rows:,} rows)", "rows_cli", "", None, rows)
    if "concurrent" in m:
        ratio = sec("sequential") / sec("concurrent")
        n = scale["connections"]
        line(
            f"{n:,} connections, `run --once --concurrency {scale['concurrency']}` ({ratio:.1f}x sequential)",
            "concurrent",
            ">= 10x sequential",
            ratio >= 10,
        )
        line(f"{n:,} connections, `run --once --concurrency 1`", "sequential", "", None)
        lines.append("")
        lines.append(
            f"The many-connections cycle runs against a simulator that answers every request after "
            f"{scale['latency']} s, as a remote API does; the backfill figures are on loopback with no added latency."
        )
    return "\n".join(lines)


def write_results(text: str) -> None:
    current = RESULTS.read_text(encoding="utf-8")
    block = f"{START_MARK}\n{text}\n{END_MARK}"
    if START_MARK in current:
        head, _, rest = current.partition(START_MARK)
        _, _, tail = rest.partition(END_MARK)
        RESULTS.write_text(head + block + tail, encoding="utf-8")
    else:
        RESULTS.write_text(current.rstrip("\n") + "\n\n" + block + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        serve(json.loads(argv[1]))
        return 0
    if argv[:1] == ["contender"]:
        print(json.dumps(CONTENDERS[argv[1]](json.loads(argv[2]))), flush=True)
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks.performance", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny account and few connections: a smoke run")
    parser.add_argument("--runs", type=int, help="runs per measure (median reported)")
    parser.add_argument("--dlt-runs", type=int, help="runs of dlt (median reported)")
    parser.add_argument("--dlt-shape", choices=DLT_SHAPES, help="dlt's items in a child table (nested) or one (flat)")
    parser.add_argument("--connections", type=int, help="connections in the many-connections cycle")
    parser.add_argument("--days", type=int, help="days of the big account's backfill (for profiling)")
    parser.add_argument(
        "--only", help=f"a comma-separated subset of {','.join(MEASURES)} (for profiling; no table is written)"
    )
    parser.add_argument("--json", type=Path, help="write every figure as JSON here")
    parser.add_argument("--write", action="store_true", help="put the table into benchmarks/RESULTS.md")
    parser.add_argument("--work", type=Path, help="where stores and pipelines go (default: a temporary folder)")
    args = parser.parse_args(argv)
    scale = QUICK if args.quick else Scale()
    overrides = {
        k: v
        for k, v in (
            ("runs", args.runs),
            ("dlt_runs", args.dlt_runs),
            ("dlt_shape", args.dlt_shape),
            ("connections", args.connections),
            ("days", args.days),
        )
        if v
    }
    scale = Scale(**{**scale.__dict__, **overrides})
    only = frozenset(args.only.split(",")) if args.only else frozenset(MEASURES)
    if unknown := only - set(MEASURES):
        parser.error(f"unknown measures: {', '.join(sorted(unknown))}")
    work = args.work or Path(tempfile.mkdtemp(prefix="connector-host-bench-"))
    try:
        figures = run_all(scale, work, only=only)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str), encoding="utf-8")
    if only != set(MEASURES):
        for name, figure in figures["measures"].items():
            print(f"{name:<12} median {figure['median']:8.3f} s  peak RSS {figure['peak_rss_mb']:5.0f} MB")
        return 0
    text = table(figures)
    print(text)
    if args.write:
        write_results(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
