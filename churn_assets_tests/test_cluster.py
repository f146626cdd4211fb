"""The heavy steps on a real Dask cluster: a scheduler and two worker processes on this machine.

Each test compares the cluster path with the local one on the same data: the refit (LightGBM's
data-parallel learner, and another algorithm on one worker), nightly scoring and drift. A worker
killed during a distributed fit fails the refit with an error naming the cluster; the nanny
restarts the worker and the retry succeeds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from churn.drift import measure_drift, measure_drift_on
from churn.engine import ClusterError, Engine
from churn.model.artifact import ChurnModel
from churn.model.features import build_feature_pipeline, feature_columns
from churn.model.schema import ModelSchema
from churn.model.scoring import Scorer
from churn.normalise import normalise
from churn.score_store import ScoreStore
from churn_assets.ingestion.synthetic import SyntheticDrift, generate_customers
from churn_assets.scoring.batch import Population, ScoredModel, score_population
from churn_assets.training.search import SearchBudget, SearchResult, refit, tune

pytestmark = pytest.mark.servers

TARGET = "churn"
KEY = "customer_id"
BUDGET = SearchBudget(
    iterations=2, folds=3, time_limit_seconds=60, max_tuning_rows=4_000, n_jobs=1, seed=7
)


@dataclass
class DaskCluster:
    """A scheduler and its workers, each a process of its own (a nanny and its worker)."""

    address: str
    scheduler: subprocess.Popen[bytes]
    workers: list[subprocess.Popen[bytes]]

    def wait_for_workers(self, count: int, timeout: float = 60.0) -> None:
        from distributed import Client

        with Client(self.address, timeout=30, set_as_default=False) as client:
            client.wait_for_workers(count, timeout=timeout)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    folder = tmp_path_factory.mktemp("dask")
    scheduler_file = folder / "scheduler.json"
    dask = [sys.executable, "-m", "dask"]
    logs = [(folder / f"{name}.log").open("wb") for name in ("scheduler", "worker-1", "worker-2")]
    scheduler = subprocess.Popen(
        [
            *dask,
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--dashboard-address",
            ":0",
            "--scheduler-file",
            str(scheduler_file),
        ],
        stdout=logs[0],
        stderr=subprocess.STDOUT,
    )
    workers: list[subprocess.Popen[bytes]] = []
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() or not scheduler_file.read_text().strip():
            assert scheduler.poll() is None, (folder / "scheduler.log").read_text()
            assert time.monotonic() < deadline, "the Dask scheduler did not start in 60 s"
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        for number, log in enumerate(logs[1:], start=1):
            workers.append(
                subprocess.Popen(
                    [
                        *dask,
                        "worker",
                        "--scheduler-file",
                        str(scheduler_file),
                        "--nthreads",
                        "1",
                        "--name",
                        f"worker-{number}",
                        "--host",
                        "127.0.0.1",
                        "--dashboard-address",
                        ":0",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        running = DaskCluster(address, scheduler, workers)
        running.wait_for_workers(2)
        yield running
    finally:
        for process in [*workers, scheduler]:
            process.terminate()
        for process in [*workers, scheduler]:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        for log in logs:
            log.close()


@pytest.fixture(scope="module")
def customers() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Normalised synthetic customers: a training split and a hold-out split."""
    frame, _ = normalise(generate_customers(30_000, seed=11), "Churn")
    return frame.iloc[:24_000], frame.iloc[24_000:]


def _tuned(algorithm: str, train: pd.DataFrame) -> SearchResult:
    numeric, categorical, dates = feature_columns(train, TARGET, KEY, ())
    return tune(
        algorithm,
        build_feature_pipeline(numeric, categorical, dates),
        train,
        train[TARGET],
        BUDGET,
        "roc_auc",
        0.8,
        None,
        refit_all=False,
    )


def _refitted(result: SearchResult, train: pd.DataFrame, engine: Engine | None) -> SearchResult:
    numeric, categorical, dates = feature_columns(train, TARGET, KEY, ())
    return refit(
        result,
        build_feature_pipeline(numeric, categorical, dates),
        train,
        train[TARGET],
        BUDGET,
        engine,
    )


