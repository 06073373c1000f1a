"""The errors the host and connectors raise on purpose.

Every message is written for the person running the host: it says what went wrong and what to do, and it never
contains a secret. Anything that is not a :class:`ConnectorHostError` is a bug.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ConnectorHostError(Exception):
    """Base of every error the host raises on purpose; ``str(error)`` is safe to show a person."""

    exit_code = 1


class ConfigError(ConnectorHostError):
    """The user's input or configuration is wrong; nothing was stored."""

    exit_code = 2


class UnknownConnection(ConfigError):
    def __init__(self, name: str) -> None:
        super().__init__(f"there is no connection named {name!r}; `connector-host status` lists them")
        self.name = name


class UnknownConnector(ConfigError):
    def __init__(self, connector_id: str, known: list[str]) -> None:
        listed = ", ".join(sorted(known)) or "none"
        super().__init__(f"no connector plugin named {connector_id!r} is loaded (loaded: {listed})")
        self.connector_id = connector_id


class CredentialError(ConnectorHostError):
    """The vendor refused the credential: the connection needs a new key (``reconnect required``).

    ``kind`` is ``"invalid"`` (unknown, revoked or malformed key) or ``"insufficient_scope"`` (a valid key that lacks
    the permission the connector needs).
    """

    exit_code = 3

    def __init__(self, message: str, *, kind: str = "invalid", status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


class TransientError(ConnectorHostError):
    """The vendor did not answer usefully after every retry (rate limit, 5xx, timeout); the next cycle retries."""

    exit_code = 4


class Unreachable(TransientError):
    """The vendor's host could not be reached at all (connection refused, no route, no answer in time) while a new
    key was being checked: there is no next sync to retry it, so the person is told at once."""


class ResponseError(ConnectorHostError):
    """The vendor answered something the connector cannot read (malformed JSON, a missing field, a wrong type)."""


class ApiError(ConnectorHostError):
    """The vendor answered with an error status that retrying will not fix (400, 404, ...).

    ``detail`` is the vendor's own account of it (``"validation_error: ..."``, secrets scrubbed), for a connector
    that reacts to one refusal in particular.
    """

    def __init__(self, message: str, *, status: int, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class SyncCancelled(ConnectorHostError):
    """The runner is stopping (SIGTERM, Ctrl-C); the sync ends where its last committed page left it."""


class SyncInProgress(ConnectorHostError):
    """Another process or thread holds this connection's sync lease."""

    exit_code = 5

    def __init__(self, name: str, holder: str | None) -> None:
        who = f" ({holder})" if holder else ""
        super().__init__(f"connection {name!r} is already being synced by another worker{who}; skipped")
        self.name = name


class StoreError(ConnectorHostError):
    """The store cannot be opened or is in a state this version cannot use."""


class EncryptionKeyError(StoreError):
    """The credential encryption key is unusable or is not the one the stored credentials were encrypted with: a
    local mistake, found before any sync starts, never the vendor's fault."""

    exit_code = 2


def validation_reason(item: Mapping[str, Any]) -> str:
    """One pydantic error (``ValidationError.errors(include_input=False)``) as a sentence a person reads.

    Every config model's errors come through here (connector and sink configs alike), so pydantic's own phrasing
    ("Value error, ...", "at least 16 items after validation") never reaches a user. The input is never echoed: it
    may be a secret.
    """
    field = ".".join(str(part) for part in item.get("loc", ())) or "config"
    kind, ctx = item.get("type", ""), item.get("ctx") or {}
    if kind in ("too_short", "string_too_short") and "min_length" in ctx:
        return f"the {field.replace('_', ' ')} {_length('at least', ctx['min_length'], ctx)}"
    if kind in ("too_long", "string_too_long") and "max_length" in ctx:
        return f"the {field.replace('_', ' ')} {_length('at most', ctx['max_length'], ctx)}"
    if kind == "missing":
        return f"{field} is required"
    if kind == "extra_forbidden":
        return f"{field} is not a field of this configuration"
    message = str(item.get("msg", "invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return f"{field}: {message}"


def _length(bound: str, length: int, ctx: Mapping[str, Any]) -> str:
    # pydantic says "items" for a constrained SecretStr ("Value"); strings, secret or not, are counted in characters.
    if ctx.get("field_type") in ("List", "Tuple", "Set", "Dictionary"):
        return f"must have {bound} {length} item{'' if length == 1 else 's'}"
    return f"must be {bound} {length} character{'' if length == 1 else 's'}"
