"""Each finding's scenario, driven through the simulators' control planes over HTTP as a person with ``curl`` would:
keys issued, deleted and changed with ``/_sim/keys``, traffic started and stopped with ``/_sim/traffic``, time moved
with ``PUT /_sim/now`` (and the host's clock with it). Real syncs against fal's, OpenAI's and Anthropic's simulators
on loopback write a real SQLite store.

Every scenario starts from an account with nothing to find (its vendor's built-in shadow IT stopped long ago through
the same control plane), opens exactly one finding with its evidence (spend equal to the sum of the rows, the dates,
the owner, the listing it came from), keeps it open and quiet on the next sync while the condition holds, and resolves
it when the condition clears. The ``connector_sdk_finding`` hook fires once for each change.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

import connector_sdk.sinks
import connectors.anthropic
import connectors.fal
import connectors.openai
from connector_sdk.host import Host
from connector_sdk.kit.simulator import Simulator
from connector_sdk.models import (
    Finding,
    FindingKind,
    KeyRecord,
    RunOutcome,
    Severity,
    UsageRow,
    floor_hour,
    iso,
)
from connector_sdk.plugins import get_plugin_manager
from connector_sdk.sync import sync_now
from connectors.anthropic.simulator import AnthropicSimulator
from connectors.fal.simulator import FalSimulator
from connectors.openai.simulator import OpenAISimulator
from tests.inventory_helpers import FindingRecorder

NOW = datetime(2026, 3, 10, 14, tzinfo=UTC)
LONG_AGO = NOW - timedelta(days=60)
TEAM = "acme-ai"
ORGANIZATION = "Acme Research"
LAB = "Acme Labs"
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


class ControlPlane:
    """A simulator's ``/_sim`` control plane, over HTTP."""

    def __init__(self, simulator: Simulator) -> None:
        self.http = httpx.Client(base_url=f"{simulator.root_url}/_sim", timeout=10)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        answer = self.http.request(method, path, json=body)
        assert answer.status_code in (200, 201), f"{method} /_sim{path}: {answer.status_code} {answer.text}"
        return answer.json()

    def account(self) -> dict[str, Any]:
        (account,) = self.call("GET", "/")["accounts"]
        return account

    def issue_key(self, account: str, **options: Any) -> tuple[str, str]:
        """A new key's id and what a client sends."""
        issued = self.call("POST", "/keys", {"account": account, **_json(options)})
        return issued["key_id"], issued["key"]

    def delete_key(self, key_id: str) -> None:
        self.call("DELETE", f"/keys/{key_id}")

    def update_key(self, key_id: str, **fields: Any) -> None:
        self.call("PATCH", f"/keys/{key_id}", _json(fields))

    def add_traffic(self, account: str, **fields: Any) -> None:
        self.call("POST", "/traffic", {"account": account, **_json(fields)})

    def stop_traffic(self, account: str, **fields: Any) -> None:
        self.call("POST", "/traffic/stop", {"account": account, **_json(fields)})

    def set_now(self, moment: datetime) -> None:
        assert self.call("PUT", "/now", {"now": moment.isoformat()})["now"] == moment.isoformat()


def _json(fields: dict[str, Any]) -> dict[str, Any]:
    return {name: value.isoformat() if isinstance(value, datetime) else value for name, value in fields.items()}


@dataclass
class Vendor:
    """A simulator serving one account, its control plane and the Admin key a connection uses."""

    simulator: Simulator
    plane: ControlPlane
    admin_key: str


