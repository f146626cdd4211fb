"""Nightly scoring of the whole customer base: the `customer_scores` asset, its job and triggers.

One daily partition per night: every customer of the scoring population is scored by the version
behind the `production` alias, with the three reasons behind each score, and lands as Parquet and
CSV under `<home>/scores/date=<day>/` (and optionally in PostgreSQL). Its automation condition
scores at 02:00 UTC, after the daily pipeline; a sensor re-scores today's partition when the
`production` alias moves.
"""

import os
from datetime import UTC, datetime
from typing import Any

import numpy as np
from dagster import (
    AssetExecutionContext,
    AssetKey,
    Config,
    DailyPartitionsDefinition,
    DataVersion,
    DefaultSensorStatus,
    Failure,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    SensorEvaluationContext,
    SkipReason,
    asset,
    define_asset_job,
    sensor,
)
from pydantic import Field

from churn.errors import DatasetError, SourceUnavailable
from churn.metrics import HOLDOUT_SCORES, score_histogram
from churn.model.scoring import Scorer
from churn.registry import ModelRegistry
from churn.row_checks import PopulationError
from churn.score_store import REASON_COLUMNS, SCORES, SCORES_CSV, ScoreStore
from churn_assets.automation import daily_freshness, nightly
from churn_assets.markdown import markdown_table
from churn_assets.resources import (
    ComputeResource,
    DatasetResource,
    MlflowResource,
    PlatformHome,
    ScoringResource,
)
from churn_assets.scoring.batch import Population, ScoredModel, score_population

GROUP = "scoring"
ASSET = "customer_scores"
# Today's partition exists from midnight: the night's scores are filed under the day they run.
PARTITIONS = DailyPartitionsDefinition(start_date="2026-01-01", timezone="UTC", end_offset=1)
TOP = 10


class ScoringConfig(Config):
    """Per run: whether to compute the reasons behind each score."""

    reasons: bool = Field(
        default=True,
        description="The three inputs pushing each customer's score up most (off: about 3x "
        "faster).",
    )


