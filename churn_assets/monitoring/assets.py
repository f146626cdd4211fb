"""Monitoring assets: production inputs against the production model's data, and live F1.

Drift compares the inputs the production service scored with the data the production model was
trained on (or, with `population: batch`, a sample of the customers the nightly scores covered);
live performance scores the production model on the outcomes reported to it.

    production_model ─┬─> reference_customers ─┐
                      │   production_inputs ───┴─> drift_report  (an asset check per feature)
                      └─> live_performance                       (F1 degradation check)

`production_inputs`, `drift_report` and `live_performance` have one partition per UTC day
(`MONITORING_DAYS`), today's included: a day's partition measures the window that ends with the
day (the last 24 hours of traffic by default), or now while the day is running. The monitoring
sensor materializes today's as the service logs new traffic; a backfill measures past days, each
in its own partition, from the logs kept. The drift sensor reads their metadata and asks for a
retraining run when drift or degradation is found in today's or yesterday's.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetsDefinition,
    Config,
    DailyPartitionsDefinition,
    DataVersion,
    Failure,
    MetadataValue,
    Output,
    asset,
)
from pydantic import Field

from churn.drift import DriftResult, measure_drift
from churn.logs import (
    FEEDBACK,
    META_COLUMNS,
    PREDICTIONS,
    join_feedback,
    recent_predictions,
)
from churn.model.schema import ModelSchema
from churn.parquet_log import read_log
from churn.published import publish
from churn.registry import PRODUCTION, ModelRegistry
from churn.score_store import INPUTS, ScoreStore
from churn.settings import settings
from churn_assets.markdown import markdown_table
from churn_assets.resources import (
    DatasetResource,
    MlflowResource,
    PlatformHome,
)

GROUP = "monitoring"
# One partition per UTC day, today's included (it is measured again as the day's traffic comes).
MONITORING_DAYS = DailyPartitionsDefinition(start_date="2026-01-01", timezone="UTC", end_offset=1)
DRIFT_REPORT = "drift_report"
LIVE_PERFORMANCE = "live_performance"
F1_CHECK = "live_f1_degradation"
DRIFT_CHECK = "feature_drift"


def drift_check_name(column: str) -> str:
    """The asset check of one monitored feature."""
    return f"{column}_drift"


@dataclass
class ReferenceData:
    """The rows the production model was trained from (its data version), its inputs only."""

    frame: pd.DataFrame
    model_version: str
    data_version: str
    schema: ModelSchema


def window_end(context: AssetExecutionContext) -> datetime:
    """Where the measured window ends: now for today's partition, the day's end for a past one."""
    now = datetime.now(UTC)
    if not context.has_partition_key:
        return now
    day = date.fromisoformat(context.partition_key)
    return min(now, datetime.combine(day + timedelta(days=1), time.min, UTC))


@dataclass(frozen=True)
class _Production:
    version: str
    tags: dict[str, str]
    registered_on: date


def _production_version(mlflow_tracking: MlflowResource) -> _Production:
    """The production version, its registry tags and the day it was registered."""
    client = mlflow_tracking.client()
    registry = ModelRegistry(client, mlflow_tracking.model_name)
    version = registry.alias_version(PRODUCTION)
    if version is None:
        raise Failure(
            description=f"No version of {mlflow_tracking.model_name!r} has the production alias "
            "yet: run the pipeline (churn_pipeline) first.",
            allow_retries=False,
        )
    registered = client.get_model_version(mlflow_tracking.model_name, version)
    created = datetime.fromtimestamp(registered.creation_timestamp / 1000, UTC)
    return _Production(version, dict(registered.tags), created.date())


def _production_schema(mlflow_tracking: MlflowResource, version: str) -> ModelSchema:
    registry = ModelRegistry(mlflow_tracking.client(), mlflow_tracking.model_name)
    schema = registry.schema_of(version)
    if schema is None:
        raise Failure(
            description=f"Production version {version} has no recorded input schema (it was "
            "trained before schemas were recorded): retrain and promote a new version.",
            allow_retries=False,
        )
    return schema


@asset(group_name=GROUP, kinds={"pandas"}, deps=["production_model"])
def reference_customers(
    context: AssetExecutionContext, mlflow_tracking: MlflowResource, home: PlatformHome
) -> Output[ReferenceData]:
    """What the production model learned from: the data version its registry entry names."""
    production = _production_version(mlflow_tracking)
    version, tags = production.version, production.tags
    data_version = tags.get("data_version", "")
    try:
        frame = home.snapshots().load(data_version)
    except KeyError as error:
        raise Failure(
            description=f"Production version {version} was trained on data version "
            f"{data_version!r}, which is not stored under {home.snapshots().root}.",
            allow_retries=False,
        ) from error
    schema = _production_schema(mlflow_tracking, version)
    missing = [column for column in schema.names if column not in frame.columns]
    if missing:
        raise Failure(
            description=f"Data version {data_version} lacks input column(s) of production "
            f"version {version}: {', '.join(missing)}.",
            allow_retries=False,
        )
    context.log.info("Production version %s learned from data version %s", version, data_version)
    return Output(
        ReferenceData(frame[schema.names], version, data_version, schema),
        data_version=DataVersion(data_version),
        metadata={
            "production_version": version,
            "data_version": data_version,
            "dagster/row_count": len(frame),
            "snapshot": MetadataValue.path(str(home.snapshots().root / f"{data_version}.parquet")),
        },
    )


class WindowConfig(Config):
    """Which logged predictions count as the current production inputs."""

    hours: float = Field(
        default_factory=lambda: settings().monitoring.window_hours,
        description="Predictions of the last N hours (`CHURN_MONITOR_WINDOW_HOURS`).",
    )
    max_records: int = Field(
        default_factory=lambda: settings().monitoring.window_records,
        description="At most the newest N of them (`CHURN_MONITOR_WINDOW_RECORDS`).",
    )
    alias: str = Field(default=PRODUCTION, description="The deployment whose inputs are read.")
    population: Literal["online", "batch"] = Field(
        default_factory=lambda: settings().monitoring.population,
        description="`online`: the service's recent requests; `batch`: the customers of the "
        "latest nightly scores (a sample of their inputs), so that a shift of the customer base "
        "shows even without online traffic (`CHURN_MONITOR_POPULATION`).",
    )


@asset(group_name=GROUP, kinds={"pandas", "parquet"}, partitions_def=MONITORING_DAYS)
def production_inputs(
    context: AssetExecutionContext, config: WindowConfig, home: PlatformHome
) -> Output[pd.DataFrame]:
    """The customers production scored recently: online requests, or the nightly population."""
    end = window_end(context)
    if config.population == "batch":
        return _batch_inputs(home, config.max_records, end.date())
    folder = home.serving_log(config.alias, PREDICTIONS)
    logged = recent_predictions(folder, end, config.hours, config.max_records)
    if logged.empty:
        raise Failure(
            description=f"The {config.alias} service logged no prediction in the {config.hours:g} "
            f"h before {end:%Y-%m-%d %H:%M} UTC (log: {folder}). Send traffic first, e.g. "
            "`churn-traffic`.",
            allow_retries=False,
        )
    # Every logged input, whatever model version logged it: drift picks the production model's.
    inputs = logged[
        ["predicted_at", "model_version"]
        + [column for column in logged.columns if column not in META_COLUMNS]
    ]
    versions = logged["model_version"].value_counts()
    context.log.info("%s predictions from %s to %s", len(inputs), inputs.iloc[0, 0], end)
    return Output(
        inputs,
        metadata={
            "dagster/row_count": len(inputs),
            "window": f"{config.hours:g} h up to {end:%Y-%m-%d %H:%M} UTC, at most "
            f"{config.max_records:,} records",
            "first_prediction": str(inputs["predicted_at"].iloc[0]),
            "last_prediction": str(inputs["predicted_at"].iloc[-1]),
            "served_versions": ", ".join(f"v{v}: {n}" for v, n in versions.items()),
            "prediction_log": MetadataValue.path(str(folder)),
        },
    )


def _batch_inputs(home: PlatformHome, max_records: int, day: date) -> Output[pd.DataFrame]:
    """The inputs sampled from the latest nightly scores up to `day` (`customer_scores`)."""
    store = ScoreStore(home.scores_dir)
    partition = store.latest(until=f"{day}")
    if partition is None:
        raise Failure(
            description=f"No nightly scores of {day} or before under {store.root}: materialize "
            "customer_scores first, or monitor the online population.",
            allow_retries=False,
        )
    manifest = store.manifest(partition)
    inputs = pd.read_parquet(store.partition(partition) / INPUTS).head(max_records)
    inputs.insert(0, "model_version", manifest.model_version)
    inputs.insert(0, "predicted_at", pd.Timestamp(manifest.scored_at))
    return Output(
        inputs,
        metadata={
            "dagster/row_count": len(inputs),
            "window": f"nightly scores of {partition} (a uniform sample of "
            f"{manifest.rows_scored:,} customers)",
            "population": manifest.population,
            "served_versions": f"v{manifest.model_version}: {len(inputs)}",
            "scores": MetadataValue.path(str(store.partition(partition))),
        },
    )


class DriftConfig(Config):
    """When a feature counts as drifted, and how much traffic a verdict needs."""

    psi_threshold: float = Field(
        default_factory=lambda: settings().monitoring.psi_threshold,
        description="A feature whose PSI is above this has drifted (`CHURN_PSI_THRESHOLD`).",
    )
    min_records: int = Field(
        default_factory=lambda: settings().monitoring.drift_min_records,
        description="Fewer production records than this give no verdict: PSI of a small sample "
        "is noise (`CHURN_DRIFT_MIN_RECORDS`).",
    )


@dataclass
class DriftSummary:
    """The drift report's outcome, as the drift sensor and later runs read it."""

    evaluated: bool
    threshold: float
    psi: dict[str, float] = field(default_factory=dict)
    drifted: list[str] = field(default_factory=list)
    production_version: str = ""
    reference_version: str = ""
    current_rows: int = 0
    html: str = ""
    mlflow_run_id: str = ""

    @property
    def detected(self) -> bool:
        """Whether any feature drifted."""
        return bool(self.drifted)

    def reason(self) -> str:
        """`monthly_charges PSI 0.31, contract PSI 0.24 (threshold 0.20)`."""
        columns = ", ".join(f"{column} PSI {self.psi[column]:.2f}" for column in self.drifted)
        return f"{columns} (threshold {self.threshold:.2f})"


