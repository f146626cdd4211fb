"""The `raw_customers` asset: the configured data set, read, normalised and stored as a version."""

from collections.abc import Iterator, Mapping
from dataclasses import asdict, replace
from typing import Any

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    DataVersion,
    Failure,
    MetadataValue,
    Output,
    TableColumn,
    TableSchema,
    asset,
)

from churn.errors import DatasetError, SourceUnavailable
from churn.logs import FEEDBACK, PREDICTIONS, all_records
from churn.normalise import (
    CleaningRules,
    ColumnCoercion,
    NormalisationReport,
    normalise,
    snake_case,
)
from churn.snapshots import SnapshotManifest
from churn.sources import read_table
from churn.tables import CustomerTable
from churn.value import CostError
from churn_assets.ingestion.labelled import (
    NewLabels,
    combined_quality,
    feedback_rows,
    landing_files,
    merge_labels,
    read_batch,
    reject,
)
from churn_assets.ingestion.synthetic import SyntheticDrift, generate_customers
from churn_assets.markdown import frame_preview, markdown_table
from churn_assets.resources import DatasetResource, PlatformHome

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
        raw = read_table(
            source, dataset.max_bytes, dataset.timeout_seconds, home.scratch_dir, dataset.sheet
        )
    target = snake_case(dataset.target)
    excluded = [snake_case(name) for name in dataset.exclude_columns]
    try:
        costs = dataset.costs()
        frame, report = normalise(
            raw, dataset.target, dataset.positive_label, dataset.id_column, dataset.rules
        )
        unknown = [name for name in excluded if name not in frame.columns]
        if unknown:
            raise DatasetError(f"excluded column(s) not found: {', '.join(unknown)}")
        if costs is not None:
            # Cost columns say what a decision costs, never who churns: never features.
            costs = costs.renamed({name: snake_case(name) for name in costs.columns})
            costs.check_columns(frame)
            excluded += [column for column in costs.columns if column not in excluded]
        if report.id_column == target or target in excluded:
            raise DatasetError(f"the target {target!r} cannot be the key or excluded")
    except (DatasetError, CostError) as error:
        raise DatasetError(f"{source}: {error}") from error
    table = CustomerTable(
        frame,
        dataset.dataset_name(),
        source,
        target,
        report.id_column,
        excluded,
        labels=(report.negative_label, report.positive_label),
        quality=report.quality(target),
        quarantine=report.quarantine,
        costs=costs,
    )
    return table, report


COERCED_CHECK = "coerced_values"
QUARANTINE_CHECK = "rows_set_aside"


@asset(
    group_name=GROUP,
    kinds={"pandas", "parquet"},
    check_specs=[
        AssetCheckSpec(
            COERCED_CHECK,
            asset="raw_customers",
            description="No value was turned into missing: junk tokens (?, n/a, #N/A, ...) and "
            "words in numeric columns. Names the columns where some were.",
        ),
        AssetCheckSpec(
            QUARANTINE_CHECK,
            asset="raw_customers",
            description="No row was set aside (missing or unrecognised target, missing key, key "
            "repeated with different values). Over the tolerated share the asset fails instead.",
        ),
    ],
)
def raw_customers(
    context: AssetExecutionContext, dataset: DatasetResource, home: PlatformHome
) -> Iterator[Output[CustomerTable] | AssetCheckResult]:
    """Customer records from the configured source, normalised and stored as a data version."""
    try:
        table, report = ingest_customers(dataset, home)
    except DatasetError as error:
        # A bad source is the user's to fix: say why plainly, without a stack trace to dig through.
        problem = str(error).removeprefix(f"{dataset.source.strip()}: ")  # named just before
        raise Failure(
            description=f"Cannot ingest {dataset.source!r}: {problem}. "
            "The previous data version stays current.",
            metadata={"source": dataset.source, "target": dataset.target},
            # Retrying a bad file cannot help; retrying an unreachable server may.
            allow_retries=isinstance(error, SourceUnavailable),
        ) from error
    manifest = save_snapshot(
        home,
        table.frame,
        table.dataset,
        table.source,
        table.target,
        table.id_column,
        quarantine=table.quarantine,
        quality=asdict(table.quality),
    )
    table.version = manifest.version
    context.log.info(
        "Ingested %s rows from %s as data version %s (%s set aside)",
        manifest.rows,
        table.source,
        table.version,
        len(table.quarantine),
    )
    yield Output(
        table,
        data_version=DataVersion(manifest.version),
        metadata=_ingestion_metadata(table, report, manifest, home),
    )
    yield from quality_checks("raw_customers", table, report.columns, report.rules)


