"""The append-only, day-partitioned Parquet log behind the prediction log and feedback store."""

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from churn.parquet_log import (
    ParquetLog,
    compact_day,
    day_folders,
    last_written,
    live_parts,
    read_log,
)
from churn_assets.resources import PlatformHome

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


def _write_days(folder: Path, days: list[date], parts_per_day: int) -> pa.Table:
    """`parts_per_day` small parts for each day, as service flushes write them; all records."""
    tables = []
    for day in days:
        for part in range(parts_per_day):
            at = datetime(day.year, day.month, day.day, 1 + part % 22, tzinfo=UTC)
            table = pa.table(
                {
                    "at": pa.array([at, at], type=pa.timestamp("us", tz="UTC")),
                    "customer_id": [f"{day}-{part}-a", f"{day}-{part}-b"],
                    "score": [part / 100, None],
                },
                schema=SCHEMA,
            )
            target = (
                folder
                / f"date={day}"
                / f"part-{day:%Y%m%d}T{part:02d}0000000000-1-{part:06d}.parquet"
            )
            target.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, target)
            tables.append(table)
    return pa.concat_tables(tables)


def _ids(frame: pd.DataFrame) -> list[str]:
    return sorted(frame["customer_id"])


def test_a_year_of_small_files_compacts_to_one_per_day_and_sensors_look_at_two_days(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "log"
    year = [date(2026, 1, 1) + timedelta(days=offset) for offset in range(365)]
    written = _write_days(log, year, parts_per_day=4)
    assert len(list(log.glob("date=*/part-*.parquet"))) == 365 * 4

    # Per-tick work: the sensors' look at a log stats the parts of its last two days only.
    stats = []
    original = Path.stat

    def counted(path: Path, *args: Any, **kwargs: Any) -> Any:
        stats.append(path)
        return original(path, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(Path, "stat", counted)
        newest = last_written(log)
    parts = [path for path in stats if path.name.startswith("part-")]
    days = {(path if path.name.startswith("date=") else path.parent).name for path in stats}
    assert len(parts) == 2 * 4 and days == {"date=2026-12-30", "date=2026-12-31"}
    before = read_log(log)
    assert _ids(before) == sorted(written["customer_id"].to_pylist())
    assert len(read_log(log, since=date(2026, 12, 31))) == 8  # one day opened, not the year

    done = [compact_day(day) for day in day_folders(log)]
    assert {(c.parts_before, c.parts_after, c.records) for c in done} == {(4, 1, 8)}
    assert len(list(log.glob("date=*/part-*.parquet"))) == 365
    after = read_log(log)
    assert _ids(after) == _ids(before)
    assert (
        after.sort_values("customer_id")
        .reset_index(drop=True)
        .equals(before.sort_values("customer_id").reset_index(drop=True))
    )
    assert last_written(log) == newest  # compaction is not new data for the sensors
    again = compact_day(log / "date=2026-06-01")
    assert (again.parts_before, again.parts_after) == (1, 1)  # a compacted day is left alone


def test_compaction_is_safe_beside_a_writer_and_across_a_crash(tmp_path: Path) -> None:
    log = tmp_path / "log"
    day = date(2026, 11, 27)
    _write_days(log, [day], parts_per_day=5)
    folder = log / f"date={day}"
    originals = {path.name: path.read_bytes() for path in folder.glob("part-*.parquet")}

    compact_day(folder)
    # A crash after the compacted part was in place, before the merged parts were deleted:
    for name, content in originals.items():
        (folder / name).write_bytes(content)
    assert len(read_log(log)) == 10  # each record once, not twice

    # A service worker writes a late part of that day meanwhile.
    writer = ParquetLog(log, SCHEMA, "at")
    late = datetime(2026, 11, 27, 23, 59, tzinfo=UTC)
    writer.append({"at": [late], "customer_id": ["late"], "score": [0.5]})
    writer.flush()
    assert len(read_log(log)) == 11

    second = compact_day(folder)
    assert (second.parts_before, second.parts_after, second.records) == (2, 1, 11)
    assert [path.name for path in folder.glob("part-*.parquet")] == [
        path.name for path in live_parts(folder)
    ]
    assert len(list(folder.glob("part-*.parquet"))) == 1  # the leftovers are gone too
    assert _ids(read_log(log)) == sorted(
        [*(f"{day}-{p}-{s}" for p in range(5) for s in "ab"), "late"]
    )


def test_each_day_of_the_logs_is_a_dagster_partition_compacted_on_its_own(
    isolated_home: PlatformHome,
) -> None:
    from dagster import DagsterInstance, materialize

    from churn_assets.monitoring.compaction import LOG_DAYS, compacted_logs

    days = [date(2026, 11, 25), date(2026, 11, 26)]
    for alias in ("production", "staging"):
        for log in ("predictions", "feedback"):
            _write_days(isolated_home.serving_log(alias, log), days, parts_per_day=3)
    instance = DagsterInstance.ephemeral()
    for day in days:  # a backfill of two days, one run per partition
        result = materialize(
            [compacted_logs],
            partition_key=f"{day}",
            resources={"home": isolated_home},
            instance=instance,
        )
        [event] = result.get_asset_materialization_events()
        assert event.materialization.metadata["parts_before"].value == 12
        assert event.materialization.metadata["parts_after"].value == 4
        assert event.materialization.metadata["records"].value == 24
    for alias in ("production", "staging"):
        for log in ("predictions", "feedback"):
            folder = isolated_home.serving_log(alias, log)
            assert [len(live_parts(day)) for day in day_folders(folder)] == [1, 1]
            assert len(read_log(folder)) == 12
    # Per-day status, as the UI shows it: these two days done, the others not.
    assert instance.get_materialized_partitions(compacted_logs.key) == {"2026-11-25", "2026-11-26"}
    assert LOG_DAYS.get_first_partition_key() == "2026-01-01"
