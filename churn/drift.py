"""Data drift of production inputs against the data the production model learned from.

Drift is Evidently's `DataDriftPreset` with the population stability index (PSI) on every
column, so that the figures in Dagster, in MLflow and in the HTML report are one computation.
Evidently's PSI: a numeric column with more than 20 distinct reference values is cut into
equal-width bins over the range of both samples together (Sturges' rule for their number); any
other column is compared category by category. An empty bin counts as a share of 0.0001 (or a
millionth of the smallest non-empty share, when that is smaller), so that PSI stays finite.

    PSI = sum over bins of (current share - reference share) * ln(current share / reference share)

Missing values are left out of both samples. The brief calls a column drifted above PSI 0.20.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from evidently.core.report import Snapshot

DEFAULT_PSI_THRESHOLD = 0.20


@dataclass(frozen=True)
class ColumnDrift:
    """One column's PSI against the threshold."""

    column: str
    kind: str
    psi: float
    threshold: float

    @property
    def drifted(self) -> bool:
        """Whether the column's PSI is above the threshold."""
        return self.psi > self.threshold

    def describe(self) -> str:
        """The brief's wording: `Drift detected on monthly_charges - PSI = 0.23 (...)`."""
        if self.drifted:
            return (
                f"Drift detected on {self.column} - PSI = {self.psi:.2f} "
                f"(threshold > {self.threshold:.2f})"
            )
        return (
            f"No drift on {self.column} - PSI = {self.psi:.3f} (threshold > {self.threshold:.2f})"
        )


@dataclass
class DriftResult:
    """Per-column drift of one current sample against one reference sample."""

    columns: list[ColumnDrift]
    reference_rows: int
    current_rows: int
    threshold: float
    snapshot: Snapshot | None = field(default=None, repr=False)

    @property
    def drifted(self) -> list[ColumnDrift]:
        """The drifted columns, most drifted first."""
        return sorted((c for c in self.columns if c.drifted), key=lambda c: -c.psi)

    @property
    def share(self) -> float:
        """The share of monitored columns that drifted."""
        return len(self.drifted) / len(self.columns) if self.columns else 0.0

    def psi(self) -> dict[str, float]:
        """PSI by column."""
        return {c.column: c.psi for c in self.columns}

    def save_html(self, path: str) -> None:
        """Write Evidently's interactive report."""
        if self.snapshot is None:
            raise ValueError("this result holds no Evidently report")
        self.snapshot.save_html(path)


def column_kinds(frame: pd.DataFrame, columns: list[str]) -> dict[str, str]:
    """`numerical` for number columns, `categorical` for the rest."""
    return {
        column: "numerical"
        if pd.api.types.is_numeric_dtype(frame[column])
        and not pd.api.types.is_bool_dtype(frame[column])
        else "categorical"
        for column in columns
    }


def measure_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: list[str] | None = None,
    threshold: float = DEFAULT_PSI_THRESHOLD,
) -> DriftResult:
    """PSI of every column of `columns` (by default all of `reference`'s) between two samples.

    Raises:
        ValueError: a sample is empty, or lacks a monitored column.

    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    columns = list(reference.columns) if columns is None else columns
    for name, frame in (("reference", reference), ("current", current)):
        if frame.empty:
            raise ValueError(f"the {name} data is empty: drift needs rows on both sides")
        missing = [column for column in columns if column not in frame.columns]
        if missing:
            raise ValueError(f"the {name} data lacks monitored column(s): {', '.join(missing)}")
    kinds = column_kinds(reference, columns)
    definition = DataDefinition(
        numerical_columns=[c for c in columns if kinds[c] == "numerical"],
        categorical_columns=[c for c in columns if kinds[c] == "categorical"],
    )
    report = Report([DataDriftPreset(columns=columns, method="psi", threshold=threshold)])
    snapshot = report.run(
        Dataset.from_pandas(current[columns], data_definition=definition),
        Dataset.from_pandas(reference[columns], data_definition=definition),
    )
    values = _column_values(snapshot.dict())
    return DriftResult(
        columns=[ColumnDrift(c, kinds[c], float(values[c]), threshold) for c in columns],
        reference_rows=len(reference),
        current_rows=len(current),
        threshold=threshold,
        snapshot=snapshot,
    )


def _column_values(report: dict[str, Any]) -> dict[str, float]:
    values: dict[str, float] = {}
    for metric in report["metrics"]:
        config = metric.get("config", {})
        if config.get("type", "").endswith(":ValueDrift"):
            values[config["column"]] = float(metric["value"])
    return values
