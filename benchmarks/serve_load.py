"""The churn service under load, against `mlflow models serve` on the same model version.

Trains a production model with the real pipeline in a fresh platform home (the real Telco file
when it is beside the repository, else the built-in data), starts `bentoml serve` (the churn
service) and `mlflow models serve` (MLflow's own scoring server, one worker each, as the churn
service), and drives both from `wrk` (Debian's package; a light client, because it shares the two
cores with the server):

- single-record requests at fixed rates (50, 100, 200 requests/s): p50 and p99 latency, errors;
- a rising rate until p99 exceeds 200 ms or a request fails: the highest rate achieved within
  that bound is the rate sustained (a saturated server answers slower, so its connections send
  less than offered: the achieved rate is its capacity);
- 1,000-record batches, one at a time, on the warm idle server: latency over 100 requests;
- mixed traffic: single records at 100/s while a client sends 1,000-record batches: errors.

Rates are paced by wrk's `delay()` hook with jitter, ten requests/s per connection, so that a
slower answer barely lowers the offered rate. The achieved rate is what is reported.

    .venv/bin/python benchmarks/serve_load.py
    .venv/bin/python benchmarks/serve_load.py --seconds 30 --source synthetic
    .venv/bin/python benchmarks/serve_load.py --source accounts --servers churn   # 60 columns

`--startups N` instead starts the churn service N times (and, with `--compare-with`, the other
checkout's) and reports how long each takes until `/readyz` answers: its cold start.

`--source accounts` serves a model of a generated 60-column table (a key named otherwise,
booleans, dates as text: `generate_accounts`), the shape a Telco-only service could not take.

Targets (issue 4): single-record p99 <= 25 ms at 100 requests/s with zero errors; at least 1.5x
the throughput of `mlflow models serve` at the same p99 bound; a 1,000-record batch in < 150 ms.
"""

import argparse
import functools
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

