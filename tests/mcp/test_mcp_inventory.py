"""The shadow-IT tools, `keys`, `findings` and `overview`, asked through the MCP SDK's client of the server over the
home the fixture filled by real syncs: the same inventory, findings and totals the host gives `connector-host keys`,
`findings` and `report`, read-only.

The fal simulator's teams give every kind of trouble a fresh account has: a deleted key still billed, traffic on the
Admin key, web-UI spend by members; and ``fal-a`` and ``fal-b`` reach one team (an account connected twice).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from mcp import Client

from connector_sdk.mcp.server import build_server
from connector_sdk.models import FindingKind, Severity
from tests.mcp.mcp_client import Filled, session, text


def ask(filled: Filled, *calls: tuple[str, dict[str, Any]]) -> list[Any]:
    """Each call's result, asked of the server over the filled home (opened read-only)."""

    async def body(client: Client) -> list[Any]:
        return [await client.call_tool(name, arguments) for name, arguments in calls]

    with filled.host() as host:
        return session(build_server(host), body)


def answered(result: Any) -> dict[str, Any]:
    assert not result.is_error, text(result)
    assert text(result), "every answer has a text rendering"
    return result.structured_content


def test_keys_answers_the_inventory_the_host_keeps_with_where_each_key_stands(filled: Filled) -> None:
    with filled.host() as host:
        inventory = {(k.connection, k.key_id): k for k in host.keys(None)}
        ghost = next(k for k in inventory.values() if not k.listed and k.first_listed_at is None)
        named = next(k for k in inventory.values() if k.listed and k.scope == "api" and k.connection == "fal-c")
        history = host.key_history("fal-c", named.key_id)
    assert history, "a listed key has a history"

    everything, only_c, unlisted, by_name = ask(
        filled,
        ("keys", {}),
        ("keys", {"connection": "fal-c"}),
        ("keys", {"connection": ghost.connection, "key": ghost.key_id}),
        ("keys", {"connection": "fal-c", "key": named.name}),
    )

    lines = answered(everything)["keys"]
    assert {(k["connection"], k["key_id"]) for k in lines} == set(inventory)
    for line in lines:
        record = inventory[line["connection"], line["key_id"]]
        assert (Decimal(line["spend_7d"]), Decimal(line["spend_30d"])) == (record.spend_7d, record.spend_30d)
        assert isinstance(line["spend_30d"], str), "money is exact decimal text"
        assert (line["owner"], line["scope"], line["vendor"]) == (record.owner, record.scope, "fal.ai")
        expected = "listed" if record.listed else ("gone" if record.first_listed_at else "never listed")
        assert line["listing_status"] == expected
    assert [Decimal(k["spend_30d"]) for k in lines] == sorted((Decimal(k["spend_30d"]) for k in lines), reverse=True)
    assert {k["connection"] for k in answered(only_c)["keys"]} == {"fal-c"}

    assert [(k["key_id"], k["listing_status"]) for k in answered(unlisted)["keys"]] == [(ghost.key_id, "never listed")]
    assert ghost.name is not None and ghost.name in text(unlisted)
    asked = answered(by_name)
    assert [(k["key_id"], k["listing_status"]) for k in asked["keys"]] == [(named.key_id, "listed")]
    assert asked["history"] == [event.model_dump(mode="json") for event in history]


