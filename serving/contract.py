"""The HTTP contract of the churn service: typed requests and responses, with examples.

Requests carry raw customer records with the columns of the table the served model learned from
(snake_case names), so that what a client sends is what the model's pipeline was trained on. The
record contract is the served version's (`churn/contract.py`, built from its input schema):
pydantic rejects anything else with a 400 that names the field: missing or unexpected fields,
wrong types, NaN or infinite numbers, numbers outside plausible ranges, an empty list or one
longer than the configured maximum. Categories are free text on purpose: a category the model
never saw is scored (the pipeline pools it with the rare ones) and reported in the response,
rather than rejected, because a new tariff name must not take the service down.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

from bentoml import IODescriptor
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from churn.contract import CustomerRecordBase
from churn.settings import settings

# The key under which the request guard hands the served model to the request (its ASGI state).
SERVED_MODEL = "churn_served_model"


class ServedRecord(CustomerRecordBase):
    """A record validated by a served version's contract, which knows that version.

    Continuous batching may score records of requests that arrived around a swap: each batch is
    scored by the version its records were validated for, read from their class.
    """

    served_by: ClassVar[Any] = None


def max_records() -> int:
    """Largest batch one request may carry (`CHURN_MAX_BATCH_RECORDS`)."""
    return settings().serving.max_batch_records


class PredictRequest(IODescriptor):  # type: ignore[misc]
    """Customers to score: one record or a batch, by the served model's input columns.

    The records are validated against the contract of the model version being served (built
    from its input schema, `churn/contract.py`), straight from the request's bytes: each version
    has its own record type, and the version a request was validated for is the one that scores
    it. The OpenAPI document shows the served version's record schema (`openapi_document`).
    """

    model_config = ConfigDict(title="predict request")

    records: list[dict[str, Any]] = Field(
        min_length=1, description="Customer records, by the served model's input columns."
    )

    @classmethod
    async def from_http_request(cls, request: Any, serde: Any) -> Any:
        """The request validated against the served version's contract (400 on any problem)."""
        import bentoml

        # The request guard put the model it found ready in the request's state.
        model = getattr(request.state, SERVED_MODEL, None)
        if model is None:
            raise bentoml.exceptions.ServiceUnavailable("no model loaded")
        explain = explain_parameter(request.query_params.get(EXPLAIN))
        try:
            validated = model.contract.request_type.model_validate_json(await request.body())
        except ValidationError as error:
            raise model.contract.explained(error) from None
        if explain:
            for record in validated.records:
                record._explain = True
        return validated


EXPLAIN = "explain"
EXPLAIN_VALUES = {"true": True, "1": True, "false": False, "0": False}


def explain_parameter(value: str | None) -> bool:
    """The `explain` query parameter (`true`/`false`, `1`/`0`, as written); absent is false.

    Raises:
        BadInput: any other value (a 400 naming the parameter).

    """
    if value is None:
        return False
    try:
        return EXPLAIN_VALUES[value]
    except KeyError:
        import bentoml

        raise bentoml.exceptions.BadInput(
            f"query parameter {EXPLAIN!r} must be true or false, not {value!r}"
        ) from None


class Reason(BaseModel):
    """One input pushing the customer's churn score up, and by how much."""

    feature: str = Field(description="The input column.")
    value: Any = Field(description="The record's value of it (null when missing).")
    contribution: float = Field(
        description="What it adds to the model's raw score (log-odds for logistic regression "
        "and LightGBM, probability for a random forest)."
    )
    text: str = Field(description="As the nightly scores write it: `tenure=2 (+0.12)`.")


class Prediction(BaseModel):
    """The churn prediction for one record, and the model version that made it."""

    customer_id: str | int | None = Field(
        description="The record's customer key, when it had one, as it was sent (text or integer)."
    )
    churn_probability: float = Field(description="Probability that the customer churns.")
    churn_label: int = Field(
        description="1 when the probability is at or above the model's decision threshold."
    )
    threshold: float = Field(description="The model's decision threshold.")
    unknown_categories: dict[str, str] = Field(
        default_factory=dict,
        description="Fields whose value the model never saw in training (scored as a rare "
        "category), with that value.",
    )
    model_name: str
    model_version: str
    model_alias: str
    request_id: str = Field(description="Id of the request, as in the prediction log.")
    prediction_id: str = Field(description="Id of this prediction, for `/feedback`.")
    reasons: list[Reason] | None = Field(
        default=None,
        description="With `?explain=true`: the (up to) three inputs pushing the score up most, "
        "largest first.",
    )


YES_NO = {"Yes": True, "yes": True, "No": False, "no": False}


def _yes_no(value: Any) -> Any:
    """`Yes`/`No` (as most churn tables write it) as a boolean; anything else as it came."""
    return YES_NO.get(value, value) if isinstance(value, str) else value


