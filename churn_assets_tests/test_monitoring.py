"""The feedback loop: logged traffic, new labels, monitoring assets, sensors, and a retrain.

Prediction and feedback logs are written with the service's own `ParquetLog` and schemas; the
registry is a real MLflow store filled by real pipeline runs.
"""

import json
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from datetime import time as clock
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    RunRequest,
    SensorResult,
    SkipReason,
    build_sensor_context,
    materialize,
)

from churn.logs import (
    FEEDBACK,
    FEEDBACK_SCHEMA,
    PREDICTIONS,
    join_feedback,
    prediction_schema,
)
from churn.model.schema import ModelSchema
from churn.normalise import normalise
from churn.parquet_log import ParquetLog, read_log
from churn_assets.definitions import ASSETS, defs
from churn_assets.ingestion.assets import labelled_customers, raw_customers
from churn_assets.ingestion.synthetic import SyntheticDrift, churn_probability, generate_customers
from churn_assets.monitoring.assets import MONITORING_ASSETS
from churn_assets.monitoring.common import DRIFT_CHECK, DRIFT_REPORT
from churn_assets.monitoring.inputs import production_inputs
from churn_assets.resources import (
    ComputeResource,
    DatasetResource,
    MlflowResource,
    PlatformHome,
    QualityGates,
)
from churn_assets.sensors import (
    MONITORING_RUN_TAG,
    REASON_TAG,
    TRIGGER_TAG,
    DriftSensorState,
    Finding,
    decide,
)
from churn_assets.telco import FEATURES
from churn_assets_tests.conftest import (
    QUICK_TRAINING,
    metadata,
    registry_of,
    run_pipeline,
    set_environment,
    today,
)

# Starts servers or processes, or runs the whole pipeline: not in `make check`.
pytestmark = pytest.mark.servers

NOW = datetime.now(UTC)


def customers(rows: int, seed: int, drift: SyntheticDrift | None = None) -> pd.DataFrame:
    frame, _ = normalise(generate_customers(rows, seed, drift), "Churn")
    return frame


def log_predictions(
    home: PlatformHome,
    frame: pd.DataFrame,
    version: str = "1",
    at: datetime | None = None,
    labels: np.ndarray | None = None,
    alias: str = "production",
) -> list[str]:
    """Write `frame`'s customers to the prediction log as the service would; return the ids."""
    at = at or datetime.now(UTC)
    rows = len(frame)
    probability = churn_probability(frame)
    ids = [uuid.uuid4().hex for _ in range(rows)]
    batch: dict[str, Any] = {
        "request_id": [uuid.uuid4().hex] * rows,
        "prediction_id": ids,
        "predicted_at": [at - timedelta(seconds=rows - i) for i in range(rows)],
        "model_name": ["churn-predictor"] * rows,
        "model_version": [version] * rows,
        "model_alias": [alias] * rows,
        "customer_id": frame["customer_id"].astype(str).tolist(),
        **{name: frame[name].tolist() for name in FEATURES},
        "churn_probability": probability.tolist(),
        "churn_label": (probability >= 0.5 if labels is None else labels).astype(int).tolist(),
        "unknown_categories": [""] * rows,
    }
    for name in ("total_charges",):
        batch[name] = [None if v != v else v for v in batch[name]]
    schema = prediction_schema(ModelSchema.from_frame(frame, "churn", "customer_id"))
    log = ParquetLog(home.serving_log(alias, PREDICTIONS), schema, "predicted_at")
    log.append(batch)
    log.close()
    return ids


def log_feedback(
    home: PlatformHome,
    customer_ids: list[str],
    churned: list[bool],
    prediction_ids: Sequence[str | None],
    observed_at: datetime | None = None,
    alias: str = "production",
) -> None:
    rows = len(customer_ids)
    observed = observed_at or datetime.now(UTC)
    log = ParquetLog(home.serving_log(alias, FEEDBACK), FEEDBACK_SCHEMA, "received_at")
    log.append(
        {
            "request_id": [uuid.uuid4().hex] * rows,
            "received_at": [datetime.now(UTC)] * rows,
            "customer_id": customer_ids,
            "churned": churned,
            "observed_at": [observed] * rows,
            "prediction_id": prediction_ids,
        }
    )
    log.close()


# Feedback join


