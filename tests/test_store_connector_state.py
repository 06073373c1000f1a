"""The connector state each connection keeps between syncs, on every backend: written only with a committed page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from connector_sdk.errors import UnknownConnection
from connector_sdk.models import SyncWindow
from connector_sdk.stores import Store, open_store
from tests.store_fixtures import hour, page, usage_row
from tests.store_fixtures import store_fixture as store_fixture
from tests.store_fixtures import store_url_fixture as store_url_fixture

WINDOW = SyncWindow(start=hour(0), end=hour(24))


def add(store: Store, name: str = "acme") -> None:
    store.add_connection(
        name=name, connector="fal", config={"backfill_days": 3}, credential=b"sealed", account="acme-ai", now=hour(0)
    )
    store.start_run(name, f"run-{name}", WINDOW, now=hour(0))


def commit(store: Store, start: int, end: int, *, name: str = "acme", state: dict[str, Any] | None = None) -> None:
    rows = [usage_row(name, at) for at in range(start, end)]
    store.commit_page(name, f"run-{name}", page(rows, start, end), watermark=hour(end), state=state)


def test_a_new_connection_remembers_nothing(store: Store) -> None:
    add(store)
    assert store.connector_state("acme") == {}


def test_the_state_committed_with_a_page_is_the_state_read_back(store: Store) -> None:
    add(store)
    state = {"usage_page_size": 200, "narrowed": ["org-1", "wörk space"], "probe": {"at": "2026-01-05", "ok": True}}
    commit(store, 0, 2, state=state)
    assert store.connector_state("acme") == state


def test_a_page_without_state_leaves_the_state_as_it_was(store: Store) -> None:
    add(store)
    commit(store, 0, 2, state={"usage_page_size": 500})
    commit(store, 2, 4)
    assert store.connector_state("acme") == {"usage_page_size": 500}
    commit(store, 4, 6, state={"usage_page_size": 200})
    assert store.connector_state("acme") == {"usage_page_size": 200}, "a new state replaces the old one whole"


def test_a_page_that_fails_to_commit_leaves_the_state_as_it_was(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    add(store)
    commit(store, 0, 2, state={"usage_page_size": 1000})

    def broken(*args: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(store, "_put_rows", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        commit(store, 2, 4, state={"usage_page_size": 200})
    monkeypatch.undo()

    assert store.connector_state("acme") == {"usage_page_size": 1000}
    assert store.count_rows("acme") == 2


def test_each_connection_has_its_own_state(store: Store) -> None:
    add(store, "acme")
    add(store, "globex")
    commit(store, 0, 1, name="acme", state={"usage_page_size": 200})
    assert store.connector_state("globex") == {}


def test_the_state_goes_with_its_connection(store: Store) -> None:
    add(store)
    commit(store, 0, 1, state={"usage_page_size": 200})
    store.delete_connection("acme")
    with pytest.raises(UnknownConnection):
        store.connector_state("acme")
    add(store)
    assert store.connector_state("acme") == {}, "a connection made again under the name starts afresh"


def test_the_state_outlives_the_process_that_wrote_it(store_url: str, tmp_path: Path) -> None:
    first = open_store(store_url, home=tmp_path)
    try:
        add(first)
        commit(first, 0, 1, state={"usage_page_size": 200})
    finally:
        first.close()
    second = open_store(store_url, home=tmp_path)
    try:
        assert second.connector_state("acme") == {"usage_page_size": 200}
    finally:
        second.close()
