"""The `candidate_models` asset: every configured algorithm tuned, fitted and tracked in MLflow."""

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, Config, Failure, MetadataValue, Output, asset
from pydantic import Field
from sklearn.pipeline import Pipeline

from churn.codec import STORED
from churn.engine import Engine
from churn.metrics import classification_metrics, recall_margin
from churn.model.schema import SCHEMA_ARTIFACT, ModelSchema
from churn.registry import PRODUCTION, ModelRegistry
from churn.value import known, savings
from churn_assets.features.assets import CustomerSplits, FeatureDesign
from churn_assets.markdown import markdown_table
from churn_assets.resources import ComputeResource, MlflowResource, QualityGates, mlflow_step
from churn_assets.training.search import (
    ALGORITHMS,
    SCORING,
    SearchBudget,
    SearchResult,
    SelectionMetric,
    refit,
    tune,
)

GROUP = "training"
FINISHED, FAILED = "FINISHED", "FAILED"


class TrainingConfig(Config):
    """Which algorithms compete and how much tuning each gets (editable in the launchpad)."""

    algorithms: list[str] = Field(
        default=list(ALGORITHMS), description=f"Algorithms to tune: {', '.join(ALGORITHMS)}."
    )
    iterations: int = Field(default=6, description="Random-search trials per algorithm.")
    folds: int = Field(default=5, description="Cross-validation folds per trial.")
    time_limit_seconds: float = Field(
        default=12.0,
        description="No new trial starts after this many seconds on one algorithm.",
    )
    max_tuning_rows: int = Field(
        default=50_000,
        description="Tuning uses a stratified sample of at most this many training rows; "
        "the chosen model is refitted on all of them.",
    )
    selection_metric: SelectionMetric = Field(
        # The Brier score is the square of the probability RMSE the gates judge, and a proper
        # scoring rule: it rewards models that rank well *and* are calibrated. ROC-AUC alone
        # can prefer a forest whose probabilities are too timid to pass the RMSE gate.
        default=SelectionMetric.neg_brier_score,
        description=f"Cross-validated score that picks the best trial and candidate: "
        f"{', '.join(SCORING)}.",
    )
    recall_confidence: float = Field(
        default=0.9,
        ge=0.5,
        lt=1.0,
        description="Probability that the hold-out recall meets the recall gate: the decision "
        "threshold keeps out-of-fold recall above the gate by the margin chance calls for, "
        "given how many churners the tuning and hold-out samples hold.",
    )
    seed: int = Field(default=42, description="Seed of the search and the estimators.")
    n_jobs: int = Field(default=2, description="Folds cross-validated in parallel.")


@dataclass
class Candidate:
    """One tuned algorithm: its MLflow run, its logged model and its figures."""

    algorithm: str
    status: str
    run_id: str
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)
    threshold: float = 0.5
    cv_metrics: dict[str, float] = field(default_factory=dict)
    holdout_metrics: dict[str, float] = field(default_factory=dict)
    model_uri: str = ""
    error: str = ""
    # The calibration map the model applies (`churn.model.calibration`), or "none".
    calibration: str = "none"
    # How many training rows the model was fitted on: all of them for the selected candidate,
    # the tuning sample for the others.
    fit_rows: int = 0
    # The fitted model, for this step only: later steps load it from `model_uri`.
    pipeline: Pipeline | None = field(default=None, repr=False, metadata={STORED: False})


@dataclass
class CandidateModels:
    """Every candidate of one training run, and which one was selected."""

    candidates: list[Candidate]
    selected: str
    selection_metric: str
    experiment_id: str
    parent_run_id: str
    splits: CustomerSplits = field(repr=False)

    @property
    def best(self) -> Candidate:
        """The selected candidate."""
        return next(c for c in self.candidates if c.algorithm == self.selected)


