"""Great Expectations suites: a clean set passes; each kind of breakage fails the right check."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from churn.normalise import normalise
from churn_assets.ingestion.synthetic import generate_customers
from churn_assets.validation.eda import class_balance, column_statistics
from churn_assets.validation.suite import (
    CATEGORICAL_VALUES,
    CHECKS,
    COLUMN_COMPLETENESS,
    CUSTOMER_KEY_UNIQUE,
    KEY_COLUMNS_NOT_NULL,
    NUMERIC_RANGES,
    REQUIRED_COLUMNS,
    ROW_COUNT,
    TARGET_IS_BINARY,
    SuiteStore,
    derive_suite,
    load_telco_suite,
    run_suite,
)
from churn_assets_tests.conftest import bank_customers


@pytest.fixture(scope="module")
def telco() -> pd.DataFrame:
    frame, _ = normalise(generate_customers(1_000, seed=21), "Churn")
    return frame


@pytest.fixture(scope="module")
def bank() -> pd.DataFrame:
    frame, _ = normalise(bank_customers(), "Exited")
    return frame


def failed_checks(frame: pd.DataFrame, suite: dict[str, object]) -> set[str]:
    return {outcome.check for outcome in run_suite(frame, suite) if not outcome.passed}


def test_a_clean_telco_set_passes_every_check(telco: pd.DataFrame) -> None:
    outcomes = run_suite(telco, load_telco_suite())
    assert [outcome.check for outcome in outcomes] == list(CHECKS)
    assert all(outcome.passed for outcome in outcomes)
    assert all(outcome.expectations for outcome in outcomes)


def test_the_real_telco_file_passes_the_curated_suite(telco_csv: Path) -> None:
    frame, _ = normalise(pd.read_csv(telco_csv), "Churn")
    assert failed_checks(frame, load_telco_suite()) == set()


def set_value(
    column: str, value: Any, rows: slice = slice(0, 1)
) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def breakage(frame: pd.DataFrame) -> pd.DataFrame:
        broken = frame.copy()
        if value is None and broken[column].dtype.kind in "iu":
            broken[column] = broken[column].astype("float64")
        broken.loc[broken.index[rows], column] = value
        return broken

    return breakage


BREAKAGES: dict[str, tuple[Callable[[pd.DataFrame], pd.DataFrame], str]] = {
    "a column is missing": (lambda f: f.drop(columns=["contract"]), REQUIRED_COLUMNS),
    "a key is missing": (set_value("customer_id", None), KEY_COLUMNS_NOT_NULL),
    "a target is missing": (set_value("churn", None), KEY_COLUMNS_NOT_NULL),
    "a column was emptied": (set_value("tenure", None, slice(0, 500)), COLUMN_COMPLETENESS),
    "a customer appears twice": (
        lambda f: f.assign(customer_id=[f["customer_id"].iloc[0], *f["customer_id"].iloc[:-1]]),
        CUSTOMER_KEY_UNIQUE,
    ),
    "a negative tenure": (set_value("tenure", -3), NUMERIC_RANGES),
    "an absurd monthly charge": (set_value("monthly_charges", 12_000.0), NUMERIC_RANGES),
    "an unknown contract": (set_value("contract", "Lifetime"), CATEGORICAL_VALUES),
    "a misspelt category": (set_value("internet_service", "fibre"), CATEGORICAL_VALUES),
    "a target of 2": (set_value("churn", 2), TARGET_IS_BINARY),
    "too few rows": (lambda f: f[f["total_charges"].notna()].iloc[:50], ROW_COUNT),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_each_breakage_fails_the_right_check(telco: pd.DataFrame, breakage: str) -> None:
    break_frame, check = BREAKAGES[breakage]
    assert failed_checks(break_frame(telco), load_telco_suite()) == {check}


def test_expectations_on_a_missing_column_are_reported_as_not_evaluated(
    telco: pd.DataFrame,
) -> None:
    outcomes = {o.check: o for o in run_suite(telco.drop(columns=["contract"]), load_telco_suite())}
    assert [f.column for f in outcomes[REQUIRED_COLUMNS].failures] == ["contract"]
    assert outcomes[CATEGORICAL_VALUES].not_evaluated == [
        "expect_column_values_to_be_in_set on contract (column missing)"
    ]


def test_failed_expectations_say_what_was_observed_and_expected(telco: pd.DataFrame) -> None:
    broken = set_value("contract", "Lifetime", slice(0, 3))(telco)
    outcome = next(
        o for o in run_suite(broken, load_telco_suite()) if o.check == CATEGORICAL_VALUES
    )
    [failure] = outcome.failures
    assert failure.column == "contract"
    assert failure.observed.startswith("3 unexpected (0.30%), e.g. Lifetime")
    assert failure.expected == "one of Month-to-month, One year, Two year"


def test_a_derived_baseline_accepts_its_own_data_and_rejects_a_broken_batch(
    bank: pd.DataFrame,
) -> None:
    suite = derive_suite(bank, "bank", "exited", "customer_id")
    assert failed_checks(bank, suite) == set()
    kinds = {(e["type"], e["kwargs"].get("column")) for e in suite["expectations"]}
    assert ("expect_column_values_to_be_in_set", "geography") in kinds
    assert ("expect_column_values_to_be_in_set", "has_cr_card") in kinds
    assert ("expect_column_values_to_be_between", "credit_score") in kinds
    assert ("expect_column_values_to_be_unique", "customer_id") in kinds
    # A high-cardinality text column gets no value set: surnames are not categories.
    assert ("expect_column_values_to_be_in_set", "surname") not in kinds

    later = bank.copy()
    later.loc[later.index[:5], "geography"] = "Atlantis"
    later.loc[later.index[5], "age"] = -40
    assert failed_checks(later, suite) == {CATEGORICAL_VALUES, NUMERIC_RANGES}


def test_derived_ranges_are_widened_so_that_drift_is_not_rejected(bank: pd.DataFrame) -> None:
    suite = derive_suite(bank, "bank", "exited", "customer_id")
    [age] = [
        e["kwargs"]
        for e in suite["expectations"]
        if e["type"] == "expect_column_values_to_be_between" and e["kwargs"]["column"] == "age"
    ]
    assert age["min_value"] == 0.0
    assert age["max_value"] >= 2 * bank["age"].max() - bank["age"].min()
    drifted = bank.assign(age=bank["age"] * 1.3)
    assert NUMERIC_RANGES not in failed_checks(drifted, suite)


def test_the_suite_of_a_data_set_is_kept_from_its_first_accepted_version(
    tmp_path: Path, bank: pd.DataFrame, telco: pd.DataFrame
) -> None:
    store = SuiteStore(tmp_path)
    suite, origin = store.resolve("bank", bank, "exited", "customer_id")
    assert origin == "baseline derived from this version"
    assert store.adopt("bank", suite) == tmp_path / "bank.json"
    # A later, smaller batch is checked against the kept suite, not a baseline of itself.
    smaller = bank[bank["geography"] == "France"]
    kept, origin = store.resolve("bank", smaller, "exited", "customer_id")
    assert kept == json.loads((tmp_path / "bank.json").read_text())
    assert "bank.json" in origin
    assert store.adopt("bank", derive_suite(smaller, "bank", "exited", None)) is None

    # A Telco-schema data set points at the curated suite instead of copying it.
    suite, origin = store.resolve("telco_customer_churn", telco, "churn", "customer_id")
    assert origin.startswith("curated Telco suite")
    store.adopt("telco_customer_churn", suite)
    assert json.loads((tmp_path / "telco_customer_churn.json").read_text()) == {
        "use": "builtin:telco"
    }
    broken = telco.drop(columns=["gender"])
    suite, _ = store.resolve("telco_customer_churn", broken, "churn", "customer_id")
    assert failed_checks(broken, suite) == {REQUIRED_COLUMNS}


def test_an_expectation_naming_an_unknown_check_is_an_error(telco: pd.DataFrame) -> None:
    suite = {
        "name": "typo",
        "expectations": [
            {
                "type": "expect_column_to_exist",
                "kwargs": {"column": "tenure"},
                "meta": {"check": "required_colums"},
            }
        ],
    }
    with pytest.raises(ValueError, match="unknown check 'required_colums'"):
        run_suite(telco, suite)


def test_eda_statistics() -> None:
    frame = pd.DataFrame(
        {
            "tenure": [1.0, 2.0, np.nan, 5.0],
            "contract": ["Month-to-month", "Month-to-month", "Two year", None],
            "churn": [1, 0, 0, 0],
        }
    )
    statistics = column_statistics(frame).set_index("column")
    assert statistics.loc["tenure", "missing_share"] == 0.25
    assert statistics.loc["tenure", "distinct"] == 3
    assert (statistics.loc["tenure", "min"], statistics.loc["tenure", "max"]) == (1.0, 5.0)
    assert statistics.loc["tenure", "mean"] == pytest.approx(8 / 3)
    assert statistics.loc["contract", "top_values"] == "Month-to-month (67%), Two year (33%)"
    assert class_balance(frame["churn"]) == {"retained": 0.75, "churned": 0.25}
