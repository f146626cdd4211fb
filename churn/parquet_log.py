"""Append-only, day-partitioned Parquet logs: the served predictions and the feedback received.

The serving process appends batches of records, column-wise as it scored them, to an in-memory
buffer (no I/O and no conversion on the request path) and a
background thread writes the buffer every `flush_seconds` as one new Parquet file per day of the
records it holds: `<folder>/date=YYYY-MM-DD/part-<time>-<pid>-<seq>.parquet`. A file is written
under a dot-name, synced to disk and renamed into place, so a reader never sees half a file and
several processes (service workers, the staging service) can append to the same folder.

Durability: `close()` (a graceful shutdown) writes everything still buffered; a crash of the
process loses at most the records of the last `flush_seconds`. A failed write (a full disk)
keeps the records, converted to Arrow once, and retries at the next flush. The backlog is
bounded (`max_records`, `max_bytes`): beyond the bound it is written to a second folder
(`spill`, on another disk) if there is one, and moved back once the log's folder takes writes
again; if that fails too, the oldest records are dropped and counted (`dropped`, `on_drop`).
Memory and latency stay flat for as long as the disk is full.

The monitoring assets read a log with `read_log`, which opens only the days asked for. A daily
compaction (`compact_day`, run by the `compacted_logs` asset) merges a finished day's parts into
one file, so the files kept grow with the days, not with the flushes; sensors look only at the
last two days (`last_written`).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from itertools import count
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)

PARTITION = "date"
COMPACTED = "compacted"
MERGED_PARTS = b"churn.merged_parts"


class ParquetLog:
    """A buffered writer of one day-partitioned log.

    Args:
        folder: the log's folder (created on the first write).
        schema: columns and types of every record; columns a batch lacks are written as null.
        time_column: the timestamp column (UTC) that chooses a record's day partition.
        flush_seconds: how often the background thread writes the buffer.
        flush_records: a buffer this large is written without waiting for the interval.
        on_backlog: called with the number of buffered records after every append and write.
        max_records: most records kept in memory while writes fail.
        max_bytes: most bytes (as Arrow) kept in memory while writes fail.
        spill: a folder for the backlog beyond the bound (another disk), or None.
        on_drop: called with the number of records dropped beyond the bound.

    """

    def __init__(
        self,
        folder: Path,
        schema: pa.Schema,
        time_column: str,
        flush_seconds: float = 5.0,
        flush_records: int = 50_000,
        on_backlog: Callable[[int], None] = lambda records: None,
        max_records: int = 200_000,
        max_bytes: int = 64 * 1024**2,
        spill: Path | None = None,
        on_drop: Callable[[int], None] = lambda records: None,
    ) -> None:
        if time_column not in schema.names:
            raise ValueError(f"the time column {time_column!r} is not in the log's schema")
        self.folder = folder
        self.schema = schema
        self.time_column = time_column
        self.flush_seconds = flush_seconds
        self.flush_records = flush_records
        self.on_backlog = on_backlog
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.spill = spill
        self.on_drop = on_drop
        self.dropped = 0
        self.spilled = 0
        # Records already converted to Arrow, waiting for a write that succeeds.
        self._tables: list[pa.Table] = []
        self._buffer: list[tuple[Mapping[str, Sequence[Any]], pa.Schema]] = []
        self._backlog = 0
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sequence = count()
        self.written = 0

    @property
    def backlog(self) -> int:
        """Records appended but not yet on disk."""
        return self._backlog

    def append(self, batch: Mapping[str, Sequence[Any]], schema: pa.Schema | None = None) -> None:
        """Queue a batch of records (column name -> values) for the next write; no I/O.

        `schema` overrides the log's own for this batch (a model version with other inputs):
        batches of different schemas are written to different files.
        """
        rows = len(batch[self.time_column])
        with self._lock:
            self._buffer.append((batch, schema or self.schema))
            self._backlog += rows
            backlog = self._backlog
        self.on_backlog(backlog)
        if backlog >= self.flush_records:
            self._wake.set()

    def flush(self) -> int:
        """Write every buffered record now; return how many were written.

        Raises:
            OSError: the write failed (the records stay, within the bound).

        """
        with self._write_lock:
            with self._lock:
                pending, self._buffer = self._buffer, []
            if pending:
                self._tables += self._convert(pending)
            if not self._tables:
                return 0
            written = 0
            try:
                while self._tables:
                    self._write_days(self._tables[0], self.folder)
                    written += self._tables.pop(0).num_rows
            except Exception:
                self._forget(written)
                self._bound()
                raise
            self._forget(written)
            self.written += written
            if self.spill is not None:
                self._unspill()
            return written

    def _forget(self, rows: int) -> None:
        """Records no longer in memory (written, spilled or dropped)."""
        with self._lock:
            self._backlog -= rows
            backlog = self._backlog
        self.on_backlog(backlog)

    def _bound(self, force: bool = False) -> None:
        """Keep the backlog within the bound: spill it, or drop the oldest records.

        `force` spills whatever is left (a shutdown), within the bound or not.
        """
        rows = sum(table.num_rows for table in self._tables)
        size = sum(table.nbytes for table in self._tables)
        if not force and rows <= self.max_records and size <= self.max_bytes:
            return
        if self.spill is not None:
            try:
                while self._tables:
                    self._write_days(self._tables[0], self.spill)
                    moved = self._tables.pop(0).num_rows
                    self.spilled += moved
                    self._forget(moved)
                logger.warning(
                    "%s cannot be written: records spilled to %s", self.folder, self.spill
                )
                return
            except Exception:
                logger.exception("spilling to %s failed too", self.spill)
        if force:
            return
        dropped = 0
        while self._tables and (
            sum(t.num_rows for t in self._tables) > self.max_records
            or sum(t.nbytes for t in self._tables) > self.max_bytes
        ):
            dropped += self._tables.pop(0).num_rows
        if dropped:
            self.dropped += dropped
            self._forget(dropped)
            self.on_drop(dropped)
            logger.error(
                "%s cannot be written: dropped its %d oldest records (%d in all)",
                self.folder,
                dropped,
                self.dropped,
            )

    def _unspill(self) -> None:
        """Move spilled files back into the log's folder, now that it takes writes."""
        assert self.spill is not None
        for path in sorted(self.spill.glob(f"{PARTITION}=*/part-*.parquet")):
            target = self.folder / path.parent.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            hidden = target.with_name(f".{target.name}")
            try:
                with open(path, "rb") as source, open(hidden, "wb") as copy:
                    while block := source.read(1024**2):
                        copy.write(block)
                    copy.flush()
                    os.fsync(copy.fileno())
                os.replace(hidden, target)
                path.unlink()
            except OSError:
                hidden.unlink(missing_ok=True)
                logger.warning("moving %s back failed; it stays spilled for now", path)
                return

    def start(self) -> ParquetLog:
        """Start the background writer."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"parquet-log:{self.folder.name}", daemon=True
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop the background writer and write what is left (spilled, if the write fails).

        Raises:
            OSError: the records left could be written neither to the log nor to the spill
                folder (`backlog` says how many).

        """
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        try:
            self.flush()
        except Exception:
            if self.spill is None:
                raise
            with self._write_lock:
                self._bound(force=True)
            if self._tables:
                raise

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            try:
                self.flush()
            except Exception as error:  # one line per attempt: a full disk lasts
                logger.warning(
                    "writing %s failed (%s: %s); %d records kept, %d dropped so far",
                    self.folder,
                    type(error).__name__,
                    error,
                    self.backlog,
                    self.dropped,
                )

    def _convert(
        self, pending: list[tuple[Mapping[str, Sequence[Any]], pa.Schema]]
    ) -> list[pa.Table]:
        """Buffered batches as one Arrow table per schema, converted once."""
        groups: dict[pa.Schema, list[Mapping[str, Sequence[Any]]]] = {}
        for batch, schema in pending:
            groups.setdefault(schema, []).append(batch)
        tables = []
        for schema, batches in groups.items():
            table = self._table(batches, schema)
            days = pc.strftime(table[self.time_column], format="%Y-%m-%d")
            distinct = pc.unique(days).to_pylist()
            # One table per day: a retried write never writes a day twice.
            tables += (
                [table]
                if len(distinct) == 1
                else [table.filter(pc.equal(days, day)) for day in sorted(distinct)]
            )
        return tables

    def _table(self, batches: list[Mapping[str, Sequence[Any]]], schema: pa.Schema) -> pa.Table:
        # One table from the concatenated columns: per-batch tables would cost a conversion per
        # request, and most requests hold one record.
        merged: dict[str, list[Any]] = {name: [] for name in schema.names}
        for batch in batches:
            rows = len(batch[self.time_column])
            for name, values in merged.items():
                values.extend(batch.get(name) or [None] * rows)
        # Column by column: converting Python objects holds the GIL, and one call for the whole
        # table would stall the requests being served for as long as it takes.
        return pa.table(
            [pa.array(merged[field.name], type=field.type) for field in schema],
            schema=schema,
        )

    def _write_days(self, table: pa.Table, root: Path) -> None:
        """Write a table of one day's records as one new file under `root`."""
        day = pc.strftime(table[self.time_column][0], format="%Y-%m-%d").as_py()
        folder = root / f"{PARTITION}={day}"
        folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        name = f"part-{stamp}-{os.getpid()}-{next(self._sequence):06d}.parquet"
        _write_part(table, folder / name)


