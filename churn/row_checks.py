"""Rows of a scoring population checked against a model's input schema, a chunk at a time.

The rules are the request contract's (`churn.contract`), vectorised for millions of rows: a
number must parse and lie within the column's plausible range, an integer column takes whole
numbers, a column that was never missing in training may not be missing, a boolean is
true/false (or yes/no, 1/0, as spreadsheets write it), a date is a date (as the export spells
it, or ISO 8601), a category is text of at most 256 characters, and a row of a table with a
customer key has its key. A row that breaks a rule is set aside with the first rule it breaks,
naming the column and the value; it is never scored.

This module imports neither Dagster nor BentoML.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from churn.model.schema import MAX_TEXT_LENGTH, ColumnKind, ColumnSchema, ModelSchema
from churn.model.scoring import format_value
from churn.normalise import COERCION_SAMPLE, as_utc_dates, date_format, parse_dates, parse_numbers

TRUE_WORDS = frozenset({"true", "yes", "y", "t", "1", "1.0"})
FALSE_WORDS = frozenset({"false", "no", "n", "f", "0", "0.0"})
REJECTION_REASON = "rejection_reason"


class PopulationError(ValueError):
    """A population that cannot be scored at all (a model input column is absent)."""


@dataclass
class CheckedRows:
    """One chunk of a population, split into rows to score and rows set aside.

    Attributes:
        columns: the model's input columns of the accepted rows, in the types the model reads
            (numbers as float64, text and booleans as objects, missing as None/NaN).
        keys: the customer key of each accepted row, as text (None without a key column).
        rejected: the rows set aside, as they came, with a `rejection_reason`.
        accepted: positions of the accepted rows in the chunk.

    """

    columns: dict[str, np.ndarray]
    keys: np.ndarray | None
    rejected: pd.DataFrame
    accepted: np.ndarray

    def __len__(self) -> int:
        return len(self.accepted)


def missing_inputs(schema: ModelSchema, columns: list[str]) -> list[str]:
    """The model's input columns that a population lacks."""
    present = set(columns)
    return [name for name in schema.names if name not in present]


def check_rows(frame: pd.DataFrame, schema: ModelSchema) -> CheckedRows:
    """Check a chunk of a population against the schema (missing values as NA).

    Raises:
        PopulationError: a model input column is absent.

    """
    absent = missing_inputs(schema, list(frame.columns))
    if absent:
        raise PopulationError(
            f"the population lacks input column(s) of the model: {', '.join(absent)}"
        )
    rows = len(frame)
    reason = np.full(rows, None, dtype=object)
    columns: dict[str, np.ndarray] = {}
    for column in schema.columns:
        values, problems = _check_column(frame[column.name], column)
        columns[column.name] = values
        for mask, describe in problems:
            fresh = mask & (reason == None)  # noqa: E711 (element-wise comparison)
            if fresh.any():
                reason[fresh] = [describe(value) for value in frame[column.name].to_numpy()[fresh]]
    keys = None
    if schema.key and schema.key in frame.columns:
        key_values = frame[schema.key]
        missing_key = (
            key_values.isna().to_numpy()
            | (key_values.astype("string").str.strip().fillna("") == "").to_numpy()
        )
        fresh = missing_key & (reason == None)  # noqa: E711
        reason[fresh] = f"{schema.key}: missing customer key"
        keys = key_values.astype("string").str.strip().to_numpy(dtype=object)
    bad = reason != None  # noqa: E711
    accepted = np.flatnonzero(~bad)
    rejected = frame.iloc[np.flatnonzero(bad)].copy()
    rejected[REJECTION_REASON] = reason[bad].astype(str)
    if bad.any():
        columns = {name: values[accepted] for name, values in columns.items()}
        keys = keys[accepted] if keys is not None else None
    return CheckedRows(columns, keys, rejected, accepted)


Problem = tuple[np.ndarray, Callable[[Any], str]]


def _check_column(values: pd.Series, column: ColumnSchema) -> tuple[np.ndarray, list[Problem]]:
    """The column in the model's types, and (mask, describe) per broken rule."""
    name = column.name
    problems: list[Problem] = []
    if column.kind in (ColumnKind.NUMBER, ColumnKind.INTEGER):
        if pd.api.types.is_bool_dtype(values):
            flags = values.notna().to_numpy()
            return np.full(len(values), np.nan), [
                (flags, lambda v: f"{name}: {v!r} is not a number")
            ]
        numbers = (
            values.astype("float64")
            if pd.api.types.is_numeric_dtype(values)
            # As ingestion reads them: `34,67` and `$1,200` are numbers too.
            else parse_numbers(values.astype("string").str.strip(), 1.0)[0].astype("float64")
        )
        result = numbers.to_numpy(dtype="float64", na_value=np.nan)
        given = values.notna().to_numpy()
        missing = np.isnan(result)
        problems.append((given & missing, lambda v: f"{name}: {v!r} is not a number"))
        problems.append((np.isinf(result), lambda v: f"{name}: {v!r} is not finite"))
        if column.kind == ColumnKind.INTEGER:
            fractional = ~missing & ~np.isinf(result) & (np.floor(result) != result)
            problems.append((fractional, lambda v: f"{name}: {v!r} is not a whole number"))
        if column.minimum is not None and column.maximum is not None:
            low, high = column.minimum, column.maximum
            outside = ~missing & ((result < low) | (result > high))
            problems.append(
                (outside, lambda v: f"{name}: {format_value(v)} outside [{low:g}, {high:g}]")
            )
        if not column.nullable:
            problems.append((~given, lambda v: f"{name}: missing"))
        return result, problems
    if column.kind == ColumnKind.DATE:
        if pd.api.types.is_datetime64_any_dtype(values):
            dates = as_utc_dates(values)
        else:
            text = values.astype("string").str.strip()
            # The spelling most values follow; a value that follows none is set aside.
            written = date_format(text.dropna().head(COERCION_SAMPLE), 0.5)
            dates = parse_dates(text, written[0] if written else "ISO8601")
        given = values.notna().to_numpy()
        result = dates.to_numpy(dtype="datetime64[ns]")
        problems.append((given & np.isnat(result), lambda v: f"{name}: {v!r} is not a date"))
        if not column.nullable:
            problems.append((~given, lambda v: f"{name}: missing"))
        return result, problems
    if column.kind == ColumnKind.BOOLEAN:
        result = np.full(len(values), None, dtype=object)
        if pd.api.types.is_bool_dtype(values):
            present = values.notna().to_numpy()
            result[present] = values[present].astype(bool).to_numpy()
            unknown = np.zeros(len(values), dtype=bool)
        else:
            text = values.astype("string").str.strip().str.lower()
            truthy = text.isin(TRUE_WORDS).fillna(False).to_numpy(dtype=bool)
            falsy = text.isin(FALSE_WORDS).fillna(False).to_numpy(dtype=bool)
            result[truthy], result[falsy] = True, False
            present = values.notna().to_numpy()
            unknown = present & ~truthy & ~falsy
        problems.append((unknown, lambda v: f"{name}: {v!r} is not true or false"))
        if not column.nullable:
            problems.append((~present, lambda v: f"{name}: missing"))
        return result, problems
    present = values.notna().to_numpy()
    text = values.astype("string")
    result = text.to_numpy(dtype=object)
    result[~present] = None
    too_long = (text.str.len() > MAX_TEXT_LENGTH).fillna(False).to_numpy(dtype=bool)
    problems.append((too_long, lambda v: f"{name}: text longer than {MAX_TEXT_LENGTH} characters"))
    if not column.nullable:
        problems.append((~present, lambda v: f"{name}: missing"))
    return result, problems
