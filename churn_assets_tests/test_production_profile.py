"""The production profile against real servers: Dagster on PostgreSQL, MLflow as `mlflow server`.

A PostgreSQL server is needed (CHURN_TEST_POSTGRES_URL, by default the one CI runs on
127.0.0.1:5432 with trust authentication); each test module gets two fresh databases, dropped
afterwards. Runs are launched the way the UI launches them: `dagster job launch` queues them, a
real `dagster-daemon` dequeues them and its code server starts each run's process.
"""

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import yaml
from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    RunsFilter,
)

from churn_assets_tests.conftest import QUICK_TRAINING, REPOSITORY, free_port
from churn_assets_tests.processes import (
    POSTGRES,
    postgres_admin,
    stop_group,
    terminate,
    wait_http,
)

# Starts servers or processes, or runs the whole pipeline: not in `make check`.
pytestmark = pytest.mark.servers

BIN = Path(sys.executable).parent
FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
# Where dagster-daemon's run-retry consumer keeps how far it has read the failures.
RETRY_CURSOR = f"EVENT_LOG_CONSUMER_CURSOR-{DagsterEventType.RUN_FAILURE.value}"


@pytest.fixture(scope="module")
def databases() -> Iterator[dict[str, str]]:
    """Two new databases (Dagster's and MLflow's) on the test server, dropped afterwards."""
    suffix = uuid.uuid4().hex[:8]
    names = {"dagster": f"churn_dagster_{suffix}", "mlflow": f"churn_mlflow_{suffix}"}
    connection = postgres_admin()
    with connection.cursor() as cursor:
        for name in names.values():
            cursor.execute(f"CREATE DATABASE {name}")
    # SQLAlchemy 2.1 reads postgresql:// as psycopg 3, which dagster-postgres does not support:
    # the URLs name psycopg2 (a dependency of dagster-postgres).
    base = POSTGRES.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg2://", 1)
    try:
        yield {role: f"{base}/{name}" for role, name in names.items()}
    finally:
        with connection.cursor() as cursor:
            for name in names.values():
                cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        connection.close()


@pytest.fixture(scope="module")
def mlflow_server(
    databases: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`mlflow server` on the MLflow database, serving artifacts from a local folder."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = folder / "mlflow.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [
                str(BIN / "mlflow"),
                "server",
                "--backend-store-uri",
                databases["mlflow"],
                "--artifacts-destination",
                (folder / "artifacts").as_uri(),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "MLFLOW_DISABLE_TELEMETRY": "true",
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # as `make` and the image do
            },
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health", process, log, timeout=180)
        yield url
    finally:
        terminate(process)


@pytest.fixture(scope="module")
def environment(
    databases: dict[str, str], mlflow_server: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """The production profile, chosen by environment variables only."""
    root = tmp_path_factory.mktemp("production")
    dagster_home = root / "dagster"
    dagster_home.mkdir()
    config = yaml.safe_load((REPOSITORY / "deploy" / "dagster-production.yaml").read_text())
    # The only changes to the shipped file, both of timing: run monitoring looks every 2 s
    # instead of 30 s, and the queue is looked at every second instead of every 5 s.
    config["run_monitoring"]["poll_interval_seconds"] = 2
    config["run_coordinator"]["config"]["dequeue_interval_seconds"] = 1
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(config))
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CHURN_", "MLFLOW_", "DAGSTER_"))
    }
    return {
        **environ,
        "DAGSTER_HOME": str(dagster_home),
        "DAGSTER_POSTGRES_URL": databases["dagster"],
        "MLFLOW_TRACKING_URI": mlflow_server,
        "CHURN_HOME": str(root / "home"),
        "CHURN_SYNTHETIC_ROWS": "2000",
        "CHURN_STEP_RETRY_DELAY_SECONDS": "1",
        "GX_ANALYTICS_ENABLED": "False",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DAGSTER_DISABLE_TELEMETRY": "true",
    }