def _write_part(table: pa.Table, target: Path, mtime_ns: int | None = None) -> None:
    """Write a part under a dot-name, sync it to disk and rename it into place.

    A reader never sees half a file, and a failed write (a full disk) leaves none behind.
    `mtime_ns` sets the part's modification time before it appears.
    """
    hidden = target.with_name(f".{target.name}")
    try:
        pq.write_table(table, hidden)
        with open(hidden, "rb") as written:
            os.fsync(written.fileno())
        if mtime_ns is not None:
            os.utime(hidden, ns=(mtime_ns, mtime_ns))
        os.replace(hidden, target)
    except BaseException:
        hidden.unlink(missing_ok=True)
        raise


def day_folders(folder: Path, since: date | None = None, until: date | None = None) -> list[Path]:
    """A log's day partitions, oldest first, maybe only `since`..`until` (inclusive).

    Only the log folder's entry names are read: the cost grows with the days kept, not with
    their files.
    """
    first = f"{PARTITION}={since:%Y-%m-%d}" if since else ""
    last = f"{PARTITION}={until:%Y-%m-%d}" if until else "~"
    try:
        with os.scandir(folder) as entries:
            names = sorted(
                entry.name
                for entry in entries
                if entry.name.startswith(f"{PARTITION}=") and entry.is_dir()
            )
    except FileNotFoundError:
        return []
    return [folder / name for name in names if first <= name <= last]


