"""Ingestion + validation of N synthetic customers, as one Dagster materialization.

Runs `raw_customers`, `labelled_customers` and `validated_customers` in process against a real
(temporary) Dagster instance and the pipeline's IO manager (`ValueStore`: tables as Parquet), so
the figure includes snapshotting, storing the asset values and the Great Expectations run.
Prints wall time and peak resident memory.

    .venv/bin/python benchmarks/ingest_validate.py --rows 1000000
    .venv/bin/python benchmarks/ingest_validate.py --source ../shared/data/orange_telecom_churn.csv
    .venv/bin/python benchmarks/ingest_validate.py --rows 10000000 --write-csv customers10m.csv
    .venv/bin/python benchmarks/ingest_validate.py --source customers10m.csv --max-bytes 2000000000

`--source` validates a file instead (with `--target` and `--id-column` where the table needs
them); the `validated_customers` step, Great Expectations' run, is also printed on its own.
`--write-csv FILE` only writes `--rows` synthetic customers (unique keys) to a CSV file, a million
at a time, for `--source`. `--again N` then validates the same version N more times in the same
process, as a long-lived run worker or the test suite does once Great Expectations is imported,
and prints the median.

In process, Dagster keeps every asset's value for the result (`output_for_node`): the peak here
includes all three tables at once. `train_pipeline.py --job ingest_and_validate` measures the
same steps as a user's run executes them.

Target (issue 2): 1,000,000 rows in under 60 s and under 3 GiB on a 2-core machine.
"""

import argparse
import os
import resource
import statistics
import tempfile
import time
from typing import Any

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")


def _write_csv(path: str, rows: int, chunk_rows: int = 1_000_000) -> None:
    """`rows` synthetic customers written to `path` as one CSV file, a chunk at a time."""
    from churn_assets.ingestion.synthetic import generate_customers

    for number, start in enumerate(range(0, rows, chunk_rows)):
        chunk = generate_customers(min(chunk_rows, rows - start), seed=42 + number)
        chunk["customerID"] = [f"C{start + i:09d}" for i in range(len(chunk))]
        chunk.to_csv(path, mode="a" if number else "w", header=not number, index=False)
    print(f"wrote {rows:,} customers to {path} ({os.path.getsize(path) / 2**30:.2f} GiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--source", help="a CSV or Parquet file instead of synthetic rows")
    parser.add_argument("--target", help="the target column of --source")
    parser.add_argument("--id-column", help="the key column of --source")
    parser.add_argument("--again", type=int, default=0, help="validations more, in process")
    parser.add_argument(
        "--max-bytes", type=int, default=2**30, help="largest file accepted (CHURN_MAX_BYTES)"
    )
    parser.add_argument("--write-csv", help="write --rows synthetic customers to this CSV file")
    arguments = parser.parse_args()
    if arguments.write_csv:
        _write_csv(arguments.write_csv, arguments.rows)
        return

    started = time.perf_counter()
    from dagster import DagsterInstance, materialize

    from churn_assets.ingestion.assets import labelled_customers, raw_customers
    from churn_assets.resources import DatasetResource, PlatformHome
    from churn_assets.storage import ValueStore
    from churn_assets.validation.assets import validated_customers

    imported = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="churn-bench-") as home:
        os.environ["DAGSTER_HOME"] = home
        with DagsterInstance.local_temp(home) as instance:
            assets = [raw_customers, labelled_customers, validated_customers]
            resources = {
                "dataset": DatasetResource(
                    source=arguments.source,
                    id_column=arguments.id_column,
                    max_bytes=arguments.max_bytes,
                    **({"target": arguments.target} if arguments.target else {}),
                )
                if arguments.source
                else DatasetResource(synthetic_rows=arguments.rows),
                "home": PlatformHome(path=home),
                # The pipeline's own IO manager: tables as Parquet, values as JSON.
                "io_manager": ValueStore.under(PlatformHome(path=home).layout),
            }
            result = materialize(assets, resources=resources, instance=instance)
            finished = time.perf_counter()
            again = []
            for _ in range(arguments.again):
                validated = materialize(
                    assets, selection=[validated_customers], resources=resources, instance=instance
                )
                again.append(_step_seconds(validated, "validated_customers"))
        assert result.success
        checks = result.get_asset_check_evaluations()
        failed = [f"{c.asset_key.to_user_string()}:{c.check_name}" for c in checks if not c.passed]
        ingestion = _step_seconds(result, "raw_customers")
        validation = _step_seconds(result, "validated_customers")
        rows = len(result.output_for_node("validated_customers").frame)

    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"rows                      {rows:,}")
    print(f"imports                   {imported - started:6.1f} s")
    print(f"ingest + validate         {finished - imported:6.1f} s")
    print(f"of which ingestion        {ingestion:6.1f} s")
    print(f"of which validation       {validation:6.1f} s")
    print(f"checks                    {len(checks)}, failed: {', '.join(failed) or 'none'}")
    if again:
        print(f"validation again (median) {statistics.median(again):6.2f} s  ({len(again)} runs)")
    print(f"total wall                {finished - started:6.1f} s")
    print(f"peak resident memory      {peak_gib:6.2f} GiB")


def _step_seconds(result: Any, step: str) -> float:
    [seconds] = [
        event.event_specific_data.duration_ms / 1000
        for event in result.all_events
        if event.step_key == step and event.event_type_value == "STEP_SUCCESS"
    ]
    return float(seconds)


if __name__ == "__main__":
    main()
