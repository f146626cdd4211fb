"""The feature pipeline: raw customer records in, model features out, in one scikit-learn object.

It is fitted on the training split only and shipped inside every logged model, so the served model
takes the same raw records as `raw_customers` (snake_case columns) and computes its features
exactly as in training: there is no second implementation to drift apart.

- `RawRecords` keeps the feature columns (dropping the key, the target, excluded and unknown
  columns), reads numbers as numbers, text as text and dates as numbers of days, whatever the
  input's dtypes (Arrow strings and datetimes in training, Python objects and ISO 8601 text from
  JSON in serving).
- `TelcoFeatures` adds features where the Telco columns exist: the number of subscribed services,
  charges per month of tenure, tenure buckets.
- `FeatureEncoder` fills and standardises numbers (`MedianScaler`) and one-hot encodes
  categories (`OneHotCategories`), pooling rare categories and those unseen in training. They
  compute what scikit-learn's imputers, scaler, encoder and `ColumnTransformer` would (tests
  compare them), in a few vectorised steps: a served request of one record would otherwise
  spend most of its time in their per-call checks and dispatch.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import Pipeline

from churn.model.schema import parse_iso

# The Telco columns `TelcoFeatures` counts as subscribed services, when a table has them.
TELCO_ADDONS = (
    "online_security",
    "online_backup",
    "device_protection",
    "tech_support",
    "streaming_tv",
    "streaming_movies",
)
SERVICE_COLUMNS = ("phone_service", "multiple_lines", *TELCO_ADDONS)
TENURE_BUCKETS = (-np.inf, 12, 24, 48, np.inf)
TENURE_LABELS = ("0-12", "12-24", "24-48", "48+")
MISSING_CATEGORY = "__missing__"
# Up to this many records, per-value Python look-ups are faster than vectorised ones.
SMALL_BATCH = 32
# Records turned into features at a time when fitting or scoring many: the text of a chunk
# becomes one Python object per value on its way to the one-hot matrix (about 1 GiB per million
# Telco-shaped records), so a whole training split at once would need several GiB per million.
CHUNK_ROWS = 200_000


class RawRecords(BaseEstimator, TransformerMixin):  # type: ignore[misc]
    """Select the feature columns of raw records and give them their training types.

    Args:
        numeric: columns read as numbers (non-numbers become missing).
        categorical: columns read as text (missing stays missing).
        dates: columns read as dates (datetimes, or ISO 8601 text), handed on as the number of
            days since 1970-01-01 (UTC): a number the encoder fills and scales like any other,
            and the same number in training and serving, with nothing fitted.

    """

    def __init__(
        self,
        numeric: Sequence[str] = (),
        categorical: Sequence[str] = (),
        dates: Sequence[str] = (),
    ) -> None:
        self.numeric = numeric
        self.categorical = categorical
        self.dates = dates

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickled steps of format 0 predate date columns: they have none."""
        super().__setstate__({"dates": (), **state})

    def fit(self, records: pd.DataFrame, target: object = None) -> RawRecords:
        """Nothing to learn: the columns were chosen from the training split's schema."""
        return self

    def transform(self, records: pd.DataFrame) -> pd.DataFrame:
        """The feature columns, numbers as float64 and text as objects with NaN for missing."""
        # Whole-block numpy conversions rather than one pandas call per column: a served request
        # is often a single record, where per-column overhead would dominate its latency.
        columns: dict[str, Any] = {}
        for column in self.numeric:
            values = records[column]
            if not pd.api.types.is_numeric_dtype(values.dtype) or values.dtype == bool:
                values = pd.to_numeric(values, errors="coerce")
            columns[column] = np.asarray(values, dtype="float64")
        for column in self.dates:
            columns[column] = days_since_epoch(records[column])
        if self.categorical:
            text = records[list(self.categorical)].to_numpy(dtype=object)
            text[pd.isna(text)] = np.nan
            for position, column in enumerate(self.categorical):
                columns[column] = text[:, position]
        return pd.DataFrame(columns, index=records.index)

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        """Names of the columns `transform` returns."""
        return np.array([*self.numeric, *self.dates, *self.categorical], dtype=object)

    def feature_sources(self) -> list[tuple[str, tuple[str, ...]]]:
        """Each output column and the input columns it comes from (itself)."""
        return [(str(column), (str(column),)) for column in self.get_feature_names_out()]


