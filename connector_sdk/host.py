"""The host: connectors from plugins, connections in a store, credentials encrypted, events fired."""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from connector_sdk import logs
from connector_sdk.crypto import CredentialCipher
from connector_sdk.environment import check_numbers
from connector_sdk.errors import (
    ConfigError,
    CredentialError,
    SyncInProgress,
    UnknownConnection,
    Unreachable,
    validation_reason,
)
from connector_sdk.models import (
    ACK_RESOLVES,
    EXACT,
    USER_KEY,
    Connection,
    ConnectionState,
    ConnectionStatus,
    ConnectorConfig,
    Finding,
    FindingKind,
    KeyEvent,
    KeyRecord,
    Overview,
    Price,
    ReportLine,
    SinkRecord,
    SpendLine,
    decimal_text,
    floor_hour,
    state_facts,
    utcnow,
)
from connector_sdk.stores import STORE_ENV, Store, open_store, sqlite_path

if TYPE_CHECKING:
    from connector_sdk.connector import Connector
    from connector_sdk.plugins import Plugins
    from connector_sdk.sinks import Sink

# What a command that only reads the store (status, report) needs is imported here; the plugins, HTTP, the rate
# limits and structlog are imported where they are first used, which those commands never reach.
log = logs.get_logger()

HOME_ENV = "CONNECTOR_HOST_HOME"
LIMIT_ENV = "CONNECTOR_HOST_MAX_CONCURRENT_PER_HOST"  # ratelimit.LIMIT_ENV, which this module checks at open
DISABLED_ENV = "CONNECTOR_HOST_DISABLED_PLUGINS"  # plugins.DISABLED_ENV, spelled out to spare importing pluggy
VENDORS_FILE = "vendors.json"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def default_home() -> Path:
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV])
    import platformdirs

    return Path(platformdirs.user_data_dir("connector-host", appauthor=False))


def check_environment() -> None:
    """Every setting read from the environment that can be checked without the network, checked at once."""
    check_numbers()
    limits = os.environ.get(LIMIT_ENV, "").strip()
    if limits:
        from connector_sdk.ratelimit import parse_limits

        parse_limits(limits)


def store_is_writable(home: Path, store_url: str | None = None) -> bool:
    """Whether this process can write the SQLite store ``store_url`` names (by default the one in ``home``): its
    folder, and the file when it exists. Always true for another backend, whose roles decide."""
    url = store_url if store_url is not None else os.environ.get(STORE_ENV)
    file = sqlite_path(url, home=home)
    if file is None:
        return True
    return os.access(file.parent, os.W_OK) and (not file.exists() or os.access(file, os.W_OK))


def _prepare_home(home: Path, url: str | None) -> None:
    """Create the home; refuse, in one line, a SQLite store this process cannot write to."""
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as error:
        raise ConfigError(f"cannot create the home folder {home}: {error.strerror or error}") from None
    if not store_is_writable(home, url):
        folder = (sqlite_path(url, home=home) or home).parent
        raise ConfigError(
            f"the folder {folder} is read-only: this command writes to the store "
            "(status, report, rows, alerts, keys and findings can still read it)"
        )


def validation_message(error: ValidationError) -> str:
    """Field-by-field reasons, without echoing the input (which may be a secret)."""
    return "; ".join(validation_reason(item) for item in error.errors(include_input=False, include_url=False))


@dataclass(frozen=True)
class SharedAccount:
    """One vendor account reached by several connections: ``counted``'s rows stand for it, ``merged`` are left out."""

    connector: str
    account: str
    counted: str
    merged: list[str]


def _freshness(connection: Connection) -> tuple[bool, datetime, str]:
    never = datetime.min.replace(tzinfo=UTC)
    return connection.last_success_at is not None, connection.last_success_at or never, connection.name


