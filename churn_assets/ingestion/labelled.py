"""New labelled customers: outcomes reported to the service, and files dropped in a landing folder.

Two sources of labels arrive after the original data set:

- **Feedback.** Outcomes posted to `/feedback`, joined to the inputs of the prediction they are
  about (see `churn.logs.join_feedback`): by the prediction's id, or by the
  customer key when the table has one. The inputs of the prediction are the source's columns
  (the model's input schema is the table's), the key comes from the log, the label from the
  outcome.
- **Landing files.** CSV or Parquet files of labelled customers in `$CHURN_HOME/landing/`, with
  the source's columns (an optional `observed_at` column dates each row; else the file's
  modification time does).

Every new row meets the rules the source met (`churn.normalise`): junk tokens
are missing values, words in a numeric column become missing and are counted, and rows with a
missing or unrecognised target, a missing key or a key repeated with different values are set
aside with their reason. A file that cannot be read, lacks or adds columns, has a numeric column
of which fewer than `numeric_min_share` of the values are numbers, or more rows set aside than
`max_quarantine_share` is moved to `landing/rejected/` beside a `.reason.txt` that says why; the
other files are used.

A customer can appear more than once (in the source, in several files, in several outcomes); the
latest observation of a customer key wins, and the source's rows count as the oldest.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churn.errors import DatasetError
from churn.logs import join_feedback
from churn.normalise import (
    COERCION_SAMPLE,
    DEFAULT_NEGATIVE_LABELS,
    DEFAULT_POSITIVE_LABELS,
    JUNK_TOKENS,
    MISSING_TARGET,
    QUARANTINE_REASON,
    UNRECOGNISED_TARGET,
    CleaningRules,
    ColumnCoercion,
    NormalisationReport,
    as_utc_dates,
    coerce_dates,
    coerce_text_column,
    date_format,
    enforce_quarantine_limit,
    normalise_columns,
    set_aside_keys,
    set_aside_malformed,
)
from churn.sources import read_table
from churn.tables import CustomerTable, DataQuality

OBSERVED_AT = "observed_at"
REJECTED = "rejected"
QUARANTINE_ORIGIN = "quarantine_origin"
LANDING_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".txt", ".parquet", ".pq")


@dataclass
class LandingBatch:
    """A landing file: its rows (in the source's columns and types), or why it was refused.

    Attributes:
        path: the file.
        rows: the usable rows, with an `observed_at` each; None when the file was refused.
        reason: why the file was refused.
        report: what the rules coerced and set aside in it.

    """

    path: Path
    rows: pd.DataFrame | None = None
    reason: str = ""
    report: NormalisationReport = field(default_factory=NormalisationReport)

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


def read_batch(
    path: Path,
    source: CustomerTable,
    scratch: Path,
    max_bytes: int,
    rules: CleaningRules | None = None,
) -> LandingBatch:
    """A landing file checked against the source's columns and types, by the source's rules."""
    report = NormalisationReport(rules=rules or CleaningRules())
    try:
        raw = read_table(str(path), max_bytes, 30.0, scratch)
        report.rows_read = len(raw)
        frame, _ = normalise_columns(set_aside_malformed(raw, report))
        modified = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        rows = conform_rows(frame, source, modified, report)
        enforce_quarantine_limit(report, f"landing file {path.name}")
    except DatasetError as error:
        return LandingBatch(path, reason=str(error), report=report)
    if not report.quarantine.empty:
        report.quarantine[QUARANTINE_ORIGIN] = path.name
    return LandingBatch(path, rows=rows, report=report)


def conform_rows(
    frame: pd.DataFrame, source: CustomerTable, modified: datetime, report: NormalisationReport
) -> pd.DataFrame:
    """New rows in the source's column order and types, by the rules the source met.

    Junk tokens become missing; words in a numeric column become missing (the column is refused
    when fewer than `numeric_min_share` of its values are numbers); rows with a missing or
    unrecognised target, a missing key or a key repeated with different values are set aside in
    `report.quarantine`. Each row gets an `observed_at` (its own column, else `modified`).

    Excluded columns may be absent (they are then missing in every row): nothing reads them.

    Raises:
        DatasetError: the columns are not the source's, a numeric column holds text, or the dates
            of `observed_at` are not dates.

    """
    expected = list(source.frame.columns)
    # Excluded columns are read by nothing: new rows may leave them out.
    optional = set(source.excluded)
    missing = [c for c in expected if c not in frame.columns and c not in optional]
    extra = [column for column in frame.columns if column not in expected and column != OBSERVED_AT]
    if missing:
        raise DatasetError(f"missing column(s): {', '.join(missing)}")
    absent = [c for c in expected if c in optional and c not in frame.columns]
    frame = frame.assign(**{c: pd.Series(pd.NA, index=frame.index, dtype=object) for c in absent})
    if extra:
        raise DatasetError(f"column(s) the source does not have: {', '.join(extra)}")
    observed = _observed_at(frame, modified)
    conformed: dict[str, pd.Series] = {}
    for column in expected:
        values = frame[column]
        if column == source.target:
            conformed[column] = values
            continue
        wanted = source.frame[column].dtype
        if column in optional and values.isna().all():
            numeric = pd.api.types.is_numeric_dtype(wanted)
            conformed[column] = pd.Series(
                np.nan if numeric else pd.NA,
                index=values.index,
                dtype="float64" if numeric else wanted,
            )
            continue
        conformed[column] = _conform_column(column, values, wanted, report)
    rows = pd.DataFrame(conformed, index=frame.index)
    rows[OBSERVED_AT] = observed
    rows = _encode_labels(rows, source, report)
    if source.id_column:
        # A customer observed several times: its latest observation is the one that counts.
        latest = rows.groupby(source.id_column, dropna=False)[OBSERVED_AT].transform("max")
        rows = rows[(rows[OBSERVED_AT] == latest) | rows[source.id_column].isna()]
    rows = set_aside_keys(rows, source.id_column, report, source.target)
    if not report.quarantine.empty:
        report.quarantine = report.quarantine.drop(columns=[OBSERVED_AT])
    return rows.reset_index(drop=True)


def _conform_column(
    column: str, values: pd.Series, wanted: Any, report: NormalisationReport
) -> pd.Series:
    """One column of new rows as the source's type, its junk read as missing."""
    is_text = pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values)
    if pd.api.types.is_datetime64_any_dtype(wanted):
        return _conform_dates(column, values, is_text, report)
    numeric = pd.api.types.is_numeric_dtype(wanted) and not pd.api.types.is_bool_dtype(wanted)
    info = ColumnCoercion(kind="number" if numeric else "text")
    if is_text:
        values, info = coerce_text_column(values, report.rules.numeric_min_share, numeric)
        if numeric and (info.parsed_share or 0.0) < report.rules.numeric_min_share:
            raise DatasetError(
                f"column {column!r} must hold numbers, as in the source; "
                f"{info.parsed_share or 0.0:.0%} of its values are "
                f"(e.g. {', '.join(repr(v) for v in info.unparsed_examples)})"
            )
    if info.coerced or info.blank:
        report.columns[column] = info
    try:
        if pd.api.types.is_integer_dtype(wanted) and values.isna().any():
            return values.astype("float64")  # as the source would be, had it missed values
        conformed: pd.Series = values.astype(wanted)
        return conformed
    except (TypeError, ValueError) as error:
        raise DatasetError(f"column {column!r} is not of type {wanted}: {error}") from error


