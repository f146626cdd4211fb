"""When the pipeline runs on its own, and how its steps retry.

The brief's DAG runs daily and retries a failed step 3 times, 5 minutes apart. Failures that a
retry cannot fix (a data set that fails validation, a malformed file, an unknown algorithm) are
raised with `allow_retries=False` and fail at once; an unreachable source or an unexpected error
is retried. A run whose process dies is retried by the instance (`run_retries` in
`dagster.yaml`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster import DefaultScheduleStatus, RetryPolicy, ScheduleDefinition

from churn.settings import settings_from


def step_retry_policy(environ: Mapping[str, str] | None = None) -> RetryPolicy:
    """How a failed step retries.

    `CHURN_STEP_RETRIES` (3) times, `CHURN_STEP_RETRY_DELAY_SECONDS` (300) apart.
    """
    pipeline = settings_from(environ).pipeline
    return RetryPolicy(max_retries=pipeline.step_retries, delay=pipeline.step_retry_delay_seconds)


def daily_schedule(job: Any) -> ScheduleDefinition:
    """Run `job` (an asset job) every day at midnight UTC, as the brief's `@daily` DAG.

    A schedule of the job rather than `AutomationCondition.on_cron` on its assets: the daily run
    must be a run *of `churn_pipeline`*, with the job's step retries and its serial tag, because
    the drift sensor, the failure alerts (`dagster_job` label) and the staleness gauge key on
    the job; declarative automation launches assets as anonymous asset runs. Dagster 1.13 can
    automate a job (`define_asset_job(automation_condition=...)`), but as a preview that "may have
    breaking changes in patch version releases", evaluated only by the default automation sensor,
    which is off until switched on: not what the daily retrain should rest on. The pipeline's
    freshness is declared on its assets (`churn_assets/automation.py`).
    """
    return ScheduleDefinition(
        name="daily_churn_pipeline",
        job=job,
        cron_schedule="@daily",
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.RUNNING,
        description="Ingest, validate, train, evaluate, register and promote-if-better, daily.",
    )
