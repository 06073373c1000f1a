"""The FOCUS 1.0 export: the mapping of a normalized row, column by column, and the FinOps Foundation's validator on
an export of a simulator backfill.

The validator (``focus-validator`` 1.0.0) lives in its own virtual environment, made by
``scripts/install-focus-validator.sh``: ``FOCUS_VALIDATOR`` names its executable, else ``.focus-venv`` in the
repository root is used. Without it the end-to-end test fails, since CI guarantees it; set
``CONNECTOR_HOST_SKIP_FOCUS_VALIDATOR=1`` to skip it instead.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from connector_sdk.errors import ConfigError, ConnectorHostError
from connector_sdk.focus import (
    EXTENSION_COLUMNS,
    FOCUS_COLUMNS,
    FOCUS_SPEC_COLUMNS,
    focus_record,
    write_focus_csv,
    write_focus_parquet,
)
from connector_sdk.host import Host
from connector_sdk.models import UsageRow
from tests.store_fixtures import usage_row

REPO_ROOT = Path(__file__).resolve().parent.parent
VALIDATOR_ENV = "FOCUS_VALIDATOR"
SKIP_VALIDATOR_ENV = "CONNECTOR_HOST_SKIP_FOCUS_VALIDATOR"
VALIDATOR_VERSION = "1.0.0"

# Every column FOCUS 1.0 defines, in the specification's order.
FOCUS_1_0_COLUMNS = [
    "AvailabilityZone",
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
]
FOCUS_1_0_MANDATORY = [
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
    "ContractedCost",
    "EffectiveCost",
    "InvoiceIssuerName",
    "ListCost",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "ServiceCategory",
    "ServiceName",
]
SERVICE_CATEGORIES = {
    "AI and Machine Learning", "Analytics", "Business Applications", "Compute", "Databases", "Developer Tools",
    "Multicloud", "Identity", "Integration", "Internet of Things", "Management and Governance", "Media",
    "Migration", "Mobile", "Networking", "Security", "Storage", "Web", "Other",
}  # fmt: skip

# focus-validator 1.0.0's "1.0" rule set still names four columns by their pre-1.0 ids, and its SkuPriceId rule reads
# ChargeType, which 1.0 renamed ChargeCategory. The validator is given a copy of the export with these columns added
# as copies of ours, so its rules check our values; the export itself stays pure FOCUS 1.0.
VALIDATOR_LEGACY_ALIASES = {
    "InvoiceIssuer": "InvoiceIssuerName",
    "Provider": "ProviderName",
    "Publisher": "PublisherName",
    "ResourceID": "ResourceId",
    "ChargeType": "ChargeCategory",
}
RULES_FAILING_ON_LEGACY_NAMES = {
    "InvoiceIssuer_Required",
    "Provider_Required",
    "Publisher_Required",
    "ResourceID_Required",
    "SkuPriceId_Nullable",
}


def at_hour(row: UsageRow, start: datetime) -> UsageRow:
    return row.model_copy(update={"period_start": start, "period_end": start + timedelta(hours=1)})


# --- columns ---------------------------------------------------------------------------------------------------


def test_columns_are_focus_1_0_in_spec_order_then_x_columns() -> None:
    assert len(set(FOCUS_COLUMNS)) == len(FOCUS_COLUMNS)
    spec = [column for column in FOCUS_COLUMNS if not column.startswith("x_")]
    assert tuple(spec) == FOCUS_SPEC_COLUMNS
    assert spec == [column for column in FOCUS_1_0_COLUMNS if column in spec]  # spec order
    assert set(FOCUS_1_0_COLUMNS) - set(spec) == {"AvailabilityZone"}  # fal has no zones
    assert set(FOCUS_1_0_MANDATORY) <= set(spec)
    assert FOCUS_COLUMNS[len(spec) :] == EXTENSION_COLUMNS == ("x_ApiKeyLabel", "x_LoginUsername", "x_Connection")


def test_record_has_every_column_in_order() -> None:
    assert tuple(focus_record(usage_row())) == FOCUS_COLUMNS


# --- mapping ---------------------------------------------------------------------------------------------------


def test_usage_row_maps_to_a_standard_usage_charge() -> None:
    row = usage_row("acme", 3, key="key-1", label="production", model="fal-ai/flux/dev", unit="images")
    record = focus_record(row)
    assert record["ChargeCategory"] == "Usage"
    assert record["ChargeClass"] is None
    assert record["ChargeFrequency"] == "Usage-Based"
    assert record["PricingCategory"] == "Standard"
    assert record["ServiceCategory"] == "AI and Machine Learning"
    assert record["ServiceCategory"] in SERVICE_CATEGORIES
    assert record["ServiceName"] == "fal Model APIs"
    assert record["ProviderName"] == record["PublisherName"] == record["InvoiceIssuerName"] == "fal.ai"
    assert record["BillingAccountId"] == record["BillingAccountName"] == "acme-ai"
    assert record["BillingCurrency"] == "USD"
    assert record["SubAccountId"] == "key-1"
    assert record["SubAccountName"] == record["x_ApiKeyLabel"] == "production"
    assert record["x_LoginUsername"] is None
    assert record["x_Connection"] == "acme"
    assert record["ResourceId"] == record["ResourceName"] == "fal-ai/flux/dev"
    assert record["ResourceType"] == "Model endpoint"
    assert record["SkuId"] == record["SkuPriceId"] == "fal-ai/flux/dev|images"
    assert record["PricingUnit"] == record["ConsumedUnit"] == "images"
    assert record["ChargeDescription"] == "fal-ai/flux/dev usage, billed per images"
    for column in ("CommitmentDiscountCategory", "CommitmentDiscountId", "CommitmentDiscountName",
                   "CommitmentDiscountStatus", "CommitmentDiscountType", "RegionId", "RegionName", "Tags"):  # fmt: skip
        assert record[column] is None, column


def test_money_and_quantities_are_exact_decimal_text() -> None:
    row = usage_row(quantity="0.1", unit_price="0.3")  # 0.1 * 0.3 is 0.030000000000000002 in binary floating point
    record = focus_record(row)
    assert record["ListCost"] == record["ContractedCost"] == record["BilledCost"] == record["EffectiveCost"] == "0.03"
    assert record["PricingQuantity"] == record["ConsumedQuantity"] == "0.1"
    assert record["ListUnitPrice"] == record["ContractedUnitPrice"] == "0.3"

    tiny = focus_record(usage_row(quantity="1234567.000", unit_price="0.00000125"))
    assert tiny["ListUnitPrice"] == "0.00000125"  # no exponent, no trailing zeros
    assert tiny["PricingQuantity"] == "1234567"
    assert tiny["ListCost"] == "1.54320875"


def test_discount_gives_contracted_unit_price_and_cost() -> None:
    row = usage_row(quantity="3", unit_price="0.025", percent_discount="20")
    record = focus_record(row)
    assert record["ListUnitPrice"] == "0.025"
    assert record["ListCost"] == "0.075"
    assert record["ContractedUnitPrice"] == "0.02"
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
    assert alice["x_LoginUsername"] == "alice"

    anonymous = focus_record(usage_row(key=None, label="User key", user=None))
    assert anonymous["SubAccountId"] == "user:"
    assert anonymous["SubAccountName"] == "User key"
    assert anonymous["x_LoginUsername"] is None


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


def test_timestamps_are_utc_with_z() -> None:
    record = focus_record(usage_row())
    for column in ("BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd"):
        value = record[column]
        assert value is not None and value.endswith("Z"), column
        assert datetime.fromisoformat(value).utcoffset() == timedelta(0)


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


# --- the FinOps Foundation's validator on a simulator backfill --------------------------------------------------


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


def _validator_install(executable: Path) -> tuple[str, Path]:
    """The installed focus-validator version and the folder that holds the package."""
    probe = (
        "import importlib.metadata, json, pathlib, focus_validator;"
        "print(json.dumps([importlib.metadata.version('focus-validator'),"
        " str(pathlib.Path(focus_validator.__file__).resolve().parent.parent)]))"
    )
    done = subprocess.run(
        [_validator_python(executable), "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    version, site = json.loads(done.stdout)
    return version, Path(site)


def _validator_view(export: Path, view: Path) -> None:
    """A copy of the export with the validator's legacy column names added (see VALIDATOR_LEGACY_ALIASES)."""
    with export.open(newline="", encoding="utf-8") as source, view.open("w", newline="", encoding="utf-8") as target:
        reader, writer = csv.reader(source), csv.writer(target, lineterminator="\n")
        header = next(reader)
        copied = [header.index(column) for column in VALIDATOR_LEGACY_ALIASES.values()]
        writer.writerow(header + list(VALIDATOR_LEGACY_ALIASES))
        for line in reader:
            writer.writerow(line + [line[index] for index in copied])


