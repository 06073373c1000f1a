"""OpenAI's answers become rows: daily billed cost exactly as sent, hourly usage without money, keys by name."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from connector_sdk.errors import ResponseError
from connector_sdk.http import ApiClient
from connector_sdk.models import SyncContext
from connectors.openai.mapping import (
    USER_KEY_LABEL,
    Directory,
    OpenAIKey,
    Project,
    cost_rows,
    model_of_line_item,
    parse_admin_key,
    parse_project_key,
    usage_rows,
)

DAY = datetime(2026, 3, 4, tzinfo=UTC)
T = int(DAY.timestamp())
CONTEXT = SyncContext(connector="openai", connection="oa", account="Acme", synced_at=DAY + timedelta(days=2))


def unix(moment: datetime) -> int:
    return int(moment.timestamp())


def decoded(body: dict[str, Any]) -> Any:
    """A body as the SDK's client decodes it: fractional numbers as exact decimals from their text."""
    return json.loads(ApiClient.encode(body), parse_float=Decimal)


def directory() -> Directory:
    return Directory(
        projects={
            "proj_a": Project("proj_a", "Research", archived=False),
            "proj_old": Project("proj_old", "Old bot", archived=True),
            "proj_unnamed": Project("proj_unnamed", None, archived=False),
        },
        keys={
            "key_prod": OpenAIKey("key_prod", "Production", "project", "proj_a", None, None),
            "key_admin": OpenAIKey("key_admin", "Spend reader", "admin", None, None, None),
            "key_blank": OpenAIKey("key_blank", "", "project", "proj_old", None, None),
        },
    )


def costs_page(results: list[dict[str, Any]], day: datetime = DAY) -> Any:
    bucket = {"object": "bucket", "start_time": unix(day), "end_time": unix(day + timedelta(days=1))}
    return decoded({"object": "page", "data": [bucket | {"results": results}], "has_more": False, "next_page": None})


def cost(value: str, **fields: Any) -> dict[str, Any]:
    return {"object": "organization.costs.result", "amount": {"value": Decimal(value), "currency": "usd"}} | fields


@pytest.mark.parametrize(
    ("line_item", "model"),
    [
        ("gpt-4o-2024-08-06, input", "gpt-4o-2024-08-06"),
        ("gpt-4o-2024-08-06, Output", "gpt-4o-2024-08-06"),
        ("gpt-4o-mini", "gpt-4o-mini"),
        ("GPT-4 Turbo", "GPT-4 Turbo"),
        ("  whisper-1 , seconds", "whisper-1"),
        (", input", None),
        (None, None),
    ],
)
def test_the_model_is_the_line_item_up_to_its_first_comma(line_item: str | None, model: str | None) -> None:
    assert model_of_line_item(line_item) == model


def test_a_cost_result_is_a_daily_cost_row_with_the_amount_exactly_as_sent() -> None:
    body = json.loads(
        '{"object":"page","has_more":false,"next_page":null,"data":[{"object":"bucket","start_time":START,'
        '"end_time":END,"results":[{"object":"organization.costs.result","amount":{"value":0.1234567890123456789,'
        '"currency":"usd"},"line_item":"gpt-4o-2024-08-06, input","project_id":"proj_a","api_key_id":"key_prod",'
        '"quantity":2500000,"quantity_unit":"tokens"}]}]}'.replace("START", str(T)).replace("END", str(T + 86400)),
        parse_float=Decimal,
    )
    [row] = cost_rows(body, CONTEXT, directory(), start=DAY, end=DAY + timedelta(days=1))
    assert row.cost == Decimal("0.1234567890123456789")  # 19 digits: a float would keep 17
    assert (row.kind, row.currency, row.period_start, row.period_end) == ("cost", "USD", DAY, DAY + timedelta(days=1))
    assert (row.api_key_id, row.api_key_label, row.workspace_id, row.workspace_name) == (
        "key_prod",
        "Production",
        "proj_a",
        "Research",
    )
    assert (row.line_item, row.model, row.unit, row.quantity) == (
        "gpt-4o-2024-08-06, input",
        "gpt-4o-2024-08-06",
        "tokens",
        Decimal(2500000),
    )
    assert (row.unit_price, row.list_cost, row.discount, row.percent_discount) == (None, None, None, None)


def test_costs_without_a_key_are_the_user_key_and_a_deleted_key_keeps_its_id() -> None:
    rows = cost_rows(
        costs_page(
            [
                cost("1.5", line_item="gpt-4o, input", project_id="proj_a", api_key_id=None),
                cost("2", line_item="gpt-4o, input", project_id="proj_a", api_key_id="key_deleted"),
                cost("0.25", line_item=None, project_id="proj_gone", api_key_id="key_blank"),
                cost("0.5", line_item="tts-1", project_id="proj_unnamed", api_key_id="key_admin"),
            ]
        ),
        CONTEXT,
        directory(),
        start=DAY,
        end=DAY + timedelta(days=1),
    )
    labels = [(r.api_key_label, r.workspace_name, r.model, r.cost) for r in rows]
    assert labels == [
        (USER_KEY_LABEL, "Research", "gpt-4o", Decimal("1.5")),
        ("key_deleted", "Research", "gpt-4o", Decimal(2)),
        ("key_blank", "proj_gone", None, Decimal("0.25")),
        ("Spend reader", "proj_unnamed", "tts-1", Decimal("0.5")),
    ]
    assert len({r.row_id for r in rows}) == 4
    assert rows[2].unit is None and rows[2].quantity is None


