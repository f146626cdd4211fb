"""The value the data assets pass along: a customer table and the roles of its columns."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd

from churn.value import DecisionCosts


@dataclass
class DataQuality:
    """What was repaired or set aside on the way in: part of a data version, checked by the suite.

    Attributes:
        rows_read: rows as they arrived, before anything was set aside or dropped.
        coerced: column -> values that were there (not blank) and became missing: junk tokens,
            and words in a numeric column.
        quarantined: reason -> rows set aside for it.
        quarantined_by_column: column (the target or the key) -> rows set aside because of it.
        duplicates_dropped: exact duplicate rows of a customer, dropped.

    """

    rows_read: int = 0
    coerced: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, int] = field(default_factory=dict)
    quarantined_by_column: dict[str, int] = field(default_factory=dict)
    duplicates_dropped: int = 0

    @property
    def quarantined_rows(self) -> int:
        """Rows set aside, for every reason."""
        return sum(self.quarantined.values())

    def shares(self, columns: Iterable[str]) -> dict[str, float]:
        """Per column, the share of rows read whose value was coerced or that were set aside.

        Keys are `coerced_share__<column>` and `quarantined_share__<column>`: the one-row table
        the validation suite's `data_quality` expectations check.
        """
        rows = max(self.rows_read, 1)
        shares: dict[str, float] = {}
        for column in columns:
            shares[f"coerced_share__{column}"] = self.coerced.get(column, 0) / rows
            shares[f"quarantined_share__{column}"] = (
                self.quarantined_by_column.get(column, 0) / rows
            )
        return shares

    @classmethod
    def combined(cls, parts: Iterable[DataQuality]) -> DataQuality:
        """The quality of a table assembled from several parts (a source and new batches)."""
        total = cls()
        for part in parts:
            total.rows_read += part.rows_read
            total.duplicates_dropped += part.duplicates_dropped
            for mine, theirs in (
                (total.coerced, part.coerced),
                (total.quarantined, part.quarantined),
                (total.quarantined_by_column, part.quarantined_by_column),
            ):
                for key, count in theirs.items():
                    mine[key] = mine.get(key, 0) + count
        return total


@dataclass
class CustomerTable:
    """A normalised customer table, with what every later step needs to know about it.

    Attributes:
        frame: one row per customer, snake_case columns, the target as 0/1.
        dataset: the data set's name (keys its validation suite).
        source: where the rows came from.
        target: the target column.
        id_column: the customer key column, if any.
        excluded: columns never used as features.
        version: the content hash of `frame` (its data version).
        labels: the source's target values for retained and churned (0 and 1), as written.
        quality: what was coerced or set aside on the way in.
        quarantine: the rows set aside, each with its `quarantine_reason`.
        costs: what each decision costs (numbers or columns of `frame`), if configured.

    """

    frame: pd.DataFrame
    dataset: str
    source: str
    target: str
    id_column: str | None
    excluded: list[str] = field(default_factory=list)
    version: str = ""
    labels: tuple[str, str] = ("No", "Yes")
    quality: DataQuality = field(default_factory=DataQuality)
    quarantine: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    costs: DecisionCosts | None = None

    @property
    def inputs(self) -> list[str]:
        """The columns a model may learn from: all but the target, the key and the exclusions."""
        roles = {self.target, *self.excluded} | ({self.id_column} if self.id_column else set())
        return [str(column) for column in self.frame.columns if column not in roles]
