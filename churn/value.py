"""What churn decisions cost: per-decision costs, the cost-minimising threshold, and savings.

A retention team flags a customer (offers something) or not. Each of the four outcomes has a
cost: a false positive (an offer made in vain), a false negative (a churner missed), a true
positive (an offer to a churner, who may stay) and a true negative (usually nothing). Each cost is
a number, the same for every customer, or a column of the table, one value per customer (Bahnsen,
Aouada and Ottersten 2015, "A novel cost-sensitive framework for customer churn predictive
modeling").

*Savings* compare the model's decisions with the better of the two decisions that need no
model, flagging everyone or no one: (cost without a model - cost with it) / cost without it.
1 is every customer decided at no cost, 0 is no better than the blanket decision, below 0 worse.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

# Outcome -> the environment variable that sets its cost.
OUTCOMES: dict[str, str] = {
    "false_positive": "CHURN_COST_FP",
    "false_negative": "CHURN_COST_FN",
    "true_positive": "CHURN_COST_TP",
    "true_negative": "CHURN_COST_TN",
}


class CostError(ValueError):
    """A cost setting or a cost column the platform cannot use."""


def parse_cost(variable: str, value: str) -> float | str:
    """A cost setting's value: a number of at least 0, or the name of a column.

    Raises:
        CostError: a negative or infinite number, or "nan".

    """
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        return text
    if not math.isfinite(number) or number < 0:
        raise CostError(f"{variable}={value!r}: a cost is a number of at least 0 or a column name")
    return number


@dataclass(frozen=True)
class CostMatrix:
    """Each customer's four costs (arrays of the same length)."""

    false_positive: np.ndarray
    false_negative: np.ndarray
    true_positive: np.ndarray
    true_negative: np.ndarray

    def __len__(self) -> int:
        return len(self.false_positive)

    def subset(self, rows: np.ndarray) -> CostMatrix:
        """The costs of `rows` (a boolean mask or indices)."""
        return CostMatrix(
            self.false_positive[rows],
            self.false_negative[rows],
            self.true_positive[rows],
            self.true_negative[rows],
        )

    def per_customer(self, labels: np.ndarray, flagged: np.ndarray) -> np.ndarray:
        """What deciding `flagged` costs for each customer, given what happened (`labels`)."""
        churned = np.asarray(labels).astype(bool)
        flagged = np.asarray(flagged).astype(bool)
        return np.where(
            churned,
            np.where(flagged, self.true_positive, self.false_negative),
            np.where(flagged, self.false_positive, self.true_negative),
        )

    def baseline(self, labels: np.ndarray) -> tuple[float, float]:
        """Total cost of flagging no one, and of flagging everyone."""
        churned = np.asarray(labels).astype(bool)
        nobody = float(np.where(churned, self.false_negative, self.true_negative).sum())
        everybody = float(np.where(churned, self.true_positive, self.false_positive).sum())
        return nobody, everybody


@dataclass(frozen=True)
class DecisionCosts:
    """The four costs as configured: each a number or a column name (snake_case)."""

    false_positive: float | str
    false_negative: float | str
    true_positive: float | str
    true_negative: float | str

    @classmethod
    def from_values(cls, values: Mapping[str, float | str | None]) -> DecisionCosts | None:
        """The costs given per outcome (`OUTCOMES`' keys), or None when none is given.

        A cost left out is 0 once any is given: with only a false positive's and a false
        negative's cost, the other outcomes cost nothing.
        """
        if all(values.get(outcome) in (None, "") for outcome in OUTCOMES):
            return None
        given = {outcome: values.get(outcome) for outcome in OUTCOMES}
        return cls(**{o: 0.0 if v in (None, "") else v for o, v in given.items()})

    def items(self) -> list[tuple[str, float | str]]:
        """(outcome, cost) in `OUTCOMES`' order."""
        return [(outcome, getattr(self, outcome)) for outcome in OUTCOMES]

    @property
    def columns(self) -> list[str]:
        """The cost columns, in `OUTCOMES`' order, each once."""
        return list(dict.fromkeys(v for _, v in self.items() if isinstance(v, str)))

    def renamed(self, rename: Mapping[str, str]) -> DecisionCosts:
        """The costs with column names mapped through `rename` (e.g. to snake_case)."""
        return DecisionCosts(
            **{o: rename.get(v, v) if isinstance(v, str) else v for o, v in self.items()}
        )

    def check_columns(self, frame: pd.DataFrame) -> None:
        """The cost columns are in `frame`, numbers, never missing and never negative.

        Raises:
            CostError: naming the setting and the column.

        """
        for outcome, value in self.items():
            if not isinstance(value, str):
                continue
            variable = OUTCOMES[outcome]
            if value not in frame.columns:
                raise CostError(f"{variable} names column {value!r}, which the table lacks")
            column = frame[value]
            if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
                raise CostError(f"cost column {value!r} ({variable}) does not hold numbers")
            missing = int(column.isna().sum())
            if missing:
                raise CostError(
                    f"cost column {value!r} ({variable}) has {missing} missing value(s)"
                )
            negative = int((column < 0).sum())
            if negative:
                raise CostError(
                    f"cost column {value!r} ({variable}) has {negative} negative value(s)"
                )

    def matrix(self, frame: pd.DataFrame) -> CostMatrix:
        """Each row's costs; a cost column's missing values stay NaN (see `known`)."""
        n = len(frame)

        def values(cost: float | str) -> np.ndarray:
            if isinstance(cost, str):
                return pd.to_numeric(frame[cost], errors="coerce").to_numpy(dtype=float)
            return np.full(n, float(cost))

        return CostMatrix(*(values(cost) for _, cost in self.items()))

    def describe(self) -> str:
        """One line for logs and cards: `false positive 74, false negative column c_fn, ...`."""
        return ", ".join(
            f"{outcome.replace('_', ' ')} "
            + (f"column `{cost}`" if isinstance(cost, str) else f"{cost:g}")
            for outcome, cost in self.items()
        )


