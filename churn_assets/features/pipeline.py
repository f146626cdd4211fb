"""The feature pipeline: raw customer records in, model features out, in one scikit-learn object.

It is fitted on the training split only and shipped inside every logged model, so the served model
takes the same raw records as `raw_customers` (snake_case columns) and computes its features
exactly as in training: there is no second implementation to drift apart.

- `RawRecords` keeps the feature columns (dropping the key, the target, excluded and unknown
  columns), reads numbers as numbers and text as text, whatever the input's dtypes (Arrow strings
  in training, Python objects from JSON in serving).
- `TelcoFeatures` adds features where the Telco columns exist: the number of subscribed services,
  charges per month of tenure, tenure buckets.
- A `ColumnTransformer` imputes, scales numbers and one-hot encodes categories, ignoring
  categories unseen in training.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from churn_assets.telco import INTERNET_ADDONS

SERVICE_COLUMNS = ("phone_service", "multiple_lines", *INTERNET_ADDONS)
TENURE_BUCKETS = (-np.inf, 12, 24, 48, np.inf)
TENURE_LABELS = ("0-12", "12-24", "24-48", "48+")
MISSING_CATEGORY = "__missing__"


class RawRecords(BaseEstimator, TransformerMixin):  # type: ignore[misc]
    """Select the feature columns of raw records and give them their training types.

    Args:
        numeric: columns read as numbers (non-numbers become missing).
        categorical: columns read as text (missing stays missing).

    """

    def __init__(self, numeric: Sequence[str] = (), categorical: Sequence[str] = ()) -> None:
        self.numeric = numeric
        self.categorical = categorical

    def fit(self, records: pd.DataFrame, target: object = None) -> RawRecords:
        """Nothing to learn: the columns were chosen from the training split's schema."""
        return self

    def transform(self, records: pd.DataFrame) -> pd.DataFrame:
        """The feature columns, numbers as float64 and text as objects with NaN for missing."""
        columns: dict[str, Any] = {}
        for column in self.numeric:
            columns[column] = pd.to_numeric(records[column], errors="coerce").astype("float64")
        for column in self.categorical:
            text = records[column].astype("object")
            columns[column] = text.where(text.notna(), np.nan)
        return pd.DataFrame(columns, index=records.index)

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        """Names of the columns `transform` returns."""
        return np.array([*self.numeric, *self.categorical], dtype=object)


class TelcoFeatures(BaseEstimator, TransformerMixin):  # type: ignore[misc]
    """Add Telco-aware features; which ones is decided from the training schema.

    Args:
        services: yes/no service columns counted into `services_count` (none: not added).
        charges: add `charges_per_tenure_month` (needs tenure, monthly and total charges).
        tenure: add `tenure_bucket`.

    """

    def __init__(
        self, services: Sequence[str] = (), charges: bool = False, tenure: bool = False
    ) -> None:
        self.services = services
        self.charges = charges
        self.tenure = tenure

    def fit(self, records: pd.DataFrame, target: object = None) -> TelcoFeatures:
        """Nothing to learn: every feature is a fixed function of one record."""
        return self

    def transform(self, records: pd.DataFrame) -> pd.DataFrame:
        """The records with the engineered features appended."""
        features = records.copy()
        if self.services:
            features["services_count"] = sum(
                (records[column] == "Yes").astype("float64") for column in self.services
            )
        if self.charges:
            months = records["tenure"].clip(lower=1)
            features["charges_per_tenure_month"] = (
                records["total_charges"].fillna(records["monthly_charges"]) / months
            )
        if self.tenure:
            buckets = pd.cut(records["tenure"], TENURE_BUCKETS, labels=TENURE_LABELS, right=False)
            features["tenure_bucket"] = buckets.astype("object").where(buckets.notna(), np.nan)
        return features

    def engineered(self) -> tuple[list[str], list[str]]:
        """The numeric and categorical features this step adds."""
        numeric = ["services_count"] if self.services else []
        numeric += ["charges_per_tenure_month"] if self.charges else []
        return numeric, ["tenure_bucket"] if self.tenure else []


def feature_columns(
    frame: pd.DataFrame, target: str, id_column: str | None, excluded: Sequence[str]
) -> tuple[list[str], list[str]]:
    """Numeric and categorical feature columns: everything but the key, target and exclusions."""
    dropped = {target, *excluded} | ({id_column} if id_column else set())
    numeric, categorical = [], []
    for column in frame.columns:
        if column in dropped:
            continue
        values = frame[column]
        if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
            categorical.append(str(column))
        else:
            numeric.append(str(column))
    return numeric, categorical


def build_feature_pipeline(numeric: Sequence[str], categorical: Sequence[str]) -> Pipeline:
    """An unfitted pipeline from raw records to a numeric feature matrix."""
    telco = TelcoFeatures(
        services=[column for column in SERVICE_COLUMNS if column in categorical],
        charges={"tenure", "monthly_charges", "total_charges"} <= set(numeric),
        tenure="tenure" in numeric,
    )
    engineered_numeric, engineered_categorical = telco.engineered()
    encode = ColumnTransformer(
        [
            (
                "numbers",
                Pipeline(
                    [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]
                ),
                [*numeric, *engineered_numeric],
            ),
            (
                "categories",
                Pipeline(
                    [
                        (
                            "impute",
                            SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY),
                        ),
                        (
                            "one_hot",
                            OneHotEncoder(
                                handle_unknown="infrequent_if_exist",
                                min_frequency=5,
                                sparse_output=False,
                            ),
                        ),
                    ]
                ),
                [*categorical, *engineered_categorical],
            ),
        ],
        verbose_feature_names_out=False,
    )
    return Pipeline(
        [
            ("raw_records", RawRecords(numeric=list(numeric), categorical=list(categorical))),
            ("telco_features", telco),
            ("encode", encode),
        ]
    )
