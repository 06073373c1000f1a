"""Start-up: how long ``connector-host --version``, ``status`` and ``report`` take as whole processes, and why.

    .venv/bin/python -m benchmarks.startup               # 10 runs of each command, medians, imports per module
    .venv/bin/python -m benchmarks.startup --callgrind   # also instructions per command (valgrind, ~1 min)
    .venv/bin/python -m benchmarks.startup --baseline DIR  # and the commands of another source tree, interleaved

A throwaway home gets 10 connections as an admin of several vendors has them (six fal, two OpenAI, two Anthropic,
two of the fal ones reaching one team), each backfilled for the report's 30 days against the simulators on
loopback (some seconds, once; ``--home`` keeps it for the next run): ``status`` lists ten and ``report`` adds up a
month of three vendors' rows (62k rows). The package's bytecode is written first, as installing a wheel does. Each
command then runs once to warm up (the first ``report`` keeps the vendors' names in the home) and ``--runs`` times in
a fresh process (interpreter start included, as a person meets it), interleaved with the floors (``python -c
pass``, then the libraries a reading command cannot do without); the median wall time is reported beside the median
CPU time of the child (user + system), which the other processes on a shared machine disturb less. ``-X importtime``
gives the import time per package and the slowest modules (the least of three runs): what a command pays before it
does anything. The load average is printed with the figures, since wall times on a loaded machine mean little
without it; callgrind's instruction counts do not move with it.
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
CONNECTIONS = 10
DAYS = 30  # the report's default period, so that its whole month has rows
COMMANDS: dict[str, tuple[str, ...]] = {
    "--version": ("--version",),
    "status": ("status",),
    "report": ("report",),
}
# What any Python command pays before it is connector-host: the interpreter, then the libraries a reading command
# cannot do without (click parses, pydantic types the records, Rich draws the table). Measured like the commands.
FLOORS: dict[str, tuple[str, ...]] = {
    "python -c pass": ("-c", "pass"),
    "python -c 'import click'": ("-c", "import click"),
    "python -c 'import pydantic'": ("-c", "import pydantic"),
    # pydantic imports its models' machinery (BaseModel) and types (SecretStr) on first use, rich.table the console.
    "python -c 'import click, sqlite3, rich.table; from pydantic import BaseModel, SecretStr'": (
        "-c",
        "import click, sqlite3, rich.table; from pydantic import BaseModel, SecretStr",
    ),
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


@dataclass(frozen=True)
class Imports:
    """One ``-X importtime`` run: microseconds per module (its own time, and with what it imported)."""

    own: dict[str, int]
    cumulative: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.own.values())

    def per_package(self) -> dict[str, int]:
        packages: dict[str, int] = defaultdict(int)
        for module, us in self.own.items():
            packages[module.split(".")[0]] += us
        return dict(packages)


def program() -> list[str]:
    """The installed ``connector-host`` script beside this interpreter, as a person runs it; ``-m`` without one."""
    script = Path(sys.executable).parent / "connector-host"
    return [str(script)] if script.exists() else [sys.executable, "-m", "connector_sdk"]


def environment(home: Path, source: Path | None = None) -> dict[str, str]:
    """The commands' environment; with ``source``, the connector_sdk of that source tree instead of this one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAL_", "CONNECTOR_HOST_"))}
    env["CONNECTOR_HOST_HOME"] = str(home)
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(source), *filter(None, [env.get("PYTHONPATH")])])
    return env