@pytest.fixture(scope="module")
def instance(environment: dict[str, str]) -> Iterator[DagsterInstance]:
    """The Postgres-backed instance, as the daemon and the runs see it."""
    previous = os.environ.get("DAGSTER_POSTGRES_URL")
    os.environ["DAGSTER_POSTGRES_URL"] = environment["DAGSTER_POSTGRES_URL"]
    try:
        with DagsterInstance.from_config(environment["DAGSTER_HOME"]) as opened:
            yield opened
    finally:
        if previous is None:
            os.environ.pop("DAGSTER_POSTGRES_URL", None)
        else:
            os.environ["DAGSTER_POSTGRES_URL"] = previous


@pytest.fixture(scope="module")
def daemon(environment: dict[str, str], instance: DagsterInstance) -> Iterator[None]:
    """A real `dagster-daemon` (run queue, run monitoring, run retries) on the instance.

    Started in its own session: the code servers it starts (and their run workers) are in its
    process group, and what of them outlives the daemon is stopped with it. A code server of
    this module's workspace once outlived the module for the rest of the suite, ignoring SIGTERM.
    """
    log = Path(environment["DAGSTER_HOME"]) / "daemon.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
            cwd=REPOSITORY,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # Ready when every daemon has beaten and the run-retry consumer has set its cursor: on
        # its first tick it skips every failure already logged, so a run that fails before that
        # tick (a busy machine, a test that kills its run early) is never retried.
        required = set(instance.get_required_daemon_types())
        deadline = time.monotonic() + 180
        while not (
            required <= set(instance.get_daemon_heartbeats())
            and instance.daemon_cursor_storage.get_cursor_values({RETRY_CURSOR})
        ):
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        yield
    finally:
        terminate(process)
        stop_group(process.pid, timeout=10)


@pytest.fixture(scope="module")
def run_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "quick.yaml"
    config = {
        "ops": {
            "candidate_models": {"config": QUICK_TRAINING},
            "model_evaluation": {"config": {"latency_samples": 50}},
        }
    }
    path.write_text(yaml.safe_dump(config))
    return path


