"""Sinks: where committed rows (and alerts and findings) go after the store, delivered at least once through an outbox.

Every page a sync commits is queued for each of the connection's sinks in the same transaction as the rows, so a
crash between the commit and the delivery loses nothing: the next delivery pass sends it. Delivery is in order per
sink; a failing sink holds its queue and retries with backoff, and never holds up the sync or the other sinks.
Receivers see a row again when its hour is re-polled or a delivery is retried: they deduplicate by ``row_id``.

This module is the sink contract and the built-in sinks; :mod:`connector_sdk.delivery` drains the outbox into them.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal

import requests
import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from connector_sdk import __version__, hookimpl
from connector_sdk.focus import FOCUS_COLUMNS, focus_record, is_billing_row
from connector_sdk.http import validate_base_url
from connector_sdk.models import ROW_FIELDS, Finding, UsageRow

log = structlog.get_logger()

ROWS, ALERT, FINDING = "rows", "alert", "finding"
SIGNATURE_HEADER = "X-Connector-Host-Signature"
MAX_RETRY_DELAY = timedelta(hours=1)


class DeliveryError(Exception):
    """A sink's own account of a failed delivery, shown as is (``sink list``, ``sink deliver``); the host retries."""


class SinkConfig(BaseModel):
    """Base of every sink's configuration; secret fields are ``SecretStr`` and stored encrypted."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def secret_field_names(cls) -> list[str]:
        return [name for name, field in cls.model_fields.items() if field.annotation is SecretStr]

    def public_values(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude=set(self.secret_field_names()))

    def secret_values(self) -> dict[str, str]:
        return {name: getattr(self, name).get_secret_value() for name in self.secret_field_names()}


class Sink(ABC):
    """A destination for a connection's committed rows. ``deliver`` raises on failure; the host retries."""

    kind: ClassVar[str]
    config_model: ClassVar[type[SinkConfig]]
    accepts: ClassVar[frozenset[str]] = frozenset({ROWS})
    description: ClassVar[str] = ""

    def __init__(self, config: SinkConfig, *, connection: str) -> None:
        self.config = config
        self.connection = connection

    @abstractmethod
    def deliver(self, payload: dict[str, Any]) -> None:
        """Deliver one payload: ``{"type": "rows", "rows": [...]}``, ``{"type": "alert", "alert": {...}}`` or
        ``{"type": "finding", "change": "opened" | "resolved", "finding": {...}}`` (only the kinds in ``accepts``)."""

    def close(self) -> None:  # noqa: B027 - optional for sinks holding sessions
        """Release resources after a delivery pass."""


def rows_of(payload: dict[str, Any]) -> list[UsageRow]:
    return [UsageRow.model_validate(row) for row in payload.get("rows", [])]


class FileSinkConfig(SinkConfig):
    directory: Path = Field(description="Folder the files are written to; created if missing.")
    roll: Literal["day", "month"] = Field("day", description="One file per day or per month of usage.")


class _FileSink(Sink):
    """Appends rows to one file per connection and day (or month) of the hour they describe."""

    config_model = FileSinkConfig
    config: FileSinkConfig
    suffix: ClassVar[str]

    def path_for(self, row: UsageRow) -> Path:
        stamp = row.period_start.strftime("%Y-%m-%d" if self.config.roll == "day" else "%Y-%m")
        return self.config.directory / self.connection / f"{stamp}.{self.suffix}"

    def deliver(self, payload: dict[str, Any]) -> None:
        by_file: dict[Path, list[UsageRow]] = {}
        for row in rows_of(payload):
            by_file.setdefault(self.path_for(row), []).append(row)
        for path, rows in by_file.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            new = not path.exists()
            with path.open("a", encoding="utf-8", newline="") as handle:
                self.write(handle, rows, header=new)

    @abstractmethod
    def write(self, handle: Any, rows: list[UsageRow], *, header: bool) -> None: ...


class JsonlFileSink(_FileSink):
    kind = "jsonl"
    suffix = "jsonl"
    description = "JSON Lines files, one per day or month of usage"

    def write(self, handle: Any, rows: list[UsageRow], *, header: bool) -> None:
        handle.writelines(json.dumps(row.export(), separators=(",", ":")) + "\n" for row in rows)


