"""Input the CLI used to accept silently, or answer with a traceback: each is refused in one line a person reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connector_sdk.budgets import check_currency, parse_thresholds
from connector_sdk.cli.reading import replaced_at_the_end
from connector_sdk.errors import ConfigError
from connectors.fal.simulator import FalSimulator
from tests.conftest import CliRunner
from tests.test_cli_output import connect_cli, synced  # noqa: F401 - the fixture
from tests.test_sinks import SECRET


def one_line_error(result: object, says: str) -> None:
    stderr = result.stderr  # type: ignore[attr-defined]
    assert result.returncode == 2, stderr  # type: ignore[attr-defined]
    assert "Traceback" not in stderr
    (line,) = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert says in line, line


# -- rows ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("since", "until"), [("2026-11-20", "2026-11-10"), ("2026-11-20T05:00:00Z", "2026-11-20T05:00:00Z")]
)
def test_rows_since_not_before_until_is_refused(cli: CliRunner, synced: str, since: str, until: str) -> None:  # noqa: F811
    one_line_error(cli("rows", synced, "--since", since, "--until", until), "--since")
    assert "must be before --until" in cli("rows", "--since", since, "--until", until).stderr


def test_rows_to_a_missing_folder_is_one_line(cli: CliRunner, synced: str, tmp_path: Path) -> None:  # noqa: F811
    target = tmp_path / "missing" / "dir" / "x.csv"
    one_line_error(cli("rows", synced, "--format", "csv", "-o", str(target)), "does not exist")
    assert not target.parent.exists()


def test_rows_to_a_file_leaves_only_the_finished_file(cli: CliRunner, synced: str, tmp_path: Path) -> None:  # noqa: F811
    exports = tmp_path / "exports"
    exports.mkdir()
    target = exports / "rows.jsonl"
    assert cli("rows", synced, "-o", str(target)).returncode == 0
    assert target.read_text().splitlines() == cli("rows", synced).stdout.splitlines()
    assert [p.name for p in exports.iterdir()] == ["rows.jsonl"]


def test_an_interrupted_export_leaves_no_partial_file_and_the_old_one_whole(tmp_path: Path) -> None:
    target = tmp_path / "rows.csv"
    target.write_text("the previous export\n")
    with pytest.raises(KeyboardInterrupt), replaced_at_the_end(target) as partial:
        partial.write_text("half of the rows")
        raise KeyboardInterrupt
    assert target.read_text() == "the previous export\n"
    assert [p.name for p in tmp_path.iterdir()] == ["rows.csv"]
    with replaced_at_the_end(target) as partial:
        partial.write_text("all of the rows\n")
    assert target.read_text() == "all of the rows\n"
    assert [p.name for p in tmp_path.iterdir()] == ["rows.csv"]


# -- budgets ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--currency", "XYZ"], "--currency 'XYZ' is not an ISO 4217 currency code"),
        (["--currency", "dollars"], "is not an ISO 4217 currency code"),
        (["--thresholds", "80,50"], "must be strictly increasing, lowest first (80% comes before 50%)"),
        (["--thresholds", "50,50"], "lists 50% twice"),
        (["--thresholds", "50,,x"], "whole percentages"),
        (["--label", "Prodution Key"], "--label 'Prodution Key': connection 'prod' has never seen it"),
        (["--model", "fal-ai/flux/deev"], "--model 'fal-ai/flux/deev': connection 'prod' has never seen it"),
    ],
)
def test_budget_set_refuses_nonsense_and_stores_nothing(
    cli: CliRunner,
    synced: str,  # noqa: F811
    args: list[str],
    says: str,
) -> None:
    one_line_error(cli("budget", "set", synced, "--monthly", "100", *args), says)
    assert json.loads(cli("budget", "list", "--format", "json").stdout) == []


def test_an_unseen_label_lists_the_labels_the_connection_has_seen_and_force_accepts_it(
    cli: CliRunner,
    synced: str,  # noqa: F811
) -> None:
    labels = {line["api_key_label"] for line in json.loads(cli("report", synced, "--format", "json").stdout)["lines"]}
    refused = cli("budget", "set", synced, "--monthly", "100", "--label", "Future key")
    assert refused.returncode == 2
    assert all(repr(label) in refused.stderr for label in labels) and "--force" in refused.stderr
    forced = cli("budget", "set", synced, "--monthly", "100", "--label", "Future key", "--force", "--format", "json")
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["api_key_label"] == "Future key"


def test_budget_set_accepts_a_seen_label_a_lower_case_code_and_increasing_thresholds(
    cli: CliRunner,
    synced: str,  # noqa: F811
) -> None:
    made = cli(
        "budget", "set", synced, "--monthly", "100", "--label", "User key", "--currency", "eur",
        "--thresholds", "25,50,100", "--format", "json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout) | {"id": 0, "created_at": None} == {
        "id": 0,
        "connection": "prod",
        "api_key_label": "User key",
        "model": None,
        "monthly_amount": "100",
        "currency": "EUR",
        "thresholds": [25, 50, 100],
        "anomaly": True,
        "created_at": None,
    }


def test_thresholds_and_currencies_as_pure_rules() -> None:
    assert parse_thresholds("50, 80,100") == [50, 80, 100]
    assert check_currency(" usd ") == "USD"
    for bad in ("100,80", "0,50", "50,1001", ""):
        with pytest.raises(ConfigError):
            parse_thresholds(bad)
    for bad in ("XXX", "XTS", "US", "USDX"):
        with pytest.raises(ConfigError, match="ISO 4217"):
            check_currency(bad)


# -- estimate --------------------------------------------------------------------------------------------------
def test_estimate_without_a_quantity_says_which_form_it_wants(cli: CliRunner) -> None:
    one_line_error(cli("estimate", "fal-ai/flux/dev"), "write MODEL=QUANTITY, e.g. MODEL_ID=10")
    one_line_error(cli("estimate", "fal-ai/flux/dev=ten"), "'ten' is not a number")
    one_line_error(cli("estimate", "fal-ai/flux/dev=-1"), "positive")


# -- sinks -----------------------------------------------------------------------------------------------------
def test_a_webhook_without_a_secret_names_the_flag_that_exists(
    cli: CliRunner, sim: FalSimulator, admin_key: str
) -> None:
    connect_cli(cli, sim, admin_key, "p")
    result = cli("sink", "add", "p", "hook", "--kind", "webhook", "--set", "url=https://hooks.example.com/x")
    one_line_error(result, "set CONNECTOR_HOST_SINK_SECRET or pipe it to --secret-stdin")
    assert "--api-key-stdin" not in result.stderr and "API key" not in result.stderr
    empty = cli(
        "sink", "add", "p", "hook", "--kind", "webhook", "--set", "url=https://hooks.example.com/x", "--secret-stdin",
        stdin="",
    )  # fmt: skip
    one_line_error(empty, "--secret-stdin was given but standard input was empty")


@pytest.mark.parametrize(
    ("url", "secret", "says"),
    [
        ("https://hooks.example.com/x", "short", "the secret must be at least 16 characters"),
        ("http://hooks.example.com/x", SECRET, "url: plain http:// is only allowed for loopback hosts"),
    ],
)
def test_sink_config_errors_read_as_sentences_not_pydantic(
    cli: CliRunner, sim: FalSimulator, admin_key: str, url: str, secret: str, says: str
) -> None:
    connect_cli(cli, sim, admin_key, "p")
    result = cli(
        "sink", "add", "p", "hook", "--kind", "webhook", "--set", f"url={url}",
        env={"CONNECTOR_HOST_SINK_SECRET": secret},
    )  # fmt: skip
    one_line_error(result, says)
    assert "Value error" not in result.stderr and "items" not in result.stderr
    assert secret not in result.stderr


def test_every_config_model_gets_the_same_wording() -> None:
    from connector_sdk.errors import validation_reason

    assert validation_reason({"type": "missing", "loc": ("url",), "msg": "Field required"}) == "url is required"
    assert (
        validation_reason({"type": "extra_forbidden", "loc": ("colour",), "msg": "Extra inputs are not permitted"})
        == "colour is not a field of this configuration"
    )
    too_short = {"type": "too_short", "loc": ("api_key",), "ctx": {"field_type": "Value", "min_length": 8}}
    assert validation_reason(too_short) == "the api key must be at least 8 characters"
    listed = {"type": "too_short", "loc": ("models",), "ctx": {"field_type": "List", "min_length": 1}}
    assert validation_reason(listed) == "the models must have at least 1 item"