def test_lightgbm_trained_on_the_cluster_reaches_the_local_fits_quality(
    cluster: DaskCluster, customers: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    train, holdout = customers
    tuned = _tuned("lightgbm", train)
    local = _refitted(tuned, train, None)
    distributed = _refitted(tuned, train, Engine(cluster.address))

    assert distributed.fit_rows == len(train) and cluster.address in distributed.fit_engine
    auc = [
        roc_auc_score(holdout[TARGET], result.probabilities(holdout))
        for result in (local, distributed)
    ]
    assert abs(auc[0] - auc[1]) <= 0.005, auc
    # The model is LightGBM's plain estimator: it pickles, and loads, without Dask.
    model = distributed.pipeline.named_steps["model"]
    assert type(model).__module__ == "lightgbm.sklearn"
    blob = pickle.dumps(distributed.pipeline)
    assert b"distributed" not in blob and b"lightgbm.dask" not in blob


def test_another_algorithm_fits_on_one_worker_exactly_as_it_does_here(
    cluster: DaskCluster, customers: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    train, holdout = customers
    tuned = _tuned("logistic_regression", train)
    local = _refitted(tuned, train, None)
    distributed = _refitted(tuned, train, Engine(cluster.address))
    np.testing.assert_allclose(
        local.probabilities(holdout), distributed.probabilities(holdout), rtol=0, atol=1e-9
    )


def test_nightly_scores_from_the_cluster_are_the_local_scores(
    cluster: DaskCluster, customers: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    train, _ = customers
    tuned = _tuned("lightgbm", train)
    schema = ModelSchema.from_frame(train, TARGET, KEY)
    model = ChurnModel.from_pipeline(tuned.pipeline, tuned.threshold, KEY, schema)
    scored = ScoredModel("churn-predictor", "1", Scorer.of(model))
    population = tmp_path / "customers.csv"
    generate_customers(25_000, seed=12).to_csv(population, index=False)

    rows: dict[str, int] = {}
    scores: dict[str, pd.DataFrame] = {}
    for name, engine in (("local", None), ("cluster", Engine(cluster.address))):
        store = ScoreStore(tmp_path / name)
        outcome = score_population(
            store,
            "2026-12-04",
            scored,
            Population(str(population), "customers.csv"),
            chunk_rows=3_000,
            engine=engine,
        )
        rows[name] = outcome.manifest.rows_scored
        scores[name] = store.read("2026-12-04")

    local, distributed = scores["local"], scores["cluster"]
    assert len(local) == rows["local"] == rows["cluster"] > 15_000
    assert list(distributed[KEY]) == list(local[KEY])
    np.testing.assert_allclose(
        distributed["churn_probability"], local["churn_probability"], rtol=0, atol=1e-6
    )
    for column in ("rank", "risk_band", "reason_1", "reason_2", "reason_3"):
        assert distributed[column].astype(str).tolist() == local[column].astype(str).tolist()


def test_drift_measured_on_the_cluster_is_the_local_measurement(
    cluster: DaskCluster, tmp_path: Path
) -> None:
    reference, _ = normalise(generate_customers(20_000, seed=1), "Churn")
    current, _ = normalise(
        generate_customers(5_000, seed=2, drift=SyntheticDrift(monthly_charges_shift=0.3)),
        "Churn",
    )
    columns = [c for c in reference.columns if c not in (TARGET, KEY)]
    local = measure_drift(reference, current, columns)
    with Engine(cluster.address).session("drift") as on_cluster:
        distributed = measure_drift_on(on_cluster, reference, current, columns)

    assert [c.column for c in distributed.columns] == columns
    np.testing.assert_allclose(
        [distributed.psi()[c] for c in columns], [local.psi()[c] for c in columns], atol=1e-12
    )
    assert "monthly_charges" in [c.column for c in distributed.drifted]
    page = tmp_path / "drift.html"
    distributed.save_html(str(page))
    assert page.read_text().count("<iframe") == 2


def test_a_worker_lost_mid_fit_fails_the_refit_naming_the_cluster_and_the_retry_succeeds(
    cluster: DaskCluster, customers: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    from distributed import Client

    train, _ = customers
    tuned = _tuned("lightgbm", train)
    # Enough trees that the kill lands during training.
    slow_params = {**tuned.best.params, "n_estimators": 5_000, "num_leaves": 63}
    slow = dataclasses.replace(tuned, best=dataclasses.replace(tuned.best, params=slow_params))
    killed: list[int] = []

    def kill_a_worker_once_training_runs() -> None:
        with Client(cluster.address, timeout=30, set_as_default=False) as watcher:
            pids = watcher.run(os.getpid)  # worker address -> its process
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                training = [
                    worker
                    for worker, keys in watcher.processing().items()
                    if any(str(key).startswith("_train_part") for key in keys)
                ]
                if training:
                    time.sleep(1.0)
                    os.kill(pids[training[0]], signal.SIGKILL)
                    killed.append(pids[training[0]])
                    return
                time.sleep(0.05)

    killer = threading.Thread(target=kill_a_worker_once_training_runs)
    killer.start()
    started = time.monotonic()
    with pytest.raises(ClusterError) as failure:
        _refitted(slow, train, Engine(cluster.address))
    killer.join()
    assert killed, "training never started on the cluster"
    message = str(failure.value)
    assert cluster.address in message and "the refit of lightgbm" in message
    assert time.monotonic() - started < 300

    # The nanny restarts its worker; the step's retry runs on both again.
    cluster.wait_for_workers(2, timeout=120)
    retried = _refitted(tuned, train, Engine(cluster.address))
    assert retried.fit_rows == len(train)


def test_an_unreachable_cluster_is_named() -> None:
    unreachable = Engine("tcp://127.0.0.1:9", connect_timeout=2.0)
    with (
        pytest.raises(ClusterError, match=r"tcp://127\.0\.0\.1:9 \(CHURN_DASK_SCHEDULER\)"),
        unreachable.session("drift"),
    ):
        pass
