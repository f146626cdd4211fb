"""Messy real tables: junk tokens, unlabelled rows and half-broken keys, repaired or set aside.

The files go through the real reader (CSV on disk, or over a real HTTP server), normalisation,
the snapshot store and the Dagster assets, as a user's export would.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dagster import DagsterInstance, ExecuteInProcessResult, materialize

from churn.errors import DatasetError
from churn.normalise import (
    CONFLICTING_KEY,
    JUNK_TOKENS,
    MALFORMED_ROW,
    MISSING_KEY,
    MISSING_TARGET,
    UNRECOGNISED_TARGET,
    CleaningRules,
    normalise,
)
from churn.snapshots import content_hash
from churn_assets.ingestion.assets import ingest_customers, labelled_customers, raw_customers
from churn_assets.resources import DatasetResource, PlatformHome
from churn_assets.validation.assets import validated_customers
from churn_assets_tests.conftest import ORANGE_CSV, FileServer, bank_customers, metadata

# Starts servers or processes, or runs the whole pipeline: not in `make check`.
pytestmark = pytest.mark.servers


def bank_csv(folder: Path, frame: pd.DataFrame, name: str = "bank_churn.csv") -> DatasetResource:
    """A bank table written as CSV, and the dataset resource a user would configure for it."""
    path = folder / name
    frame.to_csv(path, index=False)
    return DatasetResource(
        source=str(path), target="Exited", exclude_columns=["RowNumber", "Surname"]
    )


def messy_bank(rows: int = 2_000) -> pd.DataFrame:
    """The bank table as exports are: a `?` in a numeric column, one unlabelled row."""
    frame = bank_customers(rows).astype({"CreditScore": object, "Exited": object})
    frame.loc[17, "CreditScore"] = "?"
    frame.loc[40, "Exited"] = "?"
    return frame


def ingest(home: PlatformHome, dataset: DatasetResource) -> ExecuteInProcessResult:
    return materialize(
        [raw_customers, labelled_customers, validated_customers],
        resources={"dataset": dataset, "home": home},
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def test_a_question_mark_keeps_a_numeric_column_numeric_and_the_unlabelled_row_is_set_aside(
    tmp_path: Path, isolated_home: PlatformHome
) -> None:
    result = ingest(isolated_home, bank_csv(tmp_path, messy_bank()))
    assert result.success
    table = result.output_for_node("validated_customers")
    frame = table.frame
    # One character no longer turns a score into 461 categories.
    assert frame["credit_score"].dtype == np.float64
    assert frame["credit_score"].isna().sum() == 1
    unlabelled = messy_bank().loc[40, "CustomerId"]
    assert len(frame) == 1_999 and unlabelled not in set(frame["customer_id"])

    raw = metadata(result, "raw_customers")
    assert (raw["rows_read"], raw["rows_set_aside"], raw["dagster/row_count"]) == (2_000, 1, 1_999)
    assert "| missing target | 1 |" in str(raw["set_aside_by_reason"])
    assert "| credit_score | number | 1 | 0 | 0 | 1 junk value(s) read as missing ('?') |" in str(
        raw["coerced_values"]
    )
    quarantine = isolated_home.snapshots().load_quarantine(table.version)
    assert quarantine["quarantine_reason"].tolist() == [MISSING_TARGET]
    assert quarantine["exited"].tolist() == ["?"]
    assert Path(str(raw["quarantine_file"])).exists()

    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["coerced_values"].passed
    assert checks["coerced_values"].description == "Values turned into missing in: credit_score (1)"
    assert not checks["rows_set_aside"].passed
    assert checks["rows_set_aside"].description == "1 of 2000 rows set aside: missing target (1)"
    assert checks["data_quality"].passed  # the first version is the baseline


def test_the_rest_trains_with_the_repaired_column_as_a_number(
    tmp_path: Path, isolated_home: PlatformHome
) -> None:
    from churn_assets.features.assets import customer_splits

    result = materialize(
        [raw_customers, labelled_customers, validated_customers, customer_splits],
        resources={"dataset": bank_csv(tmp_path, messy_bank()), "home": isolated_home},
        instance=DagsterInstance.ephemeral(),
    )
    splits = result.output_for_node("customer_splits")
    assert "credit_score" in splits.numeric
    assert len(splits.train) + len(splits.test) == 1_999


def test_text_columns_stay_text_and_say_how_many_numbers_they_hold() -> None:
    raw = pd.DataFrame(
        {
            "Plan": ["basic", "12", "pro", "7", "basic", "pro"] * 10,
            "Code": [str(i) for i in range(59)] + ["A1"],
            "Churn": ["Yes", "No"] * 30,
        }
    )
    frame, report = normalise(raw, "Churn")
    assert frame["plan"].dtype == "string[pyarrow]"
    assert report.columns["plan"].kind == "text"
    assert report.columns["plan"].parsed_share == pytest.approx(1 / 3)
    assert "kept as text: 33.3% of its values are numbers" in report.columns["plan"].describe(0.99)
    # 59 of 60 codes are numbers: 98.3 % < 99 %, so the column stays text and says so.
    assert frame["code"].dtype == "string[pyarrow]"
    assert report.columns["code"].parsed_share == pytest.approx(59 / 60)
    # With a lower share, the same column is numeric and the word becomes missing.
    numeric, lenient = normalise(raw, "Churn", rules=CleaningRules(numeric_min_share=0.95))
    assert numeric["code"].dtype == np.float64 and numeric["code"].isna().sum() == 1
    assert lenient.columns["code"].unparsed_examples == ["A1"]
    assert lenient.coerced == {"code": 1}


@pytest.mark.parametrize("token", [*sorted(JUNK_TOKENS), "  ", "N/A", "NULL", "#VALUE!"])
def test_junk_tokens_are_missing_in_numeric_and_text_columns(token: str) -> None:
    raw = pd.DataFrame(
        {
            "Balance": ["10.5", token, "3"] * 40,
            "Geography": ["France", token, "Spain"] * 40,
            "Exited": ["1", "0", "0"] * 40,
        }
    )
    frame, report = normalise(raw, "Exited")
    assert frame["balance"].dtype == np.float64
    assert frame["balance"].isna().tolist() == [False, True, False] * 40
    assert frame["geography"].isna().tolist() == [False, True, False] * 40
    blank = not token.strip()
    assert report.coerced == ({} if blank else {"balance": 40, "geography": 40})


def test_duplicate_keys_equal_rows_are_dropped_different_rows_are_set_aside(
    tmp_path: Path, isolated_home: PlatformHome
) -> None:
    frame = bank_customers(500)
    twin = frame.iloc[[3]]  # the same customer, exported twice
    clash = frame.iloc[[5]].assign(Balance=1.0)  # the same key with another balance
    keyless = frame.iloc[[7]].assign(CustomerId=np.nan)
    messy = pd.concat([frame, twin, clash, keyless], ignore_index=True)
    dataset = bank_csv(tmp_path, messy).model_copy(update={"max_quarantine_share": 0.05})
    table, report = ingest_customers(dataset, isolated_home)
    assert report.duplicates_dropped == 1
    assert report.reasons() == {CONFLICTING_KEY: 2, MISSING_KEY: 1}
    assert len(table.frame) == 500 - 1  # customer 5 is set aside with its clash
    assert table.frame["customer_id"].is_unique
    assert table.frame["customer_id"].dtype == np.int64  # the missing key left with its row
    clashing = table.quarantine[table.quarantine["quarantine_reason"] == CONFLICTING_KEY]
    assert clashing["customer_id"].nunique() == 1
    assert sorted(clashing["balance"].tolist())[0] == 1.0
    assert table.quality.quarantined_by_column == {"customer_id": 3}


def test_too_many_unusable_rows_fail_with_the_counts_and_keep_the_previous_version(
    tmp_path: Path, isolated_home: PlatformHome
) -> None:
    good = ingest(isolated_home, bank_csv(tmp_path, bank_customers(1_000)))
    assert good.success
    frame = bank_customers(1_000).astype({"Exited": object})
    frame.loc[:14, "Exited"] = None
    frame.loc[15:19, "Exited"] = "maybe"
    failed = ingest(isolated_home, bank_csv(tmp_path, frame, "bank_churn.csv"))
    assert not failed.success
    [failure] = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
    message = str(failure.step_failure_data.user_failure_data.description)  # type: ignore[union-attr]
    assert (
        "20 of 1000 rows of the table cannot be used (2.0%, over the 1% tolerated by "
        "CHURN_MAX_QUARANTINE_SHARE): missing target: 15, unrecognised target: 5 "
        "(target values 'maybe')" in message
    )
    assert "The previous data version stays current" in message
    assert len(isolated_home.snapshots().versions()) == 1


def test_the_same_messy_input_gives_the_same_version_and_quarantine(
    tmp_path: Path, isolated_home: PlatformHome, file_server: FileServer
) -> None:
    messy_bank().to_csv(file_server.root / "bank_churn.csv", index=False)
    dataset = DatasetResource(source=file_server.url("bank_churn.csv"), target="Exited")
    first, _ = ingest_customers(dataset, isolated_home)
    second, _ = ingest_customers(dataset, isolated_home)
    assert content_hash(first.frame, first.quarantine) == content_hash(
        second.frame, second.quarantine
    )
    pd.testing.assert_frame_equal(first.quarantine, second.quarantine)
    # Without its unusable row, the table is another version: the quarantine is part of it.
    assert content_hash(first.frame, first.quarantine) != content_hash(first.frame)
    from_disk = bank_csv(tmp_path, messy_bank())
    third, _ = ingest_customers(from_disk, isolated_home)
    assert content_hash(third.frame, third.quarantine) == content_hash(
        first.frame, first.quarantine
    )


def test_a_jump_in_the_share_of_coerced_values_fails_validation(
    tmp_path: Path, isolated_home: PlatformHome
) -> None:
    baseline = ingest(isolated_home, bank_csv(tmp_path, messy_bank()))
    assert baseline.success
    worse = messy_bank().astype({"Balance": object})
    worse.loc[100:160, "Balance"] = "#VALUE!"  # 3 % of balances lost in the export
    result = ingest(isolated_home, bank_csv(tmp_path, worse))
    assert not result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["data_quality"].passed
    failing = str(checks["data_quality"].metadata["results"].value)
    assert "| FAIL | column_values_to_be_between | coerced_share__balance | 3.05% of rows |" in (
        failing
    )
    assert checks["required_columns"].passed


def test_telco_blank_total_charges_behave_as_before(
    telco_csv: Path, isolated_home: PlatformHome
) -> None:
    result = ingest(isolated_home, DatasetResource(source=str(telco_csv)))
    assert result.success
    table = result.output_for_node("raw_customers")
    assert table.frame["total_charges"].isna().sum() == 11
    assert table.quarantine.empty and table.quality.coerced == {}
    # Nothing set aside: the version is the content hash of the rows alone, as it always was.
    assert table.version == content_hash(table.frame)
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["coerced_values"] and checks["rows_set_aside"] and checks["data_quality"]


def test_the_orange_table_has_no_key_and_nothing_to_set_aside(isolated_home: PlatformHome) -> None:
    if not ORANGE_CSV.exists():
        pytest.skip(f"the real Orange data set is absent ({ORANGE_CSV})")
    table, report = ingest_customers(DatasetResource(source=str(ORANGE_CSV)), isolated_home)
    assert table.id_column is None
    assert table.frame.shape == (3_328, 20)
    assert report.quarantine.empty and report.duplicates_dropped == 0
    assert table.frame["area_code"].dtype == np.int64
    assert table.frame["churn"].mean() == pytest.approx(0.1445, abs=0.0005)
    # The same table with exported junk: repaired, with the keyless rows still all there.
    messy = pd.read_csv(ORANGE_CSV, dtype=str)
    messy.loc[[3, 9], "Total day minutes"] = "#N/A"
    messy.loc[5, "Churn"] = "?"
    frame, messy_report = normalise(messy, "Churn")
    assert frame["total_day_minutes"].dtype == np.float64
    assert messy_report.coerced == {"total_day_minutes": 2}
    assert messy_report.reasons() == {MISSING_TARGET: 1}
    assert len(frame) == 3_327


def test_landing_files_meet_the_same_rules(tmp_path: Path, isolated_home: PlatformHome) -> None:
    source = bank_customers(1_000)
    dataset = bank_csv(tmp_path, source)
    isolated_home.landing_dir.mkdir(parents=True)
    batch = bank_customers(300, seed=11).assign(CustomerId=lambda f: f["CustomerId"] + 10_000_000)
    batch = batch.astype({"CreditScore": object, "Exited": object})
    batch.loc[2, "CreditScore"] = "?"
    batch.loc[4, "Exited"] = "n/a"
    batch.loc[6, "Exited"] = "perhaps"
    batch.to_csv(isolated_home.landing_dir / "batch.csv", index=False)
    too_messy = bank_customers(100, seed=12).astype({"Exited": object})
    too_messy.loc[:4, "Exited"] = "?"
    too_messy.to_csv(isolated_home.landing_dir / "too_messy.csv", index=False)

    result = ingest(isolated_home, dataset.model_copy(update={"max_quarantine_share": 0.02}))
    assert result.success
    table = result.output_for_node("labelled_customers")
    assert len(table.frame) == 1_000 + 298
    assert table.frame["credit_score"].isna().sum() == 1
    reasons = table.quarantine.groupby("quarantine_reason")["quarantine_origin"].agg(list)
    assert reasons.to_dict() == {
        MISSING_TARGET: ["batch.csv"],
        UNRECOGNISED_TARGET: ["batch.csv"],
    }
    assert table.quality.rows_read == 1_000 + 300
    assert table.quality.coerced == {"credit_score": 1}
    [reason] = (isolated_home.landing_dir / "rejected").glob("*too_messy.csv.reason.txt")
    assert "5 of 100 rows of landing file too_messy.csv cannot be used (5.0%" in (
        reason.read_text()
    )
    labelled = metadata(result, "labelled_customers")
    assert labelled["rows_set_aside"] == 2


def test_rows_without_the_headers_fields_are_set_aside_as_written(
    tmp_path: Path, isolated_home: PlatformHome
) -> None:
    """A truncated line and a line with an unquoted delimiter: not customers one can read. They
    are quarantined with their text, the rest is ingested; too many of them fail the file."""
    dataset = bank_csv(tmp_path, bank_customers(400))
    path = Path(dataset.source)
    lines = path.read_text().splitlines()
    short, long = lines[10].rsplit(",", 3)[0], lines[20].replace(",", ",Smith, Jr.,", 1)
    lines[10], lines[20] = short, long
    path.write_text("\n".join(lines) + "\n")

    result = ingest(isolated_home, dataset)
    assert result.success
    table = result.output_for_node("validated_customers")
    assert len(table.frame) == 398
    raw = metadata(result, "raw_customers")
    assert (raw["rows_read"], raw["rows_set_aside"]) == (400, 2)
    assert f"| {MALFORMED_ROW} | 2 |" in str(raw["set_aside_by_reason"])
    quarantine = isolated_home.snapshots().load_quarantine(table.version)
    assert quarantine["quarantine_reason"].tolist() == [MALFORMED_ROW] * 2
    assert quarantine["raw_row"].tolist() == [short, long]

    path.write_text("\n".join(lines[:5] + [line + ",extra" for line in lines[5:]]) + "\n")
    failed = ingest(isolated_home, dataset)
    assert not failed.success
    assert "396 of 400 rows of the table cannot be used (99.0%" in str(
        failed.get_step_failure_events()[0].event_specific_data.error  # type: ignore[union-attr]
    )


def test_a_bad_share_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="numeric_min_share"):
        CleaningRules(numeric_min_share=0)
    with pytest.raises(DatasetError, match="excluded column"):
        ingest_customers(
            DatasetResource(exclude_columns=["nope"]), PlatformHome(path="/nonexistent")
        )


def test_new_rows_need_not_carry_the_excluded_columns(
    tmp_path: Path, isolated_home: PlatformHome
) -> None:
    # Outcomes carry only the model's inputs, and exports often drop what nobody uses: the suite
    # derived from the first version requires neither RowNumber nor Surname (both excluded).
    dataset = bank_csv(tmp_path, bank_customers(1_000))
    assert ingest(isolated_home, dataset).success
    isolated_home.landing_dir.mkdir(parents=True)
    batch = bank_customers(300, seed=11).assign(CustomerId=lambda f: f["CustomerId"] + 10_000_000)
    batch.drop(columns=["RowNumber", "Surname"]).to_csv(
        isolated_home.landing_dir / "without_names.csv", index=False
    )
    later = ingest(isolated_home, dataset)
    assert later.success, [e.message for e in later.all_events if e.is_failure]
    table = later.output_for_node("validated_customers")
    assert len(table.frame) == 1_300
    assert table.frame["surname"].isna().sum() == 300
    # A model input is still required of every new row.
    batch.drop(columns=["Age"]).to_csv(isolated_home.landing_dir / "without_age.csv", index=False)
    assert ingest(isolated_home, dataset).success
    [reason] = (isolated_home.landing_dir / "rejected").glob("*without_age.csv.reason.txt")
    assert "missing column(s): age" in reason.read_text()


def european_export(frame: pd.DataFrame, path: Path) -> None:
    """The bank table as a German spreadsheet exports it: `;`, decimal commas, euro signs,
    spaces between thousands, and account numbers padded with zeros."""
    spelled = frame.assign(
        CustomerId=[f"{key:010d}" for key in frame["CustomerId"]],
        Balance=[
            f"{value:,.2f} €".replace(",", " ").replace(".", ",") for value in frame["Balance"]
        ],
        EstimatedSalary=[f"{value:.2f}".replace(".", ",") for value in frame["EstimatedSalary"]],
    )
    spelled.to_csv(path, sep=";", index=False)


def test_numbers_as_people_write_them_are_numbers_and_padded_keys_keep_their_zeros(
    tmp_path: Path, isolated_home: PlatformHome
) -> None:
    source = bank_customers(1_000)
    path = tmp_path / "kunden.csv"
    european_export(source, path)
    isolated_home.landing_dir.mkdir(parents=True)
    batch = bank_customers(200, seed=11).assign(CustomerId=lambda f: f["CustomerId"] + 10_000_000)
    european_export(batch, isolated_home.landing_dir / "batch.csv")
    dataset = DatasetResource(
        source=str(path), target="Exited", exclude_columns=["RowNumber", "Surname"]
    )

    result = ingest(isolated_home, dataset)

    assert result.success
    frame = result.output_for_node("labelled_customers").frame
    assert len(frame) == 1_200
    expected = pd.concat([source, batch], ignore_index=True)
    assert frame["balance"].to_numpy() == pytest.approx(expected["Balance"].to_numpy(), abs=0.005)
    assert frame["estimated_salary"].to_numpy() == pytest.approx(
        expected["EstimatedSalary"].to_numpy(), abs=0.005
    )
    assert frame["customer_id"].tolist() == [f"{key:010d}" for key in expected["CustomerId"]]
    coerced = metadata(result, "raw_customers")["coerced_values"]
    assert "a decimal comma, spaces between thousands, a currency sign" in coerced
    assert "integers spelled with leading zeros ('00" in coerced


def test_a_failed_run_is_told_in_one_line_per_step(
    tmp_path: Path, isolated_home: PlatformHome
) -> None:
    """What `make materialize` prints when a run fails: the asset's own message, no trace."""
    from churn_assets.failures import step_failures

    path = tmp_path / "labels.csv"
    pd.DataFrame({"x": [1.0, 2.0, 3.0], "Churn": ["Churned", "Stayed", "Stayed"]}).to_csv(
        path, index=False
    )
    instance = DagsterInstance.ephemeral()
    result = materialize(
        [raw_customers],
        resources={"dataset": DatasetResource(source=str(path)), "home": isolated_home},
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    assert step_failures(instance, result.dagster_run.job_name) == [
        (
            "raw_customers",
            f"Cannot ingest {str(path)!r}: cannot tell which value of target column 'churn' "
            "means churned (values: 'Churned', 'Stayed'); set CHURN_POSITIVE_LABEL. "
            "The previous data version stays current.",
        )
    ]
    assert step_failures(instance, "another_job") == []


def test_a_trailing_delimiter_and_a_saved_index_are_not_columns(
    tmp_path: Path, isolated_home: PlatformHome
) -> None:
    """`to_csv` without `index=False`, and a delimiter at the end of every line (with a byte
    order mark and Windows line ends, as a spreadsheet saves it): the customers' columns only,
    in the source and in a landing file alike, and the metadata says what was left out."""

    def export(frame: pd.DataFrame, path: Path) -> None:
        lines = frame.to_csv(lineterminator="\r\n").split("\r\n")  # the index, unnamed
        path.write_text("\ufeff" + "".join(f"{line},\r\n" for line in lines if line), "utf-8")

    export(bank_customers(1_000), tmp_path / "bank.csv")
    isolated_home.landing_dir.mkdir(parents=True)
    batch = bank_customers(100, seed=11).assign(CustomerId=lambda f: f["CustomerId"] + 10_000_000)
    export(batch, isolated_home.landing_dir / "batch.csv")
    dataset = DatasetResource(
        source=str(tmp_path / "bank.csv"), target="Exited", exclude_columns=["RowNumber", "Surname"]
    )

    result = ingest(isolated_home, dataset)

    assert result.success
    frame = result.output_for_node("labelled_customers").frame
    assert len(frame) == 1_100
    assert not [column for column in frame.columns if column.startswith("unnamed")]
    assert frame.columns[0] == "row_number"  # the byte order mark is not part of the name
    summary = metadata(result, "raw_customers")["normalisation"]
    assert "left out `Unnamed: 0` | no header over a running row number" in summary
    assert "left out `Unnamed: 15` | no header and no value" in summary
