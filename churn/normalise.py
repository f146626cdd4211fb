"""Normalisation of a raw churn table: one shape for every source, and messy rows set aside.

Every data set goes through the same steps, whatever its source, so that the rest of the platform
(validation, features, serving) sees one shape: snake_case column names, numbers as numbers, text
as Arrow-backed strings, and a 0/1 integer target. Real exports are dirty, so the same steps
repair what can be repaired and set aside, with a reason, the rows that cannot be used:

- **Junk tokens** (`?`, `-`, `n/a`, `null`, `#N/A`, `#VALUE!`, blanks, ...) are missing values, in
  any column.
- **Numbers with junk**: a text column whose non-blank values parse as numbers for at least
  `numeric_min_share` (0.99) of them is numeric; the values that do not parse become missing.
  Below that share the column stays text, and the report says which share parsed.
- **Numbers as people write them**: a decimal comma (`34,67`, `1.234,5`), thousands separators
  (`1,234.50`, `1 234,50`, `1'234.50`), a currency sign (`$12.50`, `12,50 €`) or a percent sign
  (`12%`, read as 12) are read as numbers, one convention per column, and the report says which.
- **Dates**: a text column whose values are dates or times in one spelling (`2024-03-15`,
  `2024-03-15T10:30:00Z`, `15/03/2024`, `03/15/2024`, `15.03.2024 10:30`, ...) for at least
  `numeric_min_share` of them holds dates (UTC, without a time zone); the others become
  missing. Day and month are told apart by the values (a first field above 12 is a day); when
  no value tells, the day is read first and the report says so.
- **Codes are not numbers**: integers spelled with a leading zero (`02139`, `00012345`) are zip
  codes, account numbers or phone numbers; such a column stays text, so the zeros are kept.
- **Rows that cannot be used** are quarantined, not the file: a missing or unrecognised target, a
  missing customer key, a key repeated with different values. Exact duplicate rows of a customer
  are dropped and counted. The table fails only when more than `max_quarantine_share` (1 %) of its
  rows are set aside, with a message naming each reason and its count.

The report says, per column, what was coerced (counts and up to five example values), and holds
the quarantined rows with a reason each: the asset shows both, and both are part of the data
version.
"""

from __future__ import annotations

import re
import unicodedata
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from churn.errors import DatasetError
from churn.tables import DataQuality

# Values read as the positive (churned) class when no positive label is configured.
DEFAULT_POSITIVE_LABELS = frozenset({"yes", "true", "1", "1.0", "y", "t"})
DEFAULT_NEGATIVE_LABELS = frozenset({"no", "false", "0", "0.0", "n", "f"})

# Column names taken as the customer key when none is configured (normalised spelling).
KEY_COLUMN_NAMES = ("customer_id", "customerid", "client_id", "customer_key", "account_id")

# Spreadsheet and database spellings of "no value", compared stripped and case-insensitively.
# Blank text (empty or whitespace) is missing too, but counts as an ordinary missing value.
JUNK_TOKENS = frozenset(
    {
        "?",
        "??",
        "-",
        "--",
        "---",
        "n/a",
        "na",
        "n.a.",
        "nan",
        "null",
        "none",
        "nil",
        "<na>",
        "#n/a",
        "#na",
        "#n/a n/a",
        "#value!",
        "#null!",
        "#div/0!",
        "#ref!",
        "#name?",
        "#num!",
        "-nan",
        "1.#ind",
        "1.#qnan",
    }
)
DEFAULT_NUMERIC_MIN_SHARE = 0.99
DEFAULT_MAX_QUARANTINE_SHARE = 0.01
EXAMPLES = 5

# Why a row was set aside (the `quarantine_reason` of the quarantine file).
MISSING_TARGET = "missing target"
UNRECOGNISED_TARGET = "unrecognised target"
MISSING_KEY = "missing customer key"
CONFLICTING_KEY = "customer key repeated with different values"
MALFORMED_ROW = "row without the header's number of fields"
QUARANTINE_REASON = "quarantine_reason"
# A malformed row is set aside as the file spelled it, in this column of the quarantine.
RAW_ROW = "raw_row"
# The `attrs` key under which a reader hands on a file's malformed rows (their text).
MALFORMED_ROWS = "malformed_rows"
# The `attrs` key under which a reader names the columns it left out, and why.
DROPPED_COLUMNS = "dropped_columns"

