"""The code location as Dagster loads it: every asset, check, job, sensor and schedule."""

import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetKey,
    AssetSelection,
    DagsterEventType,
    DagsterInstance,
    Definitions,
    FilesystemIOManager,
    RetryPolicy,
    ScheduleDefinition,
    define_asset_job,
)

from churn_assets.definitions import defs
from churn_assets_tests.conftest import REPOSITORY, free_port, today
from churn_assets_tests.processes import stop_group

# Starts servers or processes, or runs the whole pipeline: not in `make check`.
pytestmark = pytest.mark.servers


def test_every_definition_is_listed() -> None:
    graph = defs.resolve_asset_graph()
    assets = {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert assets == {
        "raw_customers": "ingestion",
        "labelled_customers": "ingestion",
        "validated_customers": "validation",
        "customer_splits": "features",
        "feature_pipeline": "features",
        "candidate_models": "training",
        "model_evaluation": "evaluation",
        "registered_model": "registry",
        "production_model": "registry",
        "reference_customers": "monitoring",
        "production_inputs": "monitoring",
        "drift_report": "monitoring",
        "live_performance": "monitoring",
        "compacted_logs": "monitoring",
        "customer_scores": "scoring",
    }

    checks = {(key.asset_key.to_user_string(), key.name) for key in graph.asset_check_keys}
    blocking = {
        ("validated_customers", name)
        for name in (
            "required_columns",
            "key_columns_not_null",
            "column_completeness",
            "customer_key_unique",
            "numeric_ranges",
            "categorical_values",
            "target_is_binary",
            "row_count",
            "data_quality",
        )
    } | {
        ("registered_model", name)
        for name in (
            "f1_gate",
            "recall_gate",
            "probability_rmse_gate",
            "latency_p99_gate",
            "leakage_gate",
            "savings_gate",
            "input_schema_compatible",
        )
    }
    warnings = {("validated_customers", "target_leakage")} | {
        ("drift_report", "feature_drift"),
        ("live_performance", "live_f1_degradation"),
        ("raw_customers", "coerced_values"),
        ("raw_customers", "rows_set_aside"),
    }
    assert checks == blocking | warnings
    # Data and gate checks stop the pipeline; ingestion and monitoring checks only warn.
    for key in graph.asset_check_keys:
        spec = graph.get_check_spec(key)
        assert spec.blocking == ((key.asset_key.to_user_string(), key.name) in blocking)

    jobs = {job.name for job in defs.resolve_all_job_defs() if not job.name.startswith("__")}
    assert jobs == {
        "ingest_and_validate",
        "churn_pipeline",
        "monitoring",
        "refresh_labelled_data",
        "score_customers",
        "compact_logs",
    }
    sensors = {sensor.name: sensor for sensor in defs.sensors or []}
    assert set(sensors) == {
        "automation_sensor",
        "monitoring_sensor",
        "drift_sensor",
        "new_data_sensor",
        "pipeline_failure_alert",
        "pipeline_recovery",
        "pipeline_freshness_sensor",
        "rescore_on_promotion",
    }
    assert sensors["drift_sensor"].job_name == "churn_pipeline"
    assert sensors["rescore_on_promotion"].job_name == "score_customers"
    assert sensors["monitoring_sensor"].job_name == "monitoring"
    assert sensors["new_data_sensor"].job_name == "refresh_labelled_data"
    timed = (
        "monitoring_sensor",
        "drift_sensor",
        "new_data_sensor",
        "pipeline_freshness_sensor",
        "rescore_on_promotion",
    )
    assert all(sensors[name].minimum_interval_seconds == 60 for name in timed)
    assert all(sensor.default_status.value == "RUNNING" for sensor in sensors.values())
    pipeline = defs.resolve_job_def("churn_pipeline").asset_layer.selected_asset_keys
    assert {key.to_user_string() for key in pipeline} == {
        name for name, group in assets.items() if group not in ("monitoring", "scoring")
    }
    schedules = {schedule.name for schedule in defs.schedules or []}
    assert schedules == {"daily_churn_pipeline"}
    schedule = defs.resolve_schedule_def("daily_churn_pipeline")
    assert isinstance(schedule, ScheduleDefinition)
    assert (schedule.cron_schedule, schedule.job_name) == ("@daily", "churn_pipeline")
    # The nightly scores and the log compaction are automation conditions, evaluated by the
    # automation sensor (test_automation.py evaluates them); the pipeline's ends say how fresh
    # they should be.
    automated = {
        key.to_user_string()
        for key in graph.get_all_asset_keys()
        if graph.get(key).automation_condition is not None
    }
    assert automated == {"customer_scores", "compacted_logs"}
    assert sensors["automation_sensor"].asset_selection is not None
    assert sensors["automation_sensor"].asset_selection.resolve(graph) == {
        AssetKey(name) for name in automated
    }
    fresh = {
        key.to_user_string()
        for key in graph.get_all_asset_keys()
        if graph.get(key).freshness_policy is not None
    }
    assert fresh == {"registered_model", "production_model", "customer_scores"}
    assert defs.resolve_job_def("compact_logs").partitions_def is not None
    # The monitoring assets measure one day each (today's included); their reference does not.
    graph = defs.resolve_asset_graph()
    daily = {
        key.to_user_string()
        for key in graph.get_all_asset_keys()
        if graph.get(key).partitions_def is not None
    }
    assert daily == {
        "production_inputs",
        "drift_report",
        "live_performance",
        "compacted_logs",
        "customer_scores",
    }
    monitoring = defs.resolve_job_def("monitoring").partitions_def
    assert monitoring is not None and monitoring.get_last_partition_key() == today()
    for name in ("ingest_and_validate", "churn_pipeline"):
        policy = defs.resolve_job_def(name).op_retry_policy
        assert policy is not None and (policy.max_retries, policy.delay) == (3, 300)
    lineage = [
        "raw_customers",
        "labelled_customers",
        "validated_customers",
        "customer_splits",
        "feature_pipeline",
        "candidate_models",
        "model_evaluation",
        "registered_model",
        "production_model",
    ]
    for parent, child in itertools.pairwise(lineage):
        assert AssetKey(parent) in graph.get(AssetKey(child)).parent_keys
    for parent, child in (
        ("production_model", "reference_customers"),
        ("production_model", "live_performance"),
        ("reference_customers", "drift_report"),
        ("production_inputs", "drift_report"),
    ):
        assert AssetKey(parent) in graph.get(AssetKey(child)).parent_keys


def test_dagster_validates_the_code_location() -> None:
    os.makedirs(os.environ["CHURN_HOME"], exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPOSITORY,
        env={**os.environ, "DAGSTER_HOME": os.environ["CHURN_HOME"]},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation successful" in result.stdout + result.stderr


def retrying_ingestion(home_path: str) -> Any:
    """The ingestion and validation steps as a job retrying once, at once."""
    from churn_assets.definitions import ASSETS
    from churn_assets.resources import DatasetResource, PlatformHome

    home = PlatformHome(path=home_path)
    return Definitions(
        assets=ASSETS[:2],
        jobs=[
            define_asset_job(
                "retrying", AssetSelection.all(), op_retry_policy=RetryPolicy(max_retries=1)
            )
        ],
        resources={
            "dataset": DatasetResource(),
            "home": home,
            "io_manager": FilesystemIOManager(base_dir=str(home.root / "storage")),
        },
    ).resolve_job_def("retrying")


def retries_of(result: Any) -> int:
    return sum(
        event.event_type == DagsterEventType.STEP_UP_FOR_RETRY for event in result.all_events
    )


@pytest.mark.parametrize(
    ("source", "retried"),
    [
        pytest.param("http://127.0.0.1:{port}/customers.csv", 1, id="unreachable server: retried"),
        pytest.param("{broken}", 0, id="malformed file: not retried"),
    ],
)
def test_only_failures_a_retry_can_fix_are_retried(
    tmp_path: Path, source: str, retried: int
) -> None:
    port = free_port()
    broken = tmp_path / "broken.csv"
    broken.write_bytes(b"\x00\x01 not a table")
    job = retrying_ingestion(str(tmp_path / "home"))
    result = job.execute_in_process(
        run_config={
            "resources": {
                "dataset": {"config": {"source": source.format(port=port, broken=broken)}}
            }
        },
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    assert retries_of(result) == retried


def test_dagster_dev_starts_from_the_repository_root_with_only_the_venv(tmp_path: Path) -> None:
    """What a Dagster user types first: `dagster dev`, no DAGSTER_HOME, the platform loads."""
    import json
    import signal
    import time
    import urllib.request

    port = free_port()
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("DAGSTER_")
    }
    environment["PATH"] = f"{Path(sys.executable).parent}:{environment.get('PATH', '')}"
    environment["CHURN_HOME"] = str(tmp_path / "home")  # keep the test out of the checkout
    log = tmp_path / "dagster-dev.log"
    homes_before = set(REPOSITORY.glob(".tmp_dagster_home_*"))
    with open(log, "wb") as output:
        process = subprocess.Popen(
            ["dagster", "dev", "-p", str(port)],
            cwd=REPOSITORY,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    query = json.dumps(
        {
            "query": "{ workspaceOrError { ... on Workspace { locationEntries "
            "{ name locationOrLoadError { __typename } } } } }"
        }
    ).encode()
    entries: list[Any] = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and process.poll() is None:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/graphql",
                    query,
                    {"Content-Type": "application/json"},
                )
                with urllib.request.urlopen(request, timeout=5) as response:
                    answer = json.load(response)
                entries = answer["data"]["workspaceOrError"]["locationEntries"]
                if entries and entries[0]["locationOrLoadError"]:
                    break
            except (OSError, KeyError, TypeError):
                pass
            time.sleep(1)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        # A process of its group can outlive `dagster dev` (on a busy machine, a code server
        # still starting when it was stopped) and recreate the temporary home it had removed:
        # stop the group, and take away the homes this test made (`.gitignore` lists them too).
        stop_group(process.pid)
        # Whatever it leaves in the checkout, git ignores: a user's `git status` stays clean.
        unignored = []
        for home in set(REPOSITORY.glob(".tmp_dagster_home_*")) - homes_before:
            checked = subprocess.run(["git", "check-ignore", "-q", str(home)], cwd=REPOSITORY)
            if checked.returncode != 0:
                unignored.append(home.name)
            shutil.rmtree(home, ignore_errors=True)
    output_text = log.read_text()
    assert not unignored, f"dagster dev left homes git does not ignore: {unignored}"
    assert entries, output_text[-3000:]
    assert entries[0]["name"] == "churn_assets"
    assert entries[0]["locationOrLoadError"]["__typename"] == "RepositoryLocation", output_text[
        -3000:
    ]
    assert "which is not set" not in output_text
