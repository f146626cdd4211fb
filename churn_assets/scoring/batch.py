"""Score a whole customer base, streaming: a bounded chunk of rows in memory at a time.

Each chunk is read (Parquet record batches or CSV chunks), normalised as ingestion does (snake_case
names, junk tokens as missing), stripped of customers who already churned, checked against the
model's input schema (`churn.row_checks`; rows that do not fit are set aside with their reason) and
scored through `churn.model.scoring.Scorer`, the prediction service's own path, with the top three
reasons of each score. Scores stream to a Parquet file; once every probability is known, a second
pass adds the rank and risk band, writes the final Parquet and CSV files and, optionally, the
PostgreSQL table. Only the probabilities (8 bytes a customer) are kept across chunks.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churn.engine import Cluster, Engine
from churn.errors import DatasetError
from churn.model.schema import ModelSchema
from churn.model.scoring import REASONS, Scorer, format_value
from churn.normalise import (
    DEFAULT_POSITIVE_LABELS,
    missing_tokens,
    normalise_columns,
)
from churn.row_checks import REJECTION_REASON, CheckedRows, check_rows
from churn.score_store import (
    INPUTS,
    REASON_COLUMNS,
    REJECTED,
    RISK_BANDS,
    SCORES,
    SCORES_CSV,
    ScoreStore,
    ScoringManifest,
    export_to_postgres,
    ranks,
    risk_bands,
)
from churn.sources import open_chunks

DEFAULT_CHUNK_ROWS = 100_000
DEFAULT_INPUT_SAMPLE = 20_000
REJECTED_SAMPLE = 20
ROW_NUMBER = "row_number"


class TooManyRejected(DatasetError):
    """More of the population was set aside than the configured share allows."""


@dataclass(frozen=True)
class Population:
    """Where the customers to score come from.

    Attributes:
        source: a path or URL (`CHURN_SCORING_SOURCE`), or a stored data version's Parquet file.
        description: how the metadata names it.
        data_version: the stored version, or None for a source (named by its file's hash).
        target_is_encoded: the target column holds 0/1 (a stored version) rather than raw labels.
        positive_label: the source's value meaning churned, if configured.

    """

    source: str
    description: str
    data_version: str | None = None
    target_is_encoded: bool = False
    positive_label: str | None = None


@dataclass(frozen=True)
class ScoredModel:
    """The registry version that scores, and its scorer."""

    name: str
    version: str
    scorer: Scorer


@dataclass
class ScoringOutcome:
    """What a scoring run wrote and saw."""

    manifest: ScoringManifest
    folder: Path
    top: pd.DataFrame
    rejected_sample: pd.DataFrame
    probabilities: np.ndarray = field(repr=False)
    exported_rows: int | None = None


@dataclass
class _Timer:
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started


def score_population(
    store: ScoreStore,
    partition: str,
    model: ScoredModel,
    population: Population,
    *,
    reasons: bool = True,
    max_rejected_share: float = 0.01,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    input_sample: int = DEFAULT_INPUT_SAMPLE,
    database_url: str | None = None,
    max_bytes: int = 1024**3,
    timeout_seconds: float = 30.0,
    scratch: Path | None = None,
    engine: Engine | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> ScoringOutcome:
    """Score every customer of `population` into the partition `partition` of `store`.

    Two passes: the first streams the population a chunk at a time, checks and scores it
    (`_FirstPass`), writing unranked scores to a scratch file; once every probability is known,
    the second ranks them and writes the published files (`_RankedWriter`). Nothing is
    published until both have finished. With a distributed `engine` the chunks are scored on
    its workers (`churn.engine`); reading, checking, ranking and writing stay here.

    Raises:
        DatasetError: the population cannot be read, lacks a model input, or has more than
            `max_rejected_share` of its rows set aside (then nothing is published).
        PopulationError: a model input column is absent.
        ClusterError: the cluster failed the scoring (nothing is published).

    """
    started = time.perf_counter()
    folder = store.staging(partition)
    manifest = ScoringManifest(
        partition=partition,
        model_name=model.name,
        model_version=model.version,
        data_version=population.data_version or "",
        population=population.description,
        scored_at=datetime.now(UTC).isoformat(timespec="seconds"),
        reasons=reasons,
    )
    first = _FirstPass(model, population, manifest, folder, reasons, input_sample)
    try:
        with _chunks(population, chunk_rows, max_bytes, timeout_seconds, scratch) as (
            chunks,
            digest,
        ):
            manifest.data_version = population.data_version or f"file-{digest[:16]}"
            if engine is not None and engine.distributed:
                with engine.session(f"scoring partition {partition}") as cluster:
                    first.run(chunks, cluster)
            else:
                first.run(chunks)
        _refuse_too_many_rejected(manifest, first.rejected_by_column, model, max_rejected_share)
        if not manifest.rows_scored:
            raise DatasetError(f"{population.description} holds no customer to score")
    except BaseException:
        first.close()
        store.discard(folder)
        raise
    first.close()
    everything = np.concatenate(first.probabilities)
    first.probabilities.clear()
    timer = first.timer
    with timer.phase("rank"):
        rank = ranks(everything)
        bands = risk_bands(everything, model.scorer.threshold)
    counts = np.bincount(bands, minlength=len(RISK_BANDS))
    manifest.bands = {band: int(counts[i]) for i, band in enumerate(RISK_BANDS)}
    ranked = _RankedWriter(first.unranked, folder, manifest, rank, bands, chunk_rows, timer)
    if database_url:
        with timer.phase("postgres"):
            exported: int | None = export_to_postgres(database_url, partition, ranked.tables())
    else:
        exported = None
        for _ in ranked.tables():
            pass
    first.unranked.unlink()
    first.sample.write(folder / INPUTS)
    timer.seconds["total"] = time.perf_counter() - started
    manifest.seconds = {name: round(value, 3) for name, value in timer.seconds.items()}
    store.publish(partition, folder, manifest)
    log(
        f"scored {manifest.rows_scored} customers in {timer.seconds['total']:.1f} s "
        f"({', '.join(f'{k} {v:.1f} s' for k, v in timer.seconds.items() if k != 'total')})"
    )
    return ScoringOutcome(
        manifest=manifest,
        folder=store.partition(partition),
        top=ranked.top(),
        rejected_sample=pd.concat(first.rejected_sample).head(REJECTED_SAMPLE)
        if first.rejected_sample
        else pd.DataFrame(),
        probabilities=everything,
        exported_rows=exported,
    )


class _FirstPass:
    """Check and score the population chunk by chunk; unranked scores go to a scratch file.

    Keeps across chunks only what ranking and the report need: the probabilities, the count of
    rows set aside per column and a few of them, and a bounded sample of the scored inputs.
    """

    def __init__(
        self,
        model: ScoredModel,
        population: Population,
        manifest: ScoringManifest,
        folder: Path,
        reasons: bool,
        input_sample: int,
    ) -> None:
        self.model = model
        self.schema = model.scorer.schema
        self.population = population
        self.manifest = manifest
        self.folder = folder
        self.reasons = reasons
        self.timer = _Timer()
        self.unranked = folder / ".unranked.parquet"
        self.probabilities: list[np.ndarray] = []
        self.rejected_by_column: Counter[str] = Counter()
        self.rejected_sample: list[pd.DataFrame] = []
        self.sample = _InputSample(input_sample, self.schema.names)
        self.writers: dict[str, Any] = {}

    def run(self, chunks: Iterator[pd.DataFrame], cluster: Cluster | None = None) -> None:
        """Read, check and score every chunk: here, or on the cluster's workers.

        On a cluster the chunks are read and checked here, scored on the workers (a few at a
        time, `Cluster.map_ordered`) and written here in the order they were read.
        """
        checked = self._checked(chunks)
        if cluster is None:
            for rows, numbers in checked:
                self.write(
                    rows,
                    numbers,
                    score_chunk(self.model.scorer, rows.columns, self.reasons, self.timer),
                )
            return
        with self.timer.phase("cluster"):
            results = cluster.map_ordered(
                _score_on_worker,
                checked,
                shared=(self.model.scorer, self.reasons),
                send=lambda item: item[0].columns,
            )
            for (rows, numbers), scored in results:
                self.write(rows, numbers, scored)

    def _checked(self, chunks: Iterator[pd.DataFrame]) -> Iterator[tuple[CheckedRows, np.ndarray]]:
        """Each chunk's rows that fit the schema, and their 1-based rows of the source."""
        while True:
            with self.timer.phase("read"):
                chunk = next(chunks, None)
            if chunk is None:
                return
            checked, numbers = self.check(chunk)
            if len(checked):
                yield checked, numbers

    def check(self, chunk: pd.DataFrame) -> tuple[CheckedRows, np.ndarray]:
        """Check one chunk against the schema and set aside what does not fit."""
        manifest = self.manifest
        with self.timer.phase("check"):
            frame, positions = _prepare(chunk, self.schema, self.population)
            manifest.churned_skipped += len(chunk) - len(frame)
            checked = check_rows(frame, self.schema)
            numbers = positions + manifest.rows_read + 1  # 1-based rows of the source
            manifest.rows_read += len(chunk)
            manifest.rows_scored += len(checked)
            manifest.rows_rejected += len(checked.rejected)
        if len(checked.rejected):
            self.set_aside(checked, numbers, len(frame))
        return checked, numbers

    def write(self, checked: CheckedRows, numbers: np.ndarray, scored: ScoredChunk) -> None:
        """Write one chunk's scores (and reasons) to the scratch file."""
        import pyarrow as pa

        probability, texts = scored
        self.probabilities.append(probability)
        keys = checked.keys if checked.keys is not None else numbers[checked.accepted].astype(str)
        columns: dict[str, Any] = {
            self.schema.key or ROW_NUMBER: pa.array(keys, type=pa.string()),
            "churn_probability": pa.array(probability, type=pa.float64()),
            "churn_label": pa.array((probability >= self.model.scorer.threshold).astype(np.int8)),
        }
        if texts is None:  # the same columns either way, for readers and the database
            columns |= {name: pa.nulls(len(checked), pa.string()) for name in REASON_COLUMNS}
        else:
            columns |= {name: pa.array(text, type=pa.string()) for name, text in texts.items()}
        with self.timer.phase("write"):
            _write(self.writers, "unranked", self.unranked, pa.table(columns))
            self.sample.offer(checked.columns)
            del columns
            pa.default_memory_pool().release_unused()  # keep the peak a chunk's

    def set_aside(self, checked: CheckedRows, numbers: np.ndarray, rows: int) -> None:
        """Write the rows that broke a rule, with their source row number and reason."""
        import pyarrow as pa

        rejected = checked.rejected.astype("string")
        rejected.insert(0, ROW_NUMBER, numbers[np.flatnonzero(~_accepted_mask(checked, rows))])
        self.rejected_by_column.update(
            reason.split(":", 1)[0] for reason in rejected[REJECTION_REASON]
        )
        if sum(len(part) for part in self.rejected_sample) < REJECTED_SAMPLE:
            self.rejected_sample.append(rejected.head(REJECTED_SAMPLE))
        _write(self.writers, "rejected", self.folder / REJECTED, pa.table(rejected))

    def close(self) -> None:
        """Close the scratch and rejected files (idempotent)."""
        _close(self.writers)


def _refuse_too_many_rejected(
    manifest: ScoringManifest,
    rejected_by_column: Counter[str],
    model: ScoredModel,
    max_rejected_share: float,
) -> None:
    """Record the rejections by column; refuse the run when they exceed the allowed share.

    Raises:
        TooManyRejected: more than `max_rejected_share` of the rows considered were set aside.

    """
    manifest.rejected_by_column = dict(rejected_by_column.most_common())
    considered = manifest.rows_scored + manifest.rows_rejected
    if considered and manifest.rows_rejected / considered > max_rejected_share:
        detail = ", ".join(f"{column}: {count}" for column, count in rejected_by_column.items())
        raise TooManyRejected(
            f"{manifest.rows_rejected} of {considered} customers "
            f"({manifest.rows_rejected / considered:.1%}) do not fit the input schema of "
            f"{model.name} version {model.version}, over the {max_rejected_share:.1%} allowed "
            f"(CHURN_SCORING_MAX_REJECTED_SHARE); by column: {detail}. Nothing was published."
        )


class _RankedWriter:
    """The second pass: the unranked scores with rank, risk band and provenance, written out.

    `tables()` writes the final Parquet and CSV files a chunk at a time and yields each table
    (for the PostgreSQL export to stream); `top()` is then the ten highest-ranked customers.
    """

    def __init__(
        self,
        unranked: Path,
        folder: Path,
        manifest: ScoringManifest,
        rank: np.ndarray,
        bands: np.ndarray,
        chunk_rows: int,
        timer: _Timer,
    ) -> None:
        self.unranked = unranked
        self.folder = folder
        self.manifest = manifest
        self.rank = rank
        self.bands = bands
        self.chunk_rows = chunk_rows
        self.timer = timer
        self.top_rows: list[pd.DataFrame] = []

    def tables(self) -> Iterator[Any]:
        """Write the published files a chunk at a time, yielding each table written."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        band_names = pa.array(RISK_BANDS, pa.string())
        scored_at = datetime.fromisoformat(self.manifest.scored_at)
        constants = {
            "model_name": self.manifest.model_name,
            "model_version": self.manifest.model_version,
            "data_version": self.manifest.data_version,
        }
        offset = 0
        out: dict[str, Any] = {}
        try:
            for batch in pq.ParquetFile(self.unranked).iter_batches(batch_size=self.chunk_rows):
                with self.timer.phase("write"):
                    size = batch.num_rows
                    table = pa.Table.from_batches([batch])
                    table = table.append_column(
                        "rank", pa.array(self.rank[offset : offset + size].astype(np.int64))
                    )
                    table = table.append_column(
                        "risk_band", band_names.take(pa.array(self.bands[offset : offset + size]))
                    )
                    for name, value in constants.items():
                        table = table.append_column(name, pa.array([value] * size, pa.string()))
                    table = table.append_column(
                        "scored_at", pa.array([scored_at] * size, pa.timestamp("us", tz="UTC"))
                    )
                    offset += size
                    _write(out, "scores", self.folder / SCORES, table)
                    if "csv" not in out:
                        out["csv"] = pacsv.CSVWriter(str(self.folder / SCORES_CSV), table.schema)
                    out["csv"].write_table(table)
                    self.top_rows.append(table.filter(pc.less_equal(table["rank"], 10)).to_pandas())
                yield table
        finally:
            _close(out)

    def top(self) -> pd.DataFrame:
        """The ten highest-ranked customers (once `tables()` has run)."""
        return pd.concat(self.top_rows).sort_values("rank") if self.top_rows else pd.DataFrame()


ScoredChunk = tuple[np.ndarray, dict[str, np.ndarray] | None]


def score_chunk(
    scorer: Scorer,
    columns: dict[str, np.ndarray],
    reasons: bool,
    timer: _Timer | None = None,
) -> ScoredChunk:
    """Churn probabilities of one chunk of checked rows and, with `reasons`, their top reasons."""
    timer = timer or _Timer()
    with timer.phase("encode"):
        encoded = scorer.encode(columns)
    with timer.phase("predict"):
        probability = scorer.probabilities_of(encoded)
    if not reasons:
        return probability, None
    with timer.phase("explain"):
        contributions = scorer.explainer.contributions(encoded)
    with timer.phase("reasons"):
        return probability, reason_texts(contributions, columns)


def _score_on_worker(shared: tuple[Scorer, bool], columns: dict[str, np.ndarray]) -> ScoredChunk:
    """`score_chunk` as a cluster task: the model and the flag were sent to the worker once."""
    scorer, reasons = shared
    return score_chunk(scorer, columns, reasons)


def reason_texts(contributions: Any, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`reason_1..3` columns: `contract=Month-to-month (+0.21)`, None where there is none."""
    positions, values = contributions.top(REASONS)
    names = contributions.columns
    texts: dict[str, np.ndarray] = {}
    for k, column in enumerate(REASON_COLUMNS):
        out = np.full(len(positions), None, dtype=object)
        if k < positions.shape[1]:
            for j in np.unique(positions[:, k]):
                if j < 0:
                    continue
                rows = np.flatnonzero(positions[:, k] == j)
                shown = [format_value(v) for v in columns[names[j]][rows].tolist()]
                amounts = np.char.mod("%+.2f", values[rows, k])
                prefix = f"{names[j]}="
                out[rows] = [
                    f"{prefix}{value} ({amount})"
                    for value, amount in zip(shown, amounts.tolist(), strict=True)
                ]
        texts[column] = out
    return texts


def _chunks(
    population: Population,
    chunk_rows: int,
    max_bytes: int,
    timeout_seconds: float,
    scratch: Path | None,
) -> AbstractContextManager[tuple[Iterator[pd.DataFrame], str]]:
    if population.data_version is not None:
        import pyarrow.parquet as pq

        path = Path(population.source)
        if not path.exists():
            raise DatasetError(f"data version {population.data_version} is not stored ({path})")
        batches = (
            batch.to_pandas() for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows)
        )
        return nullcontext((batches, population.data_version))
    return open_chunks(
        population.source, max_bytes, timeout_seconds, scratch or Path("/tmp"), chunk_rows
    )


