"""Normalized rows as FOCUS 1.2 cost and usage data (FinOps Open Cost and Usage Specification).

One billed :class:`~connector_sdk.models.UsageRow` becomes one FOCUS row: a usage charge for one model (the
*resource*) in one sub account (an OpenAI project, or for vendors without workspaces the API key or "User key"
login) of one billing account (the fal team, the OpenAI organization), in the row's own period (an hour for fal, a
day for OpenAI) of one calendar month (the *billing period*). Rows of ``kind`` ``"usage"`` carry quantities but no
money: they are not billing data and are left out. ``the README's FOCUS export section`` explains every column.

Pure and streaming: nothing here touches the store or holds more than one batch of rows.

* :data:`FOCUS_COLUMNS`: the FOCUS 1.2 columns we write, in alphabetical order, then our own ``x_`` columns.
* :class:`FocusProfile` / :func:`focus_profile`: what the rows alone cannot say about a vendor (its FOCUS names,
  account types, and which of the specification's applicability criteria its data meets).
* :func:`focus_record`: one row as text, exactly as the CSV holds it (``None`` for null).
* :func:`write_focus_csv` / :func:`write_focus_parquet`: the export (Parquet needs the optional ``pyarrow``).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from decimal import Decimal, Inexact, localcontext
from functools import lru_cache
from pathlib import Path
from typing import Any, TextIO

from pydantic import BaseModel, ConfigDict

from connector_sdk.errors import ConfigError, ConnectorHostError
from connector_sdk.models import UsageRow, decimal_text, iso

FOCUS_VERSION = "1.2"

USER_KEY_SUB_ACCOUNT = "user:"
"""SubAccountId prefix of web-UI ("User key") activity; a fal key id cannot contain ``:`` (keys are ``ID:SECRET``)."""

SERVICE_CATEGORY = "AI and Machine Learning"
SERVICE_SUBCATEGORY = "Generative AI"


class FocusProfile(BaseModel):
    """What FOCUS needs to know about a vendor that its rows do not carry.

    ``criteria`` are the FOCUS 1.2 *applicability criteria* (``focus-validator --applicability-criteria``) that the
    vendor's data meets: the conditional rules behind any other criterion do not apply to its export.
    """

    model_config = ConfigDict(frozen=True)

    provider: str
    """ProviderName, PublisherName and InvoiceIssuerName: every vendor here makes, sells and bills its API itself."""
    service_name: str
    service_category: str = SERVICE_CATEGORY
    service_subcategory: str = SERVICE_SUBCATEGORY
    billing_account_type: str
    workspace_type: str | None = None
    """SubAccountType of a row's workspace (OpenAI's project); ``None`` for a vendor without workspaces."""
    resource_type: str = "Model"
    criteria: frozenset[str] = frozenset()


# The criteria every profile below meets: the team or organization has a name, the rows carry quantities, and
# spend is grouped inside the account (by workspace or by API key).
_COMMON_CRITERIA = frozenset({"ACCOUNT_NAMING_SUPPORTED", "USAGE_MEASUREMENT_SUPPORTED", "SUB_ACCOUNT_SUPPORTED"})

FOCUS_PROFILES: dict[str, FocusProfile] = {
    "fal": FocusProfile(
        provider="fal.ai",
        service_name="fal Model APIs",
        billing_account_type="Team",
        resource_type="Model endpoint",
        # fal's usage items carry the list unit price (its public price list) and the negotiated discount; API keys
        # and web-UI logins are two kinds of sub account.
        criteria=_COMMON_CRITERIA
        | {
            "PUBLIC_PRICE_LIST_SUPPORTED",
            "UNIT_PRICING_SUPPORTED",
            "NEGOTIATED_PRICING_SUPPORTED",
            "MULTIPLE_SUB_ACCOUNT_TYPES_SUPPORTED",
        },
    ),
    "openai": FocusProfile(
        provider="OpenAI",
        service_name="OpenAI API",
        billing_account_type="Organization",
        workspace_type="Project",
        # OpenAI's costs API gives an amount per line item and no unit price, list price or discount: the price
        # list criteria cannot be met by this data even though openai.com publishes prices.
        criteria=_COMMON_CRITERIA,
    ),
    "anthropic": FocusProfile(
        provider="Anthropic",
        service_name="Claude API",
        billing_account_type="Organization",
        workspace_type="Workspace",
        criteria=_COMMON_CRITERIA,
    ),
}


def focus_profile(connector: str) -> FocusProfile:
    """The vendor's profile; a connector without one is named by its id and filed under ``Other``."""
    known = FOCUS_PROFILES.get(connector)
    return known if known is not None else _fallback_profile(connector)


