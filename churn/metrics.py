"""Classification metrics of churn probabilities, and the choice of the decision threshold."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

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


class HoldoutMetric(StrEnum):
    """A hold-out metric a challenger is compared on (`classification_metrics`' keys)."""

    accuracy = "accuracy"
    f1 = "f1"
    precision = "precision"
    recall = "recall"
    roc_auc = "roc_auc"
    pr_auc = "pr_auc"
    probability_rmse = "probability_rmse"  # lower is better
    savings = "savings"  # only with decision costs (churn.value)


def probability_rmse(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Root mean squared error of the churn probabilities against the 0/1 outcomes."""
    errors = np.asarray(probabilities, dtype=float) - np.asarray(labels, dtype=float)
    return float(np.sqrt(np.mean(errors**2)))


CALIBRATION_BINS = 10


@dataclass(frozen=True)
class CalibrationBin:
    """Customers whose churn probability fell in [low, high): what was predicted, what happened."""

    low: float
    high: float
    customers: int
    mean_probability: float
    churn_rate: float


def calibration_bins(
    labels: np.ndarray, probabilities: np.ndarray, bins: int = CALIBRATION_BINS
) -> list[CalibrationBin]:
    """The reliability diagram's points: equal-width bins of [0, 1], empty ones left out."""
    labels = np.asarray(labels, dtype=float)
    probabilities = np.clip(np.asarray(probabilities, dtype=float), 0.0, 1.0)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # The last bin is closed: a probability of exactly 1 belongs to it.
    index = np.minimum((probabilities * bins).astype(int), bins - 1)
    found = []
    for number in range(bins):
        inside = index == number
        if inside.any():
            found.append(
                CalibrationBin(
                    float(edges[number]),
                    float(edges[number + 1]),
                    int(inside.sum()),
                    float(probabilities[inside].mean()),
                    float(labels[inside].mean()),
                )
            )
    return found


def expected_calibration_error(
    labels: np.ndarray, probabilities: np.ndarray, bins: int = CALIBRATION_BINS
) -> float:
    """How far the predicted churn rate is from the observed one, averaged over customers.

    The mean over equal-width bins of |churn rate - mean probability|, each bin weighted by its
    share of the customers: 0 for perfectly calibrated probabilities.
    """
    return calibration_error(calibration_bins(labels, probabilities, bins))


def calibration_error(found: list[CalibrationBin]) -> float:
    """`expected_calibration_error` of bins already made."""
    total = sum(b.customers for b in found)
    return float(sum(b.customers * abs(b.churn_rate - b.mean_probability) for b in found) / total)


def classification_metrics(
    labels: np.ndarray, probabilities: np.ndarray, threshold: float
) -> dict[str, float]:
    """Accuracy, F1, precision, recall at `threshold`; ROC-AUC, PR-AUC, RMSE and calibration.

    Calibration: the Brier score (mean squared error of the probabilities, RMSE squared) and the
    expected calibration error over ten equal-width bins.
    """
    predicted = (np.asarray(probabilities) >= threshold).astype(int)
    rmse = probability_rmse(labels, probabilities)
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "f1": float(f1_score(labels, predicted, zero_division=0)),
        "precision": float(precision_score(labels, predicted, zero_division=0)),
        "recall": float(recall_score(labels, predicted, zero_division=0)),
        "roc_auc": float(roc_auc_score(labels, probabilities)),
        "pr_auc": float(average_precision_score(labels, probabilities)),
        "probability_rmse": rmse,
        "brier": rmse**2,
        "ece": expected_calibration_error(labels, probabilities),
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


def recall_margin(
    gate: float, positives_tuned: int, positives_held_out: int, confidence: float
) -> float:
    """How far above the recall gate out-of-fold recall must be to meet it on the hold-out.

    Out-of-fold recall and hold-out recall are each a share of a sample of churners, so even
    for the same model they differ by chance: around the gate `g`, their difference has a
    standard deviation of sqrt(g (1 - g) (1/n_tuned + 1/n_held_out)). Keeping out-of-fold recall
    `z` of those above the gate makes the hold-out recall meet it with probability `confidence`
    (z its normal quantile). A fixed margin is too small on small tables (a few hundred
    churners: a standard deviation of 0.04 or more) and larger than needed on big ones.
    """
    from scipy.stats import norm

    if not 0.5 <= confidence < 1:
        raise ValueError(f"the recall confidence must be in [0.5, 1), not {confidence}")
    positives_tuned, positives_held_out = max(positives_tuned, 1), max(positives_held_out, 1)
    spread = np.sqrt(gate * (1 - gate) * (1 / positives_tuned + 1 / positives_held_out))
    return float(norm.ppf(confidence) * spread)


HOLDOUT_SCORES = "holdout_scores.json"


def score_histogram(probabilities: Any) -> dict[str, Any]:
    """Counts of probabilities in ten equal bins of [0, 1] (JSON-ready)."""
    counts, edges = np.histogram(np.asarray(probabilities), bins=10, range=(0.0, 1.0))
    return {"edges": [round(float(e), 2) for e in edges], "counts": counts.tolist()}


def estimated_metrics(probabilities: Any, flagged: Any) -> dict[str, float]:
    """Precision, recall and F1 expected from calibrated probabilities, before any outcome.

    Confidence-based performance estimation (as NannyML's CBPE): a customer flagged with churn
    probability p is a true positive with probability p and a false positive otherwise; one not
    flagged is a false negative with probability p. Summed over the predictions, that is the
    expected confusion matrix, and the figures follow from it. Only as good as the calibration
    (the evaluation's Brier score and ECE say how good that is).
    """
    p = np.asarray(probabilities, dtype=float)
    flagged = np.asarray(flagged).astype(bool)
    tp = float(p[flagged].sum())
    fp = float((1 - p[flagged]).sum())
    fn = float(p[~flagged].sum())
    precision = tp / (tp + fp) if tp + fp > 0 else 0.0
    recall = tp / (tp + fn) if tp + fn > 0 else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp > 0 else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}
