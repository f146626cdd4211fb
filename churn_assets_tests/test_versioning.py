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