def known(matrix: CostMatrix) -> np.ndarray:
    """Rows whose four costs are all known (rows added by feedback may lack cost columns)."""
    return np.asarray(
        np.isfinite(matrix.false_positive)
        & np.isfinite(matrix.false_negative)
        & np.isfinite(matrix.true_positive)
        & np.isfinite(matrix.true_negative)
    )


def savings(labels: np.ndarray, flagged: np.ndarray, matrix: CostMatrix) -> float:
    """(cost without a model - cost with it) / cost without it.

    Without a model: the cheaper of flagging no one and flagging everyone. 0 when deciding costs
    nothing either way.
    """
    baseline = min(matrix.baseline(labels))
    cost = float(matrix.per_customer(labels, flagged).sum())
    if baseline <= 0:
        return 0.0
    return (baseline - cost) / baseline


@dataclass(frozen=True)
class CostCurve:
    """Total cost and savings of flagging every customer at or above each threshold."""

    thresholds: np.ndarray
    costs: np.ndarray
    savings: np.ndarray
    cost_nobody: float
    cost_everybody: float

    def rows(self, every: int = 1) -> list[dict[str, float]]:
        """JSON-ready points, every `every`-th."""
        return [
            {"threshold": float(t), "cost": float(c), "savings": float(s)}
            for t, c, s in zip(
                self.thresholds[::every], self.costs[::every], self.savings[::every], strict=True
            )
        ]


def cost_curve(
    labels: np.ndarray, probabilities: np.ndarray, matrix: CostMatrix, points: int = 101
) -> CostCurve:
    """The cost of each threshold on an even grid of [0, 1]."""
    thresholds = np.linspace(0.0, 1.0, points)
    probabilities = np.asarray(probabilities, dtype=float)
    nobody, everybody = matrix.baseline(labels)
    baseline = min(nobody, everybody)
    costs = np.array(
        [float(matrix.per_customer(labels, probabilities >= t).sum()) for t in thresholds]
    )
    savings_ = (baseline - costs) / baseline if baseline > 0 else np.zeros_like(costs)
    return CostCurve(thresholds, costs, savings_, nobody, everybody)


def cost_threshold(labels: np.ndarray, probabilities: np.ndarray, matrix: CostMatrix) -> float:
    """The threshold whose decisions cost least on these customers (out-of-fold predictions).

    Flagging the customers at or above a threshold: sorted by probability, the cost of flagging
    the first k is the cost of flagging no one plus the sum of each flagged customer's change
    (true positive instead of false negative for a churner, false positive instead of true
    negative otherwise); only cuts between distinct probabilities are thresholds. Exact, in one
    sort.
    """
    labels = np.asarray(labels).astype(bool)
    probabilities = np.asarray(probabilities, dtype=float)
    order = np.argsort(-probabilities, kind="stable")
    ranked = probabilities[order]
    change = np.where(
        labels,
        matrix.true_positive - matrix.false_negative,
        matrix.false_positive - matrix.true_negative,
    )[order]
    cumulative = np.concatenate([[0.0], np.cumsum(change)])
    # A cut after position k (k flagged) is possible where the next probability differs.
    possible = np.ones(len(cumulative), dtype=bool)
    possible[1:-1] = ranked[:-1] != ranked[1:]
    best = int(np.argmin(np.where(possible, cumulative, np.inf)))
    if best == 0:
        # Flag no one: a threshold just above the highest probability.
        return float(min(1.0, np.nextafter(ranked[0], np.inf))) if len(ranked) else 1.0
    return float(ranked[best - 1])


def expected_savings(probabilities: np.ndarray, flagged: np.ndarray, matrix: CostMatrix) -> float:
    """Savings expected from calibrated probabilities, before any outcome (see `savings`).

    Each customer churns with its probability p: deciding costs p x (the churner's cost) +
    (1 - p) x (the stayer's cost), for the model's decision and for both blanket decisions.
    """
    p = np.asarray(probabilities, dtype=float)
    flagged = np.asarray(flagged).astype(bool)
    flag = p * matrix.true_positive + (1 - p) * matrix.false_positive
    leave = p * matrix.false_negative + (1 - p) * matrix.true_negative
    baseline = min(float(leave.sum()), float(flag.sum()))
    cost = float(np.where(flagged, flag, leave).sum())
    return (baseline - cost) / baseline if baseline > 0 else 0.0