def drift_report_asset(monitored: Sequence[str]) -> AssetsDefinition:
    """The drift report, with an asset check per feature of `monitored` and one for them all.

    Dagster wants check specs when the code location loads, before any model is known; the
    features come from the configured data set (`monitored_features`). The report itself
    measures the inputs of whatever version is in production: a feature it has without a check
    of its own is still in the `feature_drift` check, which covers every feature.
    """

    @asset(
        name=DRIFT_REPORT,
        group_name=GROUP,
        partitions_def=MONITORING_DAYS,
        kinds={"evidently", "mlflow"},
        check_specs=[
            AssetCheckSpec(
                DRIFT_CHECK,
                asset=DRIFT_REPORT,
                description="No input of the production model drifted: PSI of every feature "
                "within the threshold.",
            ),
            *(
                AssetCheckSpec(
                    drift_check_name(column),
                    asset=DRIFT_REPORT,
                    description=f"PSI of `{column}` in production against the production "
                    "model's training data is within the threshold.",
                )
                for column in monitored
            ),
        ],
    )
    def drift_report(
        context: AssetExecutionContext,
        config: DriftConfig,
        reference_customers: ReferenceData,
        production_inputs: pd.DataFrame,
        mlflow_tracking: MlflowResource,
        home: PlatformHome,
    ) -> Iterator[Output[DriftSummary] | AssetCheckResult]:
        """Evidently's data drift report (PSI per feature), stored as HTML and logged to MLflow."""
        yield from _drift_report(
            context,
            config,
            reference_customers,
            production_inputs,
            mlflow_tracking,
            home,
            monitored,
        )

    return drift_report


