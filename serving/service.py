"""The churn prediction service: the registry's `production` (or `staging`) model over HTTP.

    bentoml serve                                   # production, from bentofile.yaml
    CHURN_SERVING_ALIAS=staging bentoml serve --port 8001

Endpoints: `POST /predict` (batched), `POST /feedback`, `GET /model`, BentoML's
`/livez`, `/readyz` (ready once a model is loaded), `/metrics` and the Swagger UI at `/`.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import bentoml
import numpy as np
import pyarrow as pa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from churn.home import Home
from churn.logs import (
    FEEDBACK,
    FEEDBACK_SCHEMA,
    PREDICTION_BASE_SCHEMA,
    PREDICTIONS,
)
from churn.parquet_log import ParquetLog
from churn.settings import settings
from churn.tracking import Tracking
from serving import openapi
from serving.batching import ContinuousBatcher
from serving.contract import (
    EXPLAIN,
    EXPLAIN_VALUES,
    SERVED_MODEL,
    FeedbackReceipt,
    FeedbackRequest,
    ModelCard,
    Outcome,
    Prediction,
    PredictRequest,
    max_records,
)
from serving.guard import RequestGuard
from serving.hardening import bound_metric_labels, quiet_client_errors
from serving.model import ModelWatcher, ServedModel, columns_of
from serving.telemetry import ServingMetrics

SETTINGS = settings().serving
logger = logging.getLogger(__name__)
# The watcher reads the alias again every few seconds: MLflow's own retries (7, with a backoff
# reaching minutes) would only hide an outage from /model and the metrics for that long.
for variable, value in (
    ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"),
    ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
    ("MLFLOW_HTTP_REQUEST_TIMEOUT", "10"),
):
    os.environ.setdefault(variable, value)
bound_metric_labels()
quiet_client_errors()


async def model_endpoint(request: Request) -> JSONResponse:
    """GET /model: the version being served and what the registry says about it."""
    service: ChurnService = bentoml.get_current_service()
    return JSONResponse(service.describe().model_dump())


model_app = Starlette(routes=[Route("/model", model_endpoint, methods=["GET"])])


def openapi_document(document: dict[str, Any]) -> dict[str, Any]:
    """The service's OpenAPI document, with the record contract of the version being served."""
    try:
        service: ChurnService = bentoml.get_current_service()
    except bentoml.exceptions.BentoMLException:
        return document
    model = service.watcher.current
    return openapi.document(
        model.contract.json_schemas() if model is not None else None,
        api_key=SETTINGS.api_key is not None,
        alias=SETTINGS.alias,
        version=model.version if model is not None else "none",
    )


def served_model() -> ServedModel | None:
    """The model answering now (the request guard hands it to the request)."""
    service: ChurnService = bentoml.get_current_service()
    return service.watcher.current


def not_ready_reason() -> str | None:
    """Why no model can answer yet (for the request guard), or None when one can."""
    try:
        service: ChurnService = bentoml.get_current_service()
    except bentoml.exceptions.BentoMLException:
        return "the service is starting"
    return service.not_ready_reason()