_ACRONYM_BOUNDARY = re.compile(r"([A-Z]+)([A-Z][a-z])")
_WORD_BOUNDARY = re.compile(r"([a-z0-9])([A-Z])")
# Letters and digits of any script are kept; everything else separates words.
_NOT_ALPHANUMERIC = re.compile(r"[\W_]+")

# Arrow strings hold a million short values in a few MB where Python objects take ~60 MB, and
# pickle, compare and hash an order of magnitude faster.
TEXT_DTYPE = pd.StringDtype("pyarrow")
# Non-blank values tried before a whole text column is parsed as numbers.
COERCION_SAMPLE = 1_000


def snake_case(name: str) -> str:
    """`MonthlyCharges` -> `monthly_charges`, `customerID` -> `customer_id`, `No.` -> `no`.

    Accents are dropped (`Monatsgebühr` -> `monatsgebuhr`, `Durée` -> `duree`, `Straße` ->
    `strasse`), so that a name a client types stays plain; letters of other scripts are kept as
    they are (`Тариф` -> `тариф`), never dropped.
    """
    decomposed = unicodedata.normalize("NFKD", str(name).strip())
    name = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    name = _ACRONYM_BOUNDARY.sub(r"\1_\2", name)
    name = _WORD_BOUNDARY.sub(r"\1_\2", name)
    return _NOT_ALPHANUMERIC.sub("_", name).strip("_").casefold()


@dataclass(frozen=True)
class CleaningRules:
    """How tolerant normalisation is of messy values (`CHURN_NUMERIC_MIN_SHARE`, ...).

    Attributes:
        numeric_min_share: a text column is numeric when at least this share of its non-blank
            values parse as numbers; the others become missing.
        max_quarantine_share: the table fails when more than this share of its rows is set aside.

    """

    numeric_min_share: float = DEFAULT_NUMERIC_MIN_SHARE
    max_quarantine_share: float = DEFAULT_MAX_QUARANTINE_SHARE

    def __post_init__(self) -> None:
        if not 0 < self.numeric_min_share <= 1:
            raise ValueError(f"numeric_min_share must be in (0, 1], not {self.numeric_min_share}")
        if not 0 <= self.max_quarantine_share <= 1:
            raise ValueError(
                f"max_quarantine_share must be in [0, 1], not {self.max_quarantine_share}"
            )


@dataclass
class ColumnCoercion:
    """What normalisation did to one column's values.

    Attributes:
        kind: `number`, `date` or `text`, what the column became.
        junk: non-blank junk tokens (`?`, `n/a`, ...) read as missing, and up to five of them.
        unparsed: values of a numeric (date) column that are not numbers (dates), now missing,
            and examples.
        blank: blank values (empty or whitespace) now missing.
        parsed_share: for a text column, the share of its non-blank values that are numbers.
        spelling: for a numeric column read from text not spelled as plain numbers, how its
            numbers were spelled (`decimal comma`, `thousands separators`, `currency sign`, ...).
        leading_zeros: for a column of integers kept as text, values with a leading zero.

    """

    kind: str
    junk: int = 0
    junk_examples: list[str] = field(default_factory=list)
    unparsed: int = 0
    unparsed_examples: list[str] = field(default_factory=list)
    blank: int = 0
    parsed_share: float | None = None
    spelling: str = ""
    leading_zeros: list[str] = field(default_factory=list)

    @property
    def coerced(self) -> int:
        """Values that were there, not blank, and are now missing."""
        return self.junk + self.unparsed

    def describe(self, min_share: float) -> str:
        """What happened, in words, for the asset's metadata."""
        parts = []
        if self.junk:
            parts.append(
                f"{self.junk} junk value(s) read as missing ({_shown(self.junk_examples)})"
            )
        if self.unparsed:
            what = "non-date(s)" if self.kind == "date" else "non-number(s)"
            parts.append(
                f"{self.unparsed} {what} read as missing ({_shown(self.unparsed_examples)})"
            )
        if self.blank:
            parts.append(f"{self.blank} blank value(s) read as missing")
        if self.spelling and self.kind == "date":
            parts.append(f"read as dates written {self.spelling}")
        elif self.spelling:
            parts.append(f"read as numbers written with {self.spelling}")
        if self.leading_zeros:
            parts.append(
                f"kept as text: integers spelled with leading zeros ({_shown(self.leading_zeros)})"
                " are codes, not numbers"
            )
        elif self.kind == "text" and self.parsed_share:
            parts.append(
                f"kept as text: {self.parsed_share:.1%} of its values are numbers "
                f"(numeric needs {min_share:.0%}, CHURN_NUMERIC_MIN_SHARE)"
            )
        return "; ".join(parts)