@dataclass
class World:
    host: Host
    clock: list[datetime]
    recorder: FindingRecorder
    stack: ExitStack
    planes: list[ControlPlane] = field(default_factory=list)

    @property
    def now(self) -> datetime:
        return self.clock[0]

    def serve(self, simulator: Simulator) -> ControlPlane:
        self.stack.enter_context(simulator)
        plane = ControlPlane(simulator)
        self.stack.callback(plane.http.close)
        self.planes.append(plane)
        return plane

    def connect(self, connector: str, name: str, vendor: Vendor, backfill_days: int = 2) -> str:
        config = {"api_key": vendor.admin_key, "base_url": vendor.simulator.base_url, "backfill_days": backfill_days}
        self.host.connect(connector, name, config)
        return name

    def advance(self, hours: float = 0, *, days: float = 0) -> None:
        """Time passes, for the host and, through their control planes, for every simulator."""
        self.advance_to(self.now + timedelta(hours=hours, days=days))

    def advance_to(self, moment: datetime) -> None:
        assert moment >= self.now, "time only moves on"
        self.clock[0] = moment
        for plane in self.planes:
            plane.set_now(moment)

    def sync(self, *names: str) -> None:
        for name in names:
            assert sync_now(self.host, name).outcome == RunOutcome.SUCCEEDED

    def opened(self) -> list[Finding]:
        """Every open finding, of every connection."""
        return self.host.findings(None, open_only=True)

    def events(self, kind: FindingKind | None = None) -> list[tuple[str, str, str, str]]:
        return [event for event in self.recorder.events if kind is None or event[1] == kind.value]

    def key(self, name: str, key_id: str) -> KeyRecord:
        return next(key for key in self.host.keys(name) if key.key_id == key_id)

    def rows(self, name: str, *, days: int, key_id: str | None = None, person: str | None = None) -> list[UsageRow]:
        """The billed rows of a key (or of a person's web-UI use) over the last ``days`` to the current hour's end."""
        until = floor_hour(self.now) + HOUR
        return [
            row
            for row in self.host.store.iter_rows(name, since=until - days * DAY, until=until)
            if row.kind == "cost"
            and row.cost is not None
            and (
                (key_id is not None and row.api_key_id == key_id)
                or (person is not None and row.api_key_id is None and row.login_username == person)
            )
        ]

    def billed(self, name: str, *, days: int, key_id: str | None = None, person: str | None = None) -> Decimal:
        """What those rows cost, summed here."""
        return sum(
            (row.cost or Decimal(0) for row in self.rows(name, days=days, key_id=key_id, person=person)), Decimal(0)
        )

    def last_row(self, name: str, *, key_id: str | None = None, person: str | None = None) -> datetime:
        """The start of the last hour a billed row of the key (or the person) covers."""
        return max(row.period_start for row in self.rows(name, days=90, key_id=key_id, person=person))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    clock = [NOW]
    recorder = FindingRecorder()
    plugins = get_plugin_manager(
        load_entrypoints=False,
        plugins=[connectors.fal, connectors.openai, connectors.anthropic, connector_sdk.sinks, recorder],
    )
    with ExitStack() as stack:
        host = stack.enter_context(
            Host.open(
                tmp_path / "home",
                store_url=f"sqlite:///{tmp_path / 'store.db'}",
                plugins=plugins,
                clock=lambda: clock[0],
            )
        )
        yield World(host, clock, recorder, stack)


@pytest.fixture
def fal(world: World) -> Vendor:
    """A fal team whose only traffic is its two listed API keys', on one model: a model new to a key (a spike) is
    another scenario."""
    simulator = FalSimulator(now=NOW, seed=7, page_size=200, max_page_size=200)
    plane = world.serve(simulator)
    admin_key = simulator.add_account(TEAM, n_keys=2, n_models=1, user_traffic=False)
    team = plane.account()
    listed = {key["key_id"] for key in team["keys"] if key["scope"] == "API"}
    for source in team["traffic"]:
        if source["key_id"] not in listed:  # the Admin key's own traffic, and the deleted "Old Pipeline Key"'s
            plane.stop_traffic(TEAM, key_id=source["key_id"], at=LONG_AGO)
    return Vendor(simulator, plane, admin_key)


@pytest.fixture
def openai(world: World) -> Vendor:
    """An OpenAI organization with no Playground use, its deleted key quiet, every owner with access, and its Admin
    key just used."""
    simulator = OpenAISimulator(now=NOW, history_days=40, seed=7)
    plane = world.serve(simulator)
    admin_key = simulator.add_organization(ORGANIZATION, user_traffic=False)
    keys = {key["name"]: key["key_id"] for key in plane.account()["keys"]}
    plane.stop_traffic(ORGANIZATION, key_id=keys["Notebook key"], at=LONG_AGO)
    plane.update_key(keys["Staging"], owner_project_access="active")
    plane.update_key(keys["Spend reader"], last_used_at=NOW)
    return Vendor(simulator, plane, admin_key)


