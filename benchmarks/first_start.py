"""The first `make up` on a fresh machine: a new clone, empty package caches, to the last address.

    python benchmarks/first_start.py --installer uv
    python benchmarks/first_start.py --installer pip

Clones this repository's HEAD into a temporary folder, runs `make up` there with the given
installer and empty caches (a new `UV_CACHE_DIR`; `PIP_NO_CACHE_DIR=1`), on ports of its own,
and times from the start of `make up` to: the end of the install, the end of the pipeline's
first run, and each address answering (`make up` prints each as it answers). Then it stops
`make up` as Ctrl-C in a terminal does (SIGINT to its process group), checks that nothing it
started is left running, and prints one Markdown row for `benchmarks/README.md`. Packages
come from the index (nothing is downloaded once the install is done).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
PORTS = {
    "DAGSTER_PORT": "3310",
    "MLFLOW_PORT": "5310",
    "PRODUCTION_PORT": "8310",
    "STAGING_PORT": "8311",
    "PIPELINE_METRICS_PORT": "9310",
}
ADDRESSES = ("MLflow UI", "Production service", "Staging service", "Dagster UI", "Pipeline metrics")


def first_start(installer: str, timeout: float) -> dict[str, float]:
    """Seconds from the start of `make up` to each milestone."""
    # Servers may still be writing as they stop: what cannot be removed is left to the system.
    with tempfile.TemporaryDirectory(
        prefix="churn-first-start-", ignore_cleanup_errors=True
    ) as folder:
        clone = Path(folder) / "churn"
        subprocess.run(["git", "clone", "-q", str(REPOSITORY), str(clone)], check=True)
        environment = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("CHURN_", "DAGSTER_", "MLFLOW_", "BENTOML_", "VIRTUAL_ENV"))
        }
        environment |= {"UV_CACHE_DIR": str(Path(folder) / "uv-cache"), "PIP_NO_CACHE_DIR": "1"}
        command = ["make", "up", f"INSTALLER={installer}"] + [f"{k}={v}" for k, v in PORTS.items()]
        started = time.monotonic()
        process = subprocess.Popen(
            command,
            cwd=clone,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        times: dict[str, float] = {}
        output: list[str] = []
        assert process.stdout is not None
        try:
            for line in process.stdout:
                output.append(line)
                now = time.monotonic() - started
                if "install" not in times and (clone / ".venv/bin/.installed").exists():
                    times["install"] = now
                if "churn_pipeline succeeded" in line or "stopped at the quality gates" in line:
                    times["pipeline"] = now
                for name in ADDRESSES:
                    if re.match(rf"\s+{re.escape(name)}\s+http", line):
                        times[name] = now
                if all(name in times for name in ADDRESSES) or now > timeout:
                    break
        finally:
            os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
            time.sleep(5)
        # Everything `make up` started stops with it: nothing of the clone is left running.
        left = subprocess.run(["pgrep", "-f", str(clone)], capture_output=True, text=True)
        if left.stdout.strip():
            subprocess.run(["pkill", "-9", "-f", str(clone)], check=False)
            raise SystemExit(f"still running after make up stopped: pids {left.stdout.split()}")
        missing = [name for name in ADDRESSES if name not in times]
        if missing:
            sys.stderr.write("".join(output[-40:]))
            raise SystemExit(f"not answering within {timeout:.0f} s: {', '.join(missing)}")
        return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--installer", choices=("uv", "pip"), default="uv")
    parser.add_argument("--timeout", type=float, default=1_200.0)
    arguments = parser.parse_args()
    times = first_start(arguments.installer, arguments.timeout)
    last = max(times[name] for name in ADDRESSES)
    print(
        f"| {time.strftime('%Y-%m-%d')} | {arguments.installer} | {times['install']:.0f} s | "
        f"{times['pipeline']:.0f} s | "
        + " | ".join(f"{times[name]:.0f} s" for name in ADDRESSES)
        + f" | **{last:.0f} s** |"
    )


if __name__ == "__main__":
    main()
