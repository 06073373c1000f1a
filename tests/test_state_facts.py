"""What a connector learned, shown: ``describe_state`` turns a connection's connector state into facts (label: text)
that the host keeps with the state, for ``status`` and the portal to show without loading any plugin. Through a real
host and store against the fal simulator, with fal's connector (it describes its learned page size) and throwaway
variants of it that describe nothing, too much or badly."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
from structlog.testing import capture_logs

import connector_sdk.sinks
from connector_sdk import hookimpl
from connector_sdk.connector import Connector
from connector_sdk.host import Host
from connector_sdk.models import STATE_FACTS, Page, RunOutcome, SyncContext, SyncWindow, connector_view, utcnow
from connector_sdk.plugins import get_plugin_manager
from connector_sdk.sync import MAX_STATE_FACTS, sync_now
from connectors.fal.connector import PAGE_SIZE_STATE, FalConnector
from connectors.fal.simulator import FalSimulator

LEARNED = {"usage page size": "1000 rows, the largest fal accepted"}


def plugins_with(connector: type[Connector]) -> Any:
    """A plugin manager whose ``fal`` connector is ``connector``, besides the built-in sinks."""

    class Plugin:
        @staticmethod
        @hookimpl
        def connector_sdk_register_connectors() -> list[type[Connector]]:
            return [connector]

    return get_plugin_manager(load_entrypoints=False, plugins=[Plugin, connector_sdk.sinks])


def describing(describe: Any) -> type[FalConnector]:
    """fal's connector with another ``describe_state``."""

    class Variant(FalConnector):
        @classmethod
        def describe_state(cls, state: Mapping[str, Any]) -> dict[str, str]:
            return describe(state)

    return Variant


class Watching(FalConnector):
    """fal's connector, noting the state each sync starts from."""

    seen: ClassVar[list[dict[str, Any]]] = []

    def sync(self, window: SyncWindow, context: SyncContext) -> Iterator[Page]:
        Watching.seen.append(dict(context.state))
        yield from super().sync(window, context)


@pytest.fixture
def open_host(home: Path, store_url: str) -> Iterator[Any]:
    opened: list[Host] = []

    def open_with(connector: type[Connector]) -> Host:
        for host in opened:
            host.close()
        opened.append(Host.open(home, store_url=store_url, plugins=plugins_with(connector)))
        return opened[-1]

    yield open_with
    opened[-1].close()


def connected(host: Host, sim: FalSimulator, admin_key: str) -> str:
    host.connect("fal", "fal-test", {"api_key": admin_key, "base_url": sim.base_url, "backfill_days": 1})
    return "fal-test"


def synced(host: Host, name: str) -> None:
    run = sync_now(host, name)
    assert run.outcome == RunOutcome.SUCCEEDED, run.message


def test_status_shows_what_the_connector_made_of_its_state_which_the_connector_never_sees(
    open_host: Any, sim: FalSimulator, admin_key: str
) -> None:
    host = open_host(Watching)
    name = connected(host, sim, admin_key)
    (before,) = host.statuses(name)
    assert before.facts == {}, "nothing learned before the first sync"

    synced(host, name)
    (status,) = host.statuses(name)
    assert status.facts == LEARNED
    assert host.store.connector_state(name) == {PAGE_SIZE_STATE: 1000, STATE_FACTS: LEARNED}

    Watching.seen.clear()
    synced(host, name)
    assert Watching.seen == [{PAGE_SIZE_STATE: 1000}], "the connector reads back only what it remembered"
    assert host.statuses(name)[0].facts == LEARNED


def test_a_connector_that_describes_nothing_keeps_its_state_as_it_wrote_it(
    open_host: Any, sim: FalSimulator, admin_key: str
) -> None:
    host = open_host(describing(lambda state: {}))
    name = connected(host, sim, admin_key)
    synced(host, name)
    assert host.store.connector_state(name) == {PAGE_SIZE_STATE: 1000}
    assert host.statuses(name)[0].facts == {}


def test_a_state_learned_before_its_connector_described_it_is_shown_after_the_next_sync(
    open_host: Any, sim: FalSimulator, admin_key: str
) -> None:
    older = open_host(describing(lambda state: {}))  # a version of the connector that described nothing
    name = connected(older, sim, admin_key)
    synced(older, name)

    host = open_host(FalConnector)  # a new version that describes the same, unchanged state
    assert host.statuses(name)[0].facts == {}, "facts come from syncs, not from reading the state"
    synced(host, name)
    assert host.statuses(name)[0].facts == LEARNED
    assert connector_view(host.store.connector_state(name)) == {PAGE_SIZE_STATE: 1000}


def _raises(state: Mapping[str, Any]) -> dict[str, str]:
    raise KeyError("usage_page_size")


@pytest.mark.parametrize(
    "describe",
    [
        _raises,
        lambda state: {"usage page size": 1000},
        lambda state: ["usage page size"],
        lambda state: {"page": "x" * MAX_STATE_FACTS},
    ],
    ids=["raises", "not text", "not a dict", "too long"],
)
def test_a_description_that_fails_shows_nothing_and_never_fails_the_sync(
    open_host: Any, sim: FalSimulator, admin_key: str, describe: Any
) -> None:
    host = open_host(describing(describe))
    name = connected(host, sim, admin_key)
    with capture_logs() as logs:
        synced(host, name)
    assert [e for e in logs if e["event"] == "connector_state_undescribed"], logs
    assert host.store.connector_state(name) == {PAGE_SIZE_STATE: 1000}, "what the connector learned is kept"
    assert host.statuses(name)[0].facts == {}


def test_the_facts_key_is_the_hosts_not_a_connectors_to_remember() -> None:
    context = SyncContext(connector="fal", connection="c", account="a", synced_at=utcnow())
    with pytest.raises(ValueError, match="describe_state"):
        context.remember(STATE_FACTS, {"cost source": "made up"})
    assert context.take_state() is None
