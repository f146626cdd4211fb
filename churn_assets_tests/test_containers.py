"""The container stack for real: the image built from `Dockerfile`, `compose.yaml` brought up.

What a user gets from `docker compose up`, run on this machine: PostgreSQL, the MLflow server, the
Dagster code location, webserver and daemon, both prediction services, Alertmanager and
Prometheus, from the compose file users run, with an override that only swaps images (built here,
there is no registry) while the host ports come from compose.yaml's own *_PORT variables. Grafana
is not run: Debian does not package it.

The Docker engine is the one that answers, or a `dockerd` this module starts as root (and stops
afterwards). The base images are made from Debian's packages (`debootstrap`, then the Dockerfiles
in `containers/`) and kept between runs; the platform image is built from `Dockerfile` each run
(the layer cache reuses what did not change). Without an engine that can start, the test skips
saying why; CI installs one (.ci/system-services).
"""

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from churn_assets_tests.conftest import QUICK_TRAINING, REPOSITORY, free_port

pytestmark = [pytest.mark.containers, pytest.mark.servers]

CONTAINERS = Path(__file__).parent / "containers"
DEBIAN = "churn-test/debian:bookworm"
SOCKET = Path("/var/run/docker.sock")


def apt_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this machine's apt uses for `bookworm` (deb822 or one-line sources).

    CHURN_TEST_DEBIAN_MIRROR overrides it; with no source for bookworm, Debian's own address.
    """
    configured = os.environ.get("CHURN_TEST_DEBIAN_MIRROR")
    if configured:
        return configured
    files = [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*.sources"))]
    for path in files:
        text = path.read_text() if path.is_file() else ""
        for stanza in text.split("\n\n"):
            fields = dict(
                line.split(":", 1) for line in stanza.splitlines() if ":" in line and line[0] != "#"
            )
            suites = fields.get("Suites", "").split()
            if "bookworm" in suites and "main" in fields.get("Components", "").split():
                return fields["URIs"].split()[0]
        for line in text.splitlines():
            parts = line.split()
            if parts[:1] == ["deb"] and "bookworm" in parts and "main" in parts:
                return next(part for part in parts[1:] if "://" in part)
    return "http://deb.debian.org/debian"


# The stand-ins for the images users pull, built from Debian's packages: (tag, Dockerfile, target).
STAND_INS = (
    ("churn-test/python:3.11", "python.Dockerfile", None),
    ("churn-test/postgres:15", "postgres.Dockerfile", None),
    ("churn-test/prometheus", "prometheus.Dockerfile", "prometheus"),
    ("churn-test/alertmanager", "prometheus.Dockerfile", "alertmanager"),
)
PLATFORM = "churn-platform:test"
# Every service of compose.yaml but Grafana, which Debian does not package.
STACK = tuple(
    name
    for name in yaml.safe_load((REPOSITORY / "compose.yaml").read_text())["services"]
    if name != "grafana"
)
# The host ports compose.yaml takes from the environment (Grafana's aside).
PORTS = (
    "DAGSTER_PORT",
    "MLFLOW_PORT",
    "PRODUCTION_PORT",
    "STAGING_PORT",
    "PROMETHEUS_PORT",
    "ALERTMANAGER_PORT",
    "DASK_DASHBOARD_PORT",
)


def run(command: list[str], timeout: float, **options: Any) -> subprocess.CompletedProcess[str]:
    """Run `command`; fail the test with its output's tail if it fails."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, **options)
    assert result.returncode == 0, (
        f"{' '.join(command[:4])}... failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


def engine_answers(timeout: float = 30) -> bool:
    try:
        probe = subprocess.run(["docker", "info"], capture_output=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def engine_running() -> bool:
    """A `dockerd` process already runs (answering or not yet): never start a second one.

    A second daemon started beside a running one takes the socket over, then removes it when it
    fails, and the first can no longer be reached.
    """
    found = subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True, timeout=30)
    return found.returncode == 0


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A Docker engine that answers: the running one, or a `dockerd` started (and stopped) here."""
    if shutil.which("docker") is None:
        pytest.skip("no docker client (.ci/system-services installs Debian's docker.io)")
    if engine_answers():
        yield
        return
    if engine_running():
        # Busy, or starting: wait for the daemon that runs rather than start another.
        deadline = time.monotonic() + 180
        while not engine_answers(timeout=60):
            if time.monotonic() > deadline:
                pytest.fail("a dockerd runs but has not answered `docker info` for 3 minutes")
            time.sleep(2)
        yield
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        pytest.skip("no Docker engine answers and dockerd is not installed (Debian's docker.io)")
    if os.geteuid() != 0:
        pytest.skip("no Docker engine answers and starting dockerd needs root")
    log = tmp_path_factory.mktemp("dockerd") / "dockerd.log"
    with log.open("wb") as output:
        daemon = subprocess.Popen(
            [dockerd], stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 60
    while not engine_answers():
        if daemon.poll() is not None or time.monotonic() > deadline:
            daemon.terminate()
            daemon.wait(timeout=30)
            pytest.skip(f"dockerd could not start here: {log.read_text()[-1500:]}")
        time.sleep(1)
    try:
        yield
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)


def image_exists(name: str) -> bool:
    probe = subprocess.run(["docker", "image", "inspect", name], capture_output=True, timeout=30)
    return probe.returncode == 0


def build(tag: str, dockerfile: Path, context: Path, *options: str) -> None:
    # The classic builder: Debian's docker.io has no buildx plugin for BuildKit.
    environment = {**os.environ, "DOCKER_BUILDKIT": "0"}
    command = ["docker", "build", "-q", "-f", str(dockerfile), "-t", tag, *options, str(context)]
    run(command, timeout=1800, env=environment)


def debian_base(scratch: Path) -> None:
    """`churn-test/debian:bookworm`: Debian's minimal base system, imported once per machine."""
    if image_exists(DEBIAN):
        return
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        pytest.skip("debootstrap is not installed: no base image can be made (no registry here)")
    rootfs = scratch / "rootfs"
    run([debootstrap, "--variant=minbase", "bookworm", str(rootfs), apt_mirror()], timeout=900)
    for package in (rootfs / "var" / "cache" / "apt" / "archives").glob("*.deb"):
        package.unlink()
    archive = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    run(["docker", "import", "-", DEBIAN], timeout=600, stdin=archive.stdout)
    assert archive.wait(timeout=60) == 0
    shutil.rmtree(rootfs)


@pytest.fixture(scope="module")
def images(engine: None) -> Iterator[None]:
    """The stand-in base images and the platform image, built from `Dockerfile` on them."""
    with tempfile.TemporaryDirectory(prefix="churn-images-") as scratch:
        debian_base(Path(scratch))
        context = Path(scratch) / "context"
        shutil.copytree(CONTAINERS, context)
        # pip in the stand-in Python image reaches the index through this machine's proxy.
        bundle = os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt"
        shutil.copy(bundle, context / "host-ca-certificates.crt")
        for tag, dockerfile, target in STAND_INS:
            build(tag, context / dockerfile, context, *(("--target", target) if target else ()))
    build(
        PLATFORM,
        REPOSITORY / "Dockerfile",
        REPOSITORY,
        "--build-arg",
        f"BASE={STAND_INS[0][0]}",
    )
    yield


def inspect(image: str, field: str) -> Any:
    result = run(["docker", "image", "inspect", "-f", f"{{{{json {field}}}}}", image], timeout=30)
    return json.loads(result.stdout)


class Stack:
    """The compose project: its command line, environment and host ports."""

    def __init__(self) -> None:
        self.project = f"churntest{secrets.token_hex(4)}"
        self.ports = {name: free_port() for name in PORTS}
        self.environment = {
            **os.environ,
            **{name: str(port) for name, port in self.ports.items()},
            "POSTGRES_PASSWORD": secrets.token_urlsafe(16),
            "GRAFANA_ADMIN_PASSWORD": secrets.token_urlsafe(16),
            # Creating a container on the vfs storage driver copies its whole image: on a busy
            # machine that outlasts compose's default 60 s read timeout.
            "COMPOSE_HTTP_TIMEOUT": "600",
            "DOCKER_CLIENT_TIMEOUT": "600",
        }

    def command(self, *arguments: str) -> list[str]:
        files = [
            "-f",
            str(REPOSITORY / "compose.yaml"),
            "-f",
            str(CONTAINERS / "compose.test.yaml"),
        ]
        return ["docker-compose", "-p", self.project, *files, *arguments]

    def compose(self, *arguments: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return run(self.command(*arguments), timeout=timeout, env=self.environment, cwd=REPOSITORY)

    def url(self, port: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[port]}{path}"

    def health(self) -> dict[str, list[str]]:
        """Each service's containers' statuses (`Up 20 seconds (healthy)`...): the Dask workers
        are two containers of one service."""
        project = f"label=com.docker.compose.project={self.project}"
        columns = '{{.Label "com.docker.compose.service"}}\t{{.Status}}'
        listing = run(["docker", "ps", "-a", "--filter", project, "--format", columns], timeout=60)
        statuses: dict[str, list[str]] = {}
        for line in listing.stdout.splitlines():
            if "\t" in line:
                service, status = line.split("\t", 1)
                statuses.setdefault(service, []).append(status)
        return statuses

    def healthy(self) -> bool:
        """Every container of the stack is up and healthy, both Dask workers included."""
        statuses = self.health()
        return len(statuses.get("dask-worker", [])) == 2 and all(
            statuses.get(name) and all("(healthy)" in s for s in statuses[name]) for name in STACK
        )

    def logs(self) -> str:
        """The last lines of every service's log, for a failure's message."""
        result = subprocess.run(
            self.command("logs", "--no-color", "--tail=40"),
            capture_output=True,
            text=True,
            timeout=120,
            env=self.environment,
            cwd=REPOSITORY,
        )
        return result.stdout[-12000:]


@pytest.fixture(scope="module")
def stack(images: None) -> Iterator[Stack]:
    """The stack up (each service healthy before what depends on it starts), then down with its
    volumes."""
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (.ci/system-services installs it)")
    stack = Stack()
    try:
        stack.compose("up", "-d", *STACK, timeout=900)
        wait_until(
            "every service of the stack is healthy",
            stack.healthy,
            stack,
            timeout=300,
        )
        yield stack
    finally:
        stack.compose("down", "--volumes", "--remove-orphans", timeout=300)
        left = run(["docker", "volume", "ls", "-q"], timeout=60).stdout.split()
        assert not [volume for volume in left if volume.startswith(stack.project)]


def get_json(url: str, body: Any = None) -> tuple[int, Any]:
    """Status and JSON body of a GET (or a POST of `body`); (0, None) when nothing answers."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")
    except OSError:
        return 0, None


def wait_until(what: str, check: Any, stack: Stack, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} within {timeout:.0f} s\n{stack.logs()}"
        time.sleep(2)


def served(stack: Stack) -> dict[str, Any] | None:
    """What the production service's `GET /model` says, once it serves a model."""
    status, body = get_json(stack.url("PRODUCTION_PORT", "/model"))
    return body if status == 200 else None


def customers() -> list[dict[str, Any]]:
    """Five customers of the built-in data set as a client sends them (normalised names)."""
    from churn.normalise import normalise
    from churn_assets.ingestion.synthetic import generate_customers

    frame, _ = normalise(generate_customers(5, seed=2026), target="Churn")
    records: list[dict[str, Any]] = json.loads(
        frame.drop(columns=["churn"]).to_json(orient="records")
    )
    return records


def test_the_image_runs_as_an_unprivileged_user_with_a_health_check(images: None) -> None:
    assert inspect(PLATFORM, ".Config.User") == "churn"
    assert inspect(PLATFORM, ".Config.Healthcheck.Test")[-4:] == [
        "api",
        "grpc-health-check",
        "-p",
        "4000",
    ]
    identity = run(["docker", "run", "--rm", PLATFORM, "id", "-u"], timeout=120)
    assert identity.stdout.strip() == "10001"
    # The installed (not editable) package loads its code location outside the repository.
    definitions = ["dagster", "definitions", "validate", "-m", "churn_assets.definitions"]
    run(["docker", "run", "--rm", "-w", "/tmp", PLATFORM, *definitions], timeout=300)
    size = inspect(PLATFORM, ".Size")
    print(f"platform image: {size / 1e9:.2f} GB on the stand-in base")


def test_the_compose_stack_trains_serves_is_scraped_and_keeps_its_state(stack: Stack) -> None:
    from dagster_graphql import DagsterGraphQLClient

    # The pipeline launched through the webserver, queued by the daemon, run by the code server.
    client = DagsterGraphQLClient("127.0.0.1", port_number=stack.ports["DAGSTER_PORT"])
    # Tuned on 2,000 rows, so that the selected model is refitted on all of them, on the cluster.
    training = {**QUICK_TRAINING, "max_tuning_rows": 2_000}
    run_id = client.submit_job_execution(
        "churn_pipeline", run_config={"ops": {"candidate_models": {"config": training}}}
    )
    finished = {"SUCCESS", "FAILURE", "CANCELED"}
    status = wait_until(
        "the pipeline run finishes",
        lambda: (value := client.get_run_status(run_id).value) in finished and value,
        stack,
        timeout=900,
    )
    assert status == "SUCCESS", stack.logs()

    # The refit on all rows ran on the stack's Dask cluster, as MLflow recorded it (asked from
    # inside the compose network, where the tracking server's allowed hosts are).
    refits = stack.compose(
        "exec",
        "-T",
        "code-location",
        "python",
        "-c",
        "import mlflow; print(len(mlflow.search_runs(search_all_experiments=True, "
        "filter_string=\"params.fit_engine = 'Dask cluster at tcp://dask-scheduler:8786'\")))",
        timeout=120,
    )
    assert int(refits.stdout.split()[-1]) >= 1, f"no refit ran on the cluster\n{stack.logs()}"

    # The production service picks the promoted version up from the MLflow server.
    model = wait_until(
        "the production service serves a model", lambda: served(stack), stack, timeout=180
    )
    assert model["model_alias"] == "production" and model["model_version"] == "1"
    status, answer = get_json(stack.url("PRODUCTION_PORT", "/predict"), {"records": customers()})
    assert status == 200, answer
    assert len(answer) == 5
    assert all(0 <= p["churn_probability"] <= 1 and p["model_version"] == "1" for p in answer)

    # Prometheus scrapes both services and the pipeline's gauges over the compose network.
    def all_up() -> bool:
        status, body = get_json(stack.url("PROMETHEUS_PORT", "/api/v1/targets"))
        if status != 200:
            return False
        health = {
            (target["labels"].get("job"), target["labels"].get("deployment")): target["health"]
            for target in body["data"]["activeTargets"]
        }
        return all(
            health.get(target) == "up"
            for target in (
                ("churn-serving", "production"),
                ("churn-serving", "staging"),
                ("churn-pipeline", "production"),
                ("dask", None),
            )
        )

    wait_until("Prometheus sees both services and the pipeline's gauges up", all_up, stack, 120)

    # The production container restarted: the same version comes back from the named volumes.
    stack.compose("restart", "serving-production", timeout=300)
    again = wait_until(
        "the restarted production service serves a model", lambda: served(stack), stack, 180
    )
    assert again["loaded_at"] != model["loaded_at"], "the service was not restarted"
    assert (again["model_version"], again["run_id"]) == (model["model_version"], model["run_id"])
