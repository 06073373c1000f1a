"""Paging parts any vendor reuses: has_more listings, day spans of a window, Unix bucket times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from connector_sdk.errors import ResponseError
from connector_sdk.models import SyncWindow, UsageRow
from connector_sdk.paging import day_pages, day_spans, follow_cursor, has_more_cursor, unix_time
from tests.store_fixtures import hour, usage_row

T0 = datetime(2026, 3, 4, 15, tzinfo=UTC)


def test_a_has_more_listing_is_followed_by_its_cursor_field_until_has_more_is_false() -> None:
    pages = {
        None: {"data": [1], "has_more": True, "last_id": "a"},
        "a": {"data": [2], "has_more": True, "last_id": "b"},
        "b": {"data": [3], "has_more": False, "last_id": "c"},
    }
    asked: list[Any] = []

    def fetch(cursor: str | None) -> Any:
        asked.append(cursor)
        return pages[cursor]

    seen = [p["data"] for p in follow_cursor(fetch, what="x", cursor_of=has_more_cursor("last_id", what="x"))]
    assert seen == [[1], [2], [3]] and asked == [None, "a", "b"]


@pytest.mark.parametrize("page", [{"data": []}, {"has_more": "yes"}, {"has_more": True, "next_page": None}])
def test_a_listing_without_has_more_or_its_cursor_is_an_error_not_a_guess(page: dict[str, Any]) -> None:
    with pytest.raises(ResponseError, match="has_more"):
        list(follow_cursor(lambda _: page, what="x", cursor_of=has_more_cursor("next_page", what="x")))


def test_a_window_is_cut_at_every_utc_midnight() -> None:
    window = SyncWindow(start=T0, end=T0 + timedelta(days=2, hours=1))
    spans = [(s.start.isoformat(), s.end.isoformat()) for s in day_spans(window)]
    assert spans == [
        ("2026-03-04T15:00:00+00:00", "2026-03-05T00:00:00+00:00"),
        ("2026-03-05T00:00:00+00:00", "2026-03-06T00:00:00+00:00"),
        ("2026-03-06T00:00:00+00:00", "2026-03-06T16:00:00+00:00"),
    ]


def test_unix_times_are_whole_seconds() -> None:
    assert unix_time(int(T0.timestamp()), what="x") == T0
    for bad in ("1772636400", 1.5, True, 10**20):
        with pytest.raises(ResponseError):
            unix_time(bad, what="x")


def test_day_pages_read_several_days_at_once_and_give_each_day_its_own_page() -> None:
    start = hour(12)  # noon: the first day is partial
    window = SyncWindow(start=start, end=start + timedelta(days=4))
    reads: list[tuple[datetime, datetime]] = []

    def read(first: datetime, last: datetime) -> list[UsageRow]:
        reads.append((first, last))
        return [usage_row(at=h) for h in range(12, 12 + 96) if first <= hour(h) < last and h % 6 == 0]

    pages = list(day_pages(window, read, days_per_read=3, requests_sent=lambda: len(reads)))
    assert [(p.covers_from, p.complete_through) for p in pages] == [(s.start, s.end) for s in day_spans(window)]
    midnight = pages[3].covers_from
    assert reads == [(start, midnight), (midnight, window.end)]
    assert all(p.covers_from <= r.period_start < p.complete_through for p in pages for r in p.rows)
    assert sum(len(p.rows) for p in pages) == 16
    assert [p.requests for p in pages] == [1, 0, 0, 1, 0]
