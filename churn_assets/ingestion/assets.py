"""The `raw_customers` asset: the configured data set, read, normalised and stored as a version."""

from dataclasses import replace
from typing import Any

import pandas as pd
from dagster import (
    AssetExecutionContext,
    DataVersion,
    Failure,
    MetadataValue,
    Output,
    TableColumn,
    TableSchema,
    asset,
)

from churn_assets.errors import DatasetError, SourceUnavailable
from churn_assets.ingestion.labelled import (
    NewLabels,
    feedback_rows,
    landing_files,
    merge_labels,
    read_batch,
    reject,
)
from churn_assets.ingestion.normalise import NormalisationReport, normalise, snake_case
from churn_assets.ingestion.sources import read_table
from churn_assets.ingestion.synthetic import SyntheticDrift, generate_customers
from churn_assets.ingestion.versioning import SnapshotManifest
from churn_assets.markdown import frame_preview, markdown_table
from churn_assets.monitoring.logs import FEEDBACK, PREDICTIONS, all_records
from churn_assets.resources import KEY_COLUMN_NAMES, DatasetResource, PlatformHome
from churn_assets.tables import CustomerTable

GROUP = "ingestion"


def ingest_customers(
    dataset: DatasetResource, home: PlatformHome
) -> tuple[CustomerTable, NormalisationReport]:
    """Read the configured source and normalise it (not yet versioned: `version` is empty).

    Raises:
        DatasetError: the source cannot be read, or the table is not a usable churn table.

    """
    if dataset.is_synthetic:
        drift = SyntheticDrift(
            monthly_charges_shift=dataset.synthetic_monthly_charges_shift,
            month_to_month_shift=dataset.synthetic_month_to_month_shift,
        )
        raw = generate_customers(dataset.synthetic_rows, dataset.synthetic_seed, drift)
        source = (
            f"synthetic(rows={dataset.synthetic_rows}, seed={dataset.synthetic_seed}, "
            f"monthly_charges_shift={drift.monthly_charges_shift:g}, "
            f"month_to_month_shift={drift.month_to_month_shift:g})"
        )
    else:
        source = dataset.source.strip()
        raw = read_table(source, dataset.max_bytes, dataset.timeout_seconds, home.scratch_dir)
    try:
        frame, report = normalise(raw, dataset.target, dataset.positive_label)
    except DatasetError as error:
        raise DatasetError(f"{source}: {error}") from error
    target = snake_case(dataset.target)
    id_column = _key_column(frame, dataset.id_column, source)
    excluded = [snake_case(name) for name in dataset.exclude_columns]
    unknown = [name for name in excluded if name not in frame.columns]
    if unknown:
        raise DatasetError(f"{source}: excluded column(s) not found: {', '.join(unknown)}")
    if id_column == target or target in excluded:
        raise DatasetError(f"{source}: the target {target!r} cannot be the key or excluded")
    table = CustomerTable(
        frame,
        dataset.dataset_name(),
        source,
        target,
        id_column,
        excluded,
        labels=(report.negative_label, report.positive_label),
    )
    return table, report


def _key_column(frame: pd.DataFrame, configured: str | None, source: str) -> str | None:
    if configured:
        name = snake_case(configured)
        if name not in frame.columns:
            raise DatasetError(
                f"{source}: customer key column {configured!r} not found; "
                f"columns are: {', '.join(frame.columns)}"
            )
        return name
    return next((name for name in KEY_COLUMN_NAMES if name in frame.columns), None)


@asset(group_name=GROUP, kinds={"pandas", "parquet"})
def raw_customers(
    context: AssetExecutionContext, dataset: DatasetResource, home: PlatformHome
) -> Output[CustomerTable]:
    """Customer records from the configured source, normalised and stored as a data version."""
    try:
        table, report = ingest_customers(dataset, home)
    except DatasetError as error:
        # A bad source is the user's to fix: say why plainly, without a stack trace to dig through.
        raise Failure(
            description=f"Cannot ingest {dataset.source!r}: {error}. "
            "The previous data version stays current.",
            metadata={"source": dataset.source, "target": dataset.target},
            # Retrying a bad file cannot help; retrying an unreachable server may.
            allow_retries=isinstance(error, SourceUnavailable),
        ) from error
    manifest = home.snapshots().save(
        table.frame, table.dataset, table.source, table.target, table.id_column
    )
    table.version = manifest.version
    context.log.info(
        "Ingested %s rows from %s as data version %s", manifest.rows, table.source, table.version
    )
    return Output(
        table,
        data_version=DataVersion(manifest.version),
        metadata=_ingestion_metadata(table, report, manifest, home),
    )


