"""Evaluation figures logged to the model's MLflow run: confusion, curves, reliability, inputs."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    PrecisionRecallDisplay,
    RocCurveDisplay,
)

from churn.metrics import CalibrationBin, calibration_error
from churn.model.artifact import ChurnModel
from churn.value import CostCurve

TOP_FEATURES = 20
# Where the reliability diagram lands in the run (the model card links it).
RELIABILITY_DIAGRAM = "reliability_diagram.png"
COST_CURVE = "cost_curve.png"
EVALUATION_FOLDER = "evaluation"


def feature_importance(model: ChurnModel) -> list[tuple[str, float]]:
    """Model features by importance, highest first.

    Splits per feature for LightGBM (its default importance), impurity decrease for a forest,
    |coefficient| for a linear model.
    """
    names = model.steps[-1].get_feature_names_out()
    estimator = model.estimator
    if hasattr(estimator, "booster_"):
        weights = np.asarray(estimator.booster_.feature_importance("split"), dtype=float)
    elif hasattr(estimator, "feature_importances_"):
        weights = np.asarray(estimator.feature_importances_, dtype=float)
    else:
        weights = np.abs(np.ravel(estimator.coef_))
    order = np.argsort(weights)[::-1]
    return [(str(names[i]), float(weights[i])) for i in order]


def log_evaluation_figures(
    client: Any,
    run_id: str,
    algorithm: str,
    model: ChurnModel,
    labels: np.ndarray,
    probabilities: np.ndarray,
    threshold: float,
    calibration: list[CalibrationBin],
    curve: CostCurve | None = None,
) -> None:
    """Log the evaluation figures as images of run `run_id`.

    `calibration`: the hold-out's reliability bins; `curve`: its cost curve, when costs are set.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    predicted = (probabilities >= threshold).astype(int)
    figures = {}
    figure, axes = plt.subplots(figsize=(4.5, 4))
    ConfusionMatrixDisplay.from_predictions(
        labels, predicted, display_labels=["retained", "churned"], ax=axes, colorbar=False
    )
    axes.set_title(f"Hold-out, threshold {threshold:.3f}")
    figures["confusion_matrix.png"] = figure

    figure, axes = plt.subplots(figsize=(4.5, 4))
    RocCurveDisplay.from_predictions(labels, probabilities, ax=axes, name=algorithm)
    figures["roc_curve.png"] = figure

    figure, axes = plt.subplots(figsize=(4.5, 4))
    PrecisionRecallDisplay.from_predictions(labels, probabilities, ax=axes, name=algorithm)
    figures["precision_recall_curve.png"] = figure

    # The reliability diagram: predicted churn rate against observed, per tenth of probability.
    figure, axes = plt.subplots(figsize=(4.5, 4))
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    axes.plot(
        [b.mean_probability for b in calibration],
        [b.churn_rate for b in calibration],
        marker="o",
        label=f"{algorithm} (ECE {calibration_error(calibration):.3f})",
    )
    axes.set_xlabel("mean churn probability in the bin")
    axes.set_ylabel("observed churn rate")
    axes.set_title("Reliability (hold-out, ten bins)")
    axes.legend(loc="upper left")
    figure.tight_layout()
    figures[RELIABILITY_DIAGRAM] = figure

    if curve is not None:
        # Savings of every threshold against the cheaper of flagging no one and everyone.
        figure, axes = plt.subplots(figsize=(5, 4))
        axes.plot(curve.thresholds, curve.savings, label="savings")
        axes.axhline(0.0, color="grey", linestyle="--", linewidth=1)
        axes.axvline(threshold, color="tab:red", linestyle=":", label=f"threshold {threshold:.3f}")
        axes.set_xlabel("decision threshold")
        axes.set_ylabel("savings (hold-out)")
        axes.set_ylim(max(-1.0, float(np.min(curve.savings)) - 0.05), 1.0)
        axes.set_title("Cost curve: savings against the blanket decision")
        axes.legend(loc="lower left")
        figure.tight_layout()
        figures[COST_CURVE] = figure

    top = feature_importance(model)[:TOP_FEATURES][::-1]
    figure, axes = plt.subplots(figsize=(6, 0.3 * len(top) + 1))
    axes.barh([name for name, _ in top], [weight for _, weight in top])
    axes.set_title(f"Feature importance ({algorithm})")
    figure.tight_layout()
    figures["feature_importance.png"] = figure

    for name, figure in figures.items():
        client.log_figure(run_id, figure, f"{EVALUATION_FOLDER}/{name}")
        plt.close(figure)
