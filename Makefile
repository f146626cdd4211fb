# The churn platform's commands. `make up` brings the platform up on the embedded default;
# `make test` runs the tests. Both create the virtual environment and install what they need.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin

# Everything the platform writes at run time lives under CHURN_HOME (git-ignored).
export CHURN_HOME ?= $(CURDIR)/.churn
export DAGSTER_HOME ?= $(CHURN_HOME)/dagster
# No network: every library's telemetry stays off.
export GX_ANALYTICS_ENABLED := False
export MLFLOW_DISABLE_TELEMETRY := true
export BENTOML_DO_NOT_TRACK := True
export DO_NOT_TRACK := 1
export DAGSTER_DISABLE_TELEMETRY := true
# MLflow servers start without their job runner (GenAI trace scorers and rollups, which the
# platform does not use): 8 fewer processes per server.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION := false
# Bentos built by `make bento` stay under the platform home.
export BENTOML_HOME ?= $(CHURN_HOME)/bentoml

DAGSTER_HOST ?= 127.0.0.1
DAGSTER_PORT ?= 3000
MLFLOW_HOST ?= 127.0.0.1
MLFLOW_PORT ?= 5000
MLFLOW_STORE := sqlite:///$(CHURN_HOME)/mlflow/mlflow.db
SERVING_HOST ?= 127.0.0.1
PRODUCTION_PORT ?= 8000
STAGING_PORT ?= 8001
PIPELINE_METRICS_PORT ?= 9108
# With no tracking server configured, `make up` serves the local store's UI and links point there.
ifeq ($(strip $(MLFLOW_TRACKING_URI)),)
LOCAL_MLFLOW_UI := http://$(MLFLOW_HOST):$(MLFLOW_PORT)
export MLFLOW_UI_URL ?= $(LOCAL_MLFLOW_UI)
endif

.PHONY: install instance materialize up scores mlflow-server serve bento test check lint format constraints clean

install: $(BIN)/.installed

# The pinned set (constraints.txt) is installed by uv, itself pinned there and installed into the
# environment by pip first: about 10 s from an empty cache where pip takes minutes. Where uv cannot
# run (no wheel for the platform), or with INSTALLER=pip, pip installs the same set.
INSTALLER ?= uv
PIP_INSTALL := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt
$(BIN)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
ifeq ($(INSTALLER),uv)
	($(PIP_INSTALL) uv && $(BIN)/uv pip install --quiet --python $(BIN)/python \
		-c constraints.txt -e '.[dev]') || $(PIP_INSTALL) -e '.[dev]'
else
	$(PIP_INSTALL) -e '.[dev]'
endif
	touch $@

# CHURN_PROFILE picks the Dagster instance: `embedded` (SQLite under $DAGSTER_HOME, the default)
# or `production` (PostgreSQL at DAGSTER_POSTGRES_URL; see README, "Production profile").
CHURN_PROFILE ?= embedded
ifeq ($(CHURN_PROFILE),production)
INSTANCE_CONFIG := deploy/dagster-production.yaml
else ifeq ($(CHURN_PROFILE),embedded)
INSTANCE_CONFIG := dagster.yaml
else
$(error CHURN_PROFILE must be embedded or production, not $(CHURN_PROFILE))
endif

instance:
	@mkdir -p $(DAGSTER_HOME)
	@cp $(INSTANCE_CONFIG) $(DAGSTER_HOME)/dagster.yaml

## Run the training pipeline once (ingestion to registry) on the configured data set (built-in
## by default). The monitoring assets need production traffic: the sensors run them.
## Its log goes to $(CHURN_HOME)/logs/materialize.log; the last lines are shown if it fails.
## A version the quality gates (or a schema change) keep from production is not a failure: it
## is on staging, and each failed gate is printed with its observed and required values.
materialize: install instance
	@mkdir -p $(CHURN_HOME)/logs
	@echo "Running churn_pipeline once (log: $(CHURN_HOME)/logs/materialize.log)..."
	@started=$$(date +%s); \
	if $(BIN)/dg launch --job churn_pipeline > $(CHURN_HOME)/logs/materialize.log 2>&1; then \
		echo "churn_pipeline succeeded: $$(grep -c 'STEP_SUCCESS' $(CHURN_HOME)/logs/materialize.log) steps."; \
	elif $(BIN)/churn-registry blocked --since $$started; then \
		echo "churn_pipeline stopped at the quality gates (log: $(CHURN_HOME)/logs/materialize.log)."; \
	else \
		$(BIN)/python -m churn_assets.failures churn_pipeline \
			|| tail -n 30 $(CHURN_HOME)/logs/materialize.log; \
		echo "churn_pipeline failed: see $(CHURN_HOME)/logs/materialize.log"; exit 1; \
	fi

## Set up, materialize once, then start Dagster (webserver and daemon), the MLflow UI and the
## production and staging prediction services. Ctrl-C stops them all.
## Dagster's dev server maps SIGTERM onto its SIGINT handler, and a command a script sends to the
## background (or one started under nohup) ignores SIGINT: it would outlive both Ctrl-C and the
## `kill 0` that stops the rest. So `dg dev` runs in the foreground, with SIGINT's default handler.
DEFAULT_SIGINT := $(BIN)/python -c 'import os, signal, sys; \
	signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])'
