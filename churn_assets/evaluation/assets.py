"""The `model_evaluation` asset: the selected candidate, as logged in MLflow, on hold-out data."""

import gc
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, Config, MetadataValue, Output, asset
from pydantic import Field
from sklearn.metrics import confusion_matrix

from churn.leakage import single_column_power
from churn.metrics import (
    HOLDOUT_SCORES,
    CalibrationBin,
    calibration_bins,
    score_histogram,
)
from churn.model.schema import ModelSchema
from churn.uncertainty import Interval, metric_intervals, quantile_interval, statistics
from churn.value import CostCurve, DecisionCosts, cost_curve, known
from churn_assets.features.assets import CustomerSplits
from churn_assets.markdown import markdown_table
from churn_assets.resources import MlflowResource, mlflow_step
from churn_assets.training.assets import CandidateModels, holdout_metrics

GROUP = "evaluation"
# Two-sided confidence of the intervals stated beside each gate metric.
INTERVAL_CONFIDENCE = 0.9


class EvaluationConfig(Config):
    """How the selected model is measured."""

    latency_samples: int = Field(
        default=300, description="Single-record predictions timed for the latency percentiles."
    )


@dataclass
class ModelEvaluation:
    """What the selected candidate achieves on customers it never saw."""

    algorithm: str
    run_id: str
    model_uri: str
    threshold: float
    metrics: dict[str, float]
    cv_metrics: dict[str, float]
    params: dict[str, Any]
    latency_p50_ms: float
    latency_p99_ms: float
    confusion: list[list[int]]
    data_version: str
    dataset: str
    source: str
    dagster_run_id: str
    experiment_id: str
    test: pd.DataFrame = field(repr=False)
    target: str = "churn"
    schema: ModelSchema | None = None
    # The strongest inputs alone (ROC-AUC on the training rows), for the leakage gate.
    single_column_auc: dict[str, float] = field(default_factory=dict)
    # The reliability diagram's points on the hold-out split.
    calibration: list[CalibrationBin] = field(default_factory=list)
    # What decisions cost, and the hold-out cost curve (`cost_curve_record`), when costs are set.
    costs: DecisionCosts | None = None
    cost_curve: dict[str, Any] | None = None
    # The calibration map the model applies to its estimator's probabilities, or "none".
    calibration_map: str = "none"
    # The gate metrics' bootstrap intervals (`gate_intervals`).
    intervals: dict[str, Interval] = field(default_factory=dict)
    # The model's hold-out churn probabilities (column `probability`), row for row with `test`:
    # the paired comparison with the production version reads them.
    probabilities: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)


COST_CURVE_JSON = "evaluation/cost_curve.json"


def cost_curve_record(curve: CostCurve) -> dict[str, Any]:
    """The cost curve as stored in the run and the evaluation: baselines and 101 points."""
    return {
        "cost_nobody": curve.cost_nobody,
        "cost_everybody": curve.cost_everybody,
        "points": curve.rows(),
    }


def cost_curve_table(record: dict[str, Any], every: int = 10) -> str:
    """Every `every`-th point of a stored cost curve as a table (for metadata and the card)."""
    return markdown_table(
        ["threshold", "total cost", "savings"],
        [
            (f"{p['threshold']:.2f}", f"{p['cost']:,.0f}", f"{p['savings']:.3f}")
            for p in record["points"][::every]
        ],
    )


def _cost_curve(
    splits: CustomerSplits, labels: np.ndarray, probabilities: np.ndarray
) -> CostCurve | None:
    """The hold-out cost curve over the customers whose costs are known, when costs are set."""
    costs = splits.table.costs
    if costs is None:
        return None
    matrix = costs.matrix(splits.test)
    priced = known(matrix)
    if not priced.any():
        return None
    return cost_curve(labels[priced], probabilities[priced], matrix.subset(priced))


def reliability_table(bins: list[CalibrationBin]) -> str:
    """The reliability diagram as a table: per tenth of probability, predicted against observed."""
    return markdown_table(
        ["probability", "customers", "mean probability", "observed churn rate"],
        [
            (
                f"{b.low:.1f}-{b.high:.1f}",
                b.customers,
                f"{b.mean_probability:.3f}",
                f"{b.churn_rate:.3f}",
            )
            for b in bins
        ],
    )


