"""`connector-host mcp` over stdio, driven by the MCP SDK's own client: every tool answers what `report` and `rows`
read from the same store, bad arguments are tool errors, and nothing is written."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from typing import Any

from mcp import Client

from connector_sdk.budgets import month_start, next_month
from connector_sdk.models import iso
from tests.conftest import CliRunner
from tests.mcp.mcp_client import Filled, session, stdio, text

TOOLS = {"list_connections", "spend", "top_spenders", "budget_status", "usage_rows", "keys", "findings", "overview"}


def money(lines: list[dict[str, Any]], *fields: str) -> dict[tuple[Any, ...], Decimal]:
    return {tuple(line[f] for f in fields): Decimal(line["cost"]) for line in lines}


def test_every_tool_answers_what_report_and_rows_read_from_the_same_store(filled: Filled) -> None:
    database = filled.home / "connector-host.db"
    before = database.read_bytes()
    with filled.host() as host:
        since, until, report_lines = host.report(None, days=30)
        shared = host.shared_accounts()
        counted = [c.name for c in host.store.list_connections() if c.name not in shared[0].merged]
        day_since = until - timedelta(days=1)
        window = {"since": iso(since), "until": iso(until)}
        by_model: dict[str, Decimal] = {}
        for row in host.store.iter_rows("fal-c", since=since, until=until):
            by_model[row.model] = by_model.get(row.model, Decimal(0)) + row.cost
        daily = host.store.daily_spend("fal-a", since=since, until=until, currency="USD")
        page, _total = host.store.rows_page("fal-c", since=since, until=until, limit=5)
        ranked: dict[str, list[Decimal]] = {}
        for name in counted:
            for start, end, slot in ((day_since, until, 0), (day_since - timedelta(days=1), day_since, 1)):
                for row in host.store.iter_rows(name, since=start, until=end):
                    ranked.setdefault(row.model, [Decimal(0), Decimal(0)])[slot] += row.cost
        month = month_start(host.now())
        budget_spent = sum(
            host.store.daily_spend("fal-a", since=month, until=next_month(month), currency="USD").values(), Decimal(0)
        )
        manifest = host.plugins.connector("fal").manifest().model_dump(mode="json")

    async def ask(client: Client) -> dict[str, Any]:
        tools = await client.list_tools()
        answers: dict[str, Any] = {"tools": tools.tools}
        calls = {
            "connections": ("list_connections", {}),
            "by_key": ("spend", {"days": 30, "group_by": ["key"]}),
            "by_model": ("spend", {**window, "connection": "fal-c", "group_by": ["model"]}),
            "by_day": ("spend", {**window, "connection": "fal-a", "group_by": ["day"]}),
            "top": ("top_spenders", {"by": "model", "n": 3, "since": iso(day_since), "until": iso(until)}),
            "budgets": ("budget_status", {}),
            "rows": ("usage_rows", {**window, "connection": "fal-c", "limit": 5}),
            "capped": ("usage_rows", {**window, "limit": 1000}),
        }
        for label, (tool, arguments) in calls.items():
            result = await client.call_tool(tool, arguments)
            assert not result.is_error, text(result)
            assert text(result), f"{tool} gave no text rendering"
            answers[label] = result.structured_content
        resources = await client.list_resources()
        answers["resources"] = {str(r.uri) for r in resources.resources}
        answers["guide"] = (await client.read_resource("connector-host://guide")).contents[0].text
        answers["manifest"] = (await client.read_resource("connector-host://manifests/fal")).contents[0].text
        return answers

    answers = session(stdio(filled.home), ask)

    assert {tool.name for tool in answers["tools"]} == TOOLS
    assert all(tool.annotations.read_only_hint and tool.output_schema for tool in answers["tools"])

    connections = {c["name"]: c for c in answers["connections"]["connections"]}
    assert set(connections) == {"fal-a", "fal-b", "fal-c"}
    assert {name for name, c in connections.items() if not c["counted_in_totals"]} == set(shared[0].merged)
    assert all(c["state"] == "connected" and c["vendor"] == manifest["vendor"] for c in connections.values())
    assert {c["account"] for c in connections.values()} == {"acme-ai", "other-team"}

    by_key = answers["by_key"]
    expected = {(line.api_key_label, line.currency): line.cost for line in report_lines}
    assert {(line["group"]["key"], line["currency"]): Decimal(line["cost"]) for line in by_key["lines"]} == expected
    assert money(by_key["totals"], "currency") == {("USD",): sum(expected.values(), Decimal(0))}
    assert sorted(by_key["connections"]) == sorted(counted)

    assert {line["group"]["model"]: Decimal(line["cost"]) for line in answers["by_model"]["lines"]} == by_model
    assert {line["group"]["day"]: Decimal(line["cost"]) for line in answers["by_day"]["lines"]} == daily

    top = answers["top"]["spenders"]
    best = sorted(ranked.items(), key=lambda item: -item[1][0])[:3]
    assert [(s["name"], Decimal(s["cost"]), Decimal(s["previous_cost"])) for s in top] == [
        (model, now, then) for model, (now, then) in best
    ]

    (budget,) = answers["budgets"]["budgets"]
    assert (budget["connection"], Decimal(budget["spent"]), budget["currency"]) == ("fal-a", budget_spent, "USD")

    rows = answers["rows"]
    assert rows["rows"] == [{**row.export(), "kind": row.kind} for row in page]
    assert rows["more"] is True and rows["capped"] is False
    capped = answers["capped"]
    assert (len(capped["rows"]), capped["cap"], capped["capped"], capped["more"]) == (200, 200, True, True)

    installed = {"fal", "openai", "anthropic"}
    assert answers["resources"] == {"connector-host://guide"} | {f"connector-host://manifests/{c}" for c in installed}
    assert "User key" in answers["guide"] and "usage" in answers["guide"]
    assert json.loads(answers["manifest"]) == manifest
    assert database.read_bytes() == before, "the MCP server wrote to the store"
    said = json.dumps(answers, default=str)
    assert not [secret for secret in filled.secrets if secret in said]


BAD = [
    ("spend", {"connection": "no-such"}, "no connection named 'no-such'"),
    ("usage_rows", {"connection": "no-such"}, "no connection named 'no-such'"),
    ("budget_status", {"connection": "no-such"}, "no connection named 'no-such'"),
    ("top_spenders", {"vendor": "no-such-vendor"}, "no vendor 'no-such-vendor'"),
    ("spend", {"since": "2026-03-02", "until": "2026-03-01"}, "must be before until"),
    ("spend", {"since": "1900-01-01", "until": "2026-01-01"}, "at most 3660 days"),
    ("top_spenders", {"days": 100000}, "between 1 and 3660"),
    ("spend", {"days": 0}, "between 1 and 3660"),
    ("spend", {"since": "last tuesday"}, "not an ISO 8601 date"),
    ("spend", {"days": 3, "since": "2026-01-01"}, "either days or since/until"),
    ("spend", {"group_by": ["colour"]}, "group_by"),
    ("top_spenders", {"by": "colour"}, "by"),
    ("top_spenders", {"n": 0}, "n must be between 1 and 100"),
    ("usage_rows", {"limit": 0}, "limit 1 or more"),
    ("usage_rows", {"offset": -1}, "offset must be 0 or more"),
    ("spend", {"group_by": "key"}, "group_by"),
    ("no_such_tool", {}, "no_such_tool"),
]


def test_bad_arguments_answer_a_readable_tool_error_and_the_server_goes_on(filled: Filled) -> None:
    async def ask(client: Client) -> tuple[list[tuple[bool, str]], bool]:
        results = []
        for tool, arguments, _said in BAD:
            result = await client.call_tool(tool, arguments)
            results.append((bool(result.is_error), text(result)))
        after = await client.call_tool("list_connections", {})
        return results, bool(after.is_error)

    results, broken_after = session(stdio(filled.home), ask)
    for (tool, arguments, said), (is_error, message) in zip(BAD, results, strict=True):
        assert is_error, f"{tool}({arguments}) was answered: {message}"
        assert said in message, f"{tool}({arguments}): {message}"
        assert "Traceback" not in message
    assert not broken_after


def test_a_home_without_a_store_is_one_line_and_exit_2(cli: CliRunner) -> None:
    result = cli("mcp")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: no store in") and "Traceback" not in result.stderr


def test_the_admin_token_is_never_taken_on_the_command_line(cli: CliRunner) -> None:
    result = cli("mcp", "--http", "--admin-token", "a-token-on-argv-0123456789")
    assert result.returncode == 2
    assert "not taken on the command line" in result.stderr


def test_serving_beyond_loopback_without_a_token_is_refused(cli: CliRunner) -> None:
    result = cli("mcp", "--http", "--host", "0.0.0.0")
    assert result.returncode == 2
    assert "needs an admin token" in result.stderr


def test_without_the_mcp_extra_the_command_says_how_to_install_it() -> None:
    hide_the_sdk = "import sys; sys.modules['mcp'] = None; from connector_sdk.cli import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", hide_the_sdk, "mcp"], capture_output=True, text=True, timeout=90, check=False
    )
    assert result.returncode == 2
    assert "pip install 'connector-host[mcp]'" in result.stderr
