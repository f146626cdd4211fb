"""Append-only, day-partitioned Parquet logs: the served predictions and the feedback received.

The serving process appends batches of records, column-wise as it scored them, to an in-memory
buffer (no I/O and no conversion on the request path) and a
background thread writes the buffer every `flush_seconds` as one new Parquet file per day of the
records it holds: `<folder>/date=YYYY-MM-DD/part-<time>-<pid>-<seq>.parquet`. A file is written
under a dot-name, synced to disk and renamed into place, so a reader never sees half a file and
several processes (service workers, the staging service) can append to the same folder.

Durability: `close()` (a graceful shutdown) writes everything still buffered; a crash of the
process loses at most the records of the last `flush_seconds`. A failed write keeps the records
in the buffer and is retried at the next flush.

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

    """

    def __init__(
        self,
        folder: Path,
        schema: pa.Schema,
        time_column: str,
        flush_seconds: float = 5.0,
        flush_records: int = 50_000,
        on_backlog: Callable[[int], None] = lambda records: None,
    ) -> None:
        if time_column not in schema.names:
            raise ValueError(f"the time column {time_column!r} is not in the log's schema")
        self.folder = folder
        self.schema = schema
        self.time_column = time_column
        self.flush_seconds = flush_seconds
        self.flush_records = flush_records
        self.on_backlog = on_backlog
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
        """Write every buffered record now; return how many were written."""
        with self._write_lock:
            with self._lock:
                pending, self._buffer = self._buffer, []
                rows = self._backlog
            if not pending:
                return 0
            try:
                self._write(pending)
            except Exception:
                with self._lock:  # keep them, oldest first, for the next attempt
                    self._buffer[:0] = pending
                raise
            with self._lock:
                self._backlog -= rows
                backlog = self._backlog
            self.on_backlog(backlog)
            self.written += rows
            return rows

    def start(self) -> ParquetLog:
        """Start the background writer."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"parquet-log:{self.folder.name}", daemon=True
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop the background writer and write what is left."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.flush()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            try:
                self.flush()
            except Exception:
                logger.exception("writing %s failed; the records stay buffered", self.folder)

    def _write(self, pending: list[tuple[Mapping[str, Sequence[Any]], pa.Schema]]) -> None:
        groups: dict[pa.Schema, list[Mapping[str, Sequence[Any]]]] = {}
        for batch, schema in pending:
            groups.setdefault(schema, []).append(batch)
        for schema, batches in groups.items():
            self._write_table(batches, schema)

    def _write_table(self, batches: list[Mapping[str, Sequence[Any]]], schema: pa.Schema) -> None:
        # One table from the concatenated columns: per-batch tables would cost a conversion per
        # request, and most requests hold one record.
        merged: dict[str, list[Any]] = {name: [] for name in schema.names}
        for batch in batches:
            rows = len(batch[self.time_column])
            for name, values in merged.items():
                values.extend(batch.get(name) or [None] * rows)
        # Column by column: converting Python objects holds the GIL, and one call for the whole
        # table would stall the requests being served for as long as it takes.
        table = pa.table(
            [pa.array(merged[field.name], type=field.type) for field in schema],
            schema=schema,
        )
        days = pc.strftime(table[self.time_column], format="%Y-%m-%d").to_numpy(
            zero_copy_only=False
        )
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        for day in sorted(set(days)):
            part = table.filter(pa.array(days == day)) if len(set(days)) > 1 else table
            folder = self.folder / f"{PARTITION}={day}"
            folder.mkdir(parents=True, exist_ok=True)
            name = f"part-{stamp}-{os.getpid()}-{next(self._sequence):06d}.parquet"
            hidden = folder / f".{name}"
            pq.write_table(part, hidden)
            with open(hidden, "rb") as written:
                os.fsync(written.fileno())
            os.replace(hidden, folder / name)


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
