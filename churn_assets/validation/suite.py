"""Great Expectations suites: the curated Telco suite, derived baselines, and running them.

Running a suite gives one outcome per Dagster asset check.

Suites are Great Expectations 1.x JSON (what `ExpectationSuite.to_json_dict()` writes), so they can
be edited by hand with the GE documentation at hand. Each expectation names, in `meta.check`, the
Dagster asset check it belongs to.

Which suite checks a data set is decided once, on its first accepted version, and kept under the
platform home (`suites/<dataset>.json`): the curated Telco suite for a table with the Telco schema,
otherwise a baseline derived from that first version. Every later version is checked against the
same suite, so a broken batch fails instead of becoming the new normal.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churn.model.schema import plausible_range
from churn.tables import DataQuality
from churn_assets.telco import looks_like_telco

TELCO_SUITE_PATH = Path(__file__).with_name("suites") / "telco.json"
BUILTIN_TELCO = "builtin:telco"

REQUIRED_COLUMNS = "required_columns"
KEY_COLUMNS_NOT_NULL = "key_columns_not_null"
COLUMN_COMPLETENESS = "column_completeness"
CUSTOMER_KEY_UNIQUE = "customer_key_unique"
NUMERIC_RANGES = "numeric_ranges"
CATEGORICAL_VALUES = "categorical_values"
TARGET_IS_BINARY = "target_is_binary"
ROW_COUNT = "row_count"
DATA_QUALITY = "data_quality"

CHECKS: dict[str, str] = {
    REQUIRED_COLUMNS: "Every column the suite knows is present.",
    KEY_COLUMNS_NOT_NULL: "The customer key and the target have no missing values.",
    COLUMN_COMPLETENESS: "Every other column is filled at least as much as the suite requires.",
    CUSTOMER_KEY_UNIQUE: "Each customer appears once.",
    NUMERIC_RANGES: "Numeric columns stay within their plausible ranges.",
    CATEGORICAL_VALUES: "Categorical columns take only their known values.",
    TARGET_IS_BINARY: "The target is 0 (retained) or 1 (churned).",
    ROW_COUNT: "The number of rows is within bounds.",
    DATA_QUALITY: "The share of values coerced to missing (junk tokens, words in numbers) and of "
    "rows set aside, per column, stays near the first version's.",
}

# Expectations of the `data_quality` check run on a one-row table of shares (`DataQuality.shares`)
# rather than on the rows: `meta.batch` says so.
QUALITY_BATCH = "quality"
# A share may grow by this much (or double, when larger) before a version counts as broken.
QUALITY_MARGIN = 0.01

# Derived baselines: a categorical column has at most this many values, and a numeric range is
# widened by its own span on each side, so that drift is left to drift monitoring.
MAX_CATEGORIES = 50
MIN_ROWS = 100
MAX_ROWS = 50_000_000
COMPLETENESS_MARGIN = 0.05


@dataclass
class ExpectationOutcome:
    """One expectation's verdict, in words a person reads in the check's metadata."""

    expectation: str
    column: str
    observed: str
    expected: str
    success: bool


@dataclass
class CheckOutcome:
    """The verdict of one Dagster asset check: all its expectations passed, or not."""

    check: str
    expectations: list[ExpectationOutcome] = field(default_factory=list)
    not_evaluated: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Whether every evaluated expectation passed (a check with none passes).

        Expectations on a column the data lacks are not evaluated; the missing column fails
        `required_columns`, which blocks the data all the same.
        """
        return all(outcome.success for outcome in self.expectations)

    @property
    def failures(self) -> list[ExpectationOutcome]:
        """The expectations that failed."""
        return [outcome for outcome in self.expectations if not outcome.success]


def expectation(kind: str, check: str, **kwargs: Any) -> dict[str, Any]:
    """One expectation in GE's JSON form, tagged with the Dagster check it belongs to."""
    return {"type": kind, "kwargs": kwargs, "meta": {"check": check}}


