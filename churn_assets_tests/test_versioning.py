import json
from pathlib import Path

import pandas as pd
import pytest

from churn.snapshots import SnapshotStore, content_hash


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame({"customer_id": ["a", "b", "c"], "tenure": [1, 2, 3], "churn": [0, 1, 0]})


def test_the_same_content_has_the_same_version(frame: pd.DataFrame) -> None:
    assert content_hash(frame) == content_hash(frame.copy())
    assert len(content_hash(frame)) == 16


@pytest.mark.parametrize(
    "change",
    [
        lambda f: f.assign(tenure=[1, 2, 4]),
        lambda f: f.rename(columns={"tenure": "months"}),
        lambda f: f.assign(tenure=f["tenure"].astype("float64")),
        lambda f: f.iloc[:2],
        lambda f: f.iloc[::-1],
    ],
    ids=["value", "column name", "column type", "rows dropped", "row order"],
)
def test_any_change_is_another_version(frame: pd.DataFrame, change: object) -> None:
    assert content_hash(change(frame)) != content_hash(frame)  # type: ignore[operator]


def test_a_version_is_loaded_back_exactly(tmp_path: Path, frame: pd.DataFrame) -> None:
    store = SnapshotStore(tmp_path)
    manifest = store.save(frame, "telco", "synthetic", "churn", "customer_id")
    pd.testing.assert_frame_equal(store.load(manifest.version), frame)
    assert store.manifest(manifest.version) == manifest
    assert manifest.rows == 3 and manifest.columns == 3


def test_saving_identical_data_again_keeps_one_snapshot(
    tmp_path: Path, frame: pd.DataFrame
) -> None:
    store = SnapshotStore(tmp_path)
    first = store.save(frame, "telco", "a.csv", "churn", None)
    second = store.save(frame.copy(), "telco", "b.csv", "churn", None)
    assert second == first
    assert len(list(tmp_path.glob("*.parquet"))) == 1
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [entry["version"] for entry in history] == [first.version, first.version]
    assert [manifest.version for manifest in store.versions()] == [first.version]


def test_an_unknown_version_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="no stored data version 'feedfacefeedface'"):
        SnapshotStore(tmp_path).load("feedfacefeedface")


def test_a_large_version_is_sampled_a_row_group_at_a_time(tmp_path: Path) -> None:
    import numpy as np
    import pyarrow.parquet as pq

    rows = 50_000
    frame = pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(rows)],
            "tenure": np.arange(rows) % 72,
            "contract": pd.array(np.where(np.arange(rows) % 3, "month", "year"), "string[pyarrow]"),
            "churn": np.arange(rows) % 2,
        }
    )
    store = SnapshotStore(tmp_path)
    version = store.save(frame, "telco", "x.csv", "churn", "customer_id").version
    # Rewritten in row groups of 7,000 rows, as a file of millions of rows is stored.
    path = tmp_path / f"{version}.parquet"
    pq.write_table(pq.read_table(path), path, row_group_size=7_000)
    assert pq.ParquetFile(path).num_row_groups == 8

    sample, total = store.sample(version, ["customer_id", "contract"], 1_000)
    assert (
        total == rows
        and len(sample) == 1_000
        and list(sample.columns)
        == [
            "customer_id",
            "contract",
        ]
    )
    assert sample["customer_id"].is_unique
    original = frame.set_index("customer_id")["contract"]
    assert (original.loc[sample["customer_id"]].to_numpy() == sample["contract"].to_numpy()).all()
    # Spread over the whole version (every row group), and the same for the same seed.
    numbers = sample["customer_id"].str.slice(1).astype(int)
    assert numbers.min() < 7_000 and numbers.max() >= 49_000
    again, _ = store.sample(version, ["customer_id", "contract"], 1_000)
    pd.testing.assert_frame_equal(again, sample)
    assert sample["contract"].dtype == "string[pyarrow]"

    whole, total = store.sample(version, ["tenure"], rows)
    assert total == rows and whole["tenure"].tolist() == frame["tenure"].tolist()
