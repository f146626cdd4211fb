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

from churn.errors import DatasetError
from churn.model.schema import ModelSchema
from churn.model.scoring import REASONS, Scorer, format_value
from churn.normalise import (
    DEFAULT_POSITIVE_LABELS,
    missing_tokens,
    normalise_columns,
)
from churn.row_checks import REJECTION_REASON, check_rows
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
    log: Callable[[str], None] = lambda message: None,
) -> ScoringOutcome:
    """Score every customer of `population` into the partition `partition` of `store`.

    Raises:
        DatasetError: the population cannot be read, lacks a model input, or has more than
            `max_rejected_share` of its rows set aside (then nothing is published).
        PopulationError: a model input column is absent.

    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = model.scorer.schema
    timer = _Timer()
    started = time.perf_counter()
    scored_at = datetime.now(UTC)
    folder = store.staging(partition)
    manifest = ScoringManifest(
        partition=partition,
        model_name=model.name,
        model_version=model.version,
        data_version=population.data_version or "",
        population=population.description,
        scored_at=scored_at.isoformat(timespec="seconds"),
        reasons=reasons,
    )
    probabilities: list[np.ndarray] = []
    rejected_by_column: Counter[str] = Counter()
    rejected_sample: list[pd.DataFrame] = []
    sample = _InputSample(input_sample, schema.names)
    unranked_path = folder / ".unranked.parquet"
    writers: dict[str, Any] = {}
    try:
        with _chunks(population, chunk_rows, max_bytes, timeout_seconds, scratch) as (
            chunks,
            digest,
        ):
            manifest.data_version = population.data_version or f"file-{digest[:16]}"
            while True:
                with timer.phase("read"):
                    chunk = next(chunks, None)
                if chunk is None:
                    break
                with timer.phase("check"):
                    frame, positions = _prepare(chunk, schema, population)
                    manifest.churned_skipped += len(chunk) - len(frame)
                    checked = check_rows(frame, schema)
                    numbers = positions + manifest.rows_read + 1  # 1-based rows of the source
                    manifest.rows_read += len(chunk)
                    manifest.rows_scored += len(checked)
                    manifest.rows_rejected += len(checked.rejected)
                if len(checked.rejected):
                    rejected = checked.rejected.astype("string")
                    rejected.insert(
                        0, ROW_NUMBER, numbers[np.flatnonzero(~_accepted_mask(checked, len(frame)))]
                    )
                    rejected_by_column.update(
                        reason.split(":", 1)[0] for reason in rejected[REJECTION_REASON]
                    )
                    if sum(len(part) for part in rejected_sample) < REJECTED_SAMPLE:
                        rejected_sample.append(rejected.head(REJECTED_SAMPLE))
                    _write(writers, "rejected", folder / REJECTED, pa.table(rejected))
                if not len(checked):
                    continue
                with timer.phase("encode"):
                    encoded = model.scorer.encode(checked.columns)
                with timer.phase("predict"):
                    probability = model.scorer.probabilities_of(encoded)
                probabilities.append(probability)
                keys = (
                    checked.keys
                    if checked.keys is not None
                    else numbers[checked.accepted].astype(str)
                )
                columns: dict[str, Any] = {
                    schema.key or ROW_NUMBER: pa.array(keys, type=pa.string()),
                    "churn_probability": pa.array(probability, type=pa.float64()),
                    "churn_label": pa.array(
                        (probability >= model.scorer.threshold).astype(np.int8)
                    ),
                }
                if not reasons:  # the same columns either way, for readers and the database
                    columns |= {
                        name: pa.nulls(len(checked), pa.string()) for name in REASON_COLUMNS
                    }
                else:
                    with timer.phase("explain"):
                        contributions = model.scorer.explainer.contributions(encoded)
                    with timer.phase("reasons"):
                        texts = reason_texts(contributions, checked.columns)
                        for name, text in texts.items():
                            columns[name] = pa.array(text, type=pa.string())
                with timer.phase("write"):
                    _write(writers, "unranked", unranked_path, pa.table(columns))
                    sample.offer(checked.columns)
                    del encoded, columns
                    pa.default_memory_pool().release_unused()  # keep the peak a chunk's
    except BaseException:
        _close(writers)
        store.discard(folder)
        raise
    _close(writers)
    manifest.rejected_by_column = dict(rejected_by_column.most_common())
    considered = manifest.rows_scored + manifest.rows_rejected
    if considered and manifest.rows_rejected / considered > max_rejected_share:
        store.discard(folder)
        detail = ", ".join(f"{column}: {count}" for column, count in rejected_by_column.items())
        raise TooManyRejected(
            f"{manifest.rows_rejected} of {considered} customers "
            f"({manifest.rows_rejected / considered:.1%}) do not fit the input schema of "
            f"{model.name} version {model.version}, over the {max_rejected_share:.1%} allowed "
            f"(CHURN_SCORING_MAX_REJECTED_SHARE); by column: {detail}. Nothing was published."
        )
    if not manifest.rows_scored:
        store.discard(folder)
        raise DatasetError(f"{population.description} holds no customer to score")

    everything = np.concatenate(probabilities)
    del probabilities
    with timer.phase("rank"):
        rank = ranks(everything)
        bands = risk_bands(everything, model.scorer.threshold)
    counts = np.bincount(bands, minlength=len(RISK_BANDS))
    manifest.bands = {band: int(counts[i]) for i, band in enumerate(RISK_BANDS)}
    band_names = pa.array(RISK_BANDS, pa.string())
    top_rows: list[pd.DataFrame] = []

    def ranked() -> Iterator[Any]:
        import pyarrow.compute as pc
        import pyarrow.csv as pacsv

        offset = 0
        constants = {
            "model_name": model.name,
            "model_version": model.version,
            "data_version": manifest.data_version,
        }
        parquet = pq.ParquetFile(unranked_path)
        out: dict[str, Any] = {}
        try:
            for batch in parquet.iter_batches(batch_size=chunk_rows):
                with timer.phase("write"):
                    size = batch.num_rows
                    table = pa.Table.from_batches([batch])
                    table = table.append_column(
                        "rank", pa.array(rank[offset : offset + size].astype(np.int64))
                    )
                    table = table.append_column(
                        "risk_band", band_names.take(pa.array(bands[offset : offset + size]))
                    )
                    for name, value in constants.items():
                        table = table.append_column(name, pa.array([value] * size, pa.string()))
                    table = table.append_column(
                        "scored_at", pa.array([scored_at] * size, pa.timestamp("us", tz="UTC"))
                    )
                    offset += size
                    _write(out, "scores", folder / SCORES, table)
                    if "csv" not in out:
                        out["csv"] = pacsv.CSVWriter(str(folder / SCORES_CSV), table.schema)
                    out["csv"].write_table(table)
                    top_rows.append(table.filter(pc.less_equal(table["rank"], 10)).to_pandas())
                yield table
        finally:
            _close(out)

    if database_url:
        with timer.phase("postgres"):
            exported: int | None = export_to_postgres(database_url, partition, ranked())
    else:
        exported = None
        for _ in ranked():
            pass
    unranked_path.unlink()
    sample.write(folder / INPUTS)
    timer.seconds["total"] = time.perf_counter() - started
    manifest.seconds = {name: round(value, 3) for name, value in timer.seconds.items()}
    store.publish(partition, folder, manifest)
    log(
        f"scored {manifest.rows_scored} customers in {timer.seconds['total']:.1f} s "
        f"({', '.join(f'{k} {v:.1f} s' for k, v in timer.seconds.items() if k != 'total')})"
    )
    top = pd.concat(top_rows).sort_values("rank") if top_rows else pd.DataFrame()
    return ScoringOutcome(
        manifest=manifest,
        folder=store.partition(partition),
        top=top,
        rejected_sample=pd.concat(rejected_sample).head(REJECTED_SAMPLE)
        if rejected_sample
        else pd.DataFrame(),
        probabilities=everything,
        exported_rows=exported,
    )


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
