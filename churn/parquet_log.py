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

The monitoring assets read a log with `read_log`, which lets pyarrow read only the days asked for.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
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
        hidden = folder / f".{name}"
        try:
            pq.write_table(table, hidden)
            with open(hidden, "rb") as written:
                os.fsync(written.fileno())
            os.replace(hidden, folder / name)
        except BaseException:
            hidden.unlink(missing_ok=True)  # no half file left on a full disk
            raise


def read_log(folder: Path, since: date | None = None, until: date | None = None) -> pd.DataFrame:
    """Every record of a log, or of the days `since`..`until` (inclusive), in file order.

    An absent or empty log is an empty frame.
    """
    first = f"{PARTITION}={since:%Y-%m-%d}" if since else ""
    last = f"{PARTITION}={until:%Y-%m-%d}" if until else "~"
    files = [
        str(path)
        for path in sorted(folder.glob(f"{PARTITION}=*/part-*.parquet"))
        if first <= path.parent.name <= last
    ]
    if not files:
        return pd.DataFrame()
    # Files of model versions with other inputs have other columns: read them all under one
    # schema, a column missing from a file being null there.
    schemas = [pq.read_schema(path) for path in files]
    unified = (
        schemas[0]
        if all(schema.equals(schemas[0]) for schema in schemas)
        else pa.unify_schemas(schemas, promote_options="permissive")
    )
    table = ds.dataset(files, format="parquet", schema=unified).to_table()
    frame: pd.DataFrame = table.to_pandas()
    return frame
