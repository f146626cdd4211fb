"""`drift_report`: production inputs against the production model's data, one drift check."""

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    Config,
    Failure,
    MetadataValue,
    Output,
    asset,
)
from pydantic import Field

from churn.drift import DriftResult, measure_drift, measure_drift_on
from churn.published import publish
from churn.settings import settings
from churn_assets.markdown import markdown_table
from churn_assets.monitoring.common import (
    DRIFT_CHECK,
    DRIFT_REPORT,
    GROUP,
    MONITORING_DAYS,
    ReferenceData,
)
from churn_assets.resources import ComputeResource, MlflowResource, PlatformHome


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


def sampling_note(rows: int, total: int) -> str:
    """What a reference sample of `rows` of `total` rows may change in a PSI."""
    if total <= rows:
        return f"all {rows:,} rows of the data version"
    # PSI of a sample of n rows against the distribution it was drawn from is about chi^2 / n:
    # (bins - 1) / n on average, whatever the bins' shares.
    return (
        f"{rows:,} of {total:,} rows, a seeded uniform sample: it adds about (bins - 1) / {rows:,} "
        f"to a column's PSI, {99 / rows:.5f} for 100 bins or categories"
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
            "within the threshold. Its metadata holds each feature's PSI and verdict.",
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
    compute: ComputeResource,
) -> Iterator[Output[DriftSummary] | AssetCheckResult]:
    """Evidently's data drift report (PSI per feature), stored as HTML and logged to MLflow.

    One check, `feature_drift`, whatever the table: its key is known before any data is, so the
    code location defines the same checks from an empty home, after any run, and for any data
    set the launchpad names. The features are those of the version in production, read at run
    time; each one's PSI, threshold and verdict is in the check's metadata (`psi_by_column`).
    """
    reference, current = reference_customers, production_inputs
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
        "reference_sample": sampling_note(len(reference.frame), reference.total_rows),
        "current_rows": summary.current_rows,
        "psi_threshold": config.psi_threshold,
        "features": len(features),
    }
    result: DriftResult | None = None
    if summary.evaluated:
        engine = compute.engine()
        metadata["engine"] = engine.describe()
        if engine.distributed:
            with engine.session("drift") as cluster:
                result = measure_drift_on(
                    cluster, reference.frame, current, features, config.psi_threshold
                )
        else:
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

    check_metadata: dict[str, Any] = {
        "drifted": ", ".join(summary.drifted) or "(none)",
        "features": len(features),
        "reference_sample": metadata["reference_sample"],
    }
    if result is not None:
        check_metadata |= {
            "max_psi": max(summary.psi.values()),
            "psi_threshold": config.psi_threshold,
            "psi": MetadataValue.json(summary.psi),
            "psi_by_column": metadata["psi_by_column"],
        }
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