@pytest.fixture
def anthropic(world: World, monkeypatch: pytest.MonkeyPatch) -> Vendor:
    """An Anthropic organization whose deleted key is quiet; its Workbench use over a two-day backfill stays under
    a web-UI threshold of 100 (a scenario about the Workbench lowers it)."""
    monkeypatch.setenv("CONNECTOR_HOST_WEB_UI_THRESHOLD", "100")
    simulator = AnthropicSimulator(now=NOW, seed=7)
    plane = world.serve(simulator)
    admin_key = simulator.add_organization(LAB)
    deleted = next(key["id"] for key in plane.account()["api_keys"] if not key["listed"])
    plane.stop_traffic(LAB, key_id=deleted, at=LONG_AGO)
    return Vendor(simulator, plane, admin_key)


# -- what every scenario checks --------------------------------------------------------------------------------
def nothing_to_find(world: World) -> None:
    assert world.opened() == [] and world.events() == []


def the_one(world: World, kind: FindingKind, subject: str, connection: str) -> Finding:
    """The only open finding, just opened: of ``kind`` about ``subject`` on ``connection``, announced once."""
    (finding,) = world.opened()
    assert (finding.kind, finding.subject, finding.connection) == (kind, subject, connection)
    assert finding.opened_at == world.now and finding.resolved_at is None
    assert world.events() == [(connection, kind.value, subject, "opened")]
    return finding


def holds(world: World, finding: Finding, *, hours: float = 1) -> Finding:
    """Time passes, the condition holds: the next sync keeps the same finding open, and says nothing."""
    world.advance(hours)
    world.sync(finding.connection)
    (still,) = world.opened()
    assert (still.id, still.opened_at, still.kind, still.subject) == (
        finding.id,
        finding.opened_at,
        finding.kind,
        finding.subject,
    )
    assert world.events() == [(finding.connection, finding.kind.value, finding.subject, "opened")], "never twice"
    return still


def resolved(world: World, finding: Finding) -> None:
    """The sync just made found the condition cleared: the finding resolved now, announced once, nothing open."""
    assert world.opened() == []
    (closed,) = world.host.findings(None, open_only=False, kind=finding.kind)
    assert (closed.id, closed.resolved_at) == (finding.id, world.now)
    assert world.events() == [
        (finding.connection, finding.kind.value, finding.subject, "opened"),
        (finding.connection, finding.kind.value, finding.subject, "resolved"),
    ]


# -- fal -------------------------------------------------------------------------------------------------------
def test_fal_a_key_deleted_while_it_keeps_spending_is_high_until_its_spend_stops(world: World, fal: Vendor) -> None:
    batch, _secret = fal.plane.issue_key(TEAM, scope="API", alias="Batch Job", creator="erin", created_at=LONG_AGO)
    fal.plane.add_traffic(TEAM, key_id=batch, scale=3)
    world.sync(world.connect("fal", "fal", fal))
    nothing_to_find(world)  # listed and spending is fine

    fal.plane.delete_key(batch)  # fal lists it no more; whoever holds it goes on calling models
    world.advance(2)
    world.sync("fal")

    finding = the_one(world, FindingKind.UNLISTED_KEY_SPEND, batch, "fal")
    key = world.key("fal", batch)
    assert key.gone_at == world.now and key.last_listed_at == NOW, "gone from the listing made after NOW's"
    assert key.last_usage_at == world.last_row("fal", key_id=batch) > NOW, "and billed since"
    assert (finding.severity, finding.subject_label) == (Severity.HIGH, "Batch Job")
    evidence = finding.evidence
    assert (Decimal(evidence["spend_7d"]), evidence["currency"]) == (world.billed("fal", days=7, key_id=batch), "USD")
    assert Decimal(evidence["spend_7d"]) > 0
    assert (evidence["gone_at"], evidence["last_listed_at"], evidence["last_listing_at"]) == (
        iso(world.now),
        iso(NOW),
        iso(world.now),
    )
    assert (evidence["owner"], evidence["listing"], evidence["created_at"]) == ("erin", "fal /keys", iso(LONG_AGO))
    assert f"left fal's key listing on {world.now:%Y-%m-%d}" in finding.message
    finding = holds(world, finding)
    assert Decimal(finding.evidence["spend_7d"]) == world.billed("fal", days=7, key_id=batch), "evidence kept current"

    fal.plane.stop_traffic(TEAM, key_id=batch, at=world.now)
    world.advance(1)
    world.sync("fal")
    last = world.last_row("fal", key_id=batch)
    world.advance_to(last + 7 * DAY - HOUR)
    world.sync("fal")
    (still,) = world.opened()
    assert (still.id, Decimal(still.evidence["spend_7d"])) == (finding.id, world.billed("fal", days=7, key_id=batch))
    assert Decimal(still.evidence["spend_7d"]) > 0, "billed in the week's first hour"
    world.advance(1)
    world.sync("fal")

    resolved(world, finding)
    assert [event.event for event in world.host.key_history("fal", batch)] == ["listed", "gone"]