def _run_validator(executable: Path, site: Path, data: Path, report: Path) -> dict[str, str]:
    """Run the validator (FOCUS 1.0 rules, JUnit report) and return each rule's outcome by rule id."""
    done = subprocess.run(
        [str(executable), "--data-file", str(data), "--validate-version", "1.0",
         "--output-type", "unittest", "--output-destination", str(report)],
        # It opens its currency code list by a path relative to the working directory: run it from its install.
        cwd=site,
        capture_output=True,
        text=True,
        timeout=300,
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


@pytest.mark.focus
@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)  # the export reads rows, whatever the store
def test_simulator_backfill_passes_the_focus_validator(host: Host, connect: Callable[..., str], tmp_path: Path) -> None:
    executable = _validator()
    version, site = _validator_install(executable)
    assert version == VALIDATOR_VERSION, f"{executable} is focus-validator {version}, not {VALIDATOR_VERSION}"

    name = connect(backfill_days=35)  # more than a month: two billing periods, every key and "User key"
    host.sync(name)
    export = tmp_path / "focus.csv"
    with export.open("w", newline="", encoding="utf-8") as stream:
        written = write_focus_csv(host.store.iter_rows(name), stream)
    assert written == host.store.count_rows(name) > 0

    with export.open(newline="", encoding="utf-8") as stream:
        records = list(csv.DictReader(stream))
    assert len({r["BillingPeriodStart"] for r in records}) >= 2
    assert any(r["SubAccountId"].startswith("user:") for r in records)
    assert any(r["ContractedUnitPrice"] != r["ListUnitPrice"] for r in records)  # discounted rows are in there
    for r in records:  # FOCUS: unit price x pricing quantity = cost, for list and contracted prices
        quantity = Decimal(r["PricingQuantity"])
        assert Decimal(r["ListUnitPrice"]) * quantity == Decimal(r["ListCost"]), r
        assert Decimal(r["ContractedUnitPrice"]) * quantity == Decimal(r["ContractedCost"]), r

    view = tmp_path / "focus-validator-view.csv"
    _validator_view(export, view)
    outcomes = _run_validator(executable, site, view, tmp_path / "report.xml")
    assert len(outcomes) >= 100, f"only {len(outcomes)} rules ran"
    failed = {rule: outcome for rule, outcome in outcomes.items() if outcome != "passed"}
    assert not failed, f"{len(failed)} of {len(outcomes)} FOCUS rules did not pass: {failed}"

    # The raw export fails exactly the rules that use pre-1.0 column names: the aliases hide nothing else.
    raw = _run_validator(executable, site, export, tmp_path / "report-raw.xml")
    assert {rule for rule, outcome in raw.items() if outcome != "passed"} == RULES_FAILING_ON_LEGACY_NAMES
