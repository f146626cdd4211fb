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

    .venv/bin/python benchmarks/drift.py --stored --reference 10000000 --current 1000000

`--stored` measures what the monitoring assets do with a data version too large to compare
whole: the reference is stored as a data version first (a million rows at a time, in its own
process, not timed), then a fresh process takes `reference_customers`' seeded sample of
`--max-reference-rows` rows from it, reads the log and measures drift, and reports its own peak
memory; `--compare-full` also measures drift against the whole version in a third process and
prints the largest difference of a column's PSI between the two.
"""

import argparse
import json
import resource
import subprocess
import sys
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
    parser.add_argument("--stored", action="store_true", help="sample a stored data version")
    parser.add_argument("--max-reference-rows", type=int, default=1_000_000)
    parser.add_argument("--compare-full", action="store_true", help="with --stored")
    parser.add_argument("--phase", choices=["store", "measure"], help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase == "store":
        store_reference(Path(args.scratch), args.reference, args.current)
        return
    if args.phase == "measure":
        measure_stored(Path(args.scratch), args.max_reference_rows)
        return
    if args.stored:
        stored(args)
        return

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


def store_reference(scratch: Path, rows: int, current: int) -> None:
    """The reference as a stored data version (built a million rows at a time), and the log."""
    import pandas as pd

    from churn.snapshots import SnapshotStore

    parts = []
    for number, start in enumerate(range(0, rows, 1_000_000)):
        chunk, _ = normalise(generate_customers(min(1_000_000, rows - start), 1 + number), "Churn")
        parts.append(chunk)
    frame = pd.concat(parts, ignore_index=True)
    del parts
    manifest = SnapshotStore(scratch / "snapshots").save(frame, "bench", "synthetic", "churn", None)
    (scratch / "version").write_text(manifest.version)
    write_log(scratch / "predictions", current)


def measure_stored(scratch: Path, max_rows: int) -> None:
    """`reference_customers`' sample, the log read back and `measure_drift`, in this process."""
    from churn.snapshots import SnapshotStore

    version = (scratch / "version").read_text()
    clock = time.perf_counter()
    reference, total = SnapshotStore(scratch / "snapshots").sample(
        version, list(FEATURES), max_rows
    )
    sample = time.perf_counter() - clock
    clock = time.perf_counter()
    # The log spreads its records a second apart: a million of them span 12 days.
    current = recent_predictions(scratch / "predictions", datetime.now(UTC), hours=24 * 30)
    read = time.perf_counter() - clock
    clock = time.perf_counter()
    result = measure_drift(reference, current[list(FEATURES)], list(FEATURES))
    drift = time.perf_counter() - clock
    print(
        json.dumps(
            {
                "reference_rows": len(reference),
                "version_rows": total,
                "current_rows": len(current),
                "sample_s": sample,
                "read_s": read,
                "drift_s": drift,
                "peak_gib": peak_rss_gib(),
                "psi": {c.column: c.psi for c in result.columns},
            }
        )
    )


def stored(args: argparse.Namespace) -> None:
    """Store the reference in one process, measure in a fresh one (and against all rows)."""
    with tempfile.TemporaryDirectory(prefix="drift-benchmark-") as scratch:
        command = [sys.executable, __file__, "--scratch", scratch]
        clock = time.perf_counter()
        subprocess.run(
            [
                *command,
                "--phase",
                "store",
                "--reference",
                str(args.reference),
                "--current",
                str(args.current),
            ],
            check=True,
        )
        print(f"set-up (untimed)   {time.perf_counter() - clock:>10.1f} s")
        runs = [("sample", args.max_reference_rows)]
        if args.compare_full:
            runs.append(("whole version", args.reference))
        measured = {}
        for name, rows in runs:
            output = subprocess.run(
                [*command, "--phase", "measure", "--max-reference-rows", str(rows)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            figures = json.loads(output.strip().splitlines()[-1])
            measured[name] = figures
            print(
                f"{name}: {figures['reference_rows']:,} of {figures['version_rows']:,} reference "
                f"rows against {figures['current_rows']:,}: sample {figures['sample_s']:.1f} s, "
                f"read the log {figures['read_s']:.1f} s, "
                f"measure_drift {figures['drift_s']:.1f} s, "
                f"peak RSS {figures['peak_gib']:.2f} GiB"
            )
        psi = measured["sample"]["psi"]
        print("PSI (sample): " + ", ".join(f"{c} {v:.4f}" for c, v in sorted(psi.items())))
        if args.compare_full:
            full = measured["whole version"]["psi"]
            verdicts = {c for c in psi if (psi[c] > 0.2) != (full[c] > 0.2)}
            calm = [c for c in psi if psi[c] <= 0.2 and full[c] <= 0.2]
            worst = max(calm, key=lambda c: abs(psi[c] - full[c]))
            print(f"verdicts that differ (PSI > 0.20): {', '.join(sorted(verdicts)) or 'none'}")
            print(
                f"largest |PSI(sample) - PSI(whole)| of an undrifted column: "
                f"{abs(psi[worst] - full[worst]):.5f} ({worst})"
            )
            print(
                "drifted columns, sample against whole: "
                + ", ".join(f"{c} {psi[c]:.3f} / {full[c]:.3f}" for c in psi if c not in calm)
            )


if __name__ == "__main__":
    main()