def _accepted_mask(checked: Any, rows: int) -> np.ndarray:
    mask = np.zeros(rows, dtype=bool)
    mask[checked.accepted] = True
    return mask


def _prepare(
    chunk: pd.DataFrame, schema: ModelSchema, population: Population
) -> tuple[pd.DataFrame, np.ndarray]:
    """Snake_case names, junk as missing, churned customers removed.

    Returns the rows to check and their positions in the chunk.
    """
    frame, _ = normalise_columns(chunk)
    for column in (*schema.names, *([schema.key] if schema.key else [])):
        if column in frame.columns and (
            pd.api.types.is_object_dtype(frame[column])
            or pd.api.types.is_string_dtype(frame[column])
        ):
            blank, junk = missing_tokens(frame[column].astype("string"))
            if blank.any() or junk.any():
                frame[column] = frame[column].mask(blank | junk)
    if schema.target not in frame.columns:
        return frame, np.arange(len(frame))
    target = frame[schema.target]
    if population.target_is_encoded:
        churned = (target == 1).fillna(False).to_numpy(dtype=bool)
    else:
        text = target.astype("string").str.strip().str.lower()
        positives = set(DEFAULT_POSITIVE_LABELS)
        if population.positive_label:
            positives = {population.positive_label.strip().lower()}
        churned = text.isin(positives).fillna(False).to_numpy(dtype=bool)
    if churned.any():
        frame = frame[~churned].reset_index(drop=True)
    return frame, np.flatnonzero(~churned)


