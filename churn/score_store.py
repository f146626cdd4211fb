"""Where nightly scores land: one folder per partition (night), replaced atomically.

    <home>/scores/date=2026-11-28/scores.parquet     every scored customer, with rank and reasons
                                 /scores.csv         the same rows, for a spreadsheet
                                 /rejected.parquet   rows set aside, with their reason
                                 /inputs.parquet     a uniform sample of the scored inputs (drift)
                                 /manifest.json      model and data versions, counts, timings

`date=...` is a symbolic link to a folder written in full beside it; rewriting a partition
writes a new folder, then replaces the link in one `rename`: a reader that opened the partition
reads one night's scores, the old or the new, never half of each. Optionally the scores also go
to a PostgreSQL table, replaced per partition inside one transaction.

This module imports neither Dagster nor BentoML.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churn.files import read_parquet

SCORES = "scores.parquet"
SCORES_CSV = "scores.csv"
REJECTED = "rejected.parquet"
INPUTS = "inputs.parquet"
MANIFEST = "manifest.json"
REASON_COLUMNS = ("reason_1", "reason_2", "reason_3")
RISK_BANDS = ("high", "medium", "low")
SCORES_TABLE = "churn_scores"


def risk_bands(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """Band of each customer as a position in `RISK_BANDS` (one byte a customer).

    `high` at or above the model's threshold, `medium` from half of it, `low` below.
    """
    bands = np.full(len(probabilities), RISK_BANDS.index("low"), dtype=np.int8)
    bands[probabilities >= threshold / 2] = RISK_BANDS.index("medium")
    bands[probabilities >= threshold] = RISK_BANDS.index("high")
    return bands


def ranks(probabilities: np.ndarray) -> np.ndarray:
    """1 for the customer most likely to churn; ties keep the population's order."""
    size = len(probabilities)
    kind = np.int32 if size < 2**31 else np.int64  # 4 bytes a customer up to 2 billion
    order = np.argsort(-probabilities, kind="stable")
    rank = np.empty(size, dtype=kind)
    rank[order] = np.arange(1, size + 1, dtype=kind)
    return rank


@dataclass
class ScoringManifest:
    """What a partition's scores came from, and what happened on the way."""

    partition: str
    model_name: str
    model_version: str
    data_version: str
    population: str
    scored_at: str
    rows_read: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    churned_skipped: int = 0
    rejected_by_column: dict[str, int] = field(default_factory=dict)
    bands: dict[str, int] = field(default_factory=dict)
    reasons: bool = True
    seconds: dict[str, float] = field(default_factory=dict)


class ScoreStore:
    """The partitions of nightly scores under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def partition(self, key: str) -> Path:
        """The folder (a link) of one partition's scores."""
        return self.root / f"date={key}"

    def has(self, key: str) -> bool:
        """Whether the partition was written."""
        return (self.partition(key) / MANIFEST).exists()

    def manifest(self, key: str) -> ScoringManifest:
        """The manifest of a written partition."""
        return ScoringManifest(**json.loads((self.partition(key) / MANIFEST).read_text()))

    def read(self, key: str, columns: list[str] | None = None) -> pd.DataFrame:
        """One partition's scores (KeyError when it was never written)."""
        if not self.has(key):
            raise KeyError(f"no scores for {key} under {self.root}")
        # One open file: Arrow reads the footer and then the pages, and a path (through the
        # partition's link) could name the next version by the time it reads the pages.
        with (self.partition(key) / SCORES).open("rb") as scores:
            return read_parquet(scores, columns=columns)

    def latest(self, until: str | None = None) -> str | None:
        """The newest partition written, if any (of `until`, YYYY-MM-DD, or before)."""
        keys = sorted(
            path.name.removeprefix("date=")
            for path in self.root.glob("date=*")
            if (path / MANIFEST).exists() and (until is None or path.name <= f"date={until}")
        )
        return keys[-1] if keys else None

    def staging(self, key: str) -> Path:
        """A new, empty folder for a partition's next version."""
        folder = self.root / ".versions" / f"{key}-{uuid.uuid4().hex[:12]}"
        folder.mkdir(parents=True)
        return folder

    def publish(self, key: str, folder: Path, manifest: ScoringManifest) -> Path:
        """Make `folder` the partition's scores in one atomic step.

        The version it replaces is kept until the next rewrite, so that a reader who opened the
        partition just before keeps reading whole files; older versions are removed.
        """
        (folder / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2))
        link = self.partition(key)
        previous = link.resolve() if link.is_symlink() else None
        temporary = self.root / f".date={key}.{os.getpid()}.link"
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(folder.relative_to(self.root))
        os.replace(temporary, link)
        keep = {folder.resolve(), previous}
        for version in (self.root / ".versions").glob(f"{key}-*"):
            if version.resolve() not in keep:
                shutil.rmtree(version, ignore_errors=True)
        return link

    def discard(self, folder: Path) -> None:
        """Remove a staging folder that will not be published."""
        shutil.rmtree(folder, ignore_errors=True)


