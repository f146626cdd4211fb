# The churn platform's code location: a Dagster gRPC code server on port 4000.
# The same image runs the webserver and the daemon with another command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GX_ANALYTICS_ENABLED=False \
    MLFLOW_DISABLE_TELEMETRY=true \
    BENTOML_DO_NOT_TRACK=True \
    DO_NOT_TRACK=1 \
    CHURN_HOME=/var/lib/churn \
    DAGSTER_HOME=/var/lib/churn/dagster

WORKDIR /opt/churn

# Dependencies first, pinned by the committed constraints, so code changes reuse this layer.
COPY pyproject.toml constraints.txt README.md ./
COPY churn_assets ./churn_assets
COPY serving ./serving
RUN python -m pip install -c constraints.txt .

COPY workspace.yaml dagster.yaml ./
RUN mkdir -p "$DAGSTER_HOME" && cp dagster.yaml "$DAGSTER_HOME/dagster.yaml"

EXPOSE 4000
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "churn_assets.definitions"]
