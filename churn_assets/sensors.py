"""The sensors that close the loop: monitor the traffic, retrain on drift, refresh the labels.

- `monitoring_sensor`: when the production service has logged new predictions or outcomes,
  materializes the monitoring assets (reference, production inputs, drift report, live F1).
- `drift_sensor`: when a new drift report names drifted features, or live F1 has degraded,
  requests one run of the whole pipeline (it trains on the newest labelled data, and promotes
  the new version if it passes the gates and is not worse than production). The request carries
  the reason in its tags and a run key derived from the report, so a repeated tick cannot launch
  twice; a cooldown keeps a persisting drift from starting a retraining storm.
- `new_data_sensor`: when new landing files or outcomes arrive, materializes `labelled_customers`.
- `pipeline_failure_alert`, `pipeline_recovery`: post a failed run (or a promotion a quality gate
  blocked) to Alertmanager, and resolve it when the next run of the same job succeeds
  (`churn_assets/alerting.py`).
- `pipeline_freshness_sensor`: publishes when each job last succeeded and failed, and whether the
  daily schedule is on, for Prometheus (`ChurnPipelineStale`, the Grafana *Pipeline* row).

Each sensor keeps a cursor (what it has already acted on). Intervals and the cooldown are
environment variables, read when the code location loads.

Why these are sensors and not automation conditions (`churn_assets/automation.py` has those): a
condition reacts to what Dagster records (materializations, runs, cron ticks). The service's
prediction and feedback logs and the landing folder are files Dagster does not see being
written, the drift sensor decides with a cooldown and carries the finding into the run's tags
and config, and the alert and freshness sensors talk to Alertmanager and Prometheus.
"""

import json
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dagster import (
    AssetCheckEvaluation,
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    RunsFilter,
    RunStatusSensorContext,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_failure_sensor,
    run_status_sensor,
    sensor,
)

from churn.logs import FEEDBACK, PREDICTIONS
from churn.parquet_log import last_written
from churn.published import publish
from churn.registry import PRODUCTION
from churn.settings import settings
from churn_assets.alerting import (
    PIPELINE_FAILED,
    PROMOTION_BLOCKED,
    AlertSettings,
    pipeline_failed,
    post_or_log,
    promotion_blocked,
)
from churn_assets.ingestion.labelled import landing_files
from churn_assets.monitoring.common import DRIFT_REPORT, LIVE_PERFORMANCE
from churn_assets.resources import PlatformHome

TRIGGER_TAG = "churn/trigger"
REASON_TAG = "churn/reason"
MONITORING_RUN_TAG = "churn/monitoring_run"
_ACTIVE = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]


def monitoring_interval() -> int:
    """Seconds between two looks at the service's logs (`CHURN_MONITOR_INTERVAL_SECONDS`)."""
    return settings().monitoring.interval_seconds


def drift_interval() -> int:
    """Seconds between two drift evaluations (`CHURN_DRIFT_SENSOR_INTERVAL_SECONDS`)."""
    return settings().monitoring.drift_sensor_interval_seconds


def retrain_cooldown() -> float:
    """Least seconds between two retraining requests (`CHURN_RETRAIN_COOLDOWN_SECONDS`)."""
    return settings().monitoring.retrain_cooldown_seconds


def retrain_promotion_margin() -> float:
    """The promotion margin of a retrain (`CHURN_RETRAIN_PROMOTION_MARGIN`, default -0.02).

    A drift-triggered retrain learned from newer data than production: it replaces production
    when, with 95 % confidence, it is at most 0.02 worse on the same hold-out customers (the
    lower end of its gain's paired interval is above -0.02: a non-inferiority test).
    """
    return settings().monitoring.retrain_promotion_margin


def newest_file(folders: list[Path]) -> int:
    """When the newest part of the logs in `folders` was written (ns), 0 if there is none.

    Bounded work per tick: only each log's last two days are looked at (`last_written`).
    """
    return max((last_written(folder) for folder in folders), default=0)