def launch(environment: dict[str, str], config: Path) -> subprocess.Popen[bytes]:
    """`dagster job launch` of the pipeline, as a process; the run id is in its `args`.

    In its own session, like the daemon: `run_id_of` stops what of it outlives it (the code
    server it starts to load the workspace).
    """
    run_id = str(uuid.uuid4())
    return subprocess.Popen(
        [
            str(BIN / "dagster"),
            "job",
            "launch",
            "-w",
            "workspace.yaml",
            "-j",
            "churn_pipeline",
            "-c",
            str(config),
            "--run-id",
            run_id,
        ],
        cwd=REPOSITORY,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def run_id_of(process: subprocess.Popen[bytes]) -> str:
    output, _ = process.communicate(timeout=120)
    stop_group(process.pid, timeout=10)
    assert process.returncode == 0, output.decode()[-3000:]
    arguments = list(process.args)  # type: ignore[arg-type]
    return str(arguments[arguments.index("--run-id") + 1])


def failures(instance: DagsterInstance, run_ids: list[str]) -> str:
    """What went wrong in the runs, from their event logs."""
    lines = []
    for run_id in run_ids:
        for entry in instance.all_logs(run_id):
            event = entry.dagster_event
            if (event is not None and event.is_failure) or int(entry.level) >= 40:
                error = getattr(event.event_specific_data, "error", None) if event else None
                lines.append(f"{run_id[:8]} {entry.message} {error.to_string() if error else ''}")
    return "\n".join(lines)[-5000:]


def wait_finished(instance: DagsterInstance, run_ids: list[str], timeout: float = 400) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = [instance.get_run_by_id(run_id) for run_id in run_ids]
        if all(run is not None and run.status in FINISHED for run in runs):
            return
        time.sleep(1)
    raise AssertionError(f"runs not finished after {timeout:g} s: {run_ids}")


def test_two_pipeline_runs_launched_together_both_succeed_on_postgres_and_a_tracking_server(
    environment: dict[str, str],
    instance: DagsterInstance,
    daemon: None,
    run_config: Path,
) -> None:
    from mlflow import MlflowClient

    launched = [launch(environment, run_config) for _ in range(2)]
    run_ids = [run_id_of(process) for process in launched]
    wait_finished(instance, run_ids)
    records = instance.get_run_records(RunsFilter(run_ids=run_ids))
    statuses = {record.dagster_run.status for record in records}
    assert statuses == {DagsterRunStatus.SUCCESS}, failures(instance, run_ids)
    # Both write the training data (tag churn/serial): the queue ran them one after the other.
    first, second = sorted(records, key=lambda record: record.start_time or 0)
    assert first.end_time is not None and second.start_time is not None
    assert second.start_time >= first.end_time - 0.5

    # Dagster's event log is in PostgreSQL: the whole graph's materializations are there.
    for asset in ("raw_customers", "labelled_customers", "registered_model", "production_model"):
        event = instance.get_latest_materialization_event(AssetKey(asset))
        assert event is not None and event.run_id in run_ids

    # The registry behind the tracking server: one version per run, exactly one production.
    # Both URIs: earlier tests in this process set mlflow's global registry URI to their stores.
    server = environment["MLFLOW_TRACKING_URI"]
    client = MlflowClient(tracking_uri=server, registry_uri=server)
    versions = client.search_model_versions("name = 'churn-predictor'")
    numbers = sorted(str(version.version) for version in versions)
    assert numbers == ["1", "2"]
    assert {version.tags["dagster_run_id"] for version in versions} == set(run_ids)
    assert all(version.tags["data_version"] for version in versions)
    holders = [
        number
        for number in numbers
        if "production" in client.get_model_version("churn-predictor", number).aliases
    ]
    assert len(holders) == 1
    model = client.get_registered_model("churn-predictor")
    assert str(model.aliases["production"]) == holders[0]
    assert str(model.aliases["staging"]) == "2"
    # Artifacts went through the server to its artifact store.
    run = client.get_run(str(versions[0].run_id))
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")


def _worker_pids(instance: DagsterInstance, run_id: str) -> list[int]:
    """The run worker's process id, from the engine events it reported ("... (pid: N)")."""
    pids = {
        int(match.group(1))
        for entry in instance.all_logs(run_id)
        if entry.message and (match := re.search(r"\(pid: (\d+)\)", entry.message))
    }
    return sorted(pid for pid in pids if Path(f"/proc/{pid}").exists())


def test_a_run_whose_process_is_killed_is_marked_failed_and_retried(
    environment: dict[str, str],
    instance: DagsterInstance,
    daemon: None,
    run_config: Path,
) -> None:
    run_id = run_id_of(launch(environment, run_config))
    deadline = time.monotonic() + 180
    workers: list[int] = []
    while not workers:
        assert time.monotonic() < deadline, "the run never started"
        run = instance.get_run_by_id(run_id)
        if run is not None and run.status == DagsterRunStatus.STARTED:
            workers = _worker_pids(instance, run_id)
        time.sleep(0.5)
    for pid in workers:
        os.kill(pid, signal.SIGKILL)

    # The dead run is marked failed, and the daemon starts a retry that completes.
    deadline = time.monotonic() + 300
    retries: Sequence[DagsterRun] = []
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        retries = instance.get_runs(RunsFilter(tags={"dagster/parent_run_id": run_id}))
        if run is not None and run.status == DagsterRunStatus.FAILURE and retries:
            break
        time.sleep(1)
    run = instance.get_run_by_id(run_id)
    assert run is not None and run.status == DagsterRunStatus.FAILURE
    daemon_log = Path(environment["DAGSTER_HOME"]) / "daemon.log"
    assert len(retries) == 1, "no retry was launched:\n" + "\n".join(
        [entry.message for entry in instance.all_logs(run_id) if "etr" in (entry.message or "")]
        + [failures(instance, [run_id]), daemon_log.read_text()[-3000:]]
    )
    [retry] = retries
    assert retry.tags.get("dagster/retry_number") == "1"
    wait_finished(instance, [retry.run_id])
    finished = instance.get_run_by_id(retry.run_id)
    assert finished is not None and finished.status == DagsterRunStatus.SUCCESS
    messages = [entry.message for entry in instance.all_logs(run_id) if entry.message]
    assert any("was terminated by signal 9 (SIGKILL)" in message for message in messages)
