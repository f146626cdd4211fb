"""Nightly scoring of the whole customer base, with the reasons behind each score.

The model is trained by the real pipeline on the real Telco file (LightGBM, the algorithm that
wins there) into a real MLflow store; `customer_scores` is materialized by Dagster; its scores are
compared with a real `bentoml serve` answering `/predict?explain=true` for the same customers;
the PostgreSQL export goes to the machine's real server. Explanations are checked on the three
algorithms and on tables of three shapes (Telco, Orange, a generated 60-column one).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from dagster import DagsterInstance, materialize
from sklearn.pipeline import Pipeline

from churn.model.artifact import ChurnModel
from churn.model.features import build_feature_pipeline, feature_columns
from churn.model.schema import ModelSchema
from churn.model.scoring import Scorer
from churn.normalise import normalise
from churn.row_checks import check_rows
from churn.score_store import (
    INPUTS,
    REASON_COLUMNS,
    REJECTED,
    SCORES_CSV,
    ScoreStore,
    read_postgres,
)
from churn.sources import read_table
from churn_assets.ingestion.synthetic import generate_accounts
from churn_assets.monitoring.inputs import production_inputs
from churn_assets.resources import (
    ComputeResource,
    DatasetResource,
    MlflowResource,
    PlatformHome,
    QualityGates,
    ScoringResource,
)
from churn_assets.scoring.assets import customer_scores
from churn_assets.training.search import ALGORITHMS
from churn_assets_tests.conftest import (
    ORANGE_CSV,
    TELCO_CSV,
    FileServer,
    json_record,
    metadata,
    registry_of,
    run_pipeline,
    today,
)
from churn_assets_tests.processes import MAX_RECORDS, postgres_database, serve

# Starts servers or processes, or runs the whole pipeline: not in `make check`.
pytestmark = pytest.mark.servers

LENIENT = QualityGates(min_f1=0.0, min_recall=0.0, max_probability_rmse=1.0)
TODAY = "2026-11-28"


@dataclass(frozen=True)
class Trained:
    home: PlatformHome
    dataset: DatasetResource
    instance: DagsterInstance


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """A LightGBM model trained by the pipeline on the real Telco file, in production."""
    import os

    if not TELCO_CSV.exists():
        pytest.skip(f"the real Telco data set is absent ({TELCO_CSV})")
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # module fixtures run before the isolation
    home = PlatformHome(path=str(tmp_path_factory.mktemp("scoring") / "home"))
    dataset = DatasetResource(source=str(TELCO_CSV))
    instance = DagsterInstance.ephemeral()
    result = run_pipeline(
        home, dataset, LENIENT, training={"algorithms": ["lightgbm"]}, instance=instance
    )
    assert result.success
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    assert registry_of(home).alias_version("production") == "1"
    return Trained(home, dataset, instance)


def score(trained: Trained, partition: str = TODAY, reasons: bool = True, **scoring: Any) -> Any:
    return materialize(
        [customer_scores],
        partition_key=partition,
        resources={
            "scoring": ScoringResource(**scoring),
            "dataset": trained.dataset,
            "home": trained.home,
            "mlflow_tracking": MlflowResource.from_env(trained.home),
            "compute": ComputeResource(),
        },
        run_config={"ops": {"customer_scores": {"config": {"reasons": reasons}}}},
        instance=trained.instance,
        raise_on_error=False,
    )


def test_nightly_scores_equal_the_services_answers_with_the_same_reasons(
    trained: Trained,
) -> None:
    result = score(trained)
    assert result.success
    shown = metadata(result, "customer_scores")
    store = ScoreStore(trained.home.scores_dir)
    scores = store.read(TODAY)
    manifest = store.manifest(TODAY)
    # The default population: the validated version's customers who have not churned.
    population = trained.home.snapshots().load(manifest.data_version)
    staying = population[population["churn"] == 0]
    assert len(scores) == len(staying) == shown["dagster/row_count"]
    assert shown["churned_skipped"] == int((population["churn"] == 1).sum())
    assert shown["model_version"] == manifest.model_version == "1"
    assert set(scores["model_version"]) == {"1"}
    assert set(scores["data_version"]) == {manifest.data_version}
    assert scores["customer_id"].tolist() == staying["customer_id"].tolist()
    # Rank 1 is the riskiest; bands follow the model's threshold.
    ranked = scores.sort_values("rank")
    assert ranked["rank"].tolist() == list(range(1, len(scores) + 1))
    assert ranked["churn_probability"].is_monotonic_decreasing
    assert sum(manifest.bands.values()) == len(scores)
    assert (scores.loc[scores["risk_band"] == "high", "churn_label"] == 1).all()
    assert "| 1 |" in shown["top_customers"] and "hold-out" in shown["score_distribution"]
    # The CSV holds the same rows for a spreadsheet.
    csv = pd.read_csv(store.partition(TODAY) / SCORES_CSV, dtype={"customer_id": str})
    assert csv["customer_id"].tolist() == scores["customer_id"].tolist()
    assert np.allclose(csv["churn_probability"], scores["churn_probability"], rtol=0, atol=1e-12)

    schema = registry_of(trained.home).schema_of("1")
    assert schema is not None
    sample = staying.sample(400, random_state=1)
    expected = scores.set_index("customer_id").loc[sample["customer_id"]]
    with serve(trained.home) as service:
        answers: list[dict[str, Any]] = []
        for start in range(0, len(sample), MAX_RECORDS):
            records = [
                json_record(row, schema)
                for _, row in sample.iloc[start : start + MAX_RECORDS].iterrows()
            ]
            answer = service.request("/predict?explain=true", {"records": records})
            assert answer.status == 200, answer.body
            answers += answer.body
        plain = service.predict(json_record(sample.iloc[0], schema))
        refused = service.request("/predict?explain=maybe", {"records": [records[0]]})
    assert [a["customer_id"] for a in answers] == expected.index.tolist()
    assert (
        np.abs(
            np.array([a["churn_probability"] for a in answers]) - expected["churn_probability"]
        ).max()
        < 1e-9
    )
    assert [a["churn_label"] for a in answers] == expected["churn_label"].tolist()
    for predicted, (_, row) in zip(answers, expected.iterrows(), strict=True):
        online = [reason["text"] for reason in predicted["reasons"]]
        nightly = [row[c] for c in REASON_COLUMNS if isinstance(row[c], str)]
        assert online == nightly
        assert all(reason["contribution"] > 0 for reason in predicted["reasons"])
    # Off by default; a bad value is a 400 naming the parameter.
    assert plain.status == 200 and plain.body[0]["reasons"] is None
    assert refused.status == 400 and "explain" in str(refused.body)


def test_a_population_file_without_target_and_with_bad_rows_is_scored_minus_those_rows(
    trained: Trained, tmp_path: Path, file_server: FileServer
) -> None:
    raw = pd.read_csv(TELCO_CSV, dtype=str, keep_default_na=False).drop(columns=["Churn"])
    raw.loc[3, "tenure"] = "three"  # not a number
    raw.loc[5, "MonthlyCharges"] = "1e9"  # far outside what the model saw
    raw.loc[8, "Contract"] = ""  # never missing in training
    raw.loc[13, "customerID"] = "  "  # no key
    raw.loc[21, "TotalCharges"] = "#N/A"  # junk: missing, which the column may be
    path = file_server.root / "customers.csv"
    raw.to_csv(path, index=False)

    result = score(trained, source=file_server.url("customers.csv"))
    assert result.success
    shown = metadata(result, "customer_scores")
    assert shown["rows_read"] == len(raw) and shown["churned_skipped"] == 0
    assert shown["rows_rejected"] == 4 and shown["dagster/row_count"] == len(raw) - 4
    assert shown["data_version"].startswith("file-")
    store = ScoreStore(trained.home.scores_dir)
    rejected = pd.read_parquet(store.partition(TODAY) / REJECTED)
    reasons = dict(zip(rejected["row_number"], rejected["rejection_reason"], strict=True))
    assert reasons == {
        4: "tenure: 'three' is not a number",
        6: "monthly_charges: 1e+09 outside [0, 220]",
        9: "contract: missing",
        14: "customer_id: missing customer key",
    }
    assert shown["rejected_by_column"] == {
        "tenure": 1,
        "monthly_charges": 1,
        "contract": 1,
        "customer_id": 1,
    }
    scores = store.read(TODAY)
    assert raw.loc[21, "customerID"] in set(scores["customer_id"])  # scored, with a missing value
    assert not set(raw.loc[[3, 5, 8], "customerID"]) & set(scores["customer_id"])

    # Over the allowed share, nothing is published and the night's scores stay.
    before = store.read(TODAY)
    refused = score(trained, source=str(path), max_rejected_share=0.0001)
    assert not refused.success
    failure = next(e for e in refused.all_events if e.is_step_failure)
    message = failure.event_specific_data.error.message
    assert "4 of 7043 customers (0.1%) do not fit the input schema" in message
    assert "tenure: 1" in message and "Nothing was published" in message
    pd.testing.assert_frame_equal(store.read(TODAY), before)


def test_a_population_missing_an_input_column_fails_naming_it(
    trained: Trained, tmp_path: Path
) -> None:
    path = tmp_path / "customers.parquet"
    pd.read_csv(TELCO_CSV).drop(columns=["Contract", "tenure"]).to_parquet(path)
    result = score(trained, source=str(path))
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "lacks input column(s) of the model: tenure, contract" in (
        failure.event_specific_data.error.message
    )
    assert not list((trained.home.scores_dir / ".versions").glob("*/.unranked.parquet"))


def test_a_partition_rewrite_is_atomic_for_readers(trained: Trained) -> None:
    partition = "2026-11-27"
    assert score(trained, partition, reasons=False).success
    store = ScoreStore(trained.home.scores_dir)
    seen: list[tuple[bool, int]] = []
    stop = threading.Event()
    problems: list[BaseException] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                scores = store.read(partition, columns=["reason_1"])
                seen.append((bool(scores["reason_1"].notna().any()), len(scores)))
            except BaseException as error:
                problems.append(error)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for reasons in (True, False, True):
            assert score(trained, partition, reasons=reasons).success
    finally:
        stop.set()
        thread.join()
    assert not problems, problems[:3]
    assert len(seen) > 10
    # Every read saw one whole version: all rows with reasons, or all rows without.
    assert len({rows for _, rows in seen}) == 1
    assert {with_reasons for with_reasons, _ in seen} == {True, False}
    assert store.read(partition)["reason_1"].notna().any()
    # The replaced versions do not pile up: the current one and the one before it.
    assert len(list((trained.home.scores_dir / ".versions").glob(f"{partition}-*"))) == 2


def test_scores_are_exported_to_postgres_and_a_rerun_replaces_them(
    trained: Trained,
) -> None:
    partition = "2026-11-26"
    with postgres_database("churn_scores") as url:
        first = score(trained, partition, reasons=True, database_url=url)
        assert first.success
        assert metadata(first, "customer_scores")["postgres_rows"] > 5_000
        exported = read_postgres(url, partition)
        parquet = (
            ScoreStore(trained.home.scores_dir).read(partition).sort_values("rank").reset_index()
        )
        assert exported["customer_key"].tolist() == parquet["customer_id"].tolist()
        assert np.abs(exported["churn_probability"] - parquet["churn_probability"]).max() == 0
        # PostgreSQL gives a missing reason back as None, the score store's Arrow text as <NA>.
        pd.testing.assert_series_equal(
            exported["reason_1"].astype("string[pyarrow]"),
            parquet["reason_1"].astype("string[pyarrow]"),
            check_index=False,
        )
        assert exported["reason_3"].isna().tolist() == parquet["reason_3"].isna().tolist()
        assert {str(d) for d in exported["score_date"]} == {partition}
        assert exported["model_version"].unique().tolist() == ["1"]
        # A re-run replaces the partition's rows in one transaction; other nights stay.
        assert score(trained, "2026-11-25", reasons=False, database_url=url).success
        assert score(trained, partition, reasons=False, database_url=url).success
        again = read_postgres(url, partition)
        assert len(again) == len(exported) and again["reason_1"].isna().all()
        assert len(read_postgres(url, "2026-11-25")) == len(exported)


def test_the_drift_report_can_watch_the_nightly_population(trained: Trained) -> None:
    assert score(trained, reasons=False).success
    result = materialize(
        [production_inputs],
        partition_key=today(),
        resources={"home": trained.home},
        run_config={"ops": {"production_inputs": {"config": {"population": "batch"}}}},
        instance=DagsterInstance.ephemeral(),
    )
    inputs = result.output_for_node("production_inputs")
    store = ScoreStore(trained.home.scores_dir)
    sample = pd.read_parquet(store.partition(TODAY) / INPUTS)
    # A uniform sample of every scored customer (all of them, below 20,000), at most the
    # window's 5,000 of them for drift.
    assert len(sample) == len(store.read(TODAY)) and len(inputs) == 5_000
    assert set(sample.columns) == set(registry_of(trained.home).schema_of("1").names)  # type: ignore[union-attr]
    assert set(inputs["model_version"]) == {"1"}


# Explanations, on pipelines fitted directly (no registry): every algorithm, three tables.


def _table(name: str) -> tuple[pd.DataFrame, str, str | None]:
    if name == "telco":
        if not TELCO_CSV.exists():
            pytest.skip("the real Telco data set is absent")
        frame, _ = normalise(read_table(str(TELCO_CSV), 10**9, 5, Path("/tmp")), "Churn")
        return frame, "churn", "customer_id"
    if name == "orange":
        if not ORANGE_CSV.exists():
            pytest.skip("the real Orange data set is absent")
        frame, _ = normalise(read_table(str(ORANGE_CSV), 10**9, 5, Path("/tmp")), "churn")
        return frame, "churn", None
    frame, _ = normalise(generate_accounts(2_000), "Lapsed", id_column="AccountNumber")
    return frame, "lapsed", "account_number"


@pytest.fixture(scope="module", params=["telco", "orange", "accounts"])
def table(request: pytest.FixtureRequest) -> Iterator[tuple[pd.DataFrame, str, str | None]]:
    yield _table(request.param)


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_reasons_add_up_to_the_models_raw_score(
    table: tuple[pd.DataFrame, str, str | None], algorithm: str
) -> None:
    frame, target, key = table
    numeric, categorical, dates = feature_columns(frame, target, key, [])
    estimator = ALGORITHMS[algorithm].make(0)
    if algorithm != "logistic_regression":
        estimator.set_params(n_estimators=60)
    pipeline = Pipeline(
        [("features", build_feature_pipeline(numeric, categorical, dates)), ("model", estimator)]
    ).fit(frame, frame[target])
    schema = ModelSchema.from_frame(frame, target, key)
    scorer = Scorer.of(ChurnModel.from_pipeline(pipeline, 0.5, key, schema))
    checked = check_rows(frame, schema)
    assert len(checked.rejected) == 0
    contributions = scorer.contributions(checked.columns)
    encoded = scorer.encode(checked.columns)
    # Additive: base plus contributions is the model's own raw score, for every customer.
    assert np.abs(contributions.raw_scores() - scorer.explainer.raw_scores(encoded)).max() < 1e-9
    assert contributions.values.shape == (len(frame), len(schema.names))
    # The scorer's probabilities are the pipeline's, to the bit, from the batch-checked columns.
    assert np.array_equal(
        scorer.probabilities(checked.columns), pipeline.predict_proba(frame)[:, 1]
    )
    # Reasons name raw columns (never one-hot columns), largest first, all pushing up.
    reasons = scorer.reasons(checked.columns, contributions)
    named = {reason.feature for row in reasons for reason in row}
    assert named and named <= set(schema.names)
    for row in reasons[:200]:
        amounts = [reason.contribution for reason in row]
        assert amounts == sorted(amounts, reverse=True) and all(a > 0 for a in amounts)


def test_scoring_runs_again_when_production_moves(trained: Trained) -> None:
    from datetime import UTC, datetime

    from dagster import RunRequest, build_sensor_context

    from churn_assets.scoring.assets import rescore_on_promotion

    # Nightly at 02:00: an automation condition (test_automation.py).
    resources = {
        "mlflow_tracking": MlflowResource.from_env(trained.home),
        "compute": ComputeResource(),
        "scoring": ScoringResource(),
    }
    first = build_sensor_context(instance=trained.instance, resources=resources)
    assert not isinstance(rescore_on_promotion(first), RunRequest)  # the first look records
    assert first.cursor == "1"
    unchanged = build_sensor_context(instance=trained.instance, cursor="1", resources=resources)
    assert not isinstance(rescore_on_promotion(unchanged), RunRequest)
    moved = build_sensor_context(instance=trained.instance, cursor="0", resources=resources)
    request = rescore_on_promotion(moved)
    assert isinstance(request, RunRequest)
    assert request.partition_key == datetime.now(UTC).strftime("%Y-%m-%d")
    assert request.tags["churn/reason"] == "production moved to v1"


def test_a_population_spelled_as_its_export_is_checked_as_ingestion_reads_it() -> None:
    """Dates in the export's spelling or ISO 8601, numbers with decimal commas; a value that
    is neither is set aside naming its column."""
    from churn.model.schema import ColumnKind, ColumnSchema

    schema = ModelSchema(
        columns=[
            ColumnSchema(name="signed_up", kind=ColumnKind.DATE, nullable=False),
            ColumnSchema(name="fee", kind=ColumnKind.NUMBER, nullable=True),
        ],
        target="churn",
    )
    exported = pd.DataFrame(
        {"signed_up": ["15.03.2024", "01.02.2023", "31.13.2023"], "fee": ["34,67", "1.234,5", None]}
    )
    checked = check_rows(exported, schema)
    assert list(pd.to_datetime(checked.columns["signed_up"])) == [
        pd.Timestamp("2024-03-15"),
        pd.Timestamp("2023-02-01"),
    ]
    assert checked.columns["fee"][:1].tolist() == [34.67]
    assert checked.rejected["rejection_reason"].tolist() == [
        "signed_up: '31.13.2023' is not a date"
    ]
    iso = pd.DataFrame({"signed_up": ["2024-03-15T10:00:00Z", None], "fee": [1.0, 2.0]})
    checked = check_rows(iso, schema)
    assert list(pd.to_datetime(checked.columns["signed_up"])) == [pd.Timestamp("2024-03-15 10:00")]
    assert checked.rejected["rejection_reason"].tolist() == ["signed_up: missing"]
