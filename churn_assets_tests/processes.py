"""Real servers the tests start and talk to: `bentoml serve` and Prometheus.

Shared by the serving, observability and alerting tests. Each process listens on a free
loopback port and is stopped the way an orchestrator stops it (SIGTERM), so that what it flushes
on shutdown is flushed as in production.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from churn.parquet_log import read_log
from churn_assets.resources import PlatformHome
from churn_assets_tests.conftest import REPOSITORY, free_port

PROMETHEUS_DIR = REPOSITORY / "deploy" / "prometheus"

BENTOML = Path(sys.executable).parent / "bentoml"
POSTGRES = os.environ.get(
    "CHURN_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
MAX_RECORDS = 50
MAX_BODY_BYTES = 64 * 1024


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class Server:
    """A running `bentoml serve` of the churn service."""

    def __init__(
        self, process: subprocess.Popen[bytes], port: int, home: PlatformHome, log_file: Path
    ) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}"
        self.port = port
        self.home = home
        self.log_file = log_file

    def request(
        self,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            headers={"Content-Type": "application/json", **(headers or {})},
            method="GET" if data is None else "POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return Answer(response.status, _json(response.read()), dict(response.headers))
        except urllib.error.HTTPError as error:
            return Answer(error.code, _json(error.read()), dict(error.headers))

    def predict(self, *records: dict[str, Any], **headers: str) -> Answer:
        return self.request("/predict", {"records": list(records)}, headers=headers)

    def log(self, name: str) -> pd.DataFrame:
        return read_log(self.home.serving_log("production", name))

    def metric(self, name: str, **labels: str) -> list[float]:
        """The values `/metrics` shows now for `name`'s samples that carry `labels`."""
        wanted = [f'{label}="{value}"' for label, value in labels.items()]
        return [
            float(line.rsplit(" ", 1)[1])
            for line in str(self.request("/metrics").body).splitlines()
            if line.startswith(name + "{") and all(label in line for label in wanted)
        ]

    def logs_written(self) -> bool:
        """Whether every record the service has logged so far is on disk (no backlog left)."""
        backlogs = self.metric("churn_log_backlog_records")
        return bool(backlogs) and not any(backlogs)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body.decode()


@contextmanager
def serve(home: PlatformHome, ready: bool = True, **settings: str) -> Iterator[Server]:
    """Start `bentoml serve` on a free port; stop it with SIGTERM, as an orchestrator would.

    BentoML picks its process manager's control ports by binding port 0 and letting go before
    circus binds them again; on a busy machine an outgoing connection can take the port in
    between, and the server exits with `ZMQError: Address already in use`. That start, and only
    that one, is tried again (three times at most) on a new port.
    """
    for attempt in range(3):
        server = _start(home, settings)
        try:
            _wait_for(server, "/readyz" if ready else "/livez", server.log_file)
            break
        except _ControlPortTaken:
            if attempt == 2:
                raise
    process = server.process
    try:
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, server.log_file.read_text()[-3000:]


class _ControlPortTaken(AssertionError):
    """The server exited because a port BentoML had reserved was taken before it bound it."""


