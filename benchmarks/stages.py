"""Where a backfill's time goes, item by item: each stage of the fal connector's per-item path measured alone.

    .venv/bin/python -m benchmarks.stages --days 10               # CPU time of each stage
    .venv/bin/python -m benchmarks.stages --days 3 --callgrind    # and instructions (valgrind, a few minutes)

The benchmark's simulator (stand-in mode, its big account) serves ``--days`` of usage; every ``/models/usage`` page
of 200 items is fetched once and kept, so the stages after HTTP run on the same bytes with nothing else in the way.
Each stage runs in a fresh process that first prepares its input (the stages before it, untimed). Its figure is the
least CPU time of ``--repeat`` runs (``time.process_time``, which other processes move less than the wall clock,
though on a shared machine they still do), and with ``--callgrind`` the instructions valgrind counts inside it, which
the load does not move at all. The stages, in the order a sync runs them:

- ``http``: fetching the pages with ``requests`` and reading their bytes (what every contender pays);
- ``json``: ``json.loads`` of each page (the floor's parse, for reference: connector-host does not run it);
- ``decode``: the fast reader's ``msgspec`` decoding of each page into typed structs, alone;
- ``read``: the fast reader whole (decoding, checking every number, mapping), minus ``decode``;
- ``pages``: the host's pages (:class:`~connector_sdk.paging.HourlyPages`) and its check of every row's hour;
- ``values``: the SQLite store's parameters of every row (``_page_values``);
- ``commit``: ``commit_page`` of every page into a new SQLite store, minus ``values``: the insert, and the rest of
  each page's transaction;
- ``finish``: closing the run, which brings the daily totals of the days it touched up to date.

A profiling aid, not part of the benchmark's table: RESULTS.md quotes it for the per-item breakdown.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.performance import PAGE_SIZE, ROOT, TEAM, Scale, Simulator, usage_params

CURSOR = re.compile(rb'"next_cursor":(null|"([^"]*)")')
STAGES = ("http", "json", "decode", "read", "pages", "values", "commit", "finish")
# What each stage's process times: the stage and those whose time it includes, subtracted afterwards.
TIMED = {"read": "decode", "commit": "values"}


def fetch_pages(days: int, now: datetime) -> dict[str, Any]:
    """Every page of a ``days`` backfill as bytes, the account's key aliases, and the CPU seconds fetching took
    (the second of two passes: the first warms the simulator's cache)."""
    import requests

    scale = Scale()
    spec = {
        "now": now.isoformat(),
        "history_days": days,
        "latency": 0.0,
        "cache": True,
        "big": {"keys": scale.keys, "models": scale.models, "activity": scale.activity},
    }
    sim = Simulator(spec)
    try:
        session = requests.Session()
        session.headers["Authorization"] = f"Key {sim.keys[TEAM]}"
        keys = session.get(f"{sim.base_url}/keys", params={"limit": 100}).json()["keys"]
        cpu = 0.0
        for _ in range(2):
            params, bodies = {**usage_params(days, now), "limit": PAGE_SIZE}, []
            started = time.process_time()
            while True:
                response = session.get(f"{sim.base_url}/models/usage", params=params)
                response.raise_for_status()
                bodies.append(response.content)
                found = CURSOR.search(response.content, max(0, len(response.content) - 200))
                if found is None or found.group(2) is None:
                    break
                params["cursor"] = found.group(2).decode()
            cpu = time.process_time() - started
    finally:
        sim.close()
    aliases = {key["key_id"]: key["alias"] for key in keys}
    return {"days": days, "now": now, "bodies": bodies, "aliases": aliases, "http_cpu": cpu}


class Pipeline:
    """The per-item path of a backfill, stage by stage, over pages fetched beforehand."""

    def __init__(self, data: dict[str, Any], folder: Path) -> None:
        from connector_sdk.models import SyncContext
        from connector_sdk.sync import compute_window

        self.bodies: list[bytes] = data["bodies"]
        self.aliases: dict[str, str] = data["aliases"]
        self.now: datetime = data["now"]
        self.window = compute_window(None, self.now, backfill_days=data["days"], lookback_hours=48)
        self.context = SyncContext(connector="fal", connection="bench", account=TEAM, synced_at=self.now)
        self.folder = folder
        self.stores: list[Any] = []
        self.usage: list[Any] = []
        self.pages: list[Any] = []
        self.store: Any = None

    def json(self) -> None:
        for body in self.bodies:
            json.loads(body)

    def decode(self) -> None:
        from connectors.fal import mapping

        for body in self.bodies:
            mapping._DECODER.decode(body)

    def read(self) -> None:
        from connectors.fal import mapping

        reader = mapping.UsageReader(self.context, self.aliases)
        self.usage = [reader(body) for body in self.bodies]
        assert all(page is not None for page in self.usage), "the fast reader vouched for every page"

    def paged(self) -> None:
        from connector_sdk.paging import HourlyPages
        from connector_sdk.sync import _check_page

        hourly, pages = HourlyPages(self.window, what="bench"), []
        for usage in self.usage:
            if (page := hourly.feed(usage.buckets)) is not None:
                pages.append(page)
        pages.append(hourly.finish())
        expected = self.window.start
        for page in pages:
            _check_page(page, expected, self.window)
            expected = page.complete_through
        self.pages = pages

    def values(self) -> None:
        store = self.store or self.new_store()
        for page in self.pages:
            store._page_values(page)

    def new_store(self) -> Any:
        from connector_sdk.stores.sqlite import SQLiteStore

        store = SQLiteStore(self.folder / f"store-{len(self.stores)}.sqlite")
        self.stores.append(store)
        store.add_connection(name="bench", connector="fal", config={}, credential=b"", account=TEAM, now=self.now)
        store.start_run("bench", "run", self.window, now=self.now)
        return store

    def commit(self) -> None:
        for page in self.pages:
            self.store.commit_page("bench", "run", page, watermark=page.complete_through, now=self.now)

    def finish(self) -> None:
        from connector_sdk.models import RunOutcome

        self.store.finish_run("run", RunOutcome.SUCCEEDED, None, now=self.now)

    def items(self) -> int:
        return sum(len(rows) for usage in self.usage for _hour, rows in usage.buckets)

    def close(self) -> None:
        for store in self.stores:
            store.close()


def measure_stage(data_file: Path, stage: str, repeat: int, callgrind: bool) -> float:
    """The stage's least CPU seconds over ``repeat`` runs; under callgrind, one run inside ``functools.reduce``
    (the only place valgrind is told to count)."""
    data = pickle.loads(data_file.read_bytes())
    folder = Path(tempfile.mkdtemp(prefix="connector-host-stages-"))
    pipeline = Pipeline(data, folder)
    work: dict[str, Callable[[], None]] = {
        "json": pipeline.json,
        "decode": pipeline.decode,
        "read": pipeline.read,
        "pages": pipeline.paged,
        "values": pipeline.values,
        "commit": pipeline.commit,
        "finish": pipeline.finish,
    }
    order = list(work)
    try:
        if order.index(stage) > order.index("read"):
            pipeline.read()
        if order.index(stage) > order.index("pages"):
            pipeline.paged()
        timings = []
        for _ in range(1 if callgrind else repeat):
            if stage in ("values", "commit", "finish"):
                pipeline.store = pipeline.new_store()
            if stage == "finish":
                pipeline.commit()
            started = time.process_time()
            if callgrind:
                functools.reduce(lambda _a, _b: work[stage](), [0, 1])
            else:
                work[stage]()
            timings.append(time.process_time() - started)
        if stage == "finish":
            assert pipeline.store.count_rows("bench") == pipeline.items()
        return min(timings)
    finally:
        pipeline.close()
        shutil.rmtree(folder, ignore_errors=True)


def instructions(data_file: Path, stage: str) -> int:
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={Path(folder) / 'callgrind.out'}",
                "--toggle-collect=functools_reduce",
                sys.executable,
                "-m",
                "benchmarks.stages",
                "stage",
                str(data_file),
                stage,
                "--callgrind",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
    found = re.search(r"Collected\s*:\s*(\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"callgrind of stage {stage} failed: {done.stderr[-2000:]}")
    return int(found[1])


def stage_process(data_file: Path, stage: str, repeat: int) -> float:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.stages", "stage", str(data_file), stage, "--repeat", str(repeat)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["stage"]:
        repeat = int(argv[argv.index("--repeat") + 1]) if "--repeat" in argv else 1
        print(measure_stage(Path(argv[1]), argv[2], repeat, "--callgrind" in argv))
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stages", description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=10, help="days of the big account's usage (default 10)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each stage; the least CPU time counts")
    parser.add_argument("--callgrind", action="store_true", help="also count each stage's instructions (valgrind)")
    parser.add_argument("--only", help="a comma-separated subset of the stages after http (for profiling)")
    parser.add_argument("--json", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    wanted = [stage for stage in STAGES[1:] if not args.only or stage in args.only.split(",")]
    wanted = sorted({*wanted, *(TIMED[stage] for stage in wanted if stage in TIMED)}, key=STAGES.index)
    now = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)
    with tempfile.TemporaryDirectory(prefix="connector-host-stages-") as scratch:
        data = fetch_pages(args.days, now)
        data_file = Path(scratch) / "pages.pickle"
        data_file.write_bytes(pickle.dumps(data))
        items = sum(len(bucket["results"]) for body in data["bodies"] for bucket in json.loads(body)["time_series"])
        load = os.getloadavg()[0]
        cpu = {"http": data["http_cpu"]} | {stage: stage_process(data_file, stage, args.repeat) for stage in wanted}
        counted = {stage: instructions(data_file, stage) for stage in wanted} if args.callgrind else {}
    for stage, inner in TIMED.items():
        cpu[stage] -= cpu[inner]
        if counted:
            counted[stage] -= counted[inner]
    print(f"{items:,} items, {len(data['bodies']):,} pages of {PAGE_SIZE}; load average {load:.1f} at the start")
    print(f"{'stage':<8} {'CPU us/item':>12} {'instructions/item':>18}")
    for stage in [stage for stage in STAGES if stage in cpu]:
        per_item = f"{counted[stage] / items:18,.0f}" if stage in counted else ""
        print(f"{stage:<8} {cpu[stage] * 1e6 / items:12.2f} {per_item}")
    mine = [stage for stage in STAGES if stage not in ("http", "json")]
    if all(stage in cpu for stage in mine):
        per_item = f"{sum(counted[s] for s in mine) / items:18,.0f}" if counted else ""
        print(f"{'ours':<8} {sum(cpu[s] for s in mine) * 1e6 / items:12.2f} {per_item}  (decode to finish)")
    if args.json:
        figures = {"days": args.days, "items": items, "load": load, "cpu": cpu, "instructions": counted}
        args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