print = functools.partial(print, flush=True)
REPOSITORY = Path(__file__).resolve().parents[1]
TELCO = REPOSITORY.parent / "shared" / "data" / "telco_customer_churn.csv"
BIN = Path(sys.executable).parent
FIXED_RATES = (50, 100, 200)
RAMP = (300, 400, 500, 600, 700, 800, 1000, 1200, 1500, 2000)
P99_BOUND_MS = 200.0
BATCHES = 100

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local file = io.open(os.getenv("WRK_BODY"), "r")
wrk.body = file:read("*a")
file:close()
local pause = tonumber(os.getenv("WRK_PAUSE_MS"))
function setup(thread) thread:set("seed", math.random(1, 1000000)) end
function init(args) math.randomseed(seed) end
function delay() return pause * (0.5 + math.random()) end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "socket_errors": %d, "status_errors": %d, '
    .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=str(TELCO) if TELCO.exists() else "synthetic")
    parser.add_argument("--seconds", type=int, default=20, help="length of each load step")
    parser.add_argument(
        "--servers", default="churn,mlflow", help="which to measure: churn, mlflow or both"
    )
    parser.add_argument(
        "--compare-with",
        metavar="CHECKOUT",
        help="also serve the same model with the churn service of another checkout of this "
        "repository (an A/B of serving code: the model, data and load are the same). The "
        "other checkout trains it; this checkout serves the same estimator re-logged in its "
        "own model format, under the staging alias (see `relog`)",
    )
    parser.add_argument(
        "--algorithm",
        help="train only this algorithm (lightgbm, random_forest, logistic_regression), so that "
        "two runs serve the same kind of model",
    )
    parser.add_argument(
        "--soak-minutes",
        type=float,
        help="instead of the load steps: a soak of the churn service, single records at "
        "100/s with a 1,000-record batch every 5 s, for this many minutes",
    )
    parser.add_argument(
        "--tail-minutes",
        type=float,
        help="instead of the load steps: where the p99 of single records comes from; single "
        "records at 100/s alone, then with a 1,000-record batch every 5 s, then alone on a "
        "server that never flushes its log during the run, this many minutes each",
    )
    parser.add_argument(
        "--startups",
        type=int,
        help="instead of the load steps: start the churn service this many times (and the other "
        "checkout's, with --compare-with) and report the time until /readyz answers",
    )
    arguments = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    if arguments.soak_minutes:
        soak(arguments.source, arguments.algorithm, arguments.soak_minutes)
        return
    if arguments.tail_minutes:
        tail(arguments.source, arguments.algorithm, arguments.tail_minutes)
        return

    with tempfile.TemporaryDirectory(prefix="churn-serving-bench-") as directory:
        home = Path(directory)
        environment = platform_environment(home, arguments.source)
        version, record, key = train(
            home,
            environment,
            arguments.algorithm,
            checkout=Path(arguments.compare_with) if arguments.compare_with else None,
        )
        print(f"model: churn-predictor version {version} (source {arguments.source})")
        churn_environment = environment
        if arguments.compare_with:
            copy = relog(environment, version)
            print(f"this checkout serves version {copy}: version {version} in its own format")
            churn_environment = {**environment, "CHURN_SERVING_ALIAS": "staging"}
        bento_body = home / "bento-single.json"
        bento_body.write_text(json.dumps({"records": [record]}))
        mlflow_body = home / "mlflow-single.json"
        mlflow_body.write_text(json.dumps({"dataframe_records": [record]}))
        batch = [{**record, **({key: f"batch-{i}"} if key else {})} for i in range(1_000)]
        servers = {
            "bentoml serve (churn service)": (
                [str(BIN / "bentoml"), "serve", "--host", "127.0.0.1", "--port", "{port}"],
                "/readyz",
                "/predict",
                bento_body,
                {"records": batch},
            ),
            "bentoml serve (the other checkout)": (
                [
                    *("env", f"PYTHONPATH={arguments.compare_with}"),
                    *(str(BIN / "bentoml"), "serve", "--host", "127.0.0.1", "--port", "{port}"),
                    *("--working-dir", str(arguments.compare_with)),
                ],
                "/readyz",
                "/predict",
                bento_body,
                {"records": batch},
            ),
            "mlflow models serve": (
                [
                    *(str(BIN / "mlflow"), "models", "serve", "--env-manager", "local"),
                    *("-m", f"models:/churn-predictor/{version}", "-w", "1"),
                    *("--host", "127.0.0.1", "--port", "{port}"),
                ],
                "/ping",
                "/invocations",
                mlflow_body,
                {"dataframe_records": batch},
            ),
        }
        if arguments.startups:
            churn = [name for name in servers if name.startswith("bentoml")]
            startups(
                {name: servers[name][0] for name in churn[: 2 if arguments.compare_with else 1]},
                environment,
                home,
                arguments.startups,
            )
            return
        chosen = {"churn": "bentoml serve (churn service)", "mlflow": "mlflow models serve"}
        wanted = {chosen[name.strip()] for name in arguments.servers.split(",")}
        if arguments.compare_with:
            wanted.add("bentoml serve (the other checkout)")
        results: dict[str, dict[str, Any]] = {}
        for name, (command, health, path, body, batch_body) in servers.items():
            if name not in wanted:
                continue
            served = churn_environment if name == "bentoml serve (churn service)" else environment
            with server(command, health, served, home) as url:
                check_answer(url + path, json.loads(body.read_text()))
                results[name] = measure(url + path, body, batch_body, arguments.seconds, home)
        report(results)


SERVE = [str(BIN / "bentoml"), "serve", "--host", "127.0.0.1", "--port", "{port}"]


def startups(
    commands: dict[str, list[str]], environment: dict[str, str], home: Path, times: int
) -> None:
    """Start each server `times` times, alternating, and print how long it took to be ready."""
    ready: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(times):
        for name, command in commands.items():
            started = time.monotonic()
            with server(command, "/readyz", environment, home):
                ready[name].append(time.monotonic() - started)
    print("\n| server | ready after (median) | min - max |")
    print("|---|---|---|")
    for name, seconds in ready.items():
        print(
            f"| {name} | {statistics.median(seconds):.1f} s | "
            f"{min(seconds):.1f} - {max(seconds):.1f} s |"
        )


