"""A seeded generator of Telco-schema customers, the platform's built-in (offline) data set.

The data is synthetic. Feature distributions follow the IBM Telco file (26.5 % churn, a U-shaped
tenure, fibre customers paying more, long contracts for long tenures); churn is drawn from a
documented function of the features:

    score = -1.9
            + 2.0 * [contract = Month-to-month] - 1.8 * [contract = Two year]
            + 1.3 * [internet_service = Fiber optic] - 1.2 * [internet_service = No]
            + 1.0 * [payment_method = Electronic check]
            + 0.8 * [tech_support = No] + 0.6 * [online_security = No]
            + 0.7 * senior_citizen + 0.5 * [paperless_billing = Yes] - 0.4 * [partner = Yes]
            - 1.5 * tenure / 12 + 0.03 * (monthly_charges - 65)
    P(churn) = sigmoid(STEEPNESS * score)

`STEEPNESS` sets the label noise: customers close to the boundary churn at random, the others
almost surely follow the score. It is chosen so that a well-tuned model can pass the product
brief's gates (F1 >= 0.85, recall >= 0.80, probability RMSE <= 0.15) while no model can be perfect.

Drift (for monitoring demos) changes the inputs, never the churn function: monthly charges rise by
a relative amount and a share of long-contract customers move to month-to-month contracts, so
churn rises the way it would in a real market.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from churn_assets.telco import INTERNET_ADDONS, RAW_COLUMNS

STEEPNESS = 5.0
INTERCEPT = -1.9
NEW_CUSTOMER_SHARE = 0.0016

_CONTRACTS = np.array(["Month-to-month", "One year", "Two year"], dtype=object)
_PAYMENTS = np.array(
    ["Electronic check", "Mailed check", "Bank transfer (automatic)", "Credit card (automatic)"],
    dtype=object,
)
_INTERNET = np.array(["DSL", "Fiber optic", "No"], dtype=object)
_ADDON_RAW_NAMES = {
    "online_security": "OnlineSecurity",
    "online_backup": "OnlineBackup",
    "device_protection": "DeviceProtection",
    "tech_support": "TechSupport",
    "streaming_tv": "StreamingTV",
    "streaming_movies": "StreamingMovies",
}
_ADDON_TAKE_UP = {
    "online_security": 0.37,
    "online_backup": 0.44,
    "device_protection": 0.44,
    "tech_support": 0.37,
    "streaming_tv": 0.49,
    "streaming_movies": 0.50,
}
_LETTERS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))


@dataclass(frozen=True)
class SyntheticDrift:
    """How a generated batch departs from the reference population.

    Attributes:
        monthly_charges_shift: relative change of monthly charges (0.3 means +30 %).
        month_to_month_shift: share of one- and two-year contracts turned into month-to-month.

    """

    monthly_charges_shift: float = 0.0
    month_to_month_shift: float = 0.0

    def __post_init__(self) -> None:
        if self.monthly_charges_shift <= -1.0:
            raise ValueError(
                "monthly_charges_shift must be greater than -1 (charges stay positive)"
            )
        if not 0.0 <= self.month_to_month_shift <= 1.0:
            raise ValueError("month_to_month_shift must be between 0 and 1")


def churn_score(frame: pd.DataFrame) -> np.ndarray:
    """The latent churn score of normalised Telco records (see the module docstring)."""
    contract = frame["contract"].to_numpy()
    internet = frame["internet_service"].to_numpy()
    score: np.ndarray = (
        INTERCEPT
        + 2.0 * (contract == "Month-to-month")
        - 1.8 * (contract == "Two year")
        + 1.3 * (internet == "Fiber optic")
        - 1.2 * (internet == "No")
        + 1.0 * (frame["payment_method"].to_numpy() == "Electronic check")
        + 0.8 * (frame["tech_support"].to_numpy() == "No")
        + 0.6 * (frame["online_security"].to_numpy() == "No")
        + 0.7 * frame["senior_citizen"].to_numpy()
        + 0.5 * (frame["paperless_billing"].to_numpy() == "Yes")
        - 0.4 * (frame["partner"].to_numpy() == "Yes")
        - 1.5 * frame["tenure"].to_numpy() / 12.0
        + 0.03 * (frame["monthly_charges"].to_numpy() - 65.0)
    )
    return score


def churn_probability(frame: pd.DataFrame) -> np.ndarray:
    """P(churn) of normalised Telco records under the generator's churn function."""
    return 1.0 / (1.0 + np.exp(-STEEPNESS * churn_score(frame)))


