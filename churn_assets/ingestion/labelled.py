"""New labelled customers: outcomes reported to the service, and files dropped in a landing folder.

Two sources of labels arrive after the original data set:

- **Feedback.** Outcomes posted to `/feedback`, joined to the inputs of the prediction they are
  about (see `churn_assets.monitoring.logs.join_feedback`). Only for the Telco schema, which is
  the service's contract.
- **Landing files.** CSV or Parquet files of labelled customers in `$CHURN_HOME/landing/`, with
  the source's columns (an optional `observed_at` column dates each row; else the file's
  modification time does). A file that cannot be read, lacks or adds columns, has numbers that
  are not numbers, or target values that are not the source's two classes is moved to
  `landing/rejected/` beside a `.reason.txt` that says why; the other files are used.

A customer can appear more than once (in the source, in several files, in several outcomes); the
latest observation of a customer key wins, and the source's rows count as the oldest.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from churn_assets.errors import DatasetError
from churn_assets.ingestion.normalise import (
    DEFAULT_NEGATIVE_LABELS,
    DEFAULT_POSITIVE_LABELS,
    NormalisationReport,
    coerce_numeric_text,
    normalise_columns,
)
from churn_assets.ingestion.sources import read_table
from churn_assets.monitoring.logs import join_feedback
from churn_assets.tables import CustomerTable
from churn_assets.telco import FEATURES, looks_like_telco

OBSERVED_AT = "observed_at"
REJECTED = "rejected"
LANDING_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".txt", ".parquet", ".pq")


@dataclass
class LandingBatch:
    """A landing file: its rows (in the source's columns and types), or why it was refused."""

    path: Path
    rows: pd.DataFrame | None = None
    reason: str = ""

    @property
    def accepted(self) -> bool:
        """Whether the file's rows are used."""
        return self.rows is not None


@dataclass
class NewLabels:
    """What arrived besides the source, and what the labelled table became."""

    table: CustomerTable
    from_feedback: int = 0
    unmatched_feedback: int = 0
    batches: list[LandingBatch] = field(default_factory=list)
    added: int = 0
    replaced: int = 0

    @property
    def from_landing(self) -> int:
        """Rows taken from accepted landing files."""
        return sum(len(batch.rows) for batch in self.batches if batch.rows is not None)


def landing_files(folder: Path) -> list[Path]:
    """The data files waiting in the landing folder (not the rejected ones), oldest first."""
    if not folder.is_dir():
        return []
    files = [
        path
        for path in folder.iterdir()
        if path.is_file()
        and not path.name.startswith(".")
        and path.name.lower().endswith(LANDING_SUFFIXES)
    ]
    return sorted(files, key=lambda path: (path.stat().st_mtime_ns, path.name))


def read_batch(path: Path, source: CustomerTable, scratch: Path, max_bytes: int) -> LandingBatch:
    """A landing file checked against the source's columns, types and target classes."""
    try:
        raw = read_table(str(path), max_bytes, 30.0, scratch)
        frame, _ = normalise_columns(raw)
        frame = coerce_numeric_text(frame, NormalisationReport())
        rows = _conform(frame, source, datetime.fromtimestamp(path.stat().st_mtime, UTC))
    except DatasetError as error:
        return LandingBatch(path, reason=str(error))
    return LandingBatch(path, rows=rows)


def _conform(frame: pd.DataFrame, source: CustomerTable, modified: datetime) -> pd.DataFrame:
    """The batch in the source's column order and types, with an `observed_at` per row."""
    expected = list(source.frame.columns)
    missing = [column for column in expected if column not in frame.columns]
    extra = [column for column in frame.columns if column not in expected and column != OBSERVED_AT]
    if missing:
        raise DatasetError(f"missing column(s): {', '.join(missing)}")
    if extra:
        raise DatasetError(f"column(s) the source does not have: {', '.join(extra)}")
    if source.id_column and frame[source.id_column].isna().any():
        raise DatasetError(f"{int(frame[source.id_column].isna().sum())} rows have no customer key")
    observed = _observed_at(frame, modified)
    conformed: dict[str, pd.Series] = {}
    for column in expected:
        values = frame[column]
        wanted = source.frame[column].dtype
        if column == source.target:
            conformed[column] = _encode_labels(values, source)
        elif pd.api.types.is_numeric_dtype(wanted):
            numbers = pd.to_numeric(values, errors="coerce")
            bad = numbers.isna() & values.notna()
            if bad.any():
                raise DatasetError(
                    f"column {column!r} must hold numbers; found {values[bad].iloc[0]!r} "
                    f"({int(bad.sum())} such values)"
                )
            if pd.api.types.is_integer_dtype(wanted) and numbers.isna().any():
                raise DatasetError(f"column {column!r} has missing values; the source has none")
            try:
                conformed[column] = numbers.astype(wanted)
            except (TypeError, ValueError) as error:
                raise DatasetError(f"column {column!r} is not of type {wanted}: {error}") from error
        else:
            conformed[column] = values.astype(wanted)
    rows = pd.DataFrame(conformed, index=frame.index)
    rows[OBSERVED_AT] = observed
    return rows.reset_index(drop=True)


def _encode_labels(values: pd.Series, source: CustomerTable) -> pd.Series:
    retained, churned = source.labels
    text = values.astype(str).str.strip().str.lower()
    positive = text.isin({churned.lower()} | ({"1", "1.0"} & DEFAULT_POSITIVE_LABELS))
    negative = text.isin({retained.lower()} | ({"0", "0.0"} & DEFAULT_NEGATIVE_LABELS))
    unknown = ~(positive | negative) | values.isna()
    if unknown.any():
        shown = ", ".join(repr(v) for v in values[unknown].astype(str).unique()[:5])
        raise DatasetError(
            f"target column {source.target!r} has values other than {retained!r} and "
            f"{churned!r}: {shown}"
        )
    return positive.astype(source.frame[source.target].dtype)


def _observed_at(frame: pd.DataFrame, modified: datetime) -> pd.Series:
    if OBSERVED_AT not in frame.columns:
        return pd.Series(pd.Timestamp(modified), index=frame.index, dtype="datetime64[us, UTC]")
    parsed = pd.to_datetime(frame[OBSERVED_AT], errors="coerce", utc=True)
    bad = parsed.isna()
    if bad.any():
        raise DatasetError(
            f"column {OBSERVED_AT!r} must hold dates; found {frame[OBSERVED_AT][bad].iloc[0]!r}"
        )
    return parsed.astype("datetime64[us, UTC]")


def reject(batch: LandingBatch, landing: Path) -> Path:
    """Move a refused file to `landing/rejected/`, its reason beside it; return the new path."""
    folder = landing / REJECTED
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    destination = folder / f"{stamp}-{batch.path.name}"
    shutil.move(batch.path, destination)
    destination.with_name(destination.name + ".reason.txt").write_text(batch.reason + "\n")
    return destination


def feedback_rows(
    source: CustomerTable, predictions: pd.DataFrame, feedback: pd.DataFrame
) -> tuple[pd.DataFrame, int]:
    """Reported outcomes as rows of the source's table, and how many matched no prediction."""
    empty = source.frame.iloc[:0].assign(**{OBSERVED_AT: pd.Series(dtype="datetime64[us, UTC]")})
    if feedback.empty:
        return empty, 0
    if not (looks_like_telco(list(source.frame.columns)) and source.id_column):
        return empty, len(feedback)
    labelled = join_feedback(predictions, feedback)
    matched = labelled.rows
    if matched.empty:
        return empty, labelled.unmatched
    columns: dict[str, pd.Series] = {
        source.id_column: matched["customer_id"],
        **{name: matched[name] for name in FEATURES},
        source.target: matched["churned"].astype(bool),
    }
    rows = pd.DataFrame(columns)
    conformed = pd.DataFrame(
        {
            column: rows[column].astype(source.frame[column].dtype)
            if column in rows.columns
            else pd.Series(pd.NA, index=rows.index, dtype=source.frame[column].dtype)
            for column in source.frame.columns
        }
    )
    conformed[OBSERVED_AT] = matched[OBSERVED_AT].astype("datetime64[us, UTC]").to_numpy()
    return conformed, labelled.unmatched


def merge_labels(
    source: CustomerTable, new_rows: list[pd.DataFrame]
) -> tuple[pd.DataFrame, int, int]:
    """The source's rows with the new ones: the latest observation of each customer key wins.

    Returns the merged frame (the source's rows, in order, then the new ones by observation
    time), the rows added and the source rows replaced.
    """
    new = pd.concat(
        [rows for rows in new_rows if not rows.empty] or [new_rows[0]], ignore_index=True
    )
    if new.empty:
        return source.frame, 0, 0
    new = new.sort_values(OBSERVED_AT, kind="stable").drop(columns=[OBSERVED_AT])
    key = source.id_column
    kept = source.frame
    replaced = 0
    if key:
        new = new.drop_duplicates(key, keep="last")
        superseded = kept[key].isin(new[key])
        replaced = int(superseded.sum())
        kept = kept[~superseded]
    merged = pd.concat([kept, new], ignore_index=True)
    return merged.astype(source.frame.dtypes.to_dict()), len(new) - replaced, replaced