def _today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def _yesterday() -> str:
    return (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")


def _active_runs(instance: DagsterInstance, job_name: str) -> int:
    return len(instance.get_run_ids(RunsFilter(job_name=job_name, statuses=_ACTIVE), limit=1))


def monitoring_sensor_for(job_name: str) -> SensorDefinition:
    """The sensor that runs the job of the monitoring assets when production logs new traffic.

    A sensor: the traffic is the service's log files, written outside Dagster.
    """

    @sensor(
        name="monitoring_sensor",
        job_name=job_name,
        minimum_interval_seconds=monitoring_interval(),
        default_status=DefaultSensorStatus.RUNNING,
        description="Materializes the monitoring assets when the production service has "
        "logged new predictions or outcomes.",
    )
    def monitoring_sensor(
        context: SensorEvaluationContext, home: PlatformHome
    ) -> RunRequest | SkipReason:
        folders = [home.serving_log(PRODUCTION, log) for log in (PREDICTIONS, FEEDBACK)]
        newest = newest_file(folders)
        seen = int(context.cursor or 0)
        if newest == 0:
            return SkipReason(f"The production service has logged nothing yet ({folders[0]}).")
        if newest <= seen:
            return SkipReason("No new predictions or outcomes since the last monitoring run.")
        if _active_runs(context.instance, job_name):
            return SkipReason("A monitoring run is still in progress; new traffic waits for it.")
        context.update_cursor(str(newest))
        # Today's partition: the window that ends now.
        return RunRequest(run_key=f"monitor-{newest}", partition_key=_today())

    return monitoring_sensor


@dataclass
class DriftSensorState:
    """The drift sensor's cursor: the monitoring results seen, and the last retraining request."""

    drift_seen: int = 0
    performance_seen: int = 0
    last_request_at: float = 0.0

    @classmethod
    def parse(cls, cursor: str | None) -> "DriftSensorState":
        """The state a cursor holds (a fresh state for none)."""
        return cls(**json.loads(cursor)) if cursor else cls()

    def dump(self) -> str:
        """The cursor of this state."""
        return json.dumps(asdict(self))


@dataclass(frozen=True)
class Finding:
    """A monitoring result that calls for retraining."""

    trigger: str
    storage_id: int
    run_id: str
    reason: str


def decide(
    findings: list[Finding], state: DriftSensorState, now: float, cooldown: float, margin: float
) -> tuple[RunRequest | None, str]:
    """The retraining request for `findings` (None within the cooldown), and why."""
    if not findings:
        return None, "No drift and no F1 degradation in the new monitoring results."
    reasons = "; ".join(f"{finding.trigger}: {finding.reason}" for finding in findings)
    waited = now - state.last_request_at
    if waited < cooldown:
        return None, (
            f"{reasons}. A retraining was requested {waited / 60:.1f} min ago; the cooldown is "
            f"{cooldown / 60:.0f} min (CHURN_RETRAIN_COOLDOWN_SECONDS), so none is requested."
        )
    first = findings[0]
    request = RunRequest(
        run_key=f"retrain-{first.trigger}-{first.storage_id}",
        run_config={"ops": {"production_model": {"config": {"margin": margin}}}},
        tags={
            TRIGGER_TAG: "+".join(finding.trigger for finding in findings),
            REASON_TAG: reasons[:1000],
            MONITORING_RUN_TAG: first.run_id,
        },
    )
    return request, f"Retraining requested: {reasons}"


def _new_findings(
    instance: DagsterInstance, state: DriftSensorState
) -> tuple[list[Finding], DriftSensorState, list[str]]:
    """Findings in the monitoring results newer than the cursor, and the advanced state."""
    findings: list[Finding] = []
    notes: list[str] = []
    seen = {DRIFT_REPORT: state.drift_seen, LIVE_PERFORMANCE: state.performance_seen}
    for asset, flag, trigger in (
        (DRIFT_REPORT, "drift_detected", "drift"),
        (LIVE_PERFORMANCE, "degraded", "performance"),
    ):
        records = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey(asset), after_storage_id=seen[asset] or None),
            limit=1,
            ascending=False,
        ).records
        if not records:
            continue
        record = records[0]
        seen[asset] = record.storage_id
        if record.partition_key and record.partition_key < _yesterday():
            # A backfill of an old day: history, not a reason to retrain today's model.
            notes.append(f"{asset}: {record.partition_key} (a past day) not acted on")
            continue
        materialization = record.event_log_entry.asset_materialization
        metadata = (
            {k: v.value for k, v in materialization.metadata.items()} if materialization else {}
        )
        if metadata.get(flag):
            findings.append(
                Finding(trigger, record.storage_id, record.run_id, str(metadata["reason"]))
            )
        else:
            notes.append(f"{asset}: {metadata.get('verdict') or 'no ' + trigger}")
    advanced = DriftSensorState(seen[DRIFT_REPORT], seen[LIVE_PERFORMANCE], state.last_request_at)
    return findings, advanced, notes