def make_home(home: Path, days: int = DAYS) -> None:
    """:data:`CONNECTIONS` connections in ``home``, each backfilled ``days`` days from a simulator on loopback, as an
    admin who watches several vendors has them: six fal teams (two connections reach one team, which the report
    counts once), two OpenAI and two Anthropic organizations, so that ``report`` names three vendors."""
    from connector_sdk.host import Host
    from connector_sdk.logs import configure_logging
    from connector_sdk.models import floor_hour, utcnow
    from connector_sdk.sync import sync_now
    from connectors.anthropic.simulator import AnthropicSimulator
    from connectors.fal.simulator import FalSimulator
    from connectors.openai.simulator import OpenAISimulator

    configure_logging(level="warning")
    now = floor_hour(utcnow())
    with (
        FalSimulator(now=now, seed=11) as fal,
        OpenAISimulator(now=now, seed=11, history_days=days + 5) as openai,
        AnthropicSimulator(now=now, seed=11, history_days=days + 5) as anthropic,
        Host.open(home) as host,
    ):
        fal_keys = [fal.add_account(f"team-{i}", n_keys=3, n_models=4) for i in range(5)]
        made = [("fal", f"fal-{i}", fal_keys[i], fal.base_url) for i in range(5)]
        made.append(("fal", "fal-0-finance", fal.issue_key("team-0"), fal.base_url))  # team-0 again
        for i in range(2):
            made.append(("openai", f"openai-{i}", openai.add_organization(f"Org {i}"), openai.base_url))
            made.append(("anthropic", f"anthropic-{i}", anthropic.add_organization(f"Lab {i}"), anthropic.base_url))
        for connector, name, key, url in made:
            host.connect(connector, name, {"api_key": key, "base_url": url, "backfill_days": days})
            sync_now(host, name)


def compile_bytecode(*sources: Path) -> None:
    """Write the bytecode of connector_sdk and connectors beside their sources (these, and those in ``sources``), as
    installing a wheel does. A source checkout run with ``PYTHONDONTWRITEBYTECODE`` set (as on the machine these
    figures come from) never writes it, and would compile every module it imports on every run: about a sixth of
    ``status``, no part of a user's."""
    import compileall

    import connector_sdk
    import connectors

    folders = [Path(package.__file__).parent for package in (connector_sdk, connectors)]
    folders += [source / package for source in sources for package in ("connector_sdk", "connectors")]
    for folder in folders:
        compileall.compile_dir(folder, quiet=1)


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


def time_commands(home: Path, runs: int, baseline: Path | None = None) -> list[Timing]:
    """Each command (and, with ``baseline``, that source tree's), then each floor, ``runs`` times, interleaved, so
    that a burst of load on the machine touches them all alike."""
    env = environment(home)
    argvs = {name: ([*program(), *args], env) for name, args in COMMANDS.items()}
    if baseline is not None:
        before = environment(home, baseline)
        argvs |= {f"{name} (baseline)": ([*program(), *args], before) for name, args in COMMANDS.items()}
    argvs |= {name: ([sys.executable, *args], env) for name, args in FLOORS.items()}
    walls: dict[str, list[float]] = defaultdict(list)
    cpus: dict[str, list[float]] = defaultdict(list)
    for argv, env_ in argvs.values():  # one warm-up each: the first run pays for a cold page cache
        run_once(argv, env_)
    for _ in range(runs):
        for name, (argv, env_) in argvs.items():
            wall, cpu = run_once(argv, env_)
            walls[name].append(wall)
            cpus[name].append(cpu)
    return [Timing(name, walls[name], cpus[name]) for name in argvs]


def import_times(home: Path, args: Sequence[str], source: Path | None = None, runs: int = 3) -> Imports:
    """``-X importtime`` of ``runs`` runs of the command: each module's own and cumulative import time, the least
    of the runs (the load of a shared machine only ever adds to them)."""
    own: dict[str, int] = {}
    cumulative: dict[str, int] = {}
    script = program()
    # The script, not -m: -m would put the current folder, this source tree, before a baseline's.
    argv = [sys.executable, "-X", "importtime", *(script if len(script) == 1 else script[1:])]
    for _ in range(runs):
        done = subprocess.run(
            [*argv, *args],
            env=environment(home, source),
            capture_output=True,
            text=True,
        )
        for line in done.stderr.splitlines():
            match = IMPORT_LINE.match(line)
            if match:
                own[match[4]] = min(own.get(match[4], sys.maxsize), int(match[1]))
                cumulative[match[4]] = min(cumulative.get(match[4], sys.maxsize), int(match[2]))
    return Imports(own, cumulative)


