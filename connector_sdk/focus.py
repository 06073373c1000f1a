"""Normalized usage rows as FOCUS 1.0 cost and usage data (FinOps Open Cost and Usage Specification).

One :class:`~connector_sdk.models.UsageRow` becomes one FOCUS row: a usage charge of one fal model endpoint, by one
API key (the FOCUS *sub account*) of one fal team (the *billing account*), in one UTC hour (the *charge period*) of
one calendar month (the *billing period*). ``the README's FOCUS export section`` explains every column, field by field.

Pure and streaming: nothing here touches the store or holds more than one batch of rows.

* :data:`FOCUS_COLUMNS`: the FOCUS 1.0 columns we write, in the specification's (alphabetical) order, then our own
  ``x_`` columns.
* :func:`focus_record`: one row as text, exactly as the CSV holds it (``None`` for null).
* :func:`write_focus_csv` / :func:`write_focus_parquet`: the export (Parquet needs the optional ``pyarrow``).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from decimal import Decimal, Inexact, localcontext
from pathlib import Path
from typing import Any, TextIO

from connector_sdk.errors import ConfigError, ConnectorHostError
from connector_sdk.models import UsageRow, decimal_text, iso

FOCUS_VERSION = "1.0"

PROVIDER = "fal.ai"
"""ProviderName, PublisherName and InvoiceIssuerName: fal makes, sells and bills its Model APIs itself."""

SERVICE_NAME = "fal Model APIs"
SERVICE_CATEGORY = "AI and Machine Learning"
RESOURCE_TYPE = "Model endpoint"
USER_KEY_SUB_ACCOUNT = "user:"
"""SubAccountId prefix of web-UI ("User key") activity; a fal key id cannot contain ``:`` (keys are ``ID:SECRET``)."""

DECIMAL_COLUMNS: frozenset[str] = frozenset(
    {
        "BilledCost",
        "ConsumedQuantity",
        "ContractedCost",
        "ContractedUnitPrice",
        "EffectiveCost",
        "ListCost",
        "ListUnitPrice",
        "PricingQuantity",
    }
)
DATETIME_COLUMNS: frozenset[str] = frozenset(
    {"BillingPeriodEnd", "BillingPeriodStart", "ChargePeriodEnd", "ChargePeriodStart"}
)

FOCUS_SPEC_COLUMNS: tuple[str, ...] = (
    # AvailabilityZone (Recommended) is left out: fal exposes no zones, and no rule requires the column.
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "CommitmentDiscountCategory",
    "CommitmentDiscountId",
    "CommitmentDiscountName",
    "CommitmentDiscountStatus",
    "CommitmentDiscountType",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ContractedCost",
    "ContractedUnitPrice",
    "EffectiveCost",
    "InvoiceIssuerName",
    "ListCost",
    "ListUnitPrice",
    "PricingCategory",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "RegionId",
    "RegionName",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "ServiceCategory",
    "ServiceName",
    "SkuId",
    "SkuPriceId",
    "SubAccountId",
    "SubAccountName",
    "Tags",
)
"""The FOCUS 1.0 columns we write, in the specification's order."""

EXTENSION_COLUMNS: tuple[str, ...] = ("x_ApiKeyLabel", "x_LoginUsername", "x_Connection")
"""Our own columns; FOCUS requires custom columns to start with ``x_``."""

FOCUS_COLUMNS: tuple[str, ...] = FOCUS_SPEC_COLUMNS + EXTENSION_COLUMNS

PARQUET_BATCH_ROWS = 10_000
PARQUET_DECIMAL_PRECISION = 38
PARQUET_DECIMAL_SCALE = 18
PARQUET_EXTRA_HINT = "pip install 'connector-host[parquet]'"


def billing_period(moment: datetime) -> tuple[datetime, datetime]:
    """The calendar month (UTC) holding ``moment``, as ``[start, end)``: fal bills monthly."""
    start = moment.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start, end


def sub_account_id(row: UsageRow) -> str:
    """The API key id, or ``user:<login username>`` (``user:`` when fal names none) for "User key" activity."""
    if row.api_key_id is not None:
        return row.api_key_id
    return USER_KEY_SUB_ACCOUNT + (row.login_username or "")


def sku_id(row: UsageRow) -> str:
    """One fal SKU: a model endpoint billed in one unit (fal's price list has one price per endpoint and unit)."""
    return f"{row.model}|{row.unit}"


def contracted_unit_price(row: UsageRow) -> Decimal:
    """The list unit price less fal's negotiated ``percent_discount``, exactly."""
    if row.percent_discount is None:
        return row.unit_price
    with localcontext() as ctx:
        ctx.prec = 200  # far beyond any price; Inexact is trapped so a rounded price can never slip out
        ctx.traps[Inexact] = True
        return row.unit_price * (100 - row.percent_discount) / 100


def charge_description(row: UsageRow) -> str:
    text = f"{row.model} usage, billed per {row.unit}"
    if row.percent_discount:
        text += f", {decimal_text(row.percent_discount)}% negotiated discount"
    return text


