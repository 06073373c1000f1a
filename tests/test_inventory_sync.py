"""The key inventory and its findings through real syncs: the fal simulator on loopback serves the rows, a test
connector (fal's, with a key listing the test controls) lists the keys, and a real webhook receiver gets the
findings signed and in order.

Each scenario starts from a clean baseline (the listing names every key the rows name, nobody over the web-UI
threshold), opens exactly one finding, keeps it open (and quiet) while the condition holds, and resolves it when the
condition clears; the ``connector_sdk_finding`` hook fires once for each change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

import connector_sdk.sinks
from connector_sdk import hookimpl
from connector_sdk.connector import Connector
from connector_sdk.errors import ConfigError, CredentialError, ResponseError, TransientError
from connector_sdk.host import Host
from connector_sdk.models import (
    ConnectionState,
    Finding,
    FindingKind,
    ListedKey,
    Page,
    RunOutcome,
    Severity,
    SyncContext,
    SyncWindow,
    floor_hour,
    utcnow,
)
from connector_sdk.plugins import get_plugin_manager
from connector_sdk.sync import sync_now
from connectors.fal.connector import FalConnector
from connectors.fal.simulator import FalSimulator
from tests.conftest import TEAM
from tests.inventory_helpers import FindingRecorder
from tests.test_sinks import SECRET, Receiver

NAME = "fal-test"
QUIET = {"CONNECTOR_HOST_WEB_UI_THRESHOLD": "1000000"}  # the simulator's web-UI members stay under it


@dataclass
class Listing:
    """What the test connector's ``list_keys`` answers: every key the synced rows named (as an active API key of
    ann's), less those whose id or label is in ``omit``, with ``changes`` applied, plus ``extra``; or ``error``
    raised, or ``None``."""

    seen: dict[str, str] = field(default_factory=dict)
    omit: set[str] = field(default_factory=set)
    changes: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra: list[ListedKey] = field(default_factory=list)
    error: Exception | None = None
    cannot: bool = False
    created: datetime | None = None

    def keys(self) -> list[ListedKey] | None:
        if self.error is not None:
            raise self.error
        if self.cannot:
            return None
        listed = [
            ListedKey(
                key_id=key_id,
                name=label,
                scope="api",
                owner="ann",
                owner_email="ann@acme.test",
                owner_active=True,
                created_at=self.created,
                status="active",
                listing="fal /keys",
            )
            for key_id, label in sorted(self.seen.items())
            if key_id not in self.omit and label not in self.omit
        ]
        return [key.model_copy(update=self.changes.get(key.key_id, {})) for key in listed] + self.extra


LISTING = Listing()


class ListingFal(FalConnector):
    """fal's connector, with a key listing the test decides (fal's own ``list_keys`` is not this test's subject)."""

    def sync(self, window: SyncWindow, context: SyncContext) -> Iterator[Page]:
        for page in super().sync(window, context):
            for row in page.rows:
                if row.api_key_id is not None:
                    LISTING.seen.setdefault(row.api_key_id, row.api_key_label)
            yield page

    def list_keys(self) -> list[ListedKey] | None:
        return LISTING.keys()


class ListingPlugin:
    __name__ = "listing_fal"

    @hookimpl
    def connector_sdk_register_connectors(self) -> list[type[Connector]]:
        return [ListingFal]