@lru_cache(maxsize=256)  # one per unknown connector, not one per row
def _fallback_profile(connector: str) -> FocusProfile:
    return FocusProfile(
        provider=connector,
        service_name=connector,
        service_category="Other",
        service_subcategory="Other (Other)",
        billing_account_type="Account",
        criteria=frozenset({"ACCOUNT_NAMING_SUPPORTED", "SUB_ACCOUNT_SUPPORTED"}),
    )


DECIMAL_COLUMNS: frozenset[str] = frozenset(
    {
        "BilledCost",
        "CommitmentDiscountQuantity",
        "ConsumedQuantity",
        "ContractedCost",
        "ContractedUnitPrice",
        "EffectiveCost",
        "ListCost",
        "ListUnitPrice",
        "PricingCurrencyContractedUnitPrice",
        "PricingCurrencyEffectiveCost",
        "PricingCurrencyListUnitPrice",
        "PricingQuantity",
    }
)
DATETIME_COLUMNS: frozenset[str] = frozenset(
    {"BillingPeriodEnd", "BillingPeriodStart", "ChargePeriodEnd", "ChargePeriodStart"}
)

FOCUS_SPEC_COLUMNS: tuple[str, ...] = (
    # AvailabilityZone (conditional: "when the provider supports deploying resources within an availability zone")
    # is left out: no vendor here exposes zones.
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingAccountType",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "CapacityReservationId",
    "CapacityReservationStatus",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "CommitmentDiscountCategory",
    "CommitmentDiscountId",
    "CommitmentDiscountName",
    "CommitmentDiscountQuantity",
    "CommitmentDiscountStatus",
    "CommitmentDiscountType",
    "CommitmentDiscountUnit",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ContractedCost",
    "ContractedUnitPrice",
    "EffectiveCost",
    "InvoiceId",
    "InvoiceIssuerName",
    "ListCost",
    "ListUnitPrice",
    "PricingCategory",
    "PricingCurrency",
    "PricingCurrencyContractedUnitPrice",
    "PricingCurrencyEffectiveCost",
    "PricingCurrencyListUnitPrice",
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
    "ServiceSubcategory",
    "SkuId",
    "SkuMeter",
    "SkuPriceDetails",
    "SkuPriceId",
    "SubAccountId",
    "SubAccountName",
    "SubAccountType",
    "Tags",
)
"""The FOCUS 1.2 columns we write, in alphabetical order (the order the specification lists them in)."""

EXTENSION_COLUMNS: tuple[str, ...] = ("x_ApiKeyId", "x_ApiKeyLabel", "x_LoginUsername", "x_Connection")
"""Our own columns; FOCUS requires custom columns to start with ``x_``."""

FOCUS_COLUMNS: tuple[str, ...] = FOCUS_SPEC_COLUMNS + EXTENSION_COLUMNS

PARQUET_BATCH_ROWS = 10_000
PARQUET_DECIMAL_PRECISION = 38
PARQUET_DECIMAL_SCALE = 18
PARQUET_EXTRA_HINT = "pip install 'connector-host[parquet]'"


def is_billing_row(row: UsageRow) -> bool:
    """Whether the row is billed money: usage rows (quantities only, no cost) stay out of FOCUS."""
    # `kind` is being added to UsageRow; until it lands every row is a cost row.
    return getattr(row, "kind", "cost") != "usage"


def billing_period(moment: datetime) -> tuple[datetime, datetime]:
    """The calendar month (UTC) holding ``moment``, as ``[start, end)``: the vendors here bill monthly."""
    start = moment.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start, end


def sub_account(row: UsageRow, profile: FocusProfile) -> tuple[str | None, str | None, str | None]:
    """``(SubAccountId, SubAccountName, SubAccountType)``.

    The row's workspace (OpenAI project) when it has one; otherwise the API key, or ``user:<login username>``
    (``user:`` when the vendor names none) for "User key" activity.
    """
    workspace_id: str | None = getattr(row, "workspace_id", None)
    if workspace_id is not None:
        workspace_name: str | None = getattr(row, "workspace_name", None)
        return workspace_id, workspace_name or workspace_id, profile.workspace_type or "Workspace"
    if profile.workspace_type is not None:
        return None, None, None  # a vendor with workspaces: spend outside any workspace is in no sub account
    if row.api_key_id is not None:
        return row.api_key_id, row.api_key_label, "API Key"
    return USER_KEY_SUB_ACCOUNT + (row.login_username or ""), row.api_key_label, "User"


