"""The service's logs by day, as Dagster partitions: each finished day compacted into one file.

Every flush of every service worker writes a new Parquet part (`churn.parquet_log`): at a steady
trickle that is thousands of small files a day. `compacted_logs` has one partition per UTC day;
materializing a day merges that day's parts into one file per log and deployment. Its automation
condition does yesterday's at 00:30 UTC; earlier days are a backfill away (the UI shows each
day's status), and running a day again is harmless (a day already in one file is left as it is,
parts that arrived late are merged in).
"""

from dagster import (
    AssetExecutionContext,
    AutomationCondition,
    DailyPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
    define_asset_job,
)

from churn.logs import FEEDBACK, PREDICTIONS
from churn.parquet_log import PARTITION, compact_day
from churn_assets.markdown import markdown_table
from churn_assets.resources import PlatformHome

LOG_DAYS = DailyPartitionsDefinition(start_date="2026-01-01", timezone="UTC")


@asset(
    group_name="monitoring",
    partitions_def=LOG_DAYS,
    kinds={"parquet"},
    # The latest window of a daily partitioning without an end offset is yesterday's.
    automation_condition=AutomationCondition.on_cron("30 0 * * *", "UTC"),
)
def compacted_logs(context: AssetExecutionContext, home: PlatformHome) -> MaterializeResult[None]:
    """One day of every deployment's prediction and feedback logs, each in a single file."""
    day = context.partition_key
    rows = []
    parts_before = parts_after = records = 0
    for log in (PREDICTIONS, FEEDBACK):
        for folder in sorted(home.serving_dir.glob(f"*/{log}/{PARTITION}={day}")):
            done = compact_day(folder)
            deployment = folder.parent.parent.name
            rows.append(
                (
                    deployment,
                    log,
                    done.parts_before,
                    done.parts_after,
                    done.records,
                    done.bytes_after,
                )
            )
            parts_before += done.parts_before
            parts_after += done.parts_after
            records += done.records
    context.log.info(
        "%s: %d log parts merged into %d (%d records)", day, parts_before, parts_after, records
    )
    return MaterializeResult(
        metadata={
            "day": day,
            "parts_before": parts_before,
            "parts_after": parts_after,
            "records": records,
            "logs": MetadataValue.md(
                markdown_table(
                    ["deployment", "log", "parts before", "after", "records", "bytes"], rows
                )
                if rows
                else "No log has records of this day."
            ),
        }
    )


compact_logs_job = define_asset_job(
    name="compact_logs",
    selection=[compacted_logs],
    description="Merge one day's log parts into one file per log and deployment.",
)
