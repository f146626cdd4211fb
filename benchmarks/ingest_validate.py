"""Ingestion + validation of N synthetic customers, as one Dagster materialization.

Runs `raw_customers`, `labelled_customers` and `validated_customers` in process against a real
(temporary) Dagster instance and the filesystem IO manager, so the figure includes snapshotting,
pickling the asset values and the Great Expectations run. Prints wall time and peak resident memory.

    .venv/bin/python benchmarks/ingest_validate.py --rows 1000000

Target (issue 2): 1,000,000 rows in under 60 s and under 3 GiB on a 2-core machine.
"""

import argparse
import os
import resource
import tempfile
import time

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    arguments = parser.parse_args()

    started = time.perf_counter()
    from dagster import DagsterInstance, FilesystemIOManager, materialize

    from churn_assets.ingestion.assets import labelled_customers, raw_customers
    from churn_assets.resources import DatasetResource, PlatformHome
    from churn_assets.validation.assets import validated_customers

    imported = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="churn-bench-") as home:
        os.environ["DAGSTER_HOME"] = home
        with DagsterInstance.local_temp(home) as instance:
            result = materialize(
                [raw_customers, labelled_customers, validated_customers],
                resources={
                    "dataset": DatasetResource(synthetic_rows=arguments.rows),
                    "home": PlatformHome(path=home),
                    "io_manager": FilesystemIOManager(base_dir=os.path.join(home, "storage")),
                },
                instance=instance,
            )
        finished = time.perf_counter()
        assert result.success
        checks = result.get_asset_check_evaluations()
        assert len(checks) == 11 and all(check.passed for check in checks)

    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"rows                      {arguments.rows:,}")
    print(f"imports                   {imported - started:6.1f} s")
    print(f"ingest + validate         {finished - imported:6.1f} s")
    print(f"total wall                {finished - started:6.1f} s")
    print(f"peak resident memory      {peak_gib:6.2f} GiB")


if __name__ == "__main__":
    main()
