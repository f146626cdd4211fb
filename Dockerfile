# The churn platform's image: the Dagster code location (a gRPC code server on port 4000) by
# default; compose.yaml runs the same image as the Dagster webserver and daemon, the MLflow
# tracking server and the two prediction services, with another command (and their own health
# checks). It runs as the unprivileged user `churn`; what it writes lives in /var/lib/churn and
# /var/lib/mlflow (compose.yaml's named volumes).
#
# BASE is any Debian-based Python 3.11 image with python and pip on PATH; the tests build it on a
# base made from Debian's packages (churn_assets_tests/test_containers.py).
ARG BASE=python:3.11-slim
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GX_ANALYTICS_ENABLED=False \
    MLFLOW_DISABLE_TELEMETRY=true \
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
    BENTOML_DO_NOT_TRACK=True \
    DO_NOT_TRACK=1 \
    DAGSTER_DISABLE_TELEMETRY=true \
    CHURN_HOME=/var/lib/churn \
    DAGSTER_HOME=/opt/dagster

# LightGBM's wheel needs the OpenMP runtime, which the slim image lacks.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --user-group --home-dir /var/lib/churn --no-create-home \
        --shell /usr/sbin/nologin churn \
    && mkdir -p "$CHURN_HOME" /var/lib/mlflow "$DAGSTER_HOME" \
    && chown churn:churn "$CHURN_HOME" /var/lib/mlflow "$DAGSTER_HOME"

WORKDIR /opt/churn
EXPOSE 4000
HEALTHCHECK --interval=10s --timeout=10s --start-period=60s --retries=5 \
    CMD ["dagster", "api", "grpc-health-check", "-p", "4000"]
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "churn_assets.definitions"]

# The embedded instance by default; compose.yaml mounts deploy/dagster-production.yaml over it,
# and its webserver and daemon load deploy/workspace.docker.yaml. bentofile.yaml names the service
# `bentoml serve` starts (compose's serving-* commands).
COPY workspace.yaml dagster.yaml bentofile.yaml ./
COPY deploy/workspace.docker.yaml deploy/dagster-production.yaml ./deploy/
COPY --chown=churn:churn dagster.yaml $DAGSTER_HOME/dagster.yaml

# Installed from the pinned constraints; CI runs this same install command
# (churn_assets_tests/test_deployment.py) and builds the image (test_containers.py).
COPY pyproject.toml constraints.txt README.md ./
COPY churn ./churn
COPY churn_assets ./churn_assets
COPY serving ./serving
RUN python -m pip install -c constraints.txt .

USER churn
