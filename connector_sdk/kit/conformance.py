"""The conformance suite: the standard tests every connector passes against its simulator.

A connector author writes a fixture, not the tests (as singer-sdk's ``get_tap_test_class`` and Airbyte's acceptance
tests do). The fixture subclasses :class:`ConnectorFixture`: the connector's id and plugin, how to build its
simulator, make an account, get an Admin key, a key without the needed scope and a bad key, the connector's config,
and how the vendor restates a period. Then, in a test module::

    from connector_sdk.kit.conformance import conformance_suite

    TestAcmeConformance = conformance_suite(AcmeFixture())

and pytest runs every check below against the real connector, over real HTTP to the simulator, and (for the checks
in :data:`STORE_CHECKS`) through a real host on a throwaway SQLite store, synced with :func:`~connector_sdk.sync
.sync_now`. ``conformance_suite(fixture, without=...)`` leaves named checks out of the class (not skipped: absent),
for a connector whose rows the store cannot hold yet. Each check is also a plain function of :data:`CHECKS` taking a
:class:`Session`, for use outside pytest.

The checks: ``check()`` names the account; a 401 key is a :class:`~connector_sdk.errors.CredentialError` of kind
``invalid`` and a 403 (wrong scope) key one of kind ``insufficient_scope``, each with advice and without the key;
pages are contiguous, rows lie inside their page, periods are whole hours aligned to their own length; only GET is
sent; no secret reaches logs, reprs or error messages; a connector that lists keys returns one
:class:`~connector_sdk.models.ListedKey` per key id, naming its listing, with no secret in any, and refuses a 401 key
with a :class:`~connector_sdk.errors.CredentialError` there too; and through the host: a re-sync changes nothing, a
restated period replaces the old rows, no secret is in the store file in plain text, and a key revoked during a sync
ends it ``reconnect_required``.

This module drives the host, so it sits at the top of the layers; connectors never import it, only their tests do.
It imports pytest only when :func:`conformance_suite` builds a test class.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from structlog.testing import capture_logs

from connector_sdk.connector import Connector
from connector_sdk.errors import CredentialError
from connector_sdk.host import Host
from connector_sdk.kit.simulator import Simulator
from connector_sdk.models import (
    ConnectionState,
    ListedKey,
    Page,
    RunOutcome,
    SyncContext,
    SyncWindow,
    UsageRow,
    floor_hour,
)
from connector_sdk.plugins import Plugins, get_plugin_manager
from connector_sdk.sync import sync_now

__all__ = [
    "CHECKS",
    "STORE_CHECKS",
    "ConnectorFixture",
    "Session",
    "conformance_suite",
]

HOUR = timedelta(hours=1)
CONNECTION = "conformance"

S = TypeVar("S", bound=Simulator)


class ConnectorFixture(Generic[S]):
    """What a connector author declares for the conformance suite; subclass it and fill in every method.

    ``connector_id`` is the connector's id, ``plugins`` the plugin module(s) that register it (``[connectors.acme]``),
    ``backfill_days`` how far back a first sync reads: long enough that a sync makes requests after its first page
    (a key revoked then must stop it).
    """

    connector_id: ClassVar[str]
    plugins: ClassVar[Sequence[object]]
    backfill_days: ClassVar[int] = 3

    def simulator(self) -> S:
        """A new, unstarted simulator of the vendor, its clock pinned (``now=``)."""
        raise NotImplementedError

    def make_account(self, sim: S) -> str:
        """Create an account with usage and return its name as the connector's ``check()`` reports it."""
        raise NotImplementedError

    def admin_key(self, sim: S, account: str) -> str:
        """A key that may read everything the connector reads."""
        raise NotImplementedError

    def non_admin_key(self, sim: S, account: str) -> str:
        """A valid key of the account that lacks the scope the connector needs: the vendor answers 403."""
        raise NotImplementedError

    def bad_key(self, sim: S) -> str:
        """A key of the right shape (the config accepts it) that the vendor does not know: it answers 401."""
        raise NotImplementedError

    def config(self, sim: S, key: str) -> dict[str, Any]:
        """The connector's config values for this simulator and key (``base_url``, ``api_key``, ...)."""
        raise NotImplementedError

    def restate(self, sim: S, account: str) -> SyncWindow:
        """Change a recent period at the vendor, as it does when it restates usage or cost, and return the
        period ``[start, end)`` whose rows change. It must lie within the lookback of a later sync."""
        raise NotImplementedError

    def revoke(self, sim: S, key: str) -> None:
        """Revoke ``key`` (as returned by :meth:`admin_key`) at the vendor: it gets 401 from now on."""
        sim.revoke_key(key)

    def secrets(self, key: str) -> list[str]:
        """The parts of ``key`` that must never be seen anywhere (the whole key; a vendor with ``id:secret``
        keys adds the secret half)."""
        return [key]