def merge_report_lines(lines: list[ReportLine]) -> list[ReportLine]:
    """Report lines of several connections as one report: per connector, label and currency, costs and row counts
    added and models joined; highest cost first, as the store orders one connection's."""
    merged: dict[tuple[str, str, str], ReportLine] = {}
    for line in lines:
        key = (line.connector, line.api_key_label, line.currency)
        before = merged.get(key)
        if before is None:
            merged[key] = line.model_copy()
            continue
        merged[key] = ReportLine.model_construct(  # of the store's lines: as the store builds them
            connector=line.connector,
            api_key_label=line.api_key_label,
            currency=line.currency,
            models=sorted({*before.models, *line.models}),
            cost=before.cost + line.cost,
            row_count=before.row_count + line.row_count,
        )
    return sorted(merged.values(), key=lambda line: (-line.cost, line.api_key_label, line.currency, line.connector))


def installed_plugins() -> list[list[Any]]:
    """What tells whether the installed plugins may have changed, found without loading or even listing them (reading
    every distribution's metadata costs ``report`` a third of its time): each place on ``sys.path`` that holds
    distributions (a folder with a ``.dist-info`` or ``.egg-info``, or an archive), with when it last changed
    (installing, upgrading or removing a distribution there changes it), and the disabled plugins. Places that hold
    none, such as the folder of the script or the current one, are left out: how the command was started must not
    make the names be read again."""
    places: list[list[Any]] = []
    for place in sorted({os.path.abspath(entry or ".") for entry in sys.path}):
        try:
            if os.path.isdir(place) and not any(
                name.endswith((".dist-info", ".egg-info")) for name in os.listdir(place)
            ):
                continue
            places.append([place, os.stat(place).st_mtime_ns])
        except OSError:  # not there (yet): nothing to find in it
            continue
    return [*places, [DISABLED_ENV, os.environ.get(DISABLED_ENV, "")]]


def _vendors_of(plugins: Plugins) -> dict[str, str]:
    return {connector_id: cls.manifest().display_name for connector_id, cls in plugins.connectors.items()}


