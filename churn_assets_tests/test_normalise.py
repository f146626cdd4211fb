import numpy as np
import pandas as pd
import pytest

from churn.errors import DatasetError
from churn.normalise import normalise, snake_case


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("MonthlyCharges", "monthly_charges"),
        ("customerID", "customer_id"),
        ("SeniorCitizen", "senior_citizen"),
        ("tenure", "tenure"),
        ("CustomerId", "customer_id"),
        ("NumOfProducts", "num_of_products"),
        ("HasCrCard", "has_cr_card"),
        ("Total Charges ($)", "total_charges"),
        ("HTTPStatus", "http_status"),
        ("already_snake", "already_snake"),
        ("  Churn  ", "churn"),
        ("Monatsgebühr", "monatsgebuhr"),
        ("Durée d'abonnement", "duree_d_abonnement"),
        ("Straße", "strasse"),
        ("\uff34\uff45\uff4e\uff55\uff52\uff45", "tenure"),  # full-width letters
        ("Тариф", "тариф"),
        ("月額料金", "月額料金"),
        ("Datenvolumen (GB)", "datenvolumen_gb"),
        ("a__b", "a_b"),
    ],
)
def test_snake_case(raw: str, expected: str) -> None:
    assert snake_case(raw) == expected


def test_columns_become_snake_case_and_the_renames_are_reported() -> None:
    frame, report = normalise(
        pd.DataFrame({"customerID": ["a", "b"], "Churn": ["Yes", "No"]}), "Churn"
    )
    assert list(frame.columns) == ["customer_id", "churn"]
    assert report.renamed == {"customerID": "customer_id", "Churn": "churn"}


def test_names_that_collide_after_normalisation_are_refused() -> None:
    raw = pd.DataFrame({"MonthlyCharges": [1], "monthly_charges": [2], "Churn": ["Yes"]})
    with pytest.raises(DatasetError, match=r"duplicated column names.*'monthly_charges'"):
        normalise(raw, "Churn")


def test_numeric_text_is_coerced_and_blanks_become_missing() -> None:
    raw = pd.DataFrame(
        {
            "TotalCharges": ["29.85", " ", "1889.5", ""],
            "Plan": ["basic", "12", "pro", "basic"],
            "Count": ["1", "2", "3", "4"],
            "Churn": ["Yes", "No", "No", "Yes"],
        }
    )
    frame, report = normalise(raw, "Churn")
    assert frame["total_charges"].dtype == np.float64
    assert frame["total_charges"].isna().tolist() == [False, True, False, True]
    assert frame["total_charges"].iloc[2] == 1889.5
    assert report.became_missing == {"total_charges": 2}
    assert report.numeric_text == {"total_charges": 2, "count": 4}
    assert report.coerced == {}  # blanks are ordinary missing values, not coercions
    assert frame["count"].dtype == np.int64
    # A column with any word in it stays text.
    assert frame["plan"].tolist() == ["basic", "12", "pro", "basic"]


@pytest.mark.parametrize(
    ("values", "positive_label", "expected", "reported"),
    [
        (["Yes", "No", "No"], None, [1, 0, 0], "Yes"),
        (["yes", "no", "no"], None, [1, 0, 0], "yes"),
        ([True, False, False], None, [1, 0, 0], "True"),
        ([1, 0, 0], None, [1, 0, 0], "1"),
        (["1", "0", "0"], None, [1, 0, 0], "1"),
        (["Left", "Stayed", "Stayed"], "Left", [1, 0, 0], "Left"),
        (["Left", "Stayed", "Stayed"], "left", [1, 0, 0], "Left"),
        (["No", "Yes", "Yes"], "No", [1, 0, 0], "No"),
    ],
)
def test_target_becomes_zero_or_one(
    values: list[object], positive_label: str | None, expected: list[int], reported: str
) -> None:
    raw = pd.DataFrame({"x": [1, 2, 3], "Churn": values})
    frame, report = normalise(raw, "Churn", positive_label)
    assert frame["churn"].tolist() == expected
    assert report.positive_label == reported


@pytest.mark.parametrize(
    ("values", "target", "positive_label", "message"),
    [
        (["Yes", "No"], "Exited", None, "target column 'exited' not found; columns are: x, churn"),
        (["Yes", "Yes"], "Churn", None, "single class \\('Yes'\\)"),
        (
            ["Yes", "No", "Maybe"],
            "Churn",
            None,
            "1 of 3 rows of the table cannot be used \\(33.3%, over the 1% tolerated by "
            "CHURN_MAX_QUARANTINE_SHARE\\): unrecognised target: 1",
        ),
        (["Left", "Stayed"], "Churn", None, "cannot tell which value.*set CHURN_POSITIVE_LABEL"),
        (["Yes", "No"], "Churn", "Churned", "positive label 'Churned' is not a value"),
        (["Yes", "No", None], "Churn", None, "1 of 3 rows .*: missing target: 1"),
        (["Yes", None], "Churn", None, "single class"),
        (["?", "n/a"], "Churn", None, "target column 'churn' has no values"),
    ],
)
def test_unusable_targets_are_refused(
    values: list[object], target: str, positive_label: str | None, message: str
) -> None:
    raw = pd.DataFrame({"x": range(len(values)), "Churn": values})
    with pytest.raises(DatasetError, match=message):
        normalise(raw, target, positive_label)