def export_to_postgres(
    url: str, partition: str, batches: Iterator[Any], table: str = SCORES_TABLE
) -> int:
    """Replace one partition's rows of the scores table, in one transaction; return the count.

    `batches` are Arrow tables of the partition's scores (the key column first). Readers (a CRM)
    see the previous night's rows until the commit, then all of the new ones.
    """
    import io

    import psycopg2
    import pyarrow as pa
    import pyarrow.csv as pacsv
    from psycopg2 import sql

    connection = psycopg2.connect(url, connect_timeout=10)
    name = sql.Identifier(table)
    columns = (
        "churn_probability",
        "churn_label",
        "rank",
        "risk_band",
        *REASON_COLUMNS,
        "model_name",
        "model_version",
        "data_version",
        "scored_at",
    )
    rows = 0
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} ("
                    "score_date date NOT NULL, customer_key text NOT NULL, "
                    "churn_probability double precision NOT NULL, churn_label smallint NOT NULL, "
                    "rank bigint NOT NULL, risk_band text NOT NULL, "
                    "reason_1 text, reason_2 text, reason_3 text, "
                    "model_name text NOT NULL, model_version text NOT NULL, "
                    "data_version text NOT NULL, scored_at timestamptz NOT NULL, "
                    "PRIMARY KEY (score_date, customer_key))"
                ).format(name)
            )
            cursor.execute(
                sql.SQL("DELETE FROM {} WHERE score_date = %s").format(name), [partition]
            )
            copy = sql.SQL(
                "COPY {} (score_date, customer_key, {}) FROM STDIN WITH (FORMAT csv)"
            ).format(name, sql.SQL(", ").join(sql.Identifier(c) for c in columns))
            for batch in batches:
                selected = pa.table(
                    {
                        "score_date": pa.array([partition] * batch.num_rows, pa.string()),
                        "customer_key": batch.column(0),
                        **{column: batch[column] for column in columns},
                    }
                )
                buffer = io.BytesIO()
                pacsv.write_csv(selected, buffer, pacsv.WriteOptions(include_header=False))
                buffer.seek(0)
                cursor.copy_expert(copy.as_string(cursor), buffer)
                rows += batch.num_rows
    finally:
        connection.close()
    return rows


def read_postgres(url: str, partition: str, table: str = SCORES_TABLE) -> pd.DataFrame:
    """One partition's rows of the scores table, ranked (for tests and inspection)."""
    import psycopg2
    from psycopg2 import sql

    connection = psycopg2.connect(url, connect_timeout=10)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                sql.SQL("SELECT * FROM {} WHERE score_date = %s ORDER BY rank").format(
                    sql.Identifier(table)
                ),
                [partition],
            )
            names = [column.name for column in cursor.description]
            return pd.DataFrame(cursor.fetchall(), columns=names)
    finally:
        connection.close()


def as_json(value: Any) -> Any:
    """Numpy scalars as Python values, for manifests."""
    return value.item() if isinstance(value, np.generic) else value