class CsvFileSink(_FileSink):
    kind = "csv"
    suffix = "csv"
    description = "CSV files with the normalized row's columns, one per day or month of usage"

    def write(self, handle: Any, rows: list[UsageRow], *, header: bool) -> None:
        writer = csv.DictWriter(handle, fieldnames=ROW_FIELDS, lineterminator="\n")
        if header:
            writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.export().items()} for row in rows)


class FocusFileSink(_FileSink):
    kind = "focus"
    suffix = "csv"
    description = "FOCUS 1.2 CSV files (README: FOCUS export), one per day or month of usage"

    def write(self, handle: Any, rows: list[UsageRow], *, header: bool) -> None:
        writer = csv.DictWriter(handle, fieldnames=FOCUS_COLUMNS, lineterminator="\n")
        if header:
            writer.writeheader()
        writer.writerows(
            {k: "" if v is None else v for k, v in focus_record(row).items()} for row in rows if is_billing_row(row)
        )


class WebhookSinkConfig(SinkConfig):
    url: str = Field(description="Where batches are POSTed (https://, or http:// on loopback).")
    secret: SecretStr = Field(description="Shared secret for the HMAC-SHA256 signature header.", min_length=16)
    timeout_seconds: float = Field(10.0, gt=0, le=120)

    @field_validator("url")
    @classmethod
    def _safe_url(cls, value: str) -> str:
        parts = value.split("?", 1)
        validate_base_url(parts[0])
        return value


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``t=<unix time>,v1=<hex HMAC-SHA256 of "<t>." + body>``: the receiver recomputes it and checks the time."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class WebhookSink(Sink):
    """POSTs each batch as JSON with an HMAC signature; a non-2xx answer or no answer is retried later."""

    kind = "webhook"
    config_model = WebhookSinkConfig
    config: WebhookSinkConfig
    accepts = frozenset({ROWS, ALERT, FINDING})
    description = "POST each batch (and alerts and findings) as signed JSON to a URL"

    def __init__(self, config: SinkConfig, *, connection: str) -> None:
        super().__init__(config, connection=connection)
        self._session = requests.Session()
        self._session.trust_env = False

    def deliver(self, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        timestamp = str(int(time.time()))
        response = self._session.post(
            self.config.url,
            data=body,
            headers={
                "Content-Type": "application/json",
                "User-Agent": f"connector-host/{__version__}",
                "X-Connector-Host-Delivery": str(payload.get("delivery_id", "")),
                SIGNATURE_HEADER: signature(self.config.secret.get_secret_value(), timestamp, body),
            },
            timeout=self.config.timeout_seconds,
            allow_redirects=False,
        )
        if not 200 <= response.status_code < 300:
            raise DeliveryError(f"the receiver answered HTTP {response.status_code}")

    def close(self) -> None:
        self._session.close()


@hookimpl
def connector_sdk_register_sinks() -> list[type[Sink]]:
    return [JsonlFileSink, CsvFileSink, FocusFileSink, WebhookSink]


def retry_delay(attempts: int) -> timedelta:
    return min(MAX_RETRY_DELAY, timedelta(seconds=30 * 2 ** min(attempts, 10)))


def rows_payload(name: str, rows: Iterable[UsageRow]) -> str:
    """The queued form of a page for the sinks; ``delivery_id`` (the outbox id) is added when it is sent."""
    return json.dumps({"type": ROWS, "connection": name, "rows": [row.export() for row in rows]}, separators=(",", ":"))


def finding_payload(name: str, finding: Finding, change: str) -> str:
    """The queued form of a finding that opened or resolved (``change``), with its evidence, for the sinks."""
    return json.dumps(
        {"type": FINDING, "connection": name, "change": change, "finding": finding.model_dump(mode="json")},
        separators=(",", ":"),
    )


def failure_reason(error: Exception) -> str:
    """Why a delivery failed, in the words ``sink list`` and ``sink deliver`` show."""
    if isinstance(error, DeliveryError):
        return str(error)
    if isinstance(error, requests.Timeout):
        return "the receiver did not answer in time"
    if isinstance(error, requests.ConnectionError):
        return "could not connect to the receiver"
    return f"{type(error).__name__}: {error}"