class _InputSample:
    """A uniform sample of at most `size` scored rows' inputs, in bounded memory.

    Each row draws a random number; the sample keeps the rows with the smallest ones, which is
    a uniform sample of everything offered, whatever the order of the population.
    """

    def __init__(self, size: int, names: list[str], seed: int = 0) -> None:
        self.size = size
        self.names = names
        self.random = np.random.default_rng(seed)
        self.kept: pd.DataFrame | None = None

    def offer(self, columns: dict[str, np.ndarray]) -> None:
        frame = pd.DataFrame({name: columns[name] for name in self.names})
        frame["_draw"] = self.random.random(len(frame))
        merged = frame if self.kept is None else pd.concat([self.kept, frame], ignore_index=True)
        self.kept = merged.nsmallest(self.size, "_draw") if len(merged) > self.size else merged

    def write(self, path: Path) -> None:
        if self.kept is not None:
            self.kept.drop(columns=["_draw"]).reset_index(drop=True).to_parquet(path, index=False)


def _write(writers: dict[str, Any], name: str, path: Path, table: Any) -> None:
    import pyarrow.parquet as pq

    writer = writers.get(name)
    if writer is None:
        writer = writers[name] = pq.ParquetWriter(str(path), table.schema)
    elif table.schema != writer.schema:
        table = table.cast(writer.schema)
    writer.write_table(table)


def _close(writers: dict[str, Any]) -> None:
    for writer in writers.values():
        writer.close()
    writers.clear()
