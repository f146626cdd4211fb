"""The service's OpenAPI document: exactly what it accepts and answers, status by status.

BentoML derives a document from the endpoint types, but it cannot know what the service does
around them: the records' type depends on the model version being served, the request guard
answers 401, 413, 415 and 503, a validation error's `detail` is a list, `/model` is a plain ASGI
route, and the API key is a security scheme. So the document is written here, from the same
pydantic types that validate requests and answers, and served at `/docs.json` (the Swagger UI at
`/` reads it). A schemathesis run with every check holds the service to it
(`churn_assets_tests/test_openapi.py`).

What JSON Schema cannot say is in the descriptions: an outcome's `observed_at` may not be in the
future, and the body as a whole may not exceed `CHURN_MAX_BODY_BYTES` (413).
"""

from __future__ import annotations

from typing import Any

from serving.contract import (
    EXPLAIN,
    EXPLAIN_VALUES,
    FeedbackReceipt,
    FeedbackRequest,
    ModelCard,
    Prediction,
)

_REF = "#/components/schemas/{model}"
JSON = "application/json"
TEXT = "text/plain"

# The statuses the request guard answers, with when (`serving/guard.py`).
_GUARD = {
    "401": "Missing or wrong API key (`X-API-Key: <key>` or `Authorization: Bearer <key>`).",
    "413": "The body is larger than `CHURN_MAX_BODY_BYTES`: split the batch.",
    "415": "The body is not sent as `Content-Type: application/json`.",
    "503": "No model is loaded yet (or the registry never answered): try again later.",
}

ERROR = {
    "type": "object",
    "title": "Error",
    "description": "A refusal, and what to change.",
    "required": ["error"],
    "properties": {"error": {"type": "string", "description": "What is wrong."}},
    "additionalProperties": False,
}

VALIDATION_ERROR = {
    "type": "object",
    "title": "ValidationError",
    "description": "The request does not meet the contract; `detail` names each broken field.",
    "required": ["error"],
    "properties": {
        "error": {"type": "string", "description": "Summary: how many fields are wrong."},
        "detail": {
            "type": "array",
            "description": "One entry per problem; `loc` is the path to the field, "
            'such as `["records", 0, "tenure"]`.',
            "items": {
                "type": "object",
                "required": ["type", "loc", "msg"],
                "properties": {
                    "type": {"type": "string", "description": "Kind of problem."},
                    "loc": {
                        "type": "array",
                        "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                    },
                    "msg": {"type": "string", "description": "The problem, in words."},
                    "input": {"description": "The value that was refused."},
                    "ctx": {"type": "object", "description": "The rule's parameters."},
                    "url": {"type": "string", "description": "Pydantic's page on the problem."},
                },
            },
        },
    },
    "additionalProperties": False,
}

SECURITY_SCHEMES = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "Bearer": {"type": "http", "scheme": "bearer", "description": "The same key, as a token."},
}


def document(
    record_schemas: dict[str, Any] | None,
    *,
    api_key: bool,
    alias: str,
    version: str,
) -> dict[str, Any]:
    """The OpenAPI 3.0 document of a running service.

    Args:
        record_schemas: the served version's `PredictRequest` and `CustomerRecord` schemas
            (`RecordContract.json_schemas()`), or None while no model is loaded.
        api_key: whether the service requires a key on `/predict`, `/feedback` and `/model`.
        alias: the registry alias served (shown in the title).
        version: the served model version, or "none".

    """
    schemas: dict[str, Any] = {"Error": ERROR, "ValidationError": VALIDATION_ERROR}
    for model in (Prediction, FeedbackRequest, FeedbackReceipt, ModelCard):
        schema = model.model_json_schema(ref_template=_REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    if record_schemas:
        schemas.update(record_schemas)
    else:  # no model: no record can be validated, and /predict answers 503
        schemas["PredictRequest"] = {
            "type": "object",
            "description": "No model is loaded: the records' columns are not known yet.",
        }
    secured: list[dict[str, list[str]]] | None = (
        [{"ApiKey": []}, {"Bearer": []}] if api_key else None
    )
    paths = {
        "/predict": {
            "post": _operation(
                "predict",
                "Churn probability and label for each customer record, and the model version "
                "that answered. Records are validated against the served version's contract.",
                body="PredictRequest",
                answer={"type": "array", "items": {"$ref": _REF.format(model="Prediction")}},
                refusals=("400", "401", "413", "415", "503"),
                secured=secured,
                parameters=[
                    {
                        "name": EXPLAIN,
                        "in": "query",
                        "required": False,
                        "description": "`true` (or `1`): each prediction carries the three "
                        "inputs pushing its score up most (`reasons`).",
                        "schema": {"type": "string", "enum": sorted(EXPLAIN_VALUES)},
                    }
                ],
            )
        },
        "/feedback": {
            "post": _operation(
                "feedback",
                "Store what became of customers, for live performance and retraining. An "
                "outcome's `observed_at` may not be in the future.",
                body="FeedbackRequest",
                answer={"$ref": _REF.format(model="FeedbackReceipt")},
                refusals=("400", "401", "413", "415"),
                secured=secured,
            )
        },
        "/model": {
            "get": _operation(
                "model",
                "The model version being served, its schema, and what the registry says.",
                answer={"$ref": _REF.format(model="ModelCard")},
                refusals=("401", "503"),
                secured=secured,
            )
        },
        "/livez": {"get": _probe("Alive: the process answers.")},
        "/healthz": {"get": _probe("Alive (the older name of `/livez`).")},
        "/readyz": {
            "get": _probe("Ready: a model is loaded. 503 before the first load.", not_ready=True)
        },
        "/metrics": {"get": _probe("Prometheus metrics, in the text exposition format.")},
    }
    return {
        "openapi": "3.0.2",
        "info": {
            "title": "Churn prediction service",
            "version": version,
            "description": f"Serves the registry's `{alias}` model (version {version}). "
            "Every refusal is a JSON body naming what to change.",
        },
        "servers": [{"url": "."}],
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": SECURITY_SCHEMES},
    }


def _operation(
    name: str,
    description: str,
    *,
    answer: dict[str, Any],
    refusals: tuple[str, ...],
    secured: list[dict[str, list[str]]] | None,
    body: str | None = None,
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": {"description": "Answered.", "content": _json(answer)}}
    for status in refusals:
        if status == "400":
            responses[status] = {
                "description": "The body or a query parameter breaks the contract.",
                "content": _json({"$ref": _REF.format(model="ValidationError")}),
            }
        elif status != "401" or secured:
            responses[status] = {
                "description": _GUARD[status],
                "content": _json({"$ref": _REF.format(model="Error")}),
            }
    operation: dict[str, Any] = {
        "operationId": name,
        "description": description,
        "tags": ["Churn"],
        "responses": responses,
    }
    if parameters:
        operation["parameters"] = parameters
    if body:
        operation["requestBody"] = {
            "required": True,
            "content": _json({"$ref": _REF.format(model=body)}),
        }
    operation["security"] = secured or []
    return operation


def _probe(description: str, not_ready: bool = False) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {"description": "Yes.", "content": {TEXT: {"schema": {"type": "string"}}}}
    }
    if not_ready:
        responses["503"] = {
            "description": "Not ready.",
            "content": {TEXT: {"schema": {"type": "string"}}},
        }
    return {"description": description, "tags": ["Operations"], "responses": responses}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {JSON: {"schema": schema}}