def _conform_dates(
    column: str, values: pd.Series, is_text: bool, report: NormalisationReport
) -> pd.Series:
    """A date column of new rows, as UTC times without a time zone.

    However this file spells its dates: outcomes joined to logged requests hold ISO 8601 text.
    """
    if pd.api.types.is_datetime64_any_dtype(values):
        return as_utc_dates(values)
    if not is_text:
        if values.isna().all():
            return pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
        raise DatasetError(f"column {column!r} must hold dates, as in the source")
    text, info = coerce_text_column(values, report.rules.numeric_min_share, numeric=False)
    present = text.dropna().str.strip()
    written = date_format(present.head(COERCION_SAMPLE), report.rules.numeric_min_share)
    if written is None and not present.empty:
        raise DatasetError(
            f"column {column!r} must hold dates, as in the source; its values do not read as "
            f"dates in one spelling (e.g. {', '.join(repr(v) for v in present.unique()[:5])})"
        )
    dates, info = coerce_dates(text, written or ("ISO8601", "as ISO 8601"), values, info)
    if info.coerced or info.blank:
        report.columns[column] = info
    return dates


def _encode_labels(
    rows: pd.DataFrame, source: CustomerTable, report: NormalisationReport
) -> pd.DataFrame:
    """The target as the source's 0/1; rows without a recognisable label go to quarantine."""
    retained, churned = source.labels
    target = source.target
    raw = rows[target]
    text = raw.astype("string").str.strip().str.lower()
    missing = (text.isna() | (text == "") | text.isin(JUNK_TOKENS)).fillna(True).astype(bool)
    positive = text.isin({churned.lower()} | DEFAULT_POSITIVE_LABELS).fillna(False).astype(bool)
    negative = text.isin({retained.lower()} | DEFAULT_NEGATIVE_LABELS).fillna(False).astype(bool)
    unusable = missing | ~(positive | negative)
    report.positive_label, report.negative_label = churned, retained
    if unusable.any():
        reasons = np.where(missing[unusable], MISSING_TARGET, UNRECOGNISED_TARGET)
        rejected = rows[unusable].copy()
        rejected[target] = raw[unusable].astype("string")
        rejected[QUARANTINE_REASON] = reasons
        report.unrecognised_labels = [
            str(value) for value in pd.unique(raw[unusable & ~missing].astype(str))[:5]
        ]
        report.quarantine = pd.concat(
            [part for part in (report.quarantine, rejected) if not part.empty], ignore_index=True
        )
        rows = rows[~unusable]
        positive = positive[~unusable]
    return rows.assign(**{target: positive.astype(source.frame[target].dtype)})


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
) -> tuple[pd.DataFrame, int, NormalisationReport]:
    """Reported outcomes as rows of the source's table, by the rules every new row meets.

    Returns the rows, how many outcomes matched no prediction, and what the rules did.
    """
    report = NormalisationReport()
    empty = source.frame.iloc[:0].assign(**{OBSERVED_AT: pd.Series(dtype="datetime64[us, UTC]")})
    if feedback.empty:
        return empty, 0, report
    labelled = join_feedback(predictions, feedback)
    matched = labelled.rows
    if matched.empty:
        return empty, labelled.unmatched, report
    inputs = source.inputs
    if any(column not in matched.columns for column in inputs):
        # Predictions of a model of another table (the source changed since): not its rows.
        return empty, len(feedback), report
    columns: dict[str, pd.Series] = {
        **{name: matched[name] for name in inputs},
        source.target: matched["churned"].astype(bool),
    }
    if source.id_column:
        columns[source.id_column] = matched["customer_id"]
    rows = pd.DataFrame(
        {
            column: columns.get(column, pd.Series(pd.NA, index=matched.index, dtype=object))
            for column in source.frame.columns
        }
    )
    rows[OBSERVED_AT] = matched[OBSERVED_AT].astype("datetime64[us, UTC]").to_numpy()
    report.rows_read = len(rows)
    conformed = conform_rows(rows, source, datetime.now(UTC), report)
    if not report.quarantine.empty:
        report.quarantine[QUARANTINE_ORIGIN] = "feedback"
    return conformed, labelled.unmatched, report


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
    dtypes = {
        # A missing number in a new row makes an integer column float, as in the source.
        column: "float64"
        if pd.api.types.is_integer_dtype(dtype) and new[column].isna().any()
        else dtype
        for column, dtype in source.frame.dtypes.items()
    }
    return merged.astype(dtypes), len(new) - replaced, replaced


def combined_quality(
    source: CustomerTable, reports: list[NormalisationReport]
) -> tuple[DataQuality, pd.DataFrame]:
    """The quality figures and quarantine of the source together with its new rows."""
    qualities = [source.quality, *(report.quality(source.target) for report in reports)]
    parts = [source.quarantine, *(report.quarantine for report in reports)]
    parts = [part for part in parts if not part.empty]
    quarantine = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return DataQuality.combined(qualities), quarantine
