"""Why the latest run of a job failed, one line per failed step: what `make materialize` prints.

    python -m churn_assets.failures [job]        (default job: churn_pipeline)

Reads the Dagster instance under `DAGSTER_HOME`. Each failed step is printed with the message
its asset raised (`raw_customers: Cannot ingest 'x.csv': ... set CHURN_POSITIVE_LABEL`), not
the stack trace around it. Exit status 1 when the latest run has no failed step to show.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from dagster import DagsterEventType, DagsterInstance, RunsFilter


def step_failures(instance: DagsterInstance, job: str) -> list[tuple[str, str]]:
    """(step, message) for each step that failed in the latest run of `job`, in order."""
    runs = instance.get_runs(filters=RunsFilter(job_name=job), limit=1)
    if not runs:
        return []
    failures = []
    for record in instance.all_logs(runs[0].run_id, of_type=DagsterEventType.STEP_FAILURE):
        event = record.dagster_event
        if event is None or event.step_key is None:
            continue
        data = event.step_failure_data
        described = data.user_failure_data.description if data.user_failure_data else None
        error = data.error
        while error is not None and error.cause is not None:
            error = error.cause  # the user's exception, under Dagster's wrapper
        message = described or (error.message.strip() if error else "failed")
        failures.append((event.step_key, " ".join(message.split())))
    return failures


def main(argv: Sequence[str] | None = None) -> int:
    """Print the latest run's failed steps; 1 if there is none."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    job = arguments[0] if arguments else "churn_pipeline"
    with DagsterInstance.get() as instance:
        failures = step_failures(instance, job)
    for step, message in failures:
        print(f"  {step} failed: {message}")
    return 0 if failures else 1


if __name__ == "__main__":
    sys.exit(main())
