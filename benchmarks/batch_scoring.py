"""Nightly scoring of a large customer base, as the platform runs it.

Trains the Telco production model with the real pipeline (`dagster job execute -j
churn_pipeline` on the real Telco file, default training budget, `telco` gates), writes a
population of N customers (the Telco customers resampled, with new keys and jittered numbers,
no target column) as Parquet, then materializes `customer_scores` with the Dagster CLI, as the
nightly schedule does, once per configuration, each in a fresh process. Prints wall time, the
asset's own time by phase, customers per second and the peak resident memory of the process
that scored.

    .venv/bin/python benchmarks/batch_scoring.py --rows 1000000 10000000
    .venv/bin/python benchmarks/batch_scoring.py --compare-with ../other-checkout --reasons true

`--compare-with CHECKOUT` is an A/B of scoring code on the same model: the other checkout trains
it and scores the population; this checkout scores the same estimator re-logged in its own model
format (`serve_load.relog`, the `staging` alias), alternately, on the same population file.

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


def train(home: Path, checkout: Path | None = None) -> None:
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
        cwd=checkout or REPOSITORY,
        env=environment(home, **({"PYTHONPATH": str(checkout)} if checkout else {})),
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


def measure(home: Path, source: Path, reasons: bool, checkout: str = "") -> None:
    """One materialization of `customer_scores` in a fresh process; prints its figures.

    With `checkout`, that checkout's code scores the production version; otherwise this one
    scores the version behind `CHURN_SCORING_ALIAS` (production unless set).
    """
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
        cwd=checkout or REPOSITORY,
        env=environment(
            home,
            CHURN_SCORING_SOURCE=str(source),
            **({"PYTHONPATH": checkout, "CHURN_SCORING_ALIAS": "production"} if checkout else {}),
        ),
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
                "code": checkout or "this checkout",
                "model_version": manifest["model_version"],
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
    parser.add_argument(
        "--compare-with",
        metavar="CHECKOUT",
        help="an A/B of scoring code on the same model (see the module's docstring)",
    )
    parser.add_argument("--measure", nargs=4, help=argparse.SUPPRESS)  # home source reasons code
    arguments = parser.parse_args()
    if arguments.measure:
        home, source, reasons, checkout = arguments.measure
        measure(Path(home), Path(source), reasons == "true", checkout)
        return
    other = Path(arguments.compare_with).resolve() if arguments.compare_with else None
    with tempfile.TemporaryDirectory(prefix="churn-bench-") as folder:
        home = Path(folder) / "home"
        train(home, other)
        if other:
            from mlflow import MlflowClient
            from serve_load import relog

            store = f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
            production = MlflowClient(store).get_model_version_by_alias(
                "churn-predictor", "production"
            )
            copy = relog({"MLFLOW_TRACKING_URI": store}, str(production.version))
            print(f"this checkout scores version {copy}: version {production.version} re-logged")
            os.environ["CHURN_SCORING_ALIAS"] = "staging"
        sys.stdout.flush()
        for rows in arguments.rows:
            source = Path(folder) / f"customers-{rows}.parquet"
            population(home, rows, source)
            runs = ("true", "false") if arguments.reasons == "both" else (arguments.reasons,)
            codes = [str(other), ""] if other else [""]
            for reasons in runs:
                for code in codes:
                    # A fresh process per figure: the peak memory is that run's alone.
                    subprocess.run(
                        [
                            *(sys.executable, __file__, "--measure"),
                            *(str(home), str(source), reasons, code),
                        ],
                        check=True,
                    )
            source.unlink()


if __name__ == "__main__":
    main()
