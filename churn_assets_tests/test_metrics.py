import numpy as np
import pytest

from churn.metrics import (
    calibration_bins,
    choose_threshold,
    classification_metrics,
    expected_calibration_error,
    probability_rmse,
)

LABELS = np.array([0, 0, 0, 1, 1, 1, 0, 1])
PROBABILITIES = np.array([0.1, 0.3, 0.6, 0.4, 0.8, 0.9, 0.2, 0.7])


def test_probability_rmse() -> None:
    assert probability_rmse(np.array([0, 1]), np.array([0.1, 0.7])) == pytest.approx(
        np.sqrt((0.01 + 0.09) / 2)
    )


def test_classification_metrics_at_a_threshold() -> None:
    metrics = classification_metrics(LABELS, PROBABILITIES, threshold=0.5)
    # Predicted churn: 0.6 (wrong), 0.8, 0.9, 0.7 (right); missed: 0.4.
    assert metrics["precision"] == pytest.approx(3 / 4)
    assert metrics["recall"] == pytest.approx(3 / 4)
    assert metrics["f1"] == pytest.approx(3 / 4)
    assert metrics["accuracy"] == pytest.approx(6 / 8)
    assert metrics["roc_auc"] == pytest.approx(15 / 16)


def test_calibration_is_the_brier_score_and_the_expected_calibration_error() -> None:
    from sklearn.metrics import brier_score_loss

    metrics = classification_metrics(LABELS, PROBABILITIES, threshold=0.5)
    assert metrics["brier"] == pytest.approx(brier_score_loss(LABELS, PROBABILITIES))
    # One customer per occupied bin: each bin's error is |label - probability|.
    assert metrics["ece"] == pytest.approx(np.mean(np.abs(LABELS - PROBABILITIES)))
    bins = calibration_bins(LABELS, PROBABILITIES)
    assert [(b.low, b.customers, b.churn_rate) for b in bins][:2] == [(0.1, 1, 0.0), (0.2, 1, 0.0)]
    assert sum(b.customers for b in bins) == len(LABELS)


def test_calibrated_probabilities_have_a_small_calibration_error() -> None:
    rng = np.random.default_rng(7)
    probabilities = rng.uniform(size=20_000)
    labels = (rng.uniform(size=20_000) < probabilities).astype(int)
    assert expected_calibration_error(labels, probabilities) < 0.02
    # Halved probabilities predict half the churn there is: the error is about a quarter.
    assert expected_calibration_error(labels, probabilities / 2) == pytest.approx(0.25, abs=0.02)
    # A probability of exactly 1 lands in the last bin, not past it.
    assert calibration_bins(np.array([1]), np.array([1.0]))[0].low == pytest.approx(0.9)


def test_the_threshold_maximises_f1_while_keeping_the_recall_target() -> None:
    # Best F1 overall is at 0.4 (recall 1, precision 4/5) for any recall target up to 1.
    assert choose_threshold(LABELS, PROBABILITIES, min_recall=0.5) == pytest.approx(0.4)
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 1])
    probabilities = np.array([0.9, 0.85, 0.8, 0.75, 0.3, 0.25, 0.2, 0.15, 0.1, 0.05])
    # Without a target, 0.75 wins (F1 8/9, recall 0.8); asking for recall 1 forces 0.05.
    assert choose_threshold(labels, probabilities, min_recall=0.0) == pytest.approx(0.75)
    assert choose_threshold(labels, probabilities, min_recall=1.0) == pytest.approx(0.05)


def test_the_recall_margin_is_what_chance_calls_for() -> None:
    from churn.metrics import recall_margin

    # Telco-sized samples: sqrt(0.16 * (1/1500 + 1/370)) = 0.0232, times z(0.95) = 1.645.
    assert recall_margin(0.8, 1_500, 370, 0.95) == pytest.approx(0.0382, abs=5e-4)
    # Fewer churners, a wider margin; a lower confidence, a narrower one.
    assert recall_margin(0.8, 385, 96, 0.95) > recall_margin(0.8, 1_500, 370, 0.95)
    assert recall_margin(0.8, 385, 96, 0.5) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="recall confidence"):
        recall_margin(0.8, 100, 100, 1.0)
