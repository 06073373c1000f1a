"""A home filled by real syncs against the fal simulator, and the SDK's own MCP client driving `connector-host mcp`.

Three connections: ``fal-a`` and ``fal-b`` reach the same fal team (so it must be counted once), ``fal-c`` another
team. A budget and a webhook sink (with its secret) are set, so every tool has something to say and something to hide.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from connector_sdk.host import Host
from connector_sdk.models import floor_hour, utcnow
from connector_sdk.sync import sync_now
from connectors.fal.simulator import FalSimulator
from tests.conftest import fal_plugins
from tests.mcp.mcp_client import WEBHOOK_SECRET, Filled


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Filled]:
    home = tmp_path_factory.mktemp("mcp") / "home"
    with FalSimulator(now=floor_hour(utcnow()), seed=11, page_size=50) as sim:
        first = sim.add_account("acme-ai", n_keys=3, n_models=5)
        second = sim.issue_key("acme-ai")
        other = sim.add_account("other-team", n_keys=2, n_models=3, seed=5)
        with Host.open(home, plugins=fal_plugins()) as host:
            for name, key in (("fal-a", first), ("fal-b", second), ("fal-c", other)):
                host.connect("fal", name, {"api_key": key, "base_url": sim.base_url, "backfill_days": 3})
                sync_now(host, name)
            host.store.add_budget(
                "fal-a",
                monthly_amount=Decimal(50),
                currency="USD",
                thresholds=[50, 80, 100],
                anomaly=False,
                api_key_label=None,
                model=None,
                now=host.now(),
            )
            host.add_sink("fal-a", "hook", "webhook", {"url": "http://127.0.0.1:9/hook", "secret": WEBHOOK_SECRET})
        secrets = [key.partition(":")[2] for key in (first, second, other)]
        secrets += [WEBHOOK_SECRET, (home / "secret.key").read_text().strip()]
        yield Filled(home=home, sim=sim, secrets=secrets)
