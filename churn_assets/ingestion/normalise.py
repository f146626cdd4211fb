"""Normalisation of a raw churn table: snake_case columns, numeric text coerced, target as 0/1.

Every data set goes through the same steps, whatever its source, so that the rest of the platform
(validation, features, serving) sees one shape: snake_case column names, numbers as numbers, text
as Arrow-backed strings, and a 0/1 integer target.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from churn_assets.errors import DatasetError

# Values read as the positive (churned) class when no positive label is configured.
DEFAULT_POSITIVE_LABELS = frozenset({"yes", "true", "1", "1.0", "y", "t"})
DEFAULT_NEGATIVE_LABELS = frozenset({"no", "false", "0", "0.0", "n", "f"})

_ACRONYM_BOUNDARY = re.compile(r"([A-Z]+)([A-Z][a-z])")
_WORD_BOUNDARY = re.compile(r"([a-z0-9])([A-Z])")
_NOT_ALPHANUMERIC = re.compile(r"[^0-9a-zA-Z]+")

# Arrow strings hold a million short values in a few MB where Python objects take ~60 MB, and
# pickle, compare and hash an order of magnitude faster.
TEXT_DTYPE = pd.StringDtype("pyarrow")
# Non-blank values tried before a whole text column is parsed as numbers.
COERCION_SAMPLE = 1_000


def snake_case(name: str) -> str:
    """`MonthlyCharges` -> `monthly_charges`, `customerID` -> `customer_id`, `No.` -> `no`."""
    name = _ACRONYM_BOUNDARY.sub(r"\1_\2", str(name).strip())
    name = _WORD_BOUNDARY.sub(r"\1_\2", name)
    return _NOT_ALPHANUMERIC.sub("_", name).strip("_").lower()


@dataclass
class NormalisationReport:
    """What normalisation changed, for the asset's metadata.

    Attributes:
        renamed: original column name -> snake_case name, for the names that changed.
        coerced: column -> number of non-blank text values turned into numbers.
        became_missing: column -> number of values (blank text) that became missing on coercion.
        positive_label: the target value read as churned (1).

    """

    renamed: dict[str, str] = field(default_factory=dict)
    coerced: dict[str, int] = field(default_factory=dict)
    became_missing: dict[str, int] = field(default_factory=dict)
    positive_label: str = ""
    negative_label: str = ""


def normalise_columns(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """Rename columns to snake_case; two columns that end with the same name are an error."""
    names = [str(column) for column in frame.columns]
    blank = [index for index, name in enumerate(names) if not snake_case(name)]
    if blank:
        raise DatasetError(
            f"column(s) at position {', '.join(str(i + 1) for i in blank)} have no usable name"
        )
    normalised = [snake_case(name) for name in names]
    clashes = {name: count for name, count in Counter(normalised).items() if count > 1}
    if clashes:
        pairs = list(zip(names, normalised, strict=True))
        detail = "; ".join(
            ", ".join(repr(original) for original, new in pairs if new == name) + f" -> {name!r}"
            for name in clashes
        )
        raise DatasetError(f"duplicated column names: {detail}")
    renamed = {old: new for old, new in zip(names, normalised, strict=True) if old != new}
    return frame.set_axis(normalised, axis=1), renamed


def coerce_numeric_text(frame: pd.DataFrame, report: NormalisationReport) -> pd.DataFrame:
    """Turn text columns whose every non-blank value is a number into numbers; the rest to text.

    Blank values (empty or whitespace, like the Telco `TotalCharges` of new customers) become
    missing, and how many did is recorded. A column with any non-numeric word stays text, stored
    as Arrow strings.
    """
    for column in frame.columns:
        values = frame[column]
        if not (pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values)):
            continue
        text = values.astype(TEXT_DTYPE)
        if not _sample_is_numeric(text):
            frame[column] = text
            continue
        stripped = text.str.strip()
        blank = stripped.isna() | (stripped == "")
        numbers = pd.to_numeric(stripped.mask(blank), errors="coerce")
        if numbers[~blank].isna().any():
            frame[column] = text
            continue
        frame[column] = _narrowest_numeric(numbers)
        report.coerced[column] = int((~blank).sum())
        newly_missing = int((blank & values.notna()).sum())
        if newly_missing:
            report.became_missing[column] = newly_missing
    return frame


def encode_target(
    frame: pd.DataFrame, target: str, positive_label: str | None, report: NormalisationReport
) -> pd.DataFrame:
    """Replace the target column by 0/1 integers, 1 meaning churned.

    Raises:
        DatasetError: the target is missing, has missing values, one class, more than two classes,
            or two classes of which none is recognisably the churned one.

    """
    if target not in frame.columns:
        raise DatasetError(
            f"target column {target!r} not found; columns are: {', '.join(frame.columns)}"
        )
    values = frame[target]
    missing = int(values.isna().sum())
    if missing:
        raise DatasetError(f"target column {target!r} has {missing} missing values")
    labels = values.astype(str).str.strip()
    classes = sorted(labels.unique())
    if len(classes) < 2:
        raise DatasetError(
            f"target column {target!r} has a single class ({classes[0]!r}): "
            "a churn model needs churned and retained customers"
        )
    if len(classes) > 2:
        shown = ", ".join(repr(c) for c in classes[:10])
        raise DatasetError(
            f"target column {target!r} has {len(classes)} classes ({shown}); churn must be binary"
        )
    positive = _positive_class(classes, target, positive_label)
    frame[target] = (labels == positive).astype(np.int8)
    report.positive_label = positive
    report.negative_label = next(c for c in classes if c != positive)
    return frame


def _positive_class(classes: list[str], target: str, positive_label: str | None) -> str:
    if positive_label is not None:
        wanted = str(positive_label).strip()
        matches = [c for c in classes if c == wanted] or [
            c for c in classes if c.lower() == wanted.lower()
        ]
        if not matches:
            raise DatasetError(
                f"positive label {wanted!r} is not a value of target column {target!r} "
                f"(values: {', '.join(repr(c) for c in classes)})"
            )
        return matches[0]
    positives = [c for c in classes if c.lower() in DEFAULT_POSITIVE_LABELS]
    negatives = [c for c in classes if c.lower() in DEFAULT_NEGATIVE_LABELS]
    if len(positives) == 1 and len(negatives) == 1:
        return positives[0]
    raise DatasetError(
        f"cannot tell which value of target column {target!r} means churned "
        f"(values: {', '.join(repr(c) for c in classes)}); set CHURN_POSITIVE_LABEL"
    )


def _sample_is_numeric(text: pd.Series) -> bool:
    """Whether the first non-blank values of a text column all read as numbers."""
    sample = text.dropna().head(4 * COERCION_SAMPLE).str.strip()
    sample = sample[sample != ""].head(COERCION_SAMPLE)
    return not sample.empty and bool(pd.to_numeric(sample, errors="coerce").notna().all())


def _narrowest_numeric(numbers: pd.Series) -> pd.Series:
    """Integers stay integers when nothing is missing; anything else is float64."""
    if numbers.isna().any():
        return numbers.astype("float64")
    as_float = numbers.astype("float64")
    if np.array_equal(as_float, np.round(as_float)) and as_float.abs().max() < 2**53:
        return numbers.astype("int64")
    return as_float


def normalise(
    frame: pd.DataFrame, target: str, positive_label: str | None = None
) -> tuple[pd.DataFrame, NormalisationReport]:
    """Normalise a raw churn table; `target` may be given in its raw or snake_case spelling."""
    report = NormalisationReport()
    frame, report.renamed = normalise_columns(frame.copy())
    frame = coerce_numeric_text(frame, report)
    frame = encode_target(frame, snake_case(target), positive_label, report)
    return frame, report