def test_outcomes_join_their_prediction_by_id_or_by_the_customers_latest_earlier_score(
    isolated_home: PlatformHome,
) -> None:
    frame = customers(4, 1)
    keys = frame["customer_id"].astype(str).tolist()
    early = log_predictions(isolated_home, frame, "1", at=NOW - timedelta(hours=2))
    late = log_predictions(isolated_home, frame, "2", at=NOW)
    log_feedback(isolated_home, keys[:1], [True], [early[0]])  # named prediction: the early one
    # By customer: the latest prediction before the outcome was observed.
    log_feedback(isolated_home, keys[1:2], [False], [None], observed_at=NOW - timedelta(hours=1))
    log_feedback(isolated_home, keys[2:3], [True], [None], observed_at=NOW + timedelta(hours=1))
    log_feedback(isolated_home, ["nobody"], [True], [None])  # never scored
    log_feedback(isolated_home, keys[3:4], [True], [None], observed_at=NOW - timedelta(days=3))
    log_feedback(isolated_home, keys[3:4], [True], ["no-such-prediction"])

    predictions = read_log(isolated_home.serving_log("production", PREDICTIONS))
    feedback = read_log(isolated_home.serving_log("production", FEEDBACK))
    joined = join_feedback(predictions, feedback)
    matched = {row.customer_id: row.prediction_id for row in joined.rows.itertuples()}
    assert matched == {keys[0]: early[0], keys[1]: early[1], keys[2]: late[2]}
    assert joined.unmatched == 3
    assert set(FEATURES) <= set(joined.rows.columns)


# Labelled data: feedback and landing files


def materialize_labels(home: PlatformHome, rows: int = 500) -> Any:
    result = materialize(
        [raw_customers, labelled_customers],
        resources={"dataset": DatasetResource(synthetic_rows=rows), "home": home},
        instance=DagsterInstance.ephemeral(),
    )
    return result.output_for_node("labelled_customers"), result


def write_landing(home: PlatformHome, name: str, frame: pd.DataFrame) -> Path:
    home.landing_dir.mkdir(parents=True, exist_ok=True)
    path = home.landing_dir / name
    frame.to_csv(path, index=False)
    return path


def test_without_new_labels_the_labelled_data_is_the_source_version(
    isolated_home: PlatformHome,
) -> None:
    table, result = materialize_labels(isolated_home)
    raw = result.output_for_node("raw_customers")
    assert table.version == raw.version
    assert table.frame.equals(raw.frame)


def test_landing_files_and_feedback_add_rows_latest_observation_wins_bad_files_are_set_aside(
    isolated_home: PlatformHome,
) -> None:
    source = generate_customers(500, 42)  # the synthetic source's own rows (default seed)
    # A good batch: 30 new customers and 10 known ones with a newer outcome.
    fresh = generate_customers(30, 99)
    known = source.head(10).assign(Churn="Yes", observed_at=(NOW + timedelta(days=1)).isoformat())
    good = pd.concat([fresh.assign(observed_at=NOW.isoformat()), known], ignore_index=True)
    write_landing(isolated_home, "good.csv", good)
    # The same 10 customers again, observed earlier: the newer observation above must win.
    write_landing(
        isolated_home,
        "older.csv",
        source.head(10).assign(Churn="No", observed_at=(NOW - timedelta(days=1)).isoformat()),
    )
    bad = {
        "missing_column.csv": fresh.drop(columns=["tenure"]),
        "extra_column.csv": fresh.assign(Coupon="X"),
        "bad_number.csv": fresh.assign(MonthlyCharges="lots"),
        "bad_label.csv": fresh.assign(Churn="Maybe"),
    }
    for name, frame in bad.items():
        write_landing(isolated_home, name, frame)
    (isolated_home.landing_dir / "binary.csv").write_bytes(b"\x00\x01\x02binary")
    # Outcomes of 20 drifted customers the service scored.
    scored = customers(20, 5, SyntheticDrift(0.3, 0.5))
    ids = log_predictions(isolated_home, scored)
    log_feedback(isolated_home, scored["customer_id"].astype(str).tolist(), [True] * 20, ids)

    table, result = materialize_labels(isolated_home)
    raw = result.output_for_node("raw_customers")
    frame = table.frame
    assert table.version != raw.version
    assert len(frame) == 500 + 30 + 20
    assert frame["customer_id"].is_unique
    assert frame.dtypes.equals(raw.frame.dtypes)
    newest = frame.set_index("customer_id").loc[source["customerID"].head(10), "churn"]
    assert (newest == 1).all()
    scored_rows = frame.set_index("customer_id").loc[scored["customer_id"].astype(str)]
    assert (scored_rows["monthly_charges"].to_numpy() == scored["monthly_charges"]).all()

    [event] = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key == AssetKey("labelled_customers")
    ]
    metadata = {k: v.value for k, v in event.materialization.metadata.items()}
    assert metadata["new_data"] == (
        "New data available: 60 labelled rows (50 new customers, 10 replacing older rows)"
    )
    assert (metadata["rows_from_feedback"], metadata["rows_from_landing_files"]) == (20, 50)
    assert (metadata["replaced_rows"], metadata["rejected_files"]) == (10, 5)
    pd.testing.assert_frame_equal(isolated_home.snapshots().load(table.version), frame)

    # Bad files are moved aside with their reason; good files stay for the next rebuild.
    rejected = isolated_home.landing_dir / "rejected"
    reasons = {
        path.name.split("-", 1)[1].removesuffix(".reason.txt"): path.read_text()
        for path in rejected.glob("*.reason.txt")
    }
    assert "missing column(s): tenure" in reasons["missing_column.csv"]
    assert "the source does not have: coupon" in reasons["extra_column.csv"]
    assert (
        "'monthly_charges' must hold numbers, as in the source; 0% of its values are (e.g. 'lots')"
        in reasons["bad_number.csv"]
    )
    assert "'Maybe'" in reasons["bad_label.csv"]
    assert "binary file" in reasons["binary.csv"]
    assert sorted(p.name for p in isolated_home.landing_dir.glob("*.csv")) == [
        "good.csv",
        "older.csv",
    ]
    # Rebuilt with nothing new, the labelled data is the same version.
    again, _ = materialize_labels(isolated_home)
    assert again.version == table.version


