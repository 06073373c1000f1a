"""No answer of the MCP server carries a secret: not the connections' API keys, not a webhook secret, not the home's
encryption key, whatever the tools are asked (Hypothesis draws the secrets and the arguments)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from mcp import Client

from connector_sdk.host import Host
from connector_sdk.mcp.server import build_server
from tests.conftest import fal_plugins
from tests.mcp.mcp_client import Filled, session

PRINTABLE = st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_categories=("Cc", "Zs", "Zl", "Zp"))
# A marker no answer contains unless a secret leaks: Hypothesis also draws strings it finds in the code under test
# ("percent_discount"), which an answer may rightly contain.
SECRETS = st.text(PRINTABLE, min_size=16, max_size=40).map(lambda core: f"whsec~{core}")
NAMES = st.sampled_from(["fal-a", "fal-b", "fal-c", "User key", "alice", "fal", "Production Key"]) | st.text(
    PRINTABLE, max_size=30
)
PERIODS = st.fixed_dictionaries(
    {},
    optional={
        "days": st.integers(-5, 4000),
        "since": st.sampled_from(["2026-01-01", "2025-12-31T23:00:00Z"]) | st.text(max_size=20),
    },
)
FILTERS = st.fixed_dictionaries(
    {}, optional={name: NAMES for name in ("vendor", "connection", "key", "person", "model")}
)
CALLS = st.one_of(
    st.tuples(st.just("list_connections"), st.just({})),
    st.tuples(
        st.just("spend"),
        st.builds(
            lambda period, filters, group: {**period, **filters, "group_by": group},
            PERIODS,
            FILTERS,
            st.lists(st.sampled_from(["vendor", "connection", "key", "person", "model", "day", "secret"]), max_size=3),
        ),
    ),
    st.tuples(
        st.just("top_spenders"),
        st.builds(
            lambda period, by, n: {**period, "by": by, "n": n},
            PERIODS,
            st.sampled_from(["key", "person", "model", "account"]),
            st.integers(-1, 200),
        ),
    ),
    st.tuples(st.just("budget_status"), st.fixed_dictionaries({}, optional={"connection": NAMES})),
    st.tuples(st.just("keys"), st.fixed_dictionaries({}, optional={n: NAMES for n in ("vendor", "connection", "key")})),
    st.tuples(
        st.just("findings"),
        st.fixed_dictionaries(
            {},
            optional={
                "include_resolved": st.booleans(),
                "kind": st.sampled_from(["unlisted_key_spend", "admin_key_traffic", "web_ui_spend"]) | NAMES,
                "connection": NAMES,
                "min_severity": st.sampled_from(["info", "high"]) | NAMES,
            },
        ),
    ),
    st.tuples(st.just("overview"), st.fixed_dictionaries({}, optional={"days": st.integers(-5, 4000)})),
    st.tuples(
        st.just("usage_rows"),
        st.builds(
            lambda period, filters, limit: {**period, **filters, "limit": limit}, PERIODS, FILTERS, st.integers(-1, 300)
        ),
    ),
)


def everything_said(home: Path, calls: list[tuple[str, dict[str, Any]]]) -> str:
    """Every answer (text and structured), every resource and the tool list, as one text."""

    async def ask(client: Client) -> list[Any]:
        said: list[Any] = [tool.model_dump(mode="json") for tool in (await client.list_tools()).tools]
        for name, arguments in calls:
            result = await client.call_tool(name, arguments)
            said += [block.model_dump(mode="json") for block in result.content]
            said.append(result.structured_content)
        for resource in (await client.list_resources()).resources:
            said += [c.model_dump(mode="json") for c in (await client.read_resource(resource.uri)).contents]
        return said

    with Host.open(home, plugins=fal_plugins(), read_only=True) as host:
        said = session(build_server(host), ask)
    # Unescaped as well as JSON-escaped: a quote or backslash in a secret would hide in the JSON alone.
    return json.dumps(said) + "\n" + "\n".join(_strings(said))


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for key, item in value.items() for text in (key, *_strings(item))]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return [repr(value)]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(webhook_secret=SECRETS, calls=st.lists(CALLS, min_size=1, max_size=6))
def test_no_answer_carries_a_key_a_webhook_secret_or_the_encryption_key(
    filled: Filled, webhook_secret: str, calls: list[tuple[str, dict[str, Any]]]
) -> None:
    assume(len(set(webhook_secret)) >= 4)
    # A secret asked for by name is echoed rightly ("no connection named ..."), not leaked.
    assume(webhook_secret not in json.dumps(calls, ensure_ascii=False))
    with Host.open(filled.home, plugins=fal_plugins()) as host:
        sink = f"hook-{len(host.store.list_sinks('fal-c'))}"
        host.add_sink("fal-c", sink, "webhook", {"url": "http://127.0.0.1:9/hook", "secret": webhook_secret})

    said = everything_said(filled.home, calls)

    for secret in [*filled.secrets, webhook_secret]:
        assert secret not in said