_EPOCH = np.datetime64("1970-01-01", "ns")
_DAY = np.timedelta64(1, "D")
# What a nanosecond clock holds (pandas' range, 1677-09-21 to 2262-04-11): a time outside it is
# missing, for one record as for a million.
_EARLIEST = pd.Timestamp.min.ceil("us").to_pydatetime()
_LATEST = pd.Timestamp.max.floor("us").to_pydatetime()


def days_since_epoch(values: pd.Series | Sequence[Any]) -> np.ndarray:
    """Dates as float64 days since 1970-01-01 UTC; NaN where a value is missing or no date.

    Takes datetimes (with a time zone or, as training tables hold them, UTC without one) or ISO
    8601 text (`2024-03-15`, `2024-03-15T10:30:00Z`, `2024-03-15 10:30+02:00`), as requests
    send them.
    """
    if not isinstance(values, pd.Series | np.ndarray):  # a served request's few values
        return np.array([_days(value) for value in values], dtype="float64")
    series = pd.Series(values) if isinstance(values, np.ndarray) else values
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    if not pd.api.types.is_datetime64_any_dtype(series):
        # Text (requests, the prediction log), read value by value with the contract's own
        # reading (`parse_iso`): 2.1 s a million, where pandas' ISO 8601 parser reads a few
        # spellings the contract takes (`2024-03-15+05:00`) as nothing.
        return np.array([_days(value) for value in series.to_numpy(dtype=object)], "float64")
    stamps = series.to_numpy(dtype="datetime64[ns]")
    days = (stamps - _EPOCH) / _DAY
    return np.where(np.isnat(stamps), np.nan, days).astype("float64")


_EPOCH_TIME = datetime(1970, 1, 1)
_NANOSECONDS_A_DAY = 86_400 * 10**9