def _drift_report(
    context: AssetExecutionContext,
    config: DriftConfig,
    reference: ReferenceData,
    current: pd.DataFrame,
    mlflow_tracking: MlflowResource,
    home: PlatformHome,
    monitored: Sequence[str],
) -> Iterator[Output[DriftSummary] | AssetCheckResult]:
    features = [column for column in reference.schema.names if column in current.columns]
    absent = [column for column in reference.schema.names if column not in current.columns]
    if absent:
        raise Failure(
            description=f"The prediction log lacks input(s) of production version "
            f"{reference.model_version}: {', '.join(absent)}.",
            allow_retries=False,
        )
    summary = DriftSummary(
        evaluated=len(current) >= config.min_records,
        threshold=config.psi_threshold,
        production_version=reference.model_version,
        reference_version=reference.data_version,
        current_rows=len(current),
    )
    metadata: dict[str, Any] = {
        "production_version": summary.production_version,
        "reference_version": summary.reference_version,
        "reference_rows": len(reference.frame),
        "current_rows": summary.current_rows,
        "psi_threshold": config.psi_threshold,
        "features": len(features),
    }
    result: DriftResult | None = None
    if summary.evaluated:
        result = measure_drift(reference.frame, current, features, config.psi_threshold)
        summary.psi = result.psi()
        summary.drifted = [column.column for column in result.drifted]
        summary.html, summary.mlflow_run_id, run_url = _store_report(
            result, summary, mlflow_tracking, home
        )
        metadata |= {
            "drift_detected": summary.detected,
            "drifted_columns": ", ".join(summary.drifted) or "(none)",
            "drift_share": result.share,
            "max_psi": max(summary.psi.values()),
            "psi": MetadataValue.json(summary.psi),
            "psi_by_column": MetadataValue.md(
                markdown_table(
                    ["column", "PSI", "drifted"],
                    [
                        (c.column, f"{c.psi:.4f}", "yes" if c.drifted else "")
                        for c in sorted(result.columns, key=lambda c: -c.psi)
                    ],
                )
            ),
            "reason": summary.reason() if summary.detected else "",
            "report": MetadataValue.path(summary.html),
            "mlflow_run": MetadataValue.url(run_url),
        }
        publish(
            home.monitoring_dir,
            "drift",
            {
                "psi": summary.psi,
                "threshold": summary.threshold,
                "drifted": summary.drifted,
                "production_version": summary.production_version,
                "current_rows": summary.current_rows,
            },
        )
        if summary.detected:
            context.log.warning("Drift detected: %s", summary.reason())
    else:
        metadata |= {
            "drift_detected": False,
            "drifted_columns": "(not evaluated)",
            "verdict": f"not evaluated: {summary.current_rows} production records, "
            f"{config.min_records} needed",
        }
    yield Output(summary, metadata=metadata)

    yield AssetCheckResult(
        check_name=DRIFT_CHECK,
        asset_key=DRIFT_REPORT,
        passed=not summary.detected,
        severity=AssetCheckSeverity.WARN,
        description=(
            f"Drift detected: {summary.reason()}"
            if summary.detected
            else f"No drift on the {len(features)} inputs of version {summary.production_version}"
            if result is not None
            else metadata["verdict"]
        ),
        metadata={"drifted": ", ".join(summary.drifted) or "(none)", "features": len(features)},
    )
    for column in monitored:
        check_metadata: dict[str, Any]
        if result is None:
            passed, description = True, metadata["verdict"]
            check_metadata = {"current_rows": summary.current_rows}
        elif column not in summary.psi:
            passed = True
            description = f"{column} is not an input of production version "
            description += summary.production_version
            check_metadata = {}
        else:
            drift = next(c for c in result.columns if c.column == column)
            passed, description = not drift.drifted, drift.describe()
            check_metadata = {"psi": drift.psi, "threshold": drift.threshold}
        yield AssetCheckResult(
            check_name=drift_check_name(column),
            asset_key=DRIFT_REPORT,
            passed=passed,
            severity=AssetCheckSeverity.WARN,
            description=description,
            metadata=check_metadata,
        )