def focus_values(row: UsageRow) -> dict[str, Any]:
    """The row's FOCUS values as Python objects: ``Decimal``, aware UTC ``datetime``, ``str`` or ``None``."""
    period_start, period_end = billing_period(row.period_start)
    sku = sku_id(row)
    return {
        "BilledCost": row.cost,
        "BillingAccountId": row.account,
        "BillingAccountName": row.account,
        "BillingCurrency": row.currency,
        "BillingPeriodEnd": period_end,
        "BillingPeriodStart": period_start,
        "ChargeCategory": "Usage",
        "ChargeClass": None,
        "ChargeDescription": charge_description(row),
        "ChargeFrequency": "Usage-Based",
        "ChargePeriodEnd": row.period_end.astimezone(UTC),
        "ChargePeriodStart": row.period_start.astimezone(UTC),
        "CommitmentDiscountCategory": None,
        "CommitmentDiscountId": None,
        "CommitmentDiscountName": None,
        "CommitmentDiscountStatus": None,
        "CommitmentDiscountType": None,
        "ConsumedQuantity": row.quantity,
        "ConsumedUnit": row.unit,
        "ContractedCost": row.cost,
        "ContractedUnitPrice": contracted_unit_price(row),
        "EffectiveCost": row.cost,
        "InvoiceIssuerName": PROVIDER,
        "ListCost": row.list_cost,
        "ListUnitPrice": row.unit_price,
        "PricingCategory": "Standard",
        "PricingQuantity": row.quantity,
        "PricingUnit": row.unit,
        "ProviderName": PROVIDER,
        "PublisherName": PROVIDER,
        "RegionId": None,
        "RegionName": None,
        "ResourceId": row.model,
        "ResourceName": row.model,
        "ResourceType": RESOURCE_TYPE,
        "ServiceCategory": SERVICE_CATEGORY,
        "ServiceName": SERVICE_NAME,
        "SkuId": sku,
        "SkuPriceId": sku,
        "SubAccountId": sub_account_id(row),
        "SubAccountName": row.api_key_label,
        "Tags": None,
        "x_ApiKeyLabel": row.api_key_label,
        "x_LoginUsername": row.login_username,
        "x_Connection": row.connection,
    }


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, datetime):
        return iso(value)
    return str(value)


def focus_record(row: UsageRow) -> dict[str, str | None]:
    """One row as FOCUS text in :data:`FOCUS_COLUMNS` order: exact decimals (``0.3``), ``...Z`` UTC timestamps,
    ``None`` for null (an empty CSV field)."""
    return {column: _text(value) for column, value in focus_values(row).items()}


def write_focus_csv(rows: Iterable[UsageRow], stream: TextIO) -> int:
    """Write a header and one FOCUS line per row, streaming; returns the number of rows written.

    Open a file with ``newline=""`` (the writer ends lines with ``\\n``); nulls are empty fields.
    """
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(FOCUS_COLUMNS)
    count = 0
    for row in rows:
        writer.writerow(focus_record(row).values())
        count += 1
    return count


def _import_pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as error:
        raise ConfigError(
            f"the Parquet export needs pyarrow, an optional extra: {PARQUET_EXTRA_HINT} ({error})"
        ) from error
    return pyarrow, pyarrow.parquet


def parquet_schema(pa: Any) -> Any:
    """Decimals as ``decimal128(38, 18)``, timestamps as UTC ``timestamp[us]``, everything else as strings."""
    fields = []
    for column in FOCUS_COLUMNS:
        if column in DECIMAL_COLUMNS:
            kind = pa.decimal128(PARQUET_DECIMAL_PRECISION, PARQUET_DECIMAL_SCALE)
        elif column in DATETIME_COLUMNS:
            kind = pa.timestamp("us", tz="UTC")
        else:
            kind = pa.string()
        fields.append(pa.field(column, kind, nullable=True))
    return pa.schema(fields, metadata={"focus_version": FOCUS_VERSION})


_DECIMAL_LIMIT = Decimal(10) ** (PARQUET_DECIMAL_PRECISION - PARQUET_DECIMAL_SCALE)


def _parquet_decimal(column: str, value: Decimal | None) -> Decimal | None:
    """``value`` if ``decimal128(38, 18)`` holds it exactly; an error rather than a rounded amount otherwise."""
    if value is None:
        return None
    exponent = value.normalize().as_tuple().exponent
    if (isinstance(exponent, int) and exponent < -PARQUET_DECIMAL_SCALE) or abs(value) >= _DECIMAL_LIMIT:
        raise ConnectorHostError(
            f"FOCUS Parquet export: {column} value {decimal_text(value)} does not fit decimal128"
            f"({PARQUET_DECIMAL_PRECISION}, {PARQUET_DECIMAL_SCALE}) exactly; export CSV instead, which keeps it exact"
        )
    return value


def _batches(rows: Iterable[UsageRow], size: int) -> Iterator[dict[str, list[Any]]]:
    batch: dict[str, list[Any]] = {column: [] for column in FOCUS_COLUMNS}
    filled = 0
    for row in rows:
        for column, value in focus_values(row).items():
            batch[column].append(_parquet_decimal(column, value) if column in DECIMAL_COLUMNS else value)
        filled += 1
        if filled == size:
            yield batch
            batch, filled = {column: [] for column in FOCUS_COLUMNS}, 0
    if filled:
        yield batch


def write_focus_parquet(rows: Iterable[UsageRow], path: str | Path, *, batch_rows: int = PARQUET_BATCH_ROWS) -> int:
    """Write the rows as a FOCUS Parquet file in batches of ``batch_rows``; returns the number of rows written.

    Needs the optional ``pyarrow`` (:class:`ConfigError` without it). Money and quantities are ``decimal128(38, 18)``,
    exact: a value that would need rounding stops the export with an error (and removes the partial file).
    """
    pa, pq = _import_pyarrow()
    schema = parquet_schema(pa)
    count = 0
    try:
        with pq.ParquetWriter(str(path), schema) as writer:
            for batch in _batches(rows, batch_rows):
                table = pa.Table.from_pydict(batch, schema=schema)
                writer.write_table(table)
                count += table.num_rows
    except BaseException:
        Path(path).unlink(missing_ok=True)  # no half-written file that looks like an export
        raise
    return count