# The drift sensor's decision


def finding(storage_id: int = 7) -> Finding:
    return Finding("drift", storage_id, "run-1", "monthly_charges PSI 0.31 (threshold 0.2)")


def test_the_decision_fires_skips_and_respects_the_cooldown() -> None:
    state = DriftSensorState()
    request, why = decide([finding()], state, now=10_000.0, cooldown=1800, margin=-0.01)
    assert isinstance(request, RunRequest)
    assert request.run_key == "retrain-drift-7"
    assert request.tags[TRIGGER_TAG] == "drift"
    assert "monthly_charges PSI 0.31" in request.tags[REASON_TAG]
    assert request.tags[MONITORING_RUN_TAG] == "run-1"
    assert request.run_config == {"ops": {"production_model": {"config": {"margin": -0.01}}}}
    assert why.startswith("Retraining requested: drift: monthly_charges PSI 0.31")

    request, why = decide([], state, now=10_000.0, cooldown=1800, margin=-0.01)
    assert request is None and why.startswith("No drift")

    recent = DriftSensorState(last_request_at=10_000.0 - 600)
    request, why = decide([finding()], recent, now=10_000.0, cooldown=1800, margin=-0.01)
    assert request is None
    assert "requested 10.0 min ago; the cooldown is 30 min" in why
    request, _ = decide([finding()], recent, now=10_000.0 + 1200, cooldown=1800, margin=-0.01)
    assert isinstance(request, RunRequest)


# Monitoring, sensors and a retrain, end to end


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> PlatformHome:
    """A home whose registry has version 1 in production, trained on 3,000 synthetic rows."""
    home = PlatformHome(path=str(tmp_path_factory.mktemp("monitoring") / "home"))
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        set_environment(patch, CHURN_HOME=home.path)
        result = run_pipeline(home, DatasetResource(synthetic_rows=3_000))
        assert result.success
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    return home


def monitor(home: PlatformHome, instance: DagsterInstance, **config: Any) -> Any:
    return materialize(
        MONITORING_ASSETS,
        partition_key=today(),
        resources={
            "home": home,
            "mlflow_tracking": MlflowResource.from_env(home),
            "compute": ComputeResource(),
        },
        run_config={"ops": config},
        instance=instance,
        raise_on_error=False,
    )


def sensor(name: str, instance: DagsterInstance, home: PlatformHome, cursor: str | None) -> Any:
    context = build_sensor_context(instance=instance, cursor=cursor, resources={"home": home})
    return defs.resolve_sensor_def(name)(context), context


