"""The numeric settings read from the environment, parsed and checked in one place.

A mistyped number is a local mistake: :func:`check_numbers` runs when a host opens, so it stops a command before any
sync starts (and before a vendor could be blamed for it), with one line naming the variable.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from connector_sdk.errors import ConfigError


@dataclass(frozen=True)
class Number:
    """A numeric environment variable: whole or not, its smallest allowed value and its default."""

    whole: bool
    minimum: float
    default: float
    meaning: str


# The visibility timeout must exceed the longest sync, or Redis starts a slow sync a second time (the lease then
# turns the copy away, but it costs a worker slot).
NUMBERS: dict[str, Number] = {
    "CONNECTOR_HOST_MAX_ATTEMPTS": Number(True, 1, 6, "HTTP attempts per request"),
    "CONNECTOR_HOST_BACKOFF_BASE": Number(False, 0, 0.5, "seconds before the first HTTP retry"),
    "CONNECTOR_HOST_VISIBILITY_TIMEOUT": Number(True, 1, 4 * 3600, "seconds before Redis re-delivers a task"),
    "CONNECTOR_HOST_TASK_RETRY_BASE": Number(False, 0, 10, "seconds before a worker retries a task"),
    # The findings' thresholds (connector_sdk.findings): an admin tunes them to the account's habits.
    "CONNECTOR_HOST_IDLE_KEY_DAYS": Number(True, 1, 30, "days without use before a listed key is idle"),
    "CONNECTOR_HOST_NEW_KEY_DAYS": Number(True, 1, 7, "days a new key stays an open finding"),
    "CONNECTOR_HOST_WEB_UI_THRESHOLD": Number(
        False, 0, 10, "web-UI spend per person over 30 days, in the rows' currency, above which it is a finding"
    ),
}


def number(name: str, environ: Mapping[str, str] | None = None) -> float:
    """The value of numeric variable ``name`` (an ``int`` for whole ones), or its default when unset or empty."""
    spec = NUMBERS[name]
    text = (os.environ if environ is None else environ).get(name, "").strip()
    if not text:
        return int(spec.default) if spec.whole else spec.default
    kind = "a whole number" if spec.whole else "a number"
    try:
        value: float = int(text) if spec.whole else float(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not {kind} ({spec.meaning})") from None
    if not math.isfinite(value) or value < spec.minimum:
        raise ConfigError(f"{name}={text!r}: {spec.meaning} must be {kind} of at least {spec.minimum:g}")
    return value


def amount(name: str, environ: Mapping[str, str] | None = None) -> Decimal:
    """The value of a numeric variable ``name`` that holds money, as the exact decimal it was written as (checked
    like :func:`number`), or its default."""
    number(name, environ)
    text = (os.environ if environ is None else environ).get(name, "").strip()
    return Decimal(text) if text else Decimal(str(NUMBERS[name].default))


def check_numbers(environ: Mapping[str, str] | None = None) -> None:
    """Raise :class:`ConfigError` naming the first numeric variable that is set to something unusable."""
    for name in NUMBERS:
        number(name, environ)