def _days(value: Any) -> float:
    """One value as `days_since_epoch` reads a column, to the bit (times to the microsecond)."""
    if isinstance(value, str):
        parsed = parse_iso(value)
        if parsed is None:
            return math.nan
        moment = parsed
    elif isinstance(value, datetime):  # pd.Timestamp too
        moment = value
    elif isinstance(value, np.datetime64) and not np.isnat(value):
        return float((value - _EPOCH) / _DAY)
    else:
        return math.nan  # missing
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    if not _EARLIEST <= moment <= _LATEST:
        return math.nan  # beyond a nanosecond clock, as pandas reads it
    delta = moment - _EPOCH_TIME
    nanoseconds = (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1_000
    nanoseconds += getattr(value, "nanosecond", 0)
    return float(nanoseconds) / float(_NANOSECONDS_A_DAY)


class TelcoFeatures(BaseEstimator, TransformerMixin):  # type: ignore[misc]
    """Add Telco-aware features; which ones is decided from the training schema.

    Args:
        services: yes/no service columns counted into `services_count` (none: not added).
        charges: add `charges_per_tenure_month` (needs tenure, monthly and total charges).
        tenure: add `tenure_bucket`.

    """

    def __init__(
        self, services: Sequence[str] = (), charges: bool = False, tenure: bool = False
    ) -> None:
        self.services = services
        self.charges = charges
        self.tenure = tenure

    def fit(self, records: pd.DataFrame, target: object = None) -> TelcoFeatures:
        """Nothing to learn: every feature is a fixed function of one record."""
        return self

    def transform(self, records: pd.DataFrame) -> pd.DataFrame:
        """The records with the engineered features appended."""
        added: dict[str, np.ndarray] = {}
        if self.services:
            subscribed = records[list(self.services)].to_numpy(dtype=object) == "Yes"
            added["services_count"] = subscribed.sum(axis=1).astype("float64")
        if self.charges or self.tenure:
            tenure = records["tenure"].to_numpy(dtype="float64")
        if self.charges:
            total = records["total_charges"].to_numpy(dtype="float64")
            monthly = records["monthly_charges"].to_numpy(dtype="float64")
            charges = np.where(np.isnan(total), monthly, total)
            added["charges_per_tenure_month"] = charges / np.maximum(tenure, 1)
        if self.tenure:
            added["tenure_bucket"] = tenure_buckets(tenure)
        if not added:
            return records
        return pd.concat([records, pd.DataFrame(added, index=records.index)], axis=1)

    def feature_sources(self) -> list[tuple[str, tuple[str, ...]]]:
        """Each added feature and the raw columns it is computed from (inputs pass through).

        Explanations attribute an added feature's contribution to those columns.
        """
        sources: list[tuple[str, tuple[str, ...]]] = []
        if self.services:
            sources.append(("services_count", tuple(self.services)))
        if self.charges:
            sources.append(
                ("charges_per_tenure_month", ("total_charges", "monthly_charges", "tenure"))
            )
        if self.tenure:
            sources.append(("tenure_bucket", ("tenure",)))
        return sources

    def engineered(self) -> tuple[list[str], list[str]]:
        """The numeric and categorical features this step adds."""
        numeric = ["services_count"] if self.services else []
        numeric += ["charges_per_tenure_month"] if self.charges else []
        return numeric, ["tenure_bucket"] if self.tenure else []


class OneHotCategories(BaseEstimator, TransformerMixin):  # type: ignore[misc]
    """One-hot encode text columns: missing is a category, rare and unseen ones share a column.

    Equivalent to `SimpleImputer(strategy="constant")` followed by `OneHotEncoder(
    handle_unknown="infrequent_if_exist", min_frequency=...)` (a test holds it to that), in one
    vectorised step: scikit-learn's pair spends about 3 ms per call on per-column checks, which a
    served request of one record cannot amortise.

    Args:
        min_frequency: categories seen fewer times in training share one `<column>_infrequent`
            column, with categories never seen in training.

    """

    def __init__(self, min_frequency: int = 5) -> None:
        self.min_frequency = min_frequency

    def fit(self, records: pd.DataFrame, target: object = None) -> OneHotCategories:
        """Learn each column's frequent categories (sorted) and whether it has rare ones."""
        frame = pd.DataFrame(records)
        return self.fit_counts([str(c) for c in frame.columns], category_counts(frame))

    def fit_counts(self, columns: Sequence[str], counts: Sequence[pd.Series]) -> OneHotCategories:
        """Learn from each column's category counts (`category_counts`, summed over chunks)."""
        self.feature_names_in_ = np.array(list(columns), dtype=object)
        self.categories_: list[list[Any]] = []
        self.infrequent_categories_: list[list[Any]] = []
        for counted in counts:
            self.categories_.append(
                sorted((c for c, n in counted.items() if n >= self.min_frequency), key=str)
            )
            self.infrequent_categories_.append(
                sorted((c for c, n in counted.items() if n < self.min_frequency), key=str)
            )
        return self

    @property
    def _lookups(self) -> list[tuple[pd.Index, dict[Any, int]]]:
        # Built on first use rather than pickled: older pickles lack it, and it is cheap.
        lookups: list[tuple[pd.Index, dict[Any, int]]] | None = self.__dict__.get("_lookup_cache")
        if lookups is None:
            lookups = [
                (pd.Index(categories), {category: i for i, category in enumerate(categories)})
                for categories in self.categories_
            ]
            self.__dict__["_lookup_cache"] = lookups
        return lookups

    def transform(self, records: pd.DataFrame | np.ndarray) -> np.ndarray:
        """A dense 0/1 matrix, one block of columns per input column."""
        values = _matrix(records, object)
        widths = [
            len(c) + bool(i)
            for c, i in zip(self.categories_, self.infrequent_categories_, strict=True)
        ]
        encoded = np.zeros((len(values), sum(widths)), dtype="float64")
        rows = np.arange(len(values))
        offset = 0
        for position, ((index, codes_of), width) in enumerate(
            zip(self._lookups, widths, strict=True)
        ):
            column = _with_missing(values[:, position])
            if len(column) <= SMALL_BATCH:  # a dict beats a hash-table index on a few values
                codes = np.array([codes_of.get(value, -1) for value in column], dtype=np.intp)
            else:
                codes = index.get_indexer(pd.Index(column))
            if width > len(codes_of):  # rare and unseen categories go to the shared column
                codes = np.where(codes < 0, width - 1, codes)
            known = codes >= 0
            encoded[rows[known], offset + codes[known]] = 1.0
            offset += width
        return encoded

    def seen_categories(self) -> dict[str, set[Any]]:
        """Every category each column took in training, frequent or rare."""
        return {
            str(column): {*frequent, *rare} - {MISSING_CATEGORY}
            for column, frequent, rare in zip(
                self.feature_names_in_, self.categories_, self.infrequent_categories_, strict=True
            )
        }

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        """`<column>_<category>` per frequent category, then `<column>_infrequent` if any."""
        names = []
        for column, frequent, rare in zip(
            self.feature_names_in_, self.categories_, self.infrequent_categories_, strict=True
        ):
            names += [f"{column}_{category}" for category in frequent]
            names += [f"{column}_infrequent"] if rare else []
        return np.array(names, dtype=object)


class MedianScaler(BaseEstimator, TransformerMixin):  # type: ignore[misc]
    """Fill missing numbers with the training median, then standardise with training statistics.

    Equivalent to `SimpleImputer(strategy="median")` followed by `StandardScaler()` (a test holds
    it to that), without their per-call input validation.
    """

    def fit(self, records: pd.DataFrame, target: object = None) -> MedianScaler:
        """Learn each column's median, then the mean and spread of the filled column."""
        values = pd.DataFrame(records).to_numpy(dtype="float64")
        self.feature_names_in_ = np.array([str(c) for c in pd.DataFrame(records).columns])
        with warnings.catch_warnings():  # an all-missing column gets 0, not a warning
            warnings.simplefilter("ignore", RuntimeWarning)
            self.median_ = np.nan_to_num(np.nanmedian(values, axis=0))
        filled = np.where(np.isnan(values), self.median_, values)
        self.mean_ = filled.mean(axis=0)
        spread = filled.std(axis=0)
        self.scale_ = np.where(spread > 0, spread, 1.0)
        return self

    def transform(self, records: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Filled and standardised numbers."""
        values = _matrix(records, "float64")
        filled = np.where(np.isnan(values), self.median_, values)
        scaled: np.ndarray = (filled - self.mean_) / self.scale_
        return scaled

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        """The input column names."""
        return np.array(self.feature_names_in_, dtype=object)


class FeatureEncoder(BaseEstimator, TransformerMixin):  # type: ignore[misc]
    """The model's input matrix: standardised numbers, then one-hot categories.

    What a `ColumnTransformer` of `MedianScaler` and `OneHotCategories` would compute, without
    its per-call joblib dispatch, which alone costs about 1.5 ms: most of the time a served
    single record takes to score.

    Args:
        numeric: columns filled and standardised.
        categorical: columns one-hot encoded.
        min_frequency: see `OneHotCategories`.

    """

    def __init__(
        self, numeric: Sequence[str] = (), categorical: Sequence[str] = (), min_frequency: int = 5
    ) -> None:
        self.numeric = numeric
        self.categorical = categorical
        self.min_frequency = min_frequency

    def fit(self, records: pd.DataFrame, target: object = None) -> FeatureEncoder:
        """Learn the numbers' statistics and the categories, on training records only."""
        self.numbers_ = MedianScaler().fit(records[list(self.numeric)])
        self.one_hot_ = OneHotCategories(self.min_frequency).fit(records[list(self.categorical)])
        return self

    def transform(self, records: pd.DataFrame) -> np.ndarray:
        """One row of model inputs per record."""
        # Column by column: selecting a list of columns makes pandas copy a whole new frame.
        numbers = _stack(records, self.numeric, "float64")
        text = _stack(records, self.categorical, object)
        return np.hstack([self.numbers_.transform(numbers), self.one_hot_.transform(text)])

    def feature_sources(self) -> list[tuple[str, tuple[str, ...]]]:
        """Each column of the model's input matrix, in order, and the feature it encodes."""
        names = self.get_feature_names_out()
        widths = [
            len(frequent) + bool(rare)
            for frequent, rare in zip(
                self.one_hot_.categories_, self.one_hot_.infrequent_categories_, strict=True
            )
        ]
        encoded = [*self.numeric]
        for column, width in zip(self.categorical, widths, strict=True):
            encoded += [column] * width
        return [(str(name), (column,)) for name, column in zip(names, encoded, strict=True)]

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        """Numeric column names, then `<column>_<category>` names."""
        return np.array([*self.numeric, *self.one_hot_.get_feature_names_out()], dtype=object)


def category_counts(records: pd.DataFrame) -> list[pd.Series]:
    """How often each category (missing included) occurs, per column of `records`."""
    return [
        pd.Series(_with_missing(records[column].to_numpy(dtype=object))).value_counts()
        for column in records.columns
    ]


def fit_features(features: Pipeline, records: pd.DataFrame, chunk_rows: int = CHUNK_ROWS) -> None:
    """Fit a feature pipeline (`build_feature_pipeline`) on `records`, a chunk at a time.

    What `features.fit(records)` learns, exactly: the steps before the encoder learn nothing, the
    categories' counts add up over chunks and the numbers (a few columns of floats) are gathered
    whole for their medians. Only one chunk's text is ever held as Python objects.
    """
    if len(records) == 0:
        features.fit(records)
        return
    *steps, (_, encode) = features.steps
    prefix = Pipeline(steps)
    numbers, counts = [], [pd.Series(dtype="int64") for _ in encode.categorical]
    for chunk in _chunks(records, chunk_rows):
        made = prefix.fit_transform(chunk)
        numbers.append(_stack(made, encode.numeric, "float64"))
        for position, counted in enumerate(category_counts(made[list(encode.categorical)])):
            counts[position] = counts[position].add(counted, fill_value=0)
    encode.numbers_ = MedianScaler().fit(
        pd.DataFrame(np.vstack(numbers), columns=list(encode.numeric))
    )
    encode.one_hot_ = OneHotCategories(encode.min_frequency).fit_counts(
        [str(c) for c in encode.categorical], counts
    )


def fit_in_chunks(
    pipeline: Pipeline, records: pd.DataFrame, labels: pd.Series, chunk_rows: int = CHUNK_ROWS
) -> Pipeline:
    """Fit a `features` then `model` pipeline as `pipeline.fit` does, in bounded memory.

    The features are fitted chunk by chunk (`fit_features`) and the estimator's matrix is filled
    chunk by chunk: the matrix itself is the only thing the size of the whole split.
    """
    features, model = pipeline.named_steps["features"], pipeline.named_steps["model"]
    fit_features(features, records, chunk_rows)
    model.fit(transform_in_chunks(features, records, chunk_rows), np.asarray(labels))
    return pipeline


def transform_in_chunks(
    features: Pipeline, records: pd.DataFrame, chunk_rows: int = CHUNK_ROWS
) -> np.ndarray:
    """`features.transform(records)`, one chunk at a time into one matrix."""
    matrix: np.ndarray | None = None
    for chunk_start in range(0, len(records), chunk_rows):
        chunk = records.iloc[chunk_start : chunk_start + chunk_rows]
        encoded = features.transform(chunk)
        if matrix is None:
            matrix = np.empty((len(records), encoded.shape[1]), dtype=encoded.dtype)
        matrix[chunk_start : chunk_start + len(chunk)] = encoded
    return matrix if matrix is not None else features.transform(records)


def predict_in_chunks(
    pipeline: Pipeline, records: pd.DataFrame, chunk_rows: int = CHUNK_ROWS
) -> np.ndarray:
    """`pipeline.predict_proba(records)[:, 1]`, one chunk of records at a time."""
    if len(records) <= chunk_rows:
        return np.asarray(pipeline.predict_proba(records)[:, 1])
    return np.concatenate(
        [pipeline.predict_proba(chunk)[:, 1] for chunk in _chunks(records, chunk_rows)]
    )


def _chunks(records: pd.DataFrame, chunk_rows: int) -> list[pd.DataFrame]:
    """`records` in consecutive slices of at most `chunk_rows` rows (views, not copies)."""
    return [
        records.iloc[start : start + chunk_rows] for start in range(0, len(records), chunk_rows)
    ]


def _matrix(records: pd.DataFrame | np.ndarray, dtype: Any) -> np.ndarray:
    """A frame's values, or a matrix as it is, with the given dtype."""
    if isinstance(records, pd.DataFrame):
        return records.to_numpy(dtype=dtype)
    return np.asarray(records, dtype=dtype)


def _stack(records: pd.DataFrame, columns: Sequence[str], dtype: Any) -> np.ndarray:
    """The given columns of a frame as one matrix."""
    if not columns:
        return np.empty((len(records), 0), dtype=dtype)
    return np.column_stack([records[column].to_numpy(dtype=dtype) for column in columns])


def _with_missing(values: np.ndarray) -> np.ndarray:
    """Text values with missing ones (None, NaN, pd.NA) replaced by the missing category."""
    values = values.copy()
    values[pd.isna(values)] = MISSING_CATEGORY
    return values


def tenure_buckets(tenure: np.ndarray) -> np.ndarray:
    """The tenure bucket of each tenure in months (`[low, high)` as labelled); NaN when missing."""
    edges = np.asarray(TENURE_BUCKETS)
    position = np.searchsorted(edges, tenure, side="right") - 1
    labels = np.array([*TENURE_LABELS, np.nan], dtype=object)
    outside = np.isnan(tenure) | (position < 0) | (position >= len(TENURE_LABELS))
    return labels[np.where(outside, len(TENURE_LABELS), position)]


def feature_columns(
    frame: pd.DataFrame, target: str, id_column: str | None, excluded: Sequence[str]
) -> tuple[list[str], list[str], list[str]]:
    """Numeric, categorical and date feature columns: all but the key, target and exclusions."""
    dropped = {target, *excluded} | ({id_column} if id_column else set())
    numeric, categorical, dates = [], [], []
    for column in frame.columns:
        if column in dropped:
            continue
        values = frame[column]
        if pd.api.types.is_datetime64_any_dtype(values):
            dates.append(str(column))
        elif pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
            categorical.append(str(column))
        else:
            numeric.append(str(column))
    return numeric, categorical, dates


def build_feature_pipeline(
    numeric: Sequence[str], categorical: Sequence[str], dates: Sequence[str] = ()
) -> Pipeline:
    """An unfitted pipeline from raw records to a numeric feature matrix."""
    telco = TelcoFeatures(
        services=[column for column in SERVICE_COLUMNS if column in categorical],
        charges={"tenure", "monthly_charges", "total_charges"} <= set(numeric),
        tenure="tenure" in numeric,
    )
    engineered_numeric, engineered_categorical = telco.engineered()
    encode = FeatureEncoder(
        numeric=[*numeric, *dates, *engineered_numeric],
        categorical=[*categorical, *engineered_categorical],
        min_frequency=5,
    )
    return Pipeline(
        [
            (
                "raw_records",
                RawRecords(numeric=list(numeric), categorical=list(categorical), dates=list(dates)),
            ),
            ("telco_features", telco),
            ("encode", encode),
        ]
    )
