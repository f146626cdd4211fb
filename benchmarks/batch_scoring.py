"""Nightly scoring of a large customer base, as the platform runs it.

Trains the Telco production model with the real pipeline (`dagster job execute -j
churn_pipeline` on the real Telco file, default training budget, `telco` gates), writes a
population of N customers (the Telco customers resampled, with new keys and jittered numbers,
no target column) as Parquet, then materializes `customer_scores` with the Dagster CLI, as the
nightly schedule does, once per configuration, each in a fresh process. Prints wall time, the
asset's own time by phase, customers per second and the peak resident memory of the process
that scored.

    .venv/bin/python benchmarks/batch_scoring.py --rows 1000000 10000000

Targets (issue 13): 1,000,000 customers with reasons in under 60 s and 2 GiB; 10,000,000 in
under 10 minutes and still under 2 GiB; without reasons at least 3x faster.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
TELCO = REPOSITORY.parent / "shared" / "data" / "telco_customer_churn.csv"
BIN = Path(sys.executable).parent
PARTITION = "2026-11-28"


def environment(home: Path, **extra: str) -> dict[str, str]:
    variables = {
        **os.environ,
        "CHURN_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "CHURN_SOURCE": str(TELCO),
        "CHURN_GATES": "telco",
        "GX_ANALYTICS_ENABLED": "False",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        **extra,
    }
    variables.pop("MLFLOW_TRACKING_URI", None)
    return variables


def train(home: Path) -> None:
    (home / "dagster").mkdir(parents=True)
    (home / "dagster" / "dagster.yaml").write_text((REPOSITORY / "dagster.yaml").read_text())
    started = time.perf_counter()
    subprocess.run(
        [
            str(BIN / "dagster"),
            "job",
            "execute",
            "-j",
            "churn_pipeline",
            "-m",
            "churn_assets.definitions",
        ],
        cwd=REPOSITORY,
        env=environment(home),
        check=True,
        capture_output=True,
    )
    print(f"trained the Telco production model in {time.perf_counter() - started:.0f} s")


def population(home: Path, rows: int, path: Path) -> None:
    """`rows` customers resampled from the Telco file, written a million at a time."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    telco = pd.read_csv(TELCO, dtype=str, keep_default_na=False).drop(columns=["Churn"])
    for column in ("tenure", "MonthlyCharges"):
        telco[column] = pd.to_numeric(telco[column])
    telco["TotalCharges"] = pd.to_numeric(telco["TotalCharges"], errors="coerce")
    random = np.random.default_rng(0)
    writer = None
    for start in range(0, rows, 1_000_000):
        size = min(1_000_000, rows - start)
        chunk = telco.iloc[random.integers(0, len(telco), size)].reset_index(drop=True)
        chunk["customerID"] = [f"C{start + i:09d}" for i in range(size)]
        chunk["MonthlyCharges"] = (chunk["MonthlyCharges"] * random.uniform(0.9, 1.1, size)).round(
            2
        )
        chunk["TotalCharges"] = (chunk["TotalCharges"] * random.uniform(0.9, 1.1, size)).round(2)
        table = pa.Table.from_pandas(chunk, preserve_index=False)
        writer = writer or pq.ParquetWriter(str(path), table.schema)
        writer.write_table(table)
    assert writer is not None
    writer.close()
    print(
        f"population: {rows:,} customers, {path.stat().st_size / 2**20:.0f} MiB of Parquet",
        flush=True,
    )


def measure(home: Path, source: Path, reasons: bool) -> None:
    """One materialization of `customer_scores` in a fresh process; prints its figures."""
    started = time.perf_counter()
    completed = subprocess.run(
        [
            str(BIN / "dagster"),
            "asset",
            "materialize",
            "-m",
            "churn_assets.definitions",
            "--select",
            "customer_scores",
            "--partition",
            PARTITION,
            "--config-json",
            json.dumps({"ops": {"customer_scores": {"config": {"reasons": reasons}}}}),
        ],
        cwd=REPOSITORY,
        env=environment(home, CHURN_SCORING_SOURCE=str(source)),
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    if completed.returncode:
        print(completed.stderr[-3000:])
        raise SystemExit(completed.returncode)
    manifest = json.loads((home / "scores" / f"date={PARTITION}" / "manifest.json").read_text())
    seconds = manifest["seconds"]
    print(
        json.dumps(
            {
                "rows": manifest["rows_scored"],
                "reasons": reasons,
                "wall_seconds": round(wall, 1),
                "asset_seconds": seconds["total"],
                "customers_per_second": round(manifest["rows_scored"] / seconds["total"]),
                "peak_rss_gib": round(peak, 2),
                "phases": {k: v for k, v in seconds.items() if k != "total"},
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument(
        "--reasons", choices=["both", "true", "false"], default="both", help="which runs"
    )
    parser.add_argument("--measure", nargs=3, help=argparse.SUPPRESS)  # home source reasons
    arguments = parser.parse_args()
    if arguments.measure:
        home, source, reasons = arguments.measure
        measure(Path(home), Path(source), reasons == "true")
        return
    with tempfile.TemporaryDirectory(prefix="churn-bench-") as folder:
        home = Path(folder) / "home"
        train(home)
        sys.stdout.flush()
        for rows in arguments.rows:
            source = Path(folder) / f"customers-{rows}.parquet"
            population(home, rows, source)
            runs = ("true", "false") if arguments.reasons == "both" else (arguments.reasons,)
            for reasons in runs:
                # A fresh process per figure: the peak memory is that run's alone.
                subprocess.run(
                    [sys.executable, __file__, "--measure", str(home), str(source), reasons],
                    check=True,
                )
            source.unlink()


if __name__ == "__main__":
    main()