def _is_compacted(part: Path) -> bool:
    return f"-{COMPACTED}-" in part.name


def _merged_into(part: Path) -> list[str]:
    """The part names a compacted part holds the records of."""
    metadata = pq.read_schema(part).metadata or {}
    names: list[str] = json.loads(metadata.get(MERGED_PARTS, b"[]"))
    return names


def _day_parts(day: Path) -> tuple[list[Path], set[str]]:
    """A day's parts a reader reads, and the names compacted parts say they merged."""
    parts = sorted(day.glob("part-*.parquet"))
    merged: set[str] = set()
    for part in parts:
        if _is_compacted(part):
            merged.update(_merged_into(part))
    return [part for part in parts if part.name not in merged], merged


def live_parts(day: Path) -> list[Path]:
    """The parts of a day a reader reads: each record once, before, during or after compaction.

    A compacted part names the parts it merged (in its Parquet metadata); those still on disk
    (compaction deletes them after the compacted part is in place) are left out.
    """
    return _day_parts(day)[0]


def last_written(folder: Path, days: int = 2) -> int:
    """When the newest part of a log was written (ns since the epoch), 0 for an empty log.

    Only the last `days` day partitions are looked at (a record is written on its own day, or
    the next one when it was buffered over midnight), so a sensor asking this every minute does
    the same work after a year as after a day. Compaction keeps its parts' newest time.
    """
    newest = 0
    for day in day_folders(folder)[-days:]:
        for part in day.glob("part-*.parquet"):
            try:
                newest = max(newest, part.stat().st_mtime_ns)
            except FileNotFoundError:  # merged and deleted meanwhile
                continue
    return newest