up: materialize
	@mkdir -p $(CHURN_HOME)/logs
	@trap 'exit 130' INT TERM; trap 'kill 0' EXIT; \
	logs=$(CHURN_HOME)/logs; \
	announce() { \
		for _ in $$(seq 1 180); do \
			if $(BIN)/python -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$$2" 2> /dev/null; then \
				printf '  %-20s %s\n' "$$1" "$$3"; return; \
			fi; \
			sleep 1; \
		done; \
		printf '  %-20s did not answer within 3 minutes: see %s\n' "$$1" "$$4"; \
	}; \
	if [ -n "$(LOCAL_MLFLOW_UI)" ]; then \
		$(BIN)/mlflow ui --backend-store-uri $(MLFLOW_STORE) \
			--host $(MLFLOW_HOST) --port $(MLFLOW_PORT) > $$logs/mlflow.log 2>&1 & \
		announce "MLflow UI" $(LOCAL_MLFLOW_UI)/health $(LOCAL_MLFLOW_UI) $$logs/mlflow.log & \
	else \
		echo "  MLflow UI            $${MLFLOW_UI_URL:-$(MLFLOW_TRACKING_URI)}"; \
	fi; \
	CHURN_SERVING_ALIAS=production BENTOML_HOME=$(CHURN_HOME)/serving/production/bentoml \
		$(BIN)/bentoml serve --host $(SERVING_HOST) --port $(PRODUCTION_PORT) \
		> $$logs/serving-production.log 2>&1 & \
	CHURN_SERVING_ALIAS=staging BENTOML_HOME=$(CHURN_HOME)/serving/staging/bentoml \
		$(BIN)/bentoml serve --host $(SERVING_HOST) --port $(STAGING_PORT) \
		> $$logs/serving-staging.log 2>&1 & \
	$(BIN)/churn-pipeline-metrics --host $(SERVING_HOST) --port $(PIPELINE_METRICS_PORT) \
		> $$logs/pipeline-metrics.log 2>&1 & \
	echo; \
	echo "Starting the platform; logs in $$logs, Ctrl-C stops everything. Each address as it answers:"; \
	announce "Production service" http://$(SERVING_HOST):$(PRODUCTION_PORT)/livez \
		"http://$(SERVING_HOST):$(PRODUCTION_PORT)  (Swagger UI)" $$logs/serving-production.log & \
	announce "Staging service" http://$(SERVING_HOST):$(STAGING_PORT)/livez \
		http://$(SERVING_HOST):$(STAGING_PORT) $$logs/serving-staging.log & \
	announce "Dagster UI" http://$(DAGSTER_HOST):$(DAGSTER_PORT)/server_info \
		http://$(DAGSTER_HOST):$(DAGSTER_PORT) $$logs/dagster.log & \
	announce "Pipeline metrics" http://$(SERVING_HOST):$(PIPELINE_METRICS_PORT)/metrics \
		http://$(SERVING_HOST):$(PIPELINE_METRICS_PORT)/metrics $$logs/pipeline-metrics.log & \
	$(DEFAULT_SIGINT) $(BIN)/dg dev --host $(DAGSTER_HOST) --port $(DAGSTER_PORT) \
		> $$logs/dagster.log 2>&1

## The production profile's MLflow tracking server, in the foreground: a PostgreSQL backend store
## (MLFLOW_BACKEND_STORE_URI, postgresql+psycopg2://...) and served artifacts (in
## MLFLOW_ARTIFACTS_DESTINATION, a folder or an s3:// or gs:// URI).
mlflow-server: install
	$(BIN)/mlflow server \
		--backend-store-uri "$${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI}" \
		--artifacts-destination "$${MLFLOW_ARTIFACTS_DESTINATION:-$(CHURN_HOME)/mlflow-server}" \
		--host $(MLFLOW_HOST) --port $(MLFLOW_PORT)

## Score today's partition of customer_scores now (the nightly scores), on this platform home.
## CHURN_SCORING_SOURCE scores another customer list instead.
scores: install instance
	$(BIN)/dg launch --assets customer_scores --partition "$$(date -u +%F)"

## Serve one alias in the foreground (CHURN_SERVING_ALIAS, default production) on PORT.
serve: install
	$(BIN)/bentoml serve --host $(SERVING_HOST) --port $${PORT:-$(PRODUCTION_PORT)}

## Package the service as a Bento (under $(BENTOML_HOME)).
bento: install
	$(BIN)/bentoml build

## Run the tests.
## Two pytest workers (one per core); a test module stays on one worker, so its fixtures are
## built once; modules start longest first (conftest.py). TEST_WORKERS=0 runs them in one process.
## PYTEST_ARGS goes to pytest as is: PYTEST_ARGS='-m "not containers"' leaves the container
## stack test out, PYTEST_ARGS=churn_assets_tests/test_serving.py runs one module.
TEST_WORKERS ?= 2
PYTEST_ARGS ?=
test: install
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder \
		--cov=churn --cov=churn_assets --cov=serving --cov-report=term:skip-covered --cov-report=xml \
		$(PYTEST_ARGS)

## The quick loop: lint, then the tests that start no server and run no whole pipeline (those
## marked `servers` are left out; `make test` runs everything).
check: lint
	$(BIN)/pytest -n $(TEST_WORKERS) --dist load -m "not servers" -q

## Format check, lint, type check and the Dagster definitions (`dg check defs` loads the code
## location and validates every definition), as CI runs them. `dg list defs` runs in the tests.
lint: install instance
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy churn churn_assets churn_assets_tests serving benchmarks
	$(BIN)/dg check defs

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## Re-pin constraints.txt from the current, verified environment, and the Bento's requirements
## (serving/requirements.txt) from it.
constraints: install
	$(BIN)/python -m pip freeze --exclude-editable --disable-pip-version-check \
		| grep -v '^-e ' > constraints.txt
	$(BIN)/python -m serving.requirements

clean:
	rm -rf $(CHURN_HOME)