def _store_report(
    result: DriftResult, summary: DriftSummary, mlflow_tracking: MlflowResource, home: PlatformHome
) -> tuple[str, str, str]:
    """Write the HTML report under the home and log it, with the PSI figures, to MLflow."""
    import mlflow

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = home.monitoring_dir / "drift"
    folder.mkdir(parents=True, exist_ok=True)
    html = folder / f"drift-{stamp}.html"
    result.save_html(str(html))
    experiment_id = mlflow_tracking.activate(mlflow_tracking.monitoring_experiment)
    with mlflow.start_run(run_name=f"drift {stamp}") as run:
        mlflow.set_tags(
            {
                "production_version": summary.production_version,
                "reference_version": summary.reference_version,
                "drift_detected": str(summary.detected).lower(),
                "drifted_columns": ", ".join(summary.drifted),
            }
        )
        mlflow.log_params(
            {"psi_threshold": summary.threshold, "current_rows": summary.current_rows}
        )
        mlflow.log_metrics(
            {
                **{f"psi_{column}": value for column, value in summary.psi.items()},
                "drift_share": result.share,
                "drifted_columns": len(summary.drifted),
            }
        )
        mlflow.log_artifact(str(html), artifact_path="drift")
    return str(html), run.info.run_id, mlflow_tracking.run_url(experiment_id, run.info.run_id)


