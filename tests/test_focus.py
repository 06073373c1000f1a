"""The FOCUS 1.2 export: the mapping of a normalized row, column by column, and the FinOps Foundation's validator on
an export of a fal simulator backfill and of OpenAI-shaped daily cost rows.

The validator (``focus-validator`` 2.2.1) lives in its own Python 3.12 virtual environment, made by
``scripts/install-focus-validator.sh``: ``FOCUS_VALIDATOR`` names its executable, else ``.focus-venv`` in the
repository root is used. Without it the validator tests fail, since CI guarantees it; set
``CONNECTOR_HOST_SKIP_FOCUS_VALIDATOR=1`` to skip them instead.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from connector_sdk.errors import ConfigError, ConnectorHostError
from connector_sdk.focus import (
    EXTENSION_COLUMNS,
    FOCUS_COLUMNS,
    FOCUS_SPEC_COLUMNS,
    focus_profile,
    focus_record,
    focus_unit,
    write_focus_csv,
    write_focus_parquet,
)
from connector_sdk.host import Host
from connector_sdk.models import UsageRow
from connector_sdk.sinks import FileSinkConfig, FocusFileSink
from connector_sdk.sync import sync_now
from tests.store_fixtures import usage_row

REPO_ROOT = Path(__file__).resolve().parent.parent
VALIDATOR_ENV = "FOCUS_VALIDATOR"
SKIP_VALIDATOR_ENV = "CONNECTOR_HOST_SKIP_FOCUS_VALIDATOR"
VALIDATOR_VERSION = "2.2.1"

# Every column FOCUS 1.2 defines (the Cost and Usage dataset), alphabetically.
FOCUS_1_2_COLUMNS = [
    "AvailabilityZone", "BilledCost", "BillingAccountId", "BillingAccountName", "BillingAccountType",
    "BillingCurrency", "BillingPeriodEnd", "BillingPeriodStart", "CapacityReservationId", "CapacityReservationStatus",
    "ChargeCategory", "ChargeClass", "ChargeDescription", "ChargeFrequency", "ChargePeriodEnd", "ChargePeriodStart",
    "CommitmentDiscountCategory", "CommitmentDiscountId", "CommitmentDiscountName", "CommitmentDiscountQuantity",
    "CommitmentDiscountStatus", "CommitmentDiscountType", "CommitmentDiscountUnit", "ConsumedQuantity",
    "ConsumedUnit", "ContractedCost", "ContractedUnitPrice", "EffectiveCost", "InvoiceId", "InvoiceIssuerName",
    "ListCost", "ListUnitPrice", "PricingCategory", "PricingCurrency", "PricingCurrencyContractedUnitPrice",
    "PricingCurrencyEffectiveCost", "PricingCurrencyListUnitPrice", "PricingQuantity", "PricingUnit",
    "ProviderName", "PublisherName", "RegionId", "RegionName", "ResourceId", "ResourceName", "ResourceType",
    "ServiceCategory", "ServiceName", "ServiceSubcategory", "SkuId", "SkuMeter", "SkuPriceDetails", "SkuPriceId",
    "SubAccountId", "SubAccountName", "SubAccountType", "Tags",
]  # fmt: skip
# The columns FOCUS 1.2 requires in every dataset, whatever the provider supports.
FOCUS_1_2_MANDATORY = [
    "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency", "BillingPeriodEnd",
    "BillingPeriodStart", "ChargeCategory", "ChargeClass", "ChargeDescription", "ChargePeriodEnd",
    "ChargePeriodStart", "ContractedCost", "EffectiveCost", "InvoiceIssuerName", "ListCost", "PricingQuantity",
    "PricingUnit", "ProviderName", "PublisherName", "ServiceCategory", "ServiceName",
]  # fmt: skip
SERVICE_CATEGORIES = {
    "AI and Machine Learning", "Analytics", "Business Applications", "Compute", "Databases", "Developer Tools",
    "Multicloud", "Identity", "Integration", "Internet of Things", "Management and Governance", "Media",
    "Migration", "Mobile", "Networking", "Security", "Storage", "Web", "Other",
}  # fmt: skip
# FOCUS 1.2's Unit Format: a unit, <unit>-<plural time unit>, <unit>/<time unit> or <count> <unit> (as the validator
# checks it; its count units are any words of letters and digits starting with a letter).
_WORDS = r"[A-Za-z][A-Za-z0-9]*(?: [A-Za-z][A-Za-z0-9]*)*"
_PLURAL_TIME = r"(?:Years|Months|Days|Hours|Minutes|Seconds)"
_TIME = r"(?:Year|Month|Day|Hour|Minute|Second)"
UNIT_FORMAT = re.compile(rf"{_WORDS}|{_WORDS}-{_PLURAL_TIME}|{_WORDS}/{_TIME}|[0-9]+ {_WORDS}")


def at_hour(row: UsageRow, start: datetime) -> UsageRow:
    return row.model_copy(update={"period_start": start, "period_end": start + timedelta(hours=1)})


def openai_cost_row(
    day: int,
    line_item: str | None,
    quantity: str | None,
    unit: str | None,
    cost: str,
    *,
    key: str | None = "key_abc",
    project: str | None = "proj_research",
    kind: str = "cost",
) -> UsageRow:
    """A daily OpenAI cost row as issue 15 describes it: a line item of one key in one project, no price fields.

    Built by copying a fal row because UsageRow does not have the nullable prices, ``kind``, ``workspace_*`` and
    ``line_item`` yet (another change adds them); ``model_copy`` sets them without validation.
    """
    start = datetime(2026, 10, 1, tzinfo=UTC) + timedelta(days=day)
    fields: dict[str, Any] = {
        "connector": "openai",
        "connection": "openai-test",
        "account": "org-acme",
        "period_start": start,
        "period_end": start + timedelta(days=1),
        "model": None if line_item is None else line_item.split(",")[0].strip(),
        "unit": unit,
        "quantity": None if quantity is None else Decimal(quantity),
        "unit_price": None,
        "list_cost": None,
        "discount": None,
        "percent_discount": None,
        "cost": Decimal(cost) if kind == "cost" else None,
        "kind": kind,
        "workspace_id": project,
        "workspace_name": None if project is None else "Research",
        "line_item": line_item,
    }
    return usage_row(key=key, label="User key" if key is None else "ci-bot").model_copy(update=fields)


OPENAI_LINE_ITEMS = [
    ("gpt-4o-2024-08-06, input", "120000", "tokens", "0.3"),
    ("gpt-4o-2024-08-06, output", "5000.5", "1000_tokens", "0.05"),
    ("gpt-4o-mini", "77", "images", "0.0165"),
    ("tts-1", "1234", "characters", "0.018"),
    ("whisper-1", "12.5", "duration_minutes", "0.075"),
]


def openai_cost_rows() -> list[UsageRow]:
    """Every fifth day of October and November 2026, by an API key and by "User key", plus usage rows."""
    rows = [
        openai_cost_row(day, line, quantity, unit, cost, key=key)
        for day in range(0, 61, 5)
        for key in ("key_abc", None)
        for line, quantity, unit, cost in OPENAI_LINE_ITEMS
    ]
    usage = [openai_cost_row(day, "gpt-4o", "999", "input_tokens", "0", kind="usage") for day in range(3)]
    return rows + usage


# --- columns ---------------------------------------------------------------------------------------------------


def test_columns_are_focus_1_2_in_spec_order_then_x_columns() -> None:
    assert len(set(FOCUS_COLUMNS)) == len(FOCUS_COLUMNS)
    spec = [column for column in FOCUS_COLUMNS if not column.startswith("x_")]
    assert tuple(spec) == FOCUS_SPEC_COLUMNS
    assert spec == [column for column in FOCUS_1_2_COLUMNS if column in spec]  # spec order
    assert set(FOCUS_1_2_COLUMNS) - set(spec) == {"AvailabilityZone"}  # no vendor here has zones
    assert set(FOCUS_1_2_MANDATORY) <= set(spec)
    assert FOCUS_COLUMNS[len(spec) :] == EXTENSION_COLUMNS
    assert EXTENSION_COLUMNS == ("x_ApiKeyId", "x_ApiKeyLabel", "x_LoginUsername", "x_Connection")


def test_record_has_every_column_in_order() -> None:
    assert tuple(focus_record(usage_row())) == FOCUS_COLUMNS
    assert tuple(focus_record(openai_cost_rows()[0])) == FOCUS_COLUMNS


# --- mapping ---------------------------------------------------------------------------------------------------


def test_fal_row_maps_to_a_standard_usage_charge() -> None:
    row = usage_row("acme", 3, key="key-1", label="production", model="fal-ai/flux/dev", unit="images")
    record = focus_record(row)
    assert record["ChargeCategory"] == "Usage"
    assert record["ChargeClass"] is None
    assert record["ChargeFrequency"] == "Usage-Based"
    assert record["PricingCategory"] == "Standard"
    assert record["ServiceCategory"] == "AI and Machine Learning"
    assert record["ServiceCategory"] in SERVICE_CATEGORIES
    assert record["ServiceSubcategory"] == "Generative AI"
    assert record["ServiceName"] == "fal Model APIs"
    assert record["ProviderName"] == record["PublisherName"] == record["InvoiceIssuerName"] == "fal.ai"
    assert record["BillingAccountId"] == record["BillingAccountName"] == "acme-ai"
    assert record["BillingAccountType"] == "Team"
    assert record["BillingCurrency"] == record["PricingCurrency"] == "USD"
    assert record["SubAccountId"] == record["x_ApiKeyId"] == "key-1"
    assert record["SubAccountName"] == record["x_ApiKeyLabel"] == "production"
    assert record["SubAccountType"] == "API Key"
    assert record["x_LoginUsername"] is None
    assert record["x_Connection"] == "acme"
    assert record["ResourceId"] == record["ResourceName"] == "fal-ai/flux/dev"
    assert record["ResourceType"] == "Model endpoint"
    assert record["SkuId"] == record["SkuPriceId"] == "fal-ai/flux/dev|images"
    assert record["SkuMeter"] == "images"
    assert record["PricingUnit"] == record["ConsumedUnit"] == "Images"
    assert record["ChargeDescription"] == "fal-ai/flux/dev usage, billed per images"
    for column in ("CapacityReservationId", "CapacityReservationStatus", "CommitmentDiscountCategory",
                   "CommitmentDiscountId", "CommitmentDiscountName", "CommitmentDiscountQuantity",
                   "CommitmentDiscountStatus", "CommitmentDiscountType", "CommitmentDiscountUnit", "InvoiceId",
                   "RegionId", "RegionName", "SkuPriceDetails", "Tags"):  # fmt: skip
        assert record[column] is None, column


def test_money_and_quantities_are_exact_decimal_text() -> None:
    row = usage_row(quantity="0.1", unit_price="0.3")  # 0.1 * 0.3 is 0.030000000000000002 in binary floating point
    record = focus_record(row)
    assert record["ListCost"] == record["ContractedCost"] == record["BilledCost"] == record["EffectiveCost"] == "0.03"
    assert record["PricingCurrencyEffectiveCost"] == "0.03"
    assert record["PricingQuantity"] == record["ConsumedQuantity"] == "0.1"
    assert record["ListUnitPrice"] == record["ContractedUnitPrice"] == "0.3"
    assert record["PricingCurrencyListUnitPrice"] == record["PricingCurrencyContractedUnitPrice"] == "0.3"

    tiny = focus_record(usage_row(quantity="1234567.000", unit_price="0.00000125"))
    assert tiny["ListUnitPrice"] == "0.00000125"  # no exponent, no trailing zeros
    assert tiny["PricingQuantity"] == "1234567"
    assert tiny["ListCost"] == "1.54320875"


def test_discount_gives_contracted_unit_price_and_cost() -> None:
    row = usage_row(quantity="3", unit_price="0.025", percent_discount="20")
    record = focus_record(row)
    assert record["ListUnitPrice"] == "0.025"
    assert record["ListCost"] == "0.075"
    assert record["ContractedUnitPrice"] == record["PricingCurrencyContractedUnitPrice"] == "0.02"
    assert record["ContractedCost"] == record["BilledCost"] == record["EffectiveCost"] == "0.06"
    assert Decimal(record["ContractedUnitPrice"]) * Decimal(record["PricingQuantity"]) == Decimal("0.06")
    assert record["ChargeDescription"] == "fal-ai/flux/dev usage, billed per images, 20% negotiated discount"


def test_contracted_unit_price_is_exact_for_odd_discounts() -> None:
    row = usage_row(quantity="7", unit_price="0.0000333", percent_discount="12.5")
    record = focus_record(row)
    assert record["ContractedUnitPrice"] == "0.0000291375"
    assert Decimal(record["ContractedUnitPrice"]) * 7 == row.cost == Decimal(record["ContractedCost"])


def test_zero_discount_is_not_described() -> None:
    record = focus_record(usage_row(percent_discount="0"))
    assert record["ContractedUnitPrice"] == record["ListUnitPrice"]
    assert "discount" not in (record["ChargeDescription"] or "")


def test_user_key_activity_gets_a_stable_sub_account_per_login() -> None:
    alice = focus_record(usage_row(key=None, label="User key", user="alice"))
    assert alice["SubAccountId"] == "user:alice"
    assert alice["SubAccountName"] == alice["x_ApiKeyLabel"] == "User key"
    assert alice["SubAccountType"] == "User"
    assert alice["x_ApiKeyId"] is None
    assert alice["x_LoginUsername"] == "alice"

    anonymous = focus_record(usage_row(key=None, label="User key", user=None))
    assert anonymous["SubAccountId"] == "user:"
    assert anonymous["SubAccountName"] == "User key"
    assert anonymous["x_LoginUsername"] is None


def test_openai_daily_cost_row_maps_without_inventing_prices() -> None:
    row = openai_cost_row(3, "gpt-4o-2024-08-06, input", "120000", "tokens", "0.3")
    record = focus_record(row)
    assert record["ChargePeriodStart"] == "2026-10-04T00:00:00Z"  # the day OpenAI billed, whole
    assert record["ChargePeriodEnd"] == "2026-10-05T00:00:00Z"
    assert record["BillingPeriodStart"] == "2026-10-01T00:00:00Z"
    assert record["BillingPeriodEnd"] == "2026-11-01T00:00:00Z"
    assert record["ProviderName"] == record["PublisherName"] == record["InvoiceIssuerName"] == "OpenAI"
    assert record["ServiceName"] == "OpenAI API"
    assert record["BillingAccountId"] == record["BillingAccountName"] == "org-acme"
    assert record["BillingAccountType"] == "Organization"
    # The project is the sub account; the key that spent inside it stays in x_ApiKeyId.
    assert (record["SubAccountId"], record["SubAccountName"], record["SubAccountType"]) == (
        "proj_research",
        "Research",
        "Project",
    )
    assert record["x_ApiKeyId"] == "key_abc"
    assert record["ChargeDescription"] == record["SkuId"] == "gpt-4o-2024-08-06, input"  # the line item, verbatim
    assert record["SkuMeter"] == "input"
    assert record["ResourceId"] == record["ResourceName"] == "gpt-4o-2024-08-06"
    assert record["ResourceType"] == "Model"
    assert record["PricingQuantity"] == record["ConsumedQuantity"] == "120000"
    assert record["PricingUnit"] == record["ConsumedUnit"] == "Tokens"
    # No price from OpenAI: the unit prices and the price id stay null, never derived from cost / quantity.
    for column in ("ListUnitPrice", "ContractedUnitPrice", "SkuPriceId", "PricingCurrencyListUnitPrice",
                   "PricingCurrencyContractedUnitPrice"):  # fmt: skip
        assert record[column] is None, column
    # ListCost must not be null: with neither a list cost nor a discount the billed cost is the list cost.
    assert record["BilledCost"] == record["EffectiveCost"] == record["ContractedCost"] == record["ListCost"] == "0.3"


def test_list_cost_is_cost_plus_a_known_discount_when_the_vendor_gives_no_list_cost() -> None:
    row = openai_cost_row(0, "gpt-4o-mini", "10", "images", "0.8").model_copy(update={"discount": Decimal("0.2")})
    record = focus_record(row)
    assert record["ListCost"] == "1"
    assert record["ContractedCost"] == record["BilledCost"] == "0.8"


def test_a_null_line_item_leaves_resource_and_sku_null() -> None:
    record = focus_record(openai_cost_row(0, None, None, None, "1.25"))
    for column in ("ResourceId", "ResourceName", "ResourceType", "SkuId", "SkuMeter", "SkuPriceId",
                   "PricingQuantity", "PricingUnit", "ConsumedQuantity", "ConsumedUnit"):  # fmt: skip
        assert record[column] is None, column
    assert record["ChargeDescription"] == "Usage"
    assert record["BilledCost"] == record["ListCost"] == "1.25"


def test_spend_outside_any_project_has_no_sub_account() -> None:
    record = focus_record(openai_cost_row(0, "gpt-4o-mini", "1", "images", "0.01", project=None))
    assert (record["SubAccountId"], record["SubAccountName"], record["SubAccountType"]) == (None, None, None)
    assert record["x_ApiKeyId"] == "key_abc"


def test_a_connector_without_a_profile_is_named_by_its_id() -> None:
    record = focus_record(usage_row().model_copy(update={"connector": "acme-saas"}))
    assert record["ProviderName"] == record["ServiceName"] == "acme-saas"
    assert (record["ServiceCategory"], record["ServiceSubcategory"]) == ("Other", "Other (Other)")
    assert focus_profile("acme-saas").criteria <= focus_profile("fal").criteria


@pytest.mark.parametrize(
    ("unit", "expected"),
    [
        ("image", "Image"),
        ("images", "Images"),
        ("megapixel", "Megapixel"),
        ("second", "Second"),
        ("video_second", "Video Second"),
        ("gpu_second", "GPU Second"),
        ("request", "Request"),
        ("tokens", "Tokens"),
        ("1000_tokens", "1000 Tokens"),
        ("duration_seconds", "Seconds"),
        ("duration_minutes", "Minutes"),
        ("duration_hours", "Hours"),
        ("gibibyte_hours", "GiB-Hours"),
        ("characters", "Characters"),
        ("input_tokens", "Input Tokens"),
        ("GB", "GB"),
        ("gpu-hours", "GPU-Hours"),
        ("---", "---"),  # nothing to spell: kept as sent
        (None, None),
    ],
)
def test_units_are_spelled_in_the_focus_unit_format(unit: str | None, expected: str | None) -> None:
    assert focus_unit(unit) == expected
    if expected is not None and expected != "---":
        assert UNIT_FORMAT.fullmatch(expected), expected


@pytest.mark.parametrize(
    ("hour", "period_start", "period_end"),
    [
        ("2026-01-05T00:00:00Z", "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"),
        ("2026-01-31T23:00:00Z", "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"),  # last hour of the month
        ("2026-02-01T00:00:00Z", "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"),  # first hour of the next
        ("2024-02-29T23:00:00Z", "2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z"),  # leap day
        ("2026-04-30T23:00:00Z", "2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z"),
        ("2026-12-31T23:00:00Z", "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"),  # year end
    ],
)
def test_billing_period_is_the_utc_calendar_month_of_the_hour(hour: str, period_start: str, period_end: str) -> None:
    start = datetime.fromisoformat(hour)
    record = focus_record(at_hour(usage_row(), start))
    assert record["ChargePeriodStart"] == hour
    assert record["ChargePeriodEnd"] == (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert record["BillingPeriodStart"] == period_start
    assert record["BillingPeriodEnd"] == period_end


def test_a_day_on_the_last_of_the_month_belongs_to_that_month() -> None:
    record = focus_record(openai_cost_row(30, "gpt-4o-mini", "1", "images", "0.01"))  # 31 October
    assert (record["ChargePeriodStart"], record["ChargePeriodEnd"]) == ("2026-10-31T00:00:00Z", "2026-11-01T00:00:00Z")
    assert (record["BillingPeriodStart"], record["BillingPeriodEnd"]) == (
        "2026-10-01T00:00:00Z",
        "2026-11-01T00:00:00Z",
    )


def test_timestamps_are_utc_with_z() -> None:
    record = focus_record(usage_row())
    for column in ("BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd"):
        value = record[column]
        assert value is not None and value.endswith("Z"), column
        assert datetime.fromisoformat(value).utcoffset() == timedelta(0)


def test_a_billed_row_without_a_cost_is_an_error_not_a_blank() -> None:
    row = usage_row().model_copy(update={"cost": None})
    with pytest.raises(ConnectorHostError, match="is billed but has no cost"):
        focus_record(row)


# --- CSV -------------------------------------------------------------------------------------------------------


def test_csv_streams_rows_with_nulls_as_empty_fields() -> None:
    rows = [usage_row(at=n, quantity=str(n + 1)) for n in range(3)] + [usage_row(key=None, label="User key", at=4)]
    stream = io.StringIO()

    def produce() -> Iterator[UsageRow]:
        for index, row in enumerate(rows):
            # Each row is written before the next one is asked for: nothing is collected in memory.
            assert stream.getvalue().count("\n") == 1 + index
            yield row

    assert write_focus_csv(produce(), stream) == 4
    lines = stream.getvalue().splitlines()
    assert lines[0] == ",".join(FOCUS_COLUMNS)
    parsed = list(csv.DictReader(io.StringIO(stream.getvalue())))
    assert [{k: v or None for k, v in line.items()} for line in parsed] == [focus_record(row) for row in rows]
    assert parsed[0]["ChargeClass"] == ""


def test_csv_of_no_rows_is_a_header() -> None:
    stream = io.StringIO()
    assert write_focus_csv([], stream) == 0
    assert stream.getvalue() == ",".join(FOCUS_COLUMNS) + "\n"


def test_the_focus_sink_leaves_usage_rows_out_too(tmp_path: Path) -> None:
    rows = openai_cost_rows()
    sink = FocusFileSink(FileSinkConfig(directory=tmp_path), connection="openai-test")
    stream = io.StringIO()
    sink.write(stream, rows, header=True)
    written = list(csv.DictReader(io.StringIO(stream.getvalue())))
    assert len(written) == sum(1 for row in rows if getattr(row, "kind", "cost") == "cost")
    assert all(line["BilledCost"] for line in written)


# --- Parquet ---------------------------------------------------------------------------------------------------


def test_parquet_without_pyarrow_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow` raise ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ConfigError, match=r"pip install 'connector-host\[parquet\]'"):
        write_focus_parquet([usage_row()], tmp_path / "focus.parquet")
    assert not (tmp_path / "focus.parquet").exists()


def test_parquet_keeps_decimals_exact_in_batches(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = [
        usage_row(at=n, quantity=f"{n}.125", unit_price="0.0000333", percent_discount="12.5" if n % 2 else None)
        for n in range(5)
    ] + [usage_row(key=None, label="User key", user="alice", at=9)]
    path = tmp_path / "focus.parquet"
    assert write_focus_parquet(iter(rows), path, batch_rows=2) == 6

    metadata = pq.ParquetFile(path).metadata
    assert metadata.num_row_groups == 3
    table = pq.read_table(path)
    assert tuple(table.column_names) == FOCUS_COLUMNS
    assert table.schema.field("BilledCost").type == pa.decimal128(38, 18)
    assert table.schema.field("ChargePeriodStart").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("SubAccountId").type == pa.string()
    for row, stored in zip(rows, table.to_pylist(), strict=True):
        expected = focus_record(row)
        for column, value in stored.items():
            if isinstance(value, Decimal):
                assert value == Decimal(expected[column] or "nan"), column
            elif isinstance(value, datetime):
                assert value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") == expected[column], column
            else:
                assert value == expected[column], column


def test_parquet_refuses_to_round(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    row = usage_row(quantity="1", unit_price="0.0000000000000000001")  # 19 decimal places
    with pytest.raises(ConnectorHostError, match=r"value 0\.0000000000000000001 does not fit decimal128\(38, 18\)"):
        write_focus_parquet([usage_row(at=n) for n in range(3)] + [row], tmp_path / "focus.parquet", batch_rows=2)
    assert not (tmp_path / "focus.parquet").exists()


def test_usage_rows_are_not_billing_data_and_stay_out() -> None:
    rows = openai_cost_rows()
    billed = [row for row in rows if getattr(row, "kind", "cost") == "cost"]
    assert len(billed) < len(rows)  # the fixture has usage rows
    stream = io.StringIO()
    assert write_focus_csv(rows, stream) == len(billed)
    assert [line["x_ApiKeyId"] or None for line in csv.DictReader(io.StringIO(stream.getvalue()))] == [
        row.api_key_id for row in billed
    ]


def test_parquet_holds_null_prices_as_nulls_and_leaves_usage_rows_out(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    rows = openai_cost_rows()
    path = tmp_path / "focus.parquet"
    written = write_focus_parquet(rows, path)
    stored = pq.read_table(path).to_pylist()
    assert len(stored) == written == sum(1 for row in rows if getattr(row, "kind", "cost") == "cost")
    first = stored[0]
    assert first["ListUnitPrice"] is None and first["ContractedUnitPrice"] is None and first["SkuPriceId"] is None
    assert first["ListCost"] == first["BilledCost"] == Decimal("0.3")
    assert first["ChargePeriodEnd"] - first["ChargePeriodStart"] == timedelta(days=1)


# --- the FinOps Foundation's validator ---------------------------------------------------------------------------

# FOCUS 1.2 says InvoiceId "MUST be null when the charge is not associated with an invoice" (InvoiceId-C-004-C) "or"
# "MUST NOT be null when" it is (InvoiceId-C-005-C): the rule InvoiceId-C-003-C passes when one of the two does. The
# validator also reports each alternative on its own, so the one that does not describe our rows (usage not yet on
# an issued invoice: InvoiceId is null) shows as failed under a passing parent. Those are the only such rules.
ALTERNATIVES_NOT_TAKEN = {"InvoiceId-C-005-C"}

# Rules FOCUS requires of every usage charge ("MUST NOT be null when ChargeCategory is Usage and ChargeClass is not
# Correction") that the validator 2.2.1 never fires on our rows: it reads "ChargeClass is not Correction" as
# "ChargeClass IS NOT NULL AND ChargeClass <> 'Correction'", and our ChargeClass is null. The test checks them.
USAGE_COLUMNS_NOT_NULL = ("PricingQuantity", "PricingUnit", "PricingCategory", "ConsumedQuantity", "ConsumedUnit")
PRICED_USAGE_COLUMNS_NOT_NULL = ("ListUnitPrice", "ContractedUnitPrice", "SkuId", "SkuPriceId")


def _validator() -> Path:
    configured = os.environ.get(VALIDATOR_ENV)
    candidate = Path(configured) if configured else REPO_ROOT / ".focus-venv" / "bin" / "focus-validator"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    message = (
        f"focus-validator not found at {candidate} ({VALIDATOR_ENV} or .focus-venv); "
        "run scripts/install-focus-validator.sh"
    )
    if os.environ.get(SKIP_VALIDATOR_ENV) == "1":
        pytest.skip(message)
    pytest.fail(f"{message}, or set {SKIP_VALIDATOR_ENV}=1 to skip this test", pytrace=False)


def _validator_python(executable: Path) -> str:
    """The interpreter of the validator's own environment, from its console script's shebang."""
    with executable.open("rb") as script:
        first = script.readline().decode(errors="replace").strip()
    if first.startswith("#!") and "python" in first:
        return first[2:].strip().split()[0]
    return str(executable.resolve().parent / "python")


def _validator_install(executable: Path) -> Path:
    """The folder that holds the validator's package, once its version is checked."""
    probe = (
        "import importlib.metadata, json, pathlib, focus_validator;"
        "print(json.dumps([importlib.metadata.version('focus-validator'),"
        " str(pathlib.Path(focus_validator.__file__).resolve().parent.parent)]))"
    )
    done = subprocess.run(
        [_validator_python(executable), "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    version, site = json.loads(done.stdout)
    assert version == VALIDATOR_VERSION, f"{executable} is focus-validator {version}, not {VALIDATOR_VERSION}"
    return Path(site)


def _or_parents(site: Path) -> dict[str, set[str]]:
    """For each rule that is one alternative of an OR rule in the validator's FOCUS 1.2 model, those OR rules."""
    (model_file,) = (site / "focus_validator" / "rules").glob("model-1.2*.json")
    parents: dict[str, set[str]] = {}
    for rule_id, rule in json.loads(model_file.read_text(encoding="utf-8"))["ModelRules"].items():
        requirement = rule["ValidationCriteria"].get("Requirement") or {}
        if requirement.get("CheckFunction") == "OR":
            for item in requirement.get("Items", []):
                if item.get("CheckFunction") == "CheckModelRule":
                    parents.setdefault(item["ModelRuleId"], set()).add(rule_id)
    return parents


def _run_validator(executable: Path, site: Path, data: Path, criteria: frozenset[str]) -> dict[str, str]:
    """Run the validator (FOCUS 1.2 rules, the given applicability criteria, JUnit report) offline; each rule's
    outcome by rule id: ``passed``, or ``failure: ...``, ``error: ...``, ``skipped: ...``."""
    report = data.with_name(data.name + ".xml")
    done = subprocess.run(
        [str(executable), "--data-file", str(data), "--validate-version", "1.2", "--block-download",
         "--applicability-criteria", ",".join(sorted(criteria)),
         "--output-type", "unittest", "--output-destination", str(report)],
        # It opens its currency code list by a path relative to the working directory: run it from its install.
        cwd=site,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr  # it exits 0 even when rules fail: the report says
    assert report.is_file(), done.stdout + done.stderr
    root = ET.parse(report).getroot()
    outcomes: dict[str, str] = {}
    for case in root.iter("testcase"):
        rule = case.get("name", "").split(" :: ")[0]
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = f"{child.tag}: {child.get('message')}"
        outcomes[rule] = outcome
    assert len(outcomes) == int(root.get("tests", "-1")), "the report's test count disagrees with its test cases"
    return outcomes


def _assert_no_failed_rule(outcomes: dict[str, str], site: Path, *, at_least_passed: int) -> None:
    parents = _or_parents(site)
    failed = {rule: outcome for rule, outcome in outcomes.items() if outcome.startswith(("failure", "error"))}
    not_taken = {rule for rule in failed if any(outcomes.get(parent) == "passed" for parent in parents.get(rule, ()))}
    real = {rule: outcome for rule, outcome in failed.items() if rule not in not_taken}
    assert not real, f"{len(real)} of {len(outcomes)} FOCUS rules failed: {real}"
    assert not_taken == ALTERNATIVES_NOT_TAKEN
    passed = sum(1 for outcome in outcomes.values() if outcome == "passed")
    assert passed >= at_least_passed, f"only {passed} of {len(outcomes)} rules ran and passed"


def _export(rows: list[UsageRow], path: Path) -> list[dict[str, str]]:
    with path.open("w", newline="", encoding="utf-8") as stream:
        written = write_focus_csv(rows, stream)
    with path.open(newline="", encoding="utf-8") as stream:
        records = list(csv.DictReader(stream))
    assert written == len(records) > 0
    for record in records:  # what the validator cannot see (USAGE_COLUMNS_NOT_NULL)
        for column in USAGE_COLUMNS_NOT_NULL:
            assert record[column], (column, record)
        assert UNIT_FORMAT.fullmatch(record["PricingUnit"]), record["PricingUnit"]
        assert record["ConsumedUnit"] == record["PricingUnit"]
    return records


@pytest.mark.focus
@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)  # the export reads rows, whatever the store
def test_fal_simulator_backfill_passes_the_focus_validator(
    host: Host, connect: Callable[..., str], tmp_path: Path
) -> None:
    executable = _validator()
    site = _validator_install(executable)
    name = connect(backfill_days=35)  # more than a month: two billing periods, every key and "User key"
    sync_now(host, name)
    fal_rows = list(host.store.iter_rows(name))
    assert len(fal_rows) == host.store.count_rows(name) > 0

    records = _export(fal_rows, tmp_path / "fal.csv")
    assert len({r["BillingPeriodStart"] for r in records}) >= 2
    assert {r["SubAccountType"] for r in records} == {"API Key", "User"}
    assert any(r["ContractedUnitPrice"] != r["ListUnitPrice"] for r in records)  # discounted rows are in there
    for r in records:  # fal prices every row: unit price x pricing quantity = cost, for list and contracted prices
        for column in PRICED_USAGE_COLUMNS_NOT_NULL:
            assert r[column], (column, r)
        quantity = Decimal(r["PricingQuantity"])
        assert Decimal(r["ListUnitPrice"]) * quantity == Decimal(r["ListCost"]), r
        assert Decimal(r["ContractedUnitPrice"]) * quantity == Decimal(r["ContractedCost"]), r
    fal = focus_profile("fal").criteria
    _assert_no_failed_rule(_run_validator(executable, site, tmp_path / "fal.csv", fal), site, at_least_passed=240)

    # fal and OpenAI in one export, checked against the criteria that both vendors' data meet.
    both = fal & focus_profile("openai").criteria
    _export(fal_rows + openai_cost_rows(), tmp_path / "both.csv")
    _assert_no_failed_rule(_run_validator(executable, site, tmp_path / "both.csv", both), site, at_least_passed=160)


@pytest.mark.focus
def test_openai_daily_cost_rows_pass_the_focus_validator(tmp_path: Path) -> None:
    executable = _validator()
    site = _validator_install(executable)
    records = _export(openai_cost_rows(), tmp_path / "openai.csv")
    assert {r["ChargePeriodEnd"][:10] for r in records} != {r["ChargePeriodStart"][:10] for r in records}  # days
    assert all(r["ListUnitPrice"] == "" and r["ListCost"] == r["BilledCost"] for r in records)
    openai = focus_profile("openai").criteria
    _assert_no_failed_rule(_run_validator(executable, site, tmp_path / "openai.csv", openai), site, at_least_passed=160)

    # The Parquet export, decimals as decimal128(38, 18) and timestamps as timestamp[us, UTC], passes the same rules.
    pytest.importorskip("pyarrow")
    assert write_focus_parquet(openai_cost_rows(), tmp_path / "openai.parquet") == len(records)
    outcomes = _run_validator(executable, site, tmp_path / "openai.parquet", openai)
    _assert_no_failed_rule(outcomes, site, at_least_passed=160)
