"""How sure a hold-out figure is: bootstrap intervals of the gate metrics, alone and paired.

Every gate metric at a fixed threshold is a function of sums over customers: the four cells of
the confusion matrix, the squared errors of the probabilities and, with costs, the cost of the
model's decisions and of the two blanket decisions. A bootstrap replicate only needs those sums,
so customers are first gathered into at most `BLOCKS` random blocks (one customer per block on
hold-outs of that size or less: the plain bootstrap), and each replicate draws blocks with
replacement. That keeps 1,000 replicates of a two-million-customer hold-out to one matrix
product, and the interval's width is that of the row bootstrap (blocks are random, so they are
exchangeable).

Paired: the champion's and the challenger's sums come from the same customers in each replicate,
so the interval of their difference leaves out how much the customers themselves vary, which
both models share.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from churn.value import CostMatrix

BLOCKS = 5_000
REPLICATES = 1_000
SEED = 20_151  # fixed: the same data gives the same interval

# Columns of the per-customer statistics.
_TP, _FP, _FN, _TN, _SQUARED, _COST, _NOBODY, _EVERYBODY = range(8)


@dataclass(frozen=True)
class Interval:
    """An estimate and its bootstrap interval at `confidence` (two-sided)."""

    estimate: float
    low: float
    high: float
    confidence: float

    def __str__(self) -> str:
        return (
            f"{self.estimate:.4f} ({self.confidence:.0%} interval {self.low:.4f} to "
            f"{self.high:.4f})"
        )


def statistics(
    labels: np.ndarray,
    probabilities: np.ndarray,
    threshold: float,
    matrix: CostMatrix | None = None,
) -> np.ndarray:
    """Each customer's additive statistics (rows: customers, columns: `_TP` ... `_EVERYBODY`).

    Without costs (or for a customer whose costs are unknown) the three cost columns are 0.
    """
    churned = np.asarray(labels).astype(bool)
    probabilities = np.asarray(probabilities, dtype=float)
    flagged = probabilities >= threshold
    columns = np.zeros((len(churned), 8))
    columns[:, _TP] = churned & flagged
    columns[:, _FP] = ~churned & flagged
    columns[:, _FN] = churned & ~flagged
    columns[:, _TN] = ~churned & ~flagged
    columns[:, _SQUARED] = (probabilities - churned) ** 2
    if matrix is not None:
        columns[:, _COST] = matrix.per_customer(churned, flagged)
        columns[:, _NOBODY] = np.where(churned, matrix.false_negative, matrix.true_negative)
        columns[:, _EVERYBODY] = np.where(churned, matrix.true_positive, matrix.false_positive)
        columns[:, _COST:] = np.nan_to_num(columns[:, _COST:], nan=0.0)
    return columns


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.asarray(
        np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)
    )


# Metric -> its value from summed statistics (last axis: the columns above).
METRICS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "f1": lambda s: _ratio(2 * s[..., _TP], 2 * s[..., _TP] + s[..., _FP] + s[..., _FN]),
    "recall": lambda s: _ratio(s[..., _TP], s[..., _TP] + s[..., _FN]),
    "precision": lambda s: _ratio(s[..., _TP], s[..., _TP] + s[..., _FP]),
    "accuracy": lambda s: _ratio(s[..., _TP] + s[..., _TN], s[..., :4].sum(axis=-1)),
    "probability_rmse": lambda s: np.sqrt(_ratio(s[..., _SQUARED], s[..., :4].sum(axis=-1))),
    "brier": lambda s: _ratio(s[..., _SQUARED], s[..., :4].sum(axis=-1)),
    "savings": lambda s: _ratio(
        np.minimum(s[..., _NOBODY], s[..., _EVERYBODY]) - s[..., _COST],
        np.minimum(s[..., _NOBODY], s[..., _EVERYBODY]),
    ),
}


def _replicate_sums(
    columns: np.ndarray, replicates: int = REPLICATES, seed: int = SEED
) -> tuple[np.ndarray, np.ndarray]:
    """The statistics summed over all customers, and over each bootstrap replicate."""
    rng = np.random.default_rng(seed)
    n = len(columns)
    blocks = min(n, BLOCKS)
    assignment = rng.permutation(n) % blocks
    block_sums = np.zeros((blocks, columns.shape[1]))
    np.add.at(block_sums, assignment, columns)
    weights = rng.multinomial(blocks, np.full(blocks, 1.0 / blocks), size=replicates)
    return columns.sum(axis=0), weights @ block_sums


def _interval(estimate: float, draws: np.ndarray, confidence: float) -> Interval:
    tail = (1 - confidence) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    return Interval(float(estimate), float(low), float(high), confidence)


def metric_intervals(
    columns: np.ndarray, confidence: float = 0.9, names: list[str] | None = None
) -> dict[str, Interval]:
    """Each metric of `METRICS` (or of `names`) with its bootstrap interval."""
    total, replicated = _replicate_sums(columns)
    chosen = names if names is not None else list(METRICS)
    return {
        name: _interval(float(METRICS[name](total)), METRICS[name](replicated), confidence)
        for name in chosen
    }


def paired_differences(
    challenger: np.ndarray,
    champion: np.ndarray,
    confidence: float = 0.9,
    names: list[str] | None = None,
) -> dict[str, Interval]:
    """Challenger - champion for each metric, resampling the same customers for both.

    `challenger` and `champion`: `statistics` of the two models on the same customers, in the
    same order.
    """
    if challenger.shape != champion.shape:
        raise ValueError("the two models must be measured on the same customers")
    width = challenger.shape[1]
    total, replicated = _replicate_sums(np.hstack([challenger, champion]))
    differences = {}
    for name in names or list(METRICS):
        metric = METRICS[name]
        estimate = metric(total[:width]) - metric(total[width:])
        draws = metric(replicated[:, :width]) - metric(replicated[:, width:])
        differences[name] = _interval(float(estimate), draws, confidence)
    return differences


def ranking_difference(
    labels: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray,
    score: Callable[[np.ndarray, np.ndarray], float],
    confidence: float = 0.9,
    replicates: int = 200,
    max_rows: int = 20_000,
) -> Interval:
    """Challenger - champion of a ranking metric (ROC-AUC, PR-AUC), by a paired row bootstrap.

    Not a sum over customers, so replicates resample rows: at most `max_rows` of them (a random
    sample; the interval is then that of a hold-out of that size, wider than the whole one's).
    """
    rng = np.random.default_rng(SEED)
    labels = np.asarray(labels)
    estimate = score(labels, challenger) - score(labels, champion)
    rows = np.arange(len(labels))
    if len(rows) > max_rows:
        rows = rng.choice(rows, max_rows, replace=False)
    draws = []
    for _ in range(replicates):
        sample = rng.choice(rows, len(rows), replace=True)
        if labels[sample].min() == labels[sample].max():
            continue
        draws.append(
            score(labels[sample], challenger[sample]) - score(labels[sample], champion[sample])
        )
    return _interval(float(estimate), np.asarray(draws), confidence)


def quantile_interval(
    samples: np.ndarray, quantile: float, confidence: float = 0.9, replicates: int = REPLICATES
) -> Interval:
    """A quantile of `samples` (a latency percentile) with its bootstrap interval."""
    rng = np.random.default_rng(SEED)
    samples = np.asarray(samples, dtype=float)
    draws = np.quantile(
        rng.choice(samples, (replicates, len(samples)), replace=True), quantile, axis=1
    )
    return _interval(float(np.quantile(samples, quantile)), draws, confidence)
