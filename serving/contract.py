"""The HTTP contract of the churn service: typed requests and responses, with examples.

Requests carry raw customer records, exactly the columns of `raw_customers` for the Telco schema
(snake_case names), so that what a client sends is what the model's pipeline was trained on.
Pydantic rejects anything else with a 400 that names the field: missing or unexpected fields,
wrong types, NaN or infinite numbers, numbers outside plausible ranges, an empty list or one
longer than the configured maximum. Categories are free text on purpose: a category the model
never saw is scored (the pipeline pools it with the rare ones) and reported in the response,
rather than rejected, because a new tariff name must not take the service down.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from bentoml import IODescriptor
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    model_validator,
)

from churn_assets.telco import CATEGORIES, NUMERIC_RANGES

DEFAULT_MAX_RECORDS = 1_000


def max_records() -> int:
    """Largest batch one request may carry (`CHURN_MAX_BATCH_RECORDS`)."""
    return int(os.environ.get("CHURN_MAX_BATCH_RECORDS", DEFAULT_MAX_RECORDS))


def _number(column: str, description: str) -> Any:
    low, high = NUMERIC_RANGES[column]
    return Field(ge=low, le=high, description=f"{description}, {low:g} to {high:g}.")


def _category(column: str, description: str) -> Any:
    known = ", ".join(CATEGORIES[column])
    return Field(min_length=1, max_length=64, description=f"{description}: {known}.")


EXAMPLE_CUSTOMER: dict[str, Any] = {
    "customer_id": "7590-VHVEG",
    "gender": "Female",
    "senior_citizen": 0,
    "partner": "Yes",
    "dependents": "No",
    "tenure": 1,
    "phone_service": "No",
    "multiple_lines": "No phone service",
    "internet_service": "DSL",
    "online_security": "No",
    "online_backup": "Yes",
    "device_protection": "No",
    "tech_support": "No",
    "streaming_tv": "No",
    "streaming_movies": "No",
    "contract": "Month-to-month",
    "paperless_billing": "Yes",
    "payment_method": "Electronic check",
    "monthly_charges": 29.85,
    "total_charges": 29.85,
}


class CustomerRecord(BaseModel):
    """One customer as the raw data describes them (the Telco columns, snake_case)."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        title="customer",
        json_schema_extra={"example": EXAMPLE_CUSTOMER},
    )

    customer_id: str | None = Field(
        default=None, min_length=1, max_length=64, description="Customer key, echoed back."
    )
    gender: str = _category("gender", "Gender")
    senior_citizen: Literal[0, 1] = Field(description="1 for a senior citizen, else 0.")
    partner: str = _category("partner", "Has a partner")
    dependents: str = _category("dependents", "Has dependents")
    tenure: int = _number("tenure", "Months as a customer")
    phone_service: str = _category("phone_service", "Phone service")
    multiple_lines: str = _category("multiple_lines", "Several phone lines")
    internet_service: str = _category("internet_service", "Internet service")
    online_security: str = _category("online_security", "Online security add-on")
    online_backup: str = _category("online_backup", "Online backup add-on")
    device_protection: str = _category("device_protection", "Device protection add-on")
    tech_support: str = _category("tech_support", "Tech support add-on")
    streaming_tv: str = _category("streaming_tv", "Streaming TV add-on")
    streaming_movies: str = _category("streaming_movies", "Streaming movies add-on")
    contract: str = _category("contract", "Contract term")
    paperless_billing: str = _category("paperless_billing", "Paperless billing")
    payment_method: str = _category("payment_method", "Payment method")
    monthly_charges: float = _number("monthly_charges", "Monthly charges")
    total_charges: float | None = _number(
        "total_charges", "Total charges to date, null for a new customer"
    )

    _request_id: str = PrivateAttr(default="")


FEATURE_FIELDS = tuple(name for name in CustomerRecord.model_fields if name != "customer_id")


class PredictRequest(IODescriptor):  # type: ignore[misc]
    """Customers to score: one record or a batch."""

    model_config = ConfigDict(
        extra="forbid",
        title="predict request",
        json_schema_extra={"example": {"records": [EXAMPLE_CUSTOMER]}},
    )

    records: list[CustomerRecord] = Field(
        min_length=1,
        max_length=max_records(),
        description="Customer records (raw columns, snake_case); at most "
        f"{max_records()} per request (`CHURN_MAX_BATCH_RECORDS`).",
    )

    @model_validator(mode="after")
    def _stamp_request(self) -> PredictRequest:
        # Batching merges several requests into one model call; the id travels with each record
        # so that the prediction log still says which request a prediction answered.
        request_id = uuid.uuid4().hex
        for record in self.records:
            record._request_id = request_id
        return self


class Prediction(BaseModel):
    """The churn prediction for one record, and the model version that made it."""

    customer_id: str | None = Field(description="The record's customer key, when it had one.")
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


def _yes_no(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() in {"yes", "no"}:
        return value.strip().lower() == "yes"
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
            }
        },
    )

    customer_id: str = Field(min_length=1, max_length=64, description="Customer key.")
    churned: Annotated[bool, BeforeValidator(_yes_no)] = Field(
        description="true/false (or Yes/No): whether the customer churned."
    )
    observed_at: datetime | None = Field(
        default=None, description="When the outcome was known (ISO 8601); now when omitted."
    )
    prediction_id: str | None = Field(
        default=None, max_length=64, description="The prediction this outcome answers, if known."
    )

    @model_validator(mode="after")
    def _in_the_past(self) -> Outcome:
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
