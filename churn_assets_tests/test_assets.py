"""Ingestion and validation materialized in process, as the Dagster UI would run them."""

from pathlib import Path
from typing import Any

import pytest
from dagster import AssetKey, DagsterInstance, ExecuteInProcessResult, materialize

from churn.tables import CustomerTable
from churn_assets.definitions import defs
from churn_assets.ingestion.assets import labelled_customers, raw_customers
from churn_assets.ingestion.synthetic import generate_customers
from churn_assets.resources import DatasetResource, PlatformHome
from churn_assets.validation.assets import validated_customers
from churn_assets_tests.conftest import FileServer, bank_customers, set_environment

# Starts servers or processes, or runs the whole pipeline: not in `make check`.
pytestmark = pytest.mark.servers

RAW = AssetKey("raw_customers")
VALIDATED = AssetKey("validated_customers")


@pytest.fixture
def instance() -> DagsterInstance:
    return DagsterInstance.ephemeral()


def run(
    dataset: DatasetResource, home: PlatformHome, instance: DagsterInstance
) -> ExecuteInProcessResult:
    return materialize(
        [raw_customers, labelled_customers, validated_customers],
        resources={"dataset": dataset, "home": home},
        instance=instance,
        raise_on_error=False,
    )


def latest_metadata(instance: DagsterInstance, key: AssetKey) -> dict[str, Any]:
    event = instance.get_latest_materialization_event(key)
    assert event is not None and event.asset_materialization is not None
    return {name: value.value for name, value in event.asset_materialization.metadata.items()}


def test_the_synthetic_default(isolated_home: PlatformHome, instance: DagsterInstance) -> None:
    result = run(DatasetResource(synthetic_rows=2_000), isolated_home, instance)
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    # Two warnings of ingestion (nothing coerced, nothing set aside), the suite's nine checks and
    # the leakage warning.
    assert len(evaluations) == 12 and all(evaluation.passed for evaluation in evaluations)

    table: CustomerTable = result.output_for_node("validated_customers")
    assert table.dataset == "telco" and table.target == "churn"
    raw = latest_metadata(instance, RAW)
    assert raw["data_version"] == table.version
    assert raw["dagster/row_count"] == 2_000
    assert raw["columns"] == 21
    assert raw["missing_cells"] == table.frame.isna().sum().sum()
    assert str(raw["preview"]).startswith("| customer_id | gender | senior_citizen |")
    assert "`TotalCharges`" in str(raw["normalisation"])
    assert isolated_home.snapshots().has(table.version)

    validated = latest_metadata(instance, VALIDATED)
    assert validated["suite"] == "curated Telco suite (first version of this data set)"
    assert 0.2 < float(validated["churn_rate"]) < 0.32
    assert "| monthly_charges | float64 | 0.00% |" in str(validated["eda_statistics"])
    event = instance.get_latest_materialization_event(VALIDATED)
    assert event is not None
    assert event.asset_materialization is not None
    assert event.asset_materialization.tags is not None
    assert event.asset_materialization.tags["dagster/data_version"] == table.version


def test_re_ingesting_identical_data_yields_the_same_version(
    isolated_home: PlatformHome, instance: DagsterInstance
) -> None:
    first = run(DatasetResource(synthetic_rows=500), isolated_home, instance)
    second = run(DatasetResource(synthetic_rows=500), isolated_home, instance)
    other = run(DatasetResource(synthetic_rows=500, synthetic_seed=1), isolated_home, instance)
    version = first.output_for_node("raw_customers").version
    assert second.output_for_node("raw_customers").version == version
    assert other.output_for_node("raw_customers").version != version
    assert len(isolated_home.snapshots().versions()) == 2


def test_the_real_telco_file(
    telco_csv: Path, isolated_home: PlatformHome, instance: DagsterInstance
) -> None:
    result = run(DatasetResource(source=str(telco_csv)), isolated_home, instance)
    assert result.success
    table: CustomerTable = result.output_for_node("validated_customers")
    assert table.dataset == "telco_customer_churn"
    assert len(table.frame) == 7_043
    assert latest_metadata(instance, VALIDATED)["suite"].startswith("curated Telco suite")