def _key_text(value: Any) -> Any:
    """An integer customer key (as `/predict` echoes one) as the text the logs keep."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


class Outcome(BaseModel):
    """What became of a customer: churned or stayed, and when that was known."""

    model_config = ConfigDict(
        extra="forbid",
        title="outcome",
        json_schema_extra={
            "example": {
                "customer_id": "7590-VHVEG",
                "churned": True,
                "observed_at": "2026-11-20T00:00:00Z",
            },
            # The rule of `_in_the_past` that JSON Schema can state: name the customer or the
            # prediction.
            "anyOf": [
                {
                    "required": ["customer_id"],
                    "properties": {"customer_id": {"type": ["string", "integer"]}},
                },
                {
                    "required": ["prediction_id"],
                    "properties": {"prediction_id": {"type": "string"}},
                },
            ],
        },
    )

    customer_id: Annotated[
        str | None,
        BeforeValidator(_key_text),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "string", "minLength": 1, "maxLength": 64},
                    {"type": "integer"},
                    {"type": "null"},
                ]
            }
        ),
    ] = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Customer key, text or integer as `/predict` echoed it; without one (a "
        "table with no key), name the prediction.",
    )
    churned: Annotated[
        StrictBool,
        BeforeValidator(_yes_no),
        WithJsonSchema({"anyOf": [{"type": "boolean"}, {"type": "string", "enum": list(YES_NO)}]}),
    ] = Field(description="true/false (or Yes/No): whether the customer churned.")
    observed_at: datetime | None = Field(
        default=None,
        strict=True,  # an ISO 8601 text: a number of seconds is not a time a client meant
        description="When the outcome was known (ISO 8601, not in the future); now when omitted.",
    )
    prediction_id: str | None = Field(
        default=None, max_length=64, description="The prediction this outcome answers, if known."
    )

    @model_validator(mode="after")
    def _in_the_past(self) -> Outcome:
        if self.customer_id is None and self.prediction_id is None:
            raise ValueError("an outcome names its customer_id or its prediction_id")
        if self.observed_at is not None:
            if self.observed_at.tzinfo is None:
                self.observed_at = self.observed_at.replace(tzinfo=UTC)
            if self.observed_at > datetime.now(UTC):
                raise ValueError("observed_at is in the future")
        return self


class FeedbackRequest(IODescriptor):  # type: ignore[misc]
    """Actual outcomes of customers, for live performance and retraining."""

    model_config = ConfigDict(extra="forbid", title="feedback request")

    outcomes: list[Outcome] = Field(
        min_length=1, max_length=max_records(), description="Outcomes, one per customer."
    )


class FeedbackReceipt(BaseModel):
    """How many outcomes were stored."""

    accepted: int
    request_id: str


class QualityGate(BaseModel):
    """One quality gate the version met or failed when it was registered."""

    gate: str
    metric: str
    observed: float | None = Field(description="The hold-out estimate (null: not measured).")
    comparison: str = Field(description="`>=` or `<=`.")
    threshold: float | None = Field(description="The requirement (null: no threshold set).")
    passed: bool
    setting: str = Field(description="The environment variable that sets the threshold.")
    detail: str = Field(default="", description="What gave a failure away (leaking columns).")
    low: float | None = Field(
        default=None, description="Lower end of the estimate's 90 % bootstrap interval."
    )
    high: float | None = Field(
        default=None, description="Upper end of the estimate's 90 % bootstrap interval."
    )
    applied: bool = Field(
        default=True, description="False: no threshold or nothing to judge; the gate passed."
    )


class ModelCard(BaseModel):
    """The model version being served and what the registry says about it."""

    model_name: str
    model_alias: str
    model_version: str
    algorithm: str
    threshold: float
    data_version: str
    metrics: dict[str, float]
    promoted_at: str | None = Field(description="When the alias last moved to this version.")
    loaded_at: str = Field(description="When this service loaded it.")
    run_id: str
    features: list[str]
    input_schema: dict[str, Any] = Field(
        description="The model's input schema: columns, kinds, ranges, categories, the key."
    )
    schema_fingerprint: str = Field(description="Short hash of the columns clients must send.")
    gates: list[QualityGate] = Field(
        default_factory=list,
        description="The version's quality gates, observed against required: a version on "
        "staging may have failed some (production is reached only through them, or by a "
        "deliberate override).",
    )
    registry_checked_at: str | None = Field(
        default=None, description="When the service last read its alias in the registry."
    )
    registry_unreachable_since: str | None = Field(
        default=None,
        description="Since when the registry cannot be read (null: it answered at the last "
        "check); the model shown keeps serving meanwhile.",
    )
