"""The value the data assets pass along: a customer table and the roles of its columns."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd


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

    """

    frame: pd.DataFrame
    dataset: str
    source: str
    target: str
    id_column: str | None
    excluded: list[str] = field(default_factory=list)
    version: str = ""
    labels: tuple[str, str] = ("No", "Yes")
