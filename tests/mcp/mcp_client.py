"""The MCP SDK's own client, pointed at `connector-host mcp` on a test home."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from mcp import Client, StdioServerParameters

from connector_sdk.host import Host
from connectors.fal.simulator import FalSimulator
from tests.conftest import FAST_RETRIES, fal_plugins

T = TypeVar("T")
WEBHOOK_SECRET = "whsec-mcp-0123456789abcdef"


@dataclass
class Filled:
    """A home whose store holds synced connections, and every secret that must never show in an answer."""

    home: Path
    sim: FalSimulator
    secrets: list[str] = field(default_factory=list)

    def host(self) -> Host:
        return Host.open(self.home, plugins=fal_plugins(), read_only=True)


def server_env(home: Path, **extra: str) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("FAL_", "CONNECTOR_HOST_"))}
    return {**environment, "CONNECTOR_HOST_HOME": str(home), **FAST_RETRIES, **extra}


def stdio(home: Path) -> StdioServerParameters:
    """`python -m connector_sdk mcp` (what `connector-host mcp` runs) on ``home``, as a client launches it."""
    return StdioServerParameters(command=sys.executable, args=["-m", "connector_sdk", "mcp"], env=server_env(home))


def session(server: Any, body: Callable[[Client], Awaitable[T]]) -> T:
    """Run ``body`` with a connected client of ``server`` (stdio parameters, a URL, a transport or a server)."""

    async def run() -> T:
        async with Client(server) as client:
            return await body(client)

    return asyncio.run(run())


def text(result: Any) -> str:
    return "\n".join(block.text for block in result.content if getattr(block, "type", "") == "text")
