"""The checked JSON readers connectors share: a value of the wrong type, or a number no money can be, is a
ResponseError naming where it was; a right one comes back as it was sent."""

from __future__ import annotations

from decimal import Decimal

import pytest

from connector_sdk.errors import ResponseError
from connector_sdk.fields import json_list, json_number, json_object, optional_text, required_text

WHERE = "Vendor /things data[2]"


def test_right_values_come_back_exactly() -> None:
    body = {"name": "Prod", "note": None, "items": [1], "cost": Decimal("0.000000123")}
    assert json_object(body, WHERE) is body
    assert json_list(body, "items", WHERE) == [1]
    assert (optional_text(body, "name", WHERE), optional_text(body, "note", WHERE)) == ("Prod", None)
    assert required_text(body, "name", WHERE) == "Prod"
    assert json_number(body["cost"], WHERE) == Decimal("0.000000123")
    assert json_number(12, WHERE) == Decimal(12)


@pytest.mark.parametrize(
    ("read", "message"),
    [
        (lambda: json_object([1], WHERE), "expected a JSON object, got list"),
        (lambda: json_list({"items": {}}, "items", WHERE), "field 'items' must be a list"),
        (lambda: optional_text({"name": 3}, "name", WHERE), "field 'name' must be a string or null"),
        (lambda: required_text({"name": ""}, "name", WHERE), "field 'name' must be a non-empty string"),
        (lambda: json_number(True, WHERE), "expected a JSON number, got True"),
        (lambda: json_number("1.5", WHERE), "expected a JSON number"),
        (lambda: json_number(Decimal("1e999999999"), WHERE), "number out of range"),
        (lambda: json_number(Decimal("NaN"), WHERE), "number out of range"),
    ],
)
def test_wrong_values_name_where_they_were(read: object, message: str) -> None:
    with pytest.raises(ResponseError, match=message) as error:
        read()  # type: ignore[operator]
    assert str(error.value).startswith(f"{WHERE}: ")
