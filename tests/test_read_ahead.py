"""Read-ahead: the connector's next page is fetched while the host commits the last one, and nothing else changes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest

from connector_sdk.errors import CredentialError
from connector_sdk.models import Page
from connector_sdk.sync import read_ahead
from tests.helpers import H0


def pages(n: int, *, produced: list[int] | None = None, fail_at: int | None = None) -> Iterator[Page]:
    for i in range(n):
        if i == fail_at:
            raise CredentialError("fal rejected the API key", kind="invalid", status=401)
        if produced is not None:
            produced.append(i)
        yield Page(rows=[], covers_from=H0 + timedelta(hours=i), complete_through=H0 + timedelta(hours=i + 1))


def test_pages_arrive_in_order_and_all_of_them() -> None:
    got = [page.covers_from for page in read_ahead(pages(50))]
    assert got == [H0 + timedelta(hours=i) for i in range(50)]


def test_an_error_of_the_connector_reaches_the_host_as_it_was_raised_after_the_pages_before_it() -> None:
    got = []
    with pytest.raises(CredentialError, match="rejected") as raised:
        for page in read_ahead(pages(10, fail_at=4)):
            got.append(page)
    assert len(got) == 4 and raised.value.kind == "invalid"


def test_the_producer_runs_at_most_depth_pages_ahead_of_the_host() -> None:
    produced: list[int] = []
    stream = read_ahead(pages(100, produced=produced), depth=2)
    next(stream)
    threading.Event().wait(0.2)  # time enough for the producer to run ahead as far as it may
    # one handed over, two waiting, one made and waiting for room
    assert len(produced) <= 4
    stream.close()


def test_a_host_that_stops_early_stops_the_producer_and_closes_the_connector_s_stream() -> None:
    closed = threading.Event()

    def connector_stream() -> Iterator[Page]:
        try:
            yield from pages(1000)
        finally:
            closed.set()

    stream = read_ahead(connector_stream())
    next(stream)
    stream.close()
    assert closed.is_set()
    assert not [t for t in threading.enumerate() if t.name == "read-ahead"]
