# The churn platform's image: the Dagster code location (a gRPC code server on port 4000) by
# default; compose.yaml runs the same image as the Dagster webserver and daemon, the MLflow
# tracking server and the two prediction services, with another command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GX_ANALYTICS_ENABLED=False \
    MLFLOW_DISABLE_TELEMETRY=true \
    BENTOML_DO_NOT_TRACK=True \
    DO_NOT_TRACK=1 \
    DAGSTER_DISABLE_TELEMETRY=true \
    CHURN_HOME=/var/lib/churn \
    DAGSTER_HOME=/opt/dagster

# LightGBM's wheel needs the OpenMP runtime, which the slim image lacks.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/churn

# Dependencies first, pinned by the committed constraints, so code changes reuse this layer.
# CI runs this same install command (churn_assets_tests/test_deployment.py).
COPY pyproject.toml constraints.txt README.md ./
COPY churn ./churn
COPY churn_assets ./churn_assets
COPY serving ./serving
RUN python -m pip install -c constraints.txt .

# The embedded instance by default; compose.yaml mounts deploy/dagster-production.yaml instead.
COPY workspace.yaml dagster.yaml ./
COPY deploy ./deploy
RUN mkdir -p "$DAGSTER_HOME" "$CHURN_HOME" && cp dagster.yaml "$DAGSTER_HOME/dagster.yaml"

EXPOSE 4000
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "churn_assets.definitions"]
