"""Bring your own churn table: the closed loop on tables that are not Telco-shaped.

The Orange telecom table (no customer key, 15 usage columns, an integer area code, a target
spelled TRUE/False) and a generated 60-column table (a key named otherwise, booleans, dates as
text) each go through real processes: the pipeline on a real MLflow store, a real `bentoml
serve`, valid and invalid requests, drifted traffic, the monitoring assets finding the drifted
columns, outcomes on `/feedback` joined into `labelled_customers`, and a retrain promoted and
swapped in while clients keep sending requests, with no failed request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, materialize

from churn.schema import ModelSchema
from churn.scores import ScoreStore
from churn_assets.ingestion.assets import labelled_customers, raw_customers
from churn_assets.ingestion.synthetic import generate_accounts
from churn_assets.monitoring.assets import monitoring_assets
from churn_assets.resources import (
    DatasetResource,
    MlflowResource,
    PlatformHome,
    QualityGates,
    ScoringResource,
)
from churn_assets.scoring.assets import customer_scores
from churn_assets_tests.conftest import (
    ORANGE_CSV,
    eventually,
    json_record,
    metadata,
    registry_of,
    run_pipeline,
    today,
)
from churn_assets_tests.processes import MAX_RECORDS, fuzz_api, serve
from serving.traffic import perturb, population, send_traffic, served_model

# Starts servers or processes, or runs the whole pipeline: not in `make check`.
pytestmark = pytest.mark.servers

LENIENT = QualityGates(min_f1=0.0, min_recall=0.0, max_probability_rmse=1.0)


@dataclass(frozen=True)
class Table:
    """A churn table, how to configure it, and how to drift its customers."""

    name: str
    write: Callable[[Path], DatasetResource]
    drift_scale: dict[str, float]
    drift_set: dict[str, tuple[str, float]]
    drifted: set[str]
    invalid: dict[str, Any]


def orange(folder: Path) -> DatasetResource:
    if not ORANGE_CSV.exists():
        pytest.skip(f"the real Orange data set is absent ({ORANGE_CSV})")
    return DatasetResource(source=str(ORANGE_CSV))


def wide(folder: Path) -> DatasetResource:
    path = folder / "accounts.parquet"
    generate_accounts(3_000).to_parquet(path, index=False)
    return DatasetResource(source=str(path), target="Lapsed", id_column="AccountNumber")


TABLES = [
    Table(
        "orange",
        orange,
        {"total_day_minutes": 1.6, "total_day_charge": 1.6},
        {"international_plan": ("Yes", 0.7)},
        {"total_day_minutes", "total_day_charge", "international_plan"},
        {"area_code": "415"},
    ),
    Table(
        "wide",
        wide,
        {"usage_0": 2.5},
        {"plan": ("basic", 0.9)},
        {"usage_0", "plan"},
        {"flag_1": "yes"},
    ),
]


@pytest.mark.parametrize("table", TABLES, ids=[table.name for table in TABLES])
def test_the_closed_loop_runs_on_a_table_of_another_shape(table: Table, tmp_path: Path) -> None:
    home = PlatformHome(path=str(tmp_path / "home"))
    dataset = table.write(tmp_path)
    assert run_pipeline(home, dataset, LENIENT).success
    registry = registry_of(home)
    assert registry.alias_version("production") == "1"

    with serve(home, CHURN_MODEL_REFRESH_SECONDS="1") as service:
        card = served_model(service.url)
        schema = ModelSchema.model_validate(card["input_schema"])
        reference = home.snapshots().load(card["data_version"])
        assert set(card["features"]) == set(schema.names)

        # Valid records, the served model's own example, and refusals naming the field.
        example = schema.example()
        assert service.predict(example).status == 200
        for field, value in table.invalid.items():
            refused = service.predict({**example, field: value})
            assert refused.status == 400 and field in str(refused.body)
        missing = service.predict({k: v for k, v in example.items() if k != schema.names[0]})
        assert missing.status == 400 and schema.names[0] in str(missing.body)
        assert service.predict({**example, "telco_tenure": 3}).status == 400

        # Nightly scoring of customers without a target: the service's answers and reasons.
        customers = reference.drop(columns=[schema.target]).head(500)
        customers.to_parquet(tmp_path / "population.parquet")
        scored = materialize(
            [customer_scores],
            partition_key="2026-11-28",
            resources={
                "scoring": ScoringResource(source=str(tmp_path / "population.parquet")),
                "dataset": dataset,
                "home": home,
                "mlflow_tracking": MlflowResource.from_env(home),
            },
            instance=DagsterInstance.ephemeral(),
        )
        assert metadata(scored, "customer_scores")["dagster/row_count"] == len(customers)
        scores = ScoreStore(home.scores_dir).read("2026-11-28")
        records = [json_record(row, schema) for _, row in customers.head(MAX_RECORDS).iterrows()]
        explained = service.request("/predict?explain=true", {"records": records})
        assert explained.status == 200, explained.body
        for answer, (_, row) in zip(
            explained.body, scores.head(MAX_RECORDS).iterrows(), strict=True
        ):
            assert abs(answer["churn_probability"] - row["churn_probability"]) < 1e-9
            nightly = [
                row[c] for c in ("reason_1", "reason_2", "reason_3") if isinstance(row[c], str)
            ]
            assert [reason["text"] for reason in answer["reasons"]] == nightly
        if schema.key is None:  # a keyless table's scores are numbered by row
            assert scores["row_number"].tolist()[:3] == ["1", "2", "3"]

        # Drifted traffic with every outcome reported, then the monitoring assets.
        drifted = perturb(reference, schema, table.drift_scale, table.drift_set, seed=3)
        summary = send_traffic(
            service.url,
            rate=200,
            duration=2,
            customers=population(drifted, schema, seed=3),
            batch=5,
            label_share=1.0,
            label_delay=0.1,
        )
        assert summary.failed == 0 and summary.records >= 500, summary.errors
        eventually(service.logs_written)
        monitored = materialize(
            monitoring_assets(schema.names),
            partition_key=today(),
            resources={"home": home, "mlflow_tracking": MlflowResource.from_env(home)},
            run_config={"ops": {"drift_report": {"config": {"min_records": 300}}}},
            instance=DagsterInstance.ephemeral(),
        )
        assert monitored.success
        report = monitored.output_for_node("drift_report")
        assert table.drifted <= set(report.drifted), report.psi
        checks = {e.check_name: e.passed for e in monitored.get_asset_check_evaluations()}
        assert not checks["feature_drift"]
        assert all(not checks[f"{column}_drift"] for column in table.drifted)

        # The outcomes, joined to the logged inputs, are new training rows.
        rebuilt = materialize(
            [raw_customers, labelled_customers],
            resources={"dataset": dataset, "home": home},
            instance=DagsterInstance.ephemeral(),
        )
        labelled = rebuilt.output_for_node("labelled_customers")
        added = metadata(rebuilt, "labelled_customers")
        assert added["unmatched_feedback"] == 0
        from_feedback = int(added["rows_from_feedback"])
        # Without a key every outcome is a new row; with one, a customer's latest outcome is.
        assert from_feedback == (
            summary.labels_sent if schema.key is None else len(set(summary.customer_ids))
        )
        joined = labelled.frame.tail(from_feedback)
        for column, factor in table.drift_scale.items():
            assert joined[column].mean() > reference[column].mean() * min(factor, 1.2)

        # A retrain, promoted while clients send requests: none fails, the new version answers.
        answers: list[tuple[int, str]] = []
        stop = threading.Event()

        def client() -> None:
            # Up to 100 requests/s, across the swap: not a busy loop taking the cores from the
            # retrain it waits for.
            while not stop.wait(0.01):
                answer = service.predict(example)
                answers.append(
                    (answer.status, answer.body[0]["model_version"] if answer.status == 200 else "")
                )

        thread = threading.Thread(target=client)
        thread.start()
        try:
            retrained = run_pipeline(home, dataset, LENIENT, promotion={"margin": -1.0})
            assert retrained.success
            assert registry.alias_version("production") == "2"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not any(v == "2" for _, v in answers[-5:]):
                time.sleep(0.2)
        finally:
            stop.set()
            thread.join()
        assert {status for status, _ in answers} == {200}
        assert answers[-1][1] == "2"
        assert served_model(service.url)["data_version"] != card["data_version"]

        # The service holds to its OpenAPI document with this table's contract too.
        assert fuzz_api(service.url, tmp_path, examples=80) >= 400


def test_a_schema_change_is_promoted_by_hand_and_model_and_contract_swap_together(
    tmp_path: Path,
) -> None:
    home = PlatformHome(path=str(tmp_path / "home"))
    full = DatasetResource(synthetic_rows=1_500)
    assert run_pipeline(home, full, LENIENT).success
    # The next version no longer takes `gender`: clients sending it would be refused.
    narrower = DatasetResource(synthetic_rows=1_500, synthetic_seed=8, exclude_columns=["gender"])
    blocked = run_pipeline(home, narrower, LENIENT)
    assert not blocked.success
    registry = registry_of(home)
    assert registry.alias_version("production") == "1"

    with serve(home) as service:
        card = served_model(service.url)
        old = ModelSchema.model_validate(card["input_schema"]).example()
        new = {name: value for name, value in old.items() if name != "gender"}
        assert service.predict(old).status == 200
        refused = service.predict(new)
        assert refused.status == 400 and "gender" in str(refused.body)

        registry.promote("2", "tests", "gender is no longer collected", allow_schema_change=True)
        deadline = time.monotonic() + 30
        while served_model(service.url)["model_version"] != "2":
            assert time.monotonic() < deadline, "the promotion was never served"
            time.sleep(0.2)
        # From the moment the service reports the new version, the new schema is its contract.
        answers = [service.predict(new) for _ in range(50)]
        assert {answer.status for answer in answers} == {200}
        assert {answer.body[0]["model_version"] for answer in answers} == {"2"}
        stale = service.predict(old)
        assert stale.status == 400 and "gender" in str(stale.body)
        assert served_model(service.url)["schema_fingerprint"] != card["schema_fingerprint"]