@pytest.mark.parametrize(
    ("values", "numbers", "spelling"),
    [
        (["34,67", "1.234,5", "12"], [34.67, 1234.5, 12.0], "a decimal comma"),
        (["1,234.50", "12.5", "3"], [1234.5, 12.5, 3.0], "thousands separators"),
        (["1,234", "12,000", "5"], [1234, 12000, 5], "thousands separators"),
        (["1 234,50", "12,0", "7"], [1234.5, 12.0, 7.0], "a decimal comma, spaces between"),
        (["1'234.5", "1\u2019000", "3"], [1234.5, 1000.0, 3.0], "spaces between thousands"),
        (["$12.50", "$1,200.00", "$3"], [12.5, 1200.0, 3.0], "thousands separators, a currency"),
        (["12,50 €", "3,00 €", "€ 1.000,00"], [12.5, 3.0, 1000.0], "a decimal comma, a currency"),
        (["12%", "5 %", "0%"], [12, 5, 0], "a percent sign"),
        (["1.5", "2.25", "3"], [1.5, 2.25, 3.0], ""),
        (["000123.45", "12.5", "3"], [123.45, 12.5, 3.0], ""),
    ],
)
def test_numbers_as_people_write_them(
    values: list[str], numbers: list[float], spelling: str
) -> None:
    from churn.normalise import TEXT_DTYPE, coerce_text_column

    coerced, info = coerce_text_column(pd.Series(values, dtype=TEXT_DTYPE), 0.99)
    assert info.kind == "number"
    assert coerced.tolist() == pytest.approx(numbers)
    assert info.spelling.startswith(spelling) if spelling else info.spelling == ""


@pytest.mark.parametrize(
    "values",
    [
        ["08720007", "00012", "12345"],  # account numbers padded with zeros
        ["02139", "10001", "94105"],  # zip codes
        ["030 1234567", "0301234", "089 12"],  # phone numbers
        ["-1,5", "+2,25", "1e3"],  # two conventions in one column: neither holds 99 %
    ],
)
def test_codes_and_mixed_spellings_stay_text(values: list[str]) -> None:
    from churn.normalise import TEXT_DTYPE, coerce_text_column

    coerced, info = coerce_text_column(pd.Series(values, dtype=TEXT_DTYPE), 0.99)
    assert info.kind == "text"
    assert coerced.tolist() == values


@pytest.mark.parametrize(
    ("values", "dates", "spelling"),
    [
        (["2024-03-15", "2023-12-31", ""], ["2024-03-15", "2023-12-31", None], "as ISO 8601"),
        (
            ["2024-03-15T10:30:00Z", "2024-03-15T12:30:00+02:00"],
            ["2024-03-15 10:30", "2024-03-15 10:30"],  # UTC, without a time zone
            "as ISO 8601",
        ),
        (["15/03/2024", "01/02/2023"], ["2024-03-15", "2023-02-01"], "31/12/2024 (day first)"),
        (["03/15/2024", "01/02/2023"], ["2024-03-15", "2023-01-02"], "12/31/2024 (month first)"),
        (
            ["15.03.2024 10:30", "01.02.2023 00:00"],
            ["2024-03-15 10:30", "2023-02-01"],
            "31.12.2024",
        ),
    ],
)
def test_dates_are_read_in_the_spelling_the_column_uses(
    values: list[str], dates: list[str | None], spelling: str
) -> None:
    from churn.normalise import TEXT_DTYPE, coerce_text_column

    coerced, info = coerce_text_column(pd.Series(values, dtype=TEXT_DTYPE), 0.99)
    assert info.kind == "date" and str(coerced.dtype) == "datetime64[ns]"
    assert coerced.tolist() == [pd.Timestamp(d) if d else pd.NaT for d in dates]
    assert info.spelling.startswith(spelling)


def test_a_date_that_does_not_tell_day_from_month_is_read_day_first_and_says_so() -> None:
    from churn.normalise import TEXT_DTYPE, coerce_text_column

    coerced, info = coerce_text_column(
        pd.Series(["01/03/2024", "01/02/2024"], dtype=TEXT_DTYPE), 0.99
    )
    assert coerced.tolist() == [pd.Timestamp("2024-03-01"), pd.Timestamp("2024-02-01")]
    assert "no value has a day above 12 to tell" in info.describe(0.99)


@pytest.mark.parametrize("values", [["12/2023", "01/2024"], ["2024", "2023"], ["a-1-b", "x"]])
def test_what_is_not_a_date_is_not_read_as_one(values: list[str]) -> None:
    from churn.normalise import TEXT_DTYPE, coerce_text_column

    _, info = coerce_text_column(pd.Series(values, dtype=TEXT_DTYPE), 0.99)
    assert info.kind != "date"


def test_dates_with_a_time_zone_from_parquet_become_utc() -> None:
    raw = pd.DataFrame(
        {
            "seen": pd.to_datetime(["2024-03-15 12:00", "2024-03-16 00:30"]).tz_localize(
                "Europe/Berlin"
            ),
            "Churn": ["Yes", "No"],
        }
    )
    frame, _ = normalise(raw, "Churn")
    assert frame["seen"].tolist() == [
        pd.Timestamp("2024-03-15 11:00"),
        pd.Timestamp("2024-03-15 23:30"),
    ]
