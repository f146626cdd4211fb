"""Drift of N current rows against M reference rows, as the `drift_report` asset computes it.

    .venv/bin/python benchmarks/drift.py --reference 1000000 --current 100000

Steps timed, in one fresh process:

1. the current rows are written to a prediction log with the service's `ParquetLog` (100 files,
   like a service flushing every few seconds), then read back with `recent_predictions`, as
   `production_inputs` does (the write is set-up, not timed);
2. `measure_drift`: Evidently's `DataDriftPreset` with PSI on all 19 Telco features, on every row
   (no sampling);
3. the interactive HTML report written to disk.

The reference is synthetic customers from the built-in generator; the current rows are drifted
(monthly charges +30 %, half of the longer contracts turned month-to-month), so the report has
drifted columns to draw. Peak memory is the process's peak resident set size.

Target (issue 5): 1,000,000 reference and 100,000 current rows in under 60 s and under 4 GiB.
"""

import argparse
import resource
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from churn.drift import measure_drift
from churn.logs import prediction_schema, recent_predictions
from churn.model.schema import ModelSchema
from churn.normalise import normalise
from churn.parquet_log import ParquetLog
from churn_assets.ingestion.synthetic import SyntheticDrift, generate_customers
from churn_assets.telco import FEATURES

GIB = 1024**3
LOG_FILES = 100


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def write_log(folder: Path, rows: int) -> None:
    """`rows` drifted customers in the prediction log, in `LOG_FILES` flushes."""
    frame, _ = normalise(generate_customers(rows, 2, SyntheticDrift(0.3, 0.5)), "Churn")
    now = datetime.now(UTC)
    schema = prediction_schema(ModelSchema.from_frame(frame, "churn", "customer_id"))
    log = ParquetLog(folder, schema, "predicted_at")
    for part in np.array_split(np.arange(rows), LOG_FILES):
        chunk = frame.iloc[part]
        size = len(chunk)
        log.append(
            {
                "request_id": [uuid.uuid4().hex] * size,
                "prediction_id": [uuid.uuid4().hex for _ in range(size)],
                "predicted_at": [now - timedelta(seconds=int(rows - i)) for i in part],
                "model_name": ["churn-predictor"] * size,
                "model_version": ["1"] * size,
                "model_alias": ["production"] * size,
                "customer_id": chunk["customer_id"].astype(str).tolist(),
                **{
                    name: [None if value != value else value for value in chunk[name].tolist()]
                    for name in FEATURES
                },
                "churn_probability": [0.5] * size,
                "churn_label": [1] * size,
                "unknown_categories": [""] * size,
            }
        )
        log.flush()
    log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=int, default=1_000_000)
    parser.add_argument("--current", type=int, default=100_000)
    args = parser.parse_args()

    started = time.perf_counter()
    reference, _ = normalise(generate_customers(args.reference, 1), "Churn")
    reference = reference[list(FEATURES)]
    with tempfile.TemporaryDirectory(prefix="drift-benchmark-") as scratch:
        folder = Path(scratch) / "predictions"
        write_log(folder, args.current)
        setup = time.perf_counter() - started
        rss_setup = peak_rss_gib()

        clock = time.perf_counter()
        current = recent_predictions(folder, datetime.now(UTC), hours=24 * 7)
        read = time.perf_counter() - clock
        assert len(current) == args.current, len(current)

        clock = time.perf_counter()
        result = measure_drift(reference, current[list(FEATURES)], list(FEATURES))
        drift = time.perf_counter() - clock

        clock = time.perf_counter()
        html = Path(scratch) / "drift.html"
        result.save_html(str(html))
        report = time.perf_counter() - clock
        size_mib = html.stat().st_size / 1024**2

    total = read + drift + report
    print(f"reference rows     {args.reference:>12,}")
    print(f"current rows       {args.current:>12,}")
    print(f"set-up (untimed)   {setup:>10.1f} s  (peak RSS {rss_setup:.2f} GiB)")
    print(f"read the log       {read:>10.1f} s")
    print(f"measure_drift      {drift:>10.1f} s")
    print(f"HTML report        {report:>10.1f} s  ({size_mib:.1f} MiB)")
    print(f"total (timed)      {total:>10.1f} s")
    print(f"peak RSS           {peak_rss_gib():>10.2f} GiB")
    drifted = ", ".join(f"{c.column} {c.psi:.3f}" for c in result.drifted)
    print(f"drifted columns    {drifted}")
    print(f"largest PSI of the others {max(c.psi for c in result.columns if not c.drifted):.4f}")


if __name__ == "__main__":
    main()
