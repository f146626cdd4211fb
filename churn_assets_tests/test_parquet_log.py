"""The append-only, day-partitioned Parquet log behind the prediction log and feedback store."""

from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from churn.parquet_log import ParquetLog, read_log

SCHEMA = pa.schema(
    [("at", pa.timestamp("us", tz="UTC")), ("customer_id", pa.string()), ("score", pa.float64())]
)


def test_batches_are_written_per_day_and_read_back_in_order(tmp_path: Path) -> None:
    backlog: list[int] = []
    log = ParquetLog(tmp_path / "log", SCHEMA, "at", on_backlog=backlog.append)
    log.append(
        {
            "at": [datetime(2026, 11, 26, 23, 59, tzinfo=UTC), datetime(2026, 11, 27, tzinfo=UTC)],
            "customer_id": ["a", "b"],
            "score": [0.1, 0.2],
        }
    )
    log.append({"at": [datetime(2026, 11, 27, 8, tzinfo=UTC)], "customer_id": ["c"]})
    assert log.backlog == 3 and backlog == [2, 3]
    assert not (tmp_path / "log").exists()  # nothing touches the disk before a flush
    assert log.flush() == 3
    assert log.backlog == 0 and backlog[-1] == 0
    days = sorted(path.name for path in (tmp_path / "log").iterdir())
    assert days == ["date=2026-11-26", "date=2026-11-27"]
    everything = read_log(tmp_path / "log")
    assert sorted(everything["customer_id"]) == ["a", "b", "c"]
    assert everything.set_index("customer_id")["score"].isna().to_dict() == {
        "a": False,
        "b": False,
        "c": True,  # a column the batch lacked is null
    }
    assert read_log(tmp_path / "log", since=date(2026, 11, 27))["customer_id"].tolist() == [
        "b",
        "c",
    ]
    assert read_log(tmp_path / "absent").empty


def test_close_writes_what_is_buffered_and_a_failed_write_keeps_the_records(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "log"
    blocker.write_text("a file where the log's folder should be")
    log = ParquetLog(blocker, SCHEMA, "at", flush_seconds=3600).start()
    log.append({"at": [datetime.now(UTC)], "customer_id": ["x"], "score": [1.0]})
    with pytest.raises(OSError):
        log.flush()
    assert log.backlog == 1
    blocker.unlink()
    log.close()  # stops the writer thread and writes the record kept from the failed attempt
    assert read_log(blocker)["customer_id"].tolist() == ["x"]
