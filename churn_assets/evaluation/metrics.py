"""Classification metrics of churn probabilities, and the choice of the decision threshold."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
)


def probability_rmse(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Root mean squared error of the churn probabilities against the 0/1 outcomes."""
    errors = np.asarray(probabilities, dtype=float) - np.asarray(labels, dtype=float)
    return float(np.sqrt(np.mean(errors**2)))


def classification_metrics(
    labels: np.ndarray, probabilities: np.ndarray, threshold: float
) -> dict[str, float]:
    """Accuracy, F1, precision, recall at `threshold`; ROC-AUC, PR-AUC and RMSE of probabilities."""
    predicted = (np.asarray(probabilities) >= threshold).astype(int)
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "f1": float(f1_score(labels, predicted, zero_division=0)),
        "precision": float(precision_score(labels, predicted, zero_division=0)),
        "recall": float(recall_score(labels, predicted, zero_division=0)),
        "roc_auc": float(roc_auc_score(labels, probabilities)),
        "pr_auc": float(average_precision_score(labels, probabilities)),
        "probability_rmse": probability_rmse(labels, probabilities),
    }


def choose_threshold(labels: np.ndarray, probabilities: np.ndarray, min_recall: float) -> float:
    """The threshold of best F1 among those whose recall is at least `min_recall`.

    Computed on out-of-fold probabilities of the training split, never on the hold-out split.
    A threshold low enough labels everyone as churning (recall 1), so one always qualifies.
    """
    precision, recall, thresholds = precision_recall_curve(labels, probabilities)
    # precision_recall_curve's last point (recall 0, no threshold) has no threshold: drop it.
    precision, recall = precision[:-1], recall[:-1]
    denominator = precision + recall
    f1 = np.divide(
        2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0
    )
    eligible = recall >= min_recall
    best = int(np.argmax(np.where(eligible, f1, -1.0)))
    return float(thresholds[best])
