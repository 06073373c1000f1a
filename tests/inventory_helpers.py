"""What the key-inventory tests share: the simulators' control plane over HTTP, listed keys by name, and a listener
that records every finding event."""

from __future__ import annotations

from typing import Any

import requests

from connector_sdk import hookimpl
from connector_sdk.kit.simulator import Simulator
from connector_sdk.models import Connection, Finding, ListedKey


def control(sim: Simulator, method: str, path: str, **body: Any) -> requests.Response:
    """A call to the simulator's control plane (``/_sim``), as a test in another process would make it."""
    return requests.request(method, f"{sim.root_url}/_sim{path}", json=body or None, timeout=10)


def described(sim: Simulator) -> dict[str, Any]:
    """The simulator's one account, as its control plane describes it."""
    [account] = control(sim, "GET", "").json()["accounts"]
    return account


def by_name(keys: list[ListedKey]) -> dict[str, ListedKey]:
    return {key.name or key.key_id: key for key in keys}


class FindingRecorder:
    """Listens to the finding event: ``(connection, kind, subject, change)`` of each, in order."""

    __name__ = "finding_recorder"

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, str]] = []

    @hookimpl
    def connector_sdk_finding(self, connection: Connection, finding: Finding, change: str) -> None:
        assert connection.name == finding.connection
        self.events.append((connection.name, finding.kind.value, finding.subject, change))
