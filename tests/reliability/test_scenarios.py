"""Each named fault once: the expected outcome, then full recovery with no row lost or doubled."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.reliability.scenarios import SCENARIOS, run_scenario

pytestmark = pytest.mark.reliability


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_a_fault_ends_as_expected_and_the_next_sync_recovers_everything(name: str) -> None:
    expected, _arrange = SCENARIOS[name]
    trial = run_scenario(name)
    assert trial.outcome == expected
    assert trial.recovered
    assert (trial.lost, trial.duplicated) == (0, 0)
    assert trial.rows > 0 or name.startswith("empty")


def test_the_readme_reliability_table_lists_every_scenario() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    table = re.search(r"<!-- reliability:start -->(.*?)<!-- reliability:end -->", readme, re.S).group(1)
    for name in SCENARIOS:
        assert f"| {name} |" in table, f"re-run `python -m tests.reliability --write`: {name!r} is missing"
