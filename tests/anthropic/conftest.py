"""An Anthropic simulator with one organization, and connectors pointed at it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from connector_sdk.http import RetryPolicy
from connectors.anthropic.config import AnthropicConfig
from connectors.anthropic.connector import AnthropicConnector
from connectors.anthropic.simulator import AnthropicSimulator

NOW = datetime(2026, 3, 10, 14, 30, tzinfo=UTC)
ORG = "Acme Research"


@pytest.fixture
def sim() -> Iterator[AnthropicSimulator]:
    # Small pages, so that every listing and every report is followed over several pages.
    with AnthropicSimulator(now=NOW, history_days=20, seed=7, max_list_limit=2, max_buckets=30) as simulator:
        yield simulator


@pytest.fixture
def admin_key(sim: AnthropicSimulator) -> str:
    return sim.add_organization(ORG)


@pytest.fixture
def make_connector(sim: AnthropicSimulator) -> Iterator[Callable[[str], AnthropicConnector]]:
    made: list[AnthropicConnector] = []

    def make(key: str) -> AnthropicConnector:
        config = AnthropicConfig(api_key=key, base_url=sim.base_url, timeout_seconds=10)
        connector = AnthropicConnector(config, retry=RetryPolicy(max_attempts=3, backoff_base=0.0))
        made.append(connector)
        return connector

    yield make
    for connector in made:
        connector.close()