@asset(group_name=GROUP, kinds={"mlflow", "scikitlearn", "lightgbm"})
@mlflow_step
def candidate_models(
    context: AssetExecutionContext,
    config: TrainingConfig,
    customer_splits: CustomerSplits,
    feature_pipeline: FeatureDesign,
    mlflow_tracking: MlflowResource,
    gates: QualityGates,
    compute: ComputeResource,
) -> Output[CandidateModels]:
    """Candidate churn models, one tuned per algorithm, each an MLflow run with its model.

    The selected candidate's refit on every training row runs where `compute` says: in this
    step, or on the Dask cluster `CHURN_DASK_SCHEDULER` names (`churn.engine`).
    """
    unknown = [name for name in config.algorithms if name not in ALGORITHMS]
    if unknown or not config.algorithms:
        raise Failure(
            f"unknown or no algorithms {unknown or config.algorithms}; known: "
            f"{', '.join(ALGORITHMS)}",
            allow_retries=False,
        )
    try:
        return _train_candidates(
            context,
            config,
            customer_splits,
            feature_pipeline,
            mlflow_tracking,
            gates,
            compute.engine(),
        )
    finally:
        # Cross-validation's worker processes otherwise idle for loky's 300 s timeout, and the
        # run's process cannot exit before they do.
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=True)


def _train_candidates(
    context: AssetExecutionContext,
    config: TrainingConfig,
    splits: CustomerSplits,
    design: FeatureDesign,
    mlflow_tracking: MlflowResource,
    gates: QualityGates,
    engine: Engine,
) -> Output[CandidateModels]:
    import mlflow

    budget = SearchBudget(
        iterations=config.iterations,
        folds=config.folds,
        time_limit_seconds=config.time_limit_seconds,
        max_tuning_rows=config.max_tuning_rows,
        n_jobs=config.n_jobs,
        seed=config.seed,
    )
    experiment_id = mlflow_tracking.activate()
    tags = {
        "dagster_run_id": context.run.run_id,
        "data_version": splits.table.version,
        "dataset": splits.table.dataset,
    }
    train_labels = splits.train[splits.target]
    tuned_share = min(1.0, config.max_tuning_rows / max(len(splits.train), 1))
    margin = recall_margin(
        gates.min_recall,
        int(train_labels.sum() * tuned_share),
        int(splits.test[splits.target].sum()),
        config.recall_confidence,
    )
    if splits.table.costs is None:
        context.log.info(
            "Decision thresholds keep out-of-fold recall at least %.3f (gate %.2f + margin %.3f)",
            min(1.0, gates.min_recall + margin),
            gates.min_recall,
            margin,
        )
    else:
        context.log.info(
            "Decision thresholds minimise the out-of-fold cost of the decisions (%s)",
            splits.table.costs.describe(),
        )
    # What the model takes, recorded once from the raw training rows; every candidate carries it.
    # A column production's clients may send as null stays nullable (the pipeline fills it).
    registry = ModelRegistry(mlflow_tracking.client(), mlflow_tracking.model_name)
    production = registry.alias_version(PRODUCTION)
    schema = ModelSchema.from_frame(
        splits.train, splits.target, splits.table.id_column, splits.table.excluded
    ).keeping_nulls_of(registry.schema_of(production) if production else None)
    failed: dict[str, Candidate] = {}
    searched: dict[str, tuple[SearchResult, str]] = {}
    with mlflow.start_run(run_name=f"pipeline-{context.run.run_id[:8]}", tags=tags) as parent:
        mlflow.log_params(
            {
                "algorithms": ",".join(config.algorithms),
                **budget.__dict__,
                "recall_gate": gates.min_recall,
                "recall_margin": round(margin, 4),
            }
        )
        for algorithm in config.algorithms:
            context.log.info("Tuning %s", algorithm)
            with mlflow.start_run(run_name=algorithm, nested=True, tags=tags) as run:
                started = time.perf_counter()
                try:
                    result = tune(
                        algorithm,
                        design.pipeline(),
                        splits.train,
                        train_labels,
                        budget,
                        config.selection_metric.value,
                        min(1.0, gates.min_recall + margin),
                        splits.table.costs,
                        refit_all=False,
                    )
                except Exception as error:
                    # One algorithm failing must not hide the others: its run says why.
                    context.log.error("%s failed: %s", algorithm, error)
                    mlflow.set_tags({"status": FAILED, "error": str(error)[:4000]})
                    failed[algorithm] = Candidate(
                        algorithm,
                        FAILED,
                        run.info.run_id,
                        time.perf_counter() - started,
                        error=str(error),
                    )
                    continue
                searched[algorithm] = (result, run.info.run_id)
        if not searched:
            raise Failure(
                "every candidate failed: "
                + "; ".join(f"{c.algorithm}: {c.error}" for c in failed.values())
            )
        metric = f"cv_{config.selection_metric.value}"
        chosen = max(searched, key=lambda name: searched[name][0].cv_metrics[metric])
        result, run_id = searched[chosen]
        if result.fit_rows < len(splits.train):
            # Selection is by cross-validation on the tuning sample: only the selected
            # candidate pays for a fit on every training row.
            context.log.info(
                "Refitting %s on all %d training rows (tuned on %d), %s",
                chosen,
                len(splits.train),
                result.fit_rows,
                engine.describe(),
            )
            searched[chosen] = (
                refit(result, design.pipeline(), splits.train, train_labels, budget, engine),
                run_id,
            )
        candidates: list[Candidate] = []
        training_data = _training_data(splits)
        for algorithm in config.algorithms:
            if algorithm in failed:
                candidates.append(failed[algorithm])
                continue
            result, run_id = searched[algorithm]
            with mlflow.start_run(run_id=run_id, nested=True):
                candidates.append(_track_candidate(result, run_id, splits, schema, training_data))
        selected = next(c for c in candidates if c.algorithm == chosen)
        mlflow.set_tags(
            {"selected_algorithm": selected.algorithm, "selected_run_id": selected.run_id}
        )
        mlflow.log_metric(f"selected_{metric}", selected.cv_metrics[metric])

    models = CandidateModels(
        candidates=candidates,
        selected=selected.algorithm,
        selection_metric=config.selection_metric.value,
        experiment_id=experiment_id,
        parent_run_id=parent.info.run_id,
        splits=splits,
    )
    return Output(models, metadata=_comparison_metadata(models, mlflow_tracking))


