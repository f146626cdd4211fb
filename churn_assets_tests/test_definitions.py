"""The code location as Dagster loads it: every asset, check, job, sensor and schedule."""

import itertools
import os
import subprocess
import sys

from dagster import AssetKey

from churn_assets.definitions import defs
from churn_assets_tests.conftest import REPOSITORY


def test_every_definition_is_listed() -> None:
    graph = defs.resolve_asset_graph()
    assets = {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert assets == {
        "raw_customers": "ingestion",
        "validated_customers": "validation",
        "customer_splits": "features",
        "feature_pipeline": "features",
        "candidate_models": "training",
        "model_evaluation": "evaluation",
        "registered_model": "registry",
        "production_model": "registry",
    }

    checks = {(key.asset_key.to_user_string(), key.name) for key in graph.asset_check_keys}
    assert checks == {
        ("validated_customers", name)
        for name in (
            "required_columns",
            "key_columns_not_null",
            "column_completeness",
            "customer_key_unique",
            "numeric_ranges",
            "categorical_values",
            "target_is_binary",
            "row_count",
        )
    } | {
        ("registered_model", name)
        for name in ("f1_gate", "recall_gate", "probability_rmse_gate", "latency_p99_gate")
    }
    assert all(graph.get_check_spec(key).blocking for key in graph.asset_check_keys)

    jobs = {job.name for job in defs.resolve_all_job_defs() if not job.name.startswith("__")}
    assert jobs == {"ingest_and_validate", "churn_pipeline"}
    assert list(defs.sensors or []) == []
    assert list(defs.schedules or []) == []
    lineage = [
        "raw_customers",
        "validated_customers",
        "customer_splits",
        "feature_pipeline",
        "candidate_models",
        "model_evaluation",
        "registered_model",
        "production_model",
    ]
    for parent, child in itertools.pairwise(lineage):
        assert AssetKey(parent) in graph.get(AssetKey(child)).parent_keys


def test_dagster_validates_the_code_location() -> None:
    os.makedirs(os.environ["CHURN_HOME"], exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPOSITORY,
        env={**os.environ, "DAGSTER_HOME": os.environ["CHURN_HOME"]},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation successful" in result.stdout + result.stderr
