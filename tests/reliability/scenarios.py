"""Named faults, injected against the fal simulator over real HTTP, with what survived each.

Every scenario connects a fresh store to a fresh simulated team, injects its fault, syncs, lets the fault pass
(or reconnects), syncs again, and compares the stored rows with the simulator's truth. ``python -m
tests.reliability`` runs them many times and writes the README's Reliability table; the test suite runs each once.
"""

from __future__ import annotations

import email.utils
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import connectors.fal
from connector_sdk.host import Host
from connector_sdk.models import RunOutcome, floor_hour, utcnow
from connector_sdk.plugins import get_plugin_manager
from connector_sdk.sync import sync_now
from connectors.fal.simulator import FalSimulator, Fault
from tests.helpers import row_key, truth_rows

TEAM = "acme-ai"
RETRIES = {"CONNECTOR_HOST_BACKOFF_BASE": "0.01", "CONNECTOR_HOST_MAX_ATTEMPTS": "4"}
USAGE = "/models/usage"


@dataclass
class Trial:
    """One injection: the outcome of the faulty sync, whether the next one recovered, and what was lost."""

    outcome: str
    recovered: bool
    lost: int
    duplicated: int
    rows: int


@dataclass
class Figures:
    """Every trial of one fault, summed up for the table."""

    fault: str
    trials: list[Trial] = field(default_factory=list)

    def row(self, *, injected: int | None = None) -> str:
        """A Markdown table row; ``injected`` when one trial held many injections (the kill -9 loop)."""
        counts = Counter(t.outcome for t in self.trials)
        outcome = ", ".join(f"{name} x{n}" if len(counts) > 1 else name for name, n in counts.most_common())
        recovered = f"{sum(t.recovered for t in self.trials)}/{len(self.trials)}"
        lost, duplicated = sum(t.lost for t in self.trials), sum(t.duplicated for t in self.trials)
        count = injected if injected is not None else len(self.trials)
        return f"| {self.fault} | {count} | {outcome} | {recovered} | {lost} | {duplicated} |"


def _html_page(sim: FalSimulator, key: str) -> None:
    sim.inject(Fault(USAGE, status=200, body=b"<html><body>Bad gateway</body></html>", after=2))


def _bucket_of_wrong_type(sim: FalSimulator, key: str) -> None:
    body = {"time_series": [{"bucket": "2026-01-01T00:00:00Z", "results": "not a list"}], "next_cursor": None}
    sim.inject(Fault(USAGE, status=200, body=json.dumps(body).encode(), after=2))


def _quantity_of_wrong_type(sim: FalSimulator, key: str) -> None:
    hour = (floor_hour(sim.now) - timedelta(hours=3)).isoformat()
    item = {
        "endpoint_id": "fal-ai/flux/dev",
        "unit": "image",
        "quantity": "4",
        "unit_price": 0.025,
        "percent_discount": None,
        "cost_subtotal": 0.1,
        "cost_discount": 0,
        "cost_total": 0.1,
        "cost": 0.1,
        "currency": "USD",
        "auth_method_structured": {"detail": "User token"},
    }
    body = {"time_series": [{"bucket": hour, "results": [item]}], "next_cursor": None, "has_more": False}
    sim.inject(Fault(USAGE, status=200, body=json.dumps(body).encode()))


def _unknown_extra_field(sim: FalSimulator, key: str) -> None:
    hour = (floor_hour(sim.now) - timedelta(hours=3)).isoformat()
    item = {
        "endpoint_id": "fal-ai/flux/dev",
        "unit": "image",
        "quantity": 4,
        "unit_price": 0.025,
        "percent_discount": None,
        "cost_subtotal": 0.1,
        "cost_discount": 0,
        "cost_total": 0.1,
        "cost": 0.1,
        "currency": "USD",
        "auth_method_structured": {"detail": "User token"},
        "brand_new": {"x": [1]},
    }
    body = {
        "time_series": [{"bucket": hour, "results": [item]}],
        "next_cursor": None,
        "has_more": False,
        "also_new": True,
    }
    sim.inject(Fault(USAGE, status=200, body=json.dumps(body).encode()))


def _repeating_cursor(sim: FalSimulator, key: str) -> None:
    body = {"time_series": [], "next_cursor": "Mg==", "has_more": True}
    sim.inject(Fault(USAGE, status=200, body=json.dumps(body).encode(), after=1, times=2))


def _http_date(seconds: int) -> str:
    return email.utils.formatdate(time.time() + seconds, usegmt=True)


