"""Prices and estimates from fal's pricing API: batches of 50, unknown ids isolated, answers cached briefly."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

from connector_sdk.host import Host
from connector_sdk.http import ApiClient
from connectors.fal.simulator import MODEL_CATALOGUE, FalSimulator
from tests.conftest import CliRunner

KNOWN = {endpoint: (unit, price) for endpoint, unit, price in MODEL_CATALOGUE}


def pricing_requests(sim: FalSimulator) -> list[dict]:
    return [r for r in sim.requests if r["path"].startswith("/v1/models/pricing") and r["method"] == "GET"]


def test_prices_come_in_batches_of_50_and_unknown_ids_are_bisected_away(
    host: Host, sim: FalSimulator, connect: Callable
) -> None:
    name = connect()
    unknown = [f"nobody/model-{i}" for i in range(5)]
    wanted = [*KNOWN, *unknown]
    assert len(wanted) > 50
    prices = host.prices(name, wanted)
    assert {p.model: (p.unit, p.unit_price) for p in prices} == KNOWN
    assert all(isinstance(p.unit_price, Decimal) for p in prices)
    asked = pricing_requests(sim)
    assert max(len(r["query"]["endpoint_id"]) for r in asked) == 50
    assert any(r["status"] == 404 for r in asked)


def test_prices_are_cached_for_ten_minutes(host: Host, sim: FalSimulator, connect: Callable) -> None:
    name = connect()
    host.prices(name, ["fal-ai/flux/dev"])
    before = len(pricing_requests(sim))
    host.prices(name, ["fal-ai/flux/dev"])
    assert len(pricing_requests(sim)) == before
    later = host.now() + timedelta(minutes=11)
    host.now = lambda: later
    host.prices(name, ["fal-ai/flux/dev"])
    assert len(pricing_requests(sim)) == before + 1


def test_an_estimate_is_exact_and_uses_the_read_only_post(host: Host, sim: FalSimulator, connect: Callable) -> None:
    name = connect()
    total, currency = host.estimate(name, {"fal-ai/flux/dev": Decimal(40), "fal-ai/flux-pro/v1.1": Decimal("2.5")})
    assert (total, currency) == (
        Decimal(40) * KNOWN["fal-ai/flux/dev"][1] + Decimal("2.5") * KNOWN["fal-ai/flux-pro/v1.1"][1],
        "USD",
    )
    assert [r["path"] for r in sim.requests if r["method"] == "POST"] == ["/v1/models/pricing/estimate"]


def test_decimals_in_request_bodies_are_exact_numbers() -> None:
    assert ApiClient.encode({"q": Decimal("0.1"), "n": [Decimal("12")]}) == b'{"q": 0.1, "n": [12]}'


def test_prices_estimate_and_report_from_the_cli(cli: CliRunner, sim: FalSimulator, admin_key: str) -> None:
    cli("connect", "fal", "--name", "p", "--base-url", sim.base_url, "--backfill-days", "1", env={"FAL_KEY": admin_key})
    listed = json.loads(cli("prices", "fal-ai/flux/dev", "nobody/x", "--format", "json").stdout)
    assert [p["model"] for p in listed["prices"]] == ["fal-ai/flux/dev"] and listed["unknown"] == ["nobody/x"]
    assert json.loads(cli("estimate", "fal-ai/flux/dev=100", "--format", "json").stdout)["total_cost"] == "2.5"
    assert cli("estimate", "fal-ai/flux/dev=lots").returncode == 2
    cli("sync", "p")
    report = json.loads(cli("report", "p", "--prices", "--format", "json").stdout)
    models = {m for line in report["lines"] for m in line["models"]}
    assert {p["model"] for p in report["prices"]} == models