def instructions(argv: Sequence[str], env: dict[str, str]) -> int | None:
    """Instructions one run of ``argv`` executes, counted by callgrind (indifferent to the machine's load)."""
    if shutil.which("valgrind") is None:
        return None
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "callgrind.out"
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv],
            env=env,
            capture_output=True,
            text=True,
        )
        summary = re.search(r"Collected\s*:\s*(\d+)", done.stderr)
        return int(summary[1]) if summary else None


def print_imports(name: str, imports: Imports, top: int) -> None:
    packages = sorted(imports.per_package().items(), key=lambda item: -item[1])[:top]
    modules = sorted(imports.own.items(), key=lambda item: -item[1])[:top]
    ours = sorted(
        ((m, us) for m, us in imports.cumulative.items() if m.startswith("connector_sdk")), key=lambda item: -item[1]
    )[:top]
    print(f"\n`{name}`: {len(imports.own)} modules imported in {imports.total / 1000:.0f} ms")
    print("- by package, own time (ms): " + ", ".join(f"{p} {us / 1000:.1f}" for p, us in packages))
    print("- slowest modules, own time (ms): " + ", ".join(f"{m} {us / 1000:.1f}" for m, us in modules))
    print("- connector_sdk modules with what they import (ms): " + ", ".join(f"{m} {us / 1000:.1f}" for m, us in ours))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="Runs of each command [10].")
    parser.add_argument("--top", type=int, default=12, help="Packages and modules listed per command [12].")
    parser.add_argument("--callgrind", action="store_true", help="Also count instructions with valgrind.")
    parser.add_argument("--home", type=Path, help="Reuse (or make, once) this home instead of a throwaway one.")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="A source tree holding another connector_sdk and connectors (e.g. `git archive BASE connector_sdk "
        "connectors manifests | tar -x -C DIR`) whose commands run too, interleaved: before and after, one load.",
    )
    options = parser.parse_args(argv)
    sources: list[tuple[str, Path | None]] = [("", None)]
    if options.baseline is not None:
        sources.append((" (baseline)", options.baseline.resolve()))

    with tempfile.TemporaryDirectory(prefix="startup-") as scratch:
        home = options.home or Path(scratch) / "home"
        if not (home / "connector-host.db").exists():
            make_home(home)
        compile_bytecode(*(source for _, source in sources if source is not None))
        load = os.getloadavg()
        timings = time_commands(home, options.runs, sources[-1][1] if len(sources) > 1 else None)
        load_after = os.getloadavg()

        print(f"load average {load[0]:.2f} before, {load_after[0]:.2f} after; {os.cpu_count()} CPUs")
        print("\n| command | median wall (s) | min wall (s) | median CPU (s) | runs |\n|---|---|---|---|---|")
        for t in timings:
            print(f"| `{t.command}` | {t.wall_median:.3f} | {min(t.wall):.3f} | {t.cpu_median:.3f} | {len(t.wall)} |")

        for label, source in sources:
            for name, args in COMMANDS.items():
                print_imports(name + label, import_times(home, args, source), options.top)

        if options.callgrind:
            print()
            counted = [
                (name + label, [*program(), *args], environment(home, source))
                for label, source in sources
                for name, args in COMMANDS.items()
            ]
            counted += [(name, [sys.executable, *args], environment(home)) for name, args in FLOORS.items()]
            for name, argv_, env in counted:
                count = instructions(argv_, env)
                shown = "n/a" if count is None else f"{count / 1e6:,.0f} M"
                print(f"`{name}`: {shown} instructions (callgrind)")


if __name__ == "__main__":
    main()