class Host:
    """Everything a runner needs, bound together: the store, the plugins and the credential cipher."""

    def __init__(
        self,
        store: Store,
        plugins: Plugins | None,
        cipher: CredentialCipher,
        *,
        clock: Callable[[], datetime] = utcnow,
        home: Path | None = None,
        read_only: bool = False,
    ) -> None:
        """``plugins`` None: the installed plugins, loaded from their entry points the first time one is needed.
        ``home``: where the names of the installed connectors' vendors are kept between commands (none: not kept);
        ``read_only``: read them there, never write them."""
        self.store = store
        self._plugins = plugins
        self._plugins_lock = threading.Lock()
        self.cipher = cipher
        self.now = clock
        self.home = home
        self.read_only = read_only

    @property
    def plugins(self) -> Plugins:
        """The plugin manager with its connectors and sinks; reading the store (``status``, ``report``) needs none,
        and loading the entry points imports every connector, so they are loaded on first use."""
        if self._plugins is None:
            with self._plugins_lock:
                if self._plugins is None:
                    from connector_sdk.plugins import get_plugin_manager

                    self._plugins = get_plugin_manager()
        return self._plugins

    @classmethod
    def open(
        cls,
        home: Path | None = None,
        *,
        store_url: str | None = None,
        plugins: Plugins | None = None,
        clock: Callable[[], datetime] = utcnow,
        read_only: bool = False,
        create: bool = True,
    ) -> Host:
        """Open the store and the credential key, after checking the local configuration.

        Local mistakes stop here, before any sync could start and blame the vendor: a numeric environment variable
        that is not a usable number, an encryption key that is not a key or not the one the stored credentials
        were encrypted with (:class:`ConfigError` or :class:`EncryptionKeyError`, exit 2). ``read_only`` opens a
        SQLite store without writing anything (a read-only home); without ``create``, a home that holds no store
        is an error instead of a new empty store (a mistyped ``--home``).
        """
        home = home or default_home()
        url = store_url if store_url is not None else os.environ.get(STORE_ENV)
        check_environment()
        file = sqlite_path(url, home=home)
        if file is not None and not file.exists() and (read_only or not create):
            raise ConfigError(f"no store in {file.parent}; connect a vendor first or check --home")
        if not read_only:
            _prepare_home(home, url)
        store = open_store(url, home=home, read_only=read_only)
        try:
            cipher = CredentialCipher.for_home(home, create=not read_only)
            host = cls(store, plugins, cipher, clock=clock, home=home, read_only=read_only)
            if not read_only:
                host.verify_key()
        except BaseException:
            store.close()
            raise
        return host

    def verify_key(self) -> None:
        """Check one stored credential against the key: a key that did not encrypt it is a local mistake, said before
        any sync runs."""
        for connection in self.store.list_connections():
            token = self.store.get_credential(connection.name)
            if token is not None:
                self.cipher.verify(token)
                return

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- events --------------------------------------------------------------------------------------------
    def listens(self, hook_name: str) -> bool:
        """Whether any plugin listens to an event: what it would be given need not be made otherwise."""
        return bool(getattr(self.plugins.hook, hook_name).get_hookimpls())

    def fire(self, hook_name: str, **kwargs: Any) -> None:
        """Call every listener of an event; one that raises is logged and the others still run."""
        for impl in getattr(self.plugins.hook, hook_name).get_hookimpls():
            try:
                impl.function(**kwargs)
            except Exception:
                log.exception("event_listener_failed", hook=hook_name, plugin=impl.plugin_name)

    def change_state(self, name: str, state: ConnectionState, reason: str | None) -> None:
        change = self.store.set_state(name, state, reason, now=self.now())
        if change is not None:
            log.info("connection_status_changed", connection=name, old=change.old, new=change.new, reason=reason)
            self.fire(
                "connector_sdk_connection_status_changed",
                connection=self.store.get_connection(name),
                old=change.old,
                new=change.new,
                reason=reason,
            )

    # -- configuration -------------------------------------------------------------------------------------
    def build_config(self, connector_id: str, values: dict[str, Any]) -> ConnectorConfig:
        model = self.plugins.connector(connector_id).config_model
        # Names come from forms, JSON bodies and --set: anything hashable, so they are compared and shown as text.
        unknown = sorted({str(name) for name in values} - set(model.model_fields))
        if unknown:
            named = ", ".join(name or "(an empty name)" for name in unknown)
            raise ConfigError(
                f"invalid {connector_id} configuration: {connector_id} has no setting {named}; "
                f"its settings are {', '.join(model.model_fields)}"
            )
        try:
            return model.model_validate(values)
        except ValidationError as error:
            raise ConfigError(f"invalid {connector_id} configuration: {validation_message(error)}") from None

    def config_for(self, name: str) -> ConnectorConfig:
        connection = self.store.get_connection(name)
        token = self.store.get_credential(name)
        if token is None:
            raise ConfigError(f"connection {name!r} has no credential; `connector-host reconnect {name}`")
        secrets = self.cipher.decrypt(token)
        self._remember(secrets)
        return self.build_config(connection.connector, {**connection.config, **secrets})

    @staticmethod
    def _remember(secrets: dict[str, str]) -> None:
        """Teach the log redactor this process's secrets, and their halves: vendors echo ``id:secret`` parts."""
        for value in secrets.values():
            for part in {value, value.partition(":")[2], *value.split(":")[1:]}:
                logs.secrets.add(part)

    def _checked(self, connector_id: str, config: ConnectorConfig) -> str:
        self._remember(config.secret_values())
        connector = self.plugins.connector(connector_id)(config)
        try:
            from connector_sdk.http import first_contact

            with first_contact():
                return connector.check().account
        except Unreachable as error:
            raise Unreachable(f"{error}; nothing was stored") from None
        finally:
            connector.close()

    def _check_key_format(self, connector_id: str, values: dict[str, Any]) -> None:
        """Refuse a new key whose shape the connector's manifest rules out, in the manifest's words, before the config
        model or the vendor sees it. Only new keys: a stored one was checked by the vendor, and a manifest's pattern
        may change with a later version."""
        manifest = self.plugins.connector(connector_id).manifest()
        key = values.get(manifest.authentication.secret_field)
        problem = manifest.key_problem(key) if isinstance(key, str) else None
        if problem:
            raise ConfigError(problem)

    # -- connections ---------------------------------------------------------------------------------------
    def connect(self, connector_id: str, name: str, values: dict[str, Any]) -> Connection:
        """Validate the config, check the credential with the vendor, then store the connection."""
        if not NAME_PATTERN.fullmatch(name or ""):
            raise ConfigError(
                "a connection name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        try:
            self.store.get_connection(name)
        except UnknownConnection:
            pass
        else:
            raise ConfigError(f"a connection named {name!r} already exists; choose another name")
        self._check_key_format(connector_id, values)
        config = self.build_config(connector_id, values)
        account = self._checked(connector_id, config)
        connection = self.store.add_connection(
            name=name,
            connector=connector_id,
            config=config.public_values(),
            credential=self.cipher.encrypt(config.secret_values()),
            account=account,
            now=self.now(),
        )
        log.info("connection_created", connection=name, connector=connector_id, account=account)
        self.fire(
            "connector_sdk_connection_status_changed",
            connection=connection,
            old=None,
            new=connection.state,
            reason=None,
        )
        return connection

    def reconnect(self, name: str, secrets: dict[str, Any]) -> Connection:
        """Check a new credential and put the connection back to ``connected``; the next sync fills the gap."""
        connection = self.store.get_connection(name)
        self._check_key_format(connection.connector, secrets)
        config = self.build_config(connection.connector, {**connection.config, **secrets})
        account = self._checked(connection.connector, config)
        self.store.set_credential(name, self.cipher.encrypt(config.secret_values()), account=account)
        self.change_state(name, ConnectionState.CONNECTED, None)
        self.store.set_next_sync(name, self.now())
        return self.store.get_connection(name)

    def disconnect(self, name: str, *, purge: bool = False) -> None:
        """Stop syncing and delete the credential; with ``purge`` also the rows and the connection itself."""
        self.store.get_connection(name)
        holder = self.store.lease_holder(name, now=self.now())
        if holder is not None:  # its pages would land after the purge, its outcome overwrite "disconnected"
            raise SyncInProgress(name, holder)
        if purge:
            self.store.delete_connection(name)
            log.info("connection_purged", connection=name)
            return
        self.store.set_credential(name, None)
        self.store.set_next_sync(name, None)
        self.change_state(name, ConnectionState.DISCONNECTED, "disconnected by an admin; rows kept")

    # -- sinks ---------------------------------------------------------------------------------------------
    def add_sink(self, name: str, sink_name: str, kind: str, values: dict[str, Any]) -> SinkRecord:
        """Validate a sink's config and attach it to a connection; its secrets are stored encrypted."""
        self.store.get_connection(name)
        if not NAME_PATTERN.fullmatch(sink_name or ""):
            raise ConfigError("a sink name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        cls = self.plugins.sink(kind)
        try:
            config = cls.config_model.model_validate(values)
        except ValidationError as error:
            raise ConfigError(f"invalid {kind} sink configuration: {validation_message(error)}") from None
        secrets = config.secret_values()
        self._remember(secrets)
        return self.store.add_sink(
            name,
            sink_name,
            kind=kind,
            config=config.public_values(),
            secret=self.cipher.encrypt(secrets) if secrets else None,
            now=self.now(),
        )

    def open_sink(self, name: str, record: SinkRecord) -> Sink:
        cls = self.plugins.sink(record.kind)
        token = self.store.get_sink_secret(name, record.name)
        secrets = self.cipher.decrypt(token) if token else {}
        self._remember(secrets)
        return cls(cls.config_model.model_validate({**record.config, **secrets}), connection=name)

    def sinks_taking(self, name: str, what: str) -> list[str]:
        """The connection's sinks whose kind takes payloads of type ``what`` (``rows``, ``alert``, ``finding``); one
        whose plugin is missing is skipped with a warning."""
        names = []
        for record in self.store.list_sinks(name):
            kind = self.plugins.sinks.get(record.kind)
            if kind is None:
                log.warning("sink_kind_not_loaded", sink=record.name, kind=record.kind)
            elif what in kind.accepts:
                names.append(record.name)
        return names

    @staticmethod
    def scrub(text: str) -> str:
        """``text`` without any secret this process knows."""
        return logs.secrets.scrub(text)

    # -- prices --------------------------------------------------------------------------------------------
    PRICE_TTL = timedelta(minutes=10)

    def _connector_for(self, name: str) -> Connector:
        connection = self.store.get_connection(name)
        return self.plugins.connector(connection.connector)(self.config_for(name))

    def prices(self, name: str, models: list[str]) -> list[Price]:
        """Current list prices through connection ``name``'s credential, cached for ten minutes."""
        connector_id = self.store.get_connection(name).connector
        wanted = sorted(set(models))
        cached = self.store.cached_prices(connector_id, wanted, fresh_after=self.now() - self.PRICE_TTL)
        missing = [m for m in wanted if m not in {p.model for p in cached}]
        if not missing:
            return sorted(cached, key=lambda p: p.model)
        connector = self._connector_for(name)
        try:
            fetched = connector.prices(missing, now=self.now())
        finally:
            connector.close()
        self.store.cache_prices(connector_id, fetched)
        return sorted([*cached, *fetched], key=lambda p: p.model)

    def estimate(self, name: str, quantities: dict[str, Decimal]) -> tuple[Decimal, str]:
        connector = self._connector_for(name)
        try:
            return connector.estimate(quantities)
        finally:
            connector.close()

    def connector_class(self, name: str) -> type[Connector]:
        return self.plugins.connector(self.store.get_connection(name).connector)

    def vendor_names(self) -> dict[str, str]:
        """Each installed connector's vendor, as its manifest names it for people (``fal.ai``), by connector id.

        Loading the plugins to read their manifests imports every connector, and costs ``report`` more than the
        rest of it; so the names are kept in the home (``vendors.json``) beside the state of the places Python finds
        distributions in (:func:`installed_plugins`), and read from there until a distribution is installed, upgraded
        or removed there, or other plugins are disabled. A home that cannot be written (or opened read-only) keeps none,
        and a plugin that failed to load is never taken as absent: it is tried again next time. A plugin changed in
        place without reinstalling it (an editable install's source) keeps its old name until the file is removed.
        """
        if self._plugins is not None or self.home is None:
            return _vendors_of(self.plugins)
        installed = installed_plugins()
        kept = self.home / VENDORS_FILE
        try:
            cached = json.loads(kept.read_text(encoding="utf-8"))
            if cached["installed"] == installed and all(
                isinstance(k, str) and isinstance(v, str) for k, v in cached["vendors"].items()
            ):
                return dict(cached["vendors"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # none kept yet, or not in this version's shape: made again below
        vendors = _vendors_of(self.plugins)
        if not self.plugins.errors and not self.read_only:
            partial = kept.with_name(f".{VENDORS_FILE}.{os.getpid()}.part")
            try:
                partial.write_text(json.dumps({"installed": installed, "vendors": vendors}), encoding="utf-8")
                os.replace(partial, kept)
            except OSError:  # a read-only home: the names are read from the plugins each time
                partial.unlink(missing_ok=True)
        return vendors

    # -- reading -------------------------------------------------------------------------------------------
    def status(self, connection: Connection) -> ConnectionStatus:
        state = connection.state
        if self.store.lease_holder(connection.name, now=self.now()) is not None:
            state = ConnectionState.SYNCING
        # Of a connection the store read back and its own counts: built without a validator, as the store builds
        # the connection, so that status builds none (models.py builds them on first use).
        return ConnectionStatus.model_construct(
            name=connection.name,
            connector=connection.connector,
            account=connection.account,
            state=state,
            reason=connection.reason,
            last_sync=connection.last_sync_at,
            last_success=connection.last_success_at,
            watermark=connection.watermark,
            next_sync=connection.next_sync_at,
            rows=self.store.count_rows(connection.name),
            sinks=self.store.backlog(connection.name),
            facts=state_facts(self.store.connector_state(connection.name)),
        )

    def statuses(self, name: str | None = None) -> list[ConnectionStatus]:
        connections = [self.store.get_connection(name)] if name else self.store.list_connections()
        return [self.status(c) for c in connections]

    def shared_accounts(self) -> list[SharedAccount]:
        """Vendor accounts that more than one connection reaches, with the connection whose rows count for each.

        Two connections to one account hold the same spend twice; a report across connections counts it once,
        from the connection that last synced successfully (its rows are the freshest). That is each connection in
        turn, so findings are judged by a steadier choice (:func:`connector_sdk.findings.account_of`).
        """
        by_account: dict[tuple[str, str], list[Connection]] = {}
        for connection in self.store.list_connections():
            if connection.account:
                by_account.setdefault((connection.connector, connection.account), []).append(connection)
        shared = []
        for (connector, account), connections in sorted(by_account.items()):
            if len(connections) < 2:
                continue
            counted = max(connections, key=_freshness)
            others = sorted(c.name for c in connections if c.name != counted.name)
            shared.append(SharedAccount(connector=connector, account=account, counted=counted.name, merged=others))
        return shared

    def report(self, name: str | None, *, days: int = 30) -> tuple[datetime, datetime, list[ReportLine]]:
        """Billed spend per connector and API key label over the last ``days`` (usage rows add nothing): of one
        connection, or of all of them with each vendor account counted once (see :meth:`shared_accounts`)."""
        if name is not None:
            self.store.get_connection(name)
        until = floor_hour(self.now()) + timedelta(hours=1)
        since = until - timedelta(days=days)
        shared = self.shared_accounts() if name is None else []
        if not shared:
            return since, until, self.store.report(name, since=since, until=until)
        left_out = {other for account in shared for other in account.merged}
        counted = [c.name for c in self.store.list_connections() if c.name not in left_out]
        lines = [line for each in counted for line in self.store.report(each, since=since, until=until)]
        return since, until, merge_report_lines(lines)

    # -- key inventory and findings -------------------------------------------------------------------------
    def keys(self, name: str | None = None, *, vendor: str | None = None) -> list[KeyRecord]:
        """The key inventory of one connection or all (of one vendor's connections with ``vendor``): every key a
        listing named or rows name, with its owner, scope, status, history dates and 7- and 30-day spend."""
        if name is not None:
            self.store.get_connection(name)
        keys = self.store.key_inventory(name, now=self.now())
        return [key for key in keys if vendor is None or key.connector == vendor]

    def key_history(self, name: str, key_id: str) -> list[KeyEvent]:
        """What the listings said of a key over time (listed, renamed, changed, gone, returned), oldest first."""
        return self.store.key_events(name, key_id)

    def findings(
        self, name: str | None = None, *, open_only: bool = True, kind: FindingKind | str | None = None
    ) -> list[Finding]:
        """Findings of one connection or all, open ones first, then the most severe, then the newest."""
        if kind is not None:
            try:
                kind = FindingKind(kind)
            except ValueError:
                known = ", ".join(k.value for k in FindingKind)
                raise ConfigError(f"there is no finding kind {kind!r}; the kinds are {known}") from None
        found = self.store.list_findings(name, open_only=open_only, kind=kind)
        return sorted(found, key=lambda f: (not f.is_open, -f.severity.rank, -f.opened_at.timestamp(), -(f.id or 0)))

    def acknowledge_finding(self, finding_id: int, note: str) -> Finding:
        """Record that an admin has seen a finding, with a note saying what they did or decided.

        The finding stays open until its condition clears, marked acknowledged; a kind that acknowledgement closes
        (a new key: see :data:`~connector_sdk.models.ACK_RESOLVES`) resolves now, which fires
        ``connector_sdk_finding`` and queues it for the webhook sinks. :class:`ConfigError` for an unknown id or a
        blank note.
        """
        from connector_sdk.sinks import FINDING, finding_payload

        if not note or not note.strip():
            raise ConfigError("acknowledging a finding needs a note saying what was done or decided")
        finding = self.store.get_finding(finding_id)
        sinks = self.sinks_taking(finding.connection, FINDING)
        acknowledged, resolved = self.store.acknowledge_finding(
            finding_id,
            note.strip(),
            now=self.now(),
            resolve=finding.kind in ACK_RESOLVES,
            outbox=lambda f, change: [(sink, finding_payload(f.connection, f, change)) for sink in sinks],
        )
        log.info("finding_acknowledged", connection=finding.connection, finding=finding_id, kind=finding.kind.value)
        if resolved:
            self.announce_finding(acknowledged, "resolved")
        return acknowledged

    def announce_finding(self, finding: Finding, change: str) -> None:
        """Log a finding that opened or resolved and fire ``connector_sdk_finding`` (its payload is queued already)."""
        log.warning(
            "finding",
            connection=finding.connection,
            change=change,
            kind=finding.kind.value,
            severity=finding.severity.value,
            subject=finding.subject,
            message=finding.message,
        )
        self.fire(
            "connector_sdk_finding",
            connection=self.store.get_connection(finding.connection),
            finding=finding,
            change=change,
        )

    def overview(self, days: int = 30, *, now: datetime | None = None) -> Overview:
        """Spend over the last ``days`` across every connection, by vendor, key, person and model, against the
        ``days`` before, and the open findings, most severe first.

        Each vendor account is counted once, from the connection :meth:`shared_accounts` counts (so the totals equal
        :meth:`report`'s); money stays per currency.
        """
        if days < 1:
            raise ConfigError("an overview covers at least one day")
        until = floor_hour(now or self.now()) + timedelta(hours=1)
        since = until - timedelta(days=days)
        previous_since = since - timedelta(days=days)
        left_out = {other for account in self.shared_accounts() for other in account.merged}
        counted = [c.name for c in self.store.list_connections() if c.name not in left_out]
        by = ("connection", "connector", "api_key_id", "api_key_label", "login_username", "model", "currency")
        periods = [
            self.store.grouped_spend(None, since=start, until=end, by=by)
            for start, end in ((since, until), (previous_since, since))
        ]
        # Per breakdown: group -> [cost now, cost before, rows now], and a label per group.
        breakdowns: dict[str, dict[tuple[str, str | None, str], list[Any]]] = {
            "totals": {},
            "vendor": {},
            "key": {},
            "person": {},
            "model": {},
        }
        labels: dict[tuple[str, str | None, str], dict[str, Decimal]] = {}
        for which, spend in enumerate(periods):
            for (connection, connector, key_id, label, person, model, currency), (count, cost) in spend.items():
                if connection not in counted or currency is None:
                    continue
                groups = {
                    "totals": (currency, None, currency),
                    "vendor": (connector, connector, currency),
                    "key": (key_id or label, connector, currency),
                    "model": (model or "", connector, currency),
                }
                if key_id is None and label == USER_KEY:  # web-UI use, not spend the vendor gave no key for
                    groups["person"] = (person or USER_KEY, connector, currency)
                for breakdown, group in groups.items():
                    sums = breakdowns[breakdown].setdefault(group, [Decimal(0), Decimal(0), 0])
                    sums[which] = EXACT.add(sums[which], cost)
                    if which == 0:
                        sums[2] += count
                if key_id is not None:  # named by its rows' label; a renamed key by the one it spent most under
                    seen = labels.setdefault((key_id, connector, currency), {})
                    seen[label] = EXACT.add(seen.get(label, Decimal(0)), cost)

        def lines(breakdown: str) -> list[SpendLine]:
            out = []
            for (key, connector, currency), (cost, before, count) in breakdowns[breakdown].items():
                label = key
                if breakdown == "key" and (seen := labels.get((key, connector, currency))):
                    label = max(seen.items(), key=lambda item: (item[1], item[0]))[0]
                elif breakdown == "model" and not key:
                    label = "(no model)"
                change = EXACT.subtract(cost, before)
                out.append(
                    SpendLine(
                        key=key,
                        label=label,
                        connector=connector if breakdown != "totals" else None,
                        currency=currency,
                        cost=Decimal(decimal_text(cost)),
                        previous_cost=Decimal(decimal_text(before)),
                        change=Decimal(decimal_text(change)),
                        change_percent=None if not before else (change * 100 / before).quantize(Decimal("0.1")),
                        row_count=count,
                    )
                )
            return sorted(out, key=lambda line: (line.currency, -line.cost, -line.previous_cost, line.key))

        return Overview(
            days=days,
            since=since,
            until=until,
            previous_since=previous_since,
            connections=counted,
            totals=lines("totals"),
            by_vendor=lines("vendor"),
            by_key=lines("key"),
            by_person=lines("person"),
            by_model=lines("model"),
            open_findings=self.findings(None, open_only=True),
        )


__all__ = ["CredentialError", "Host", "default_home"]