def test_a_restated_day_gives_the_same_row_ids_with_the_new_amounts() -> None:
    first = cost_rows(
        costs_page([cost("1.00", line_item="gpt-4o, input", project_id="proj_a", api_key_id="key_prod")]),
        CONTEXT,
        directory(),
        start=DAY,
        end=DAY + timedelta(days=1),
    )
    restated = cost_rows(
        costs_page([cost("1.37", line_item="gpt-4o, input", project_id="proj_a", api_key_id="key_prod")]),
        CONTEXT,
        directory(),
        start=DAY,
        end=DAY + timedelta(days=1),
    )
    assert [r.row_id for r in first] == [r.row_id for r in restated]
    assert [r.cost for r in restated] == [Decimal("1.37")]


def test_usage_results_become_one_row_per_non_zero_quantity_at_unix_hour_times() -> None:
    hour = DAY + timedelta(hours=13)
    result = {
        "object": "organization.usage.completions.result",
        "input_tokens": 1200,
        "output_tokens": 300,
        "input_cached_tokens": 0,
        "input_audio_tokens": 0,
        "num_model_requests": 4,
        "project_id": "proj_a",
        "user_id": None,
        "api_key_id": None,
        "model": "gpt-4o-mini-2024-07-18",
        "batch": False,
    }
    body = decoded(
        {
            "object": "page",
            "data": [
                {"object": "bucket", "start_time": unix(hour), "end_time": unix(hour) + 3600, "results": [result]}
            ],
            "has_more": False,
            "next_page": None,
        }
    )
    rows = usage_rows(body, "completions", CONTEXT, directory(), start=DAY, end=DAY + timedelta(days=1))
    assert {(r.unit, r.quantity) for r in rows} == {
        ("input_tokens", 1200),
        ("output_tokens", 300),
        ("num_model_requests", 4),
    }
    for row in rows:
        assert (row.kind, row.cost, row.currency, row.api_key_label) == ("usage", None, None, USER_KEY_LABEL)
        assert (row.period_start, row.period_end) == (hour, hour + timedelta(hours=1))
        assert row.model == "gpt-4o-mini-2024-07-18" and row.workspace_name == "Research"


def test_a_person_openai_names_in_usage_is_the_rows_login_and_part_of_their_identity() -> None:
    hour = DAY + timedelta(hours=9)

    def page(user_id: Any) -> Any:
        result = {"input_tokens": 50, "project_id": "proj_a", "user_id": user_id, "api_key_id": None, "model": "m"}
        bucket = {"object": "bucket", "start_time": unix(hour), "end_time": unix(hour) + 3600, "results": [result]}
        return decoded({"object": "page", "data": [bucket], "has_more": False, "next_page": None})

    def read(user_id: Any) -> list[Any]:
        return usage_rows(page(user_id), "completions", CONTEXT, directory(), start=DAY, end=DAY + timedelta(days=1))

    [carol], [nobody] = read("user_carol"), read(None)
    assert (carol.login_username, carol.api_key_label, nobody.login_username) == ("user_carol", USER_KEY_LABEL, None)
    assert carol.row_id != nobody.row_id  # two people's use of one hour are two rows
    with pytest.raises(ResponseError, match=r"results\[0\]: field 'user_id'"):
        read(42)


@pytest.mark.parametrize(
    ("bucket", "complaint"),
    [
        ({"start_time": "T", "end_time": T + 3600}, "whole Unix seconds"),
        ({"start_time": T + 1, "end_time": T + 3601}, "whole hours"),
        ({"start_time": T, "end_time": T}, "ends before it starts"),
        ({"start_time": T - 3600, "end_time": T}, "outside the requested window"),
        ({"start_time": T, "end_time": T + 3600, "results": {}}, "results must be a list"),
        ({"start_time": T + 86400, "end_time": T + 86400 + 3600}, "outside the requested window"),
    ],
)
def test_buckets_that_break_the_contract_are_named(bucket: dict[str, Any], complaint: str) -> None:
    body = {"object": "page", "data": [{"object": "bucket", "results": []} | bucket], "has_more": False}
    with pytest.raises(ResponseError, match=complaint):
        usage_rows(body, "images", CONTEXT, directory(), start=DAY, end=DAY + timedelta(days=1))


def test_a_cost_given_as_text_or_a_float_sized_monster_is_refused() -> None:
    for value in ("1.5", True, Decimal("1e999999")):
        page = costs_page([cost("0", line_item="x")])
        page["data"][0]["results"][0]["amount"]["value"] = value
        with pytest.raises(ResponseError, match=r"amount\.value"):
            cost_rows(page, CONTEXT, directory(), start=DAY, end=DAY + timedelta(days=1))


def test_key_records_carry_owner_project_and_times() -> None:
    raw = {
        "object": "organization.project.api_key",
        "id": "key_x",
        "name": "CI",
        "redacted_value": "sk-proj-****abcd",
        "created_at": unix(DAY),
        "last_used_at": None,
        "owner_project_access": "inactive",
        "owner": {"type": "user", "user": {"id": "user_1", "email": "ann@acme.test", "name": "Ann", "role": "owner"}},
    }
    key = parse_project_key(raw, "proj_a", "keys")
    assert (key.scope, key.project_id, key.owner_email, key.owner_project_access) == (
        "project",
        "proj_a",
        "ann@acme.test",
        "inactive",
    )
    assert key.created_at == DAY and key.last_used_at is None
    admin = parse_admin_key(
        {"id": "key_ad", "name": None, "created_at": unix(DAY), "owner": {"type": "user", "name": "Bo"}}, "admin keys"
    )
    assert (admin.scope, admin.label, admin.owner_name) == ("admin", "key_ad", "Bo")
