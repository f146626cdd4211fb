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

from churn_assets.parquet_log import read_log
from churn_assets.telco import CUSTOMER_KEY, FEATURES

PREDICTIONS = "predictions"
FEEDBACK = "feedback"

# The contract's numbers as numbers, every other input as text.
NUMBER_TYPES = {
    "senior_citizen": pa.int64(),
    "tenure": pa.int64(),
    "monthly_charges": pa.float64(),
    "total_charges": pa.float64(),
}
PREDICTION_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("prediction_id", pa.string()),
        ("predicted_at", pa.timestamp("us", tz="UTC")),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("model_alias", pa.string()),
        (CUSTOMER_KEY, pa.string()),
        *[(name, NUMBER_TYPES.get(name, pa.string())) for name in FEATURES],
        ("churn_probability", pa.float64()),
        ("churn_label", pa.int8()),
        ("unknown_categories", pa.string()),
    ]
)
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
        return pd.DataFrame(columns=PREDICTION_SCHEMA.names)
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
    columns = list(predictions.columns) or PREDICTION_SCHEMA.names
    return pd.DataFrame(columns=[*columns, "churned", "observed_at", "received_at"])