@dataclass
class Session:
    """One check's world: a started simulator with an account, and helpers to build connectors and hosts."""

    fixture: ConnectorFixture[Any]
    sim: Simulator
    account: str
    admin_key: str
    workdir: Path
    plugins: Plugins
    home: Path | None = None
    _made: list[Connector] = field(default_factory=list)

    @property
    def connector_class(self) -> type[Connector]:
        return self.plugins.connector(self.fixture.connector_id)

    def connector(self, key: str | None = None) -> Connector:
        """The connector with ``key`` (the Admin key by default), closed when the session ends."""
        cls = self.connector_class
        config = cls.config_model.model_validate(self.fixture.config(self.sim, key or self.admin_key))
        made = cls(config)
        self._made.append(made)
        return made

    def window(self) -> SyncWindow:
        """The window a first sync through the host asks for: ``backfill_days`` back to the current hour."""
        end = floor_hour(self.sim.now) + HOUR
        return SyncWindow(start=end - HOUR - timedelta(days=self.fixture.backfill_days), end=end)

    def context(self) -> SyncContext:
        return SyncContext(
            connector=self.fixture.connector_id, connection=CONNECTION, account=self.account, synced_at=self.sim.now
        )

    def read(self, window: SyncWindow, key: str | None = None) -> list[Page]:
        """Every page of a sync of ``window`` straight from the connector (no host, no store)."""
        return list(self.connector(key).sync(window, self.context()))

    @contextlib.contextmanager
    def host(self) -> Iterator[Host]:
        """A host on a new SQLite store in the session's directory, its clock the simulator's, with the
        connection ``conformance`` connected with the Admin key and ``backfill_days``."""
        home = self.home = Path(tempfile.mkdtemp(prefix="home-", dir=self.workdir))
        store_url = f"sqlite:///{home / 'connector-host.db'}"
        with Host.open(home, store_url=store_url, plugins=self.plugins, clock=lambda: self.sim.now) as host:
            values = {**self.fixture.config(self.sim, self.admin_key), "backfill_days": self.fixture.backfill_days}
            host.connect(self.fixture.connector_id, CONNECTION, values)
            yield host

    def secrets(self) -> list[str]:
        return self.fixture.secrets(self.admin_key)

    def close(self) -> None:
        for made in self._made:
            made.close()


@contextlib.contextmanager
def open_session(fixture: ConnectorFixture[Any], workdir: Path) -> Iterator[Session]:
    """Start the fixture's simulator, make its account and Admin key; stop everything afterwards."""
    plugins = get_plugin_manager(load_entrypoints=False, plugins=list(fixture.plugins))
    with fixture.simulator() as sim:
        account = fixture.make_account(sim)
        session = Session(fixture, sim, account, fixture.admin_key(sim, account), workdir, plugins)
        try:
            yield session
        finally:
            session.close()


# -- what the checks compare -----------------------------------------------------------------------------------
def _rows(pages: Sequence[Page]) -> list[UsageRow]:
    return [row for page in pages for row in page.rows]


def _stored(host: Host) -> dict[str, dict[str, Any]]:
    """The connection's stored rows by id, as exported (exact decimals as text)."""
    rows: dict[str, dict[str, Any]] = {}
    for row in host.store.iter_rows(CONNECTION):
        assert row.row_id not in rows, f"the store holds row {row.row_id} twice"
        rows[row.row_id] = row.export()
    return rows


