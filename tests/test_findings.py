"""The findings' rules, judged on facts alone: no store, no vendor."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from connector_sdk.errors import ConfigError
from connector_sdk.findings import (
    LISTING_KINDS,
    ROW_KINDS,
    Facts,
    Settings,
    account_of,
    conditions,
    key_activity,
)
from connector_sdk.models import (
    OWN_KEY_LISTING,
    Connection,
    ConnectionState,
    Finding,
    FindingKind,
    KeyListingInfo,
    KeyRecord,
    Severity,
)

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
DAY = timedelta(days=1)
BASELINE = KeyListingInfo(connection="acme", first_listed_at=NOW - 60 * DAY, last_listed_at=NOW, listings=40)


def key(key_id: str = "k1", **fields: Any) -> KeyRecord:
    """A listed, active key, created and first listed long ago, used an hour ago."""
    values: dict[str, Any] = {
        "connection": "acme",
        "connector": "fal",
        "key_id": key_id,
        "name": f"{key_id} name",
        "scope": "api",
        "owner": "ann",
        "status": "active",
        "listing": "fal /keys",
        "listed": True,
        "created_at": NOW - 90 * DAY,
        "first_listed_at": BASELINE.first_listed_at,
        "last_listed_at": NOW,
        "first_usage_at": NOW - 80 * DAY,
        "last_usage_at": NOW - timedelta(hours=1),
        "spend_7d": Decimal("3.5"),
        "spend_30d": Decimal("12.25"),
        "currency": "USD",
    }
    return KeyRecord(**(values | fields))


def facts(*keys: KeyRecord, **fields: Any) -> Facts:
    values: dict[str, Any] = {
        "connection": "acme",
        "connector": "fal",
        "account": "acme-ai",
        "now": NOW,
        "keys": list(keys),
        "listing": BASELINE,
    }
    return Facts(**(values | fields))


def only(found: list[Finding], kind: FindingKind) -> list[Finding]:
    return [f for f in found if f.kind == kind]


def test_a_healthy_account_has_no_findings() -> None:
    assert conditions(facts(key("k1"), key("k2", scope="admin", last_usage_at=NOW - 20 * DAY))) == []


def test_every_kind_is_judged_on_either_the_listing_or_the_rows() -> None:
    assert set(FindingKind) == LISTING_KINDS | ROW_KINDS and not LISTING_KINDS & ROW_KINDS


# -- spend from a key no listing names -------------------------------------------------------------------------
def test_spend_from_a_key_never_listed_is_high() -> None:
    shadow = key("shadow", name="shadow label", listed=False, first_listed_at=None, last_listed_at=None, listing=None)
    (finding,) = conditions(facts(key("k1"), shadow))
    assert (finding.kind, finding.severity, finding.subject, finding.subject_label) == (
        FindingKind.UNLISTED_KEY_SPEND,
        Severity.HIGH,
        "shadow",
        "shadow label",
    )
    assert "3.50 USD" in finding.message and "has ever named it" in finding.message
    assert finding.evidence["spend_7d"] == "3.5" and finding.evidence["currency"] == "USD"
    assert finding.evidence["last_listing_at"] == "2026-03-01T12:00:00Z"
    assert finding.evidence["last_usage_at"] == "2026-03-01T11:00:00Z"


def test_spend_after_a_key_left_the_listing_is_high_but_spend_from_before_is_not() -> None:
    gone_at = NOW - 2 * DAY
    deleted = key("old", listed=False, gone_at=gone_at, last_listed_at=gone_at - timedelta(hours=1))
    (finding,) = conditions(facts(deleted))  # it spent an hour ago, two days after it left
    assert finding.kind == FindingKind.UNLISTED_KEY_SPEND
    assert "left fal's key listing on 2026-02-27" in finding.message
    assert finding.evidence["gone_at"] == "2026-02-27T12:00:00Z"
    before = deleted.model_copy(update={"last_usage_at": gone_at - timedelta(hours=1)})
    assert conditions(facts(before)) == []


def test_unlisted_spend_needs_a_listing_recent_cost_and_not_an_admin_key() -> None:
    shadow = key("shadow", listed=False, first_listed_at=None, last_listed_at=None)
    assert only(conditions(facts(shadow, listing=None)), FindingKind.UNLISTED_KEY_SPEND) == []
    assert only(conditions(facts(shadow), listed=False), FindingKind.UNLISTED_KEY_SPEND) == []
    quiet = shadow.model_copy(update={"spend_7d": Decimal(0), "last_usage_at": NOW - 20 * DAY})
    assert conditions(facts(quiet)) == []
    admin = shadow.model_copy(update={"scope": "admin", "gone_at": NOW - 3 * DAY, "last_listed_at": NOW - 4 * DAY})
    assert [f.kind for f in conditions(facts(admin))] == [FindingKind.ADMIN_KEY_TRAFFIC]


# -- new keys --------------------------------------------------------------------------------------------------
def test_a_key_first_listed_after_the_baseline_is_new_for_a_week() -> None:
    fresh = key("k9", first_listed_at=NOW - 2 * DAY, created_at=NOW - 3 * DAY, owner="bob", scope="project")
    (finding,) = conditions(facts(fresh))
    assert (finding.kind, finding.severity) == (FindingKind.NEW_KEY, Severity.INFO)
    assert "owned by bob with project scope" in finding.message and "2026-02-27" in finding.message
    assert (finding.evidence["owner"], finding.evidence["scope"], finding.evidence["listing"]) == (
        "bob",
        "project",
        "fal /keys",
    )
    week_old = fresh.model_copy(update={"first_listed_at": NOW - 8 * DAY})
    assert conditions(facts(week_old)) == []
    assert only(conditions(facts(week_old), Settings(new_key_days=10)), FindingKind.NEW_KEY) != []


def test_the_first_listing_is_a_baseline_that_opens_no_new_key() -> None:
    first = KeyListingInfo(connection="acme", first_listed_at=NOW, last_listed_at=NOW, listings=1)
    assert conditions(facts(key("k1", first_listed_at=NOW), listing=first)) == []


def test_a_key_of_the_second_listing_is_new_though_both_listings_fell_in_one_second() -> None:
    both = KeyListingInfo(connection="acme", first_listed_at=NOW, last_listed_at=NOW, listings=2)
    keys = (key("k1", first_listed_at=NOW), key("k2", first_listed_at=NOW))
    (finding,) = conditions(facts(*keys, listing=both, baseline=frozenset({"k1"})))
    assert (finding.kind, finding.subject) == (FindingKind.NEW_KEY, "k2")


# -- idle keys -------------------------------------------------------------------------------------------------
def test_a_key_unused_for_30_days_is_idle_by_the_vendors_last_use_first() -> None:
    vendor_says = key("k1", last_used_at=NOW - 31 * DAY, last_usage_at=NOW - 40 * DAY, spend_7d=Decimal(0))
    (finding,) = conditions(facts(vendor_says))
    assert (finding.kind, finding.severity) == (FindingKind.IDLE_KEY, Severity.LOW)
    assert (finding.evidence["last_used_at"], finding.evidence["last_used_from"]) == ("2026-01-29T12:00:00Z", "vendor")
    rows_say = key("k1", last_usage_at=NOW - 31 * DAY, spend_7d=Decimal(0))
    assert conditions(facts(rows_say))[0].evidence["last_used_from"] == "rows"
    # The vendor saw it used yesterday, whatever the rows say.
    assert conditions(facts(vendor_says.model_copy(update={"last_used_at": NOW - DAY}))) == []


def test_a_young_or_inactive_key_is_not_idle_and_the_days_are_a_setting() -> None:
    never = key("k1", last_usage_at=None, first_usage_at=None, spend_7d=Decimal(0))
    assert "never used" in conditions(facts(never))[0].message
    assert conditions(facts(never.model_copy(update={"created_at": NOW - 10 * DAY}))) == []
    assert conditions(facts(never.model_copy(update={"status": "revoked"}))) == []
    ten_days = never.model_copy(update={"created_at": NOW - 10 * DAY})
    (finding,) = conditions(facts(ten_days), Settings(idle_days=7))
    assert finding.evidence["idle_days"] == 7


def test_the_key_the_connection_reads_with_is_never_idle_though_no_row_names_it() -> None:
    own = key("adm", scope="admin", listing=OWN_KEY_LISTING, last_usage_at=None, first_usage_at=None)
    assert conditions(facts(own.model_copy(update={"spend_7d": Decimal(0), "created_at": None}))) == []
    assert [f.kind for f in conditions(facts(own.model_copy(update={"listing": "OpenAI admin keys"})))] == [
        FindingKind.IDLE_KEY
    ], "another listing's admin key, unused, is"


def test_settings_are_read_from_the_environment_and_checked() -> None:
    settings = Settings.from_environment(
        {"CONNECTOR_HOST_IDLE_KEY_DAYS": "45", "CONNECTOR_HOST_WEB_UI_THRESHOLD": "25.50"}
    )
    assert settings == Settings(idle_days=45, new_key_days=7, web_ui_threshold=Decimal("25.50"))
    assert Settings.from_environment({}) == Settings()
    with pytest.raises(ConfigError, match="CONNECTOR_HOST_IDLE_KEY_DAYS"):
        Settings.from_environment({"CONNECTOR_HOST_IDLE_KEY_DAYS": "soon"})


# -- web-UI spend ----------------------------------------------------------------------------------------------
def test_a_persons_web_ui_spend_above_the_threshold_is_medium() -> None:
    spend = {("ann", "USD"): Decimal("10.01"), ("bob", "USD"): Decimal("10"), ("User key", "USD"): Decimal("50")}
    found = conditions(facts(person_spend=spend))
    assert [(f.kind, f.subject, f.severity) for f in found] == [
        (FindingKind.WEB_UI_SPEND, "User key", Severity.MEDIUM),
        (FindingKind.WEB_UI_SPEND, "ann", Severity.MEDIUM),
    ]
    assert found[1].evidence == {
        "person": "ann",
        "spend_30d": "10.01",
        "currency": "USD",
        "threshold": "10",
        "since": "2026-01-30T12:00:00Z",
    }
    assert found[0].message.startswith("Someone without a name spent 50.00 USD in fal's web UI")
    assert conditions(facts(person_spend=spend), Settings(web_ui_threshold=Decimal(100))) == []


# -- owners, admin keys, shared accounts -----------------------------------------------------------------------
def test_a_working_key_whose_owner_lost_access_is_high() -> None:
    (finding,) = conditions(facts(key("k1", owner="ann", owner_active=False)))
    assert (finding.kind, finding.severity, finding.evidence["owner_active"]) == (
        FindingKind.OWNER_GONE,
        Severity.HIGH,
        False,
    )
    assert "ann, who no longer has access" in finding.message
    assert conditions(facts(key("k1", owner_active=False, status="revoked"))) == []


def test_an_admin_key_with_its_own_traffic_this_week_is_high() -> None:
    (finding,) = conditions(facts(key("adm", scope="admin", spend_7d=Decimal("0.4"))))
    assert (finding.kind, finding.severity, finding.evidence["spend_7d"]) == (
        FindingKind.ADMIN_KEY_TRAFFIC,
        Severity.HIGH,
        "0.4",
    )
    assert conditions(facts(key("adm", scope="admin", last_usage_at=NOW - 8 * DAY))) == []


def test_a_second_connection_to_the_account_is_one_medium_finding_naming_every_connection() -> None:
    (finding,) = conditions(facts(shared_with=["fal-copy"], judge="acme"))
    assert (finding.kind, finding.subject, finding.severity) == (
        FindingKind.DUPLICATE_ACCOUNT,
        "acme-ai",
        Severity.MEDIUM,
    )
    assert finding.evidence == {
        "account": "acme-ai",
        "connector": "fal",
        "connections": ["acme", "fal-copy"],
        "judged_by": "acme",
    }
    assert "also connected as fal-copy" in finding.message and "kept on acme" in finding.message


def test_a_connection_that_does_not_judge_its_account_finds_nothing() -> None:
    busy = facts(
        key("k1", owner_active=False),
        key("adm", scope="admin"),
        shared_with=["acme-first"],
        person_spend={("ann", "USD"): Decimal(500)},
    )
    assert {f.kind for f in conditions(busy)} == {
        FindingKind.OWNER_GONE,
        FindingKind.ADMIN_KEY_TRAFFIC,
        FindingKind.WEB_UI_SPEND,
        FindingKind.DUPLICATE_ACCOUNT,
    }
    assert conditions(replace(busy, judge="acme")) == conditions(busy), "the judge is this connection"
    assert conditions(replace(busy, judge="acme-first")) == []


def connection(name: str, *, made: int, account: str | None = "acme-ai", **fields: Any) -> Connection:
    values: dict[str, Any] = {"connector": "fal", "config": {}, "state": ConnectionState.CONNECTED}
    return Connection(name=name, account=account, created_at=NOW + made * DAY, **(values | fields))


def test_the_judge_of_an_account_is_the_connection_made_first_whichever_synced_last() -> None:
    first = connection("zeta", made=0, last_success_at=NOW)
    later = connection("alpha", made=1, last_success_at=NOW + 2 * DAY)
    other = connection("beta", made=-5, account="other-team")
    for name in ("zeta", "alpha"):
        account = account_of(name, [later, other, first])
        assert (account.judge, account.members) == ("zeta", ("alpha", "zeta"))
    assert account_of("zeta", [first, later]).others == ("alpha",)
    assert account_of("alpha", [first, later]).others == ("alpha",), "the judge's others, whoever asks"
    assert account_of("beta", [first, later, other]) == account_of("beta", [other])
    assert account_of("beta", [other]).members == ("beta",) and account_of("beta", [other]).others == ()
    twins = [connection("b", made=0), connection("a", made=0)]
    assert account_of("b", twins).judge == "a", "made in the same second: the first by name"


@pytest.mark.parametrize(
    ("state", "judge", "members"),
    [
        (ConnectionState.ERROR, "first", ("first", "later")),
        (ConnectionState.RECONNECT_REQUIRED, "later", ("first", "later")),
        (ConnectionState.DISCONNECTED, "later", ("later",)),
    ],
    ids=["a failed sync changes nothing", "a key to replace hands over", "disconnected leaves"],
)
def test_the_judge_changes_only_when_a_person_must_act_on_it(
    state: ConnectionState, judge: str, members: tuple[str, ...]
) -> None:
    first = connection("first", made=0, state=state)
    account = account_of("later", [first, connection("later", made=1)])
    assert (account.judge, account.members) == (judge, members)
    assert set(account.others) == {"first", "later"} - {judge}, "a disconnected connection's findings are taken over"
    stuck = [first.model_copy(update={"state": ConnectionState.RECONNECT_REQUIRED}), connection("later", made=1)]
    stuck[1] = stuck[1].model_copy(update={"state": ConnectionState.RECONNECT_REQUIRED})
    assert account_of("later", stuck).judge == "first", "when every key needs replacing, still the first made"


def test_a_connection_without_an_account_judges_itself() -> None:
    lonely = connection("solo", made=0, account=None)
    assert account_of("solo", [lonely, connection("x", made=-1, account=None)]).judge == "solo"


# -- spikes and new models -------------------------------------------------------------------------------------
def days_ago(n: int) -> str:
    return (NOW - n * DAY).strftime("%Y-%m-%d")


def history(key_id: str = "k1", model: str = "fal-ai/flux/dev", days: int = 20) -> dict[Any, Decimal]:
    return {(key_id, days_ago(n), model, "USD"): Decimal("1.00") + Decimal(n % 3) / 100 for n in range(2, days)}


def test_a_keys_day_far_above_its_usual_is_a_spike_naming_day_spend_baseline_and_model() -> None:
    spend = history() | {("k1", days_ago(0), "fal-ai/flux/dev", "USD"): Decimal("9.5")}
    (finding,) = conditions(facts(key("k1"), **key_activity(spend, NOW)))
    assert (finding.kind, finding.subject, finding.subject_label, finding.severity) == (
        FindingKind.SPEND_SPIKE,
        "k1",
        "k1 name",
        Severity.MEDIUM,
    )
    evidence = finding.evidence
    assert (evidence["day"], evidence["spend"], evidence["currency"], evidence["model"]) == (
        "2026-03-01",
        "9.5",
        "USD",
        "fal-ai/flux/dev",
    )
    assert evidence["baseline_median"] == "1.01" and evidence["new_models"] == []
    assert "so far" in finding.message


def test_a_model_the_key_never_used_in_the_30_days_before_is_news_once_it_has_history() -> None:
    spend = history() | {("k1", days_ago(1), "fal-ai/veo3", "USD"): Decimal("0.5")}
    (finding,) = conditions(facts(key("k1"), **key_activity(spend, NOW)))
    assert (finding.evidence["model"], finding.evidence["new_models"], finding.evidence["day"]) == (
        "fal-ai/veo3",
        ["fal-ai/veo3"],
        days_ago(1),
    )
    assert "started using fal-ai/veo3" in finding.message
    # A key with no history before: its first model is not news.
    first = {("k1", days_ago(1), "fal-ai/veo3", "USD"): Decimal(1)}
    assert conditions(facts(key("k1"), **key_activity(first, NOW))) == []
    # The same model used 20 days ago is not new.
    old = history() | {
        ("k1", days_ago(20), "fal-ai/veo3", "USD"): Decimal(1),
        ("k1", days_ago(1), "fal-ai/veo3", "USD"): Decimal(1),
    }
    assert conditions(facts(key("k1"), **key_activity(old, NOW))) == []


def test_a_new_model_is_no_news_on_a_key_with_less_than_a_week_of_history() -> None:
    # A connection backfilled a few days ago has not seen what its keys usually run yet.
    short = history(days=6) | {("k1", days_ago(1), "fal-ai/veo3", "USD"): Decimal("0.5")}
    assert conditions(facts(key("k1"), **key_activity(short, NOW))) == []
    week = history(days=9) | {("k1", days_ago(1), "fal-ai/veo3", "USD"): Decimal("0.5")}
    assert only(conditions(facts(key("k1"), **key_activity(week, NOW))), FindingKind.SPEND_SPIKE)


def test_steady_spend_is_no_spike() -> None:
    spend = history() | {("k1", days_ago(0), "fal-ai/flux/dev", "USD"): Decimal("1.02")}
    assert conditions(facts(key("k1"), **key_activity(spend, NOW))) == []


def test_without_a_listing_only_the_row_kinds_are_judged() -> None:
    shadow = key("shadow", listed=False, first_listed_at=None, last_listed_at=None)
    found = conditions(
        facts(shadow, key("adm", scope="admin"), person_spend={("ann", "USD"): Decimal(20)}), listed=False
    )
    assert {f.kind for f in found} == {FindingKind.WEB_UI_SPEND}