def test_a_bank_data_set_over_http_gets_a_baseline_that_catches_a_later_broken_batch(
    file_server: FileServer, isolated_home: PlatformHome, instance: DagsterInstance
) -> None:
    good = bank_customers(seed=1)
    good.to_csv(file_server.root / "bank.csv", index=False)
    dataset = DatasetResource(source=file_server.url("bank.csv"), target="Exited")
    assert run(dataset, isolated_home, instance).success
    assert (isolated_home.suites_dir / "bank.json").exists()

    broken = bank_customers(seed=2)
    broken.loc[:9, "Geography"] = "Atlantis"
    broken.to_csv(file_server.root / "bank.csv", index=False)
    result = run(dataset, isolated_home, instance)
    assert not result.success
    failed = {e.check_name for e in result.get_asset_check_evaluations() if not e.passed}
    assert failed == {"categorical_values"}


def test_a_broken_data_set_stops_at_validation_and_the_good_version_stays(
    tmp_path: Path, isolated_home: PlatformHome, instance: DagsterInstance
) -> None:
    good = run(DatasetResource(synthetic_rows=500), isolated_home, instance)
    good_version = good.output_for_node("validated_customers").version

    broken = generate_customers(500, seed=3)
    broken.loc[:4, "Contract"] = "Lifetime"
    path = tmp_path / "broken.csv"
    broken.to_csv(path, index=False)
    result = run(DatasetResource(source=str(path), name="telco"), isolated_home, instance)

    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "validated_customers"
    assert failure.step_failure_data.error is not None
    message = failure.step_failure_data.error.message
    assert "failed validation" in message and "contract 5 unexpected" in message
    failed = {e.check_name for e in result.get_asset_check_evaluations() if not e.passed}
    assert failed == {"categorical_values"}
    # The broken version was ingested (and can be inspected), but never became the validated one.
    assert latest_metadata(instance, RAW)["data_version"] != good_version
    assert latest_metadata(instance, VALIDATED)["data_version"] == good_version


def test_an_unreadable_source_fails_at_ingestion_with_its_reason(
    tmp_path: Path, isolated_home: PlatformHome, instance: DagsterInstance
) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    result = run(DatasetResource(source=str(path)), isolated_home, instance)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "raw_customers"
    assert failure.step_failure_data.error is not None
    assert "empty.csv is empty" in failure.step_failure_data.error.message
    assert instance.get_latest_materialization_event(VALIDATED) is None


def test_the_environment_points_the_platform_at_another_data_set(
    monkeypatch: pytest.MonkeyPatch, file_server: FileServer
) -> None:
    bank_customers().to_csv(file_server.root / "bank.csv", index=False)
    set_environment(
        monkeypatch,
        CHURN_SOURCE=file_server.url("bank.csv"),
        CHURN_TARGET="Exited",
        CHURN_ID_COLUMN="CustomerId",
        CHURN_POSITIVE_LABEL="1",
        CHURN_EXCLUDE_COLUMNS="RowNumber, Surname",
        CHURN_SYNTHETIC_ROWS="123",
    )
    dataset = DatasetResource.from_env()
    assert dataset.source == file_server.url("bank.csv")
    assert (dataset.target, dataset.id_column, dataset.positive_label) == (
        "Exited",
        "CustomerId",
        "1",
    )
    assert dataset.exclude_columns == ["RowNumber", "Surname"]
    assert dataset.synthetic_rows == 123
    assert dataset.dataset_name() == "bank"


def test_a_run_can_override_the_data_set_like_the_launchpad_does(
    tmp_path: Path, instance: DagsterInstance
) -> None:
    path = tmp_path / "customers.csv"
    generate_customers(300, seed=9).to_csv(path, index=False)
    job = defs.resolve_job_def("ingest_and_validate")
    result = job.execute_in_process(
        run_config={"resources": {"dataset": {"config": {"source": str(path)}}}},
        instance=instance,
    )
    assert result.success
    table: CustomerTable = result.output_for_node("validated_customers")
    assert (table.source, len(table.frame)) == (str(path), 300)