def _read_parts(files: list[Path]) -> pa.Table:
    # Files of model versions with other inputs have other columns: read them all under one
    # schema, a column missing from a file being null there.
    schemas = [pq.read_schema(path) for path in files]
    unified = (
        schemas[0]
        if all(schema.equals(schemas[0]) for schema in schemas)
        else pa.unify_schemas(schemas, promote_options="permissive")
    )
    table: pa.Table = ds.dataset(
        [str(path) for path in files], format="parquet", schema=unified.remove_metadata()
    ).to_table()
    return table


def read_log(folder: Path, since: date | None = None, until: date | None = None) -> pd.DataFrame:
    """Every record of a log, or of the days `since`..`until` (inclusive), in file order.

    An absent or empty log is an empty frame. A compaction running meanwhile is harmless: a
    part it deleted between listing and reading makes the read start again.
    """

    def read() -> pd.DataFrame:
        files = [part for day in day_folders(folder, since, until) for part in live_parts(day)]
        return _read_parts(files).to_pandas() if files else pd.DataFrame()

    for _ in range(4):
        try:
            return read()
        except FileNotFoundError:
            continue
    return read()


@dataclass(frozen=True)
class Compaction:
    """What compacting one day of a log did."""

    day: str
    parts_before: int
    parts_after: int
    records: int
    bytes_before: int
    bytes_after: int


def compact_day(day: Path) -> Compaction:
    """Merge a day's parts into one file, keeping every record once and in order.

    Safe beside writers (a part written meanwhile is not merged and stays; the next compaction
    takes it), readers (`live_parts`) and a crash at any point (the merged parts are deleted only
    once the compacted part is durably in place, and it names them, so leftovers are never read
    twice and are deleted by the next compaction). Two compactions of the same day wait for each
    other.
    """
    import fcntl

    with open(day / ".compaction.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        parts, merged = _day_parts(day)
        before = sum(p.stat().st_size for p in parts)
        if len(parts) <= 1:
            for leftover in merged:
                (day / leftover).unlink(missing_ok=True)
            records = pq.read_metadata(parts[0]).num_rows if parts else 0
            return Compaction(day.name, len(parts), len(parts), records, before, before)
        table = _read_parts(parts)
        merged |= {part.name for part in parts}
        table = table.replace_schema_metadata({MERGED_PARTS: json.dumps(sorted(merged)).encode()})
        stamp = parts[-1].name.removeprefix("part-").split("-")[0]
        target = day / f"part-{stamp}-{COMPACTED}-{uuid.uuid4().hex[:8]}.parquet"
        # The parts' newest time: for the sensors, compaction is not new data.
        _write_part(table, target, mtime_ns=max(part.stat().st_mtime_ns for part in parts))
        directory = os.open(day, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        for name in merged:
            (day / name).unlink(missing_ok=True)
        return Compaction(day.name, len(parts), 1, table.num_rows, before, target.stat().st_size)