@dataclass
class World:
    host: Host
    sim: FalSimulator
    recorder: FindingRecorder
    receiver: Receiver
    admin_key: str
    clock: list[datetime]

    def sync(self, name: str = NAME) -> None:
        assert sync_now(self.host, name).outcome == RunOutcome.SUCCEEDED

    def advance(self, hours: int) -> None:
        self.clock[0] += timedelta(hours=hours)
        self.sim.now = self.clock[0]

    def key_labelled(self, label: str) -> str:
        return next(key_id for key_id, seen in LISTING.seen.items() if seen == label)

    def events(self) -> list[tuple[str, str, str]]:
        """The finding events fired for the connection under test."""
        return [(kind, subject, change) for name, kind, subject, change in self.recorder.events if name == NAME]

    def opened(self) -> list[Finding]:
        return self.host.findings(NAME, open_only=True)

    def delivered(self) -> list[tuple[str, str, str]]:
        return [
            (b["finding"]["kind"], b["finding"]["subject"], b["change"])
            for b in self.receiver.batches
            if b["type"] == "finding"
        ]


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    global LISTING
    for variable, value in QUIET.items():
        monkeypatch.setenv(variable, value)
    clock = [floor_hour(utcnow())]
    LISTING = Listing(created=clock[0] - timedelta(days=200))
    recorder = FindingRecorder()
    receiver = Receiver()
    plugins = get_plugin_manager(load_entrypoints=False, plugins=[ListingPlugin(), recorder, connector_sdk.sinks])
    with FalSimulator(now=clock[0], seed=7, page_size=200, max_page_size=200) as sim:
        admin_key = sim.add_account(TEAM, n_keys=3, n_models=5)
        with Host.open(
            tmp_path / "home", store_url=f"sqlite:///{tmp_path / 'store.db'}", plugins=plugins, clock=lambda: clock[0]
        ) as host:
            host.connect("fal", NAME, {"api_key": admin_key, "base_url": sim.base_url, "backfill_days": 3})
            host.add_sink(NAME, "hook", "webhook", {"url": receiver.url, "secret": SECRET})
            yield World(host, sim, recorder, receiver, admin_key, clock)
    receiver.server.shutdown()


def baseline(world: World) -> None:
    """The first sync: the listing names every key the rows name; nothing to find."""
    world.sync()
    assert world.opened() == [] and world.events() == []
    assert {k.key_id for k in world.host.keys(NAME)} == set(LISTING.seen) | {k.key_id for k in LISTING.extra}


def holds_then_clears(world: World, kind: FindingKind, subject: str, clear: Callable[[], None]) -> Finding:
    """After the sync that opened it, alone: one more sync keeps it open and quiet, then ``clear`` and a sync
    resolve it (what clearing it may open is the caller's to check). Returns the finding as it opened."""
    (finding,) = world.opened()
    assert (finding.kind, finding.subject) == (kind, subject)
    assert world.events() == [(kind.value, subject, "opened")]
    world.advance(1)
    world.sync()
    (still,) = world.opened()
    assert (still.id, still.opened_at) == (finding.id, finding.opened_at)
    assert world.events() == [(kind.value, subject, "opened")], "never opened twice while it holds"
    clear()
    world.advance(1)
    world.sync()
    assert [f for f in world.opened() if f.kind == kind] == []
    mine = [event for event in world.events() if event[0] == kind.value]
    assert mine == [(kind.value, subject, "opened"), (kind.value, subject, "resolved")]
    (resolved,) = world.host.findings(NAME, open_only=False, kind=kind)
    assert resolved.id == finding.id and resolved.resolved_at == world.clock[0]
    delivered = [event for event in world.delivered() if event[0] == kind.value]
    assert delivered == [(kind.value, subject, "opened"), (kind.value, subject, "resolved")]
    assert world.receiver.bad_signatures == 0
    deliveries = [batch["delivery_id"] for batch in world.receiver.batches]
    assert deliveries == sorted(deliveries), "in the order they were made"
    return finding


# -- the scenarios ---------------------------------------------------------------------------------------------
def test_a_key_no_listing_names_but_billed_opens_a_high_finding_until_it_is_listed(world: World) -> None:
    LISTING.omit = {"Old Pipeline Key"}  # deleted before the first listing: no listing ever names it
    world.sync()
    (finding,) = world.opened()
    deleted = world.key_labelled("Old Pipeline Key")
    assert (finding.kind, finding.severity, finding.subject, finding.subject_label) == (
        FindingKind.UNLISTED_KEY_SPEND,
        Severity.HIGH,
        deleted,
        "Old Pipeline Key",
    )
    spend_7d = next(k.spend_7d for k in world.host.keys(NAME) if k.key_id == deleted)
    assert spend_7d > 0 and Decimal(finding.evidence["spend_7d"]) == spend_7d
    assert finding.evidence["currency"] == "USD" and finding.evidence["first_listed_at"] is None
    assert "has ever named it" in finding.message
    holds_then_clears(world, FindingKind.UNLISTED_KEY_SPEND, deleted, lambda: LISTING.omit.clear())
    # Listed at last, it is a key the listings had not named before: new.
    assert [(f.kind, f.subject) for f in world.opened()] == [(FindingKind.NEW_KEY, deleted)]


