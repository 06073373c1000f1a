"""Anthropic's cost rows, per key (cost analytics) and per workspace (cost report), pass focus-validator 2.2.1."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from connector_sdk.focus import focus_profile, write_focus_parquet
from connector_sdk.models import UsageRow
from connectors.anthropic.connector import AnthropicConnector
from connectors.anthropic.mapping import BEYOND_CAP_LABEL
from connectors.anthropic.simulator import AnthropicSimulator
from tests.test_focus import _assert_no_failed_rule, _export, _run_validator, _validator, _validator_install

from .test_connector import CONTEXT, WINDOW

Make = Callable[[str], AnthropicConnector]


def cost_rows(connector: AnthropicConnector) -> list[UsageRow]:
    return [row for page in connector.sync(WINDOW, CONTEXT) for row in page.rows if row.kind == "cost"]


@pytest.mark.focus
def test_per_key_per_workspace_and_unattributed_cost_rows_pass_the_focus_validator(
    sim: AnthropicSimulator, make_connector: Make, admin_key: str, tmp_path: Path
) -> None:
    pytest.importorskip("pyarrow")
    executable = _validator()
    site = _validator_install(executable)
    per_key = cost_rows(make_connector(admin_key))
    capped = make_connector(admin_key)
    sim.max_groups = capped.group_cap = 3
    beyond = [row for row in cost_rows(capped) if row.api_key_label == BEYOND_CAP_LABEL]
    sim.max_groups = 100
    per_workspace = cost_rows(make_connector(sim.add_organization("Small Co", analytics="absent")))
    assert per_key and beyond and per_workspace
    criteria = focus_profile("anthropic").criteria
    records = _export(per_key + beyond, tmp_path / "anthropic.csv")  # every usage column FOCUS requires is set
    assert any(r["ListCost"] != r["BilledCost"] for r in records)  # the negotiated discount is in there
    # Parquet, whose decimal columns are typed: in a CSV whose quantities are all whole numbers (requests) the
    # validator infers an integer column and fails the decimal type checks of ConsumedQuantity and PricingQuantity.
    assert write_focus_parquet(per_key + beyond, tmp_path / "anthropic.parquet") == len(records)
    outcomes = _run_validator(executable, site, tmp_path / "anthropic.parquet", criteria)
    _assert_no_failed_rule(outcomes, site, at_least_passed=160)

    # The cost report states no quantity: its rows pass every rule the validator runs, but their PricingQuantity
    # and ConsumedQuantity stay empty (FOCUS wants them for usage charges; the validator 2.2.1 does not check).
    assert write_focus_parquet(per_workspace, tmp_path / "workspaces.parquet") == len(per_workspace)
    outcomes = _run_validator(executable, site, tmp_path / "workspaces.parquet", criteria)
    _assert_no_failed_rule(outcomes, site, at_least_passed=160)
    assert all(row.quantity is None for row in per_workspace)
