"""The README's promises hold: its plugin example works and its command table matches the CLI."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import click
import pytest

from connector_sdk.cli import cli
from connector_sdk.cli.inventory import EXIT_FINDINGS
from connector_sdk.findings import SEVERITY
from connector_sdk.host import Host
from connector_sdk.models import FindingKind, RunOutcome
from connector_sdk.plugins import get_plugin_manager
from connector_sdk.sync import sync_now

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def test_the_plugin_example_loads_connects_and_syncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = re.search(r"```python\n(# hello_connector\.py\n.*?)```", README, re.S).group(1)
    module = types.ModuleType("hello_connector")
    monkeypatch.setitem(sys.modules, "hello_connector", module)
    exec(compile(source, "README.md", "exec"), module.__dict__)
    plugins = get_plugin_manager(load_entrypoints=False, plugins=[module])
    assert plugins.errors == [] and "hello" in plugins.connectors
    with Host.open(tmp_path, store_url="", plugins=plugins) as host:
        host.connect("hello", "h1", {"api_key": "secret", "backfill_days": 1})
        run = sync_now(host, "h1")
        assert run.outcome == RunOutcome.SUCCEEDED
        assert host.store.count_rows("h1") == 25


def test_every_cli_command_is_in_the_readme_table() -> None:
    # The group imports its commands lazily (`cli.commands` stays empty): list them as `--help` does.
    names = cli.list_commands(click.Context(cli))
    assert {"status", "keys", "findings"} <= set(names)
    for name in names:
        assert f"| `{name}" in README, name


def test_the_findings_section_has_a_row_for_every_finding_kind_and_the_exit_table_its_code() -> None:
    section = README.split("## Finding shadow AI spend", 1)[1].split("\n## ", 1)[0]
    rows = {line.split(" | ")[0].strip("| `"): line for line in section.splitlines() if line.startswith("| `")}
    assert set(rows) == {kind.value for kind in FindingKind}
    for kind, severity in SEVERITY.items():
        assert rows[kind.value].endswith(f"| {severity.value} |"), f"{kind.value}: the default severity is {severity}"
    assert f"| {EXIT_FINDINGS} | `findings --fail-on SEVERITY`" in README


def test_the_readme_test_command_is_the_one_ci_runs() -> None:
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text(encoding="utf-8")
    assert "```bash\nbash scripts/test\n```" in README
    assert "exec bash scripts/test" in ci