@pytest.fixture
def home(production: PlatformHome, monkeypatch: pytest.MonkeyPatch) -> PlatformHome:
    """The home with a production model, its serving logs emptied for the test."""
    set_environment(monkeypatch, CHURN_HOME=production.path)
    shutil.rmtree(production.serving_dir, ignore_errors=True)
    return production


def test_drifted_traffic_makes_the_sensor_retrain_and_the_new_version_is_promoted(
    home: PlatformHome,
) -> None:
    instance = DagsterInstance.ephemeral()

    # Nothing logged yet: the monitoring sensor waits, the drift sensor has nothing to read.
    result, context = sensor("monitoring_sensor", instance, home, None)
    assert isinstance(result, SkipReason) and "logged nothing yet" in str(result.skip_message)
    idle, _ = sensor("drift_sensor", instance, home, None)
    assert "No monitoring result yet" in str(idle.skip_reason.skip_message)

    # Undrifted traffic: monitoring runs, no drift, the drift sensor skips.
    log_predictions(home, customers(1_000, 11), at=NOW - timedelta(minutes=30))
    result, context = sensor("monitoring_sensor", instance, home, None)
    assert isinstance(result, RunRequest) and str(result.run_key).startswith("monitor-")
    assert result.partition_key == today()  # the window that ends now
    cursor = context.cursor
    result, _ = sensor("monitoring_sensor", instance, home, cursor)
    assert isinstance(result, SkipReason) and "No new predictions" in str(result.skip_message)

    calm = monitor(home, instance)
    assert calm.success
    report = calm.output_for_node("drift_report")
    assert report.evaluated and report.drifted == []
    checks = {e.check_name: e for e in calm.get_asset_check_evaluations()}
    assert checks[DRIFT_CHECK].passed
    assert checks[DRIFT_CHECK].metadata["psi"].value["monthly_charges"] < 0.2
    drift_result, _ = sensor("drift_sensor", instance, home, None)
    assert isinstance(drift_result, SensorResult) and drift_result.skip_reason is not None
    assert "No drift" in str(drift_result.skip_reason.skip_message)
    drift_cursor = drift_result.cursor

    # Drifted traffic, with outcomes for half of it: the window's newest 1,500 are drifted.
    drifted = customers(
        1_500, 12, SyntheticDrift(monthly_charges_shift=0.3, month_to_month_shift=0.5)
    )
    ids = log_predictions(home, drifted)
    labelled = drifted.sample(frac=0.5, random_state=0)
    log_feedback(
        home,
        labelled["customer_id"].astype(str).tolist(),
        (labelled["churn"] == 1).tolist(),
        [ids[i] for i in drifted.index.get_indexer(labelled.index)],
    )
    result, _ = sensor("monitoring_sensor", instance, home, cursor)
    assert isinstance(result, RunRequest) and result.run_key != f"monitor-{cursor}"

    # The reference sampled to 1,000 of its rows: drift is still told from noise.
    stormy = monitor(
        home,
        instance,
        production_inputs={"config": {"max_records": 1_500}},
        reference_customers={"config": {"max_rows": 1_000}},
    )
    assert stormy.success
    report = stormy.output_for_node("drift_report")
    assert "monthly_charges" in report.drifted
    assert Path(report.html).exists()
    checks = {e.check_name: e for e in stormy.get_asset_check_evaluations()}
    # One check, whatever the table; each feature's PSI and verdict is in its metadata.
    drift = checks[DRIFT_CHECK]
    assert not drift.passed and drift.severity.value == "WARN"
    assert "monthly_charges PSI" in str(drift.description)
    psi = drift.metadata["psi"].value
    assert psi["monthly_charges"] > 0.2 and psi["gender"] < 0.2
    assert "| monthly_charges |" in drift.metadata["psi_by_column"].value
    assert drift.metadata["reference_sample"].value.startswith("1,000 of ")
    assert calm.output_for_node("reference_customers").total_rows > 1_000
    mlflow_run = MlflowResource.from_env(home).client().get_run(report.mlflow_run_id)
    assert mlflow_run.data.metrics["psi_monthly_charges"] == pytest.approx(
        report.psi["monthly_charges"]
    )
    assert mlflow_run.data.tags["drift_detected"] == "true"

    # The drift sensor asks for one retrain, with the reason; a repeated tick with the same cursor
    # asks for the same run key (which Dagster runs once), the advanced cursor asks for nothing.
    first, _ = sensor("drift_sensor", instance, home, drift_cursor)
    again, _ = sensor("drift_sensor", instance, home, drift_cursor)
    [request] = first.run_requests
    assert [r.run_key for r in again.run_requests] == [request.run_key]
    assert request.tags[TRIGGER_TAG] == "drift"
    assert "monthly_charges PSI" in request.tags[REASON_TAG]
    assert request.tags[MONITORING_RUN_TAG] == stormy.run_id
    state = DriftSensorState.parse(first.cursor)
    assert state.drift_seen > DriftSensorState.parse(drift_cursor).drift_seen
    assert time.time() - state.last_request_at < 60
    after, _ = sensor("drift_sensor", instance, home, first.cursor)
    assert after.run_requests == [] and after.skip_reason is not None

    # Within the cooldown, new drift is reported but no retrain is requested.
    monitor(home, instance, production_inputs={"config": {"max_records": 1_500}})
    cooling, _ = sensor("drift_sensor", instance, home, first.cursor)
    assert cooling.run_requests == []
    assert "cooldown" in str(cooling.skip_reason.skip_message)

    # The retrain the sensor asked for: it learns from the new labels and is promoted.
    run_config = request.run_config
    run_config["ops"]["candidate_models"] = {"config": QUICK_TRAINING}
    run_config["ops"]["model_evaluation"] = {"config": {"latency_samples": 100}}
    retrain = materialize(
        ASSETS,
        resources={
            "dataset": DatasetResource(synthetic_rows=3_000),
            "home": home,
            "mlflow_tracking": MlflowResource.from_env(home),
            "compute": ComputeResource(),
            "gates": QualityGates(),
        },
        run_config=run_config,
        tags=request.tags,
        instance=instance,
    )
    assert retrain.success
    new_data = retrain.output_for_node("labelled_customers")
    assert len(new_data.frame) == 3_000 + len(labelled)
    decision = retrain.output_for_node("production_model")
    registry = registry_of(home)
    assert decision.challenger_version == "2"
    assert decision.promoted, decision.reason
    assert registry.alias_version("production") == "2"
    version = registry.client.get_model_version(registry.name, "2")
    assert version.tags["data_version"] == new_data.version
    run = instance.get_run_by_id(retrain.run_id)
    assert run is not None and run.tags[REASON_TAG] == request.tags[REASON_TAG]

    # Monitoring now measures drift against what version 2 learned from.
    latest = monitor(home, instance, production_inputs={"config": {"max_records": 1_500}})
    assert latest.output_for_node("drift_report").reference_version == new_data.version