def _leaks(secrets: Sequence[str], **places: str) -> list[str]:
    """The names of the places where any of ``secrets`` shows."""
    return [name for name, text in places.items() if any(secret in text for secret in secrets)]


def _refusal(session: Session, key: str) -> CredentialError:
    try:
        session.connector(key).check()
    except CredentialError as error:
        return error
    raise AssertionError("check() accepted a key the vendor refuses; it must raise CredentialError")


# -- the checks ------------------------------------------------------------------------------------------------
def check_names_the_account(session: Session) -> None:
    info = session.connector().check()
    assert info.account == session.account, (
        f"check() named {info.account!r}, the vendor's account is {session.account!r}"
    )


def a_401_key_is_invalid_with_advice(session: Session) -> None:
    key = session.fixture.bad_key(session.sim)
    error = _refusal(session, key)
    assert (error.kind, error.status) == ("invalid", 401), f"a 401 became kind {error.kind!r}, status {error.status}"
    assert len(str(error)) > 40, f"the message must say what to do, not only what failed: {error}"
    assert not _leaks(session.fixture.secrets(key), message=str(error), repr=repr(error)), "the key is in the error"


def a_403_key_lacks_the_scope_with_advice(session: Session) -> None:
    key = session.fixture.non_admin_key(session.sim, session.account)
    error = _refusal(session, key)
    assert (error.kind, error.status) == ("insufficient_scope", 403), (
        f"a 403 became kind {error.kind!r}, status {error.status}"
    )
    assert len(str(error)) > 40, f"the message must say which key to create instead: {error}"
    assert not _leaks(session.fixture.secrets(key), message=str(error), repr=repr(error)), "the key is in the error"


def pages_are_contiguous_and_periods_aligned(session: Session) -> None:
    connector = session.connector()
    window = connector.sync_window(session.window())
    assert window.start <= session.window().start and window.end == session.window().end, "sync_window narrowed"
    pages = list(connector.sync(window, session.context()))
    expected = window.start
    for page in pages:
        assert page.covers_from == expected, f"a page starts at {page.covers_from}, {expected} was due"
        assert page.complete_through > page.covers_from, f"an empty page range at {page.covers_from}"
        assert page.complete_through == floor_hour(page.complete_through), "a page ends inside an hour"
        for row in page.rows:
            assert page.covers_from <= row.period_start < page.complete_through, (
                f"a row of {row.period_start} lies outside its page [{page.covers_from}, {page.complete_through})"
            )
            length = row.period_end - row.period_start
            assert row.period_start == floor_hour(row.period_start) and length % HOUR == timedelta(0), (
                f"a row's period [{row.period_start}, {row.period_end}) is not whole hours"
            )
            if timedelta(days=1) % length == timedelta(0):  # an hour, a day: starts on a boundary of its length
                assert row.period_start.timestamp() % length.total_seconds() == 0, (
                    f"a {length} period starts at {row.period_start}, not on a {length} boundary"
                )
        expected = page.complete_through
    assert expected == window.end, f"the pages end at {expected}, the window at {window.end}"
    rows = _rows(pages)
    assert rows, "the account's usage gave no rows: make_account must create usage within backfill_days"
    assert len({row.row_id for row in rows}) == len(rows), "two rows share a natural key"


def only_get_is_sent(session: Session) -> None:
    connector = session.connector()
    connector.check()
    list(connector.sync(session.window(), session.context()))
    methods = {entry["method"] for entry in session.sim.requests}
    assert methods == {"GET"}, f"the connector sent {sorted(methods)}; a connector only reads"


def no_secret_in_logs_reprs_or_errors(session: Session) -> None:
    bad = session.fixture.bad_key(session.sim)
    with capture_logs() as logs:
        connector = session.connector()
        connector.check()
        pages = list(connector.sync(session.window(), session.context()))
        refused = _refusal(session, bad)
    secrets = [*session.secrets(), *session.fixture.secrets(bad)]
    leaks = _leaks(
        secrets,
        logs=repr(logs),
        connector=repr(connector),
        config=repr(connector.config),
        config_dump=str(connector.config.model_dump()),
        rows=repr(_rows(pages)[:50]),
        error=f"{refused} {refused!r}",
    )
    assert not leaks, f"a key shows in: {', '.join(leaks)}"