@asset(
    name=ASSET,
    group_name=GROUP,
    partitions_def=PARTITIONS,
    deps=["validated_customers", "production_model"],
    kinds={"parquet", "mlflow"},
    automation_condition=nightly(hour=2),
    freshness_policy=daily_freshness(),
)
def customer_scores(
    context: AssetExecutionContext,
    config: ScoringConfig,
    scoring: ScoringResource,
    dataset: DatasetResource,
    home: PlatformHome,
    mlflow_tracking: MlflowResource,
    compute: ComputeResource,
) -> MaterializeResult[None]:
    """Every customer of the scoring population, scored by the production model, with reasons.

    The chunks are scored in this step, or on the Dask cluster `CHURN_DASK_SCHEDULER` names.
    """
    engine = compute.engine()
    partition = context.partition_key
    model, run_id = production_scorer(mlflow_tracking, scoring.alias)
    population = _population(context, scoring, dataset, home, mlflow_tracking, model)
    context.log.info(
        "Scoring %s with %s version %s, %s",
        population.description,
        model.name,
        model.version,
        engine.describe(),
    )
    try:
        outcome = score_population(
            ScoreStore(home.scores_dir),
            partition,
            model,
            population,
            reasons=config.reasons,
            max_rejected_share=scoring.max_rejected_share,
            chunk_rows=scoring.chunk_rows,
            database_url=scoring.database_url or None,
            max_bytes=dataset.max_bytes,
            timeout_seconds=dataset.timeout_seconds,
            scratch=home.scratch_dir,
            engine=engine,
            log=context.log.info,
        )
    except SourceUnavailable:
        raise  # the network: worth the step's retries
    except (DatasetError, PopulationError) as error:
        raise Failure(
            description=f"Scoring partition {partition} failed: {error}",
            allow_retries=False,  # the same rows fail the same way
        ) from error
    manifest = outcome.manifest
    considered = manifest.rows_scored + manifest.rows_rejected
    key = model.scorer.schema.key or "row_number"
    metadata: dict[str, Any] = {
        "model_name": model.name,
        "model_version": model.version,
        "model": MetadataValue.url(mlflow_tracking.model_version_url(model.version)),
        "data_version": manifest.data_version,
        "population": manifest.population,
        "engine": engine.describe(),
        "dagster/row_count": manifest.rows_scored,
        "rows_read": manifest.rows_read,
        "churned_skipped": manifest.churned_skipped,
        "rows_rejected": manifest.rows_rejected,
        "rejected_share": manifest.rows_rejected / max(considered, 1),
        "risk_bands": MetadataValue.md(
            markdown_table(
                ["band", "customers", "share"],
                [
                    (band, f"{count:,}", f"{count / manifest.rows_scored:.1%}")
                    for band, count in manifest.bands.items()
                ],
            )
        ),
        "top_customers": MetadataValue.md(_top_table(outcome.top, key)),
        "score_distribution": MetadataValue.md(
            _distribution(outcome.probabilities, mlflow_tracking, run_id)
        ),
        "scores": MetadataValue.path(str(outcome.folder / SCORES)),
        "scores_csv": MetadataValue.path(str(outcome.folder / SCORES_CSV)),
        "seconds": manifest.seconds.get("total", 0.0),
        "customers_per_second": round(
            manifest.rows_scored / max(manifest.seconds.get("total", 0.0), 1e-9)
        ),
        "time_by_phase": MetadataValue.json(manifest.seconds),
        "reasons": config.reasons,
    }
    if manifest.rows_rejected:
        metadata["rejected_by_column"] = MetadataValue.json(manifest.rejected_by_column)
        metadata["rejected_sample"] = MetadataValue.md(
            markdown_table(
                ["row", "reason"],
                [
                    (str(row["row_number"]), str(row["rejection_reason"]))
                    for _, row in outcome.rejected_sample.iterrows()
                ],
            )
        )
    if outcome.exported_rows is not None:
        metadata["postgres_rows"] = outcome.exported_rows
    return MaterializeResult(
        metadata=metadata,
        data_version=DataVersion(f"v{model.version}-{manifest.data_version}"),
    )


def production_scorer(mlflow_tracking: MlflowResource, alias: str) -> tuple[ScoredModel, str]:
    """The scorer of the version behind `alias`, and the run that trained it."""
    import mlflow

    from churn.model.pyfunc import load_model

    client = mlflow_tracking.client()
    name = mlflow_tracking.model_name
    version = ModelRegistry(client, name).alias_version(alias)
    if version is None:
        raise Failure(
            description=f"No version of {name!r} has the {alias!r} alias yet: run the pipeline "
            "(churn_pipeline) first.",
            allow_retries=False,
        )
    mlflow.set_tracking_uri(mlflow_tracking.tracking_uri)
    try:
        scorer = Scorer.of(load_model(f"models:/{name}/{version}"))
    except ValueError as error:
        raise Failure(description=f"version {version}: {error}", allow_retries=False) from error
    # A scoring run has the machine: the model may use every core.
    scorer.use_threads(os.cpu_count() or 1)
    run_id = client.get_model_version(name, version).run_id or ""
    return ScoredModel(name, version, scorer), run_id