def test_fal_a_new_key_is_info_with_its_creator_and_scope_until_acknowledged(world: World, fal: Vendor) -> None:
    world.sync(world.connect("fal", "fal", fal))
    nothing_to_find(world)

    world.advance(1)
    notebook, _secret = fal.plane.issue_key(TEAM, scope="API", alias="Notebook", creator="dana")
    world.advance(1)
    world.sync("fal")

    finding = the_one(world, FindingKind.NEW_KEY, notebook, "fal")
    assert (finding.severity, finding.subject_label) == (Severity.INFO, "Notebook")
    evidence = finding.evidence
    assert (evidence["owner"], evidence["owner_email"], evidence["scope"], evidence["listing"]) == (
        "dana",
        f"dana@{TEAM}.example.com",
        "api",
        "fal /keys",
    )
    assert (evidence["created_at"], evidence["first_listed_at"]) == (iso(NOW + HOUR), iso(world.now))
    assert "owned by dana with api scope" in finding.message
    finding = holds(world, finding)

    world.host.acknowledge_finding(finding.id or 0, "Dana's notebook, approved")

    resolved(world, finding)
    world.advance(1)
    world.sync("fal")
    assert world.opened() == [] and [e[3] for e in world.events()] == ["opened", "resolved"], "news once"


def test_fal_an_idle_key_is_found_from_its_rows_and_resolves_once_it_is_used_again(world: World, fal: Vendor) -> None:
    spare, _secret = fal.plane.issue_key(TEAM, scope="API", alias="Spare Key", creator="ann", created_at=LONG_AGO)
    fal.plane.add_traffic(TEAM, key_id=spare)
    fal.plane.stop_traffic(TEAM, key_id=spare, at=NOW)
    world.sync(world.connect("fal", "fal", fal))
    nothing_to_find(world)  # used today
    last_use = world.key("fal", spare).last_usage_at
    assert last_use == world.last_row("fal", key_id=spare) > NOW - DAY

    world.advance_to(last_use + 30 * DAY - HOUR)  # fal never says when a key was last used: 30 days without a row do
    world.sync("fal")
    assert world.opened() == [], "not quite 30 days"
    world.advance(1)
    world.sync("fal")

    finding = the_one(world, FindingKind.IDLE_KEY, spare, "fal")
    assert (finding.severity, finding.subject_label) == (Severity.LOW, "Spare Key")
    evidence = finding.evidence
    assert (evidence["last_used_at"], evidence["last_used_from"], evidence["idle_days"]) == (
        iso(last_use),
        "rows",
        30,
    )
    assert (evidence["owner"], evidence["listing"], evidence["status"]) == ("ann", "fal /keys", "active")
    assert world.billed("fal", days=30, key_id=spare) == 0
    finding = holds(world, finding)

    fal.plane.add_traffic(TEAM, key_id=spare, since=world.now)  # someone needed it after all
    world.advance(1)
    world.sync("fal")

    resolved(world, finding)
    assert world.key("fal", spare).last_usage_at == world.last_row("fal", key_id=spare) == world.now - HOUR