def test_a_key_deleted_while_it_keeps_spending_is_found_with_the_date_it_left(world: World) -> None:
    baseline(world)
    production = world.key_labelled("Production Key")
    LISTING.omit = {production}
    world.sync()  # the listing no longer names it: gone, but nothing billed since
    assert world.opened() == []
    world.advance(12)  # the key keeps spending after it left the listing
    world.sync()
    key = next(k for k in world.host.keys(NAME) if k.key_id == production)
    assert key.gone_at is not None and key.last_usage_at is not None and key.last_usage_at > key.gone_at
    (finding,) = world.opened()
    assert (finding.kind, finding.subject) == (FindingKind.UNLISTED_KEY_SPEND, production)
    assert finding.evidence["gone_at"] == key.gone_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert [e.event for e in world.host.key_history(NAME, production)] == ["listed", "gone"]
    holds_then_clears(world, FindingKind.UNLISTED_KEY_SPEND, production, lambda: LISTING.omit.clear())
    assert [e.event for e in world.host.key_history(NAME, production)] == ["listed", "gone", "returned"]


def test_a_new_key_is_info_once_and_an_acknowledgement_closes_it(world: World) -> None:
    baseline(world)
    LISTING.extra = [
        ListedKey(
            key_id="k-new",
            name="Notebook",
            scope="api",
            owner="bob",
            owner_email="bob@acme.test",
            created_at=world.clock[0],
            listing="fal /keys",
        )
    ]
    world.advance(1)
    world.sync()
    (finding,) = world.opened()
    assert (finding.kind, finding.severity, finding.subject, finding.subject_label) == (
        FindingKind.NEW_KEY,
        Severity.INFO,
        "k-new",
        "Notebook",
    )
    assert (finding.evidence["owner"], finding.evidence["scope"], finding.evidence["listing"]) == (
        "bob",
        "api",
        "fal /keys",
    )
    acknowledged = world.host.acknowledge_finding(finding.id or 0, "bob's notebook, expected")
    assert (acknowledged.ack_note, acknowledged.resolved_at) == ("bob's notebook, expected", world.clock[0])
    assert world.events() == [("new_key", "k-new", "opened"), ("new_key", "k-new", "resolved")]
    world.advance(1)
    world.sync()
    assert world.opened() == [], "a new key is news once"
    assert world.delivered() == [("new_key", "k-new", "opened"), ("new_key", "k-new", "resolved")]


