"""The input schema of a model and the request contract built from it, on several table shapes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from churn.contract import RecordContract
from churn.model.schema import ColumnKind, ModelSchema
from churn.normalise import normalise
from churn_assets.ingestion.synthetic import generate_accounts
from churn_assets_tests.conftest import ORANGE_CSV, TELCO_CSV, bank_customers


def telco_schema() -> ModelSchema:
    if not TELCO_CSV.exists():
        pytest.skip(f"the real Telco data set is absent ({TELCO_CSV})")
    frame, report = normalise(pd.read_csv(TELCO_CSV), "Churn")
    return ModelSchema.from_frame(frame, "churn", report.id_column)


def test_the_schema_of_the_telco_file() -> None:
    schema = telco_schema()
    assert schema.key == "customer_id" and schema.target == "churn"
    assert "customer_id" not in schema.names and "churn" not in schema.names
    assert len(schema.names) == 19
    tenure = schema.column("tenure")
    assert (tenure.kind, tenure.nullable, tenure.minimum, tenure.maximum) == (
        ColumnKind.INTEGER,
        False,
        0.0,
        150.0,  # 0-72 widened by its span, rounded outwards
    )
    assert schema.column("senior_citizen").maximum == 1.0  # a flag stays a flag
    total = schema.column("total_charges")
    assert total.kind == ColumnKind.NUMBER and total.nullable  # 11 blanks in the file
    assert schema.column("contract").categories == ["Month-to-month", "One year", "Two year"]
    # The example is typical values, not a customer of the file.
    example = schema.example()
    telco = pd.read_csv(TELCO_CSV)
    assert example["customer_id"] not in set(telco["customerID"])
    assert example["contract"] == "Month-to-month"


def test_the_orange_table_has_no_key_and_its_area_code_is_an_integer() -> None:
    if not ORANGE_CSV.exists():
        pytest.skip(f"the real Orange data set is absent ({ORANGE_CSV})")
    frame, report = normalise(pd.read_csv(ORANGE_CSV), "Churn")
    schema = ModelSchema.from_frame(frame, "churn", report.id_column)
    assert schema.key is None and len(schema.names) == 19
    assert schema.column("area_code").kind == ColumnKind.INTEGER
    assert schema.column("state").kind == ColumnKind.CATEGORY
    assert len(schema.column("state").categories) == 51
    assert "customer_id" not in schema.example()


def test_a_wide_table_with_booleans_dates_and_a_key_named_otherwise() -> None:
    raw = generate_accounts(400, seed=3)
    assert len(raw.columns) == 60
    frame, report = normalise(raw, "Lapsed", id_column="AccountNumber")
    schema = ModelSchema.from_frame(frame, "lapsed", report.id_column)
    assert schema.key == "account_number" and len(schema.names) == 58
    kinds = {column.name: column.kind for column in schema.columns}
    assert kinds["flag_0"] == ColumnKind.BOOLEAN
    assert kinds["usage_0"] == ColumnKind.NUMBER and kinds["count_0"] == ColumnKind.INTEGER
    assert kinds["signup_date"] == ColumnKind.DATE  # `2021-03-15` text, read as dates
    contract = RecordContract(schema, max_records=10)
    record = contract.record_type.model_validate(schema.example())
    for sent in (
        "2024-03-15",
        "2024-03-15T10:30:00Z",
        "2024-03-15 10:30:00+02:00",
        "2024-03-15t10:30z",
    ):
        contract.record_type.model_validate({**schema.example(), "signup_date": sent})
    for sent in ("15/03/2024", "2024-02-30", "", "yesterday"):
        with pytest.raises(ValidationError) as refused:
            contract.record_type.model_validate({**schema.example(), "signup_date": sent})
        assert refused.value.errors()[0]["loc"] == ("signup_date",)
        assert "is not an ISO 8601 date or time" in refused.value.errors()[0]["msg"]
    assert contract.key_of(record) == "C-0001"
    assert (
        contract.key_of(
            contract.record_type.model_validate({**schema.example(), "account_number": None})
        )
        is None
    )
    with pytest.raises(ValidationError) as refused:
        contract.record_type.model_validate({**schema.example(), "flag_3": "yes"})
    assert refused.value.errors()[0]["loc"] == ("flag_3",)


@pytest.mark.parametrize(
    ("change", "field", "kind"),
    [
        ({"tenure": 12.5}, "tenure", "int_type"),
        ({"tenure": "12"}, "tenure", "int_type"),
        ({"monthly_charges": "29.85"}, "monthly_charges", "float_type"),
        ({"total_charges": False}, "total_charges", "float_type"),
        ({"tenure": 1_000}, "tenure", "less_than_equal"),
        ({"monthly_charges": -1.0}, "monthly_charges", "greater_than_equal"),
        ({"gender": 1}, "gender", "string_type"),
        ({"gender": ""}, "gender", "string_too_short"),
        ({"tenure": None}, "tenure", "int_type"),
        ({"loyalty": "gold"}, "loyalty", "extra_forbidden"),
    ],
)
def test_the_contract_refuses_what_the_model_cannot_take_naming_the_field(
    change: dict[str, Any], field: str, kind: str
) -> None:
    contract = RecordContract(telco_schema(), max_records=10)
    body = {"records": [{**contract.example, **change}]}
    with pytest.raises(ValidationError) as refused:
        contract.request_type.model_validate_json(json.dumps(body))
    [error] = refused.value.errors()
    assert error["loc"] == ("records", 0, field) and error["type"] == kind


def test_the_contract_takes_nulls_where_training_had_them_and_unseen_categories() -> None:
    contract = RecordContract(telco_schema(), max_records=2)
    example = contract.example
    accepted = contract.request_type.model_validate_json(
        json.dumps(
            {
                "records": [
                    {**example, "total_charges": None, "payment_method": "Crypto"},
                    {k: v for k, v in example.items() if k != "customer_id"},
                ]
            }
        )
    )
    first, second = accepted.records
    assert first.total_charges is None and first.payment_method == "Crypto"
    assert contract.key_of(second) is None
    assert first._request_id == second._request_id != ""
    missing = {k: v for k, v in example.items() if k != "tenure"}
    bodies: list[dict[str, Any]] = [
        {"records": [missing]},
        {"records": []},
        {"records": [example] * 3},
        {"records": [example], "mode": "fast"},
    ]
    for body in bodies:
        with pytest.raises(ValidationError):
            contract.request_type.model_validate_json(json.dumps(body))
    with pytest.raises(ValidationError):  # NaN is not a number a client can mean
        contract.request_type.model_validate_json(
            json.dumps({"records": [example]}).replace("70.35", "NaN")
        )


def base_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ["a", "b", "c"],
            "tenure": [1, 5, 9],
            "charges": [1.5, np.nan, 3.0],
            "plan": ["x", "y", "x"],
            "churn": [0, 1, 0],
        }
    )


def base_schema() -> ModelSchema:
    return ModelSchema.from_frame(base_frame(), "churn", "customer_id")


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda f: f.assign(region=["n", "s", "n"]), ["region: new required column"]),
        (lambda f: f.assign(region=["n", None, "n"]), []),  # a new optional column is not
        (lambda f: f.drop(columns=["plan"]), ["plan: removed (clients still send it)"]),
        (lambda f: f.assign(tenure=[1.5, 5.0, 9.0]), ["tenure: kind integer -> number"]),
        (lambda f: f.assign(plan=[1, 2, 1]), ["plan: kind category -> integer"]),
        (lambda f: f.assign(charges=[1.5, 2.0, 3.0]), ["charges: may no longer be missing"]),
        (lambda f: f.assign(plan=["x", "z", "w"], tenure=[0, 500, 9]), []),  # values, not shape
    ],
)
def test_each_kind_of_schema_change_is_named(edit: Any, expected: list[str]) -> None:
    previous = base_schema()
    changed = ModelSchema.from_frame(edit(base_frame()), "churn", "customer_id")
    assert [str(change) for change in changed.changes_from(previous)] == expected
    same_shape = expected == [] and changed.names == previous.names
    assert (changed.fingerprint == previous.fingerprint) == same_shape


def test_a_changed_key_is_a_schema_change_and_the_schema_round_trips_as_json(
    tmp_path: Path,
) -> None:
    previous = base_schema()
    keyless = previous.model_copy(update={"key": None})
    assert [str(c) for c in keyless.changes_from(previous)] == [
        "customer_id: customer key 'customer_id' -> None"
    ]
    path = tmp_path / "schema.json"
    path.write_text(previous.model_dump_json())
    assert ModelSchema.model_validate_json(path.read_text()) == previous


def test_the_bank_table_schema() -> None:
    frame, report = normalise(bank_customers(), "Exited")
    schema = ModelSchema.from_frame(frame, "exited", report.id_column, ["row_number", "surname"])
    assert schema.key == "customer_id"
    assert "surname" not in schema.names and "row_number" not in schema.names
    assert schema.column("has_cr_card").maximum == 1.0
    assert schema.column("geography").categories == ["France", "Germany", "Spain"]
