"""What assets hand to each other: JSON values, content-addressed tables, nothing pickled."""

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from churn.codec import STORED, TableStore, decode, encode
from churn.metrics import HoldoutMetric
from churn.model.schema import ModelSchema
from churn.tables import CustomerTable, DataQuality
from churn_assets_tests.conftest import bank_customers


@dataclass
class Split:
    train: pd.DataFrame
    test: pd.DataFrame
    table: CustomerTable
    labels: tuple[str, str] = ("No", "Yes")
    metric: HoldoutMetric = HoldoutMetric.f1
    params: dict[str, Any] = field(default_factory=dict)
    at: datetime | None = None
    schema: ModelSchema | None = None
    model: Any = field(default=None, metadata={STORED: False})


def _split(frame: pd.DataFrame) -> Split:
    table = CustomerTable(
        frame=frame,
        dataset="bank",
        source="bank.csv",
        target="exited",
        id_column="customer_id",
        excluded=["surname"],
        version="abc",
        labels=("0", "1"),
        quality=DataQuality(rows_read=len(frame), coerced={"age": 2}),
    )
    return Split(
        train=frame.iloc[: len(frame) // 2],
        test=frame.iloc[len(frame) // 2 :],
        table=table,
        params={"C": np.float64(0.5), "penalty": None, "layers": [3, 2]},
        at=datetime(2026, 11, 28, 12, tzinfo=UTC),
        schema=ModelSchema.from_frame(frame, "exited", "customer_id", ["surname"]),
        model=LogisticRegression(),
    )


def _bank() -> pd.DataFrame:
    frame = bank_customers(rows=300)
    frame.columns = [name.lower() for name in frame.columns]
    return frame.rename(columns={"customerid": "customer_id"})


def test_a_value_with_tables_round_trips_and_each_table_is_stored_once(tmp_path: Path) -> None:
    tables = TableStore(tmp_path / "tables")
    split = _split(_bank())
    stored = json.loads(json.dumps(encode(split, tables)))
    # The whole frame, its two halves and the (empty) quarantine: four tables. Another value
    # holding the same tables (the next asset's) writes nothing new.
    assert len(list(tables.root.iterdir())) == 4
    encode(dataclasses.replace(split, labels=("stay", "leave")), tables)
    assert len(list(tables.root.iterdir())) == 4
    back = decode(stored, Split, tables)
    pd.testing.assert_frame_equal(back.train, split.train)  # index and dtypes kept
    pd.testing.assert_frame_equal(back.test, split.test)
    pd.testing.assert_frame_equal(back.table.frame, split.table.frame)
    assert back.table.quality == split.table.quality
    assert back.labels == ("No", "Yes") and isinstance(back.labels, tuple)
    assert back.table.labels == ("0", "1")
    assert back.metric is HoldoutMetric.f1
    assert back.params == {"C": 0.5, "penalty": None, "layers": [3, 2]}
    assert back.at == split.at
    assert back.schema == split.schema
    assert back.model is None  # in memory for its own step only


def test_renamed_classes_and_new_fields_read_old_values_and_a_misfit_is_named(
    tmp_path: Path,
) -> None:
    tables = TableStore(tmp_path / "tables")

    @dataclass
    class Before:
        name: str
        scores: dict[str, float]

    @dataclass
    class Renamed:  # another class, another module, one more field with a default
        name: str
        scores: dict[str, float]
        owner: str = "nobody"

    stored = encode(Before("v1", {"f1": 0.8}), tables)
    assert decode(stored, Renamed, tables) == Renamed("v1", {"f1": 0.8}, "nobody")

    @dataclass
    class NeedsMore:
        name: str
        threshold: float

    with pytest.raises(TypeError, match=r"registered_model: .*NeedsMore.*threshold"):
        decode(stored, NeedsMore, tables, "registered_model")


def test_what_has_no_stored_form_is_refused_naming_its_type(tmp_path: Path) -> None:
    @dataclass
    class Holds:
        model: Any

    with pytest.raises(TypeError, match="LogisticRegression has no stored form"):
        encode(Holds(LogisticRegression()), TableStore(tmp_path))