def test_a_new_key_resolves_by_itself_after_its_days(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    baseline(world)
    LISTING.extra = [ListedKey(key_id="k-new", name="Notebook", listing="fal /keys")]
    world.advance(1)
    world.sync()
    assert [f.kind for f in world.opened()] == [FindingKind.NEW_KEY]
    monkeypatch.setenv("CONNECTOR_HOST_NEW_KEY_DAYS", "1")

    def a_day_later() -> None:
        world.advance(24)

    holds_then_clears(world, FindingKind.NEW_KEY, "k-new", a_day_later)


def test_a_key_the_second_listing_names_is_new_even_in_the_baseline_listings_second(world: World) -> None:
    baseline(world)
    LISTING.extra = [ListedKey(key_id="k-new", name="Notebook", listing="fal /keys")]
    world.sync()  # the clock has not moved: both listings carry the same time
    assert [(f.kind, f.subject) for f in world.opened()] == [(FindingKind.NEW_KEY, "k-new")]


def test_an_idle_key_is_low_and_an_acknowledgement_keeps_it_open_until_the_key_goes(world: World) -> None:
    now = world.clock[0]
    LISTING.extra = [
        ListedKey(
            key_id="k-idle",
            name="Old demo",
            scope="api",
            owner="carol",
            created_at=now - timedelta(days=90),
            last_used_at=now - timedelta(days=27),
            listing="fal /keys",
        )
    ]
    baseline(world)  # used 27 days ago: not idle yet
    world.advance(4 * 24)
    world.sync()
    (finding,) = world.opened()
    assert (finding.kind, finding.severity, finding.subject) == (FindingKind.IDLE_KEY, Severity.LOW, "k-idle")
    assert (finding.evidence["last_used_at"], finding.evidence["last_used_from"], finding.evidence["idle_days"]) == (
        (now - timedelta(days=27)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "vendor",
        30,
    )
    assert "revoke it if nobody needs it" in finding.message
    acknowledged = world.host.acknowledge_finding(finding.id or 0, "carol's; kept for the demo")
    assert (acknowledged.is_open, acknowledged.ack_note) == (True, "carol's; kept for the demo")

    def revoked() -> None:
        LISTING.extra = [LISTING.extra[0].model_copy(update={"status": "revoked"})]

    holds_then_clears(world, FindingKind.IDLE_KEY, "k-idle", revoked)
    (resolved,) = world.host.findings(NAME, open_only=False)
    assert resolved.acknowledged_at == world.clock[0] - timedelta(hours=2) and resolved.ack_note is not None


def test_web_ui_spend_above_the_threshold_names_the_person(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    baseline(world)
    people = world.host.store.grouped_spend(
        NAME, since=world.clock[0] - timedelta(days=30), until=world.clock[0] + timedelta(hours=1),
        by=("api_key_id", "login_username", "currency"),
    )  # fmt: skip
    spend: dict[str, Decimal] = {}
    for (key, person, _currency), (_count, cost) in people.items():
        if key is None:  # web-UI use: no key accounts for it
            spend[person or "User key"] = spend.get(person or "User key", Decimal(0)) + cost
    top, second = sorted(spend, key=lambda person: -spend[person])[:2]
    threshold = (spend[top] + spend[second]) / 2  # only the top spender is over it
    monkeypatch.setenv("CONNECTOR_HOST_WEB_UI_THRESHOLD", str(threshold))
    world.advance(1)
    world.sync()
    (finding,) = world.opened()
    assert (finding.kind, finding.subject, finding.severity) == (FindingKind.WEB_UI_SPEND, top, Severity.MEDIUM)
    assert Decimal(finding.evidence["spend_30d"]) == spend[top] and finding.evidence["threshold"] == str(threshold)
    assert f"spent {spend[top]:,.2f} USD in fal's web UI" in finding.message
    holds_then_clears(
        world, FindingKind.WEB_UI_SPEND, top, lambda: monkeypatch.setenv("CONNECTOR_HOST_WEB_UI_THRESHOLD", "1000000")
    )


def test_a_key_whose_owner_lost_access_is_high_until_the_owner_is_back(world: World) -> None:
    baseline(world)
    staging = world.key_labelled("Staging Key")
    LISTING.changes = {staging: {"owner_active": False, "owner": "dave"}}
    world.advance(1)
    world.sync()
    (finding,) = world.opened()
    assert (finding.kind, finding.severity, finding.subject) == (FindingKind.OWNER_GONE, Severity.HIGH, staging)
    assert (finding.evidence["owner"], finding.evidence["owner_active"]) == ("dave", False)
    assert [e.event for e in world.host.key_history(NAME, staging)] == ["listed", "changed"]
    holds_then_clears(world, FindingKind.OWNER_GONE, staging, lambda: LISTING.changes.clear())


def test_an_admin_keys_own_traffic_is_high(world: World) -> None:
    baseline(world)
    admin = world.admin_key.partition(":")[0]
    LISTING.changes = {admin: {"scope": "admin"}}
    world.advance(1)
    world.sync()
    (finding,) = world.opened()
    assert (finding.kind, finding.severity, finding.subject, finding.subject_label) == (
        FindingKind.ADMIN_KEY_TRAFFIC,
        Severity.HIGH,
        admin,
        "Admin Key",
    )
    assert Decimal(finding.evidence["spend_7d"]) > 0
    holds_then_clears(world, FindingKind.ADMIN_KEY_TRAFFIC, admin, lambda: LISTING.changes.clear())


def test_a_second_connection_to_the_account_is_one_finding_on_the_first_until_the_copy_is_disconnected(
    world: World,
) -> None:
    baseline(world)
    world.advance(1)
    world.host.connect(
        "fal", "fal-copy", {"api_key": world.admin_key, "base_url": world.sim.base_url, "backfill_days": 3}
    )
    world.sync("fal-copy")  # the first connection, made first, judges the account: at once, on its own rows
    (finding,) = world.host.findings(None)
    assert (finding.connection, finding.kind, finding.subject, finding.severity) == (
        NAME,
        FindingKind.DUPLICATE_ACCOUNT,
        TEAM,
        Severity.MEDIUM,
    )
    assert (finding.evidence["connections"], finding.evidence["judged_by"]) == (["fal-copy", NAME], NAME)
    for name in (NAME, "fal-copy"):
        world.sync(name)
        assert world.host.findings(None) == [finding], "one finding for the account, whichever synced last"
    holds_then_clears(world, FindingKind.DUPLICATE_ACCOUNT, TEAM, lambda: world.host.disconnect("fal-copy"))
    assert [event for event in world.recorder.events if event[0] == "fal-copy"] == []


# -- listings that fail or cannot be had -----------------------------------------------------------------------
def test_a_failed_listing_leaves_the_inventory_and_its_findings_as_they_were(world: World) -> None:
    baseline(world)
    staging = world.key_labelled("Staging Key")
    LISTING.changes = {staging: {"owner_active": False}}
    world.advance(1)
    world.sync()
    before = world.host.keys(NAME)
    LISTING.changes.clear()
    LISTING.error = TransientError("fal answered 503 three times")
    world.advance(1)
    world.sync()  # the sync still succeeds
    assert [f.kind for f in world.opened()] == [FindingKind.OWNER_GONE], "not resolved on no evidence"
    after = world.host.keys(NAME)
    assert [(k.key_id, k.owner_active, k.last_listed_at) for k in after] == [
        (k.key_id, k.owner_active, k.last_listed_at) for k in before
    ]
    LISTING.error = None
    world.advance(1)
    world.sync()
    assert world.opened() == []


@pytest.mark.parametrize(
    "error",
    [CredentialError("the key may not list keys"), ResponseError("fal sent a listing it cannot read"), KeyError("id")],
    ids=["refused", "unreadable", "connector bug"],
)
def test_a_listing_that_fails_never_fails_the_sync_or_the_connection(world: World, error: Exception) -> None:
    baseline(world)
    LISTING.error = error
    world.advance(1)
    with capture_logs() as logs:
        world.sync()
    connection = world.host.store.get_connection(NAME)
    assert (connection.state, connection.reason) == (ConnectionState.CONNECTED, None)
    assert [e["event"] for e in logs if e["event"].startswith("key_listing")] in (
        ["key_listing_failed"],
        ["key_listing_crashed"],
    )
    info = world.host.store.key_listing(NAME)
    assert info is not None and info.listings == 1, "the inventory stays as it was"


def test_a_connector_that_cannot_list_keys_still_gets_the_row_findings(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    LISTING.cannot = True
    monkeypatch.setenv("CONNECTOR_HOST_WEB_UI_THRESHOLD", "0")
    world.sync()
    kinds = {f.kind for f in world.opened()}
    assert kinds == {FindingKind.WEB_UI_SPEND}, "no listing: no key finding, even for the unlisted admin key"
    assert all(not k.listed for k in world.host.keys(NAME)) and world.host.store.key_listing(NAME) is None


# -- the host API ----------------------------------------------------------------------------------------------
def test_the_inventory_through_the_host(world: World) -> None:
    baseline(world)
    keys = world.host.keys(NAME)
    assert keys == world.host.keys(None) == world.host.keys(vendor="fal")
    assert world.host.keys(vendor="openai") == []
    production = next(k for k in keys if k.name == "Production Key")
    rows = [r for r in world.host.store.iter_rows(NAME) if r.api_key_id == production.key_id]
    week = world.clock[0] + timedelta(hours=1) - timedelta(days=7)
    assert production.spend_7d == sum((r.cost or 0 for r in rows if r.period_start >= week), Decimal(0))
    assert production.last_usage_at == max(r.period_start for r in rows)
    assert (production.owner, production.scope, production.status) == ("ann", "api", "active")
    with pytest.raises(ConfigError, match="no finding 12345"):
        world.host.acknowledge_finding(12345, "x")
    with pytest.raises(ConfigError, match="kind"):
        world.host.findings(kind="nonsense")


def test_a_spend_spike_with_a_new_model_is_attributed_to_its_key(store_url: str, tmp_path: Path) -> None:
    from connector_sdk.findings import Settings
    from connector_sdk.inventory import evaluate_findings
    from tests.store_fixtures import T0, page, usage_row

    clock = [T0 + timedelta(days=20, hours=12)]
    recorder = FindingRecorder()
    plugins = get_plugin_manager(load_entrypoints=False, plugins=[ListingPlugin(), recorder, connector_sdk.sinks])
    with Host.open(tmp_path / "home", store_url=store_url, plugins=plugins, clock=lambda: clock[0]) as host:
        host.store.add_connection(
            name="acme", connector="fal", config={}, credential=b"sealed", account="acme-ai", now=T0
        )
        steady = [
            usage_row(at=24 * day + 10, key=key, label=key, cost=f"1.0{day % 3}", model="fal-ai/a")
            for day in range(20)
            for key in ("k1", "k2")
        ]
        today = 24 * 20
        spike = [
            usage_row(at=today + 5, key="k1", label="k1", cost="6", model="fal-ai/a"),
            usage_row(at=today + 6, key="k1", label="k1", cost="3", model="fal-ai/veo3"),
            usage_row(at=today + 6, key="k2", label="k2", cost="1.01", model="fal-ai/a"),
        ]
        host.store.commit_page("acme", "-", page(steady + spike, 0, today + 12), watermark=clock[0])
        quiet = Settings(web_ui_threshold=Decimal(1000))
        ((finding, change),) = evaluate_findings(host, "acme", listed=False, settings=quiet)
        assert (change, finding.kind, finding.subject, finding.severity) == (
            "opened",
            FindingKind.SPEND_SPIKE,
            "k1",
            Severity.MEDIUM,
        )
        evidence = finding.evidence
        assert (evidence["day"], evidence["spend"], evidence["baseline_median"], evidence["currency"]) == (
            "2026-01-25",
            "9",
            "1.01",
            "USD",
        )
        assert (evidence["model"], evidence["new_models"]) == ("fal-ai/veo3", ["fal-ai/veo3"])
        assert "started using fal-ai/veo3" in finding.message
        assert evaluate_findings(host, "acme", listed=False, settings=quiet) == []  # holds: nothing new
        # Two quiet days later the day is no longer today or yesterday, and the model is no longer new.
        clock[0] += timedelta(days=2)
        later = [usage_row(at=today + 24 * n + 10, key="k1", label="k1", cost="1", model="fal-ai/a") for n in (1, 2)]
        host.store.commit_page("acme", "-", page(later, today + 12, today + 60), watermark=clock[0])
        ((resolved, change),) = evaluate_findings(host, "acme", listed=False, settings=quiet)
        assert (change, resolved.id, resolved.resolved_at) == ("resolved", finding.id, clock[0])
        assert [(c, k, s) for _n, k, s, c in recorder.events] == [
            ("opened", "spend_spike", "k1"),
            ("resolved", "spend_spike", "k1"),
        ]