_TIME_UNITS = {"year": "Year", "month": "Month", "day": "Day", "hour": "Hour", "minute": "Minute", "second": "Second"}
_KNOWN_WORDS = {
    "gpu": "GPU",
    "cpu": "CPU",
    "vcpu": "vCPU",
    "api": "API",
    "kibibyte": "KiB",
    "mebibyte": "MiB",
    "gibibyte": "GiB",
    "tebibyte": "TiB",
    "kilobyte": "KB",
    "megabyte": "MB",
    "gigabyte": "GB",
    "terabyte": "TB",
}
_UNIT_WORD = re.compile(r"[A-Za-z0-9]+")


def _unit_word(word: str) -> tuple[str, bool]:
    """A unit word in FOCUS spelling, and whether it is a plural time unit."""
    lower = word.lower()
    if lower in _KNOWN_WORDS:
        return _KNOWN_WORDS[lower], False
    if lower in _TIME_UNITS:
        return _TIME_UNITS[lower], False
    if lower.endswith("s") and lower[:-1] in _TIME_UNITS:
        return _TIME_UNITS[lower[:-1]] + "s", True
    return word[0].upper() + word[1:], False


def focus_unit(unit: str | None) -> str | None:
    """The vendor's billing unit in the FOCUS Unit Format: ``image`` → ``Image``, ``video_second`` →
    ``Video Second``, ``1000_tokens`` → ``1000 Tokens``, ``gibibyte_hours`` → ``GiB-Hours``,
    ``duration_seconds`` → ``Seconds``. Same unit, FOCUS's capitalization and separators; singular or plural as
    the vendor has it."""
    if unit is None:
        return None
    words = _UNIT_WORD.findall(unit)
    if not words:
        return unit
    if words[0].lower() == "duration" and len(words) > 1:
        words = words[1:]  # OpenAI's duration_seconds/minutes/hours: the duration is the time unit itself
    count = words[0] if words[0].isdigit() and len(words) > 1 else None
    spelled = [_unit_word(word) for word in words[1:]] if count else [_unit_word(word) for word in words]
    names = [name for name, _ in spelled]
    if not count and len(names) > 1 and spelled[-1][1]:
        text = " ".join(names[:-1]) + "-" + names[-1]  # a quantity over time: GiB-Hours, GPU-Seconds
    else:
        text = " ".join(names)
    return f"{count} {text}" if count else text


def contracted_unit_price(row: UsageRow) -> Decimal | None:
    """The list unit price less the negotiated ``percent_discount``, exactly; null when the vendor gives no price."""
    if row.unit_price is None:
        return None
    if row.percent_discount is None:
        return row.unit_price
    with localcontext() as ctx:
        ctx.prec = 200  # far beyond any price; Inexact is trapped so a rounded price can never slip out
        ctx.traps[Inexact] = True
        return row.unit_price * (100 - row.percent_discount) / 100


def list_cost(row: UsageRow) -> Decimal:
    """ListCost, which FOCUS never allows to be null: the vendor's list cost; else the billed cost plus the
    discount the vendor reports; else the billed cost itself (a vendor that reports neither a list price nor a
    discount charges its list price as far as the data can tell, so no saving is invented)."""
    if row.list_cost is not None:
        return row.list_cost
    if row.discount is not None:
        return row.cost + row.discount
    return row.cost


def _line_item(row: UsageRow) -> str | None:
    # `line_item` is being added to UsageRow (the vendor's billing line verbatim); older rows have none.
    value: str | None = getattr(row, "line_item", None)
    return value


def sku_id(row: UsageRow) -> str | None:
    """The vendor's billing line (OpenAI: ``gpt-4o-2024-08-06, input``); else one model billed in one unit
    (``fal-ai/flux/dev|image``: fal's price list has one price per endpoint and unit)."""
    line = _line_item(row)
    if line:
        return line
    if row.model is None or row.unit is None:
        return None
    return f"{row.model}|{row.unit}"


def sku_meter(row: UsageRow) -> str | None:
    """What the SKU meters: the part of the billing line after its first comma (``input``), else the unit."""
    line = _line_item(row)
    if line and "," in line:
        meter = line.split(",", 1)[1].strip()
        if meter:
            return meter
    return row.unit