def test_live_performance_flags_an_f1_drop_beyond_the_margin(home: PlatformHome) -> None:
    registry = registry_of(home)
    version = registry.alias_version("production")
    assert version is not None
    instance = DagsterInstance.ephemeral()
    frame = customers(400, 21)
    truth = (frame["churn"] == 1).to_numpy()
    # Served labels right for half the customers, inverted for the rest: F1 falls well below.
    served = np.where(np.arange(len(frame)) % 2 == 0, truth, ~truth)
    ids = log_predictions(home, frame, version=version, labels=served)
    log_feedback(home, frame["customer_id"].astype(str).tolist(), truth.tolist(), ids)

    result = monitor(home, instance, drift_report={"config": {"min_records": 10_000}})
    assert result.success
    performance = result.output_for_node("live_performance")
    assert performance.evaluated and performance.labelled == 400
    assert performance.degraded and performance.f1_drop > 0.10
    [check] = [
        e for e in result.get_asset_check_evaluations() if e.check_name == "live_f1_degradation"
    ]
    assert not check.passed and check.description.startswith("Degraded F1: live F1 ")
    # Not enough traffic for a drift verdict: the drift checks say so and pass.
    report = result.output_for_node("drift_report")
    assert not report.evaluated
    drift_checks = [
        e for e in result.get_asset_check_evaluations() if e.check_name.endswith("_drift")
    ]
    assert len(drift_checks) == 1  # one check for every feature
    assert all(e.passed and "not evaluated" in (e.description or "") for e in drift_checks)

    outcome, _ = sensor("drift_sensor", instance, home, None)
    [request] = outcome.run_requests
    assert request.tags[TRIGGER_TAG] == "performance"
    assert "live F1" in request.tags[REASON_TAG]
    assert json.loads(outcome.cursor)["performance_seen"] > 0


