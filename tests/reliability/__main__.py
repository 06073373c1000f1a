"""``python -m tests.reliability [--iterations N] [--kills N] [--write]``: the README's Reliability table.

Runs every fault scenario N times (and the kill -9 scenario with --kills kills), prints the table, and with
--write replaces the table between the README's reliability markers.
"""

from __future__ import annotations

import argparse
import platform
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import structlog

from tests.reliability.scenarios import SCENARIOS, Figures, run_kill_9, run_scenario

README = Path(__file__).resolve().parents[2] / "README.md"
START, END = "<!-- reliability:start -->", "<!-- reliability:end -->"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability", description=__doc__)
    parser.add_argument("--iterations", type=int, default=10, help="injections of each fault [10]")
    parser.add_argument("--kills", type=int, default=20, help="kill -9 of a syncing process [20]")
    parser.add_argument("--write", action="store_true", help="write the table into README.md")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only: a table, not logs

    started = time.monotonic()
    figures = []
    for name in SCENARIOS:
        fig = Figures(name)
        for i in range(args.iterations):
            fig.trials.append(run_scenario(name, seed=i + 1))
        figures.append(fig)
        print(fig.row(), file=sys.stderr)
    crash = Figures("kill -9 of the sync process at a random point of a 10-day backfill")
    crash.trials.append(run_kill_9(args.kills))
    table = "\n".join(
        [
            "| fault | injected | outcome of the faulty sync | next sync recovered | rows lost | rows duplicated |",
            "|---|---|---|---|---|---|",
            *(f.row() for f in figures),
            crash.row(injected=args.kills),
        ]
    )
    note = (
        f"_{datetime.now(UTC):%Y-%m-%d}, `python -m tests.reliability --iterations {args.iterations} "
        f"--kills {args.kills} --write` on {platform.system()} / Python {platform.python_version()}, "
        f"{time.monotonic() - started:.0f} s._"
    )
    print(table + "\n\n" + note)
    if args.write:
        text = README.read_text(encoding="utf-8")
        block = f"{START}\n{table}\n\n{note}\n{END}"
        text, replaced = re.subn(re.escape(START) + ".*?" + re.escape(END), block, text, flags=re.S)
        if not replaced:
            raise SystemExit("README.md has no reliability markers")
        README.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