def listed_keys_are_unique_records_without_secrets(session: Session) -> None:
    keys = session.connector().list_keys()
    if keys is None:
        return  # the connector cannot list keys (the default): there is nothing more to check
    assert isinstance(keys, list) and keys, (
        "list_keys() returned no keys: make_account must create an account whose keys the vendor lists"
    )
    strays = [type(key).__name__ for key in keys if not isinstance(key, ListedKey)]
    assert not strays, f"list_keys() must return ListedKey records, not {', '.join(sorted(set(strays)))}"
    ids = [key.key_id for key in keys]
    twice = sorted({key_id for key_id in ids if ids.count(key_id) > 1})
    assert not twice, f"list_keys() names key(s) {', '.join(twice)} more than once"
    assert all(key.listing.strip() for key in keys), "every listed key must name the listing it came from"
    shown = "\n".join(f"{key!r} {key.model_dump_json()}" for key in keys)
    assert not _leaks(session.secrets(), keys=shown), "a key's secret shows in what list_keys() returned"
    bad = session.fixture.bad_key(session.sim)
    try:
        session.connector(bad).list_keys()
    except CredentialError as error:
        assert (error.kind, error.status) == ("invalid", 401), (
            f"a 401 became kind {error.kind!r}, status {error.status}"
        )
        assert not _leaks(session.fixture.secrets(bad), message=str(error)), "the key is in the error"
    else:
        raise AssertionError("list_keys() accepted a key the vendor refuses; it must raise CredentialError")


def a_resync_changes_nothing(session: Session) -> None:
    with session.host() as host:
        first = sync_now(host, CONNECTION)
        assert first.outcome == RunOutcome.SUCCEEDED, first.message
        before = _stored(host)
        assert before, "the first sync stored no rows"
        second = sync_now(host, CONNECTION)
        assert second.outcome == RunOutcome.SUCCEEDED, second.message
        after = _stored(host)
    assert after.keys() == before.keys(), f"{len(after.keys() ^ before.keys())} rows came or went on a re-sync"
    changed = [rid for rid in after if after[rid] != before[rid]]
    assert not changed, f"{len(changed)} rows changed on a re-sync, e.g. {before[changed[0]]} -> {after[changed[0]]}"


def a_restated_period_replaces_the_old_rows(session: Session) -> None:
    with session.host() as host:
        first = sync_now(host, CONNECTION)
        assert first.outcome == RunOutcome.SUCCEEDED, first.message
        before = _stored(host)
        period = session.fixture.restate(session.sim, session.account)
        second = sync_now(host, CONNECTION)
        assert second.outcome == RunOutcome.SUCCEEDED, second.message
        after = _stored(host)
        whole = SyncWindow(start=first.window_start, end=second.window_end)
    # What the vendor says now, read straight from the connector, is what the store must hold: nothing stale kept.
    vendor = {row.row_id: row.export() for row in _rows(session.read(whole))}
    assert after == vendor, (
        f"after the restated sync the store differs from the vendor in {len(after.keys() ^ vendor.keys())} row ids "
        f"and {sum(1 for rid in after.keys() & vendor.keys() if after[rid] != vendor[rid])} values"
    )

    def inside(row: dict[str, Any]) -> bool:
        return period.start <= datetime.fromisoformat(row["period_start"]) < period.end

    assert {rid: row for rid, row in before.items() if not inside(row)} == {
        rid: row for rid, row in after.items() if not inside(row)
    }, "rows outside the restated period changed"
    old = {rid: row for rid, row in before.items() if inside(row)}
    new = {rid: row for rid, row in after.items() if inside(row)}
    assert old != new, f"the restated period [{period.start}, {period.end}) still holds its old rows"