def quality_expectations(
    columns: list[str], quality: DataQuality | None, key_columns: list[str]
) -> list[dict[str, Any]]:
    """Bounds on each column's coerced share (and the key's and target's set-aside share).

    A share may grow by `QUALITY_MARGIN`, or double when it is larger, from the version the
    suite is derived from.
    """
    shares = (quality or DataQuality()).shares(columns)
    expectations = []
    for column in columns:
        prefixes = ["coerced_share"] + (["quarantined_share"] if column in key_columns else [])
        for prefix in prefixes:
            share = shares[f"{prefix}__{column}"]
            item = expectation(
                "expect_column_values_to_be_between",
                DATA_QUALITY,
                column=f"{prefix}__{column}",
                min_value=0.0,
                max_value=math.ceil((share + max(share, QUALITY_MARGIN)) * 10_000) / 10_000,
            )
            item["meta"]["batch"] = QUALITY_BATCH
            expectations.append(item)
    return expectations


def derive_suite(
    frame: pd.DataFrame,
    name: str,
    target: str,
    id_column: str | None,
    quality: DataQuality | None = None,
    excluded: Sequence[str] = (),
) -> dict[str, Any]:
    """A baseline suite describing `frame`, for a data set with no curated suite.

    It requires what the platform uses: the target, the key and the model's inputs. Excluded
    columns (`CHURN_EXCLUDE_COLUMNS`) get no expectation at all: rows that arrive later
    (outcomes, landing files) need not carry them, since nothing reads them.
    """
    frame = frame.drop(columns=[c for c in excluded if c in frame.columns])
    expectations = [
        expectation(
            "expect_table_row_count_to_be_between",
            ROW_COUNT,
            min_value=min(MIN_ROWS, len(frame)),
            max_value=max(MAX_ROWS, 10 * len(frame)),
        ),
        expectation(
            "expect_column_values_to_be_in_set", TARGET_IS_BINARY, column=target, value_set=[0, 1]
        ),
    ]
    keys = [target] + ([id_column] if id_column else [])
    for column in frame.columns:
        expectations.append(
            expectation("expect_column_to_exist", REQUIRED_COLUMNS, column=str(column))
        )
        if column in keys:
            expectations.append(
                expectation(
                    "expect_column_values_to_not_be_null", KEY_COLUMNS_NOT_NULL, column=column
                )
            )
            continue
        values = frame[column]
        filled = float(values.notna().mean())
        expectations.append(
            expectation(
                "expect_column_values_to_not_be_null",
                COLUMN_COMPLETENESS,
                column=column,
                mostly=round(max(0.0, filled - COMPLETENESS_MARGIN), 4),
            )
        )
        expectations.extend(_value_expectations(column, values))
    if id_column:
        expectations.append(
            expectation("expect_column_values_to_be_unique", CUSTOMER_KEY_UNIQUE, column=id_column)
        )
    expectations += quality_expectations([str(c) for c in frame.columns], quality, keys)
    return {"name": name, "expectations": expectations, "meta": {"origin": "derived baseline"}}


def _value_expectations(column: str, values: pd.Series) -> list[dict[str, Any]]:
    present = values.dropna()
    if present.empty or pd.api.types.is_datetime64_any_dtype(values):
        # Dates: no set and no range, since the customers' dates move on; that they are dates
        # is normalisation's to establish, how they shift is drift monitoring's to watch.
        return []
    distinct = present.unique()
    if pd.api.types.is_bool_dtype(values) or (
        pd.api.types.is_numeric_dtype(values) and len(distinct) <= 2
    ):
        return [
            expectation(
                "expect_column_values_to_be_in_set",
                CATEGORICAL_VALUES,
                column=column,
                value_set=sorted(_plain(v) for v in distinct),
            )
        ]
    if pd.api.types.is_numeric_dtype(values):
        low, high = plausible_range(present)
        return [
            expectation(
                "expect_column_values_to_be_between",
                NUMERIC_RANGES,
                column=column,
                min_value=low,
                max_value=high,
            )
        ]
    if len(distinct) <= MAX_CATEGORIES and len(distinct) < 0.5 * len(present):
        return [
            expectation(
                "expect_column_values_to_be_in_set",
                CATEGORICAL_VALUES,
                column=column,
                value_set=sorted(str(v) for v in distinct),
            )
        ]
    return []


def _plain(value: object) -> object:
    """Numpy scalars as Python values, so that the suite serialises to JSON."""
    return value.item() if isinstance(value, np.generic) else value