def _ingestion_metadata(
    table: CustomerTable,
    report: NormalisationReport,
    manifest: SnapshotManifest,
    home: PlatformHome,
) -> dict[str, Any]:
    frame = table.frame
    types = {column: str(dtype) for column, dtype in frame.dtypes.items()}
    return {
        "data_version": manifest.version,
        "dataset": table.dataset,
        "source": table.source,
        "target": table.target,
        "positive_label": report.positive_label,
        "customer_key": table.id_column or "(none)",
        "excluded_columns": ", ".join(table.excluded) or "(none)",
        "dagster/row_count": len(frame),
        "columns": len(frame.columns),
        "missing_cells": int(frame.isna().sum().sum()),
        "dagster/column_schema": TableSchema(
            columns=[TableColumn(name=str(column), type=kind) for column, kind in types.items()]
        ),
        "column_types": MetadataValue.md(markdown_table(["column", "type"], list(types.items()))),
        "normalisation": MetadataValue.md(_normalisation_summary(report)),
        "preview": MetadataValue.md(frame_preview(frame)),
        "snapshot": MetadataValue.path(str(home.snapshots().root / f"{manifest.version}.parquet")),
    }


def _normalisation_summary(report: NormalisationReport) -> str:
    rows: list[tuple[str, str]] = [
        (f"renamed `{old}`", f"`{new}`") for old, new in report.renamed.items()
    ]
    rows += [
        (f"coerced `{column}` to numbers", f"{count} values")
        for column, count in report.coerced.items()
    ]
    rows += [
        (f"blank `{column}` values now missing", str(count))
        for column, count in report.became_missing.items()
    ]
    rows.append(("target value read as churned (1)", repr(report.positive_label)))
    return markdown_table(["change", "detail"], rows)


@asset(group_name=GROUP, kinds={"pandas", "parquet"})
def labelled_customers(
    context: AssetExecutionContext,
    raw_customers: CustomerTable,
    dataset: DatasetResource,
    home: PlatformHome,
) -> Output[CustomerTable]:
    """The source's customers plus every new label, the latest observation of a customer winning.

    New labels are outcomes reported to the service (joined to the predictions' inputs) and
    files dropped in the landing folder. This is what the pipeline validates and trains on.
    """
    source = raw_customers
    batches = [
        read_batch(path, source, home.scratch_dir, dataset.max_bytes)
        for path in landing_files(home.landing_dir)
    ]
    for batch in batches:
        if not batch.accepted:
            moved = reject(batch, home.landing_dir)
            context.log.warning(
                "Rejected landing file %s: %s (moved to %s)", batch.path.name, batch.reason, moved
            )
    feedback = all_records(sorted(home.serving_dir.glob(f"*/{FEEDBACK}")))
    # The prediction log is the large one: read only when there are outcomes to match.
    predictions = (
        all_records(sorted(home.serving_dir.glob(f"*/{PREDICTIONS}")))
        if not feedback.empty
        else pd.DataFrame()
    )
    from_feedback, unmatched = feedback_rows(source, predictions, feedback)
    merged, added, replaced = merge_labels(
        source, [from_feedback, *(batch.rows for batch in batches if batch.rows is not None)]
    )
    new = NewLabels(
        table=source,
        from_feedback=len(from_feedback),
        unmatched_feedback=unmatched,
        batches=batches,
        added=added,
        replaced=replaced,
    )
    if merged is source.frame:
        table = source
    else:
        description = (
            f"{source.source} + {new.from_feedback} feedback + {new.from_landing} landing rows"
        )
        manifest = home.snapshots().save(
            merged, source.dataset, description, source.target, source.id_column
        )
        table = replace(source, frame=merged, source=description, version=manifest.version)
    context.log.info(
        "New data available: +%s rows (%s from feedback, %s from landing files, %s replacing "
        "older rows); data version %s",
        added,
        new.from_feedback,
        new.from_landing,
        replaced,
        table.version,
    )
    return Output(
        table,
        data_version=DataVersion(table.version),
        metadata=_labelled_metadata(table, new, home),
    )


def _labelled_metadata(table: CustomerTable, new: NewLabels, home: PlatformHome) -> dict[str, Any]:
    batches = [
        (
            batch.path.name,
            "accepted" if batch.accepted else "REJECTED",
            len(batch.rows) if batch.rows is not None else 0,
            batch.reason or "",
        )
        for batch in new.batches
    ]
    return {
        "new_data": f"New data available: +{new.added:,} rows",
        "data_version": table.version,
        "source_version": new.table.version,
        "dagster/row_count": len(table.frame),
        "new_rows": new.added,
        "replaced_rows": new.replaced,
        "rows_from_feedback": new.from_feedback,
        "unmatched_feedback": new.unmatched_feedback,
        "rows_from_landing_files": new.from_landing,
        "rejected_files": sum(1 for batch in new.batches if not batch.accepted),
        "landing_files": MetadataValue.md(
            markdown_table(["file", "status", "rows", "reason"], batches)
            if batches
            else "(no landing file)"
        ),
        "landing_folder": MetadataValue.path(str(home.landing_dir)),
        "snapshot": MetadataValue.path(str(home.snapshots().root / f"{table.version}.parquet")),
    }
