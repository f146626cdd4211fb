"""Content-addressed snapshots of ingested data (the brief's data versioning).

A version is the hash of the normalised table: column names, their types and every value, in row
order, and of the rows set aside from it (its quarantine), if any. The same data always gets the
same version, wherever it came from, and any past version can be loaded back by its hash, with its
quarantine. Snapshots are Parquet files, written once and never modified.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from churn.files import arrow_to_pandas, read_parquet, write_atomically

VERSION_LENGTH = 16
QUARANTINE_SUFFIX = ".quarantine.parquet"


def content_hash(
    frame: pd.DataFrame, quarantine: pd.DataFrame | None = None, index: bool = False
) -> str:
    """A stable hash of a table's columns, types and values (16 hex characters).

    The rows set aside from it count too: two inputs that differ only in their unusable rows are
    two versions. A table with nothing set aside hashes as it always did. With `index`, the row
    labels count too (a split of a table keeps its rows' labels).
    """
    digest = hashlib.sha256()
    for part in (frame, quarantine):
        if part is None or (part is quarantine and part.empty):
            continue
        schema = [[str(name), str(dtype)] for name, dtype in part.dtypes.items()]
        if index:
            schema.append([str(name) for name in part.index.names])
        digest.update(json.dumps(schema).encode())
        row_hashes = pd.util.hash_pandas_object(part, index=index, categorize=True)
        digest.update(row_hashes.to_numpy().tobytes())
    return digest.hexdigest()[:VERSION_LENGTH]


@dataclass(frozen=True)
class SnapshotManifest:
    """What is known of a stored version besides its rows."""

    version: str
    dataset: str
    source: str
    target: str
    id_column: str | None
    rows: int
    columns: int
    ingested_at: str
    quarantined: int = 0
    quality: dict[str, object] = field(default_factory=dict)


class SnapshotStore:
    """Parquet snapshots keyed by content hash, with a manifest and an append-only history."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def save(
        self,
        frame: pd.DataFrame,
        dataset: str,
        source: str,
        target: str,
        id_column: str | None,
        quarantine: pd.DataFrame | None = None,
        quality: dict[str, object] | None = None,
    ) -> SnapshotManifest:
        """Store `frame` unless an identical version is already stored; return its manifest.

        `quarantine` (the rows set aside, with their reasons) is stored beside the version, and
        `quality` (what was coerced or set aside) in its manifest.
        """
        quarantine = quarantine if quarantine is not None else pd.DataFrame()
        version = content_hash(frame, quarantine)
        if self.has(version):
            manifest = self.manifest(version)
        else:
            manifest = SnapshotManifest(
                version=version,
                dataset=dataset,
                source=source,
                target=target,
                id_column=id_column,
                rows=len(frame),
                columns=len(frame.columns),
                ingested_at=datetime.now(UTC).isoformat(timespec="seconds"),
                quarantined=len(quarantine),
                quality=quality or {},
            )
            self.root.mkdir(parents=True, exist_ok=True)
            written = [self._manifest_path(version), self._data_path(version)]
            try:
                if not quarantine.empty:
                    written.append(self.quarantine_path(version))
                    write_atomically(written[-1], quarantine.to_parquet, index=False)
                write_atomically(self._data_path(version), frame.to_parquet, index=False)
                # The manifest last: a version is stored once its manifest is (`has`).
                write_atomically(
                    self._manifest_path(version),
                    lambda path: Path(path).write_text(json.dumps(asdict(manifest), indent=2)),
                )
            except OSError as error:
                # A full disk: keep nothing of this version, so the space and the store are as
                # they were, and say where it failed.
                for path in written:
                    path.unlink(missing_ok=True)
                raise SnapshotNotStored(
                    f"data version {version} ({len(frame)} rows) could not be written under "
                    f"{self.root}: {error.strerror or error}"
                ) from error
        entry = {**asdict(manifest), "seen_at": datetime.now(UTC).isoformat(timespec="seconds")}
        _append_line(self.root / "history.jsonl", json.dumps(entry))
        return manifest

    def has(self, version: str) -> bool:
        """Whether a version is stored (manifest and data)."""
        return self._manifest_path(version).exists() and self._data_path(version).exists()

    def load(self, version: str) -> pd.DataFrame:
        """The rows of a stored version, exactly as they were ingested."""
        if not self.has(version):
            raise KeyError(f"no stored data version {version!r} under {self.root}")
        return read_parquet(self._data_path(version))

    def columns(self, version: str) -> list[str]:
        """The columns of a stored version, read from its file's schema (no rows read)."""
        import pyarrow.parquet as pq

        if not self.has(version):
            raise KeyError(f"no stored data version {version!r} under {self.root}")
        return list(pq.read_schema(self._data_path(version)).names)

    def sample(
        self, version: str, columns: list[str], max_rows: int, seed: int = 0
    ) -> tuple[pd.DataFrame, int]:
        """At most `max_rows` rows of a stored version (its `columns`), and how many it has.

        All of them when the version has no more; otherwise a seeded uniform sample without
        replacement, read a row group at a time so that the version is never in memory whole.
        """
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.has(version):
            raise KeyError(f"no stored data version {version!r} under {self.root}")
        parquet = pq.ParquetFile(self._data_path(version))
        total = parquet.metadata.num_rows
        if total <= max_rows:
            return read_parquet(self._data_path(version), columns=columns), total
        chosen = np.sort(np.random.default_rng(seed).choice(total, size=max_rows, replace=False))
        kept, start = [], 0
        for group in range(parquet.num_row_groups):
            rows = parquet.metadata.row_group(group).num_rows
            low, high = np.searchsorted(chosen, [start, start + rows])
            if high > low:
                table = parquet.read_row_group(group, columns=columns)
                kept.append(table.take(pa.array(chosen[low:high] - start)))
            start += rows
        return arrow_to_pandas(pa.concat_tables(kept)), total

    def load_quarantine(self, version: str) -> pd.DataFrame:
        """The rows set aside from a stored version, with their reasons (empty if none)."""
        if not self.has(version):
            raise KeyError(f"no stored data version {version!r} under {self.root}")
        path = self.quarantine_path(version)
        return read_parquet(path) if path.exists() else pd.DataFrame()

    def quarantine_path(self, version: str) -> Path:
        """Where the rows set aside from a version are kept."""
        return self.root / f"{version}{QUARANTINE_SUFFIX}"

    def manifest(self, version: str) -> SnapshotManifest:
        """The manifest of a stored version."""
        if not self.has(version):
            raise KeyError(f"no stored data version {version!r} under {self.root}")
        return SnapshotManifest(**json.loads(self._manifest_path(version).read_text()))

    def versions(self) -> list[SnapshotManifest]:
        """Every stored version, oldest first."""
        manifests = [
            SnapshotManifest(**json.loads(path.read_text())) for path in self.root.glob("*.json")
        ]
        return sorted(manifests, key=lambda manifest: manifest.ingested_at)

    def data_path(self, version: str) -> Path:
        """The Parquet file of a version's rows."""
        return self.root / f"{version}.parquet"

    def _data_path(self, version: str) -> Path:
        return self.data_path(version)

    def _manifest_path(self, version: str) -> Path:
        return self.root / f"{version}.json"


class SnapshotNotStored(OSError):
    """A data version could not be written (a full disk); nothing of it was kept."""


def _append_line(path: Path, line: str) -> None:
    """Append one line whole, or nothing: a full disk never leaves half a line behind."""
    data = (line + "\n").encode()
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(descriptor).st_size
        try:
            if os.write(descriptor, data) != len(data):
                raise OSError(errno.ENOSPC, "short write", str(path))
        except OSError:
            os.ftruncate(descriptor, size)
            raise
    finally:
        os.close(descriptor)