@asset(group_name=GROUP, kinds={"mlflow"})
@mlflow_step
def model_evaluation(
    context: AssetExecutionContext,
    config: EvaluationConfig,
    candidate_models: CandidateModels,
    mlflow_tracking: MlflowResource,
) -> Output[ModelEvaluation]:
    """The selected model's hold-out metrics, curves and latency, measured on the logged model."""
    from churn.model.artifact import PROBABILITY
    from churn.model.features import CHUNK_ROWS
    from churn.model.pyfunc import load_model
    from churn_assets.evaluation.plots import log_evaluation_figures

    best = candidate_models.best
    splits = candidate_models.splits
    mlflow_tracking.activate()
    # Evaluate what was logged, not the object in memory: this is the model that will be served.
    model = load_model(best.model_uri)
    schema = model.schema
    records = splits.test[schema.names]
    labels = splits.test[splits.target].to_numpy()
    # A chunk at a time: the text of millions of records as Python objects would take GiBs.
    probabilities = np.concatenate(
        [
            model.predict(records.iloc[start : start + CHUNK_ROWS])[PROBABILITY].to_numpy()
            for start in range(0, len(records), CHUNK_ROWS)
        ]
    )
    metrics = holdout_metrics(splits, labels, probabilities, best.threshold)
    curve = _cost_curve(splits, labels, probabilities)
    calibration = calibration_bins(labels, probabilities)
    confusion = confusion_matrix(labels, (probabilities >= best.threshold).astype(int))
    timings = _single_record_latency(model, records, config.latency_samples)
    p50, p99 = float(np.percentile(timings, 50)), float(np.percentile(timings, 99))
    intervals = gate_intervals(splits, labels, probabilities, best.threshold, timings)

    from mlflow.entities import Metric

    client = mlflow_tracking.client()
    logged_at = int(time.time() * 1000)
    client.log_batch(
        best.run_id,
        metrics=[
            Metric(f"evaluation_{name}", value, logged_at, 0)
            for name, value in {**metrics, "latency_p50_ms": p50, "latency_p99_ms": p99}.items()
        ],
    )
    log_evaluation_figures(
        client,
        best.run_id,
        best.algorithm,
        model,
        labels,
        probabilities,
        best.threshold,
        calibration,
        curve,
    )
    if curve is not None:
        client.log_dict(best.run_id, cost_curve_record(curve), COST_CURVE_JSON)
    # Nightly scoring compares the customer base's scores with these.
    client.log_dict(best.run_id, score_histogram(probabilities), HOLDOUT_SCORES)
    context.log.info("%s on the hold-out split: %s", best.algorithm, metrics)

    strongest = single_column_power(splits.train, splits.target, schema.names)
    evaluation = ModelEvaluation(
        algorithm=best.algorithm,
        run_id=best.run_id,
        model_uri=best.model_uri,
        threshold=best.threshold,
        metrics=metrics,
        cv_metrics=best.cv_metrics,
        params=best.params,
        latency_p50_ms=p50,
        latency_p99_ms=p99,
        confusion=confusion.tolist(),
        data_version=splits.table.version,
        dataset=splits.table.dataset,
        source=splits.table.source,
        dagster_run_id=context.run.run_id,
        experiment_id=candidate_models.experiment_id,
        test=splits.test,
        target=splits.target,
        schema=schema,
        single_column_auc={p.column: round(p.auc, 6) for p in strongest[:5]},
        calibration=calibration,
        costs=splits.table.costs,
        cost_curve=cost_curve_record(curve) if curve is not None else None,
        intervals=intervals,
        calibration_map=best.calibration,
        probabilities=pd.DataFrame({"probability": probabilities}),
    )
    return Output(
        evaluation,
        metadata={
            "algorithm": best.algorithm,
            "threshold": best.threshold,
            **{name: float(value) for name, value in metrics.items()},
            "cv_roc_auc": best.cv_metrics.get("cv_roc_auc", float("nan")),
            "calibration_map": best.calibration,
            "latency_p50_ms": p50,
            "latency_p99_ms": p99,
            "strongest_single_inputs": MetadataValue.md(
                markdown_table(
                    ["input", "ROC-AUC alone"], [(p.column, f"{p.auc:.3f}") for p in strongest[:5]]
                )
            ),
            "reliability": MetadataValue.md(reliability_table(calibration)),
            **(
                {"cost_curve": MetadataValue.md(cost_curve_table(evaluation.cost_curve))}
                if evaluation.cost_curve
                else {}
            ),
            "confusion_matrix": MetadataValue.md(
                markdown_table(
                    ["", "predicted retained", "predicted churned"],
                    [("retained", *confusion[0]), ("churned", *confusion[1])],
                )
            ),
            "mlflow_run": MetadataValue.url(
                mlflow_tracking.run_url(candidate_models.experiment_id, best.run_id)
            ),
        },
    )


def gate_intervals(
    splits: CustomerSplits,
    labels: np.ndarray,
    probabilities: np.ndarray,
    threshold: float,
    timings: np.ndarray,
    confidence: float = INTERVAL_CONFIDENCE,
) -> dict[str, Interval]:
    """The hold-out metrics the gates judge, each with its bootstrap interval.

    Savings over the customers whose costs are known, as `holdout_metrics` measures them.
    """
    names = ["f1", "recall", "precision", "accuracy", "probability_rmse", "brier"]
    intervals = metric_intervals(statistics(labels, probabilities, threshold), confidence, names)
    costs = splits.table.costs
    if costs is not None:
        matrix = costs.matrix(splits.test)
        priced = known(matrix)
        if priced.any():
            columns = statistics(
                labels[priced], probabilities[priced], threshold, matrix.subset(priced)
            )
            intervals |= metric_intervals(columns, confidence, ["savings"])
    intervals["latency_p99_ms"] = quantile_interval(timings, 0.99, confidence)
    return intervals


def _single_record_latency(model: Any, records: pd.DataFrame, samples: int) -> np.ndarray:
    """Milliseconds of scoring one record at a time with the loaded MLflow model, per sample.

    Measured as a server runs: after warm-up, with the objects alive at start-up frozen out of
    the garbage collector's reach (`gc.freeze`), as the serving process does after loading the
    model; otherwise a full collection over MLflow's and pandas' objects stalls a request for
    a quarter of a second now and then. Unlike the server, no collection runs first: in a run
    worker (or a test process) that has held Dagster, MLflow and Great Expectations for a while
    it takes 0.4 s and more, and the garbage it would free is frozen only until `gc.unfreeze`.
    """
    rows = [records.iloc[[i % len(records)]] for i in range(samples + 10)]
    for row in rows[:10]:
        model.predict(row)  # warm-up: first calls pay for lazy imports and caches
    gc.freeze()
    timings = []
    try:
        for row in rows[10:]:
            started = time.perf_counter()
            model.predict(row)
            timings.append((time.perf_counter() - started) * 1000)
    finally:
        gc.unfreeze()
    return np.asarray(timings)