@bentoml.service(
    name="churn",
    workers=SETTINGS.workers,
    traffic={"timeout": 30},
    labels={"project": "churn", "alias": SETTINGS.alias},
)
@bentoml.asgi_app(model_app, path="/")
class ChurnService:
    """Scores raw customer records with the model a registry alias names, and logs them."""

    def __init__(self) -> None:
        self.settings = SETTINGS
        alias = self.settings.alias
        home = Home.from_env()
        self.metrics = ServingMetrics(alias, self.settings.model_max_age_days * 86_400)
        self._stop_gc_timing = self.metrics.watch_garbage_collection()

        def log(name: str, schema: pa.Schema, time_column: str) -> ParquetLog:
            return ParquetLog(
                home.serving_log(alias, name),
                schema,
                time_column,
                flush_seconds=self.settings.log_flush_seconds,
                on_backlog=lambda records: self.metrics.backlog(name, records),
                max_records=self.settings.log_max_records,
                max_bytes=self.settings.log_max_bytes,
                spill=Path(self.settings.log_spill_dir) / alias / name
                if self.settings.log_spill_dir
                else None,
                on_drop=self.metrics.log_dropped.labels(alias, name).inc,
            ).start()

        # Each model version logs its predictions with its own schema (its inputs).
        self.prediction_log = log(PREDICTIONS, PREDICTION_BASE_SCHEMA, "predicted_at")
        self.feedback_log = log(FEEDBACK, FEEDBACK_SCHEMA, "received_at")
        self.batcher = ContinuousBatcher(
            self.score, max_records(), on_batch=self.metrics.batch_records.labels(alias).observe
        )
        self.watcher = ModelWatcher(
            Tracking.from_env(home.root),
            alias,
            self.settings.refresh_seconds,
            on_swap=self.metrics.swapped,
            on_failure=self.metrics.load_failures.labels(alias).inc,
            on_registry=self._registry_health,
        ).start()
        self._stopping = threading.Event()

    def _registry_health(self, unreachable_since: datetime | None) -> None:
        alias = self.settings.alias
        if unreachable_since is not None:
            self.metrics.registry_failures.labels(alias).inc()
        self.metrics.registry_unreachable_since.labels(alias).set(
            unreachable_since.timestamp() if unreachable_since else 0
        )

    def __is_ready__(self) -> bool:
        """Ready once a model is loaded (BentoML's /readyz)."""
        return self.watcher.current is not None

    def not_ready_reason(self) -> str | None:
        """Why no model is loaded, or None when one is."""
        if self.watcher.current is not None:
            return None
        return self.watcher.status.problem or "no model loaded yet"

    @bentoml.api(input_spec=PredictRequest)  # type: ignore[untyped-decorator]
    async def predict(self, records: list[Any]) -> list[Prediction]:
        """Churn probability and label for each customer record, and the model that answered."""
        # The records were validated against one version's contract; that version scores them,
        # even if another was swapped in since.
        model: ServedModel = type(records[0]).served_by
        return list(await self.batcher.submit(records, model))

    def score(self, records: list[Any], model: ServedModel) -> list[Prediction]:
        """Score records (of one or several requests) with `model`, log them, and count them."""
        columns = columns_of(records, model.schema.names)
        probabilities = model.score(columns)
        labels = (probabilities >= model.threshold).astype(np.int8)
        unknown = _unknown_categories(model, columns, len(records))
        request_ids = [record._request_id for record in records]
        batch = uuid.uuid4().hex[:20]  # unique per call; the index makes it unique per record
        prediction_ids = [f"{batch}{i:06x}" for i in range(len(records))]
        customer_ids = [model.contract.key_of(record) for record in records]
        probability_list = probabilities.tolist()
        label_list = labels.tolist()
        # Plain dicts: BentoML validates the response into `Prediction`s in pydantic's compiled
        # core, several times faster than building the models here in Python.
        predictions: list[dict[str, Any]] = [
            {
                "customer_id": customer_ids[i],
                "churn_probability": probability_list[i],
                "churn_label": label_list[i],
                "threshold": model.threshold,
                "unknown_categories": unknown[i] if unknown else {},
                "model_name": model.name,
                "model_version": model.version,
                "model_alias": model.alias,
                "request_id": request_ids[i],
                "prediction_id": prediction_ids[i],
            }
            for i in range(len(records))
        ]
        explained = [i for i, record in enumerate(records) if record._explain]
        if explained:
            self._explain(model, columns, explained, predictions)
        now = datetime.now(UTC)
        self.prediction_log.append(
            {
                **columns,
                "request_id": request_ids,
                "prediction_id": prediction_ids,
                "predicted_at": [now] * len(records),
                "model_name": [model.name] * len(records),
                "model_version": [model.version] * len(records),
                "model_alias": [model.alias] * len(records),
                "customer_id": [None if key is None else str(key) for key in customer_ids],
                "churn_probability": probability_list,
                "churn_label": label_list,
                "unknown_categories": [
                    ",".join(f"{k}={v}" for k, v in u.items()) or None for u in unknown
                ]
                if unknown
                else [None] * len(records),
            },
            model.log_schema,
        )
        counts: dict[str, int] = {}
        for fields in unknown:
            for field in fields:
                counts[field] = counts.get(field, 0) + 1
        self.metrics.predicted(model.version, probability_list, labels, counts)
        return cast(list[Prediction], predictions)

    @staticmethod
    def _explain(
        model: ServedModel,
        columns: dict[str, list[Any]],
        rows: list[int],
        predictions: list[dict[str, Any]],
    ) -> None:
        """Add the reasons behind the scores of `rows` to their predictions."""
        subset = {name: [values[i] for i in rows] for name, values in columns.items()}
        for row, reasons in zip(rows, model.explain(subset), strict=True):
            predictions[row]["reasons"] = [
                {
                    "feature": reason.feature,
                    "value": reason.value,
                    "contribution": reason.contribution,
                    "text": str(reason),
                }
                for reason in reasons
            ]

    @bentoml.api(input_spec=FeedbackRequest)  # type: ignore[untyped-decorator]
    def feedback(self, outcomes: list[Outcome]) -> FeedbackReceipt:
        """Store what became of customers, for live performance and retraining."""
        now = datetime.now(UTC)
        request_id = uuid.uuid4().hex
        self.feedback_log.append(
            {
                "request_id": [request_id] * len(outcomes),
                "received_at": [now] * len(outcomes),
                "customer_id": [outcome.customer_id for outcome in outcomes],
                "churned": [outcome.churned for outcome in outcomes],
                "observed_at": [outcome.observed_at or now for outcome in outcomes],
                "prediction_id": [outcome.prediction_id for outcome in outcomes],
            }
        )
        churned = sum(outcome.churned for outcome in outcomes)
        self.metrics.feedback.labels(self.settings.alias, "yes").inc(churned)
        self.metrics.feedback.labels(self.settings.alias, "no").inc(len(outcomes) - churned)
        return FeedbackReceipt(accepted=len(outcomes), request_id=request_id)

    def describe(self) -> ModelCard:
        """The card of the model being served (the guard answers 503 while there is none)."""
        model = self.watcher.current
        assert model is not None
        status = self.watcher.status
        return model.card.model_copy(
            update={
                "registry_checked_at": _iso(status.checked_at),
                "registry_unreachable_since": _iso(status.unreachable_since),
            }
        )

    @bentoml.on_shutdown  # type: ignore[untyped-decorator]
    def close(self) -> None:
        """Stop watching the registry and write every buffered log record."""
        self._stopping.set()
        # Outcomes first (the scarcest data), and each log on its own: one failing costs no other.
        self._stop_gc_timing()
        for name, close, log in (
            ("model watcher", self.watcher.stop, None),
            ("feedback log", self.feedback_log.close, self.feedback_log),
            ("prediction log", self.prediction_log.close, self.prediction_log),
        ):
            try:
                close()
            except Exception:
                unwritten = f": {log.backlog} records could not be written" if log else ""
                logger.exception("closing the %s failed%s", name, unwritten)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment else None


def _unknown_categories(
    model: ServedModel, columns: dict[str, list[Any]], rows: int
) -> list[dict[str, str]]:
    """Per record, the fields whose category the model never saw; [] when there are none."""
    unknown: list[dict[str, str]] = []
    for name, known in model.categories.items():
        for row, value in enumerate(columns[name]):
            if value is not None and value not in known:  # null is missing, not unknown
                if not unknown:
                    unknown = [{} for _ in range(rows)]
                unknown[row][name] = str(value)
    return unknown


# BentoML derives a response's media type from its JSON schema on every response unless told.
ChurnService.apis["predict"].output_spec.media_type = "application/json"  # type: ignore[attr-defined]
ChurnService.add_asgi_middleware(  # type: ignore[attr-defined]
    RequestGuard,
    api_key=SETTINGS.api_key,
    max_body_bytes=SETTINGS.max_body_bytes,
    not_ready=not_ready_reason,
    served_model=served_model,
    state_key=SERVED_MODEL,
    openapi=openapi_document,
    query_parameters={"/predict": {EXPLAIN: EXPLAIN_VALUES}},
)