def quality_checks(
    asset_key: str,
    table: CustomerTable,
    columns: Mapping[str, ColumnCoercion],
    rules: CleaningRules,
) -> Iterator[AssetCheckResult]:
    """The warning checks of what normalisation coerced and set aside in a table."""
    coerced = {column: info for column, info in columns.items() if info.coerced}
    yield AssetCheckResult(
        check_name=COERCED_CHECK,
        asset_key=asset_key,
        passed=not coerced,
        severity=AssetCheckSeverity.WARN,
        description=(
            "Values turned into missing in: "
            + "; ".join(f"{c} ({info.coerced})" for c, info in coerced.items())
            if coerced
            else "No value was turned into missing."
        ),
        metadata={
            "columns": ", ".join(coerced) or "(none)",
            "values": sum(info.coerced for info in coerced.values()),
            **{f"{c}": info.describe(rules.numeric_min_share) for c, info in coerced.items()},
        },
    )
    quality = table.quality
    yield AssetCheckResult(
        check_name=QUARANTINE_CHECK,
        asset_key=asset_key,
        passed=not quality.quarantined_rows,
        severity=AssetCheckSeverity.WARN,
        description=(
            f"{quality.quarantined_rows} of {quality.rows_read} rows set aside: "
            + ", ".join(f"{reason} ({count})" for reason, count in quality.quarantined.items())
            if quality.quarantined_rows
            else "No row was set aside."
        ),
        metadata={
            "rows_set_aside": quality.quarantined_rows,
            "share": quality.quarantined_rows / max(quality.rows_read, 1),
            "max_share": rules.max_quarantine_share,
        },
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
        "coerced_values": MetadataValue.md(coercion_table(report.columns, report.rules)),
        **quarantine_metadata(table, home),
        "preview": MetadataValue.md(frame_preview(frame)),
        "snapshot": MetadataValue.path(str(home.snapshots().root / f"{manifest.version}.parquet")),
    }


def coercion_table(columns: Mapping[str, ColumnCoercion], rules: CleaningRules) -> str:
    """Per column, what normalisation turned into missing or kept as text, and examples."""
    if not columns:
        return "(nothing coerced)"
    return markdown_table(
        ["column", "kind", "junk -> missing", "non-numbers -> missing", "blank", "what happened"],
        [
            (
                column,
                info.kind,
                info.junk,
                info.unparsed,
                info.blank,
                info.describe(rules.numeric_min_share),
            )
            for column, info in columns.items()
        ],
    )


def quarantine_metadata(table: CustomerTable, home: PlatformHome) -> dict[str, Any]:
    """The rows set aside from a table: counts by reason, a sample, and where the file is."""
    quality = table.quality
    metadata: dict[str, Any] = {
        "rows_read": quality.rows_read,
        "rows_set_aside": quality.quarantined_rows,
        "duplicate_rows_dropped": quality.duplicates_dropped,
    }
    if quality.quarantined_rows:
        metadata |= {
            "set_aside_by_reason": MetadataValue.md(
                markdown_table(["reason", "rows"], list(quality.quarantined.items()))
            ),
            "set_aside_sample": MetadataValue.md(frame_preview(table.quarantine)),
        }
        if table.version:
            metadata["quarantine_file"] = MetadataValue.path(
                str(home.snapshots().quarantine_path(table.version))
            )
    return metadata


def _normalisation_summary(report: NormalisationReport) -> str:
    rows: list[tuple[str, str]] = [
        (f"renamed `{old}`", f"`{new}`") for old, new in report.renamed.items()
    ]
    rows += [(f"left out `{column}`", why) for column, why in report.dropped_columns.items()]
    rows += [
        (f"read `{column}` as numbers", f"{count} values")
        for column, count in report.numeric_text.items()
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
        read_batch(path, source, home.scratch_dir, dataset.max_bytes, dataset.rules)
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
    from_feedback, unmatched, feedback_report = feedback_rows(source, predictions, feedback)
    accepted = [batch for batch in batches if batch.rows is not None]
    merged, added, replaced = merge_labels(
        source, [from_feedback, *(batch.rows for batch in accepted if batch.rows is not None)]
    )
    new = NewLabels(
        table=source,
        from_feedback=len(from_feedback),
        unmatched_feedback=unmatched,
        batches=batches,
        added=added,
        replaced=replaced,
    )
    quality, quarantine = combined_quality(
        source, [feedback_report, *(batch.report for batch in accepted)]
    )
    if merged is source.frame and len(quarantine) == len(source.quarantine):
        table = source
    else:
        description = (
            f"{source.source} + {new.from_feedback} feedback + {new.from_landing} landing rows"
        )
        manifest = save_snapshot(
            home,
            merged,
            source.dataset,
            description,
            source.target,
            source.id_column,
            quarantine=quarantine,
            quality=asdict(quality),
        )
        table = replace(
            source,
            frame=merged,
            source=description,
            version=manifest.version,
            quality=quality,
            quarantine=quarantine,
        )
    context.log.info(
        "New data available: %s labelled rows (%s from feedback, %s from landing files): %s "
        "new customers, %s replacing the same customers' older rows; data version %s",
        added + replaced,
        new.from_feedback,
        new.from_landing,
        added,
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
        "new_data": f"New data available: {new.added + new.replaced:,} labelled rows "
        f"({new.added:,} new customers, {new.replaced:,} replacing older rows)",
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
        **quarantine_metadata(table, home),
        "landing_folder": MetadataValue.path(str(home.landing_dir)),
        "snapshot": MetadataValue.path(str(home.snapshots().root / f"{table.version}.parquet")),
    }


def save_snapshot(
    home: PlatformHome, frame: pd.DataFrame, *args: Any, **kwargs: Any
) -> SnapshotManifest:
    """`SnapshotStore.save`, with a disk that refuses the write reported as a plain failure.

    Nothing of the new version is kept (`SnapshotStore.save`), and this step's materialization
    does not happen: the previous data version stays current for every downstream asset.
    """
    try:
        return home.snapshots().save(frame, *args, **kwargs)
    except OSError as error:
        raise Failure(
            description=f"Cannot store the ingested data: {error}. The previous data version "
            "stays current; free space (or point CHURN_HOME at a larger disk) and run again.",
            metadata={"snapshots": str(home.snapshots().root)},
        ) from error