def _population(
    context: AssetExecutionContext,
    scoring: ScoringResource,
    dataset: DatasetResource,
    home: PlatformHome,
    mlflow_tracking: MlflowResource,
    model: ScoredModel,
) -> Population:
    """`CHURN_SCORING_SOURCE`, else the latest validated data version's customers.

    The latest validated version is the instance's last `validated_customers`; an instance
    that has none (a command run without the platform's `DAGSTER_HOME`, a fresh instance beside
    an existing home) falls back to the version the scoring model was trained on, which was
    validated too.
    """
    if scoring.source:
        return Population(
            source=scoring.source,
            description=scoring.source,
            positive_label=dataset.positive_label,
        )
    event = context.instance.get_latest_materialization_event(AssetKey("validated_customers"))
    materialization = event.asset_materialization if event else None
    version = materialization.metadata.get("data_version") if materialization else None
    description = "(validated)"
    if version is None:
        tags = mlflow_tracking.client().get_model_version(model.name, model.version).tags or {}
        version = tags.get("data_version")
        description = f"(validated; the training data of {model.name} version {model.version})"
    data_version = str(getattr(version, "value", version)) if version is not None else ""
    if not data_version or not home.snapshots().has(data_version):
        raise Failure(
            description="No validated data version yet: materialize validated_customers (run "
            "churn_pipeline), or set CHURN_SCORING_SOURCE to the customers to score.",
            allow_retries=False,
        )
    return Population(
        source=str(home.snapshots().data_path(data_version)),
        description=f"data version {data_version} {description}, customers who have not churned",
        data_version=data_version,
        target_is_encoded=True,
    )


def _top_table(top: Any, key: str) -> str:
    rows = [
        (
            str(int(row["rank"])),
            str(row.iloc[0]),
            f"{row['churn_probability']:.3f}",
            str(row["risk_band"]),
            "; ".join(str(row[c]) for c in REASON_COLUMNS if row.get(c)),
        )
        for _, row in top.head(TOP).iterrows()
    ]
    return markdown_table(["rank", key, "probability", "band", "reasons"], rows)


def _distribution(probabilities: np.ndarray, mlflow_tracking: MlflowResource, run_id: str) -> str:
    """Shares of the scores per tenth of [0, 1], beside the hold-out's (when it was logged)."""
    scored = score_histogram(probabilities)
    holdout: dict[str, Any] | None = None
    if run_id:
        import mlflow

        try:
            mlflow.set_tracking_uri(mlflow_tracking.tracking_uri)
            holdout = mlflow.artifacts.load_dict(f"runs:/{run_id}/{HOLDOUT_SCORES}")
        except Exception:  # a model evaluated before the histogram was logged
            holdout = None
    total = max(sum(scored["counts"]), 1)
    held = sum(holdout["counts"]) if holdout else 0
    edges = scored["edges"]
    return markdown_table(
        ["probability", "customers", "hold-out"],
        [
            (
                f"{edges[i]:.1f}-{edges[i + 1]:.1f}",
                f"{scored['counts'][i] / total:.1%}",
                f"{holdout['counts'][i] / held:.1%}" if holdout and held else "",
            )
            for i in range(len(scored["counts"]))
        ],
    )


score_customers_job = define_asset_job(
    name="score_customers",
    selection=[ASSET],
    description="Score every customer with the production model (one partition per night).",
)


@sensor(
    name="rescore_on_promotion",
    job=score_customers_job,
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Re-score today's partition when a new version reaches production.",
)
def rescore_on_promotion(
    context: SensorEvaluationContext, mlflow_tracking: MlflowResource, scoring: ScoringResource
) -> RunRequest | SkipReason:
    """Watch the production alias; a move re-scores today's customers with the new version.

    A sensor rather than an automation condition: the alias moves outside Dagster too
    (`churn-registry promote` and `rollback`, the MLflow UI), where no asset is materialized.
    """
    alias = scoring.alias
    registry = ModelRegistry(mlflow_tracking.client(), mlflow_tracking.model_name)
    version = registry.alias_version(alias)
    previous = context.cursor
    context.update_cursor(version)
    if version is None or version == previous:
        return SkipReason(f"{alias} is still version {version}")
    if previous is None:
        return SkipReason(f"first look: {alias} is version {version}")
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    return RunRequest(
        run_key=f"rescore-{today}-v{version}",
        partition_key=today,
        tags={"churn/trigger": "promotion", "churn/reason": f"{alias} moved to v{version}"},
    )
