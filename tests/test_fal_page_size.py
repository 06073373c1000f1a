"""The fal connector asks for full pages: the largest fal accepts, found by stepping down and remembered per
connection. Against the simulator over real HTTP, in its stand-in mode (fal at its least generous: 50 items a page
without a ``limit``, at most 200, a 400 ``validation_error`` about ``limit`` above that) and its default one."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from connector_sdk.errors import ApiError
from connector_sdk.host import Host
from connector_sdk.models import RunOutcome, SyncContext, SyncRun, connector_view, floor_hour, utcnow
from connector_sdk.sync import sync_now
from connectors.fal.connector import PAGE_SIZE_STATE, learned_page_size, refuses_limit, smaller_page_size
from connectors.fal.simulator import FalSimulator, Fault
from tests.conftest import TEAM
from tests.helpers import stored_rows, truth_rows

# A team busy enough that a 4-day backfill is ~30 pages of 200: one refused request must stay within 5%.
BUSY = {"n_keys": 10, "n_models": 10, "models_per_source": 8, "activity": 10}
LIMIT_TOO_LARGE = json.dumps({"error": {"type": "validation_error", "message": "limit is too large"}}).encode()


@pytest.fixture
def stand_in() -> Iterator[FalSimulator]:
    with FalSimulator(now=floor_hour(utcnow()), seed=7, stand_in=True) as simulator:
        yield simulator


def connect(host: Host, sim: FalSimulator, name: str = "fal-test", team: dict[str, Any] | None = None, **config: Any):
    key = sim.add_account(TEAM, **(team or {}))
    host.connect("fal", name, {"api_key": key, "base_url": sim.base_url, "backfill_days": 4, **config})
    return name


def remembered(host: Host, name: str) -> dict[str, Any]:
    """What the connector remembered for the connection (the stored state without the facts the host keeps)."""
    return connector_view(host.store.connector_state(name))


def usage_limits(sim: FalSimulator, since: int = 0) -> list[str | None]:
    """The ``limit`` of each ``/models/usage`` request the simulator received (from the ``since``-th request on)."""
    return [(r["query"].get("limit") or [None])[0] for r in sim.requests[since:] if r["path"].endswith("/models/usage")]


def refused(sim: FalSimulator, since: int = 0) -> int:
    return sum(1 for r in sim.requests[since:] if r["path"].endswith("/models/usage") and r["status"] == 400)


def items_of(sim: FalSimulator, run: SyncRun) -> int:
    return len(sim.truth(TEAM, run.window_start, run.window_end))


def matches_truth(host: Host, sim: FalSimulator, run: SyncRun, name: str = "fal-test") -> bool:
    return stored_rows(host.store.iter_rows(name)) == truth_rows(sim.truth(TEAM, run.window_start, run.window_end))


# -- against fal at its least generous ------------------------------------------------------------------------
def test_a_backfill_asks_for_full_pages_within_5_percent_of_the_fewest_requests(
    host: Host, stand_in: FalSimulator
) -> None:
    name = connect(host, stand_in, team=BUSY)
    run = sync_now(host, name)
    assert run.outcome == RunOutcome.SUCCEEDED, run.message

    fewest = math.ceil(items_of(stand_in, run) / 200)
    assert fewest >= 20, "the team is busy enough for the 5% to mean something"
    assert len(usage_limits(stand_in)) <= 1.05 * fewest
    assert usage_limits(stand_in)[:2] == ["1000", "200"], "fal's message names its maximum: asked for at once"
    assert refused(stand_in) == 1
    assert matches_truth(host, stand_in, run)


def test_the_page_size_that_worked_is_remembered_and_the_next_sync_starts_there(
    host: Host, stand_in: FalSimulator
) -> None:
    name = connect(host, stand_in)
    first = sync_now(host, name)
    assert remembered(host, name) == {PAGE_SIZE_STATE: 200}
    (status,) = host.statuses(name)
    assert status.facts == {"usage page size": "200 rows, the largest fal accepted"}

    stand_in.revise(TEAM, stand_in.now - timedelta(hours=3))
    before = len(stand_in.requests)
    run = sync_now(host, name)

    assert run.outcome == RunOutcome.SUCCEEDED, run.message
    assert refused(stand_in, before) == 0
    assert set(usage_limits(stand_in, before)) == {"200"}
    assert matches_truth(host, stand_in, first.model_copy(update={"window_end": run.window_end}))


def test_what_was_learned_is_written_once_with_the_first_page(
    host: Host, stand_in: FalSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = connect(host, stand_in)
    written: list[dict[str, Any] | None] = []
    commit_page = host.store.commit_page

    def recording(*args: Any, **kwargs: Any) -> None:
        written.append(kwargs.get("state"))
        commit_page(*args, **kwargs)

    monkeypatch.setattr(host.store, "commit_page", recording)
    run = sync_now(host, name)

    assert run.pages > 2
    learned = [None if state is None else connector_view(state) for state in written]
    assert learned == [{PAGE_SIZE_STATE: 200}] + [None] * (run.pages - 1)


def test_what_was_learned_is_kept_only_with_a_committed_page(host: Host, stand_in: FalSimulator) -> None:
    name = connect(host, stand_in)
    stand_in.inject(Fault(path="/models/usage", status=503, after=1, times=100))  # after the refused 1000

    assert sync_now(host, name).outcome == RunOutcome.GAVE_UP
    assert remembered(host, name) == {}, "no page was committed, so nothing was remembered"

    stand_in.clear_faults()
    assert sync_now(host, name).outcome == RunOutcome.SUCCEEDED
    assert remembered(host, name) == {PAGE_SIZE_STATE: 200}


def test_a_configured_page_size_overrides_and_is_not_remembered(host: Host, stand_in: FalSimulator) -> None:
    name = connect(host, stand_in, page_size=120)
    run = sync_now(host, name)

    assert run.outcome == RunOutcome.SUCCEEDED, run.message
    assert set(usage_limits(stand_in)) == {"120"}
    assert refused(stand_in) == 0
    assert remembered(host, name) == {}
    assert matches_truth(host, stand_in, run)


def test_a_configured_page_size_fal_refuses_fails_once_and_says_what_to_change(
    host: Host, stand_in: FalSimulator
) -> None:
    name = connect(host, stand_in, page_size=500)
    run = sync_now(host, name)

    assert run.outcome == RunOutcome.FAILED
    assert "page size 500" in run.message and "page_size" in run.message and "at most 200" in run.message
    assert usage_limits(stand_in) == ["500"], "the admin's size is not second-guessed"


def test_without_a_named_maximum_it_steps_down_1000_500_200(host: Host, stand_in: FalSimulator) -> None:
    name = connect(host, stand_in)
    stand_in.inject(Fault(path="/models/usage", status=400, body=LIMIT_TOO_LARGE, times=2))
    run = sync_now(host, name)

    assert run.outcome == RunOutcome.SUCCEEDED, run.message
    assert usage_limits(stand_in)[:4] == ["1000", "500", "200", "200"]
    assert remembered(host, name) == {PAGE_SIZE_STATE: 200}


def test_a_400_that_is_not_about_limit_is_an_error_as_before(host: Host, stand_in: FalSimulator) -> None:
    name = connect(host, stand_in)
    body = json.dumps({"error": {"type": "validation_error", "message": "'start' must be before 'end'"}}).encode()
    stand_in.inject(Fault(path="/models/usage", status=400, body=body, times=100))
    run = sync_now(host, name)

    assert run.outcome == RunOutcome.FAILED
    assert "'start' must be before 'end'" in run.message
    assert usage_limits(stand_in) == ["1000"], "no second try"
    assert remembered(host, name) == {}


def test_when_fal_refuses_even_the_smallest_page_it_stops(host: Host, stand_in: FalSimulator) -> None:
    name = connect(host, stand_in)
    stand_in.inject(Fault(path="/models/usage", status=400, body=LIMIT_TOO_LARGE, times=100))
    run = sync_now(host, name)

    assert run.outcome == RunOutcome.FAILED
    assert "limit is too large" in run.message
    assert usage_limits(stand_in) == ["1000", "500", "200", "100", "50"]


# -- against a generous fal -----------------------------------------------------------------------------------
def test_a_fal_that_serves_1000_a_page_is_asked_for_1000(host: Host) -> None:
    with FalSimulator(now=floor_hour(utcnow()), seed=7) as generous:
        name = connect(host, generous, team=BUSY)
        run = sync_now(host, name)

        assert run.outcome == RunOutcome.SUCCEEDED, run.message
        assert set(usage_limits(generous)) == {"1000"}
        assert len(usage_limits(generous)) == math.ceil(items_of(generous, run) / 1000)
        assert remembered(host, name) == {PAGE_SIZE_STATE: 1000}
        assert matches_truth(host, generous, run)


@pytest.mark.parametrize(
    ("simulator", "config"),
    [
        ({"stand_in": True}, {}),
        ({"stand_in": True}, {"page_size": 33}),
        ({}, {}),
        ({}, {"page_size": 200}),
        ({"max_page_size": 7}, {}),
    ],
    ids=["stand-in", "stand-in, 33 a page", "generous", "generous, 200 a page", "capped silently at 7"],
)
def test_a_backfill_stores_exactly_the_truth_whatever_the_page_size(
    host: Host, simulator: dict[str, Any], config: dict[str, Any]
) -> None:
    with FalSimulator(now=floor_hour(utcnow()), seed=7, **simulator) as sim:
        name = connect(host, sim, team={"n_keys": 4, "n_models": 6}, **config)
        run = sync_now(host, name)
        assert run.outcome == RunOutcome.SUCCEEDED, run.message
        assert matches_truth(host, sim, run)


# -- the pieces -----------------------------------------------------------------------------------------------
def test_a_remembered_size_is_used_only_when_it_is_a_sensible_one() -> None:
    assert learned_page_size({PAGE_SIZE_STATE: 200}) == 200
    assert learned_page_size({}) is None
    for nonsense in ("200", 0, 5000, True, None, [200]):
        assert learned_page_size({PAGE_SIZE_STATE: nonsense}) is None


def test_the_next_size_is_the_maximum_fal_names_else_the_next_step_down() -> None:
    assert smaller_page_size(1000, "validation_error: Parameter 'limit' must be at most 200, got 1000") == 200
    assert smaller_page_size(1000, "validation_error: limit: Input should be less than or equal to 250") == 250
    assert smaller_page_size(1000, "validation_error: limit is too large") == 500
    assert smaller_page_size(200, "validation_error: limit must be at most 500") == 100, "never a larger size"
    assert smaller_page_size(50, "validation_error: limit is too large") is None


def test_only_fals_validation_error_about_limit_counts_as_a_refused_page_size() -> None:
    def error(status: int, detail: str) -> ApiError:
        return ApiError("fal refused /models/usage", status=status, detail=detail)

    assert refuses_limit(error(400, "validation_error: Parameter 'limit' must be at most 200, got 1000"))
    assert not refuses_limit(error(400, "validation_error: 'start' must be before 'end'"))
    assert not refuses_limit(error(404, "not_found: limit"))
    assert not refuses_limit(error(400, "server_error: unlimited sorrow"))


def test_a_connector_remembers_plain_json_and_the_host_takes_each_change_once() -> None:
    context = SyncContext(
        connector="fal", connection="c", account="a", synced_at=utcnow(), state={"kept": 1, "usage_page_size": 1000}
    )
    assert context.take_state() is None, "nothing remembered yet"
    context.remember("usage_page_size", 200)
    assert context.take_state() == {"kept": 1, "usage_page_size": 200}
    assert context.take_state() is None
    for not_json in (Decimal("1.5"), utcnow(), float("nan"), {1, 2}):
        with pytest.raises(ValueError, match="not plain JSON"):
            context.remember("bad", not_json)
    with pytest.raises(ValueError, match="over the"):
        context.remember("huge", "x" * 70_000)
    assert context.take_state() is None, "a refused value is not kept"
