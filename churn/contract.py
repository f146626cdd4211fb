"""The request contract of a model, built from its input schema: what a client must send.

A record has the model's input columns, by the names of the training table (snake_case), and
optionally the customer key. Validation is strict, and names the field of every problem:

- a missing field, or one the model does not know, is refused;
- numbers must be JSON numbers (no text, no `true`), finite, and within the column's plausible
  range; integer columns take integers only; a column that may be missing also takes `null`;
- booleans must be `true` or `false`;
- dates are ISO 8601 text: a date (`2024-03-15`) or a time (`2024-03-15T10:30:00Z`, with `Z`, an
  offset, or none for UTC);
- categories are text of 1 to 256 characters. A category the model never saw is scored (the
  model pools it with the rare ones) and reported, rather than refused, so that a new tariff name
  cannot take the service down.

The contract is built once per model version and holds on to it (`RecordContract.model`), so a
request validated against one version's contract is scored by that version.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    WithJsonSchema,
    create_model,
    model_validator,
)

from churn.model.schema import MAX_TEXT_LENGTH, ColumnKind, ColumnSchema, ModelSchema, parse_iso

KEY_MAX_LENGTH = 64
DATE_MAX_LENGTH = 40


def _iso_date(value: str) -> str:
    """An ISO 8601 date or time (RFC 3339's too: `t`, `z`); anything else is refused.

    Returned as sent: the model reads the text. A date outside the years 1678 to 2261 (what a
    nanosecond clock holds) is scored as a missing one.
    """
    if parse_iso(value) is None:
        raise ValueError(
            f"{value!r} is not an ISO 8601 date or time (2024-03-15, 2024-03-15T10:30:00Z)"
        )
    return value


IsoDate = Annotated[
    StrictStr,
    AfterValidator(_iso_date),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date"},
                {"type": "string", "format": "date-time"},
            ],
            "maxLength": DATE_MAX_LENGTH,
        }
    ),
]


class CustomerRecordBase(BaseModel):
    """What every record class shares: strictness, and the id of the request it came in."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, title="customer")

    # Continuous batching merges requests; the request id travels with each record so that the
    # prediction log still says which request a prediction answered.
    _request_id: str = PrivateAttr(default="")
    # `POST /predict?explain=true`: the record's answer carries the reasons behind its score.
    _explain: bool = PrivateAttr(default=False)


class PredictRequestBase(BaseModel):
    """Customers to score: one record or a batch."""

    model_config = ConfigDict(extra="forbid", title="predict request")

    records: list[Any]

    @model_validator(mode="after")
    def _stamp_request(self) -> PredictRequestBase:
        request_id = uuid.uuid4().hex
        for record in self.records:
            record._request_id = request_id
        return self


class RecordContract:
    """The record and request types of one model's schema.

    Args:
        schema: the model's input schema.
        max_records: most records one request may carry.
        record_base: the class the record type derives from (an adapter may add to it).

    """

    def __init__(
        self,
        schema: ModelSchema,
        max_records: int,
        record_base: type[CustomerRecordBase] = CustomerRecordBase,
    ) -> None:
        self.schema = schema
        self.example = schema.example()
        fields: dict[str, Any] = {}
        if schema.key:
            fields[schema.key] = (
                StrictStr | StrictInt | None,
                Field(
                    default=None,
                    description="Customer key (optional): echoed back and logged, not a model "
                    "input.",
                ),
            )
        for column in schema.columns:
            fields[column.name] = _field(column)
        self.record_type: type[CustomerRecordBase] = create_model(
            "CustomerRecord",
            __base__=record_base,
            __doc__="One customer, by the columns of the table the served model learned from.",
            **fields,
        )
        self.record_type.model_config["json_schema_extra"] = {"example": self.example}
        self.record_type.model_rebuild(force=True)
        self.request_type: type[PredictRequestBase] = create_model(
            "PredictRequest",
            __base__=PredictRequestBase,
            records=(
                list[self.record_type],  # type: ignore[name-defined]
                Field(
                    min_length=1,
                    max_length=max_records,
                    description=f"Customer records; at most {max_records} per request "
                    "(`CHURN_MAX_BATCH_RECORDS`).",
                ),
            ),
        )
        self.request_type.model_config["json_schema_extra"] = {
            "example": {"records": [self.example]}
        }
        self.request_type.model_rebuild(force=True)

    def key_of(self, record: Any) -> str | int | None:
        """The customer key a record carries, as it was sent (text or integer), or None."""
        if not self.schema.key:
            return None
        value: str | int | None = getattr(record, self.schema.key)
        return value

    def explained(self, error: ValidationError) -> ValidationError:
        """`error`, where a field was sent by the table's own spelling, naming the expected one.

        A client that posts the export's column names (`CreditScore`) gets, on that field, the
        name the contract takes (`credit_score`), and on the missing field the name it was sent
        as. Only a refused request pays for this.
        """
        from pydantic_core import InitErrorDetails, PydanticCustomError

        from churn.normalise import snake_case

        expected = set(self.schema.names) | ({self.schema.key} if self.schema.key else set())
        sent_as: dict[tuple[Any, ...], str] = {}
        for problem in error.errors():
            if not problem["loc"]:
                continue
            where, sent = problem["loc"][:-1], problem["loc"][-1]
            meant = snake_case(sent) if isinstance(sent, str) else None
            if problem["type"] == "extra_forbidden" and meant in expected and meant != sent:
                sent_as[(*where, meant)] = str(sent)
        if not sent_as:
            return error
        details: list[InitErrorDetails] = []
        for problem in error.errors():
            loc = tuple(problem["loc"])
            kind: Any = problem["type"]
            name = loc[-1] if loc else None
            if (
                kind == "extra_forbidden"
                and isinstance(name, str)
                and ((*loc[:-1], snake_case(name)) in sent_as)
            ):
                kind = PydanticCustomError(
                    "extra_forbidden",
                    "Extra inputs are not permitted: this field is {expected} (the contract "
                    "takes the table's column names in snake_case)",
                    {"expected": repr(snake_case(name))},
                )
            elif kind == "missing" and loc in sent_as:
                kind = PydanticCustomError(
                    "missing", "Field required (sent as {sent})", {"sent": repr(sent_as[loc])}
                )
            details.append({"type": kind, "loc": loc, "input": problem.get("input")})
        return ValidationError.from_exception_data(error.title, details)

    def json_schemas(self) -> dict[str, Any]:
        """The OpenAPI components of the record and the request (references to `#/components`)."""
        template = "#/components/schemas/{model}"
        request = self.request_type.model_json_schema(ref_template=template)
        definitions = request.pop("$defs", {})
        return {"PredictRequest": request, **definitions}


def _field(column: ColumnSchema) -> tuple[Any, Any]:
    """The pydantic type and constraints of one input column."""
    missing = " May be null." if column.nullable else ""
    bounds: dict[str, Any] = {"ge": column.minimum, "le": column.maximum}
    if column.kind == ColumnKind.NUMBER:
        kind: Any = StrictFloat
        described = f"Number from {column.minimum:g} to {column.maximum:g}.{missing}"
    elif column.kind == ColumnKind.INTEGER:
        kind = StrictInt
        described = f"Integer from {column.minimum:g} to {column.maximum:g}.{missing}"
    elif column.kind == ColumnKind.BOOLEAN:
        kind, bounds = StrictBool, {}
        described = f"true or false.{missing}"
    elif column.kind == ColumnKind.DATE:
        kind, bounds = IsoDate, {"max_length": DATE_MAX_LENGTH}
        described = (
            "Date or time in ISO 8601 (2024-03-15, 2024-03-15T10:30:00Z; without an offset, "
            f"UTC), e.g. {column.typical}.{missing}"
        )
    else:
        kind = StrictStr
        bounds = {"min_length": 1, "max_length": MAX_TEXT_LENGTH}
        seen = ", ".join(column.categories[:20])
        more = f" (and {len(column.categories) - 20} more)" if len(column.categories) > 20 else ""
        described = (
            f"Text. Seen in training: {seen}{more}; another value is scored as a rare category "
            f"and reported.{missing}"
            if column.categories
            else f"Text.{missing}"
        )
    if column.kind in (ColumnKind.NUMBER, ColumnKind.INTEGER) and column.minimum is None:
        bounds = {}
        described = f"{column.kind.value.capitalize()}.{missing}"
    annotation = kind | None if column.nullable else kind
    return annotation, Field(description=described, **bounds)
