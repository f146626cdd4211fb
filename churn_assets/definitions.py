"""The churn platform's Dagster code location: it gathers what each stage module defines.

Dagster marks some APIs the platform relies on as beta (`Output(data_version=...)`) and warns
each time a run uses them, on every `dg` and `make up` console. The warnings say nothing a user
can act on, so the code location silences Dagster's lifecycle warnings (beta, preview,
supersession) and nothing else.
"""

from __future__ import annotations

import warnings

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    BetaWarning,
    DefaultSensorStatus,
    Definitions,
    PreviewWarning,
    SupersessionWarning,
    define_asset_job,
    in_process_executor,
)

from churn_assets.automation import AUTOMATION_SENSOR
from churn_assets.evaluation.assets import model_evaluation
from churn_assets.features.assets import customer_splits, feature_pipeline
from churn_assets.ingestion.assets import labelled_customers, raw_customers
from churn_assets.monitoring.assets import MONITORING_ASSETS
from churn_assets.monitoring.compaction import compact_logs_job, compacted_logs
from churn_assets.registry.assets import production_model, registered_model
from churn_assets.resources import (
    ComputeResource,
    DatasetResource,
    MlflowResource,
    PlatformHome,
    QualityGates,
    ScoringResource,
)
from churn_assets.schedules import daily_schedule, step_retry_policy
from churn_assets.scoring.assets import (
    customer_scores,
    rescore_on_promotion,
    score_customers_job,
)
from churn_assets.sensors import (
    drift_sensor_for,
    freshness_sensor_for,
    monitoring_sensor_for,
    new_data_sensor_for,
    pipeline_failure_alert,
    pipeline_recovery,
)
from churn_assets.storage import ValueStore
from churn_assets.training.assets import candidate_models
from churn_assets.validation.assets import validated_customers

for _lifecycle in (BetaWarning, PreviewWarning, SupersessionWarning):
    warnings.filterwarnings("ignore", category=_lifecycle)

home = PlatformHome.from_env()
dataset = DatasetResource.from_env()

retries = step_retry_policy()
# Jobs that write the training data run one at a time (tag_concurrency_limits in dagster.yaml).
SERIAL = {"churn/serial": "training-data"}

ingest_and_validate_job = define_asset_job(
    name="ingest_and_validate",
    selection=AssetSelection.groups("ingestion", "validation"),
    description="Ingest the configured data set and validate it.",
    op_retry_policy=retries,
    tags=SERIAL,
)

# The training pipeline, in order: what the daily schedule and a drift-triggered retrain run.
ASSETS = [
    raw_customers,
    labelled_customers,
    validated_customers,
    customer_splits,
    feature_pipeline,
    candidate_models,
    model_evaluation,
    registered_model,
    production_model,
]

churn_pipeline_job = define_asset_job(
    name="churn_pipeline",
    selection=AssetSelection.assets(*ASSETS),
    description="The whole pipeline, from ingestion (with the new labels) to the model registry.",
    op_retry_policy=retries,
    tags=SERIAL,
)

monitoring_job = define_asset_job(
    name="monitoring",
    selection=AssetSelection.assets(*MONITORING_ASSETS),
    description="Drift of production inputs and live performance of the production model, "
    "for one day (today's: the window that ends now).",
)

refresh_labels_job = define_asset_job(
    name="refresh_labelled_data",
    selection=AssetSelection.assets(labelled_customers),
    description="Rebuild the labelled data from the source, landing files and feedback.",
    op_retry_policy=retries,
    tags=SERIAL,
)

# The graph is a chain: steps never run side by side, so separate step processes would only add
# their start-up (about 3.5 s of imports each) to every run.
JOBS = [
    ingest_and_validate_job,
    churn_pipeline_job,
    monitoring_job,
    refresh_labels_job,
    score_customers_job,
    compact_logs_job,
]
schedule = daily_schedule(churn_pipeline_job)
# Evaluates the assets' automation conditions (churn_assets/automation.py). Declared here rather
# than left to Dagster's default automation sensor, which is off until switched on in the UI.
automation_sensor = AutomationConditionSensorDefinition(
    AUTOMATION_SENSOR,
    target=AssetSelection.assets(customer_scores, compacted_logs),
    default_status=DefaultSensorStatus.RUNNING,
    description="Materializes the assets whose automation condition is true: today's "
    "customer_scores at 02:00 UTC, yesterday's compacted_logs at 00:30 UTC.",
)

defs = Definitions(
    executor=in_process_executor,
    assets=[*ASSETS, *MONITORING_ASSETS, customer_scores, compacted_logs],
    jobs=JOBS,
    schedules=[schedule],
    sensors=[
        automation_sensor,
        monitoring_sensor_for(monitoring_job.name),
        drift_sensor_for(churn_pipeline_job.name),
        new_data_sensor_for(refresh_labels_job.name),
        rescore_on_promotion,
        pipeline_failure_alert,
        pipeline_recovery,
        freshness_sensor_for(
            [job.name for job in JOBS],
            schedule.name,
            # Their nightly runs are the automation sensor's asset runs, not runs of the job.
            {
                score_customers_job.name: customer_scores.key,
                compact_logs_job.name: compacted_logs.key,
            },
        ),
    ],
    resources={
        "dataset": dataset,
        "home": home,
        "mlflow_tracking": MlflowResource.from_env(home),
        "gates": QualityGates.from_env(),
        "scoring": ScoringResource.from_env(),
        "compute": ComputeResource.from_env(),
        "io_manager": ValueStore.under(home.layout),
    },
)
