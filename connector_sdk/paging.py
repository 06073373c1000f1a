"""Paging mechanisms that any vendor connector can reuse: cursor walking, hour-bucket pages, day spans."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import MAXYEAR, MINYEAR, UTC, datetime, timedelta
from typing import Any

from connector_sdk.errors import ResponseError
from connector_sdk.models import (
    Page,
    StoredRow,
    SyncWindow,
    UsageRow,
    floor_hour,
    merge_duplicates,
    merge_stored_duplicates,
    stored_rows,
)

DAY = timedelta(days=1)


def follow_cursor(
    fetch: Callable[[str | None], Any],
    *,
    what: str,
    cursor_field: str = "next_cursor",
    cursor_of: Callable[[Any], Any] | None = None,
) -> Iterator[Any]:
    """Yield every page of a cursor-paged listing, calling ``fetch(cursor)`` with ``None`` first.

    Pages are JSON objects whose ``cursor_field`` holds the next cursor, unless ``cursor_of`` reads the cursor of
    whatever ``fetch`` returns (a typed page, say). A cursor the server has already handed out means it would page
    forever: that is an error, not a loop.
    """
    seen: set[str] = set()
    cursor: str | None = None
    while True:
        page = fetch(cursor)
        if cursor_of is None and not isinstance(page, dict):
            raise ResponseError(f"{what}: expected a JSON object, got {type(page).__name__}")
        yield page
        cursor = page.get(cursor_field) if cursor_of is None else cursor_of(page)
        if cursor is None:
            return
        if not isinstance(cursor, str) or not cursor:
            raise ResponseError(f"{what}: field {cursor_field!r} must be a non-empty string or null, got {cursor!r}")
        if cursor in seen:
            raise ResponseError(f"{what}: the server repeated cursor {cursor!r}; stopping instead of looping")
        seen.add(cursor)


def has_more_cursor(cursor_field: str, *, what: str) -> Callable[[Any], Any]:
    """A ``cursor_of`` for :func:`follow_cursor` over listings that say ``has_more``: the next cursor is the page's
    ``cursor_field`` (``next_page``, ``last_id``...) while ``has_more`` is true, and paging stops when it is false."""

    def cursor_of(page: Any) -> Any:
        if not isinstance(page, dict):
            raise ResponseError(f"{what}: expected a JSON object, got {type(page).__name__}")
        more = page.get("has_more")
        if not isinstance(more, bool):
            raise ResponseError(f"{what}: field 'has_more' must be true or false, got {more!r}")
        if not more:
            return None
        cursor = page.get(cursor_field)
        if cursor is None:
            raise ResponseError(f"{what}: 'has_more' is true but field {cursor_field!r} is missing or null")
        return cursor

    return cursor_of


def floor_day(moment: datetime) -> datetime:
    """The start (00:00 UTC) of the UTC day that contains ``moment``."""
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def day_spans(window: SyncWindow) -> Iterator[SyncWindow]:
    """``window`` cut at every UTC midnight inside it: the spans of a connector whose vendor bills by the day."""
    start = window.start
    while start < window.end:
        end = min(floor_day(start) + DAY, window.end)
        yield SyncWindow(start=start, end=end)
        start = end


def day_pages(
    window: SyncWindow,
    read: Callable[[datetime, datetime], list[UsageRow]],
    *,
    days_per_read: int,
    requests_sent: Callable[[], int],
) -> Iterator[Page]:
    """One page per UTC day of ``window`` (the first and last may be partial), for a vendor that bills by the day:
    ``read(start, end)`` fetches the rows of ``days_per_read`` days at once, and each day's rows become its page.
    ``requests_sent`` is the client's request counter, so each page says what it cost."""
    spans = list(day_spans(window))
    sent = requests_sent()
    for i in range(0, len(spans), days_per_read):
        days = spans[i : i + days_per_read]
        rows = read(days[0].start, days[-1].end)
        for span in days:
            in_span = [row for row in rows if span.start <= row.period_start < span.end]
            yield Page(
                rows=merge_duplicates(in_span),
                covers_from=span.start,
                complete_through=span.end,
                requests=requests_sent() - sent,
            )
            sent = requests_sent()


def unix_time(value: Any, *, what: str) -> datetime:
    """An aware UTC instant from whole Unix seconds (a JSON integer), as vendors' bucket times are sent."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ResponseError(f"{what}: expected whole Unix seconds, got {value!r}")
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        raise ResponseError(f"{what}: Unix time {value} is out of range") from None


class HourlyPages:
    """Turns a stream of API pages of hour buckets into :class:`Page`s the host can commit.

    A bucket may continue on the next API page, so the last bucket of each API page is held back until a later
    bucket (or the end) proves it complete. Buckets must arrive in ascending order inside the window. A bucket's rows
    are row objects or rows in stored form (:data:`~connector_sdk.models.StoredRow`); pages hold the stored form.
    """

    def __init__(self, window: SyncWindow, *, what: str) -> None:
        self.window = window
        self.what = what
        self._covered = window.start
        self._open_hour: datetime | None = None
        self._open_rows: list[StoredRow] = []

    def feed(
        self, buckets: Iterable[tuple[datetime, Sequence[UsageRow] | Sequence[StoredRow]]], requests: int = 1
    ) -> Page | None:
        """Add one API page's buckets; return the hours this page completed, or ``None`` if it completed none."""
        done: list[StoredRow] = []
        for hour, rows in buckets:
            if hour < self.window.start or hour >= self.window.end:
                raise ResponseError(f"{self.what}: bucket {hour.isoformat()} lies outside the requested window")
            if self._open_hour is not None and hour < self._open_hour:
                raise ResponseError(
                    f"{self.what}: bucket {hour.isoformat()} arrived after {self._open_hour.isoformat()}; "
                    "buckets must be in ascending order"
                )
            stored = stored_rows(rows) if rows and isinstance(rows[0], UsageRow) else rows
            if hour == self._open_hour:
                self._open_rows.extend(stored)
                continue
            done.extend(self._open_rows)
            self._open_hour, self._open_rows = hour, list(stored)
        # Everything before the open bucket is complete.
        through = self._open_hour if self._open_hour is not None else self._covered
        if through <= self._covered:
            return None
        page = Page(
            stored=merge_stored_duplicates(done),
            covers_from=self._covered,
            complete_through=through,
            requests=requests,
        )
        self._covered = through
        return page

    def finish(self, requests: int = 0) -> Page:
        """The last page: the open bucket and every empty hour up to the window's end."""
        page = Page(
            stored=merge_stored_duplicates(self._open_rows),
            covers_from=self._covered,
            complete_through=self.window.end,
            requests=requests,
        )
        self._covered, self._open_hour, self._open_rows = self.window.end, None, []
        return page


def hour_of(value: Any, *, what: str) -> datetime:
    """Parse a bucket timestamp (any UTC offset) to the aware UTC hour it starts."""
    if not isinstance(value, str):
        raise ResponseError(f"{what}: field 'bucket' must be a string, got {type(value).__name__}")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ResponseError(f"{what}: field 'bucket' is not an ISO 8601 timestamp: {value!r}") from None
    if moment.tzinfo is None:
        raise ResponseError(f"{what}: field 'bucket' has no UTC offset: {value!r}")
    if not MINYEAR < moment.year < MAXYEAR:
        # So near the ends of the calendar that the hour, or its end, cannot be a datetime in UTC.
        raise ResponseError(f"{what}: field 'bucket' is out of range: {value!r}")
    hour = floor_hour(moment)
    if hour != moment:
        raise ResponseError(f"{what}: bucket {value!r} does not start on a whole hour")
    return hour
