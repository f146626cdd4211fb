"""The serving logs, as the service writes them and the monitoring assets read them.

Every deployment (registry alias) has two day-partitioned Parquet logs under
`$CHURN_HOME/serving/<alias>/`: `predictions` (one row per scored customer: its raw inputs, the
probability and label served, the model version) and `feedback` (one row per outcome reported to
`/feedback`). Joining the two gives labelled predictions: what live performance is measured on,
and new training rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa

from churn.model.schema import ColumnKind, ModelSchema
from churn.parquet_log import read_log

PREDICTIONS = "predictions"
FEEDBACK = "feedback"
# The customer key of a logged prediction, as text, whatever the key column is called.
CUSTOMER_KEY = "customer_id"

ARROW_TYPES = {
    ColumnKind.NUMBER: pa.float64(),
    ColumnKind.INTEGER: pa.int64(),
    ColumnKind.BOOLEAN: pa.bool_(),
    ColumnKind.CATEGORY: pa.string(),
    ColumnKind.DATE: pa.string(),  # as the request sent it (ISO 8601); drift reads it as days
}
PREDICTION_META = [
    ("request_id", pa.string()),
    ("prediction_id", pa.string()),
    ("predicted_at", pa.timestamp("us", tz="UTC")),
    ("model_name", pa.string()),
    ("model_version", pa.string()),
    ("model_alias", pa.string()),
    (CUSTOMER_KEY, pa.string()),
]
PREDICTION_RESULT = [
    ("churn_probability", pa.float64()),
    ("churn_label", pa.int8()),
    ("unknown_categories", pa.string()),
]
META_COLUMNS = frozenset(name for name, _ in [*PREDICTION_META, *PREDICTION_RESULT])
# A prediction log row without inputs: the log's schema until a model gives its own.
PREDICTION_BASE_SCHEMA = pa.schema([*PREDICTION_META, *PREDICTION_RESULT])


def prediction_schema(schema: ModelSchema) -> pa.Schema:
    """The columns of a prediction log row of a model: who and when, its inputs, its answer.

    Inputs are typed by the model's input schema (numbers, integers, booleans, text), so a log
    holds the same values the model scored; a later version with other inputs writes its own
    files, and readers unify them.
    """
    inputs = [
        (column.name, ARROW_TYPES[column.kind])
        for column in schema.columns
        if column.name not in META_COLUMNS
    ]
    return pa.schema([*PREDICTION_META, *inputs, *PREDICTION_RESULT])


FEEDBACK_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("received_at", pa.timestamp("us", tz="UTC")),
        (CUSTOMER_KEY, pa.string()),
        ("churned", pa.bool_()),
        ("observed_at", pa.timestamp("us", tz="UTC")),
        ("prediction_id", pa.string()),
    ]
)


def recent_predictions(
    folder: Path, now: datetime, hours: float, max_records: int | None = None
) -> pd.DataFrame:
    """Predictions logged in the last `hours` before `now`, at most the newest `max_records`."""
    since = now - timedelta(hours=hours)
    frame = read_log(folder, since=since.date(), until=now.date())
    if frame.empty:
        return pd.DataFrame(columns=[name for name, _ in [*PREDICTION_META, *PREDICTION_RESULT]])
    frame = frame[(frame["predicted_at"] >= since) & (frame["predicted_at"] <= now)]
    frame = frame.sort_values("predicted_at", kind="stable")
    if max_records is not None:
        frame = frame.tail(max_records)
    return frame.reset_index(drop=True)


def all_records(folders: list[Path]) -> pd.DataFrame:
    """Every record of several folders of the same log (for instance, of every deployment)."""
    frames = [frame for frame in (read_log(folder) for folder in folders) if not frame.empty]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


@dataclass
class LabelledPredictions:
    """Feedback joined to the predictions it is about.

    Attributes:
        rows: one row per matched outcome: the prediction's columns plus `churned` (bool),
            `observed_at` and `received_at`.
        unmatched: outcomes that no logged prediction explains (unknown prediction id, or a
            customer never scored before the outcome was observed).

    """

    rows: pd.DataFrame
    unmatched: int


def join_feedback(predictions: pd.DataFrame, feedback: pd.DataFrame) -> LabelledPredictions:
    """Match each outcome to the prediction it is about.

    By `prediction_id` when the outcome names one, else to the customer's latest prediction made
    at or before the outcome was observed.
    """
    if feedback.empty or predictions.empty:
        return LabelledPredictions(_empty_labelled(predictions), len(feedback))
    outcomes = feedback[["prediction_id", CUSTOMER_KEY, "churned", "observed_at", "received_at"]]
    predictions = predictions.drop_duplicates("prediction_id", keep="last")

    by_id = outcomes[outcomes["prediction_id"].notna()]
    matched_by_id = by_id.drop(columns=[CUSTOMER_KEY]).merge(
        predictions, on="prediction_id", how="inner", validate="many_to_one"
    )

    by_customer = outcomes[outcomes["prediction_id"].isna()].drop(columns=["prediction_id"])
    matched_by_customer = pd.DataFrame()
    if not by_customer.empty:
        # merge_asof needs both sides sorted on the time key and the same key type.
        left = by_customer.assign(_at=by_customer["observed_at"].astype("datetime64[us, UTC]"))
        right = predictions.assign(_at=predictions["predicted_at"].astype("datetime64[us, UTC]"))
        joined = pd.merge_asof(
            left.sort_values("_at"),
            right.sort_values("_at"),
            on="_at",
            by=CUSTOMER_KEY,
            direction="backward",
        ).drop(columns=["_at"])
        matched_by_customer = joined[joined["prediction_id"].notna()]

    parts = [part for part in (matched_by_id, matched_by_customer) if not part.empty]
    if not parts:
        return LabelledPredictions(_empty_labelled(predictions), len(feedback))
    rows = pd.concat(parts, ignore_index=True)
    return LabelledPredictions(rows.reset_index(drop=True), len(feedback) - len(rows))


def _empty_labelled(predictions: pd.DataFrame) -> pd.DataFrame:
    columns = list(predictions.columns) or [
        name for name, _ in [*PREDICTION_META, *PREDICTION_RESULT]
    ]
    return pd.DataFrame(columns=[*columns, "churned", "observed_at", "received_at"])
