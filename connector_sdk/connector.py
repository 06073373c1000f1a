"""The contract between the host and a connector plugin."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

from connector_sdk.errors import ConfigError, SyncCancelled
from connector_sdk.models import (
    AccountInfo,
    ConnectorConfig,
    ListedKey,
    Manifest,
    Page,
    Price,
    SyncContext,
    SyncWindow,
)


@cache
def packaged_manifest(package: str, name: str) -> Manifest:
    """A connector's manifest, read once: ``manifest.yaml`` inside its installed package (a wheel ships it there), or,
    from a source checkout or an editable install, ``manifests/<name>.yaml`` at the root of the repository that holds
    the package (``<root>/connectors/<name>/``)."""
    import yaml

    folder = resources.files(package)
    packaged = folder.joinpath("manifest.yaml")
    if packaged.is_file():
        text = packaged.read_text(encoding="utf-8")
    else:
        text = (Path(str(folder)).resolve().parents[1] / "manifests" / f"{name}.yaml").read_text(encoding="utf-8")
    return Manifest.model_validate(yaml.safe_load(text))


class Connector(ABC):
    """A source of usage rows for one vendor.

    A subclass sets :attr:`id` and :attr:`config_model`, returns its :meth:`manifest`, and implements
    :meth:`check` and :meth:`sync`. The host owns everything else: storage, encryption, windows, scheduling,
    single-flight and events. An instance serves one connection with one validated config.
    """

    id: ClassVar[str]
    config_model: ClassVar[type[ConnectorConfig]]

    def __init__(self, config: ConnectorConfig, *, cancel: threading.Event | None = None) -> None:
        if not isinstance(config, self.config_model):
            raise TypeError(f"{type(self).__name__} needs a {self.config_model.__name__}")
        self.config = config
        self.cancel = cancel or threading.Event()

    def sleep(self, seconds: float) -> None:
        """Wait between retries, but stop at once when the runner is stopping."""
        if self.cancel.wait(seconds):
            raise SyncCancelled("stopped on request while waiting to retry")

    @classmethod
    @abstractmethod
    def manifest(cls) -> Manifest:
        """What an admin portal shows about this connector; its ``config_schema`` matches :attr:`config_model`."""

    @abstractmethod
    def check(self) -> AccountInfo:
        """Prove the credential works and name the account it belongs to.

        Raises :class:`~connector_sdk.errors.CredentialError` when the vendor refuses the credential, with a
        message that tells the person what to do.
        """

    @abstractmethod
    def sync(self, window: SyncWindow, context: SyncContext) -> Iterator[Page]:
        """Stream the usage of ``window`` as pages, oldest hours first.

        Pages must be contiguous: the first starts at ``window.start``, each next one where the previous one's
        ``complete_through`` ended, and the last ends at ``window.end``; each row falls inside its page's range.
        Nothing is held beyond the page being built: the host commits each page before asking for the next.

        What the connector learns about the vendor and wants to keep for the next sync (the largest page it accepts,
        a query it had to narrow) goes in the connection's connector state: read it from ``context.state``, change
        it with ``context.remember(key, value)``. The host stores a change with the next page it commits, in the
        same transaction, so the state never runs ahead of the rows; a change made after the last page is lost.
        It is a small JSON object of settings, never a credential and never the data itself; :meth:`describe_state`
        says what it means to a person.
        """

    @classmethod
    def describe_state(cls, state: Mapping[str, Any]) -> dict[str, str]:
        """What a connection's connector state means to a person: facts for ``status`` and the portal to show beside
        the connection, label → text (``{"usage page size": "500 rows, the largest fal accepted"}``); none by default.

        ``state`` is what :meth:`sync` remembered, perhaps in an older version of the connector: leave out what is
        missing or not understood rather than raise. The host asks whenever a sync changes the state (and once a
        sync) and keeps the answer with the state, so showing it loads no plugin. Labels are short and lower case;
        a fact is a few words, never a credential and never the data itself.
        """
        return {}

    def sync_window(self, window: SyncWindow) -> SyncWindow:
        """The window to sync when the host asks for ``window``: the same one, unless the vendor needs more.

        A vendor that bills by the day, or restates a trailing period, widens the start to a period boundary far
        enough back; the host then syncs (and replaces) the widened window. It never narrows the window.
        """
        return window

    def list_keys(self) -> list[ListedKey] | None:
        """Every key the vendor's listings name for this account (all statuses), or ``None`` when it cannot list keys.

        The host calls it after each successful sync and keeps each key's history (:mod:`connector_sdk.inventory`):
        a key that leaves the listing is marked gone, never forgotten. Include the connection's own credential when
        the vendor leaves it out of its listings but reports its traffic (fal's Admin key), with ``scope="admin"``.
        Raise like :meth:`sync` does (:class:`~connector_sdk.errors.CredentialError`, ``TransientError``...).
        """
        return None

    def prices(self, models: Sequence[str], *, now: datetime) -> list[Price]:
        """Current list prices of ``models``; a model the vendor does not know is left out."""
        raise ConfigError(f"the {self.id} connector cannot look up prices")

    def estimate(self, quantities: dict[str, Decimal]) -> tuple[Decimal, str]:
        """What ``quantities`` (model → billing units) would cost now: ``(total, currency)``."""
        raise ConfigError(f"the {self.id} connector cannot estimate costs")

    def close(self) -> None:  # noqa: B027 - optional hook for connectors holding sessions
        """Release network sessions; called by the host after every check or sync."""
