"""Start-up: how long ``connector-host --version``, ``status`` and ``report`` take as whole processes, and why.

    .venv/bin/python -m benchmarks.startup               # 10 runs of each command, medians, imports per package
    .venv/bin/python -m benchmarks.startup --callgrind   # also instructions per command (valgrind, ~1 min)

A throwaway home gets 10 fal connections, made once against the fal simulator on loopback and synced for a day,
so ``status`` lists ten and ``report`` has spend to add up. Each command then runs ``--runs`` times in a fresh
process (interpreter start included, as a person meets it) and the median wall time is reported beside the median
CPU time of the child (user + system), which the other processes on a shared machine disturb less. ``-X importtime``
of one more run of each gives the import time per top-level package: what a command pays before it does anything.
The load average is printed with the figures, since wall times on a loaded machine mean little without it.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEAM = "startup-team"
CONNECTIONS = 10
COMMANDS: dict[str, tuple[str, ...]] = {
    "--version": ("--version",),
    "status": ("status",),
    "report": ("report",),
}
IMPORT_LINE = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)$")


@dataclass(frozen=True)
class Timing:
    command: str
    wall: list[float]
    cpu: list[float]

    @property
    def wall_median(self) -> float:
        return statistics.median(self.wall)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)


def program() -> list[str]:
    """The installed ``connector-host`` script beside this interpreter, as a person runs it; ``-m`` without one."""
    script = Path(sys.executable).parent / "connector-host"
    return [str(script)] if script.exists() else [sys.executable, "-m", "connector_sdk"]


def environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAL_", "CONNECTOR_HOST_"))}
    env["CONNECTOR_HOST_HOME"] = str(home)
    return env


def make_home(home: Path, connections: int = CONNECTIONS) -> None:
    """``connections`` fal connections in ``home``, each synced for a day against one simulator team."""
    from connector_sdk.host import Host
    from connector_sdk.logs import configure_logging
    from connector_sdk.models import floor_hour, utcnow
    from connector_sdk.sync import sync_now
    from connectors.fal.simulator import FalSimulator

    configure_logging(level="warning")
    with FalSimulator(now=floor_hour(utcnow()), seed=11) as sim, Host.open(home) as host:
        key = sim.add_account(TEAM, n_keys=3, n_models=4)
        for i in range(connections):
            name = f"fal-{i:02d}"
            host.connect("fal", name, {"api_key": key, "base_url": sim.base_url, "backfill_days": 1})
            sync_now(host, name)


def run_once(argv: Sequence[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one whole process running ``argv``; a failing command stops the benchmark."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def time_commands(home: Path, runs: int) -> list[Timing]:
    """Each command ``runs`` times, interleaved, so a burst of load on the machine touches them all alike."""
    env = environment(home)
    walls: dict[str, list[float]] = defaultdict(list)
    cpus: dict[str, list[float]] = defaultdict(list)
    for args in COMMANDS.values():  # one warm-up each: the first run pays for a cold page cache
        run_once([*program(), *args], env)
    for _ in range(runs):
        for name, args in COMMANDS.items():
            wall, cpu = run_once([*program(), *args], env)
            walls[name].append(wall)
            cpus[name].append(cpu)
    return [Timing(name, walls[name], cpus[name]) for name in COMMANDS]


def import_times(home: Path, args: Sequence[str]) -> tuple[dict[str, int], int]:
    """Microseconds spent importing each top-level package (its modules' own time), and the module count."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "connector_sdk", *args],
        env=environment(home),
        capture_output=True,
        text=True,
    )
    per_package: dict[str, int] = defaultdict(int)
    modules = 0
    for line in done.stderr.splitlines():
        match = IMPORT_LINE.match(line)
        if match:
            modules += 1
            per_package[match[4].split(".")[0]] += int(match[1])
    return dict(per_package), modules


def instructions(home: Path, args: Sequence[str]) -> int | None:
    """Instructions one run of the command executes, counted by callgrind (indifferent to the machine's load)."""
    if shutil.which("valgrind") is None:
        return None
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "callgrind.out"
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *program(), *args],
            env=environment(home),
            capture_output=True,
            text=True,
        )
        summary = re.search(r"Collected\s*:\s*(\d+)", done.stderr)
        return int(summary[1]) if summary else None


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="Runs of each command [10].")
    parser.add_argument("--top", type=int, default=12, help="Packages listed per command in the import table [12].")
    parser.add_argument("--callgrind", action="store_true", help="Also count instructions with valgrind.")
    parser.add_argument("--home", type=Path, help="Reuse (or make, once) this home instead of a throwaway one.")
    options = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="startup-") as scratch:
        home = options.home or Path(scratch) / "home"
        if not (home / "connector-host.db").exists():
            make_home(home)
        load = os.getloadavg()
        timings = time_commands(home, options.runs)
        load_after = os.getloadavg()

        print(f"load average {load[0]:.2f} before, {load_after[0]:.2f} after; {os.cpu_count()} CPUs")
        print("\n| command | median wall (s) | min wall (s) | median CPU (s) | runs |\n|---|---|---|---|---|")
        for t in timings:
            print(f"| `{t.command}` | {t.wall_median:.3f} | {min(t.wall):.3f} | {t.cpu_median:.3f} | {len(t.wall)} |")

        for name, args in COMMANDS.items():
            per_package, modules = import_times(home, args)
            total = sum(per_package.values())
            ranked = sorted(per_package.items(), key=lambda item: -item[1])[: options.top]
            listed = ", ".join(f"{package} {us / 1000:.0f}" for package, us in ranked)
            print(f"\n`{name}`: {modules} modules imported in {total / 1000:.0f} ms; by package (ms): {listed}")

        if options.callgrind:
            print()
            for name, args in COMMANDS.items():
                count = instructions(home, args)
                print(f"`{name}`: {'n/a' if count is None else f'{count / 1e6:,.0f} M'} instructions (callgrind)")


if __name__ == "__main__":
    main()
