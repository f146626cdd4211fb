"""Where the heavy steps run: in the step's own process, or on a Dask cluster.

`CHURN_DASK_SCHEDULER` names a running Dask `distributed` scheduler (`tcp://host:8786`); unset,
everything runs in the process of the step, as before. On a cluster:

- the refit of the selected candidate on every training row: the feature steps learn their
  categories and medians in the step (a pass over the rows, `fit_features`), the workers encode
  the rows a chunk each, and LightGBM trains data-parallel across the workers on those chunks
  (`lightgbm.dask`, LightGBM's own distributed learner). The fitted booster comes back as the
  plain `LGBMClassifier` the local path fits, so the registered model is the same kind of object
  and loads without Dask. Other algorithms (no distributed learner) fit on one worker.
- nightly scoring: each chunk of customers is encoded, predicted and explained on a worker with
  the model sent to every worker once; the step reads, checks and writes the chunks in order.
- drift: each group of columns is measured on a worker (a column's PSI depends on that column
  alone, so the result is the same as measuring all of them at once).

A failure of the cluster (a worker lost, the scheduler gone, a task that raised there) stops the
step with `ClusterError`, which names the scheduler; it is not a data error, so the step's retry
policy applies. This module imports neither Dagster nor BentoML; `distributed` only when a
cluster is named.
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pandas as pd

from churn.errors import DatasetError

if TYPE_CHECKING:
    from distributed import Client
    from sklearn.pipeline import Pipeline

T = TypeVar("T")
R = TypeVar("R")

CONNECT_TIMEOUT_SECONDS = 30.0


class ClusterError(RuntimeError):
    """The Dask cluster a step ran on failed it (the message names the scheduler)."""


@dataclass(frozen=True)
class Engine:
    """The engine of the heavy steps: local (no scheduler) or the Dask cluster at `scheduler`."""

    scheduler: str | None = None
    connect_timeout: float = CONNECT_TIMEOUT_SECONDS

    @property
    def distributed(self) -> bool:
        """True when a cluster is named."""
        return bool(self.scheduler)

    def describe(self) -> str:
        """`local` or `Dask cluster at tcp://...`, for logs and metadata."""
        return f"Dask cluster at {self.scheduler}" if self.scheduler else "local"

    @contextmanager
    def session(self, what: str) -> Iterator[Cluster]:
        """A connection to the cluster for one step's work (`what` names it in errors).

        Raises:
            ClusterError: the scheduler cannot be reached, or the work failed on the cluster.

        """
        if not self.scheduler:
            raise ValueError("no cluster is named (CHURN_DASK_SCHEDULER is unset)")
        from distributed import Client

        try:
            client = Client(self.scheduler, timeout=self.connect_timeout, set_as_default=False)
        except Exception as error:  # OSError, TimeoutError: what the address gives
            raise ClusterError(
                f"{what}: cannot reach the Dask cluster at {self.scheduler} "
                f"(CHURN_DASK_SCHEDULER): {type(error).__name__}: {error}"
            ) from error
        try:
            yield Cluster(client, self.scheduler, what)
        except (ClusterError, DatasetError):
            raise
        except Exception as error:
            raise ClusterError(
                f"{what} failed on the Dask cluster at {self.scheduler}: "
                f"{type(error).__name__}: {error}"
            ) from error
        finally:
            client.close()


@dataclass
class Cluster:
    """An open connection to the cluster, and what the steps do on it."""

    client: Client
    scheduler: str
    what: str

    @property
    def workers(self) -> int:
        """How many workers the scheduler knows now.

        Raises:
            ClusterError: it knows none.

        """
        return len(self.worker_addresses())

    def worker_addresses(self) -> list[str]:
        """The addresses of the workers the scheduler knows now, sorted.

        Raises:
            ClusterError: it knows none.

        """
        addresses = sorted(self.client.scheduler_info(n_workers=-1)["workers"])
        if not addresses:
            raise ClusterError(f"{self.what}: the Dask cluster at {self.scheduler} has no worker")
        return addresses

    def map_ordered(
        self,
        function: Callable[..., R],
        items: Iterable[T],
        *,
        shared: Any = None,
        send: Callable[[T], Any] = lambda item: item,
        in_flight: int | None = None,
    ) -> Iterator[tuple[T, R]]:
        """(item, `function(shared, send(item))`) for each item, in order, computed on workers.

        `shared` (a model, say) is sent to every worker once; `send` picks what of an item the
        workers need. At most `in_flight` items (default two per worker) are on the cluster at a
        time, so the step holds a bounded number of them whatever the length of `items`.
        """
        limit = in_flight or 2 * self.workers
        shared_future = self.client.scatter([shared], broadcast=True, hash=False)[0]
        pending: deque[tuple[T, Any]] = deque()
        for item in items:
            # In a list: a scattered dict would become one piece of data per key, named by it.
            sent = self.client.scatter([send(item)], hash=False)[0]
            pending.append((item, self.client.submit(function, shared_future, sent, pure=False)))
            if len(pending) >= limit:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()

    def run(self, function: Callable[..., R], *arguments: Any) -> R:
        """`function(*arguments)` on one worker; large arguments are sent there first."""
        sent = [self.client.scatter(a, hash=False) if _large(a) else a for a in arguments]
        return self.client.submit(function, *sent, pure=False).result()

    def fit_lightgbm(
        self,
        pipeline: Pipeline,
        records: pd.DataFrame,
        labels: pd.Series,
        chunk_rows: int,
    ) -> Pipeline:
        """Fit a `features` then `LGBMClassifier` pipeline data-parallel on the workers.

        The feature steps are fitted here, a chunk at a time; each chunk of records is sent to a
        worker and encoded there; `lightgbm.dask.DaskLGBMClassifier` trains on the encoded chunks
        where they lie. The result is `pipeline` with its fitted features and a local
        `LGBMClassifier` (`to_local()`), the same kind of model the local path gives.
        """
        import dask.array as da
        from lightgbm.dask import DaskLGBMClassifier

        from churn.model.features import fit_features

        features, model = pipeline.named_steps["features"], pipeline.named_steps["model"]
        fit_features(features, records, chunk_rows)
        workers = self.worker_addresses()
        features_future = self.client.scatter(features, broadcast=True, hash=False)
        # At least one chunk per worker, so that every worker holds data and takes part; the
        # chunks are dealt to the workers in turn and encoded where they lie.
        step = max(1, min(chunk_rows, -(-len(records) // len(workers))))
        matrices, targets = [], []
        width = len(features.named_steps["encode"].get_feature_names_out())
        for number, start in enumerate(range(0, len(records), step)):
            worker = [workers[number % len(workers)]]
            chunk, label = self.client.scatter(
                [records.iloc[start : start + step], np.asarray(labels.iloc[start : start + step])],
                workers=worker,
                hash=False,
            )
            rows = min(step, len(records) - start)
            encoded = self.client.submit(
                _encode, features_future, chunk, pure=False, workers=worker
            )
            matrices.append(da.from_delayed(encoded, shape=(rows, width), dtype="float64"))
            targets.append(da.from_delayed(label, shape=(rows,), dtype=labels.dtype))
        params = {k: v for k, v in model.get_params().items() if k != "n_jobs"}
        distributed = DaskLGBMClassifier(client=self.client, **params)
        with self.client.as_current(), warnings.catch_warnings():
            # Each worker trains with its own threads: the local fit's n_jobs does not apply.
            warnings.filterwarnings("ignore", "Parameter n_jobs will be ignored")
            distributed.fit(da.concatenate(matrices), da.concatenate(targets))
        fitted = distributed.to_local()
        fitted.set_params(n_jobs=model.get_params().get("n_jobs"))
        pipeline.steps[-1] = ("model", fitted)
        return pipeline


def _encode(features: Any, chunk: pd.DataFrame) -> np.ndarray:
    return np.asarray(features.transform(chunk), dtype="float64")


def _large(value: Any) -> bool:
    return isinstance(value, pd.DataFrame | pd.Series | np.ndarray)


def column_groups(columns: Sequence[str], groups: int) -> list[list[str]]:
    """`columns` in at most `groups` groups of near-equal size, in order."""
    groups = max(1, min(groups, len(columns)))
    return [list(part) for part in np.array_split(np.asarray(columns, dtype=object), groups)]