def generate_customers(
    rows: int, seed: int = 42, drift: SyntheticDrift | None = None
) -> pd.DataFrame:
    """Generate `rows` customers with the raw IBM Telco columns (`customerID` ... `Churn`).

    Values are raw as in the IBM file: `TotalCharges` is text, blank for customers with tenure 0;
    `SeniorCitizen` is 0/1; `Churn` is Yes/No. The same seed gives the same frame.
    """
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    drift = drift or SyntheticDrift()
    rng = np.random.default_rng(seed)

    senior = (rng.random(rows) < 0.16).astype(np.int64)
    partner = rng.random(rows) < 0.48
    dependents = rng.random(rows) < np.where(partner, 0.52, 0.10)

    # U-shaped tenure: recent sign-ups, loyal customers near the 72-month cap, and the rest between.
    mixture = rng.random(rows)
    tenure = np.where(
        mixture < 0.35,
        rng.geometric(1 / 9, rows),
        np.where(mixture < 0.60, 72 - (rng.geometric(1 / 7, rows) - 1), rng.integers(1, 73, rows)),
    ).clip(1, 72)
    # As in the IBM file, a few customers have just signed up (tenure 0, no total charges yet).
    tenure[rng.random(rows) < NEW_CUSTOMER_SHARE] = 0

    # Longer tenure, longer contract.
    loyalty = tenure / 72
    contract_weights = np.stack(
        [0.85 - 0.65 * loyalty, 0.10 + 0.20 * loyalty, 0.05 + 0.45 * loyalty], axis=1
    )
    contract = _CONTRACTS[_draw_categories(rng, contract_weights)]
    if drift.month_to_month_shift > 0:
        moved = (contract != "Month-to-month") & (rng.random(rows) < drift.month_to_month_shift)
        contract[moved] = _CONTRACTS[0]

    phone = rng.random(rows) < 0.90
    multiple_lines = _labels(
        ("No", "Yes", "No phone service"), np.where(phone, rng.random(rows) < 0.47, 2)
    )
    internet = _INTERNET[_draw_categories(rng, np.tile([0.34, 0.44, 0.22], (rows, 1)))]
    has_internet = internet != "No"

    addons: dict[str, np.ndarray] = {}
    for addon in INTERNET_ADDONS:
        taken = rng.random(rows) < _ADDON_TAKE_UP[addon]
        addons[addon] = _labels(
            ("No", "Yes", "No internet service"), np.where(has_internet, taken, 2)
        )

    paperless = rng.random(rows) < 0.59
    payment = _PAYMENTS[_draw_categories(rng, np.tile([0.34, 0.23, 0.22, 0.21], (rows, 1)))]

    extra_services = sum((addons[addon] == "Yes").astype(np.int64) for addon in INTERNET_ADDONS)
    monthly = (
        np.where(phone, 20.0, 0.0)
        + np.select([internet == "DSL", internet == "Fiber optic"], [25.0, 50.0], 0.0)
        + 5.0 * extra_services
        + np.where(multiple_lines == "Yes", 5.0, 0.0)
        + rng.normal(0.0, 3.0, rows)
    ).clip(18.25, 118.75)
    monthly = np.round(monthly * (1.0 + drift.monthly_charges_shift), 2)
    total = np.round(monthly * tenure * rng.normal(1.0, 0.04, rows).clip(0.85, 1.15), 2)

    normalised = pd.DataFrame(
        {
            "senior_citizen": senior,
            "partner": _labels(("No", "Yes"), partner),
            "tenure": tenure,
            "contract": contract,
            "internet_service": internet,
            "payment_method": payment,
            "paperless_billing": _labels(("No", "Yes"), paperless),
            "monthly_charges": monthly,
            "tech_support": addons["tech_support"],
            "online_security": addons["online_security"],
        }
    )
    churned = rng.random(rows) < churn_probability(normalised)

    frame = pd.DataFrame(
        {
            "customerID": _customer_ids(rng, rows),
            "gender": _labels(("Female", "Male"), rng.random(rows) < 0.5),
            "SeniorCitizen": senior,
            "Partner": normalised["partner"].to_numpy(),
            "Dependents": _labels(("No", "Yes"), dependents),
            "tenure": tenure.astype(np.int64),
            "PhoneService": _labels(("No", "Yes"), phone),
            "MultipleLines": multiple_lines,
            "InternetService": internet,
            **{_ADDON_RAW_NAMES[addon]: addons[addon] for addon in INTERNET_ADDONS},
            "Contract": contract,
            "PaperlessBilling": normalised["paperless_billing"].to_numpy(),
            "PaymentMethod": payment,
            "MonthlyCharges": monthly,
            "TotalCharges": np.where(tenure == 0, " ", total.astype(str)).astype(object),
            "Churn": _labels(("No", "Yes"), churned),
        }
    )
    return frame[list(RAW_COLUMNS)]