class PerformanceConfig(Config):
    """How much live F1 may fall below the evaluation's before it is an alert."""

    f1_margin: float = Field(
        default_factory=lambda: settings().monitoring.f1_degradation_margin,
        description="Largest tolerated drop of live F1 under the hold-out F1 "
        "(`CHURN_F1_DEGRADATION_MARGIN`).",
    )
    min_labels: int = Field(
        default_factory=lambda: settings().monitoring.performance_min_labels,
        description="Fewer labelled predictions than this give no verdict "
        "(`CHURN_PERFORMANCE_MIN_LABELS`).",
    )


@dataclass
class LivePerformance:
    """The production version's classification figures on the outcomes reported so far."""

    evaluated: bool
    production_version: str
    labelled: int
    margin: float
    live: dict[str, float] = field(default_factory=dict)
    evaluation: dict[str, float] = field(default_factory=dict)

    @property
    def f1_drop(self) -> float:
        """Hold-out F1 minus live F1 (positive: worse in production)."""
        if not self.evaluated:
            return 0.0
        return self.evaluation["f1"] - self.live["f1"]

    @property
    def degraded(self) -> bool:
        """Whether live F1 fell below the hold-out F1 by more than the margin."""
        return self.evaluated and self.f1_drop > self.margin

    def reason(self) -> str:
        """`live F1 0.62 vs 0.81 on the hold-out split (drop 0.19 > margin 0.10)`."""
        return (
            f"live F1 {self.live['f1']:.2f} vs {self.evaluation['f1']:.2f} on the hold-out split "
            f"(drop {self.f1_drop:.2f} > margin {self.margin:.2f}, {self.labelled} outcomes)"
        )


