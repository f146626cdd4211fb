"""The one scoring path: raw customer records in, churn probabilities (and reasons) out.

The prediction service and nightly batch scoring both score through `Scorer`, built from the
`ChurnModel` a registry version holds (its fitted feature steps, estimator, threshold and input
schema), so a customer gets the same probability, to the last bit, online and in the nightly
list.

This module imports neither Dagster nor BentoML.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from churn.model.calibration import Calibration
from churn.model.explain import Contributions, Explainer, attribution_matrix
from churn.model.schema import ModelSchema

if TYPE_CHECKING:
    from churn.model.artifact import ChurnModel

REASONS = 3


@dataclass(frozen=True)
class Reason:
    """One input pushing a customer's churn score up: `contract=Month-to-month (+0.21)`."""

    feature: str
    value: Any
    contribution: float

    def __str__(self) -> str:
        return f"{self.feature}={format_value(self.value)} ({self.contribution:+.2f})"


def format_value(value: Any) -> str:
    """A raw input value as a person reads it."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "missing"
    if isinstance(value, float | np.floating):
        return f"{float(value):.6g}"
    return str(value)


@dataclass
class Scorer:
    """A fitted model ready to score raw records given column-wise (name -> values).

    Args:
        transforms: the pipeline's transforming steps, in order (raw records to input matrix).
        estimator: the fitted estimator at the end of the pipeline.
        threshold: probability at or above which a customer is labelled as churning.
        schema: the model's raw input columns.

    """

    transforms: tuple[Any, ...]
    estimator: Any
    threshold: float
    schema: ModelSchema
    calibration: Calibration | None = None
    _explainer: Explainer | None = field(default=None, init=False, repr=False)

    @classmethod
    def of(cls, model: ChurnModel) -> Scorer:
        """The scorer of a model (its feature steps, estimator, threshold and schema)."""
        return cls(
            transforms=model.steps,
            estimator=model.estimator,
            threshold=model.threshold,
            schema=model.schema,
            calibration=model.calibration,
        )

    @property
    def inputs(self) -> list[str]:
        """The raw columns the first step reads (the schema's columns)."""
        return raw_inputs(self.transforms)

    def use_threads(self, threads: int) -> None:
        """Let the estimator use `threads` threads (the service keeps 1 per request)."""
        if "n_jobs" in self.estimator.get_params():
            self.estimator.set_params(n_jobs=threads)
        if self._explainer is not None:
            self._explainer.threads = threads

    def encode(self, columns: Mapping[str, Sequence[Any] | np.ndarray | pd.Series]) -> Any:
        """The model's input matrix of records given column-wise."""
        import sklearn

        features: Any = pd.DataFrame({name: columns[name] for name in self.inputs})
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            for step in self.transforms:
                features = step.transform(features)
        return features

    def probabilities(self, columns: Mapping[str, Any]) -> np.ndarray:
        """Churn probabilities of records given column-wise.

        What `pipeline.predict_proba` computes, step by step: the inputs were validated against
        the schema, and scikit-learn's own re-checks and `Pipeline` dispatch cost more than the
        model itself on a single record.
        """
        return self.probabilities_of(self.encode(columns))

    def probabilities_of(self, encoded: Any) -> np.ndarray:
        """Churn probabilities of an input matrix from `encode`."""
        import sklearn

        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            probabilities: np.ndarray = self.estimator.predict_proba(encoded)[:, 1]
        if self.calibration is not None:
            return self.calibration.apply(probabilities)
        return probabilities

    @property
    def explainer(self) -> Explainer:
        """The model's explainer, built on first use (its tables take a moment to compute).

        Raises:
            NotExplainable: the model cannot be explained (an unknown estimator or step).

        """
        if self._explainer is None:
            columns = self.inputs
            self._explainer = Explainer(
                self.estimator, attribution_matrix(self.transforms, columns), columns
            )
        return self._explainer

    def contributions(self, columns: Mapping[str, Any]) -> Contributions:
        """Each raw column's contribution to each record's raw score."""
        return self.explainer.contributions(self.encode(columns))

    def reasons(
        self, columns: Mapping[str, Any], contributions: Contributions, count: int = REASONS
    ) -> list[list[Reason]]:
        """Per record, the `count` inputs that push its churn score up most, largest first."""
        positions, values = contributions.top(count)
        names = contributions.columns
        reasons: list[list[Reason]] = []
        raw = {name: columns[name] for name in names}
        for row in range(len(positions)):
            reasons.append(
                [
                    Reason(names[p], _item(raw[names[p]], row), float(values[row, k]))
                    for k, p in enumerate(positions[row])
                    if p >= 0
                ]
            )
        return reasons


def raw_inputs(steps: Sequence[Any]) -> list[str]:
    """The raw columns the first of a model's feature steps reads."""
    first = steps[0] if steps else None
    return [
        *getattr(first, "numeric", ()),
        *getattr(first, "dates", ()),
        *getattr(first, "categorical", ()),
    ]


def _item(values: Any, row: int) -> Any:
    value = values.iloc[row] if isinstance(values, pd.Series) else values[row]
    return value.item() if isinstance(value, np.generic) else value
