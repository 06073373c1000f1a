"""The README's promises hold: its plugin example works and its command table matches the CLI."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

from connector_sdk.cli import cli
from connector_sdk.host import Host
from connector_sdk.models import RunOutcome
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
    for name in cli.commands:
        assert f"| `{name}" in README, name


def test_the_readme_test_command_is_the_one_ci_runs() -> None:
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text(encoding="utf-8")
    assert "```bash\nbash scripts/test\n```" in README
    assert "exec bash scripts/test" in ci