def drift_sensor_for(job_name: str) -> SensorDefinition:
    """The sensor that requests a run of the whole pipeline's job on drift or degradation.

    A sensor: it weighs a finding against a cooldown and against a run in progress, and hands
    the reason (tags) and the retrain's promotion margin (run config) to the run it requests.
    """

    @sensor(
        name="drift_sensor",
        job_name=job_name,
        minimum_interval_seconds=drift_interval(),
        default_status=DefaultSensorStatus.RUNNING,
        description="Requests a retraining run when a new drift report names drifted features "
        "or live F1 has degraded beyond its margin, at most once per cooldown.",
    )
    def drift_sensor(context: SensorEvaluationContext) -> SensorResult:
        state = DriftSensorState.parse(context.cursor)
        findings, state, notes = _new_findings(context.instance, state)
        if findings and _active_runs(context.instance, job_name):
            # Results stay unseen: the next tick weighs them against the run's outcome.
            return SensorResult(
                skip_reason=SkipReason("Drift found, but a pipeline run is already in progress.")
            )
        now = time.time()
        request, why = decide(findings, state, now, retrain_cooldown(), retrain_promotion_margin())
        if not findings and not state.drift_seen and not state.performance_seen:
            why = (
                "No monitoring result yet: the monitoring sensor runs the monitoring job once "
                "the production service has logged traffic."
            )
        context.log.info(why)
        if request is None:
            note = f" ({'; '.join(notes)})" if notes and not findings else ""
            return SensorResult(skip_reason=SkipReason(why + note), cursor=state.dump())
        state.last_request_at = now
        return SensorResult(run_requests=[request], cursor=state.dump())

    return drift_sensor


def new_data_sensor_for(job_name: str) -> SensorDefinition:
    """The sensor that runs the job that refreshes the labelled data when new labels arrive.

    A sensor: the labels are landing files and the services' feedback logs, outside Dagster.
    """

    @sensor(
        name="new_data_sensor",
        job_name=job_name,
        minimum_interval_seconds=monitoring_interval(),
        default_status=DefaultSensorStatus.RUNNING,
        description="Materializes labelled_customers when landing files or outcomes arrive.",
    )
    def new_data_sensor(
        context: SensorEvaluationContext, home: PlatformHome
    ) -> RunRequest | SkipReason:
        landing = landing_files(home.landing_dir)
        newest = max(
            [path.stat().st_mtime_ns for path in landing]
            + [newest_file(sorted(home.serving_dir.glob(f"*/{FEEDBACK}")))]
        )
        seen = int(context.cursor or 0)
        if newest <= seen:
            return SkipReason("No new landing file or outcome.")
        context.update_cursor(str(newest))
        return RunRequest(
            run_key=f"labels-{newest}",
            tags={TRIGGER_TAG: "new-data", REASON_TAG: f"{len(landing)} landing file(s)"},
        )

    return new_data_sensor


# Pipeline alerts and freshness

GATED_ASSET = AssetKey("registered_model")
FRESHNESS_INTERVAL_SECONDS = 60


def failed_gates(instance: DagsterInstance, run_id: str) -> tuple[list[str], str]:
    """The quality gates a run's new version failed (`name: observed, required`), its version."""
    gates = []
    for record in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = record.dagster_event.event_specific_data if record.dagster_event else None
        if (
            isinstance(evaluation, AssetCheckEvaluation)
            and evaluation.asset_key == GATED_ASSET
            and not evaluation.passed
        ):
            gates.append(f"{evaluation.check_name}: {evaluation.description}")
    version = ""
    for record in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION):
        materialization = record.asset_materialization
        if materialization is not None and materialization.asset_key == GATED_ASSET:
            entry = materialization.metadata.get("version")
            version = str(entry.value) if entry is not None else ""
    return gates, version


def failed_step(instance: DagsterInstance, run_id: str, fallback: str) -> tuple[str, str]:
    """The first failed step of a run and its error, as the Dagster UI shows them."""
    for record in instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE):
        event = record.dagster_event
        if event is None:
            continue
        data = event.step_failure_data
        reason = ""
        if data.user_failure_data is not None and data.user_failure_data.description:
            reason = data.user_failure_data.description
        elif data.error is not None:
            reason = data.error.message.strip()
        return event.step_key or "(run)", reason or event.message or fallback
    return "(run)", fallback