SCENARIOS: dict[str, tuple[str, Callable[[FalSimulator, str], None]]] = {
    "429 burst, Retry-After in seconds": (
        "succeeded",
        lambda s, k: s.inject(Fault(USAGE, status=429, headers={"Retry-After": "0"}, after=1, times=3)),
    ),
    "429 burst, Retry-After as HTTP-date": (
        "succeeded",
        lambda s, k: s.inject(Fault(USAGE, status=429, headers={"Retry-After": _http_date(0)}, times=3)),
    ),
    "429 burst, no Retry-After": ("succeeded", lambda s, k: s.inject(Fault(USAGE, status=429, after=2, times=3))),
    "429 that never ends": ("gave_up", lambda s, k: s.inject(Fault(USAGE, status=429, after=2, times=10_000))),
    "500 once": ("succeeded", lambda s, k: s.inject(Fault(USAGE, status=500, after=1))),
    "502 twice": ("succeeded", lambda s, k: s.inject(Fault(USAGE, status=502, after=3, times=2))),
    "503 until retries run out": ("gave_up", lambda s, k: s.inject(Fault(USAGE, status=503, after=2, times=10_000))),
    "504 once": ("succeeded", lambda s, k: s.inject(Fault(USAGE, status=504, after=4))),
    "server accepts and never answers (timeout)": (
        "succeeded",
        lambda s, k: s.inject(Fault(USAGE, action="hang", delay=2.0, after=1, times=2)),
    ),
    "connection reset mid-body": ("succeeded", lambda s, k: s.inject(Fault(USAGE, action="reset", after=2, times=2))),
    "truncated JSON": ("failed", lambda s, k: s.inject(Fault(USAGE, action="truncate", after=2))),
    "HTML instead of JSON": ("failed", _html_page),
    "bucket results of the wrong type": ("failed", _bucket_of_wrong_type),
    "quantity of the wrong type": ("failed", _quantity_of_wrong_type),
    "unknown extra fields in an hourly sync (accepted)": ("succeeded", _unknown_extra_field),
    "cursor that repeats": ("failed", _repeating_cursor),
    "401 on page 7 of 20, then reconnect": (
        "reconnect_required",
        lambda s, k: s.inject(Fault(USAGE, status=401, after=6, times=10_000)),
    ),
    "403 (key lost Admin scope) mid-sync, then reconnect": (
        "reconnect_required",
        lambda s, k: s.inject(Fault(USAGE, status=403, after=3, times=10_000)),
    ),
    "key revoked between syncs, then reconnect": ("reconnect_required", lambda s, k: s.revoke_key(k)),
    "empty account (no usage at all)": ("succeeded", lambda s, k: None),
}
RECONNECTS = {name for name, (expected, _) in SCENARIOS.items() if expected == "reconnect_required"}
# Faults that meet an hourly sync after a clean backfill, rather than the backfill itself.
AFTER_BACKFILL = {"key revoked between syncs, then reconnect", "unknown extra fields in an hourly sync (accepted)"}


def _stored_vs_truth(host: Host, sim: FalSimulator, team: str, name: str) -> tuple[int, int, int]:
    """(lost, duplicated, rows): truth rows missing or different in the store, and natural keys stored twice."""
    runs = host.store.list_runs(name, limit=10_000)
    start = min(run.window_start for run in runs)
    end = max(run.window_end for run in runs)
    expected = truth_rows(sim.truth(team, start, end))
    stored: dict = {}
    duplicated = 0
    for row in host.store.iter_rows(name):
        key = row_key(row)
        duplicated += key in stored
        stored[key] = (row.quantity, row.cost)
    lost = sum(1 for key, value in expected.items() if stored.get(key) != value)
    return lost, duplicated, len(stored)


def run_scenario(name: str, *, seed: int = 1) -> Trial:
    _expected, arrange = SCENARIOS[name]
    os.environ.update(RETRIES)
    with (
        tempfile.TemporaryDirectory() as tmp,
        FalSimulator(now=floor_hour(utcnow()), seed=seed, page_size=20, max_page_size=20) as sim,
    ):
        empty = name.startswith("empty")
        key = sim.add_account(TEAM, n_keys=3, n_models=4, empty=empty)
        plugins = get_plugin_manager(load_entrypoints=False, plugins=[connectors.fal])
        with Host.open(Path(tmp), store_url="", plugins=plugins) as host:
            host.connect(
                "fal", "c", {"api_key": key, "base_url": sim.base_url, "backfill_days": 6, "timeout_seconds": 0.5}
            )
            if name in AFTER_BACKFILL:
                sync_now(host, "c")
            arrange(sim, key)
            faulty = sync_now(host, "c")
            sim.clear_faults()
            if name in RECONNECTS:
                host.reconnect("c", {"api_key": sim.issue_key(TEAM)})
            recovery = sync_now(host, "c")
            lost, duplicated, rows = _stored_vs_truth(host, sim, TEAM, "c")
    return Trial(
        outcome=faulty.outcome.value,
        recovered=recovery.outcome == RunOutcome.SUCCEEDED,
        lost=lost,
        duplicated=duplicated,
        rows=rows,
    )


def run_kill_9(iterations: int, *, seed: int = 20261123, home: Path | None = None) -> Trial:
    """kill -9 a CLI sync at random points of a long backfill, ``iterations`` times, then let one finish."""
    with tempfile.TemporaryDirectory() as tmp, FalSimulator(now=floor_hour(utcnow()), seed=seed) as sim:
        home = home or Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FAL_", "CONNECTOR_HOST_"))}
        env.update({"CONNECTOR_HOST_HOME": str(home), **RETRIES})
        command = [sys.executable, "-m", "connector_sdk"]
        key = sim.add_account("big-team", n_keys=6, n_models=10)
        subprocess.run(
            [
                *command,
                "connect",
                "fal",
                "--name",
                "big",
                "--base-url",
                sim.base_url,
                "--backfill-days",
                "10",
                "--page-size",
                "25",
            ],
            env={**env, "FAL_KEY": key},
            check=True,
            capture_output=True,
        )
        sim.inject(Fault(USAGE, status=200, delay=0.05, times=1_000_000))  # a backfill of some seconds
        rng = random.Random(seed)
        for _ in range(iterations):
            proc = subprocess.Popen(
                [*command, "sync", "big"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            time.sleep(rng.uniform(0.3, 2.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        final = subprocess.run([*command, "sync", "big"], env=env, capture_output=True, text=True)
        with Host.open(home, store_url="") as host:
            lost, duplicated, rows = _stored_vs_truth(host, sim, "big-team", "big")
    return Trial(
        outcome="killed mid-sync", recovered=final.returncode == 0, lost=lost, duplicated=duplicated, rows=rows
    )
