"""The two sides drift compares: the production model's data and the production inputs."""

from datetime import date
from typing import Literal

import pandas as pd
from dagster import (
    AssetExecutionContext,
    Config,
    DataVersion,
    Failure,
    MetadataValue,
    Output,
    asset,
)
from pydantic import Field

from churn.logs import (
    META_COLUMNS,
    PREDICTIONS,
    recent_predictions,
)
from churn.registry import PRODUCTION
from churn.score_store import INPUTS, ScoreStore
from churn.settings import settings
from churn_assets.monitoring.common import (
    GROUP,
    MONITORING_DAYS,
    ReferenceData,
    production_schema,
    production_version,
    window_end,
)
from churn_assets.resources import (
    MlflowResource,
    PlatformHome,
)


class ReferenceConfig(Config):
    """How much of the production model's data version drift compares with."""

    max_rows: int = Field(
        default_factory=lambda: settings().monitoring.drift_max_reference_rows,
        ge=1_000,
        description="At most this many rows; a larger data version is sampled, seeded "
        "(`CHURN_DRIFT_MAX_REFERENCE_ROWS`).",
    )


@asset(group_name=GROUP, kinds={"pandas"}, deps=["production_model"])
def reference_customers(
    context: AssetExecutionContext,
    config: ReferenceConfig,
    mlflow_tracking: MlflowResource,
    home: PlatformHome,
) -> Output[ReferenceData]:
    """What the production model learned from: the data version its registry entry names.

    Its input columns only; a version of more than `max_rows` rows is sampled uniformly (seeded,
    a row group at a time), so that drift of ten million customers needs a few hundred MiB.
    """
    production = production_version(mlflow_tracking)
    version, tags = production.version, production.tags
    data_version = tags.get("data_version", "")
    try:
        stored = home.snapshots().columns(data_version)
    except KeyError as error:
        raise Failure(
            description=f"Production version {version} was trained on data version "
            f"{data_version!r}, which is not stored under {home.snapshots().root}.",
            allow_retries=False,
        ) from error
    schema = production_schema(mlflow_tracking, version)
    missing = [column for column in schema.names if column not in stored]
    if missing:
        raise Failure(
            description=f"Data version {data_version} lacks input column(s) of production "
            f"version {version}: {', '.join(missing)}.",
            allow_retries=False,
        )
    frame, total = home.snapshots().sample(data_version, list(schema.names), config.max_rows)
    context.log.info(
        "Production version %s learned from data version %s (%d rows%s)",
        version,
        data_version,
        total,
        f", {len(frame)} sampled" if len(frame) < total else "",
    )
    return Output(
        ReferenceData(frame, version, data_version, schema, total_rows=total),
        data_version=DataVersion(data_version),
        metadata={
            "production_version": version,
            "data_version": data_version,
            "dagster/row_count": len(frame),
            "data_version_rows": total,
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