def test_fal_web_ui_spend_names_the_person_until_a_month_passes_without_it(world: World, fal: Vendor) -> None:
    world.sync(world.connect("fal", "fal", fal))
    nothing_to_find(world)

    fal.plane.add_traffic(TEAM, login="carol", since=world.now, scale=40)  # carol works in fal's web UI
    world.advance(6)
    world.sync("fal")

    finding = the_one(world, FindingKind.WEB_UI_SPEND, "carol", "fal")
    spent = world.billed("fal", days=30, person="carol")
    assert (finding.severity, Decimal(finding.evidence["spend_30d"]), finding.evidence["currency"]) == (
        Severity.MEDIUM,
        spent,
        "USD",
    )
    assert spent > 10 and finding.evidence["threshold"] == "10"
    assert finding.evidence["since"] == iso(world.now - 30 * DAY)
    assert finding.message.startswith(f"carol spent {spent:,.2f} USD in fal's web UI")
    finding = holds(world, finding)

    fal.plane.stop_traffic(TEAM, login="carol", at=world.now)
    world.advance(1)
    world.sync("fal")
    world.advance_to(world.last_row("fal", person="carol") + 30 * DAY - HOUR)
    world.sync("fal")
    assert [f.id for f in world.opened()] == [finding.id], "her last hour is still within the 30 days"
    world.advance(1)
    world.sync("fal")

    resolved(world, finding)


def test_fal_an_admin_keys_own_traffic_is_high_until_a_week_without_it(world: World, fal: Vendor) -> None:
    admin, secret = fal.plane.issue_key(TEAM, scope="ADMIN", alias="Ops Admin", creator="frank")
    world.sync(world.connect("fal", "fal", Vendor(fal.simulator, fal.plane, secret)))
    nothing_to_find(world)  # the connection's own key, listed as admin, quiet

    fal.plane.add_traffic(TEAM, key_id=admin, since=world.now)  # someone calls models with it
    world.advance(3)
    world.sync("fal")

    finding = the_one(world, FindingKind.ADMIN_KEY_TRAFFIC, admin, "fal")
    assert finding.severity == Severity.HIGH
    evidence = finding.evidence
    assert (evidence["scope"], evidence["listing"]) == ("admin", "the connection's own Admin key")
    assert Decimal(evidence["spend_7d"]) == world.billed("fal", days=7, key_id=admin) > 0
    rows = world.rows("fal", days=7, key_id=admin)
    assert (evidence["first_usage_at"], evidence["last_usage_at"]) == (
        iso(min(row.period_start for row in rows)),
        iso(max(row.period_start for row in rows)),
    )
    assert min(row.period_start for row in rows) >= NOW, "its traffic began when the control plane said"
    finding = holds(world, finding)

    fal.plane.stop_traffic(TEAM, key_id=admin, at=world.now)
    world.advance(1)
    world.sync("fal")
    world.advance_to(world.last_row("fal", key_id=admin) + 7 * DAY - HOUR)
    world.sync("fal")
    (still,) = world.opened()
    assert (still.id, Decimal(still.evidence["spend_7d"])) == (finding.id, world.billed("fal", days=7, key_id=admin))
    assert Decimal(still.evidence["spend_7d"]) > 0, "used in the week's first hour"
    world.advance(1)
    world.sync("fal")

    resolved(world, finding)


# -- OpenAI ----------------------------------------------------------------------------------------------------
def test_openai_a_key_whose_owner_lost_access_is_high_until_access_is_back_and_the_overview_adds_up(
    world: World, openai: Vendor, fal: Vendor
) -> None:
    staging = next(key["key_id"] for key in openai.plane.account()["keys"] if key["name"] == "Staging")
    world.sync(world.connect("openai", "oa", openai), world.connect("fal", "fal", fal))
    nothing_to_find(world)

    openai.plane.update_key(staging, owner_project_access="inactive")  # Bo left the project; the key works on
    world.advance(1)
    world.sync("oa")

    finding = the_one(world, FindingKind.OWNER_GONE, staging, "oa")
    assert (finding.severity, finding.subject_label) == (Severity.HIGH, "Staging")
    evidence = finding.evidence
    assert (evidence["owner"], evidence["owner_email"], evidence["owner_active"], evidence["workspace"]) == (
        "Bo Builder",
        "bo@example.test",
        False,
        "Default project",
    )
    assert evidence["listing"].startswith("OpenAI /organization/projects/") and evidence["scope"] == "project"
    assert (Decimal(evidence["spend_30d"]), evidence["currency"]) == (
        world.billed("oa", days=30, key_id=staging),
        "USD",
    )
    assert "Bo Builder, who no longer has access" in finding.message
    assert [e.event for e in world.host.key_history("oa", staging)] == ["listed", "changed"]

    # Across both vendors, the overview's totals are the two connections' reports added up, and it shows the finding.
    overview = world.host.overview(30)
    reported: dict[str, Decimal] = {}
    for name in ("oa", "fal"):
        for line in world.host.store.report(name, since=overview.since, until=overview.until):
            reported[line.currency] = reported.get(line.currency, Decimal(0)) + line.cost
    assert {line.currency: line.cost for line in overview.totals} == reported
    assert {line.key for line in overview.by_vendor} == {"fal", "openai"}
    assert [f.id for f in overview.open_findings] == [finding.id]

    finding = holds(world, finding)
    openai.plane.update_key(staging, owner_project_access="active")  # access given back
    world.advance(1)
    world.sync("oa")

    resolved(world, finding)


