"""The input schema of a trained model: the single source of truth for everything after training.

Recorded from the raw training data when a model is fitted, stored with its registry version
(`schema.json` beside the model, and inside it), and read by everything that meets the model's
inputs afterwards: the prediction service builds its request contract from it, the prediction
log its columns, drift monitoring its features, and the registry compares the schemas of two
versions before one replaces the other.

Each column has a kind (`number`, `integer`, `category`, `boolean`, `date`), whether it may be
missing,
a plausible range for numbers (the training range widened by its own span on each side, as the
validation baseline does, so that drift is left to drift monitoring) and the categories seen in
training. The customer key, when there is one, is not a model input: requests may carry it to
have it echoed back and logged.

This module imports neither Dagster nor BentoML.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

SCHEMA_ARTIFACT = "schema.json"
# Categories recorded per column; a column with more distinct values is free text to the schema
# (still one-hot encoded by the model, which pools the rare ones).
MAX_RECORDED_CATEGORIES = 500
MAX_TEXT_LENGTH = 256


class ColumnKind(StrEnum):
    """What a column's values are."""

    NUMBER = "number"
    INTEGER = "integer"
    CATEGORY = "category"
    BOOLEAN = "boolean"
    DATE = "date"


class ColumnSchema(BaseModel):
    """One input column of a model."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: ColumnKind
    nullable: bool = Field(description="Whether the column had missing values in training.")
    minimum: float | None = Field(default=None, description="Lowest plausible value (numbers).")
    maximum: float | None = Field(default=None, description="Highest plausible value (numbers).")
    categories: list[str] = Field(
        default_factory=list, description="Values seen in training (categories), sorted."
    )
    typical: Any = Field(
        default=None,
        description="A typical value (median or most frequent), for examples: no real record.",
    )


class SchemaChange(BaseModel):
    """One difference between two schemas that clients or the model would notice."""

    model_config = ConfigDict(frozen=True)

    column: str
    change: str

    def __str__(self) -> str:
        return f"{self.column}: {self.change}"


class ModelSchema(BaseModel):
    """The raw input columns a model was fitted on, and the customer key, if any."""

    model_config = ConfigDict(frozen=True)

    columns: list[ColumnSchema]
    key: str | None = Field(default=None, description="The customer key column, if any.")
    target: str = Field(description="The target the model predicts (not an input).")

    @classmethod
    def from_frame(
        cls, frame: pd.DataFrame, target: str, key: str | None, excluded: Sequence[str] = ()
    ) -> ModelSchema:
        """The schema of the training rows: every column but the target, key and exclusions."""
        dropped = {target, *excluded} | ({key} if key else set())
        columns = [
            column_schema(str(name), frame[name]) for name in frame.columns if name not in dropped
        ]
        return cls(columns=columns, key=key, target=target)

    @property
    def names(self) -> list[str]:
        """The input columns, in training order."""
        return [column.name for column in self.columns]

    def column(self, name: str) -> ColumnSchema:
        """One column by name (KeyError if the schema has none)."""
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)

    @property
    def fingerprint(self) -> str:
        """A short hash of what clients must send: names, kinds and nullability."""
        shape = [(c.name, c.kind.value, c.nullable) for c in self.columns]
        return hashlib.sha256(repr((shape, self.key)).encode()).hexdigest()[:12]

    def example(self) -> dict[str, Any]:
        """A realistic record: each column's typical value (no real customer's row)."""
        record: dict[str, Any] = {}
        if self.key:
            record[self.key] = "C-0001"
        for column in self.columns:
            record[column.name] = column.typical
        return record

    def keeping_nulls_of(self, previous: ModelSchema | None) -> ModelSchema:
        """The schema with every column `previous` let be missing still allowed to be.

        The pipeline fills missing values of any column, so a retrained model can score them;
        clients that send null for a column (a new customer's total charges) must keep being
        served, even if the newer training data happened to have no missing value there.
        """
        if previous is None:
            return self
        nullable = {column.name for column in previous.columns if column.nullable}
        return self.model_copy(
            update={
                "columns": [
                    column.model_copy(update={"nullable": True})
                    if column.name in nullable and not column.nullable
                    else column
                    for column in self.columns
                ]
            }
        )

    def changes_from(self, previous: ModelSchema) -> list[SchemaChange]:
        """What clients sending `previous`'s records would meet with this schema.

        A column this schema requires that `previous` did not have (a client does not send it),
        a column `previous` had that this one does not (a client sends it and is refused), and a
        column whose kind changed or that may no longer be missing. New categories and wider
        ranges are not changes: unseen categories are scored, and ranges are plausibility bounds.
        """
        before = {column.name: column for column in previous.columns}
        after = {column.name: column for column in self.columns}
        changes = [
            SchemaChange(column=name, change="new required column")
            for name in after
            if name not in before and not after[name].nullable
        ]
        changes += [
            SchemaChange(column=name, change="removed (clients still send it)")
            for name in before
            if name not in after
        ]
        for name in after.keys() & before.keys():
            old, new = before[name], after[name]
            if old.kind != new.kind:
                changes.append(
                    SchemaChange(column=name, change=f"kind {old.kind.value} -> {new.kind.value}")
                )
            elif old.nullable and not new.nullable:
                changes.append(SchemaChange(column=name, change="may no longer be missing"))
        if previous.key != self.key:
            changes.append(
                SchemaChange(
                    column=self.key or previous.key or "(key)",
                    change=f"customer key {previous.key!r} -> {self.key!r}",
                )
            )
        return sorted(changes, key=lambda change: change.column)


def column_schema(name: str, values: pd.Series) -> ColumnSchema:
    """The schema of one training column."""
    present = values.dropna()
    nullable = bool(values.isna().any())
    if pd.api.types.is_bool_dtype(values):
        typical = bool(present.mode().iloc[0]) if not present.empty else False
        return ColumnSchema(name=name, kind=ColumnKind.BOOLEAN, nullable=nullable, typical=typical)
    if pd.api.types.is_datetime64_any_dtype(values):
        # No plausibility range: the dates of live customers move on, which drift monitoring
        # watches; a request's date need only be one.
        return ColumnSchema(
            name=name, kind=ColumnKind.DATE, nullable=nullable, typical=iso_date(present)
        )
    if pd.api.types.is_numeric_dtype(values):
        integer = pd.api.types.is_integer_dtype(values)
        low, high = plausible_range(present)
        median = float(present.median()) if not present.empty else 0.0
        return ColumnSchema(
            name=name,
            kind=ColumnKind.INTEGER if integer else ColumnKind.NUMBER,
            nullable=nullable,
            minimum=low,
            maximum=high,
            typical=round(median) if integer else round(median, 2),
        )
    counts = present.astype(str).value_counts()
    categories = sorted(counts.index) if len(counts) <= MAX_RECORDED_CATEGORIES else []
    return ColumnSchema(
        name=name,
        kind=ColumnKind.CATEGORY,
        nullable=nullable,
        categories=categories,
        typical=str(counts.index[0]) if len(counts) else "",
    )


def parse_iso(text: str) -> datetime | None:
    """ISO 8601 text as a time (RFC 3339's spellings too: `t`, `z`); None if it is not one.

    The one reading of a date a request sends: the contract refuses what this does not read,
    and the model reads it as this does.
    """
    try:
        return datetime.fromisoformat(text.strip().upper())
    except ValueError:
        return None


def iso_date(dates: pd.Series) -> str:
    """The median of a column of dates, in ISO 8601: the date alone when every time is midnight."""
    if dates.empty:
        return "2024-01-01"
    median = pd.Timestamp(dates.sort_values().iloc[len(dates) // 2])
    midnight = bool((dates == dates.dt.normalize()).all())
    return median.date().isoformat() if midnight else median.isoformat() + "Z"


def plausible_range(values: pd.Series) -> tuple[float | None, float | None]:
    """The training range widened by its own span on each side, rounded outwards.

    A column that only takes 0 and 1 is a flag: exactly [0, 1]. A column that is never negative
    stays non-negative.
    """
    if values.empty:
        return None, None
    low, high = float(values.min()), float(values.max())
    if set(values.unique()) <= {0, 1}:
        return 0.0, 1.0
    span = (high - low) or abs(high) or 1.0
    return (
        0.0 if low >= 0 else round_out(low - span, down=True),
        round_out(high + span, down=False),
    )


def round_out(value: float, down: bool) -> float:
    """Round a bound outwards to 2 significant figures, for bounds a person can read."""
    if value == 0:
        return 0.0
    magnitude = 10 ** (math.floor(math.log10(abs(value))) - 1)
    rounded = (math.floor if down else math.ceil)(value / magnitude) * magnitude
    return float(round(rounded, 10))