def no_secret_in_the_store(session: Session) -> None:
    with capture_logs() as logs, session.host() as host:
        run = sync_now(host, CONNECTION)
        assert run.outcome == RunOutcome.SUCCEEDED, run.message
        status = repr(host.statuses())
    assert session.home is not None
    # Every file of the home once the host is closed: the store, its journal, the credential key's file.
    stored = {
        str(path.relative_to(session.home)): path.read_bytes().decode("latin-1")
        for path in sorted(session.home.rglob("*"))
        if path.is_file()
    }
    assert any(name.endswith(".db") for name in stored), f"no store file in {sorted(stored)}"
    leaks = _leaks(session.secrets(), logs=repr(logs), status=status, **stored)
    assert not leaks, f"the key shows in plain text in: {', '.join(leaks)}"


def a_key_revoked_during_a_sync_ends_it_reconnect_required(session: Session) -> None:
    revoked: list[datetime] = []

    def revoke_after_the_first_page(progress: Any) -> None:
        if not revoked:
            session.fixture.revoke(session.sim, session.admin_key)
            revoked.append(progress.covered_through)

    with session.host() as host:
        run = sync_now(host, CONNECTION, progress=revoke_after_the_first_page)
        connection = host.store.get_connection(CONNECTION)
        kept = host.store.count_rows(CONNECTION)
    assert revoked, f"the sync committed no page before the key could be revoked: {run.outcome.value} {run.message}"
    assert run.outcome == RunOutcome.RECONNECT_REQUIRED, (
        f"the sync ended {run.outcome.value} ({run.message}); if it made no request after its first page, "
        "raise backfill_days"
    )
    assert connection.state == ConnectionState.RECONNECT_REQUIRED
    assert connection.watermark is not None and connection.watermark < run.window_end, "the watermark passed the gap"
    assert kept == run.rows_written, f"{run.rows_written} rows were committed before the revocation, {kept} kept"
    assert not _leaks(session.secrets(), message=run.message or "", reason=connection.reason or "")


CHECKS: dict[str, Callable[[Session], None]] = {
    check.__name__: check
    for check in (
        check_names_the_account,
        a_401_key_is_invalid_with_advice,
        a_403_key_lacks_the_scope_with_advice,
        pages_are_contiguous_and_periods_aligned,
        only_get_is_sent,
        no_secret_in_logs_reprs_or_errors,
        listed_keys_are_unique_records_without_secrets,
        a_resync_changes_nothing,
        a_restated_period_replaces_the_old_rows,
        no_secret_in_the_store,
        a_key_revoked_during_a_sync_ends_it_reconnect_required,
    )
}
"""Every check by name, in the order the suite runs them."""

STORE_CHECKS: tuple[str, ...] = (
    "a_resync_changes_nothing",
    "a_restated_period_replaces_the_old_rows",
    "no_secret_in_the_store",
    "a_key_revoked_during_a_sync_ends_it_reconnect_required",
)
"""The checks that sync through a host into a store (the others talk to the connector alone)."""


def conformance_suite(fixture: ConnectorFixture[Any], *, without: Sequence[str] = ()) -> type:
    """A pytest test class with one ``test_<check>`` per check of :data:`CHECKS`, except those named in
    ``without`` (absent from the class, not skipped). Assign it to a ``Test...`` name in a test module."""
    import pytest

    unknown = sorted(set(without) - set(CHECKS))
    if unknown:
        raise ValueError(f"no conformance check named {', '.join(unknown)}; the checks are {', '.join(CHECKS)}")

    @pytest.fixture
    def conformance(self: object, tmp_path: Path) -> Iterator[Session]:
        with open_session(fixture, tmp_path) as session:
            yield session

    def test(check: Callable[[Session], None]) -> Callable[[object, Session], None]:
        def run(self: object, conformance: Session) -> None:
            check(conformance)

        run.__name__ = f"test_{check.__name__}"
        run.__doc__ = check.__doc__
        return run

    members: dict[str, Any] = {
        "conformance": conformance,
        "__doc__": f"The conformance suite on {fixture.connector_id}.",
    }
    for name, check in CHECKS.items():
        if name not in without:
            members[f"test_{name}"] = test(check)
    return type(f"Test{fixture.connector_id.title()}Conformance", (), members)