def test_openai_an_idle_key_is_found_from_the_vendors_last_use_and_resolves_once_used(
    world: World, openai: Vendor
) -> None:
    sandbox, _secret = openai.plane.issue_key(
        ORGANIZATION,
        scope="project",
        name="Research sandbox",
        owner_name="Cy Analyst",
        owner_email="cy@example.test",
        created_at=NOW - 90 * DAY,
    )
    last_use = NOW - 29 * DAY
    openai.plane.update_key(sandbox, last_used_at=last_use)
    world.sync(world.connect("openai", "oa", openai))
    nothing_to_find(world)  # used 29 days ago

    world.advance_to(last_use + 30 * DAY - HOUR)
    world.sync("oa")
    assert world.opened() == [], "not quite 30 days"
    world.advance(1)
    world.sync("oa")

    finding = the_one(world, FindingKind.IDLE_KEY, sandbox, "oa")
    evidence = finding.evidence
    assert (evidence["last_used_at"], evidence["last_used_from"], evidence["idle_days"]) == (
        iso(last_use),
        "vendor",
        30,
    )
    assert (evidence["owner"], evidence["owner_email"], evidence["created_at"]) == (
        "Cy Analyst",
        "cy@example.test",
        iso(NOW - 90 * DAY),
    )
    assert world.key("oa", sandbox).last_usage_at is None, "no row names it: the vendor's word is the evidence"
    assert f"last used {last_use:%Y-%m-%d}" in finding.message
    finding = holds(world, finding)

    openai.plane.add_traffic(ORGANIZATION, key_id=sandbox, since=world.now)
    world.advance(2)
    world.sync("oa")

    resolved(world, finding)
    assert world.key("oa", sandbox).last_used_at == world.now, "OpenAI counts the hour under way"