def mixed_load(
    home: Path, source: str, algorithm: str | None
) -> tuple[dict[str, str], Path, dict[str, Any]]:
    """Train a model under `home`; return its environment, a single-record body file, a batch."""
    environment = platform_environment(home, source)
    _, record, key = train(home, environment, algorithm)
    single = home / "single.json"
    single.write_text(json.dumps({"records": [record]}))
    batch = {"records": [{**record, **({key: f"b-{i}"} if key else {})} for i in range(1_000)]}
    return environment, single, batch


def soak(source: str, algorithm: str | None, minutes: float) -> None:
    """Hold a mixed load for `minutes`: errors, memory over time, log rows against answers."""
    from churn.parquet_log import read_log

    with tempfile.TemporaryDirectory(prefix="churn-soak-") as directory:
        home = Path(directory)
        environment, single, batch = mixed_load(home, source, algorithm)
        answered = 0
        with server(SERVE, "/readyz", environment, home) as url:
            pattern = f"--port {url.rsplit(':', 1)[1]}"
            found = subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True, text=True)
            pid = int(found.stdout.split()[0])
            warm = wrk(url + "/predict", single, 100, 60, home)
            answered += int(warm["requests"] - warm["errors"])
            print(f"warm-up: {warm}", flush=True)
            rss: list[tuple[float, float]] = []
            batches = {"ok": 0, "failed": 0}
            stop = threading.Event()
            started = time.monotonic()

            def sample() -> None:
                while not stop.wait(10):
                    rss.append((time.monotonic() - started, session_rss_mib(pid)))

            def send_batches() -> None:
                while not stop.wait(5):
                    try:
                        post(url + "/predict", batch)
                        batches["ok"] += 1
                    except (urllib.error.URLError, TimeoutError):
                        batches["failed"] += 1

            threads = [threading.Thread(target=sample), threading.Thread(target=send_batches)]
            rss.append((0.0, session_rss_mib(pid)))
            for thread in threads:
                thread.start()
            load = wrk(url + "/predict", single, 100, round(minutes * 60), home)
            stop.set()
            for thread in threads:
                thread.join()
            answered += int(load["requests"] - load["errors"]) + 1_000 * batches["ok"]
        time.sleep(1)
        logged = len(read_log(home / "serving" / "production" / "predictions"))
        first, last, peak = rss[0][1], rss[-1][1], max(value for _, value in rss)
        print(
            json.dumps(
                {
                    "minutes": minutes,
                    "single_requests": load["requests"],
                    "errors": load["errors"],
                    "batches": batches,
                    "p50_ms": load["p50_ms"],
                    "p99_ms": load["p99_ms"],
                    "rss_mib_after_warm_up": round(first),
                    "rss_mib_at_end": round(last),
                    "rss_mib_peak": round(peak),
                    "rss_growth": round(last / first - 1, 3),
                    "predictions_answered": answered,
                    "predictions_logged": logged,
                    "rss_samples": [
                        (round(t), round(v)) for t, v in rss[:: max(1, len(rss) // 12)]
                    ],
                }
            )
        )


def tail(source: str, algorithm: str | None, minutes: float) -> None:
    """Single-record latency percentiles with and without the two suspects of the tail.

    A 1,000-record batch occupies the model for ~60 ms, and single records that arrive meanwhile
    wait for it; the log flush (every 5 s) converts and writes what was buffered. Each is
    switched off in turn: the same load, the same model, the same machine.
    """
    with tempfile.TemporaryDirectory(prefix="churn-tail-") as directory:
        home = Path(directory)
        environment, single, batch = mixed_load(home, source, algorithm)
        seconds = round(minutes * 60)
        results: dict[str, Any] = {}

        def segment(url: str, name: str) -> None:
            before = gc_pauses(url)
            results[name] = wrk(url + "/predict", single, 100, seconds, home)
            after = gc_pauses(url)
            results[name]["gc"] = {
                generation: {
                    figure: round(after[generation][figure] - before[generation][figure], 3)
                    for figure in after[generation]
                }
                for generation in after
            }

        with server(SERVE, "/readyz", environment, home) as url:
            wrk(url + "/predict", single, 100, 30, home)  # warm-up
            segment(url, "single records alone (log flushed every 5 s)")
            stop = threading.Event()

            def send_batches() -> None:
                while not stop.wait(5):
                    post(url + "/predict", batch)

            sender = threading.Thread(target=send_batches)
            sender.start()
            try:
                segment(url, "with a 1,000-record batch every 5 s")
            finally:
                stop.set()
                sender.join()
        quiet = {**environment, "CHURN_LOG_FLUSH_SECONDS": "3600"}
        with server(SERVE, "/readyz", quiet, home) as url:
            wrk(url + "/predict", single, 100, 30, home)
            segment(url, "single records alone, log never flushed")
        for name, figures in results.items():
            print(json.dumps({"segment": name, **figures}))


def gc_pauses(url: str) -> dict[str, dict[str, float]]:
    """The service's garbage-collection pauses so far, by generation: count, seconds, > 10 ms."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    pauses: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if not line.startswith("churn_gc_pause_seconds"):
            continue
        name, value = line.rsplit(" ", 1)
        generation = name.split('generation="', 1)[1].split('"', 1)[0]
        figures = pauses.setdefault(generation, {"count": 0.0, "seconds": 0.0, "over_10ms": 0.0})
        if name.startswith("churn_gc_pause_seconds_count"):
            figures["count"] += float(value)
            figures["over_10ms"] += float(value)
        elif name.startswith("churn_gc_pause_seconds_sum"):
            figures["seconds"] += float(value)
        elif name.startswith("churn_gc_pause_seconds_bucket") and 'le="0.01"' in name:
            figures["over_10ms"] -= float(value)
    return pauses


def session_rss_mib(pid: int) -> float:
    """Resident memory of `pid` and all its descendants (the server's workers), in MiB."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    family, grown = {pid}, True
    while grown:
        children = {child for child, parent in parents.items() if parent in family}
        grown = not children <= family
        family |= children
    total = 0
    for member in family:
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def platform_environment(home: Path, source: str) -> dict[str, str]:
    table: dict[str, str] = {}
    if source == "accounts":
        from churn_assets.ingestion.synthetic import generate_accounts

        source = str(home / "accounts.parquet")
        home.mkdir(parents=True, exist_ok=True)
        generate_accounts(10_000).to_parquet(source, index=False)
        table = {"CHURN_TARGET": "Lapsed", "CHURN_ID_COLUMN": "AccountNumber"}
    environment = {
        **os.environ,
        **table,
        "CHURN_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "CHURN_SOURCE": source,
        "CHURN_GATES": "telco" if source != "synthetic" else "brief",
        "GX_ANALYTICS_ENABLED": "False",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "BENTOML_DO_NOT_TRACK": "True",
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow' / 'mlflow.db'}",
        # `mlflow models serve` starts `uvicorn` from the PATH.
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    return environment


def relog(environment: dict[str, str], version: str) -> str:
    """Log `version` again as this checkout logs models; the new version, aliased `staging`.

    The estimator is the one trained (read back from the registry), so an A/B of serving code
    compares the same trees, each checkout reading the model format it writes.
    """
    import mlflow
    import pandas as pd

    from churn.model.pyfunc import load_model, log_model

    mlflow.set_tracking_uri(environment["MLFLOW_TRACKING_URI"])
    model = load_model(f"models:/churn-predictor/{version}")
    example = pd.DataFrame([model.schema.example()])
    with mlflow.start_run(run_name="relogged"):
        info = log_model(
            model, name="model", signature=None, input_example=example, pip_requirements=[]
        )
    registered = mlflow.register_model(info.model_uri, "churn-predictor")
    client = mlflow.MlflowClient()
    client.set_registered_model_alias("churn-predictor", "staging", registered.version)
    return str(registered.version)


def train(
    home: Path,
    environment: dict[str, str],
    algorithm: str | None = None,
    checkout: Path | None = None,
) -> tuple[str, dict[str, Any], str | None]:
    """Run the training pipeline (of `checkout`, or this one); the production version, a raw
    record, the key."""
    (home / "dagster").mkdir(parents=True)
    shutil.copy(REPOSITORY / "dagster.yaml", home / "dagster" / "dagster.yaml")
    config = home / "run.json"
    config.write_text(
        json.dumps(
            {"ops": {"candidate_models": {"config": {"algorithms": [algorithm]}}}}
            if algorithm
            else {}
        )
    )
    subprocess.run(
        [
            str(BIN / "dagster"),
            "job",
            "execute",
            "-j",
            "churn_pipeline",
            "-m",
            "churn_assets.definitions",
            "-c",
            str(config),
        ],
        cwd=checkout or REPOSITORY,
        env={
            **{k: v for k, v in environment.items() if k != "MLFLOW_TRACKING_URI"},
            **({"PYTHONPATH": str(checkout)} if checkout else {}),
        },
        check=True,
        capture_output=True,
    )
    from mlflow import MlflowClient

    from churn.normalise import normalise, snake_case
    from churn.sources import read_table
    from churn_assets.ingestion.synthetic import generate_customers
    from serving.traffic import json_record

    client = MlflowClient(environment["MLFLOW_TRACKING_URI"])
    served = client.get_model_version_by_alias("churn-predictor", "production")
    version = str(served.version)
    print(f"model: {served.tags.get('algorithm')}")
    source = environment["CHURN_SOURCE"]
    raw = (
        generate_customers(10, seed=1)
        if source == "synthetic"
        else read_table(source, 1 << 30, 30.0, home / "tmp")
    )
    target = environment.get("CHURN_TARGET", "Churn")
    frame, report = normalise(raw.head(10), target, id_column=environment.get("CHURN_ID_COLUMN"))
    record = json_record(frame.drop(columns=[snake_case(target)]).iloc[0].to_dict())
    return version, record, report.id_column


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def server(
    command: list[str], health: str, environment: dict[str, str], home: Path
) -> Iterator[str]:
    port = free_port()
    log = open(home / f"server-{port}.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [part.format(port=port) for part in command],
        cwd=REPOSITORY,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((home / f"server-{port}.log").read_text()[-3000:])
            try:
                with urllib.request.urlopen(url + health, timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
        log.close()


def post(url: str, body: Any) -> tuple[float, Any]:
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())
    return (time.perf_counter() - started) * 1000, answer


def check_answer(url: str, body: Any) -> None:
    _, answer = post(url, body)
    print(f"  {url}: {json.dumps(answer)[:160]}")


def wrk(
    url: str, body: Path, rate: int, seconds: int, home: Path, latency_ms: float = 0.0
) -> dict[str, float]:
    """Offer `rate` requests/s for `seconds`; return wrk's figures.

    Each connection waits for its answer, then pauses: the pause is shortened by the typical
    latency (`latency_ms`) so that the offered rate is the one asked for.
    """
    script = home / "paced.lua"
    script.write_text(WRK_SCRIPT)
    connections = max(2, math.ceil(rate / 10))
    pause_ms = max(0.0, 1000 * connections / rate - latency_ms)
    completed = subprocess.run(
        [
            *("wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s"),
            "-s",
            str(script),
            url,
        ],
        env={**os.environ, "WRK_BODY": str(body), "WRK_PAUSE_MS": f"{pause_ms:.3f}"},
        capture_output=True,
        text=True,
        check=True,
    )
    figures = json.loads(completed.stdout.strip().splitlines()[-1])
    return {
        "offered": rate,
        "achieved": figures["requests"] / (figures["duration_us"] / 1e6),
        "p50_ms": figures["p50_us"] / 1000,
        "p90_ms": figures["p90_us"] / 1000,
        "p99_ms": figures["p99_us"] / 1000,
        "max_ms": figures["max_us"] / 1000,
        "errors": figures["socket_errors"] + figures["status_errors"],
        "requests": figures["requests"],
    }


def measure(url: str, single: Path, batch_body: Any, seconds: int, home: Path) -> dict[str, Any]:
    print(f"load on {url}")
    # Warm-up (caches, first requests) and the typical latency.
    typical = wrk(url, single, 50, 5, home)["p50_ms"]
    # 1,000-record batches, one at a time, on the warm and otherwise idle server.
    batch_ms = [post(url, batch_body)[0] for _ in range(3)]  # warm-up
    batch_ms = [post(url, batch_body)[0] for _ in range(BATCHES)]
    print(f"  1,000-record batches: p50 {statistics.median(batch_ms):.1f} ms")
    fixed = []
    for rate in FIXED_RATES:
        fixed.append(wrk(url, single, rate, seconds, home, typical))
        print(f"  {fixed[-1]}")
    sustained = max(
        (step for step in fixed if sustained_ok(step)), key=lambda s: s["achieved"], default=None
    )
    for rate in RAMP:
        step = wrk(url, single, rate, seconds, home, typical)
        print(f"  {step}")
        if not sustained_ok(step):
            break
        sustained = step
    # Mixed traffic: single records at 100/s while a client sends 1,000-record batches.
    mixed: dict[str, float] = {}
    load = threading.Thread(
        target=lambda: mixed.update(wrk(url, single, 100, seconds, home, typical))
    )
    load.start()
    batch_errors = 0
    while load.is_alive():
        try:
            post(url, batch_body)
        except urllib.error.HTTPError:
            batch_errors += 1
    load.join()
    mixed["batch_errors"] = batch_errors
    print(f"  mixed: {mixed}")
    return {
        "fixed": fixed,
        "sustained": sustained,
        "batch_p50_ms": statistics.median(batch_ms),
        "batch_p99_ms": float(np.percentile(batch_ms, 99)),
        "mixed": mixed,
    }


def sustained_ok(step: dict[str, float]) -> bool:
    """Whether a step stayed within the latency bound without an error (at the rate achieved)."""
    return step["errors"] == 0 and step["p99_ms"] <= P99_BOUND_MS


def report(results: dict[str, dict[str, Any]]) -> None:
    print()
    print("| server | rate offered | achieved | p50 | p99 | errors |")
    print("|---|---|---|---|---|---|")
    for name, result in results.items():
        for step in result["fixed"]:
            print(
                f"| {name} | {step['offered']}/s | {step['achieved']:.0f}/s | "
                f"{step['p50_ms']:.1f} ms | {step['p99_ms']:.1f} ms | {step['errors']:.0f} |"
            )
    print()
    print(
        "| server | highest rate (p99 <= 200 ms, 0 errors) | p99 there "
        "| 1,000-record batch p50, p99 |"
    )
    print("|---|---|---|---|")
    for name, result in results.items():
        sustained = result["sustained"]
        shown = (
            f"{sustained['achieved']:.0f}/s | {sustained['p99_ms']:.1f} ms"
            if sustained
            else "none | -"
        )
        print(
            f"| {name} | {shown} | {result['batch_p50_ms']:.1f} / {result['batch_p99_ms']:.1f} ms |"
        )
    if len(results) < 2:
        return
    bento, mlflow = results.values()
    if bento["sustained"] and mlflow["sustained"]:
        ratio = bento["sustained"]["achieved"] / mlflow["sustained"]["achieved"]
        print(f"\nthroughput ratio at p99 <= 200 ms: {ratio:.2f}x")
    for step_b, step_m in zip(bento["fixed"], mlflow["fixed"], strict=True):
        print(
            f"p99 at {step_b['offered']}/s: {step_b['p99_ms']:.1f} ms vs {step_m['p99_ms']:.1f} ms "
            f"({step_m['p99_ms'] / step_b['p99_ms']:.1f}x lower)"
        )
    print(
        f"1,000-record batch p50: {bento['batch_p50_ms']:.1f} ms vs {mlflow['batch_p50_ms']:.1f} ms"
    )


if __name__ == "__main__":
    main()