@dataclass
class NormalisationReport:
    """What normalisation changed and set aside, for the asset's metadata and the data version.

    Attributes:
        renamed: original column name -> snake_case name, for the names that changed.
        columns: column -> what was coerced in it (only columns where something was).
        numeric_text: column -> number of text values turned into numbers.
        positive_label, negative_label: the target values read as churned (1) and retained (0).
        id_column: the customer key column, if any.
        rows_read: rows in the table as read.
        quarantine: the rows set aside, with a `quarantine_reason` (target as written).
        duplicates_dropped: exact duplicate rows of a customer, dropped.
        rules: the tolerances applied.
        dropped_columns: columns the reader left out (a trailing delimiter's, a saved index),
            and why.

    """

    renamed: dict[str, str] = field(default_factory=dict)
    columns: dict[str, ColumnCoercion] = field(default_factory=dict)
    numeric_text: dict[str, int] = field(default_factory=dict)
    positive_label: str = ""
    negative_label: str = ""
    id_column: str | None = None
    rows_read: int = 0
    quarantine: pd.DataFrame = field(default_factory=pd.DataFrame)
    duplicates_dropped: int = 0
    rules: CleaningRules = field(default_factory=CleaningRules)
    unrecognised_labels: list[str] = field(default_factory=list)
    dropped_columns: dict[str, str] = field(default_factory=dict)

    @property
    def coerced(self) -> dict[str, int]:
        """Column -> values that were there, not blank, and are now missing."""
        return {c: info.coerced for c, info in self.columns.items() if info.coerced}

    @property
    def became_missing(self) -> dict[str, int]:
        """Column -> blank values that became missing when the column became numeric."""
        return {c: info.blank for c, info in self.columns.items() if info.blank}

    def reasons(self) -> dict[str, int]:
        """Rows set aside, by reason, most frequent first."""
        if self.quarantine.empty:
            return {}
        return dict(Counter(self.quarantine[QUARANTINE_REASON]).most_common())

    def quality(self, target: str) -> DataQuality:
        """The data-quality figures of the normalised table."""
        return DataQuality(
            rows_read=self.rows_read,
            coerced=self.coerced,
            quarantined=self.reasons(),
            quarantined_by_column=self.quarantined_by_column(target),
            duplicates_dropped=self.duplicates_dropped,
        )

    def quarantined_by_column(self, target: str) -> dict[str, int]:
        """Rows set aside, by the column that caused it (the target or the key)."""
        counts: dict[str, int] = {}
        for reason, count in self.reasons().items():
            column = (
                target
                if reason in (MISSING_TARGET, UNRECOGNISED_TARGET)
                else self.id_column
                if reason in (MISSING_KEY, CONFLICTING_KEY)
                else None
            )
            if column:
                counts[column] = counts.get(column, 0) + count
        return counts


def set_aside_malformed(frame: pd.DataFrame, report: NormalisationReport) -> pd.DataFrame:
    """Quarantine the rows a reader could not split into the header's fields (`MALFORMED_ROWS`).

    Each is kept as the file spelled it (`raw_row`) and counts as a row read, so that the
    tolerated share of rows set aside applies to them too. Returns the frame without them in its
    `attrs` (pandas copies `attrs` into every frame derived from it).
    """
    malformed = frame.attrs.get(MALFORMED_ROWS)
    if not malformed:
        return frame
    frame = frame.copy(deep=False)
    frame.attrs = {}
    report.rows_read += len(malformed)
    _quarantine(
        report, pd.DataFrame({RAW_ROW: pd.array(malformed, dtype=TEXT_DTYPE)}), MALFORMED_ROW
    )
    return frame


