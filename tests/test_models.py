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


def test_every_record_is_built_on_first_use_not_at_import() -> None:
    # Commands that only read the store (status, report) import this module; a model built at import costs them.
    import inspect

    import pydantic

    import connector_sdk.models as models

    records = [
        value
        for value in vars(models).values()
        if inspect.isclass(value) and issubclass(value, pydantic.BaseModel) and value.__module__ == models.__name__
    ]
    assert len(records) > 20
    assert [r.__name__ for r in records if not r.model_config.get("defer_build")] == []