def _training_data(splits: CustomerSplits) -> Any:
    """The training split as an MLflow dataset: its name, digest, size and column schema.

    MLflow infers a pandas dataset's schema value by value (22 s for 800,000 rows, per run it is
    logged to); the split's columns have one type each, so its first rows give the same schema.
    """
    from mlflow.data.pandas_dataset import from_pandas
    from mlflow.types.utils import _infer_schema

    dataset = from_pandas(
        splits.train,
        source=splits.table.source,
        targets=splits.target,
        name=f"{splits.table.dataset}-train",
        digest=splits.table.version,
    )
    # `schema` is a cached property: set, it is not inferred again from every row.
    dataset.__dict__["schema"] = _infer_schema(_plain_frame(splits.train.head(10_000)))
    return dataset


def _track_candidate(
    result: SearchResult,
    run_id: str,
    splits: CustomerSplits,
    schema: ModelSchema,
    training_data: Any,
) -> Candidate:
    """Log one tuned candidate to its (active) MLflow run: parameters, metrics, data, model."""
    import mlflow

    from churn.model.artifact import ChurnModel
    from churn.model.pyfunc import log_model

    test_labels = splits.test[splits.target].to_numpy()
    probabilities = result.probabilities(splits.test)
    holdout = holdout_metrics(splits, test_labels, probabilities, result.threshold)

    mlflow.log_params(
        {
            **result.best.params,
            "threshold": result.threshold,
            "trials": len(result.trials),
            "calibration": result.calibration.method if result.calibration else "none",
            "tuning_rows": result.tuning_rows,
            "fit_rows": result.fit_rows,
            "fit_engine": result.fit_engine,
        }
    )
    mlflow.log_metrics(
        {
            **result.cv_metrics,
            **{f"holdout_{k}": v for k, v in holdout.items()},
            "duration_seconds": result.seconds,
        }
    )
    mlflow.log_input(training_data, context="training")
    key = splits.table.id_column
    example = _plain_frame(splits.test[[*([key] if key else []), *schema.names]].head(5))
    model = ChurnModel.from_pipeline(
        result.pipeline, result.threshold, key, schema, result.calibration
    )
    mlflow.log_dict(schema.model_dump(mode="json"), SCHEMA_ARTIFACT)
    info = log_model(
        model,
        name="model",
        signature=_signature(example, model.predict(example), key),
        input_example=example,
        pip_requirements=_requirements(),
    )
    mlflow.set_tags({"status": FINISHED, "algorithm": result.algorithm})
    return Candidate(
        algorithm=result.algorithm,
        status=FINISHED,
        run_id=run_id,
        seconds=result.seconds,
        params=result.best.params,
        threshold=result.threshold,
        cv_metrics=result.cv_metrics,
        holdout_metrics=holdout,
        model_uri=info.model_uri,
        calibration=result.calibration.method if result.calibration else "none",
        fit_rows=result.fit_rows,
        pipeline=result.pipeline,
    )


