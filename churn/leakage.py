"""Target leakage: an input that predicts churn almost perfectly on its own.

Real exports carry columns that are not causes but consequences or copies of the answer: a
closing date, a reason for leaving, or someone's classifier output (BankChurners ships two
`Naive_Bayes_Classifier_...` columns that match the target on every row). A model built on one
scores perfectly on the hold-out and is useless on the next month's customers, who do not have
that column filled yet.

Each input is scored alone by its ROC-AUC against the target: a number by its value (missing as
the lowest), anything else by its category's churn rate learned on the other half of the rows
(out-of-fold, so that a column of unique values, such as a name, scores 0.5 and not 1.0). The
direction does not matter: an AUC of 0.02 is as telling as 0.98, and is reported as 0.98. On the
six real tables of the project's test data the strongest honest column reaches 0.80; the leaking
ones reach 1.00. A column at or above `CHURN_GATE_MAX_SINGLE_COLUMN_AUC` (0.95) is flagged by
validation and keeps the model from production (the `leakage_gate`).

This module imports neither Dagster nor BentoML.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

# Prior weight of the out-of-fold category rates: a category seen a few times stays near the
# overall churn rate instead of scoring 0 or 1.
_SMOOTHING = 10.0
# Rows scored per column; beyond it a uniform sample gives the same AUC to a few thousandths.
MAX_ROWS = 200_000


@dataclass(frozen=True)
class ColumnPower:
    """How well one input alone tells churners from the others."""

    column: str
    auc: float

    def __str__(self) -> str:
        return f"{self.column} alone gives ROC-AUC {self.auc:.3f}"


def single_column_power(
    frame: pd.DataFrame, target: str, columns: Sequence[str], seed: int = 0
) -> list[ColumnPower]:
    """Each of `columns` scored alone against `target` (0/1), strongest first."""
    if len(frame) > MAX_ROWS:
        frame = frame.sample(n=MAX_ROWS, random_state=seed)
    labels = frame[target].to_numpy(dtype=np.int64)
    if labels.min(initial=0) == labels.max(initial=0):
        return []
    folds = np.random.default_rng(seed).integers(0, 2, len(frame))
    powers = [ColumnPower(str(column), _power(frame[column], labels, folds)) for column in columns]
    return sorted(powers, key=lambda power: power.auc, reverse=True)


def _power(values: pd.Series, labels: np.ndarray, folds: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if pd.api.types.is_datetime64_any_dtype(values):  # as the model reads dates: days
        from churn.model.features import days_since_epoch

        values = pd.Series(days_since_epoch(values), index=values.index)
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = values.to_numpy(dtype="float64", na_value=np.nan)
        present = ~np.isnan(numbers)
        if not present.any():
            return 0.5
        score = np.where(present, numbers, np.nanmin(numbers) - 1.0)
    else:
        codes = values.astype("string").fillna("\x00missing").to_numpy(dtype=object)
        score = np.empty(len(codes))
        prior = float(labels.mean())
        for fold in (0, 1):
            learn, apply = folds != fold, folds == fold
            rates = (
                pd.DataFrame({"code": codes[learn], "label": labels[learn]})
                .groupby("code")["label"]
                .agg(["sum", "count"])
            )
            smoothed = (rates["sum"] + prior * _SMOOTHING) / (rates["count"] + _SMOOTHING)
            score[apply] = pd.Series(codes[apply]).map(smoothed).fillna(prior).to_numpy()
    if np.ptp(score) == 0:
        return 0.5
    auc = float(roc_auc_score(labels, score))
    return max(auc, 1.0 - auc)