def test_before_any_outcome_live_f1_is_estimated_from_the_probabilities(
    home: PlatformHome,
) -> None:
    registry = registry_of(home)
    version = registry.alias_version("production")
    assert version is not None
    instance = DagsterInstance.ephemeral()
    frame = customers(400, 22)
    # Today's predictions, no outcome yet. Calibrated probabilities (the generator's own), but
    # the served labels flag no one: the expected confusion matrix has no true positive.
    log_predictions(home, frame, version=version, labels=np.zeros(len(frame), dtype=int))
    result = monitor(home, instance, drift_report={"config": {"min_records": 10_000}})
    assert result.success
    performance = result.output_for_node("live_performance")
    assert not performance.evaluated and performance.labelled == 0
    assert performance.basis == "estimated" and performance.predictions == 400
    assert performance.estimated["f1"] == 0.0 and performance.degraded
    [check] = [
        e for e in result.get_asset_check_evaluations() if e.check_name == "live_f1_degradation"
    ]
    assert not check.passed
    assert str(check.description).startswith("Degraded F1: estimated F1 0.00 vs ")
    comparison = metadata(result, "live_performance")["comparison"]
    assert "| f1 |" in comparison and "estimated (today's predictions)" in comparison
    # The same alert as a realised drop: the drift sensor asks for a retrain.
    outcome, _ = sensor("drift_sensor", instance, home, None)
    [request] = outcome.run_requests
    assert request.tags[TRIGGER_TAG] == "performance"
    assert "estimated F1" in request.tags[REASON_TAG]

    # Flagging the likely churners instead: the estimate is within the margin.
    shutil.rmtree(home.serving_dir, ignore_errors=True)
    log_predictions(home, frame, version=version)
    calm = monitor(home, instance, drift_report={"config": {"min_records": 10_000}})
    estimated = calm.output_for_node("live_performance")
    assert estimated.basis == "estimated" and estimated.estimated["f1"] > 0.3


def test_the_new_data_sensor_fires_on_a_landing_file_or_an_outcome_once(
    isolated_home: PlatformHome,
) -> None:
    instance = DagsterInstance.ephemeral()
    result, _ = sensor("new_data_sensor", instance, isolated_home, None)
    assert isinstance(result, SkipReason)

    write_landing(isolated_home, "batch.csv", generate_customers(5, 3))
    result, context = sensor("new_data_sensor", instance, isolated_home, None)
    assert isinstance(result, RunRequest) and result.tags[TRIGGER_TAG] == "new-data"
    cursor = context.cursor
    result, _ = sensor("new_data_sensor", instance, isolated_home, cursor)
    assert isinstance(result, SkipReason) and "No new landing file" in str(result.skip_message)

    time.sleep(0.01)
    log_feedback(isolated_home, ["7590-VHVEG"], [True], [None], alias="staging")
    result, context = sensor("new_data_sensor", instance, isolated_home, cursor)
    assert isinstance(result, RunRequest) and result.run_key != f"labels-{cursor}"
    assert int(context.cursor or 0) > int(cursor or 0)


def test_a_past_day_is_measured_in_its_own_partition_and_its_drift_is_not_acted_on(
    home: PlatformHome,
) -> None:
    day = (NOW - timedelta(days=3)).date()
    log_predictions(home, customers(600, 5), at=datetime.combine(day, clock(12), UTC))
    log_predictions(home, customers(400, 6), at=NOW - timedelta(minutes=5))
    instance = DagsterInstance.ephemeral()
    sizes = {}
    for key in (f"{day}", today()):  # a backfill of that day, and today's partition
        run = materialize(
            [production_inputs], partition_key=key, resources={"home": home}, instance=instance
        )
        sizes[key] = len(run.output_for_node("production_inputs"))
    assert sizes == {f"{day}": 600, today(): 400}
    assert instance.get_materialized_partitions(AssetKey("production_inputs")) == set(sizes)

    # Drift found in a backfilled day is history: the drift sensor does not retrain for it.
    instance.report_runless_asset_event(
        AssetMaterialization(
            DRIFT_REPORT,
            partition=f"{day}",
            metadata={"drift_detected": True, "reason": "monthly_charges PSI 0.5"},
        )
    )
    result, _ = sensor("drift_sensor", instance, home, None)
    assert not result.run_requests
    assert f"{day} (a past day) not acted on" in str(result.skip_reason.skip_message)
