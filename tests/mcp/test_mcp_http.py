"""`connector-host mcp --http`: the streamable HTTP transport, with the rules of `serve`. On loopback without a token
it answers only requests addressed to this machine; with an admin token, only requests that bring it."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import httpx
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import CliRunner
from tests.mcp.mcp_client import Filled, server_env, session, text

TOKEN = "mcp-admin-token-0123456789abcdef"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "probe", "version": "1"}},
}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serving(home: Path, *args: str, **env: str) -> Iterator[str]:
    """`python -m connector_sdk mcp --http` on a free port until the block ends; yields its URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "connector_sdk", "mcp", "--http", "--port", str(port), *args],
        env=server_env(home, **env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _attempt in range(600):  # up to a minute on a loaded machine; a dead process ends the wait at once
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0, "the MCP server did not stop cleanly on SIGTERM"


def test_on_loopback_the_tools_answer_and_a_request_for_another_host_name_is_refused(filled: Filled) -> None:
    with filled.host() as host:
        _since, _until, lines = host.report(None, days=30)

    async def ask(client: Client) -> dict[str, object]:
        result = await client.call_tool("spend", {"days": 30, "group_by": ["key"]})
        assert not result.is_error, text(result)
        return result.structured_content or {}

    with serving(filled.home) as url:
        answer = session(url, ask)
        port = url.split(":")[2].split("/")[0]
        rebound = httpx.post(url, json=INITIALIZE, headers={**ACCEPT, "Host": f"evil.example:{port}"})
        unauthenticated_is_fine = httpx.post(url, json=INITIALIZE, headers=ACCEPT)

    spent = {(line["group"]["key"], line["currency"]): Decimal(line["cost"]) for line in answer["lines"]}  # type: ignore[index]
    assert spent == {(line.api_key_label, line.currency): line.cost for line in lines}
    assert rebound.status_code == 400 and "localhost" in rebound.text
    assert unauthenticated_is_fine.status_code == 200


def test_with_an_admin_token_a_request_without_it_is_refused_and_one_with_it_answered(
    filled: Filled, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")

    async def ask(url: str) -> str:
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as http,
            Client(streamable_http_client(url, http_client=http)) as client,
        ):
            result = await client.call_tool("list_connections", {})
            assert not result.is_error, text(result)
            return json.dumps(result.structured_content)

    with serving(filled.home, "--admin-token-file", str(token_file)) as url:
        missing = httpx.post(url, json=INITIALIZE, headers=ACCEPT)
        wrong = httpx.post(url, json=INITIALIZE, headers={**ACCEPT, "Authorization": "Bearer not-the-token-at-all"})
        listed = asyncio.run(ask(url))

    assert missing.status_code == 401 and "Bearer" in missing.headers["www-authenticate"]
    assert wrong.status_code == 401
    assert "fal-a" in listed and TOKEN not in listed


def test_a_short_admin_token_is_refused(cli: CliRunner) -> None:
    result = cli("mcp", "--http", env={"CONNECTOR_HOST_ADMIN_TOKEN": "short"})
    assert result.returncode == 2
    assert "at least 16 characters" in result.stderr
