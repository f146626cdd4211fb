"""Decisions a churn team can trust: costs, savings, intervals, paired comparisons, estimates.

Pure functions on tiny frames with exact expected values, and the bad-input paths of the cost
settings (refused before the run, naming the setting) and cost columns (refused at ingestion).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from churn.errors import DatasetError
from churn.metrics import estimated_metrics
from churn.settings import Settings, SettingsError
from churn.uncertainty import (
    metric_intervals,
    paired_differences,
    quantile_interval,
    ranking_difference,
    statistics,
)
from churn.value import (
    CostError,
    CostMatrix,
    DecisionCosts,
    cost_curve,
    cost_threshold,
    expected_savings,
    known,
    parse_cost,
    savings,
)
from churn_assets.ingestion.assets import ingest_customers
from churn_assets.resources import DatasetResource, PlatformHome

LABELS = np.array([1, 0, 1, 0, 0])
PROBABILITIES = np.array([0.9, 0.8, 0.4, 0.3, 0.1])


def matrix(fp: float, fn: float, tp: float, tn: float, n: int = 5) -> CostMatrix:
    return CostMatrix(*(np.full(n, float(cost)) for cost in (fp, fn, tp, tn)))


def test_savings_against_the_cheaper_blanket_decision() -> None:
    costs = matrix(fp=10, fn=100, tp=20, tn=0)
    # No one flagged: 2 churners missed = 200. Everyone: 2 x 20 + 3 x 10 = 70 (the baseline).
    assert costs.baseline(LABELS) == (200.0, 70.0)
    # Flag the top two: one true positive (20), one false positive (10), one churner missed (100).
    assert savings(LABELS, PROBABILITIES >= 0.8, costs) == pytest.approx((70 - 130) / 70)
    # Flag the top three: both churners caught (40) and one false positive (10).
    assert savings(LABELS, PROBABILITIES >= 0.4, costs) == pytest.approx((70 - 50) / 70)
    assert savings(LABELS, PROBABILITIES >= 0.0, costs) == 0.0  # everyone: the baseline itself


def test_the_cost_threshold_is_the_cheapest_cut_by_brute_force() -> None:
    rng = np.random.default_rng(3)
    for _ in range(30):
        n = 40
        labels = (rng.random(n) < 0.3).astype(int)
        # Ties included: a threshold can only cut between distinct probabilities.
        probabilities = np.round(rng.random(n), 1)
        costs = CostMatrix(
            rng.uniform(0, 50, n), rng.uniform(0, 500, n), rng.uniform(0, 80, n), np.zeros(n)
        )
        chosen = cost_threshold(labels, probabilities, costs)
        candidates = [*np.unique(probabilities), 1.01]
        cheapest = min(costs.per_customer(labels, probabilities >= t).sum() for t in candidates)
        assert costs.per_customer(labels, probabilities >= chosen).sum() == pytest.approx(cheapest)


def test_flagging_no_one_is_a_threshold_above_every_probability() -> None:
    # Offers cost more than any churner: the cheapest decision is to contact no one.
    chosen = cost_threshold(LABELS, PROBABILITIES, matrix(fp=500, fn=1, tp=500, tn=0))
    assert chosen > PROBABILITIES.max()


def test_the_cost_curve_runs_from_everyone_to_no_one() -> None:
    curve = cost_curve(LABELS, PROBABILITIES, matrix(fp=10, fn=100, tp=20, tn=0), points=11)
    assert curve.costs[0] == curve.cost_everybody == 70.0
    assert curve.costs[-1] == curve.cost_nobody == 200.0
    assert curve.savings[4] == pytest.approx((70 - 50) / 70)  # threshold 0.4


def test_expected_savings_and_estimated_metrics_from_calibrated_probabilities() -> None:
    rng = np.random.default_rng(5)
    probabilities = rng.beta(1, 4, 200_000)
    outcomes = (rng.random(len(probabilities)) < probabilities).astype(int)  # calibrated
    flagged = probabilities >= 0.3
    costs = matrix(fp=10, fn=100, tp=20, tn=0, n=len(probabilities))
    estimated = estimated_metrics(probabilities, flagged)
    tp = int((outcomes & flagged).sum())
    realised_f1 = 2 * tp / (outcomes.sum() + flagged.sum())
    assert estimated["f1"] == pytest.approx(realised_f1, abs=0.005)
    assert expected_savings(probabilities, flagged, costs) == pytest.approx(
        savings(outcomes, flagged, costs), abs=0.01
    )


@pytest.mark.parametrize(
    ("value", "parsed"),
    [("74", 74.0), (" 0 ", 0.0), ("1e3", 1000.0), ("C_FP", "C_FP"), ("offer cost", "offer cost")],
)
def test_a_cost_is_a_number_or_a_column(value: str, parsed: float | str) -> None:
    assert parse_cost("CHURN_COST_FP", value) == parsed


@pytest.mark.parametrize("value", ["-5", "nan", "inf", "-0.01"])
def test_a_negative_or_infinite_cost_is_refused_naming_the_setting(value: str) -> None:
    with pytest.raises(CostError, match="CHURN_COST_FN"):
        parse_cost("CHURN_COST_FN", value)
    with pytest.raises(SettingsError, match=rf"CHURN_COST_FN='{value}': .*number of at least 0"):
        Settings.from_environ({"CHURN_COST_FN": value})


def test_costs_left_out_are_zero_once_one_is_given() -> None:
    settings = Settings.from_environ({"CHURN_COST_FP": "74", "CHURN_COST_FN": "C_FN"})
    assert settings.dataset.costs == DecisionCosts(74.0, "C_FN", 0.0, 0.0)
    assert Settings.from_environ({}).dataset.costs is None


@pytest.fixture
def table(tmp_path: Path) -> Path:
    frame = pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(40)],
            "tenure": np.arange(40),
            "plan": ["a", "b"] * 20,
            "Offer Cost": np.linspace(5, 50, 40),
            "Churn": ["Yes", "No", "No", "No"] * 10,
        }
    )
    path = tmp_path / "customers.csv"
    frame.to_csv(path, index=False)
    return path


def test_cost_columns_are_never_features(table: Path, tmp_path: Path) -> None:
    dataset = DatasetResource(source=str(table), cost_fp="Offer Cost", cost_fn="300")
    customers, _ = ingest_customers(dataset, PlatformHome(path=str(tmp_path / "home")))
    assert customers.costs == DecisionCosts("offer_cost", 300.0, 0.0, 0.0)
    assert "offer_cost" in customers.excluded and "offer_cost" not in customers.inputs
    costs = customers.costs.matrix(customers.frame)
    assert known(costs).all() and costs.false_positive[0] == 5.0


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ({"cost_fp": "Retention Budget"}, "CHURN_COST_FP names column 'retention_budget'"),
        ({"cost_tn": "-1"}, "CHURN_COST_TN='-1': a cost is a number of at least 0"),
        ({"cost_fp": "plan"}, "cost column 'plan' (CHURN_COST_FP) does not hold numbers"),
    ],
)
def test_a_bad_cost_stops_ingestion_naming_it(
    table: Path, tmp_path: Path, cell: dict[str, Any], expected: str
) -> None:
    dataset = DatasetResource(source=str(table), **cell)
    with pytest.raises(DatasetError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        ingest_customers(dataset, PlatformHome(path=str(tmp_path / "home")))


def test_a_cost_column_with_missing_or_negative_values_is_refused(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"tenure": range(8), "cost": [1.0, None, 3, 4, 5, 6, 7, 8], "Churn": ["Yes", "No"] * 4}
    )
    path = tmp_path / "holes.csv"
    frame.to_csv(path, index=False)
    home = PlatformHome(path=str(tmp_path / "home"))
    with pytest.raises(DatasetError, match=r"'cost' \(CHURN_COST_FN\) has 1 missing value"):
        ingest_customers(DatasetResource(source=str(path), cost_fn="cost"), home)
    frame.assign(cost=[1.0, -2, 3, 4, 5, 6, 7, 8]).to_csv(path, index=False)
    with pytest.raises(DatasetError, match=r"'cost' \(CHURN_COST_FN\) has 1 negative value"):
        ingest_customers(DatasetResource(source=str(path), cost_fn="cost"), home)


def test_intervals_are_those_of_the_plain_bootstrap_on_small_hold_outs() -> None:
    rng = np.random.default_rng(11)
    labels = (rng.random(800) < 0.25).astype(int)
    probabilities = np.clip(0.25 + 0.4 * labels + rng.normal(0, 0.2, 800), 0, 1)
    intervals = metric_intervals(statistics(labels, probabilities, 0.5))
    f1 = intervals["f1"]
    assert f1.low < f1.estimate < f1.high
    # The plain row bootstrap, by hand.
    draws = []
    for _ in range(1_000):
        rows = rng.integers(0, 800, 800)
        flagged, churned = probabilities[rows] >= 0.5, labels[rows] == 1
        draws.append(2 * (flagged & churned).sum() / (flagged.sum() + churned.sum()))
    low, high = np.quantile(draws, [0.05, 0.95])
    assert f1.low == pytest.approx(low, abs=0.015) and f1.high == pytest.approx(high, abs=0.015)
    assert intervals["probability_rmse"].estimate == pytest.approx(
        np.sqrt(np.mean((probabilities - labels) ** 2))
    )


def test_intervals_cover_the_truth_about_as_often_as_they_say() -> None:
    rng = np.random.default_rng(12)

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = (rng.random(n) < 0.2).astype(int)
        return labels, np.clip(0.2 + 0.45 * labels + rng.normal(0, 0.2, n), 0, 1)

    truth_labels, truth = sample(1_000_000)
    flagged = truth >= 0.5
    true_recall = (flagged & (truth_labels == 1)).sum() / truth_labels.sum()
    covered = 0
    for _ in range(100):
        labels, probabilities = sample(1_500)
        interval = metric_intervals(statistics(labels, probabilities, 0.5), 0.9, ["recall"])
        covered += interval["recall"].low <= true_recall <= interval["recall"].high
    assert 80 <= covered <= 98  # 90 % stated; 100 tries


def test_paired_differences_of_a_model_with_itself_are_zero() -> None:
    rng = np.random.default_rng(13)
    labels = (rng.random(2_000) < 0.3).astype(int)
    probabilities = rng.random(2_000)
    same = statistics(labels, probabilities, 0.5)
    for difference in paired_differences(same, same.copy()).values():
        assert (difference.estimate, difference.low, difference.high) == (0.0, 0.0, 0.0)


def test_pairing_narrows_the_interval_of_a_small_difference() -> None:
    rng = np.random.default_rng(14)
    labels = (rng.random(3_000) < 0.3).astype(int)
    champion = np.clip(0.3 + 0.3 * labels + rng.normal(0, 0.2, 3_000), 0, 1)
    challenger = np.clip(champion + 0.02 * labels, 0, 1)  # a bit better on churners only
    paired = paired_differences(
        statistics(labels, challenger, 0.5), statistics(labels, champion, 0.5), names=["recall"]
    )["recall"]
    alone = [
        metric_intervals(statistics(labels, p, 0.5), names=["recall"])["recall"]
        for p in (challenger, champion)
    ]
    assert paired.low > 0  # credibly better
    assert paired.high - paired.low < min(i.high - i.low for i in alone) / 2
    auc = ranking_difference(labels, challenger, champion, _roc_auc, replicates=100)
    assert auc.low > 0


def _roc_auc(labels: np.ndarray, probabilities: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, probabilities))


def test_a_latency_percentile_has_an_interval() -> None:
    samples = np.array([float(x) for x in itertools.chain(range(1, 100), [500.0])])
    interval = quantile_interval(samples, 0.99)
    assert interval.low <= interval.estimate <= interval.high
