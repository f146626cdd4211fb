"""The pipeline when what it writes to fails: the MLflow server goes away, the disk fills up.

Real faults on real components: an `mlflow server` process is stopped between training and
registration, and ingestion writes to a real tmpfs that is full. What must hold: a failure that
says what happened, a retry, nothing left half-registered or half-written, and the previous
version still current.
"""

from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    FilesystemIOManager,
    RetryPolicy,
    define_asset_job,
    materialize,
)

from churn.registry import PRODUCTION, STAGING
from churn_assets.definitions import ASSETS
from churn_assets.ingestion.assets import raw_customers
from churn_assets.resources import (
    ComputeResource,
    DatasetResource,
    MlflowResource,
    PlatformHome,
    QualityGates,
)
from churn_assets_tests.conftest import (
    QUICK_TRAINING,
    free_port,
    metadata,
    registry_of,
    set_environment,
)
from churn_assets_tests.processes import fill, mlflow_server, small_disk, stop

# Starts servers or processes, or runs the whole pipeline: not in `make check`.
pytestmark = pytest.mark.servers

TRAINING = [asset.key.path[-1] for asset in ASSETS[:-2]]  # ingestion to model_evaluation
REGISTRATION = ["registered_model", "production_model"]


def pipeline(home: PlatformHome, storage: Path) -> Definitions:
    """The training assets, as two jobs that retry a failed step once, at once."""
    retry = RetryPolicy(max_retries=1, delay=0)
    return Definitions(
        assets=ASSETS,
        jobs=[
            define_asset_job("train", selection=TRAINING, op_retry_policy=retry),
            define_asset_job("register", selection=REGISTRATION, op_retry_policy=retry),
        ],
        resources={
            "dataset": DatasetResource(synthetic_rows=2_000),
            "home": home,
            "mlflow_tracking": MlflowResource.from_env(home),
            "compute": ComputeResource(),
            "gates": QualityGates.from_env({"CHURN_GATES": "telco"}),
            "io_manager": FilesystemIOManager(base_dir=str(storage)),
        },
    )


def run(defs: Definitions, job: str, instance: DagsterInstance) -> ExecuteInProcessResult:
    config = {
        "ops": {
            "candidate_models": {"config": QUICK_TRAINING},
            "model_evaluation": {"config": {"latency_samples": 50}},
        }
    }
    selected = {"train": TRAINING, "register": REGISTRATION}[job]
    return defs.resolve_job_def(job).execute_in_process(
        run_config={"ops": {k: v for k, v in config["ops"].items() if k in selected}},
        instance=instance,
        raise_on_error=False,
    )


def test_an_mlflow_outage_fails_clearly_is_retried_and_leaves_nothing_half_registered(
    isolated_home: PlatformHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    store = f"sqlite:///{tmp_path / 'mlflow-server.db'}"
    server = mlflow_server(store, port, artifacts=tmp_path / "artifacts")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail in seconds, not minutes
    set_environment(monkeypatch, MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}")
    defs = pipeline(isolated_home, tmp_path / "storage")
    instance = DagsterInstance.ephemeral()
    try:
        for job in ("train", "register"):  # version 1, in production
            assert run(defs, job, instance).success
        trained = run(defs, "train", instance)  # a challenger, evaluated
        assert trained.success
        stop(server)  # the tracking server goes away before registration

        failed = run(defs, "register", instance)
        assert not failed.success
        retried = [
            e for e in failed.all_events if e.event_type == DagsterEventType.STEP_UP_FOR_RETRY
        ]
        assert [e.step_key for e in retried] == ["registered_model"]
        failure = failed.get_step_failure_events()[0].step_failure_data.user_failure_data
        assert failure is not None and failure.description is not None
        assert failure.description.startswith(
            f"The MLflow store http://127.0.0.1:{port} could not be reached during "
            "registered_model (connection refused)"
        )
        assert "production_model" not in {e.step_key for e in failed.get_step_success_events()}

        server = mlflow_server(store, port, artifacts=tmp_path / "artifacts")
        registry = registry_of(isolated_home)
        assert [row.version for row in registry.history()] == ["1"]
        assert registry.alias_version(PRODUCTION) == "1"

        # What an outage right after the version was created leaves: a version with no card,
        # no tags and no alias. The retried step must complete it, not add another.
        evaluation = trained.output_for_node("model_evaluation")
        half = registry.register(evaluation.model_uri, evaluation.run_id, {}, description="")
        assert half == "2" and registry.alias_version(STAGING) == "1"

        completed = run(defs, "register", instance)
        assert completed.success
        assert [row.version for row in registry.history()] == ["2", "1"]
        assert registry.alias_version(STAGING) == "2"
        version = registry.client.get_model_version(registry.name, "2")
        assert version.tags["mlflow_run_id"] == evaluation.run_id
        assert version.tags["gates"] in {"passed", "failed"}
        assert version.description.startswith("# ")  # the model card
        assert metadata(completed, "registered_model")["version"] == "2"
    finally:
        stop(server)


def test_a_full_disk_during_ingestion_keeps_the_previous_version_current(
    isolated_home: PlatformHome,
) -> None:
    snapshots = isolated_home.snapshots().root
    instance = DagsterInstance.ephemeral()

    def ingest(seed: int) -> ExecuteInProcessResult:
        return materialize(
            [raw_customers],
            resources={
                "dataset": DatasetResource(synthetic_rows=3_000, synthetic_seed=seed),
                "home": isolated_home,
            },
            instance=instance,
            raise_on_error=False,
        )

    with small_disk(snapshots, "4m"):
        first = ingest(seed=1)
        assert first.success
        current = metadata(first, "raw_customers")["snapshot"]
        stored = sorted(path.name for path in snapshots.iterdir())
        history = (snapshots / "history.jsonl").read_text()

        filler = fill(snapshots)
        failed = ingest(seed=2)
        assert not failed.success
        failure = failed.get_step_failure_events()[0].step_failure_data.user_failure_data
        assert failure is not None and failure.description is not None
        assert "No space left on device" in failure.description
        assert "The previous data version stays current" in failure.description
        # Nothing of the new version, no partial file, the history whole.
        assert sorted(p.name for p in snapshots.iterdir() if p != filler) == stored
        assert (snapshots / "history.jsonl").read_text() == history
        latest = instance.get_latest_materialization_event(AssetKey("raw_customers"))
        assert latest is not None and latest.asset_materialization is not None
        assert latest.asset_materialization.metadata["snapshot"].value == current
        assert Path(current).exists()

        filler.unlink()  # space again: the same source ingests
        again = ingest(seed=2)
        assert again.success and metadata(again, "raw_customers")["snapshot"] != current