class SuiteStore:
    """Which suite checks each data set, decided on its first accepted version."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def resolve(
        self,
        name: str,
        frame: pd.DataFrame,
        target: str,
        id_column: str | None,
        quality: DataQuality | None = None,
        excluded: Sequence[str] = (),
    ) -> tuple[dict[str, Any], str]:
        """The suite for data set `name`, and where it comes from (for the metadata)."""
        path = self._path(name)
        if path.exists():
            stored = json.loads(path.read_text())
            if stored.get("use") == BUILTIN_TELCO:
                return load_telco_suite(), f"curated Telco suite ({TELCO_SUITE_PATH.name})"
            return stored, f"suite of data set {name!r} ({path})"
        if looks_like_telco(list(frame.columns)):
            return load_telco_suite(), "curated Telco suite (first version of this data set)"
        return (
            derive_suite(frame, name, target, id_column, quality, excluded),
            "baseline derived from this version",
        )

    def stored(self, name: str) -> dict[str, Any] | None:
        """The suite kept for data set `name`, or None before its first validated version."""
        path = self._path(name)
        if not path.exists():
            return None
        stored: dict[str, Any] = json.loads(path.read_text())
        return load_telco_suite() if stored.get("use") == BUILTIN_TELCO else stored

    def adopt(self, name: str, suite: dict[str, Any]) -> Path | None:
        """Keep `suite` for data set `name` if it has none yet; return the path if written."""
        path = self._path(name)
        if path.exists():
            return None
        self.root.mkdir(parents=True, exist_ok=True)
        is_telco = suite.get("meta", {}).get("origin") == "curated Telco suite"
        content = {"use": BUILTIN_TELCO} if is_telco else suite
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(content, indent=2) + "\n")
        partial.replace(path)
        return path

    def _path(self, name: str) -> Path:
        return self.root / f"{name}.json"


def load_telco_suite() -> dict[str, Any]:
    """The curated, human-edited suite of the Telco schema."""
    suite: dict[str, Any] = json.loads(TELCO_SUITE_PATH.read_text())
    return suite


def run_suite(
    frame: pd.DataFrame,
    suite: dict[str, Any],
    quality: DataQuality | None = None,
    excluded: Sequence[str] = (),
) -> list[CheckOutcome]:
    """Validate `frame` with Great Expectations; one outcome per Dagster check, in CHECKS order.

    Expectations whose `meta.batch` is `quality` check the one-row table of `quality`'s shares.
    Expectations on `excluded` columns (nothing reads them) are left out: a suite kept from
    before a column was excluded does not hold later rows to it.
    """
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("churn")
    outcomes = {check: CheckOutcome(check) for check in CHECKS}
    required = {
        e["kwargs"]["column"]
        for e in suite["expectations"]
        if e["type"] == "expect_column_to_exist"
    }
    rows: list[dict[str, Any]] = []
    on_quality: list[dict[str, Any]] = []
    for item in suite["expectations"]:
        check = item.get("meta", {}).get("check")
        column = item["kwargs"].get("column")
        if check not in outcomes:
            raise ValueError(
                f"expectation {item['type']} on {column!r} names unknown check {check!r} "
                f"in meta.check; known checks: {', '.join(CHECKS)}"
            )
        if _about(column, excluded):
            continue
        if item.get("meta", {}).get("batch") == QUALITY_BATCH:
            on_quality.append(item)
            continue
        absent = column in required and column not in frame.columns
        if absent and item["type"] != "expect_column_to_exist":
            outcomes[check].not_evaluated.append(f"{item['type']} on {column} (column missing)")
        else:
            rows.append(item)

    batches = [("customers", frame, rows)]
    if on_quality:
        shares = (quality or DataQuality()).shares(frame.columns)
        wanted = [item["kwargs"]["column"] for item in on_quality]
        batches.append(
            (
                "quality",
                pd.DataFrame({name: [shares.get(name, 0.0)] for name in wanted}),
                on_quality,
            )
        )
    for name, data, expectations in batches:
        batch = (
            source.add_dataframe_asset(name)
            .add_batch_definition_whole_dataframe("all_rows")
            .get_batch(batch_parameters={"dataframe": data})
        )
        gx_suite = gx.ExpectationSuite(name=f"{suite['name']}-{name}", expectations=expectations)
        # BASIC has the counts and up to 20 unexpected values, which is all a failure says.
        # SUMMARY also counts each unexpected value and lists their rows: 1.7 times the
        # metrics, and 1.6 times the time on a 60-column table (benchmarks/README.md).
        result = batch.validate(gx_suite, result_format="BASIC")
        for expectation_result in result.results:
            assert expectation_result.expectation_config is not None
            check = expectation_result.expectation_config.meta["check"]
            outcomes[check].expectations.append(_outcome(expectation_result, data))
    return list(outcomes.values())


def _about(column: str | None, excluded: Sequence[str]) -> bool:
    """Whether an expectation on `column` is about one of the `excluded` columns."""
    if column is None:
        return False
    for prefix in ("coerced_share__", "quarantined_share__"):
        column = column.removeprefix(prefix)
    return column in excluded


def _outcome(expectation_result: Any, frame: pd.DataFrame) -> ExpectationOutcome:
    config = expectation_result.expectation_config
    kwargs = dict(config.kwargs)
    column = str(kwargs.get("column", "(table)"))
    result = expectation_result.result or {}
    raised = (expectation_result.exception_info or {}).get("raised_exception")
    if raised and column != "(table)" and column not in frame.columns:
        observed = "column missing"
    elif raised:
        message = (expectation_result.exception_info or {}).get("exception_message", "")
        observed = f"error: {message}"
    else:
        observed = _observed(config.type, result, frame, column)
    return ExpectationOutcome(
        expectation=config.type.removeprefix("expect_"),
        column=column,
        observed=observed,
        expected=_expected(config.type, kwargs),
        success=bool(expectation_result.success),
    )


def _observed(kind: str, result: dict[str, Any], frame: pd.DataFrame, column: str) -> str:
    if kind == "expect_column_to_exist":
        return "present" if column in frame.columns else "column missing"
    if kind == "expect_table_row_count_to_be_between":
        return f"{result.get('observed_value')} rows"
    unexpected = int(result.get("unexpected_count") or 0)
    share = float(result.get("unexpected_percent") or 0.0)
    if kind == "expect_column_values_to_not_be_null":
        return f"{unexpected} missing ({share:.2f}%)"
    if kind == "expect_column_values_to_be_unique":
        return f"{unexpected} duplicated values"
    # The first distinct unexpected values, in the order of the rows.
    examples = list(dict.fromkeys(str(v) for v in result.get("partial_unexpected_list") or []))[:5]
    if column.startswith(("coerced_share__", "quarantined_share__")) and column in frame.columns:
        return f"{float(frame[column].iloc[0]):.2%} of rows"
    if kind == "expect_column_values_to_be_between" and column in frame.columns:
        values = pd.to_numeric(frame[column], errors="coerce")
        span = f"min {values.min():.6g}, max {values.max():.6g}"
        return f"{span}; {unexpected} outside" + (
            f" (e.g. {', '.join(examples)})" if unexpected else ""
        )
    if unexpected:
        return f"{unexpected} unexpected ({share:.2f}%), e.g. {', '.join(examples)}"
    return "all expected"


def _expected(kind: str, kwargs: dict[str, Any]) -> str:
    mostly = kwargs.get("mostly")
    suffix = f" for at least {mostly:.0%} of rows" if mostly is not None and mostly < 1 else ""
    if kind == "expect_column_to_exist":
        return "present"
    if kind == "expect_table_row_count_to_be_between":
        return f"{kwargs.get('min_value')} to {kwargs.get('max_value')} rows"
    if kind == "expect_column_values_to_not_be_null":
        return "not null" + suffix
    if kind == "expect_column_values_to_be_unique":
        return "unique"
    if kind == "expect_column_values_to_be_between":
        return f"between {kwargs.get('min_value')} and {kwargs.get('max_value')}" + suffix
    if kind == "expect_column_values_to_be_in_set":
        return "one of " + ", ".join(str(v) for v in kwargs.get("value_set", [])) + suffix
    return json.dumps({k: v for k, v in kwargs.items() if k != "batch_id"}, default=str)
