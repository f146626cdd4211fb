"""What runs on its own, declared on the assets: Dagster's declarative automation and freshness.

Two assets carry an `AutomationCondition`, evaluated by `automation_sensor` (on by default):

- `customer_scores`: today's partition once a night, at 02:00 UTC (`nightly`);
- `compacted_logs`: yesterday's partition at 00:30 UTC (`AutomationCondition.on_cron`).

The pipeline's last assets (`registered_model`, `production_model`) and the nightly scores carry
a `FreshnessPolicy`: the UI marks them late past a day and an hour and failed past a day and two
hours, whatever the reason (the schedule switched off, a run failing or queued for hours).

What stays imperative, and why, is in each definition's docstring: the daily pipeline is a
schedule of the `churn_pipeline` job (`churn_assets/schedules.py`), and the sensors in
`churn_assets/sensors.py` and `rescore_on_promotion` watch what Dagster does not see (the
service's log files, the MLflow alias) or decide more than a condition can (a cooldown).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from dagster import AssetKey, AutomationCondition, FreshnessPolicy

AUTOMATION_SENSOR = "automation_sensor"


def nightly(hour: int, minute: int = 0) -> AutomationCondition[AssetKey]:
    """The latest partition, once a day at `hour:minute` UTC, never twice at once.

    Unlike `AutomationCondition.on_cron`, it does not wait for the asset's parents to update
    after the tick: the nightly scores use whatever version is in production then.
    """
    # Any: Dagster's generics do not type `since_last_handled` on an asset-scoped condition.
    tick: Any = AutomationCondition.cron_tick_passed(f"{minute} {hour} * * *", "UTC")
    condition: Any = (
        AutomationCondition.in_latest_time_window()
        & tick.since_last_handled()
        & ~AutomationCondition.in_progress()
    )
    labelled: AutomationCondition[AssetKey] = condition.with_label(
        f"nightly at {hour:02d}:{minute:02d} UTC"
    )
    return labelled


def daily_freshness() -> FreshnessPolicy:
    """Late after 25 hours without a materialization, failed after 26: a daily asset's slack."""
    return FreshnessPolicy.time_window(
        fail_window=timedelta(hours=26), warn_window=timedelta(hours=25)
    )