def _start(home: PlatformHome, settings: dict[str, str]) -> Server:
    port = free_port()
    environment = {
        **os.environ,
        "CHURN_HOME": str(home.root),
        "CHURN_MODEL_REFRESH_SECONDS": "1",
        "CHURN_LOG_FLUSH_SECONDS": "1",
        "CHURN_MAX_BATCH_RECORDS": str(MAX_RECORDS),
        "CHURN_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        "BENTOML_DO_NOT_TRACK": "True",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        # BentoML keeps its metrics files under BENTOML_HOME and clears them at start: each
        # server needs its own, or one's start wipes the other's counters.
        "BENTOML_HOME": str(home.root.parent / f"bentoml-{port}"),
        **settings,
    }
    if "MLFLOW_TRACKING_URI" not in settings:  # the home's own store, unless told otherwise
        environment.pop("MLFLOW_TRACKING_URI", None)
    log = home.root.parent / f"bentoml-{port}.log"
    home.root.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [str(BENTOML), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPOSITORY,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    return Server(process, port, home, log)


def _wait_for(server: Server, path: str, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            output = log.read_text()
            message = f"bentoml serve exited:\n{output[-3000:]}"
            if "ZMQError: Address already in use" in output:
                raise _ControlPortTaken(message)
            raise AssertionError(message)
        try:
            with urllib.request.urlopen(server.url + path, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    raise AssertionError(f"{path} never answered 200:\n{log.read_text()[-3000:]}")


@contextmanager
def prometheus(
    targets: dict[str, str],
    folder: Path,
    alertmanager: str | None = None,
    pipeline: str | None = None,
) -> Iterator[str]:
    """A real Prometheus with the repository's configuration and rules, scraping `targets`
    (deployment -> host:port) every second; rules evaluate every second and fire at once.

    Only the addresses and timings differ from the repository's files. `pipeline` is the
    `churn-pipeline-metrics` address (host:port; without it, that job is left out). With
    `alertmanager` (host:port), alerts go there and its metrics are scraped, as in compose.yaml;
    without, the configuration's Alertmanager is left out.
    """
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    serving, pipeline_job, alertmanager_job = (
        jobs["churn-serving"],
        jobs["churn-pipeline"],
        jobs["alertmanager"],
    )
    serving["static_configs"] = [
        {"targets": [target], "labels": {"deployment": deployment}}
        for deployment, target in targets.items()
    ]
    config["scrape_configs"] = [serving]
    if pipeline is not None:
        pipeline_job["static_configs"][0]["targets"] = [pipeline]
        config["scrape_configs"].append(pipeline_job)
    if alertmanager is None:
        del config["alerting"]
    else:
        alertmanager_job["static_configs"] = [{"targets": [alertmanager]}]
        config["scrape_configs"].append(alertmanager_job)
        config["alerting"]["alertmanagers"] = [{"static_configs": [{"targets": [alertmanager]}]}]
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["for"] = "0s"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "alerts.yml").write_text(yaml.safe_dump(rules))
    config["rule_files"] = [str(folder / "alerts.yml")]
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(folder / "prometheus.log", "wb") as log:
        process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while not answers(url + "/-/ready"):
            assert process.poll() is None, (folder / "prometheus.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "Prometheus did not become ready"
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextmanager
def pipeline_metrics(home: PlatformHome) -> Iterator[str]:
    """`churn-pipeline-metrics` over `home` on a free port; its host:port."""
    port = free_port()
    log = home.root.parent / f"pipeline-metrics-{port}.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [str(BENTOML.parent / "churn-pipeline-metrics"), "--port", str(port)],
            env={**os.environ, "CHURN_HOME": str(home.root)},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while not answers(f"http://127.0.0.1:{port}/metrics"):
            assert process.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "churn-pipeline-metrics did not answer"
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert process.returncode == 0, log.read_text()[-2000:]


def answers(url: str) -> bool:
    """Whether `url` answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def query(url: str, expression: str) -> list[dict[str, Any]]:
    """The instant-query result of `expression` (raises on a query Prometheus refuses)."""
    address = f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expression})}"
    with urllib.request.urlopen(address, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def wait_for(url: str, expression: str, timeout: float = 90) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        result = query(url, expression)
        if result or time.monotonic() > deadline:
            return result
        time.sleep(1)


def postgres_admin() -> Any:
    """An autocommit connection to the machine's PostgreSQL, or a skip saying why there is none."""
    import psycopg2
    import pytest

    try:
        connection = psycopg2.connect(POSTGRES, connect_timeout=3)
    except psycopg2.OperationalError as error:
        pytest.skip(f"no PostgreSQL at {POSTGRES} ({str(error).strip()}); .ci/run starts one")
    connection.autocommit = True
    return connection


@contextmanager
def postgres_database(prefix: str) -> Iterator[str]:
    """A new database on the machine's PostgreSQL (its URL), dropped afterwards."""
    import uuid

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    connection = postgres_admin()
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{POSTGRES.rsplit('/', 1)[0]}/{name}"
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        connection.close()


def mlflow_server(store: str, port: int, artifacts: Path | None = None) -> subprocess.Popen[bytes]:
    """A real `mlflow server` on `store` (a backend URI) at `port`, answering /health.

    Started in its own session, so that `stop` ends it with its workers. With `artifacts`, it
    serves the artifacts stored there (clients upload and download through it).
    """
    served = ["--serve-artifacts", "--artifacts-destination", str(artifacts)] if artifacts else []
    process = subprocess.Popen(
        [str(BENTOML.parent / "mlflow"), "server", "--backend-store-uri", store,
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1", *served],
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not answers(f"http://127.0.0.1:{port}/health"):
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            raise AssertionError(f"mlflow server on {store} did not start")
        time.sleep(0.25)
    return process


def wait_http(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Wait until `url` answers 200; fail with the log's tail if `process` exits or time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {timeout:g} s:\n{log.read_text()[-3000:]}")


def terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as an orchestrator stops a server; SIGKILL after 30 s."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def build_bento(store: Path) -> Path:
    """`bentoml build` from the repository into the BentoML home `store`; the Bento's folder."""
    completed = subprocess.run(
        [str(BENTOML), "build", "--output", "tag"],
        cwd=REPOSITORY,
        env={**os.environ, "BENTOML_HOME": str(store), "BENTOML_DO_NOT_TRACK": "True"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    [bento] = [path for path in (store / "bentos" / "churn-service").iterdir() if path.is_dir()]
    return bento


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a process started in its own session, with its children."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


def stop_group(group: int, timeout: float = 30) -> None:
    """SIGTERM what is left of a process group (its leader may have exited), SIGKILL it after
    `timeout` seconds."""

    def alive() -> bool:
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            if int(fields[2]) == group and fields[0] != "Z":
                return True
        return False

    deadline = time.monotonic() + timeout
    try:
        os.killpg(group, signal.SIGTERM)
        while alive():
            if time.monotonic() > deadline:
                os.killpg(group, signal.SIGKILL)
                return
            time.sleep(0.2)
    except ProcessLookupError:
        pass  # nothing (more) of it is running


@contextmanager
def small_disk(folder: Path, size: str = "2m") -> Iterator[Path]:
    """A real tmpfs of `size` mounted on `folder` (root only: skips elsewhere)."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}): needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> Path:
    """Take every free byte of the disk under `folder` (a disk already full is left as it is)."""
    import errno
    import uuid

    filler = folder / f".filler-{uuid.uuid4().hex[:8]}"
    try:
        # Unbuffered: a buffered file would try the bytes it holds again when closed, and fail.
        output = open(filler, "wb", buffering=0)  # noqa: SIM115 - closed below
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        return filler  # not even room for an empty file: full already
    with output:
        try:
            while True:
                output.write(b"\0" * 65_536)
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
    return filler


def fuzz_api(
    url: str, folder: Path, headers: dict[str, str] | None = None, examples: int = 250
) -> int:
    """Run schemathesis, every check, positive and negative data, against a running service.

    Fails with schemathesis's report (each failure with its `curl` reproduction) unless every
    generated case passed; returns how many were generated. `CHURN_API_FUZZ_EXAMPLES` (per
    operation) and `CHURN_API_FUZZ_SEED` (1: the same cases on every CI run) override.
    """
    import re

    command = [
        str(BENTOML.parent / "st"), "run", f"{url}/docs.json", "--url", url,
        "--checks", "all",
        "--max-examples", os.environ.get("CHURN_API_FUZZ_EXAMPLES", str(examples)),
        "--seed", os.environ.get("CHURN_API_FUZZ_SEED", "1"),
        "--generation-database", "none", "--no-color",
    ]  # fmt: skip
    for name, value in (headers or {}).items():
        command += ["--header", f"{name}: {value}"]
    fuzz = subprocess.run(
        command,
        cwd=folder,
        env={
            **os.environ,
            "SCHEMATHESIS_HOOKS": "churn_assets_tests.schemathesis_hooks",
            "PYTHONPATH": str(REPOSITORY),
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert fuzz.returncode == 0, fuzz.stdout[-6000:] + fuzz.stderr[-2000:]
    counted = re.search(r"(\d+) generated, (\d+) passed", fuzz.stdout)
    assert counted and counted[1] == counted[2], fuzz.stdout[-3000:]
    return int(counted[1])