def holdout_metrics(
    splits: CustomerSplits, labels: np.ndarray, probabilities: np.ndarray, threshold: float
) -> dict[str, float]:
    """`classification_metrics` on the hold-out split, and `savings` when costs are set.

    Savings are measured on the hold-out customers whose four costs are known.
    """
    metrics = classification_metrics(labels, probabilities, threshold)
    costs = splits.table.costs
    if costs is not None:
        matrix = costs.matrix(splits.test)
        priced = known(matrix)
        if priced.any():
            metrics["savings"] = savings(
                labels[priced], probabilities[priced] >= threshold, matrix.subset(priced)
            )
    return metrics


def _signature(example: pd.DataFrame, output: pd.DataFrame, key: str | None) -> Any:
    """The model's MLflow signature: its inputs, and the customer key as an optional column.

    Only what the model reads: excluded columns are no part of it (rows that arrive later need
    not carry them), and the key is echoed when given, never required.
    """
    import mlflow
    from mlflow.types.schema import ColSpec, Schema

    signature = mlflow.models.infer_signature(example, output)
    if key is not None:
        signature.inputs = Schema(
            [
                ColSpec(spec.type, spec.name, required=spec.name != key)
                for spec in signature.inputs.inputs
            ]
        )
    return signature


def _plain_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Arrow-backed text as Python objects, as MLflow's schema inference and JSON expect."""
    return frame.astype(
        {c: "object" for c in frame.columns if pd.api.types.is_string_dtype(frame[c])}
    )


def _requirements() -> list[str]:
    """The libraries a logged model needs, at the versions it was trained with.

    Stated, not inferred: MLflow's inference loads the model in a subprocess and costs seconds.
    """
    from importlib.metadata import version

    packages = ("mlflow", "scikit-learn", "lightgbm", "pandas", "numpy", "pyarrow", "cloudpickle")
    return [f"{package}=={version(package)}" for package in packages]


def _comparison_metadata(
    models: CandidateModels, mlflow_tracking: MlflowResource
) -> dict[str, Any]:
    rows = []
    for c in models.candidates:
        url = mlflow_tracking.run_url(models.experiment_id, c.run_id)
        params = ", ".join(f"{k}={_short(v)}" for k, v in c.params.items())
        h = c.holdout_metrics
        rows.append(
            (
                f"[{c.run_id[:8]}]({url})",
                c.algorithm + (" (selected)" if c.algorithm == models.selected else ""),
                params or c.error[:120],
                *(
                    f"{h[m]:.4f}" if m in h else ""
                    for m in ("accuracy", "f1", "precision", "recall")
                ),
                f"{c.fit_rows:,}" if c.fit_rows else "",
                f"{c.seconds:.1f} s",
                c.status,
            )
        )
    best = models.best
    return {
        "selected": best.algorithm,
        "selection_metric": f"cv_{models.selection_metric}",
        f"selected_cv_{models.selection_metric}": best.cv_metrics[f"cv_{models.selection_metric}"],
        "selected_threshold": best.threshold,
        "comparison": MetadataValue.md(
            markdown_table(
                [
                    "Run ID",
                    "Algorithm",
                    "Parameters",
                    "Accuracy",
                    "F1",
                    "Precision",
                    "Recall",
                    "Fitted on rows",
                    "Duration",
                    "Status",
                ],
                rows,
            )
        ),
        "mlflow_pipeline_run": MetadataValue.url(
            mlflow_tracking.run_url(models.experiment_id, models.parent_run_id)
        ),
        "mlflow_selected_run": MetadataValue.url(
            mlflow_tracking.run_url(models.experiment_id, best.run_id)
        ),
    }


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