def normalise_columns(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """Rename columns to snake_case; two columns that end with the same name are an error."""
    names = [str(column) for column in frame.columns]
    blank = [index for index, name in enumerate(names) if not snake_case(name)]
    if blank:
        raise DatasetError(
            f"column(s) at position {', '.join(str(i + 1) for i in blank)} have no usable name"
        )
    normalised = [snake_case(name) for name in names]
    clashes = {name: count for name, count in Counter(normalised).items() if count > 1}
    if clashes:
        pairs = list(zip(names, normalised, strict=True))
        detail = "; ".join(
            ", ".join(repr(original) for original, new in pairs if new == name) + f" -> {name!r}"
            for name in clashes
        )
        raise DatasetError(f"duplicated column names: {detail}")
    renamed = {old: new for old, new in zip(names, normalised, strict=True) if old != new}
    return frame.set_axis(normalised, axis=1), renamed


def missing_tokens(text: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Which values of a text column are blank, and which are junk tokens (both: missing).

    Decided once per distinct value, then looked up: a column of a million values usually holds
    a few hundred distinct ones.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    values = pa.array(text, type=pa.large_string(), from_pandas=True)
    distinct = pc.unique(values).drop_null()
    stripped = pc.utf8_trim_whitespace(distinct)
    blank_values = distinct.filter(pc.equal(stripped, ""))
    junk_values = distinct.filter(pc.is_in(pc.utf8_lower(stripped), pa.array(list(JUNK_TOKENS))))
    nothing = pd.Series(False, index=text.index)
    blank = (
        pd.Series(pc.is_in(values, blank_values).to_numpy(zero_copy_only=False), index=text.index)
        if len(blank_values)
        else nothing
    )
    junk = (
        pd.Series(pc.is_in(values, junk_values).to_numpy(zero_copy_only=False), index=text.index)
        if len(junk_values)
        else nothing
    )
    return blank, junk


def coerce_text_column(
    values: pd.Series, min_share: float, numeric: bool | None = None
) -> tuple[pd.Series, ColumnCoercion]:
    """One text column with junk read as missing, as numbers or as Arrow text.

    Args:
        values: the raw column (object or string dtype).
        min_share: share of non-blank values that must parse for the column to be numeric.
        numeric: the kind the column must have (a landing file follows its source's types);
            None: numeric when at least `min_share` of the values parse, and no integer is
            spelled with a leading zero. A forced numeric column is parsed whatever the share;
            `parsed_share` tells the caller.

    """
    text = values.astype(TEXT_DTYPE)
    blank, junk = missing_tokens(text)
    info = ColumnCoercion(kind="text", blank=int(blank.sum()), junk=int(junk.sum()))
    info.junk_examples = _examples(text[junk])
    kept = text.mask(blank | junk) if info.blank or info.junk else text
    if numeric is False:
        return kept, info
    if numeric is None:
        sample = kept.dropna().head(COERCION_SAMPLE).str.strip()
        sampled, _ = parse_numbers(sample, min_share)
        sampled_share = float(sampled.notna().mean() or 0.0)
        if sample.empty or sampled_share < min_share:
            info.parsed_share = sampled_share if not sample.empty else None
            written = date_format(sample, min_share)
            if written is not None:
                return coerce_dates(kept, written, text, info)
            return kept, info
    stripped = kept.str.strip()
    numbers, info.spelling = parse_numbers(stripped, min_share)
    unparsed = (kept.notna() & numbers.isna()).fillna(False).astype(bool)
    info.parsed_share = 1.0 - float(unparsed.sum()) / max(int(kept.notna().sum()), 1)
    if numeric is None and info.parsed_share < min_share:
        info.spelling = ""
        return kept, info
    if numeric is None:
        padded = stripped.str.fullmatch(LEADING_ZERO).fillna(False).astype(bool)
        if padded.any():
            info.leading_zeros = _examples(stripped[padded])
            info.spelling = ""
            return kept, info
    info.kind = "number"
    info.unparsed = int(unparsed.sum())
    info.unparsed_examples = _examples(text[unparsed])
    return _narrowest_numeric(numbers), info


# Integers spelled with a leading zero: codes (zip codes, account and phone numbers, spaces
# between digit groups included), not quantities.
LEADING_ZERO = "[+-]?0[0-9][0-9 \u00a0\u202f'\u2019]*"
# Signs around a number that say its unit, not its value.
_CURRENCY_SIGNS = "$€£¥"
_UNIT_SIGNS = _CURRENCY_SIGNS + "%"
# A thousands separator between digit groups: a space (plain, no-break, narrow no-break) or an
# apostrophe; commas and dots are told apart below.
_GROUP_SPACE = "([0-9])[ \u00a0\u202f'\u2019]([0-9]{3})"
# `1.234,5` and `1234,5` (a decimal comma, dots between thousands), and `1,234.5` (commas
# between thousands, a decimal point).
_DECIMAL_COMMA = r"[+-]?([0-9]{1,3}(\.[0-9]{3})+|[0-9]+)(,[0-9]+)?"
_DECIMAL_POINT = r"[+-]?([0-9]{1,3}(,[0-9]{3})+|[0-9]+)(\.[0-9]+)?"


def parse_numbers(text: pd.Series, min_share: float) -> tuple[pd.Series, str]:
    """The numbers a column of stripped text spells, and how they were spelled when not plainly.

    Plain numbers (`1234.5`, `-1e3`) first. When fewer than `min_share` of the values are
    plain, the column may be written as people write numbers: with a decimal comma, thousands
    separators, a currency or percent sign. One convention is chosen for the whole column, the
    one most of its values follow; a value that follows neither is missing. Returns float64
    numbers (missing where a value does not parse) and "" or the spelling, in words.
    """
    plain = pd.to_numeric(text, errors="coerce")
    present = int(text.notna().sum())
    if not present or int(plain.notna().sum()) >= min_share * present:
        return plain, ""
    currency = text.str.contains(f"[{re.escape(_CURRENCY_SIGNS)}]", regex=True).fillna(False)
    percent = text.str.contains("%", regex=False).fillna(False)
    written = text.str.replace(
        f"^([+-]?)[{re.escape(_UNIT_SIGNS)}]* *|[ {re.escape(_UNIT_SIGNS)}]+$", r"\1", regex=True
    )
    grouped = written.str.contains(_GROUP_SPACE.replace("(", "(?:"), regex=True).fillna(False)
    for _ in range(3):  # `1 234 567`: each pass joins every other group
        written = written.str.replace(_GROUP_SPACE, r"\1\2", regex=True)
    comma = written.str.fullmatch(_DECIMAL_COMMA).fillna(False).astype(bool)
    point = written.str.fullmatch(_DECIMAL_POINT).fillna(False).astype(bool)
    # A value both conventions read (`1234`, `1,234`) does not decide; the others do.
    if int((comma & ~point).sum()) > int((point & ~comma).sum()):
        canonical = written.where(comma).str.replace(".", "", regex=False)
        numbers = pd.to_numeric(canonical.str.replace(",", ".", regex=False), errors="coerce")
        spelling = ["a decimal comma"]
    else:
        canonical = written.where(point).str.replace(",", "", regex=False)
        numbers = pd.to_numeric(canonical, errors="coerce")
        spelling = (
            ["thousands separators"] if bool((written.str.contains(",") & point).any()) else []
        )
    if bool(grouped.any()):
        spelling.append("spaces between thousands")
    if bool(currency.any()):
        spelling.append("a currency sign")
    if bool(percent.any()):
        spelling.append("a percent sign (12% is read as 12)")
    if int(numbers.notna().sum()) <= int(plain.notna().sum()) or not spelling:
        return plain, ""
    return numbers.astype("float64"), ", ".join(spelling)


# How dates are written, tried in this order; `ISO8601` stands for every ISO 8601 spelling (a
# date, a time with `T` or a space, fractions of a second, `Z` or an offset). Where day and
# month cannot be told apart, the first format that reads the values wins: the day first.
_DATE_ORDERS = (
    ("%d/%m/%Y", "31/12/2024 (day first)"),
    ("%m/%d/%Y", "12/31/2024 (month first)"),
    ("%d.%m.%Y", "31.12.2024"),
    ("%d-%m-%Y", "31-12-2024 (day first)"),
    ("%m-%d-%Y", "12-31-2024 (month first)"),
    ("%Y/%m/%d", "2024/12/31"),
)
_TIMES = (("", ""), (" %H:%M", " with hours and minutes"), (" %H:%M:%S", " with a time"))
DATE_FORMATS = (
    ("ISO8601", "as ISO 8601 (2024-12-31, 2024-12-31T23:59:00Z)"),
    *((f"{day}{time}", f"{shown}{said}") for day, shown in _DATE_ORDERS for time, said in _TIMES),
)
# What a value must start with to be tried as a date at all: digits, a separator, digits, a
# separator (codes and numbers never are).
_DATE_LIKE = r"[0-9]{1,4}[-/.][0-9]{1,2}[-/.][0-9]{1,4}"


def date_format(sample: pd.Series, min_share: float) -> tuple[str, str] | None:
    """The format (and how to say it) in which at least `min_share` of `sample` are dates."""
    present = sample.dropna()
    if present.empty:
        return None
    shaped = present.str.match(_DATE_LIKE).fillna(False).astype(bool)
    if float(shaped.mean()) < min_share:
        return None
    best: tuple[float, tuple[str, str]] | None = None
    for candidate in DATE_FORMATS:
        share = float(parse_dates(present, candidate[0]).notna().mean())
        if share >= min_share and (best is None or share > best[0]):
            best = (share, candidate)
            if share == 1.0:
                break
    if best is None:
        return None
    share, (written, said) = best
    swapped = written.replace("%d", "%_").replace("%m", "%d").replace("%_", "%m")
    if swapped != written and float(parse_dates(present, swapped).notna().mean()) >= share:
        said += ": no value has a day above 12 to tell"
    return written, said


def parse_dates(text: pd.Series, written: str) -> pd.Series:
    """Text dates in format `written` as UTC times without a time zone (NaT where not)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "could not infer format" and the like: NaT says it
        parsed = pd.to_datetime(text, format=written, errors="coerce", utc=True)
    return parsed.dt.tz_localize(None).astype("datetime64[ns]")


def coerce_dates(
    kept: pd.Series, written: tuple[str, str], text: pd.Series, info: ColumnCoercion
) -> tuple[pd.Series, ColumnCoercion]:
    """The column as dates in format `written`; what is not a date is missing and counted."""
    dates = parse_dates(kept.str.strip(), written[0])
    unparsed = (kept.notna() & dates.isna()).fillna(False).astype(bool)
    info.kind, info.spelling = "date", written[1]
    info.parsed_share = 1.0 - float(unparsed.sum()) / max(int(kept.notna().sum()), 1)
    info.unparsed = int(unparsed.sum())
    info.unparsed_examples = _examples(text[unparsed])
    return dates, info


def as_utc_dates(values: pd.Series) -> pd.Series:
    """A column of times with a time zone as UTC times without one (the frame's one spelling)."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        utc: pd.Series = values.dt.tz_convert("UTC").dt.tz_localize(None)
        return utc.astype("datetime64[ns]")
    if pd.api.types.is_datetime64_any_dtype(values):
        return values.astype("datetime64[ns]")
    return values


def coerce_columns(
    frame: pd.DataFrame, report: NormalisationReport, skip: tuple[str, ...] = ()
) -> pd.DataFrame:
    """Every text column through `coerce_text_column`; what changed goes into `report`."""
    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_datetime64_any_dtype(values):
            frame[column] = as_utc_dates(values)  # Parquet and Excel dates
            continue
        if column in skip or not (
            pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values)
        ):
            continue
        coerced, info = coerce_text_column(values, report.rules.numeric_min_share)
        frame[column] = coerced
        if info.kind == "number":
            report.numeric_text[column] = int(coerced.notna().sum())
        if (
            info.coerced
            or (info.kind in ("number", "date") and (info.blank or info.spelling))
            or (info.kind == "text" and (info.parsed_share or info.leading_zeros))
        ):
            report.columns[column] = info
    return frame


def encode_target(
    frame: pd.DataFrame, target: str, positive_label: str | None, report: NormalisationReport
) -> pd.DataFrame:
    """Replace the target by 0/1 integers (1: churned); unlabelled rows go to the quarantine.

    A missing or junk target, or a value that is neither the churned nor the retained label, sets
    its row aside.

    Raises:
        DatasetError: the target is missing, has a single class, or two classes of which none is
            recognisably the churned one.

    """
    if target not in frame.columns:
        raise DatasetError(
            f"target column {target!r} not found; columns are: {', '.join(frame.columns)}"
        )
    raw = frame[target]
    # Decided once per distinct value, then looked up (`codes` is -1 where the value is missing).
    codes, distinct = pd.factorize(raw, use_na_sentinel=True)
    spelled = [str(value).strip() for value in distinct]
    junk = np.array([not label or label.lower() in JUNK_TOKENS for label in spelled], dtype=bool)
    seen = np.bincount(codes[codes >= 0], minlength=len(distinct))
    counts = pd.Series(
        [n for n, bad in zip(seen, junk, strict=True) if not bad],
        index=[label for label, bad in zip(spelled, junk, strict=True) if not bad],
        dtype="int64",
    )
    counts = counts.groupby(level=0).sum()  # " Yes" and "Yes" are one class
    classes = sorted(counts.index)
    if not classes:
        raise DatasetError(f"target column {target!r} has no values")
    if len(classes) < 2:
        raise DatasetError(
            f"target column {target!r} has a single class ({classes[0]!r}): "
            "a churn model needs churned and retained customers"
        )
    positives, negatives = _label_classes(classes, counts, target, positive_label)
    wanted = {c.lower() for c in positives}, {c.lower() for c in negatives}

    def per_row(flags: list[bool]) -> pd.Series:
        lookup = np.append(np.asarray(flags, dtype=bool), False)  # index -1: a missing value
        return pd.Series(lookup[codes], index=raw.index)

    positive = per_row([label.lower() in wanted[0] for label in spelled])
    negative = per_row([label.lower() in wanted[1] for label in spelled])
    missing = per_row(list(junk)) | pd.Series(codes < 0, index=raw.index)
    unrecognised = ~(positive | negative | missing)
    report.positive_label = max(positives, key=lambda c: counts.get(c, 0))
    report.negative_label = max(negatives, key=lambda c: counts.get(c, 0))
    unusable = missing | unrecognised
    if unusable.any():
        reasons = np.where(missing[unusable], MISSING_TARGET, UNRECOGNISED_TARGET)
        rejected = frame[unusable].copy()
        rejected[target] = raw[unusable].astype("string")
        report.unrecognised_labels = _examples(rejected[target][unrecognised[unusable]])
        _quarantine(report, rejected, reasons)
        frame = frame[~unusable].copy()
        positive = positive[~unusable]
    frame[target] = positive.astype(np.int8).to_numpy()
    return frame


def _label_classes(
    classes: list[str], counts: pd.Series, target: str, positive_label: str | None
) -> tuple[list[str], list[str]]:
    """The spellings of the churned and the retained class among a target's values."""
    if positive_label is not None:
        wanted = str(positive_label).strip().lower()
        positives = [c for c in classes if c.lower() == wanted]
        if not positives:
            raise DatasetError(
                f"positive label {positive_label!r} is not a value of target column {target!r} "
                f"(values: {_shown(classes)})"
            )
        others = [c for c in classes if c.lower() != wanted]
        recognised = [c for c in others if c.lower() in DEFAULT_NEGATIVE_LABELS]
        if recognised:
            return positives, recognised
        # The most frequent other value is the retained class; any further one is unrecognised.
        dominant = max(others, key=lambda c: counts[c])
        return positives, [c for c in others if c.lower() == dominant.lower()]
    positives = [c for c in classes if c.lower() in DEFAULT_POSITIVE_LABELS]
    negatives = [c for c in classes if c.lower() in DEFAULT_NEGATIVE_LABELS]
    if positives and negatives:
        return positives, negatives
    raise DatasetError(
        f"cannot tell which value of target column {target!r} means churned "
        f"(values: {_shown(classes, 10)}); set CHURN_POSITIVE_LABEL"
    )


def find_key_column(frame: pd.DataFrame, configured: str | None) -> str | None:
    """The customer key column: the configured one, else a column named like `customer_id`.

    Raises:
        DatasetError: the configured column is not in the table.

    """
    if configured:
        name = snake_case(configured)
        if name not in frame.columns:
            raise DatasetError(
                f"customer key column {configured!r} not found; "
                f"columns are: {', '.join(frame.columns)}"
            )
        return name
    return next((name for name in KEY_COLUMN_NAMES if name in frame.columns), None)


def set_aside_keys(
    frame: pd.DataFrame, id_column: str | None, report: NormalisationReport, target: str
) -> pd.DataFrame:
    """Apply the key rules: rows without a key and keys with conflicting rows go to quarantine.

    Exact duplicate rows of one customer are dropped (kept once) and counted. Without a key,
    identical rows may be different customers with the same attributes, so all are kept.
    """
    report.id_column = id_column
    if id_column is None:
        return frame
    absent = frame[id_column].isna().to_numpy(dtype=bool)
    if absent.any():
        _quarantine(report, _labelled(frame[absent], target, report), MISSING_KEY)
        frame = frame[~absent]
    repeated = frame[id_column].duplicated(keep=False)
    if repeated.any():  # most tables have none: compare whole rows only where keys repeat
        exact = frame[repeated].duplicated(keep="first")
        report.duplicates_dropped += int(exact.sum())
        frame = frame.drop(index=exact[exact].index)
        conflicting = frame[id_column].duplicated(keep=False)
        if conflicting.any():
            _quarantine(report, _labelled(frame[conflicting], target, report), CONFLICTING_KEY)
            frame = frame[~conflicting]
    key = frame[id_column]
    if absent.any() and pd.api.types.is_float_dtype(key) and np.array_equal(key, np.round(key)):
        # A junk key made the column float; without those rows it is whole numbers again.
        frame = frame.assign(**{id_column: key.astype("int64")})
    return frame


def _labelled(rows: pd.DataFrame, target: str, report: NormalisationReport) -> pd.DataFrame:
    """Encoded rows with their target written back as the source spelled it."""
    rows = rows.copy()
    rows[target] = np.where(rows[target] == 1, report.positive_label, report.negative_label)
    return rows


def _quarantine(report: NormalisationReport, rows: pd.DataFrame, reasons: Any) -> None:
    rows = rows.assign(**{QUARANTINE_REASON: reasons})
    parts = [part for part in (report.quarantine, rows) if not part.empty]
    report.quarantine = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]


def enforce_quarantine_limit(report: NormalisationReport, what: str = "the table") -> None:
    """Fail when more than the tolerated share of rows was set aside, naming each reason.

    Raises:
        DatasetError: too many rows set aside.

    """
    quarantined = len(report.quarantine)
    if not quarantined or not report.rows_read:
        return
    share = quarantined / report.rows_read
    if share > report.rules.max_quarantine_share:
        reasons = ", ".join(f"{reason}: {count}" for reason, count in report.reasons().items())
        if report.unrecognised_labels:
            reasons += f" (target values {_shown(report.unrecognised_labels)})"
        raise DatasetError(
            f"{quarantined} of {report.rows_read} rows of {what} cannot be used ({share:.1%}, "
            f"over the {report.rules.max_quarantine_share:.0%} tolerated by "
            f"CHURN_MAX_QUARANTINE_SHARE): {reasons}"
        )


def _narrowest_numeric(numbers: pd.Series) -> pd.Series:
    """Integers stay integers when nothing is missing; anything else is float64."""
    if numbers.isna().any():
        return numbers.astype("float64")
    as_float = numbers.astype("float64")
    if np.array_equal(as_float, np.round(as_float)) and as_float.abs().max() < 2**53:
        return numbers.astype("int64")
    return as_float


def _examples(values: pd.Series) -> list[str]:
    return [str(value) for value in pd.unique(values.dropna().astype(str))[:EXAMPLES]]


def _shown(values: list[str], limit: int = EXAMPLES) -> str:
    return ", ".join(repr(value) for value in values[:limit])


def normalise(
    frame: pd.DataFrame,
    target: str,
    positive_label: str | None = None,
    id_column: str | None = None,
    rules: CleaningRules | None = None,
) -> tuple[pd.DataFrame, NormalisationReport]:
    """Normalise a raw churn table and set aside the rows that cannot be used.

    Args:
        frame: the table as read.
        target: the target column, in its raw or snake_case spelling.
        positive_label: the target value meaning churned; by default Yes, True, 1 (any case).
        id_column: the customer key column; by default a column named like `customer_id`.
        rules: the tolerances (numeric share, quarantine share).

    Raises:
        DatasetError: the table is not a usable churn table, or too many of its rows are not.

    """
    report = NormalisationReport(rows_read=len(frame), rules=rules or CleaningRules())
    report.dropped_columns = dict(frame.attrs.get(DROPPED_COLUMNS, {}))
    frame = set_aside_malformed(frame, report)
    frame, report.renamed = normalise_columns(frame.copy())
    frame.attrs = {}  # what the reader handed on is in the report now
    target = snake_case(target)
    key = find_key_column(frame, id_column)
    frame = coerce_columns(frame, report, skip=(target,))
    frame = encode_target(frame, target, positive_label, report)
    frame = set_aside_keys(frame, key, report, target)
    enforce_quarantine_limit(report)
    return frame.reset_index(drop=True), report
