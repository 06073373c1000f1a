"""Checked readers of a vendor's JSON, for connectors' mapping functions.

Each takes the part of a decoded body it reads and ``what`` (where in the answer it is, e.g. ``"OpenAI
/organization/costs data[3]"``), and either returns the value in the type asked for or raises
:class:`~connector_sdk.errors.ResponseError` naming the field, so a malformed answer fails a sync with a message a
person can act on. Numbers are ``int`` or ``Decimal`` (decode JSON with ``parse_float=Decimal``), never floats.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from connector_sdk.errors import ResponseError

# 1e999999999 is valid JSON: magnitudes are bounded before any arithmetic or text conversion meets them.
MAX_DIGITS = 30


def json_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ResponseError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


def json_list(body: Mapping[str, Any], name: str, what: str) -> list[Any]:
    value = body.get(name)
    if not isinstance(value, list):
        raise ResponseError(f"{what}: field {name!r} must be a list, got {type(value).__name__}")
    return value


def optional_text(body: Mapping[str, Any], name: str, what: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise ResponseError(f"{what}: field {name!r} must be a string or null, got {value!r}")
    return value


def required_text(body: Mapping[str, Any], name: str, what: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise ResponseError(f"{what}: field {name!r} must be a non-empty string, got {value!r}")
    return value


def bounded(number: Decimal, what: str) -> Decimal:
    """``number`` if it is finite and of a magnitude money and quantities can have."""
    if not number.is_finite() or not -MAX_DIGITS < number.adjusted() < MAX_DIGITS:
        raise ResponseError(f"{what}: number out of range")
    return number


def json_number(value: Any, what: str) -> Decimal:
    """A JSON number (``true`` is not one) as an exact, bounded ``Decimal``."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise ResponseError(f"{what}: expected a JSON number, got {value!r}")
    return bounded(Decimal(value), what)