@asset(
    group_name=GROUP,
    partitions_def=MONITORING_DAYS,
    kinds={"pandas"},
    deps=["production_model"],
    check_specs=[
        AssetCheckSpec(
            F1_CHECK,
            asset=LIVE_PERFORMANCE,
            description="Live F1 of the production version is within the margin of its "
            "hold-out F1.",
        )
    ],
)
def live_performance(
    context: AssetExecutionContext,
    config: PerformanceConfig,
    mlflow_tracking: MlflowResource,
    home: PlatformHome,
) -> Iterator[Output[LivePerformance] | AssetCheckResult]:
    """F1, recall and precision of the production version on the outcomes reported to it."""
    from sklearn.metrics import f1_score, precision_score, recall_score

    production = _production_version(mlflow_tracking)
    version, tags = production.version, production.tags
    # Only this version's predictions count, and it made none before it was registered: the days
    # read grow with its time in production, not with the logs' whole history.
    # ...and a past day's partition counts what had been reported by the end of that day.
    since, until = production.registered_on, window_end(context).date()
    predictions = read_log(home.serving_log(PRODUCTION, PREDICTIONS), since=since, until=until)
    feedback = read_log(home.serving_log(PRODUCTION, FEEDBACK), since=since, until=until)
    joined = join_feedback(predictions, feedback)
    labelled = joined.rows
    if not labelled.empty:
        labelled = labelled[labelled["model_version"] == version]
    performance = LivePerformance(
        evaluated=len(labelled) >= config.min_labels,
        production_version=version,
        labelled=len(labelled),
        margin=config.f1_margin,
        evaluation={name: float(tags[name]) for name in ("f1", "recall", "precision")},
    )
    metadata: dict[str, Any] = {
        "production_version": version,
        "labelled_predictions": performance.labelled,
        "unmatched_outcomes": joined.unmatched,
        "f1_margin": config.f1_margin,
        **{f"evaluation_{name}": value for name, value in performance.evaluation.items()},
    }
    if performance.evaluated:
        truth = labelled["churned"].astype(int).to_numpy()
        served = labelled["churn_label"].astype(int).to_numpy()
        performance.live = {
            "f1": float(f1_score(truth, served, zero_division=0)),
            "recall": float(recall_score(truth, served, zero_division=0)),
            "precision": float(precision_score(truth, served, zero_division=0)),
        }
        metadata |= {
            **{f"live_{name}": value for name, value in performance.live.items()},
            "f1_drop": performance.f1_drop,
            "degraded": performance.degraded,
            "reason": performance.reason(),
            "comparison": MetadataValue.md(
                markdown_table(
                    ["metric", "live", "hold-out"],
                    [
                        (name, f"{performance.live[name]:.4f}", f"{value:.4f}")
                        for name, value in performance.evaluation.items()
                    ],
                )
            ),
        }
        publish(
            home.monitoring_dir,
            "performance",
            {
                "live": performance.live,
                "evaluation": performance.evaluation,
                "f1_drop": performance.f1_drop,
                "margin": performance.margin,
                "labelled": performance.labelled,
                "production_version": version,
            },
        )
        if performance.degraded:
            context.log.warning("Degraded F1: %s", performance.reason())
    else:
        metadata |= {
            "degraded": False,
            "verdict": f"not evaluated: {performance.labelled} labelled predictions of version "
            f"{version}, {config.min_labels} needed",
        }
    yield Output(performance, metadata=metadata)
    yield AssetCheckResult(
        check_name=F1_CHECK,
        asset_key=LIVE_PERFORMANCE,
        passed=not performance.degraded,
        severity=AssetCheckSeverity.ERROR,
        description=(
            ("Degraded F1: " + performance.reason())
            if performance.degraded
            else f"F1 within the margin: live {performance.live['f1']:.3f}, hold-out "
            f"{performance.evaluation['f1']:.3f} (margin {config.f1_margin:.2f})"
            if performance.evaluated
            else metadata["verdict"]
        ),
        metadata={"f1_drop": performance.f1_drop, "labelled_predictions": performance.labelled},
    )


def monitored_features(dataset: DatasetResource, home: PlatformHome) -> list[str]:
    """The feature columns of the configured data set, as known when the code location loads.

    Read from the data set's validation suite, which is fixed on its first validated version:
    every column it requires but the target, the key and the excluded columns. Before the first
    validation, the built-in source's columns are known (`churn_assets.telco`, the schema the
    synthetic generator writes); any other source gets its per-feature checks from the next
    load of the code location after its first run (the `feature_drift` check covers it until).
    """
    from churn.normalise import snake_case
    from churn_assets.validation.suite import (
        CUSTOMER_KEY_UNIQUE,
        TARGET_IS_BINARY,
        SuiteStore,
    )

    suite = SuiteStore(home.suites_dir).stored(dataset.dataset_name())
    if suite is None:
        if dataset.is_synthetic:
            from churn_assets.telco import FEATURES

            return list(FEATURES)
        return []
    required: list[str] = []
    roles: set[str] = {snake_case(name) for name in dataset.exclude_columns}
    for expectation in suite["expectations"]:
        column = expectation["kwargs"].get("column")
        check = expectation.get("meta", {}).get("check")
        if expectation["type"] == "expect_column_to_exist":
            required.append(column)
        elif check in (TARGET_IS_BINARY, CUSTOMER_KEY_UNIQUE):
            roles.add(column)
    return [column for column in required if column not in roles]


def monitoring_assets(monitored: Sequence[str]) -> list[AssetsDefinition]:
    """The monitoring assets, with a drift check per feature of `monitored`."""
    return [reference_customers, production_inputs, drift_report_asset(monitored), live_performance]
