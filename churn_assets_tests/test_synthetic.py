import numpy as np
import pandas as pd
import pytest

from churn.normalise import normalise
from churn_assets.ingestion.synthetic import (
    SyntheticDrift,
    churn_probability,
    generate_customers,
)
from churn_assets.telco import CATEGORIES, RAW_COLUMNS


def test_same_seed_gives_the_same_customers() -> None:
    pd.testing.assert_frame_equal(generate_customers(500, seed=3), generate_customers(500, seed=3))


def test_another_seed_gives_other_customers() -> None:
    first, second = generate_customers(500, seed=3), generate_customers(500, seed=4)
    assert not first["customerID"].equals(second["customerID"])
    assert not first["MonthlyCharges"].equals(second["MonthlyCharges"])


def test_the_schema_is_the_ibm_telco_schema() -> None:
    customers = generate_customers(2_000, seed=1)
    assert tuple(customers.columns) == RAW_COLUMNS
    normalised, _ = normalise(customers, "Churn")
    for column, categories in CATEGORIES.items():
        assert set(normalised[column].unique()) <= set(categories), column
    assert set(customers["SeniorCitizen"].unique()) <= {0, 1}
    assert customers["tenure"].between(0, 72).all()
    assert customers["MonthlyCharges"].between(18.25, 118.75).all()


def test_keys_are_unique_and_telco_shaped() -> None:
    keys = generate_customers(20_000, seed=2)["customerID"]
    assert keys.is_unique
    assert keys.str.fullmatch(r"\d{4}-[A-Z]{5}").all()


def test_total_charges_is_text_and_blank_exactly_for_new_customers() -> None:
    customers = generate_customers(50_000, seed=5)
    blank = customers["TotalCharges"] == " "
    assert (blank == (customers["tenure"] == 0)).all()
    # As in the IBM file (11 of 7,043), new customers are rare.
    assert 0 < blank.mean() < 0.005
    assert pd.to_numeric(customers.loc[~blank, "TotalCharges"]).ge(0).all()


def test_churn_rate_is_near_the_ibm_files() -> None:
    churn_rate = (generate_customers(50_000, seed=6)["Churn"] == "Yes").mean()
    assert 0.23 <= churn_rate <= 0.30


def test_churn_follows_the_documented_function() -> None:
    customers, _ = normalise(generate_customers(50_000, seed=7), "Churn")
    probability = churn_probability(customers)
    # The labels are draws from the function: calibrated in every decile of probability...
    deciles = pd.Series(pd.qcut(probability, 10, labels=False, duplicates="drop"))
    observed = customers["churn"].groupby(deciles).mean()
    expected = pd.Series(probability).groupby(deciles).mean()
    assert np.allclose(observed.to_numpy(), expected.to_numpy(), atol=0.03)
    # ...and nearly deterministic, which is what makes the brief's RMSE gate reachable.
    bayes_rmse = np.sqrt(np.mean((probability - customers["churn"]) ** 2))
    assert 0.08 < bayes_rmse < 0.13


def test_drift_raises_charges_and_moves_contracts_to_month_to_month() -> None:
    reference = generate_customers(20_000, seed=8)
    drifted = generate_customers(
        20_000,
        seed=8,
        drift=SyntheticDrift(monthly_charges_shift=0.3, month_to_month_shift=0.5),
    )
    ratio = drifted["MonthlyCharges"].mean() / reference["MonthlyCharges"].mean()
    assert ratio == pytest.approx(1.3, abs=0.01)

    def month_to_month(frame: pd.DataFrame) -> float:
        return float((frame["Contract"] == "Month-to-month").mean())

    share, drifted_share = month_to_month(reference), month_to_month(drifted)
    assert drifted_share == pytest.approx(share + 0.5 * (1 - share), abs=0.02)
    # Drift changes the inputs, not the churn function, so more customers churn.
    assert (drifted["Churn"] == "Yes").mean() > (reference["Churn"] == "Yes").mean() + 0.05


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"monthly_charges_shift": -1.0}, "greater than -1"),
        ({"month_to_month_shift": 1.5}, "between 0 and 1"),
    ],
)
def test_impossible_drift_is_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SyntheticDrift(**kwargs)


def test_at_least_one_row() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        generate_customers(0)
