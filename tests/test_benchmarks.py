"""The performance benchmark, tiny: every contender runs and they all see the same usage (no timings asserted)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.startup import FLOORS

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(300)
def test_the_quick_benchmark_runs_every_measure_on_the_same_usage(tmp_path: Path) -> None:
    figures_file = tmp_path / "figures.json"
    command = ["-m", "benchmarks.performance", "--quick", "--work", str(tmp_path / "work"), "--json", str(figures_file)]
    done = subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    measures = json.loads(figures_file.read_text())["measures"]
    assert set(measures) == {
        "raw", "floor", "loader", "ours", "ours_short", "dlt", "incremental", "report", "dashboard", "report_cli",
        "rows_cli", "startup --version", "startup status", "startup report", "concurrent", "sequential",
        *(f"startup {floor}" for floor in FLOORS),  # the interpreter and libraries every reading command pays
    }  # fmt: skip
    items = measures["floor"]["detail"]["items"]
    assert items > 0
    # The stand-in serves 50 items a page unless asked: the floor asked for 200 a page, and connector-host found
    # that size by itself (one refused request) besides checking the key and listing the keys once (for the rows'
    # names during the sync and for the key inventory after it).
    assert measures["floor"]["detail"]["pages"] == math.ceil(items / 200)
    assert measures["ours"]["detail"]["requests"] <= math.ceil(items / 200) + 3
    # The floor, the storage floor, connector-host and dlt each loaded every item of the same backfill.
    assert measures["ours"]["detail"]["rows"] == items == measures["dlt"]["detail"]["items"]
    assert measures["loader"]["detail"]["rows"] == items
    # dlt ran in its benchmarked shape, with every money column hinted (no variant columns beside them).
    assert measures["dlt"]["detail"]["shape"] == "flat"
    assert measures["dlt"]["detail"]["variant_columns"] == []
    assert measures["ours"]["detail"]["outcome"] == measures["incremental"]["detail"]["outcome"] == "succeeded"
    assert 0 < measures["ours_short"]["detail"]["rows"] < items
    assert measures["report"]["detail"]["rows"] == items and measures["report"]["detail"]["lines"] > 0
    assert measures["dashboard"]["detail"]["rows"] == items
    assert all(figure["peak_rss_mb"] > 0 for name, figure in measures.items() if not name.startswith("startup"))
    assert all(figure["cpu"] for figure in measures.values() if "detail" in figure and "cpu" in figure["detail"])
    for row in (
        "| **connector-host** backfill into SQLite",
        "| dlt -> duckdb, parquet, items flattened into one table",
        "| requests a backfill:",
        "| start-up, whole processes",
        "| storage floor: the floor + `sqlite3`",
    ):
        assert row in done.stdout


@pytest.mark.timeout(300)
def test_dlt_nested_loads_every_item_of_the_backfill_into_its_child_table(tmp_path: Path) -> None:
    figures_file = tmp_path / "figures.json"
    command = ["-m", "benchmarks.performance", "--quick", "--only", "floor,dlt", "--dlt-shape", "nested"]
    done = subprocess.run(
        [sys.executable, *command, "--work", str(tmp_path / "work"), "--json", str(figures_file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    measures = json.loads(figures_file.read_text())["measures"]
    assert measures["dlt"]["detail"]["shape"] == "nested"
    assert measures["dlt"]["detail"]["variant_columns"] == []
    assert measures["dlt"]["detail"]["items"] == measures["floor"]["detail"]["items"] > 0
