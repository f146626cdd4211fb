"""What the monitoring assets share: partitions, names, the production version and window."""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import pandas as pd
from dagster import (
    AssetExecutionContext,
    DailyPartitionsDefinition,
    Failure,
)

from churn.model.schema import ModelSchema
from churn.registry import PRODUCTION, ModelRegistry
from churn_assets.resources import (
    MlflowResource,
)

GROUP = "monitoring"
# One partition per UTC day, today's included (it is measured again as the day's traffic comes).
MONITORING_DAYS = DailyPartitionsDefinition(start_date="2026-01-01", timezone="UTC", end_offset=1)
DRIFT_REPORT = "drift_report"
LIVE_PERFORMANCE = "live_performance"
F1_CHECK = "live_f1_degradation"
DRIFT_CHECK = "feature_drift"


@dataclass
class ReferenceData:
    """The rows the production model was trained from (its data version), its inputs only."""

    frame: pd.DataFrame
    model_version: str
    data_version: str
    schema: ModelSchema
    # Rows of the data version: more than `frame` holds when it is a sample of them.
    total_rows: int = 0

    @property
    def sampled(self) -> bool:
        """Whether `frame` is a sample of the data version rather than all of it."""
        return self.total_rows > len(self.frame)


def window_end(context: AssetExecutionContext) -> datetime:
    """Where the measured window ends: now for today's partition, the day's end for a past one."""
    now = datetime.now(UTC)
    if not context.has_partition_key:
        return now
    day = date.fromisoformat(context.partition_key)
    return min(now, datetime.combine(day + timedelta(days=1), time.min, UTC))


@dataclass(frozen=True)
class ProductionVersion:
    """The version behind the production alias, its registry tags, the day it was registered."""

    version: str
    tags: dict[str, str]
    registered_on: date


def production_version(mlflow_tracking: MlflowResource) -> ProductionVersion:
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
    return ProductionVersion(version, dict(registered.tags), created.date())


def production_schema(mlflow_tracking: MlflowResource, version: str) -> ModelSchema:
    """The input schema recorded with `version` (a failure when there is none)."""
    registry = ModelRegistry(mlflow_tracking.client(), mlflow_tracking.model_name)
    schema = registry.schema_of(version)
    if schema is None:
        raise Failure(
            description=f"Production version {version} has no recorded input schema (it was "
            "trained before schemas were recorded): retrain and promote a new version.",
            allow_retries=False,
        )
    return schema
