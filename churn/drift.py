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

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from churn.engine import column_groups

if TYPE_CHECKING:
    from evidently.core.report import Snapshot

    from churn.engine import Cluster

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
    # Evidently's reports of groups of columns measured apart (on a cluster), as HTML pages.
    parts: list[str] = field(default_factory=list, repr=False)

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
        """Write Evidently's interactive report (one page; a section per group of columns)."""
        if self.snapshot is not None:
            self.snapshot.save_html(path)
        elif self.parts:
            Path(path).write_text(_page_of(self.parts), encoding="utf-8")
        else:
            raise ValueError("this result holds no Evidently report")


def column_kinds(frame: pd.DataFrame, columns: list[str]) -> dict[str, str]:
    """`numerical` for number columns, `categorical` for the rest."""
    return {
        column: "numerical"
        if pd.api.types.is_numeric_dtype(frame[column])
        and not pd.api.types.is_bool_dtype(frame[column])
        else "categorical"
        for column in columns
    }


def _dates_as_days(
    frame: pd.DataFrame, columns: list[str], dates_of: pd.DataFrame | None = None
) -> pd.DataFrame:
    """`frame` with its date columns (those of `dates_of`, by default its own) as days.

    Dates are compared as the model reads them, a number of days: a shift of the customers'
    dates is numeric drift. Logged requests hold the dates as ISO 8601 text.
    """
    from churn.model.features import days_since_epoch

    typed = frame if dates_of is None else dates_of
    dates = [c for c in columns if pd.api.types.is_datetime64_any_dtype(typed[c])]
    if not dates:
        return frame
    return frame.assign(**{c: days_since_epoch(frame[c]) for c in dates})


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
    reference, current = (
        _dates_as_days(reference, columns),
        _dates_as_days(current, columns, reference),
    )
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


def measure_drift_on(
    cluster: Cluster,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: list[str],
    threshold: float = DEFAULT_PSI_THRESHOLD,
) -> DriftResult:
    """`measure_drift`, each group of columns measured on a worker of `cluster`.

    A column's PSI depends on that column's two samples alone, so the figures are those of one
    measurement of every column; the report is one page with a section per group.
    """
    groups = column_groups(columns, cluster.workers)
    results = [
        result
        for _, result in cluster.map_ordered(
            _measure_group,
            groups,
            shared=threshold,
            send=lambda group: (reference[group], current[group]),
        )
    ]
    return DriftResult(
        columns=[column for result in results for column in result.columns],
        reference_rows=len(reference),
        current_rows=len(current),
        threshold=threshold,
        parts=[result.parts[0] for result in results],
    )


def _measure_group(threshold: float, samples: tuple[pd.DataFrame, pd.DataFrame]) -> DriftResult:
    """One group's drift, as a cluster task: its report comes back as HTML, not as objects."""
    reference, current = samples
    result = measure_drift(reference, current, list(reference.columns), threshold)
    assert result.snapshot is not None
    return DriftResult(
        columns=result.columns,
        reference_rows=result.reference_rows,
        current_rows=result.current_rows,
        threshold=threshold,
        parts=[result.snapshot.get_html_str(as_iframe=False)],
    )


def _page_of(parts: list[str]) -> str:
    """One HTML page holding each group's report in a frame of its own."""
    frames = "\n".join(
        f'<section><h2>Columns, part {number} of {len(parts)}</h2><iframe srcdoc="'
        f'{html.escape(part, quote=True)}" style="width:100%;height:1200px;border:0">'
        "</iframe></section>"
        for number, part in enumerate(parts, start=1)
    )
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>Data drift</title></head>'
        f"<body><h1>Data drift (PSI)</h1>{frames}</body></html>"
    )


def _column_values(report: dict[str, Any]) -> dict[str, float]:
    values: dict[str, float] = {}
    for metric in report["metrics"]:
        config = metric.get("config", {})
        if config.get("type", "").endswith(":ValueDrift"):
            values[config["column"]] = float(metric["value"])
    return values