def charge_description(row: UsageRow) -> str:
    line = _line_item(row)
    if line:
        return line  # the vendor's own words for the charge
    text = f"{row.model} usage" if row.model is not None else "Usage"
    if row.unit is not None:
        text += f", billed per {row.unit}"
    if row.percent_discount:
        text += f", {decimal_text(row.percent_discount)}% negotiated discount"
    return text


def focus_values(row: UsageRow) -> dict[str, Any]:
    """The row's FOCUS values as Python objects: ``Decimal``, aware UTC ``datetime``, ``str`` or ``None``."""
    if row.cost is None:
        raise ConnectorHostError(f"FOCUS export: row {row.row_id} of {row.connection} is billed but has no cost")
    profile = focus_profile(row.connector)
    period_start, period_end = billing_period(row.period_start)
    sku = sku_id(row)
    unit = focus_unit(row.unit)
    sub_id, sub_name, sub_type = sub_account(row, profile)
    contracted = contracted_unit_price(row)
    has_resource = row.model is not None
    return {
        "BilledCost": row.cost,
        "BillingAccountId": row.account,
        "BillingAccountName": row.account,
        "BillingAccountType": profile.billing_account_type,
        "BillingCurrency": row.currency,
        "BillingPeriodEnd": period_end,
        "BillingPeriodStart": period_start,
        "CapacityReservationId": None,
        "CapacityReservationStatus": None,
        "ChargeCategory": "Usage",
        "ChargeClass": None,
        "ChargeDescription": charge_description(row),
        "ChargeFrequency": "Usage-Based",
        "ChargePeriodEnd": row.period_end.astimezone(UTC),
        "ChargePeriodStart": row.period_start.astimezone(UTC),
        "CommitmentDiscountCategory": None,
        "CommitmentDiscountId": None,
        "CommitmentDiscountName": None,
        "CommitmentDiscountQuantity": None,
        "CommitmentDiscountStatus": None,
        "CommitmentDiscountType": None,
        "CommitmentDiscountUnit": None,
        "ConsumedQuantity": row.quantity,
        "ConsumedUnit": unit,
        "ContractedCost": row.cost,
        "ContractedUnitPrice": contracted,
        "EffectiveCost": row.cost,
        "InvoiceId": None,
        "InvoiceIssuerName": profile.provider,
        "ListCost": list_cost(row),
        "ListUnitPrice": row.unit_price,
        "PricingCategory": "Standard",
        # The vendors here price in the currency they bill in: the pricing-currency columns repeat the billing ones.
        "PricingCurrency": row.currency,
        "PricingCurrencyContractedUnitPrice": contracted,
        "PricingCurrencyEffectiveCost": row.cost,
        "PricingCurrencyListUnitPrice": row.unit_price,
        "PricingQuantity": row.quantity,
        "PricingUnit": unit,
        "ProviderName": profile.provider,
        "PublisherName": profile.provider,
        "RegionId": None,
        "RegionName": None,
        "ResourceId": row.model,
        "ResourceName": row.model,
        "ResourceType": profile.resource_type if has_resource else None,
        "ServiceCategory": profile.service_category,
        "ServiceName": profile.service_name,
        "ServiceSubcategory": profile.service_subcategory,
        "SkuId": sku,
        "SkuMeter": sku_meter(row) if sku is not None else None,
        "SkuPriceDetails": None,
        "SkuPriceId": sku if row.unit_price is not None else None,  # a price id names a known price
        "SubAccountId": sub_id,
        "SubAccountName": sub_name,
        "SubAccountType": sub_type,
        "Tags": None,
        "x_ApiKeyId": row.api_key_id,
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
    """Write a header and one FOCUS line per billed row, streaming; returns the number of rows written.

    Usage rows (quantities only) are skipped. Open a file with ``newline=""`` (the writer ends lines with ``\\n``);
    nulls are empty fields.
    """
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(FOCUS_COLUMNS)
    count = 0
    for row in rows:
        if not is_billing_row(row):
            continue
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
        if not is_billing_row(row):
            continue
        for column, value in focus_values(row).items():
            batch[column].append(_parquet_decimal(column, value) if column in DECIMAL_COLUMNS else value)
        filled += 1
        if filled == size:
            yield batch
            batch, filled = {column: [] for column in FOCUS_COLUMNS}, 0
    if filled:
        yield batch


def write_focus_parquet(rows: Iterable[UsageRow], path: str | Path, *, batch_rows: int = PARQUET_BATCH_ROWS) -> int:
    """Write the billed rows as a FOCUS Parquet file in batches of ``batch_rows``; returns the number of rows written.

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
