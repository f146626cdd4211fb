"""Candidate algorithms and a budgeted random search with cross-validation.

Each trial cross-validates the whole pipeline (features and estimator), so that encoding and
scaling are fitted on each fold's training part only. The budget is a number of trials, a number
of folds and a time limit per algorithm; the best trial's out-of-fold probabilities choose the
decision threshold.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import loguniform, randint, uniform
from sklearn.base import BaseEstimator, clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import ParameterSampler, StratifiedKFold, cross_validate
from sklearn.pipeline import Pipeline

from churn.engine import Engine
from churn.metrics import choose_threshold, classification_metrics
from churn.model.calibration import Calibration, choose_calibration
from churn.model.features import CHUNK_ROWS, fit_in_chunks, predict_in_chunks
from churn.value import DecisionCosts, cost_threshold, known, savings


class SelectionMetric(StrEnum):
    """A cross-validated score that picks the best trial and candidate (`SCORING`'s keys)."""

    roc_auc = "roc_auc"
    average_precision = "average_precision"
    neg_log_loss = "neg_log_loss"
    neg_brier_score = "neg_brier_score"


# Cross-validated scores of every trial; the selection metric is one of them.
SCORING = {
    "roc_auc": "roc_auc",
    "average_precision": "average_precision",
    "neg_log_loss": "neg_log_loss",
    "neg_brier_score": "neg_brier_score",
}


def _lightgbm(seed: int) -> BaseEstimator:
    from lightgbm import LGBMClassifier

    # One thread per model: cross-validation already runs the folds in parallel.
    return LGBMClassifier(random_state=seed, n_jobs=1, verbose=-1, subsample_freq=1)


@dataclass(frozen=True)
class Algorithm:
    """An estimator and the distributions its hyperparameters are drawn from."""

    make: Callable[[int], BaseEstimator]
    space: Mapping[str, Any]


ALGORITHMS: dict[str, Algorithm] = {
    "logistic_regression": Algorithm(
        make=lambda seed: LogisticRegression(max_iter=5_000, random_state=seed),
        # No class weighting: it inflates churn probabilities (the RMSE gate judges them), and
        # recall is the decision threshold's job.
        space={"C": loguniform(1e-2, 1e2)},
    ),
    "random_forest": Algorithm(
        make=lambda seed: RandomForestClassifier(random_state=seed, n_jobs=1),
        space={
            "n_estimators": randint(100, 300),
            "max_depth": [4, 6, 8, 12, None],
            "min_samples_leaf": randint(1, 50),
            "max_features": ["sqrt", 0.3, 0.5],
            "max_samples": [0.3, 0.6, None],
        },
    ),
    "lightgbm": Algorithm(
        make=_lightgbm,
        space={
            "n_estimators": randint(100, 600),
            "learning_rate": loguniform(0.01, 0.2),
            "num_leaves": randint(4, 48),
            "min_child_samples": randint(10, 100),
            "subsample": uniform(0.6, 0.4),
            "colsample_bytree": uniform(0.5, 0.5),
            "reg_lambda": loguniform(1e-3, 10.0),
        },
    ),
}


@dataclass(frozen=True)
class SearchBudget:
    """How much tuning an algorithm gets."""

    iterations: int
    folds: int
    time_limit_seconds: float
    max_tuning_rows: int
    n_jobs: int
    seed: int


@dataclass
class Trial:
    """One set of hyperparameters and its cross-validated scores (means over the folds)."""

    params: dict[str, Any]
    scores: dict[str, float]
    seconds: float


@dataclass
class SearchResult:
    """The outcome of tuning one algorithm."""

    algorithm: str
    best: Trial
    trials: list[Trial]
    threshold: float
    cv_metrics: dict[str, float]
    tuning_rows: int
    seconds: float
    pipeline: Pipeline = field(repr=False)
    # How many training rows `pipeline` was fitted on, and where (`Engine.describe`).
    fit_rows: int = 0
    fit_engine: str = "local"
    # The tuning rows' labels and the best trial's out-of-fold probabilities.
    out_of_fold: tuple[np.ndarray, np.ndarray] = field(
        default=(np.empty(0), np.empty(0)), repr=False
    )
    # The map the model applies to its estimator's probabilities (None: they are calibrated
    # enough as they are).
    calibration: Calibration | None = None

    def probabilities(self, frame: pd.DataFrame) -> np.ndarray:
        """Churn probabilities of `frame` as the shipped model gives them (calibrated)."""
        raw = predict_in_chunks(self.pipeline, frame)
        return raw if self.calibration is None else self.calibration.apply(raw)


def candidate_pipeline(features: Pipeline, estimator: BaseEstimator) -> Pipeline:
    """An unfitted copy of the feature pipeline followed by `estimator`."""
    return Pipeline([("features", clone(features)), ("model", estimator)])


def tune(
    algorithm: str,
    features: Pipeline,
    train: pd.DataFrame,
    labels: pd.Series,
    budget: SearchBudget,
    selection_metric: str,
    min_recall: float,
    costs: DecisionCosts | None = None,
    refit_all: bool = True,
) -> SearchResult:
    """Search `algorithm`'s hyperparameters, then refit the best on the whole training split.

    With `refit_all` false the best is refitted on the tuning sample only (the whole split when
    it is no larger than `budget.max_tuning_rows`): candidates that will not be selected need not
    pay for a fit on millions of rows; `refit` fits the selected one on all of them.

    The decision threshold is chosen on the best trial's out-of-fold probabilities: the cheapest
    decisions when `costs` are given (customers whose costs are known), else the best F1 among
    thresholds whose recall is at least `min_recall`.

    Raises:
        ValueError: an unknown algorithm or selection metric.

    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; known: {', '.join(ALGORITHMS)}")
    if selection_metric not in SCORING:
        raise ValueError(
            f"unknown selection metric {selection_metric!r}; known: {', '.join(SCORING)}"
        )
    started = time.perf_counter()
    spec = ALGORITHMS[algorithm]
    tuning, tuning_labels = _tuning_sample(train, labels, budget.max_tuning_rows, budget.seed)
    folds = StratifiedKFold(budget.folds, shuffle=True, random_state=budget.seed)
    sampler = ParameterSampler(spec.space, n_iter=budget.iterations, random_state=budget.seed)

    trials: list[Trial] = []
    best: Trial | None = None
    best_out_of_fold: np.ndarray | None = None
    for params in sampler:
        if trials and time.perf_counter() - started > budget.time_limit_seconds:
            break
        trial_started = time.perf_counter()
        pipeline = candidate_pipeline(features, spec.make(budget.seed).set_params(**params))
        result = cross_validate(
            pipeline,
            tuning,
            tuning_labels,
            cv=folds,
            scoring=SCORING,
            n_jobs=budget.n_jobs,
            return_estimator=True,
            return_indices=True,
            error_score="raise",
        )
        trial = Trial(
            params=_plain(params),
            scores={name: float(np.mean(result[f"test_{name}"])) for name in SCORING},
            seconds=time.perf_counter() - trial_started,
        )
        if best is None or trial.scores[selection_metric] > best.scores[selection_metric]:
            best, best_out_of_fold = trial, _out_of_fold(result, tuning)
        trials.append(trial)

    assert best is not None and best_out_of_fold is not None
    observed = tuning_labels.to_numpy()
    # Calibrated where a map fitted on the out-of-fold predictions makes them truer; the
    # threshold is then chosen on the calibrated (cross-fitted) ones, as the model will give them.
    calibration = choose_calibration(observed, best_out_of_fold, seed=budget.seed)
    best_out_of_fold = calibration.probabilities
    if costs is None:
        threshold = choose_threshold(observed, best_out_of_fold, min_recall)
        cv_metrics = classification_metrics(observed, best_out_of_fold, threshold)
    else:
        matrix = costs.matrix(tuning)
        priced = known(matrix)
        if not priced.any():
            raise ValueError("no training customer has all four decision costs")
        matrix = matrix.subset(priced)
        threshold = cost_threshold(observed[priced], best_out_of_fold[priced], matrix)
        cv_metrics = classification_metrics(observed, best_out_of_fold, threshold)
        cv_metrics["savings"] = savings(
            observed[priced], best_out_of_fold[priced] >= threshold, matrix
        )
    cv_metrics.update({f"cv_{name}": score for name, score in best.scores.items()})
    cv_metrics["brier_uncalibrated"] = calibration.brier_raw
    cv_metrics.update({f"brier_{method}": score for method, score in calibration.brier.items()})
    fit, fit_labels = (train, labels) if refit_all else (tuning, tuning_labels)
    pipeline = _fitted(algorithm, best.params, features, fit, fit_labels, budget)
    return SearchResult(
        algorithm=algorithm,
        best=best,
        trials=trials,
        threshold=threshold,
        cv_metrics=cv_metrics,
        tuning_rows=len(tuning),
        seconds=time.perf_counter() - started,
        pipeline=pipeline,
        fit_rows=len(fit),
        out_of_fold=(observed, best_out_of_fold),
        calibration=calibration.calibration,
    )


def refit(
    result: SearchResult,
    features: Pipeline,
    train: pd.DataFrame,
    labels: pd.Series,
    budget: SearchBudget,
    engine: Engine | None = None,
) -> SearchResult:
    """`result` with its best hyperparameters fitted on the whole training split.

    The threshold and the calibration map stay those chosen on the out-of-fold predictions of
    the tuning sample, as `tune` does when it refits on all rows itself. With a distributed
    `engine`, LightGBM trains data-parallel on the cluster's workers (`Cluster.fit_lightgbm`)
    and another algorithm fits on one of them; either way the result is the same kind of
    fitted pipeline as a local fit.

    Raises:
        ClusterError: the cluster failed the fit.

    """
    started = time.perf_counter()
    if engine is None or not engine.distributed:
        pipeline = _fitted(result.algorithm, result.best.params, features, train, labels, budget)
    else:
        estimator = ALGORITHMS[result.algorithm].make(budget.seed).set_params(**result.best.params)
        unfitted = candidate_pipeline(features, estimator)
        with engine.session(f"the refit of {result.algorithm}") as cluster:
            if result.algorithm == "lightgbm":
                pipeline = cluster.fit_lightgbm(unfitted, train, labels, CHUNK_ROWS)
            else:
                pipeline = cluster.run(fit_in_chunks, unfitted, train, labels)
    return dataclasses.replace(
        result,
        pipeline=pipeline,
        fit_rows=len(train),
        fit_engine=engine.describe() if engine is not None else "local",
        seconds=result.seconds + time.perf_counter() - started,
    )


def _fitted(
    algorithm: str,
    params: Mapping[str, Any],
    features: Pipeline,
    train: pd.DataFrame,
    labels: pd.Series,
    budget: SearchBudget,
) -> Pipeline:
    """The feature pipeline and `algorithm` with `params`, fitted on `train`."""
    estimator = ALGORITHMS[algorithm].make(budget.seed).set_params(**params)
    if "n_jobs" in estimator.get_params():
        # The fit runs alone: give it the cores the folds shared during the search.
        estimator.set_params(n_jobs=budget.n_jobs)
    return fit_in_chunks(candidate_pipeline(features, estimator), train, labels)


def _tuning_sample(
    train: pd.DataFrame, labels: pd.Series, max_rows: int, seed: int
) -> tuple[pd.DataFrame, pd.Series]:
    """A stratified sample of at most `max_rows` rows: tuning on millions buys little."""
    if len(train) <= max_rows:
        return train, labels
    from sklearn.model_selection import train_test_split

    sample, _, sample_labels, _ = train_test_split(
        train, labels, train_size=max_rows, stratify=labels, random_state=seed
    )
    return sample, sample_labels


def _out_of_fold(result: Mapping[str, Any], frame: pd.DataFrame) -> np.ndarray:
    """Each row's churn probability from the fold model that did not see it."""
    probabilities = np.empty(len(frame))
    for estimator, indices in zip(result["estimator"], result["indices"]["test"], strict=True):
        probabilities[indices] = estimator.predict_proba(frame.iloc[indices])[:, 1]
    return probabilities


def _plain(params: Mapping[str, Any]) -> dict[str, Any]:
    """Hyperparameters as plain Python values (for MLflow and JSON)."""
    return {
        name: value.item() if isinstance(value, np.generic) else value
        for name, value in params.items()
    }