# -- Anthropic -------------------------------------------------------------------------------------------------
def test_anthropic_a_new_key_is_info_with_its_creator_and_workspace_until_its_days_pass(
    world: World, anthropic: Vendor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONNECTOR_HOST_NEW_KEY_DAYS", "2")
    research = next(w["id"] for w in anthropic.plane.account()["workspaces"] if w["name"] == "Research")
    world.sync(world.connect("anthropic", "lab", anthropic))
    nothing_to_find(world)

    world.advance(1)
    hackathon, _secret = anthropic.plane.issue_key(
        LAB, scope="workspace", name="Hackathon", workspace_id=research, created_by="user_01dana"
    )
    world.advance(1)
    world.sync("lab")

    finding = the_one(world, FindingKind.NEW_KEY, hackathon, "lab")
    evidence = finding.evidence
    assert (evidence["name"], evidence["owner"], evidence["workspace"], evidence["status"]) == (
        "Hackathon",
        "user_01dana",
        "Research",
        "active",
    )
    assert (evidence["listing"], evidence["created_at"], evidence["first_listed_at"]) == (
        "Anthropic /organizations/api_keys",
        iso(NOW + HOUR),
        iso(world.now),
    )
    finding = holds(world, finding)

    world.advance(days=2)
    world.sync("lab")

    resolved(world, finding)


def test_anthropic_a_key_deleted_while_it_keeps_spending_is_high_until_a_week_without_its_spend(
    world: World, anthropic: Vendor
) -> None:
    research = next(w["id"] for w in anthropic.plane.account()["workspaces"] if w["name"] == "Research")
    batch, _secret = anthropic.plane.issue_key(
        LAB, scope="workspace", name="Batch", workspace_id=research, created_by="user_01erin", created_at=LONG_AGO
    )
    anthropic.plane.add_traffic(LAB, key_id=batch, scale=20)
    world.sync(world.connect("anthropic", "lab", anthropic))
    nothing_to_find(world)  # listed and spending is fine

    anthropic.plane.delete_key(batch)  # no listing names it now; whoever holds it goes on calling models
    world.advance(2)
    world.sync("lab")

    finding = the_one(world, FindingKind.UNLISTED_KEY_SPEND, batch, "lab")
    key = world.key("lab", batch)
    assert (key.gone_at, key.last_listed_at, key.name) == (world.now, NOW, "Batch")
    assert (finding.severity, finding.subject_label) == (Severity.HIGH, "Batch")
    evidence = finding.evidence
    assert (Decimal(evidence["spend_7d"]), evidence["currency"]) == (world.billed("lab", days=7, key_id=batch), "USD")
    assert Decimal(evidence["spend_7d"]) > 0
    assert (evidence["owner"], evidence["listing"]) == ("user_01erin", "Anthropic /organizations/api_keys")
    assert f"left anthropic's key listing on {world.now:%Y-%m-%d}" in finding.message
    finding = holds(world, finding)

    anthropic.plane.stop_traffic(LAB, key_id=batch, at=world.now)
    world.advance(days=8)
    world.sync("lab")

    resolved(world, finding)
    assert [event.event for event in world.host.key_history("lab", batch)] == ["listed", "gone"]


def test_anthropic_workbench_spend_is_user_key_until_a_month_passes_without_it(
    world: World, anthropic: Vendor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONNECTOR_HOST_WEB_UI_THRESHOLD", "20")
    world.sync(world.connect("anthropic", "lab", anthropic, backfill_days=30))  # a month of the Workbench's use

    finding = the_one(world, FindingKind.WEB_UI_SPEND, "User key", "lab")
    until = floor_hour(world.now) + HOUR
    workbench = [
        row
        for row in world.host.store.iter_rows("lab", since=until - 30 * DAY, until=until)
        if row.kind == "cost" and row.api_key_id is None
    ]
    assert {row.api_key_label for row in workbench} == {"User key"}
    spent = sum((row.cost or Decimal(0) for row in workbench), Decimal(0))
    assert (Decimal(finding.evidence["spend_30d"]), finding.evidence["threshold"]) == (spent, "20") and spent > 20
    assert finding.message.startswith(f"Someone without a name spent {spent:,.2f} USD in anthropic's web UI")
    finding = holds(world, finding)

    anthropic.plane.stop_traffic(LAB, key_id=None, at=world.now)  # nobody works in the Workbench any more
    world.advance(days=31)
    world.sync("lab")

    resolved(world, finding)


def test_anthropic_on_its_cost_report_spend_no_key_accounts_for_is_nobodys_web_ui_use(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without cost analytics the connector reads the cost report per workspace: every cost row has no key ("All
    # keys"), the Workbench's among them. That is spend Anthropic did not break down, not someone in its web UI.
    monkeypatch.setenv("CONNECTOR_HOST_WEB_UI_THRESHOLD", "1")
    simulator = AnthropicSimulator(now=NOW, seed=7)
    plane = world.serve(simulator)
    admin_key = simulator.add_organization(LAB, analytics="forbidden")
    world.sync(world.connect("anthropic", "lab", Vendor(simulator, plane, admin_key)))

    billed = [row for row in world.host.store.iter_rows("lab") if row.kind == "cost"]
    assert billed and {row.api_key_id for row in billed} == {None}
    assert sum((row.cost or Decimal(0) for row in billed), Decimal(0)) > 1
    assert [f for f in world.opened() if f.kind == FindingKind.WEB_UI_SPEND] == []
    overview = world.host.overview(30)
    assert overview.by_person == [] and overview.totals, "and nobody's in the overview's spend by person"


# -- one account, two connections ------------------------------------------------------------------------------
def test_fal_a_second_connection_is_one_finding_and_syncing_the_two_in_turn_never_doubles_or_moves_one(
    world: World, fal: Vendor
) -> None:
    batch, _secret = fal.plane.issue_key(TEAM, scope="API", alias="Batch Job", created_at=LONG_AGO)
    fal.plane.add_traffic(TEAM, key_id=batch, scale=3)
    world.sync(world.connect("fal", "prod", fal))
    nothing_to_find(world)

    world.advance(1)
    _copy_id, copy_key = fal.plane.issue_key(TEAM, scope="ADMIN", alias="Copy Admin")  # someone connects again
    world.sync(world.connect("fal", "copy", Vendor(fal.simulator, fal.plane, copy_key)))

    duplicate = the_one(world, FindingKind.DUPLICATE_ACCOUNT, TEAM, "prod")  # on the connection made first
    assert duplicate.severity == Severity.MEDIUM
    assert duplicate.evidence == {
        "account": TEAM,
        "connector": "fal",
        "connections": ["copy", "prod"],
        "judged_by": "prod",
    }
    assert world.host.findings("copy", open_only=False) == []

    fal.plane.delete_key(batch)  # a fact about the account that both connections see
    world.advance(1)
    world.sync("copy")
    assert [f.kind for f in world.opened()] == [FindingKind.DUPLICATE_ACCOUNT], "the judge's own listing tells"
    world.advance(1)
    world.sync("prod")
    for _turn in range(3):
        for name in ("copy", "prod", "prod", "copy"):
            world.advance(1)
            world.sync(name)
            assert sorted((f.connection, f.kind) for f in world.opened()) == [
                ("prod", FindingKind.DUPLICATE_ACCOUNT),
                ("prod", FindingKind.UNLISTED_KEY_SPEND),
            ], f"after {name}'s sync"
    unlisted = world.host.findings("prod", kind=FindingKind.UNLISTED_KEY_SPEND)[0]
    assert Decimal(unlisted.evidence["spend_7d"]) == world.billed("prod", days=7, key_id=batch)
    assert world.events() == [
        ("prod", "duplicate_account", TEAM, "opened"),
        ("prod", "unlisted_key_spend", batch, "opened"),
    ], "each opened once, and never moved"
    assert {s.counted for s in world.host.shared_accounts()} == {"copy"}, "reports count the one synced last"

    world.host.disconnect("copy")  # its rows stay, but it syncs no more
    world.advance(1)
    world.sync("prod")

    assert [(f.kind, f.subject) for f in world.opened()] == [(FindingKind.UNLISTED_KEY_SPEND, batch)]
    (closed,) = world.host.findings("prod", open_only=False, kind=FindingKind.DUPLICATE_ACCOUNT)
    assert (closed.id, closed.resolved_at) == (duplicate.id, world.now)
    assert world.events()[2:] == [("prod", "duplicate_account", TEAM, "resolved")]


def test_fal_when_the_judging_connection_is_disconnected_the_other_takes_its_findings_over_as_they_are(
    world: World, fal: Vendor
) -> None:
    batch, _secret = fal.plane.issue_key(TEAM, scope="API", alias="Batch Job", created_at=LONG_AGO)
    fal.plane.add_traffic(TEAM, key_id=batch, scale=3)
    world.sync(world.connect("fal", "prod", fal))
    world.advance(1)
    _copy_id, copy_key = fal.plane.issue_key(TEAM, scope="ADMIN", alias="Copy Admin")
    world.sync(world.connect("fal", "copy", Vendor(fal.simulator, fal.plane, copy_key)))
    fal.plane.delete_key(batch)
    world.advance(1)
    world.sync("prod")
    unlisted = world.host.findings("prod", kind=FindingKind.UNLISTED_KEY_SPEND)[0]
    world.host.acknowledge_finding(unlisted.id or 0, "rotating the batch runner's key")

    world.host.disconnect("prod")
    world.advance(1)
    world.sync("copy")

    (kept,) = world.opened()
    assert (kept.id, kept.connection, kept.opened_at, kept.ack_note) == (
        unlisted.id,
        "copy",
        unlisted.opened_at,
        "rotating the batch runner's key",
    )
    assert Decimal(kept.evidence["spend_7d"]) == world.billed("copy", days=7, key_id=batch)
    assert world.events() == [
        ("prod", "duplicate_account", TEAM, "opened"),
        ("prod", "unlisted_key_spend", batch, "opened"),
        ("prod", "duplicate_account", TEAM, "resolved"),
    ], "taken over, not resolved and opened again; one connection left, no duplicate"
