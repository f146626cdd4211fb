"""The model as MLflow stores and serves it: the fitted pipeline plus its decision threshold.

Imported only where a model is logged or loaded, because importing MLflow costs seconds.
The pyfunc flavour pickles this object with cloudpickle, deliberately: the model is our own
pipeline (feature engineering, encoding, estimator) plus the threshold chosen for it, which no
single library flavour can hold. Loading it needs this package and the library versions of the
model's `requirements.txt`; skops, MLflow 3's default for scikit-learn, would refuse LightGBM's
and our own types.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModel
from sklearn.pipeline import Pipeline

from churn.schema import ModelSchema

PROBABILITY = "churn_probability"
LABEL = "churn_label"


class ChurnModel(PythonModel):
    """Raw customer records in; churn probability and label (at the shipped threshold) out.

    Args:
        pipeline: the fitted feature pipeline and estimator.
        threshold: probability at or above which a customer is labelled as churning.
        id_column: the customer key, echoed in the output when the input has it.
        schema: the raw input columns the pipeline was fitted on.

    """

    def __init__(
        self,
        pipeline: Pipeline,
        threshold: float,
        id_column: str | None,
        schema: ModelSchema | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.threshold = float(threshold)
        self.id_column = id_column
        self.schema = schema

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Score raw records (a DataFrame with the columns of `raw_customers`)."""
        records = pd.DataFrame(model_input)
        probability = self.pipeline.predict_proba(records)[:, 1]
        scored = pd.DataFrame(
            {PROBABILITY: probability, LABEL: (probability >= self.threshold).astype(np.int64)},
            index=records.index,
        )
        if self.id_column and self.id_column in records:
            scored.insert(0, self.id_column, records[self.id_column].astype(str))
        return scored.reset_index(drop=True)
