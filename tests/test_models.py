"""Exact money text: how a Decimal is written wherever the host writes one."""

from __future__ import annotations

import re
from decimal import Decimal

from hypothesis import example, given
from hypothesis import strategies as st

from connector_sdk.models import decimal_text

PLAIN = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]*[1-9])?")


@given(
    st.decimals(allow_nan=False, allow_infinity=False)
    | st.builds(lambda m, e: Decimal(f"{m}E{e}"), st.integers(-(10**12), 10**12), st.integers(-40, 40))
)
@example(Decimal("-0"))
@example(Decimal("0E-7"))
@example(Decimal("0.140"))
@example(Decimal("1E+2"))
def test_decimal_text_is_plain_exact_and_without_trailing_zeros(value: Decimal) -> None:
    text = decimal_text(value)
    assert PLAIN.fullmatch(text), text
    assert Decimal(text) == value
    assert text != "-0"
