"""PSI as the monitoring computes it (Evidently), against values worked out by hand."""

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest

from churn.drift import measure_drift
from churn.normalise import normalise
from churn_assets.ingestion.synthetic import generate_customers
from churn_assets.telco import FEATURES


def psi_of(reference: Sequence[object], current: Sequence[object]) -> float:
    result = measure_drift(pd.DataFrame({"x": reference}), pd.DataFrame({"x": current}))
    return result.columns[0].psi


def test_psi_of_two_categories_matches_the_formula() -> None:
    # Shares 0.5/0.5 -> 0.8/0.2.
    expected = (0.8 - 0.5) * math.log(0.8 / 0.5) + (0.2 - 0.5) * math.log(0.2 / 0.5)
    assert psi_of(["a"] * 50 + ["b"] * 50, ["a"] * 80 + ["b"] * 20) == pytest.approx(expected)
    assert expected == pytest.approx(0.4159, abs=1e-4)


def test_an_empty_category_counts_as_a_share_of_one_in_ten_thousand() -> None:
    # Reference 0.9/0.1/0 -> current 0.9/0/0.1: each empty share is floored at 0.0001.
    floor = 0.0001
    expected = 2 * (0.1 - floor) * math.log(0.1 / floor)
    psi = psi_of(["a"] * 90 + ["b"] * 10, ["a"] * 90 + ["c"] * 10)
    assert psi == pytest.approx(expected)
    assert psi == pytest.approx(1.3802, abs=1e-4)


def test_numbers_are_binned_over_both_samples_with_empty_bins_floored() -> None:
    # 64 values from 0 to 70: Sturges gives log2(64) + 1 = 7 bins of width 10. The reference fills
    # bins 1-4 (8 values each), the current bins 4-7; three bins on each side are empty.
    reference = [float(v) for start in (0, 10, 20, 30) for v in range(start, start + 8)]
    current = [float(v) for start in (30, 40, 50, 60) for v in range(start, start + 8)]
    current[-1] = 70.0
    assert len(set(reference)) > 20
    floor = 0.0001
    expected = 6 * (0.25 - floor) * math.log(0.25 / floor)
    assert psi_of(reference, current) == pytest.approx(expected)
    assert expected == pytest.approx(11.7314, abs=1e-4)


def test_a_number_with_few_values_is_compared_value_by_value() -> None:
    # senior_citizen-like: 0/1 shares 0.84/0.16 -> 0.70/0.30.
    expected = (0.70 - 0.84) * math.log(0.70 / 0.84) + (0.30 - 0.16) * math.log(0.30 / 0.16)
    assert psi_of([0] * 84 + [1] * 16, [0] * 70 + [1] * 30) == pytest.approx(expected)


def telco_features(rows: int, seed: int) -> pd.DataFrame:
    frame, _ = normalise(generate_customers(rows, seed), "Churn")
    return frame[list(FEATURES)]


def test_identical_data_has_no_drift() -> None:
    frame = telco_features(3_000, 1)
    # Snapshots hold Arrow strings, the prediction log gives Python ones: the same values.
    logged = frame.astype({c: object for c in frame.columns if frame[c].dtype == "string"})
    result = measure_drift(frame, logged)
    assert result.drifted == []
    assert max(result.psi().values()) == pytest.approx(0.0, abs=1e-12)


def test_shifting_one_column_drifts_that_column_only() -> None:
    reference = telco_features(5_000, 1)
    current = telco_features(2_000, 2)
    current["monthly_charges"] = (current["monthly_charges"] * 1.3).round(2)
    result = measure_drift(reference, current)
    assert [column.column for column in result.drifted] == ["monthly_charges"]
    [drifted] = result.drifted
    assert drifted.psi > 0.2
    assert drifted.describe().startswith("Drift detected on monthly_charges - PSI = ")
    assert result.share == pytest.approx(1 / len(FEATURES))
    # Another sample of the same population stays well under the threshold everywhere else.
    assert all(c.psi < 0.05 for c in result.columns if c.column != "monthly_charges")


def test_the_threshold_is_configurable_and_strict() -> None:
    reference = pd.DataFrame({"x": ["a"] * 50 + ["b"] * 50})
    current = pd.DataFrame({"x": ["a"] * 80 + ["b"] * 20})
    assert measure_drift(reference, current, threshold=0.5).drifted == []
    assert len(measure_drift(reference, current, threshold=0.4).drifted) == 1


def test_missing_values_are_left_out_and_empty_samples_refused() -> None:
    reference = pd.DataFrame({"x": np.r_[np.arange(100.0), [np.nan] * 10]})
    assert measure_drift(reference, reference.copy()).columns[0].psi == pytest.approx(0.0)
    with pytest.raises(ValueError, match="current data is empty"):
        measure_drift(reference, reference.iloc[:0])
    with pytest.raises(ValueError, match=r"lacks monitored column\(s\): y"):
        measure_drift(reference, reference, columns=["x", "y"])


def test_dates_are_compared_as_days_whether_stored_or_logged_as_text() -> None:
    """The reference holds datetimes; the prediction log holds the ISO 8601 text requests sent."""
    rng = np.random.default_rng(3)
    start = pd.Timestamp("2024-01-01")
    reference = pd.DataFrame(
        {"last_login": start + pd.to_timedelta(rng.integers(0, 365, 5_000), unit="D")}
    )
    same = reference.sample(2_000, random_state=1)
    logged = same.assign(last_login=same["last_login"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert psi_of(list(reference["last_login"]), list(same["last_login"])) < 0.05
    result = measure_drift(reference, logged)
    assert result.columns[0].kind == "numerical" and result.columns[0].psi < 0.05
    # Customers who stopped logging in for three months: their dates drift.
    later = logged.assign(last_login=(same["last_login"] - pd.Timedelta(days=90)).astype(str))
    assert measure_drift(reference, later).columns[0].psi > 0.2
