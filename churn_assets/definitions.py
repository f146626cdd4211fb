"""The churn platform's Dagster code location: it gathers what each stage module defines."""

from __future__ import annotations

from dagster import AssetSelection, Definitions, FilesystemIOManager, define_asset_job

from churn_assets.ingestion.assets import raw_customers
from churn_assets.resources import DatasetResource, PlatformHome
from churn_assets.validation.assets import validated_customers

home = PlatformHome.from_env()

ingest_and_validate_job = define_asset_job(
    name="ingest_and_validate",
    selection=AssetSelection.groups("ingestion", "validation"),
    description="Ingest the configured data set and validate it.",
)

churn_pipeline_job = define_asset_job(
    name="churn_pipeline",
    selection=AssetSelection.all(),
    description="The whole pipeline, from ingestion to the model registry.",
)

defs = Definitions(
    assets=[raw_customers, validated_customers],
    jobs=[ingest_and_validate_job, churn_pipeline_job],
    resources={
        "dataset": DatasetResource.from_env(),
        "home": home,
        "io_manager": FilesystemIOManager(base_dir=str(home.root / "dagster" / "storage")),
    },
)