def _labels(labels: tuple[str, ...], indices: np.ndarray) -> np.ndarray:
    """labels[indices[i]] for every row, sharing one string object per label.

    `np.where(mask, "Yes", "No").astype(object)` would make a string object per row: about
    60 MB per million rows and column, where this costs the 8 MB of the references.
    """
    chosen: np.ndarray = np.array(labels, dtype=object)[indices.astype(np.intp)]
    return chosen


def _draw_categories(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """One category index per row, row i drawn with probabilities proportional to weights[i]."""
    cumulative = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
    draws = rng.random(len(weights))[:, None]
    indices: np.ndarray = np.minimum((draws > cumulative).sum(axis=1), weights.shape[1] - 1)
    return indices


def _customer_ids(rng: np.random.Generator, rows: int) -> np.ndarray:
    """Unique Telco-style keys such as `7590-VHVEG`, drawn without replacement."""
    codes = rng.permutation(rng.choice(10_000 * 26**5, size=rows, replace=False))
    digits = np.char.zfill((codes % 10_000).astype(str), 4)
    letters = codes // 10_000
    suffix = np.empty(rows, dtype="<U5")
    suffix[:] = ""
    for _ in range(5):
        suffix = np.char.add(_LETTERS[letters % 26], suffix)
        letters //= 26
    keys: np.ndarray = np.char.add(np.char.add(digits, "-"), suffix).astype(object)
    return keys


def generate_accounts(rows: int, seed: int = 5) -> pd.DataFrame:
    """A churn table of another shape than Telco's, for tests and benchmarks: 60 columns.

    A key named `AccountNumber`, 20 usage amounts, 15 counts, 10 booleans, 10 four-valued
    segments, a sign-up date as text, a region and a plan, and the target `Lapsed` (booleans),
    which depends on a few of them (`usage_0`, `count_0`, `flag_0`, the basic plan). Not real
    data: a shape the platform must handle as well as Telco's.
    """
    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {"AccountNumber": [f"ACC{i:06d}" for i in range(rows)]}
    for i in range(20):
        columns[f"usage_{i}"] = rng.gamma(2.0, 10.0, rows).round(3)
    for i in range(15):
        columns[f"count_{i}"] = rng.integers(0, 50, rows)
    for i in range(10):
        columns[f"flag_{i}"] = rng.random(rows) < 0.3
    for i in range(10):
        columns[f"segment_{i}"] = rng.choice(["a", "b", "c", "d"], rows)
    columns["signup_date"] = (
        pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 1_500, rows), unit="D")
    ).strftime("%Y-%m-%d")
    columns["region"] = rng.choice(["north", "south"], rows)
    columns["plan"] = rng.choice(["basic", "pro", "max"], rows)
    score = (
        0.08 * columns["usage_0"]
        - 0.05 * columns["count_0"]
        + 1.5 * columns["flag_0"]
        + 1.0 * (columns["plan"] == "basic")
        - 2.0
    )
    columns["Lapsed"] = rng.random(rows) < 1 / (1 + np.exp(-score))
    return pd.DataFrame(columns)
