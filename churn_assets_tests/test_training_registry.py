"""Training, evaluation, gates and the registry, materialized in process on a real MLflow store.

Each test runs the whole graph (ingestion to production) on small data with a small search
budget, against an MLflow SQLite store and artifact folder under the test's platform home.
"""

import json
import re
import time
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from dagster import AssetKey

from churn.model.artifact import LABEL, PROBABILITY
from churn.model.pyfunc import load_model
from churn.registry import ModelRegistry, RegistryError
from churn_assets.registry.cli import main as registry_cli
from churn_assets.resources import DatasetResource, MlflowResource, PlatformHome, QualityGates
from churn_assets_tests.conftest import (
    metadata,
    registry_of,
    run_pipeline,
    set_environment,
    trained_home,
)

# Starts servers or processes, or runs the whole pipeline: not in `make check`.
pytestmark = pytest.mark.servers


def test_the_whole_graph_ends_with_a_served_ready_production_model(
    isolated_home: PlatformHome,
) -> None:
    result = run_pipeline(
        isolated_home,
        DatasetResource(synthetic_rows=3_000),
        # Tuned on a sample of the training rows: only the selected candidate is refitted on all.
        training={
            "algorithms": ["logistic_regression", "random_forest", "lightgbm"],
            "max_tuning_rows": 1_500,
        },
    )
    assert result.success
    gates = {
        e.check_name: e.passed
        for e in result.get_asset_check_evaluations()
        if str(e.asset_key) == str(AssetKey("registered_model"))
    }
    assert gates == {
        "f1_gate": True,
        "recall_gate": True,
        "probability_rmse_gate": True,
        "latency_p99_gate": True,
        "leakage_gate": True,
        "savings_gate": True,  # not applied: no decision costs
        "input_schema_compatible": True,  # the first version: nothing to compare with
    }

    comparison = metadata(result, "candidate_models")["comparison"]
    header, _, *rows = comparison.splitlines()
    assert header == (
        "| Run ID | Algorithm | Parameters | Accuracy | F1 | Precision | Recall "
        "| Fitted on rows | Duration | Status |"
    )
    assert len(rows) == 3 and all(row.endswith("| FINISHED |") for row in rows)
    assert "(http://127.0.0.1:5000/#/experiments/" in rows[0]

    assert metadata(result, "production_model")["decision"] == "promoted"
    splits = result.output_for_node("customer_splits")
    assert not set(splits.train["customer_id"]) & set(splits.test["customer_id"])
    registry = registry_of(isolated_home)
    assert registry.alias_version("production") == registry.alias_version("staging") == "1"
    version = registry.client.get_model_version("churn-predictor", "1")
    assert version.tags["lifecycle"] == "production"
    assert version.tags["data_version"] == metadata(result, "raw_customers")["data_version"]
    assert "# churn-predictor version 1" in version.description
    assert "**Owner:**" in version.description and "## Lineage" in version.description

    # Every candidate is its own MLflow run, nested under the pipeline run, with its model.
    client = registry.client
    parent = client.get_run(version.run_id).data.tags["mlflow.parentRunId"]
    children = client.search_runs(
        [client.get_run(parent).info.experiment_id],
        f"tags.mlflow.parentRunId = '{parent}'",
    )
    # MLflow's UI opens the experiment in its model-training view, not the GenAI one.
    experiment = client.get_experiment(client.get_run(parent).info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert {run.data.tags["algorithm"] for run in children} == {
        "logistic_regression",
        "random_forest",
        "lightgbm",
    }
    for run in children:
        assert run.data.tags["dagster_run_id"] == result.run_id
        assert {
            "cv_roc_auc",
            "holdout_f1",
            "holdout_accuracy",
            "holdout_precision",
            "holdout_recall",
            "duration_seconds",
        } <= set(run.data.metrics)
        assert run.inputs.dataset_inputs[0].dataset.digest == version.tags["data_version"]
        selected = run.info.run_id == version.run_id
        assert run.data.params["tuning_rows"] == "1500"
        assert run.data.params["fit_rows"] == (str(len(splits.train)) if selected else "1500")
    artifacts = {a.path for a in client.list_artifacts(version.run_id, "evaluation")}
    assert {
        "evaluation/confusion_matrix.png",
        "evaluation/roc_curve.png",
        "evaluation/precision_recall_curve.png",
        "evaluation/feature_importance.png",
        "evaluation/reliability_diagram.png",
    } <= artifacts
    assert "## Calibration (hold-out)" in str(version.description)
    assert "](evaluation/reliability_diagram.png)" in str(version.description)
    evaluated = result.output_for_node("model_evaluation")
    assert 0 <= evaluated.metrics["ece"] < 1 and evaluated.metrics["brier"] == pytest.approx(
        evaluated.metrics["probability_rmse"] ** 2
    )
    assert sum(b.customers for b in evaluated.calibration) == len(evaluated.test)

    # The production model scores raw records, labelled with its shipped threshold.
    model = mlflow.pyfunc.load_model("models:/churn-predictor@production")
    records = result.output_for_node("customer_splits").test.drop(columns=["churn"]).head(25)
    text = [c for c in records.columns if pd.api.types.is_string_dtype(records[c])]
    scored = model.predict(records.astype(dict.fromkeys(text, object)))
    assert list(scored.columns) == ["customer_id", PROBABILITY, LABEL]
    threshold = float(version.tags["threshold"])
    assert (scored[LABEL] == (scored[PROBABILITY] >= threshold).astype(int)).all()
    assert scored["customer_id"].tolist() == records["customer_id"].tolist()


def test_the_real_telco_file_with_the_telco_gate_profile(
    telco_csv: Path, isolated_home: PlatformHome
) -> None:
    result = run_pipeline(
        isolated_home,
        DatasetResource(source=str(telco_csv)),
        gates=QualityGates.from_env({"CHURN_GATES": "telco"}),
        training={"algorithms": ["logistic_regression"], "iterations": 3, "folds": 5},
    )
    assert result.success
    evaluation = metadata(result, "model_evaluation")
    assert evaluation["roc_auc"] > 0.80
    assert evaluation["recall"] >= 0.75
    assert registry_of(isolated_home).alias_version("production") == "1"
    model = mlflow.pyfunc.load_model("models:/churn-predictor@production")
    test = result.output_for_node("customer_splits").test
    records = test.drop(columns=["churn"]).astype(
        {c: object for c in test.columns if pd.api.types.is_string_dtype(test[c])}
    )
    scored = model.predict(records)
    assert len(scored) == len(test) and scored[PROBABILITY].between(0, 1).all()


def test_gates_challengers_and_the_audit_trail(
    isolated_home: PlatformHome, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = registry_of(isolated_home)
    full = DatasetResource(synthetic_rows=3_000, synthetic_seed=1)
    # Without its strongest features a model is clearly worse; lenient gates let it through.
    weak = full.model_copy(
        update={
            "exclude_columns": [
                "Contract",
                "tenure",
                "TotalCharges",
                "InternetService",
                "PaymentMethod",
                "TechSupport",
                "OnlineSecurity",
            ]
        }
    )
    lenient = QualityGates(min_f1=0.0, min_recall=0.0, max_probability_rmse=1.0)

    # 1. The first version to pass the gates becomes production.
    assert run_pipeline(isolated_home, weak, lenient).success
    assert registry.alias_version("production") == "1"

    # 2. A failing gate: version 2 is registered as staging, production stays at 1. It also takes
    #    inputs version 1 does not (the weak model lacked them): a schema change, blocked too.
    strict = QualityGates(min_f1=0.999)
    result = run_pipeline(isolated_home, full.model_copy(update={"synthetic_seed": 2}), strict)
    assert not result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    failed = {name for name, evaluation in checks.items() if not evaluation.passed}
    assert failed == {"f1_gate", "input_schema_compatible"}
    assert "contract: new required column" in str(checks["input_schema_compatible"].description)
    assert registry.alias_version("production") == "1"
    assert registry.alias_version("staging") == "2"
    assert AssetKey("production_model") not in {
        e.asset_key for e in result.get_asset_materialization_events()
    }
    # Each gate's check names its observed value, the requirement and the setting to change;
    # the registry keeps them with the version, and `make up` prints them (`blocked`).
    assert re.fullmatch(
        r"f1 = 0\.\d{4} \(90% interval 0\.\d{4} to 0\.\d{4}\), required >= 0\.999 "
        r"\(CHURN_GATE_MIN_F1\)",
        str(checks["f1_gate"].description),
    )
    [f1] = [gate for gate in registry.gates("2") if not gate.passed]
    assert (f1.gate, f1.threshold, f1.setting) == ("f1_gate", 0.999, "CHURN_GATE_MIN_F1")
    assert registry_cli(["blocked", "--since", str(time.time() - 600)]) == 0
    explained = capsys.readouterr().out
    assert "Version 2 of churn-predictor is registered and served on staging" in explained
    assert f"f1_gate                {f1}" in explained and "CHURN_GATE_MIN_F1" in explained
    assert "--override-gates" in explained
    assert registry_cli(["blocked", "--since", str(time.time() + 600)]) == 1
    assert registry_cli(["gates", "2"]) == 0
    assert "| f1_gate | f1 = " in capsys.readouterr().out
    # A version that failed its gates reaches production only by a deliberate override.
    with pytest.raises(RegistryError, match=r"version 2 .* failed its quality gates: f1_gate: f1"):
        registry.promote("2", "tests", "looks fine to me", allow_schema_change=True)

    # 3. A better challenger passes the gates, but needs the new inputs: only a deliberate
    #    promotion by hand moves production, and the audit trail says it changed the schema.
    result = run_pipeline(isolated_home, full.model_copy(update={"synthetic_seed": 3}))
    assert not result.success
    assert {e.check_name for e in result.get_asset_check_evaluations() if not e.passed} == {
        "input_schema_compatible"
    }
    assert registry.alias_version("production") == "1"
    with pytest.raises(RegistryError, match="takes other inputs than production: contract: new"):
        registry.promote("3", "tests", "better model")
    registry.promote("3", "tests", "better model", allow_schema_change=True)
    assert registry.alias_version("production") == "3"
    assert "schema change allowed: contract: new required column" in registry.audit()[-1].reason

    # 4. A challenger that drops inputs production clients send is not promoted.
    result = run_pipeline(isolated_home, weak.model_copy(update={"synthetic_seed": 4}), lenient)
    assert not result.success
    [schema_check] = [
        e for e in result.get_asset_check_evaluations() if e.check_name == "input_schema_compatible"
    ]
    assert not schema_check.passed
    assert "contract: removed (clients still send it)" in str(schema_check.description)
    assert registry.alias_version("production") == "3"

    # 5. A challenger of the same schema that is not better by the margin is not promoted.
    result = run_pipeline(
        isolated_home, full.model_copy(update={"synthetic_seed": 5}), promotion={"margin": 0.5}
    )
    assert result.success
    kept = metadata(result, "production_model")
    assert kept["decision"] == "kept the production version"
    assert "not credibly better" in kept["reason"] and "margin 0.5" in kept["reason"]
    assert "| f1 |" in kept["paired_comparison"]
    assert registry.alias_version("production") == "3"

    lifecycle = {
        str(v.version): v.tags["lifecycle"]
        for v in registry.client.search_model_versions("name = 'churn-predictor'")
    }
    assert lifecycle == {
        "1": "archived",
        "2": "archived",
        "3": "production",
        "4": "archived",
        "5": "staging",
    }
    moves = [(e.alias, e.from_version, e.to_version, e.actor) for e in registry.audit()]
    assert moves == [
        ("staging", None, "1", "dagster"),
        ("production", None, "1", "dagster"),
        ("staging", "1", "2", "dagster"),
        ("staging", "2", "3", "dagster"),
        ("production", "1", "3", "tests"),
        ("staging", "3", "4", "dagster"),
        ("staging", "4", "5", "dagster"),
        ("staging", "5", "5", "dagster"),  # the decision to keep it there, with its numbers
    ]
    assert "gates failed" in registry.audit()[2].reason

    registry.promote(
        "2", "tests", "campaign needs it today", allow_schema_change=True, override_gates=True
    )
    assert registry.alias_version("production") == "2"
    assert f"gates overridden: {f1}" in registry.audit()[-1].reason


@pytest.fixture(scope="module")
def two_version_home(tmp_path_factory: pytest.TempPathFactory) -> PlatformHome:
    """A registry with two versions, built once for the CLI tests."""
    home = PlatformHome(path=str(tmp_path_factory.mktemp("registry") / "churn-home"))
    with pytest.MonkeyPatch.context() as environment:
        environment.delenv("MLFLOW_TRACKING_URI", raising=False)
        base = DatasetResource(synthetic_rows=1_500)
        assert run_pipeline(home, base).success
        assert run_pipeline(home, base.model_copy(update={"synthetic_seed": 9})).success
    return home


@pytest.fixture
def two_versions(two_version_home: PlatformHome, monkeypatch: pytest.MonkeyPatch) -> ModelRegistry:
    set_environment(monkeypatch, CHURN_HOME=two_version_home.path)
    return registry_of(two_version_home)


def test_the_cli_lists_promotes_and_rolls_back(
    two_versions: ModelRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = two_versions
    assert registry_cli(["list"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0] == "| Model | Version | Algorithm | F1 | Accuracy | Stage | Date | Owner |"
    assert len(table) == 4 and table[2].startswith("| churn-predictor | 2 | logistic_regression |")

    production = registry.alias_version("production")
    other = "2" if production == "1" else "1"
    assert registry_cli(["promote", other, "--reason", "hand-picked", "--actor", "ana"]) == 0
    assert registry.alias_version("production") == other
    assert registry_cli(["rollback", "--reason", "bad feedback", "--actor", "ana"]) == 0
    assert registry.alias_version("production") == production
    last = registry.audit()[-1]
    assert (last.actor, last.from_version, last.to_version) == ("ana", other, production)
    assert last.reason == "rollback: bad feedback"

    assert registry_cli(["audit"]) == 0
    assert "| ana | production |" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["promote", "42", "--reason", "x"], "'churn-predictor' has no version '42'"),
        (["--model", "nope", "promote", "1", "--reason", "x"], "unknown model 'nope'"),
        (["--model", "nope", "list"], "unknown model 'nope'"),
        (["promote", "1", "--reason", " "], "a promotion needs a reason"),
    ],
)
def test_bad_cli_arguments_change_nothing(
    two_versions: ModelRegistry,
    capsys: pytest.CaptureFixture[str],
    arguments: list[str],
    message: str,
) -> None:
    before = (two_versions.alias_version("production"), len(two_versions.audit()))
    assert registry_cli(arguments) == 2
    assert message in capsys.readouterr().err
    assert (two_versions.alias_version("production"), len(two_versions.audit())) == before


@pytest.fixture(scope="module")
def one_version_home(tmp_path_factory: pytest.TempPathFactory) -> PlatformHome:
    """A registry with one version, the first in production, for the tests that only read it."""
    return trained_home(tmp_path_factory.mktemp("one-version"))


def test_a_rollback_with_no_earlier_production_version_is_refused(
    one_version_home: PlatformHome,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    set_environment(monkeypatch, CHURN_HOME=one_version_home.path)
    registry = registry_of(one_version_home)
    before = (registry.alias_version("production"), len(registry.audit()))
    assert registry_cli(["rollback", "--reason", "x"]) == 2
    assert "nothing to roll back to" in capsys.readouterr().err
    assert (registry.alias_version("production"), len(registry.audit())) == before == ("1", 2)


def test_mlflow_tracking_server_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, isolated_home: PlatformHome
) -> None:
    local = MlflowResource.from_env(isolated_home)
    assert local.tracking_uri == f"sqlite:///{isolated_home.root / 'mlflow' / 'mlflow.db'}"
    set_environment(monkeypatch, MLFLOW_TRACKING_URI="http://mlflow:5000")
    remote = MlflowResource.from_env(isolated_home)
    assert (remote.tracking_uri, remote.artifact_location) == ("http://mlflow:5000", None)
    assert remote.run_url("3", "abc") == "http://mlflow:5000/#/experiments/3/runs/abc"


def test_gate_profiles_from_the_environment() -> None:
    assert QualityGates.from_env({}).min_f1 == 0.85
    telco = QualityGates.from_env({"CHURN_GATES": "telco", "CHURN_GATE_MIN_RECALL": "0.7"})
    assert (telco.min_f1, telco.min_recall) == (0.60, 0.7)
    assert telco.profile == "telco (with overrides)"
    with pytest.raises(ValueError, match="CHURN_GATES='nope': Input should be 'brief' or 'telco'"):
        QualityGates.from_env({"CHURN_GATES": "nope"})


def test_the_model_card_is_logged_with_the_run(
    one_version_home: PlatformHome, tmp_path: Path
) -> None:
    registry = registry_of(one_version_home)
    version = registry.client.get_model_version("churn-predictor", "1")
    path = mlflow.artifacts.download_artifacts(
        run_id=version.run_id,
        artifact_path="model_card_v1.md",
        dst_path=str(tmp_path / "card"),
    )
    card = Path(path).read_text()
    assert card == version.description
    for heading in (
        "## Data",
        "## Hold-out metrics",
        "## Quality gates",
        "## Input schema",
        "## Lineage",
    ):
        assert heading in card
    assert "| customer_id | customer key | yes |" in card
    assert "| tenure | integer | no | 0 to " in card
    assert json.loads(json.dumps(version.tags))["gates"] == "passed"
    assert pd.notna(float(version.tags["latency_p99_ms"]))
    # The schema is stored with the version, and is the one its pipeline takes.
    schema = registry.schema_of("1")
    assert schema is not None and schema.key == "customer_id" and len(schema.names) == 19
    assert version.tags["input_schema"] == schema.fingerprint
    model = load_model("models:/churn-predictor/1")
    assert model.schema == schema


@pytest.mark.parametrize(
    ("training", "promotion", "refused"),
    [
        ({"selection_metric": "auc"}, None, "selection_metric not in enum type SelectionMetric"),
        ({}, {"metric": "f2"}, "metric not in enum type HoldoutMetric"),
    ],
)
def test_a_configuration_mistake_is_refused_before_the_run_starts(
    isolated_home: PlatformHome,
    training: dict[str, Any],
    promotion: dict[str, Any] | None,
    refused: str,
) -> None:
    """Refused by the launchpad's config check: no step runs, so nothing is retried."""
    from dagster import DagsterInvalidConfigError

    with pytest.raises(DagsterInvalidConfigError, match=refused):
        run_pipeline(
            isolated_home,
            DatasetResource(synthetic_rows=500),
            training=training,
            promotion=promotion,
        )
    assert not isolated_home.snapshots().root.exists()  # not even ingestion ran