def test_findings_answers_the_open_findings_most_severe_first_and_narrows_by_kind_and_severity(
    filled: Filled,
) -> None:
    with filled.host() as host:
        expected = host.findings(None, open_only=True)
        everything_ever = host.findings(None, open_only=False)
    assert {f.kind for f in expected} >= {
        FindingKind.UNLISTED_KEY_SPEND,
        FindingKind.ADMIN_KEY_TRAFFIC,
        FindingKind.DUPLICATE_ACCOUNT,
    }, "the fixture's teams hold these"

    open_now, high, unlisted, with_resolved = ask(
        filled,
        ("findings", {}),
        ("findings", {"min_severity": "high"}),
        ("findings", {"kind": "unlisted_key_spend", "connection": "fal-c"}),
        ("findings", {"include_resolved": True}),
    )

    found = answered(open_now)
    assert [f["id"] for f in found["findings"]] == [f.id for f in expected]
    assert all(f["state"] == "open" for f in found["findings"])
    ranks = [Severity(f["severity"]).rank for f in found["findings"]]
    assert ranks == sorted(ranks, reverse=True)
    counts: dict[str, int] = {}
    for f in expected:
        counts[f.severity.value] = counts.get(f.severity.value, 0) + 1
    assert found["open_by_severity"] == counts
    first = found["findings"][0]
    assert first["evidence"] == expected[0].evidence and first["message"] in text(open_now)

    assert {f["id"] for f in answered(high)["findings"]} == {f.id for f in expected if f.severity == Severity.HIGH}
    narrowed = answered(unlisted)["findings"]
    assert narrowed and {(f["kind"], f["connection"]) for f in narrowed} == {("unlisted_key_spend", "fal-c")}
    assert len(answered(with_resolved)["findings"]) == len(everything_ever)


def test_overview_totals_are_the_spend_tools_and_the_reports_with_the_open_findings(filled: Filled) -> None:
    with filled.host() as host:
        _since, _until, lines = host.report(None, days=30)
        report_total = sum((line.cost for line in lines), Decimal(0))
        open_ids = [f.id for f in host.findings(None, open_only=True)]

    overview, spend = ask(filled, ("overview", {"days": 30}), ("spend", {"days": 30}))

    answer = answered(overview)
    (total,) = answer["totals"]
    assert (total["currency"], Decimal(total["cost"])) == ("USD", report_total)
    assert [Decimal(t["cost"]) for t in answered(spend)["totals"]] == [report_total]
    assert sum(Decimal(line["cost"]) for line in answer["by_vendor"]) == report_total
    assert sum(Decimal(line["cost"]) for line in answer["by_key"]) == report_total
    assert [f["id"] for f in answer["open_findings"]] == open_ids
    assert "open findings" in text(overview)


def test_bad_arguments_are_tool_errors_that_say_what_to_fix(filled: Filled) -> None:
    bad = [
        (("keys", {"connection": "no-such"}), "no connection named 'no-such'"),
        (("keys", {"vendor": "no-such-vendor"}), "no vendor 'no-such-vendor'"),
        (("keys", {"key": "no-such-key"}), "no key has the id or name 'no-such-key'"),
        (("findings", {"kind": "colour"}), "no finding kind 'colour'"),
        (("findings", {"min_severity": "urgent"}), "no severity 'urgent'"),
        (("findings", {"connection": "no-such"}), "no connection named 'no-such'"),
        (("overview", {"days": 0}), "between 1 and 3660"),
    ]

    results = ask(filled, *(call for call, _said in bad))

    for (call, said), result in zip(bad, results, strict=True):
        assert result.is_error, call
        assert said in text(result), (call, text(result))


def test_the_tools_are_read_only_and_their_schemas_name_what_the_faces_derive(filled: Filled) -> None:
    async def tools(client: Client) -> dict[str, Any]:
        return {tool.name: tool for tool in (await client.list_tools()).tools}

    with filled.host() as host:
        listed = session(build_server(host), tools)

    for name in ("keys", "findings", "overview"):
        assert listed[name].annotations.read_only_hint and not listed[name].annotations.destructive_hint
    key_line = listed["keys"].output_schema["$defs"]["KeyLine"]["properties"]
    assert {"listing_status", "spend_7d", "spend_30d", "owner", "scope", "vendor"} <= set(key_line)
    assert "state" in listed["findings"].output_schema["$defs"]["FindingLine"]["properties"]
    assert "open_findings" in listed["overview"].output_schema["properties"]