@run_failure_sensor(
    name="pipeline_failure_alert",
    default_status=DefaultSensorStatus.RUNNING,
    description="Posts a failed run to Alertmanager (ChurnPipelineFailed, or "
    "ChurnPromotionBlocked when a quality gate stopped a new version), with the failed step or "
    "gates, the reason and a link to the run.",
)
def pipeline_failure_alert(context: RunFailureSensorContext) -> None:
    """Post the failure of any job of this code location to Alertmanager."""
    run = context.dagster_run
    settings = AlertSettings.from_env()
    gates, version = failed_gates(context.instance, run.run_id)
    if gates:
        alert = promotion_blocked(run.job_name, run.run_id, gates, version, settings)
    else:
        step, reason = failed_step(
            context.instance, run.run_id, context.failure_event.message or ""
        )
        alert = pipeline_failed(run.job_name, run.run_id, step, reason, settings)
    context.log.info(post_or_log([alert], settings))


@run_status_sensor(
    name="pipeline_recovery",
    run_status=DagsterRunStatus.SUCCESS,
    default_status=DefaultSensorStatus.RUNNING,
    description="Resolves a job's ChurnPipelineFailed and ChurnPromotionBlocked alerts when a "
    "run of the same job succeeds.",
)
def pipeline_recovery(context: RunStatusSensorContext) -> None:
    """Resolve the pipeline alerts of the job whose run just succeeded."""
    settings = AlertSettings.from_env()
    manager = settings.alertmanager
    if manager is None:
        context.log.info("Nothing to resolve: CHURN_ALERTMANAGER_URL is not set")
        return
    job = context.dagster_run.job_name
    resolved = [
        alert.resolved()
        for name in (PIPELINE_FAILED, PROMOTION_BLOCKED)
        for alert in manager.active(name)
        if alert.labels.get("dagster_job") == job
    ]
    if resolved:
        context.log.info(
            post_or_log(resolved, settings) + f" (resolved by run {context.dagster_run.run_id})"
        )
    else:
        context.log.info(f"No active pipeline alert of {job} to resolve")


def schedule_running(instance: DagsterInstance, name: str) -> bool:
    """Whether a schedule that is on by default has not been switched off in the UI."""
    if instance.schedule_storage is None:  # an instance that runs no schedule keeps the default
        return True
    # Read by value: the enums live in a private module of Dagster's.
    return not any(
        state.instigator_name == name
        and state.instigator_type.value == "SCHEDULE"
        and state.status.value == "STOPPED"
        for state in instance.all_instigator_state()
    )


def job_freshness(
    instance: DagsterInstance, job: str, automated: AssetKey | None = None
) -> dict[str, float]:
    """When a job last succeeded and last failed (seconds since the epoch; 0: never).

    For a job whose asset an automation condition also materializes (as an asset run, outside
    the job), the asset's latest materialization counts as a success of the job.
    """
    times = {}
    for key, status in (
        ("last_success", DagsterRunStatus.SUCCESS),
        ("last_failure", DagsterRunStatus.FAILURE),
    ):
        records = instance.get_run_records(RunsFilter(job_name=job, statuses=[status]), limit=1)
        ended = records[0].end_time if records else None
        times[key] = float(ended or 0.0)
    if automated is not None:
        event = instance.get_latest_materialization_event(automated)
        if event is not None:
            times["last_success"] = max(times["last_success"], event.timestamp)
    return times


def freshness_sensor_for(
    jobs: list[str], schedule_name: str, automated: dict[str, AssetKey] | None = None
) -> SensorDefinition:
    """The sensor that publishes when each job last succeeded or failed, for Prometheus.

    The assets' `FreshnessPolicy` marks them late in the UI; this exports the same facts, and
    whether the schedule is on, to `churn-pipeline-metrics` for the `ChurnPipelineStale` alert.
    """

    @sensor(
        name="pipeline_freshness_sensor",
        minimum_interval_seconds=FRESHNESS_INTERVAL_SECONDS,
        default_status=DefaultSensorStatus.RUNNING,
        description="Publishes when each job last succeeded and failed, and whether the daily "
        "schedule is on; the production service exposes them to Prometheus.",
    )
    def pipeline_freshness_sensor(
        context: SensorEvaluationContext, home: PlatformHome
    ) -> SkipReason:
        freshness = {
            job: job_freshness(context.instance, job, (automated or {}).get(job)) for job in jobs
        }
        running = schedule_running(context.instance, schedule_name)
        publish(
            home.monitoring_dir,
            "pipeline",
            {"jobs": freshness, "schedule": schedule_name, "schedule_running": running},
        )
        last = {job: f"{times['last_success']:.0f}" for job, times in freshness.items()}
        return SkipReason(
            f"Published the pipeline's freshness (last success per job: {last}; schedule "
            f"{schedule_name} {'on' if running else 'off'})"
        )

    return pipeline_freshness_sensor
