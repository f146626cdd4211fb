"""Packaging and CI files, checked by real parsers (test_containers.py builds and runs them).

- the compose file by `docker-compose config` (Debian's docker-compose, .ci/system-services
  installs it), plus what a reviewer would check by eye;
- the Dockerfile by BuildKit's own parser (the `dockerfile` package): its base, its install
  command from the pinned constraints and what it copies (the real build, and the installed
  package loading its code location, are in test_containers.py);
- the GitHub Actions workflow, whose quality job must run exactly what `.ci/run` runs;
- the pre-commit configuration, by `pre-commit validate-config`, against `make lint`.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import dockerfile
import pytest
import yaml

from churn_assets_tests.conftest import REPOSITORY

# Starts servers or processes, or runs the whole pipeline: not in `make check`.
pytestmark = pytest.mark.servers

COMPOSE = REPOSITORY / "compose.yaml"
SECRETS = {"POSTGRES_PASSWORD": "test-only", "GRAFANA_ADMIN_PASSWORD": "test-only"}
SERVICES = {
    "postgres",
    "mlflow",
    "code-location",
    "dagster-webserver",
    "dagster-daemon",
    "serving-production",
    "serving-staging",
    "pipeline-metrics",
    "prometheus",
    "alertmanager",
    "grafana",
    "dask-scheduler",
    "dask-worker",
}


def compose_config(environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (.ci/system-services installs it)")
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config"],
        cwd=REPOSITORY,
        env={**clean, **environment},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_compose_stack_is_valid_and_complete() -> None:
    result = compose_config(SECRETS)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    services: dict[str, Any] = resolved["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no health check"
    assert set(resolved["volumes"]) == {
        "postgres-data",
        "mlflow-artifacts",
        "churn-home",
        "prometheus-data",
        "alertmanager-data",
        "grafana-data",
    }
    published = {
        name: {int(port["published"]) for port in service.get("ports", [])}
        for name, service in services.items()
    }
    assert published["serving-production"] == {8000}
    assert published["serving-staging"] == {8001}
    assert published["dagster-webserver"] == {3000}
    production = services["serving-production"]["environment"]
    assert production["CHURN_SERVING_ALIAS"] == "production"
    assert services["serving-staging"]["environment"]["CHURN_SERVING_ALIAS"] == "staging"
    # One BentoML home each: they would otherwise share (and wipe) their metrics files.
    homes = {
        services[s]["environment"]["BENTOML_HOME"]
        for s in ("serving-production", "serving-staging")
    }
    assert len(homes) == 2
    # The production profile is chosen by the environment: Postgres-backed Dagster, MLflow server.
    assert production["DAGSTER_POSTGRES_URL"].startswith("postgresql+psycopg2://")
    assert production["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert any(
        str(volume).endswith("deploy/dagster-production.yaml:/opt/dagster/dagster.yaml:ro")
        for volume in services["dagster-daemon"]["volumes"]
    )
    # Every alert goes through Alertmanager: the pipeline's sensors post there too.
    assert published["alertmanager"] == {9093}
    for name in ("code-location", "dagster-daemon"):
        assert services[name]["environment"]["CHURN_ALERTMANAGER_URL"] == (
            "http://alertmanager:9093"
        )
    assert services["alertmanager"]["entrypoint"][:2] == ["/bin/sh", "/etc/alertmanager/render.sh"]
    # The pipeline's gauges come from the pipeline side, over the shared platform home.
    pipeline = services["pipeline-metrics"]
    assert pipeline["command"][0] == "churn-pipeline-metrics"
    assert any(
        str(v).endswith("/var/lib/churn") or "churn-home" in str(v) for v in pipeline["volumes"]
    )
    assert "prometheus" in services and "pipeline-metrics" in services["prometheus"]["depends_on"]
    # The heavy steps run on the stack's Dask cluster: the platform's image, two workers.
    for name in ("code-location", "dagster-daemon"):
        environment = services[name]["environment"]
        assert environment["CHURN_DASK_SCHEDULER"] == "tcp://dask-scheduler:8786"
    assert services["dask-scheduler"]["image"] == services["code-location"]["image"]
    assert services["dask-worker"]["image"] == services["code-location"]["image"]
    assert services["dask-worker"]["command"][:3] == ["dask", "worker", "tcp://dask-scheduler:8786"]
    assert int(services["dask-worker"]["scale"]) == 2
    assert "dask-scheduler" in services["code-location"]["depends_on"]


def test_an_empty_scheduler_setting_runs_the_stack_without_its_cluster() -> None:
    result = compose_config(SECRETS | {"CHURN_DASK_SCHEDULER": ""})
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert services["code-location"]["environment"]["CHURN_DASK_SCHEDULER"] == ""


def test_the_compose_file_holds_no_secret_and_refuses_to_start_without_them() -> None:
    text = COMPOSE.read_text()
    assert "test-only" not in text
    for line in text.splitlines():
        if re.search(r"PASSWORD\s*:", line):
            assert "${" in line, f"a password written in the file: {line.strip()}"
    result = compose_config({})
    assert result.returncode != 0
    assert "set POSTGRES_PASSWORD" in result.stderr


def dockerfile_commands() -> list[Any]:
    return list(dockerfile.parse_file(str(REPOSITORY / "Dockerfile")))


def pip_installs() -> list[str]:
    return [
        command.value[0]
        for command in dockerfile_commands()
        if command.cmd == "RUN" and "pip install" in command.value[0]
    ]


def test_the_dockerfile_parses_and_installs_from_the_pinned_constraints() -> None:
    commands = dockerfile_commands()
    # The base users get by default; the container test passes another one (BASE).
    assert commands[0].cmd == "ARG" and commands[0].value == ("BASE=python:3.11-slim",)
    assert commands[1].cmd == "FROM" and commands[1].value == ("${BASE}",)
    [install] = pip_installs()
    assert install == "python -m pip install -c constraints.txt ."
    copied = [value for command in commands if command.cmd == "COPY" for value in command.value]
    for needed in (
        "pyproject.toml",
        "constraints.txt",
        "churn",
        "churn_assets",
        "serving",
        "bentofile.yaml",
        "deploy/workspace.docker.yaml",
    ):
        assert needed in copied
    [cmd] = [command for command in commands if command.cmd == "CMD"]
    assert cmd.json and cmd.value[:3] == ("dagster", "code-server", "start")


def test_the_workflows_quality_job_runs_exactly_what_ci_runs() -> None:
    workflow = yaml.safe_load((REPOSITORY / ".github" / "workflows" / "ci.yml").read_text())
    jobs = workflow["jobs"]
    commands = [step["run"].strip() for step in jobs["quality"]["steps"] if "run" in step]
    assert commands == ["bash .ci/run"]
    ci = (REPOSITORY / ".ci" / "run").read_text()
    assert "make lint" in ci and "make test" in ci
    makefile = (REPOSITORY / "Makefile").read_text()
    recipe = re.search(r"^test: install\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe and recipe[1].lstrip().startswith("$(BIN)/pytest ") and "--cov=" in recipe[1]
    packaging = " ".join(step.get("run", "") for step in jobs["train-and-package"]["steps"])
    for needed in ("make materialize", "make bento", "docker build"):
        assert needed in packaging
    assert jobs["train-and-package"]["needs"] == "quality"


def test_pre_commit_runs_the_same_linters_as_make_lint() -> None:
    config = REPOSITORY / ".pre-commit-config.yaml"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "pre-commit"), "validate-config", str(config)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    hooks = [hook for repo in yaml.safe_load(config.read_text())["repos"] for hook in repo["hooks"]]
    entries = {hook["entry"].replace(".venv/bin/", "") for hook in hooks}
    makefile = (REPOSITORY / "Makefile").read_text()
    lint = re.search(r"^lint: install[^\n]*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert lint is not None
    # pre-commit passes the changed files where `make lint` names the whole tree (`.`).
    recipe = {
        line.strip().replace("$(BIN)/", "").removesuffix(" .")
        for line in lint.group(1).splitlines()
    }
    assert entries == recipe
