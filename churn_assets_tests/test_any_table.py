"""Bring your own churn table: a schema change between two versions, promoted by hand.

The closed loop on every real table is `test_real_tables.py`.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from churn.model.schema import ModelSchema
from churn_assets.resources import (
    DatasetResource,
    PlatformHome,
    QualityGates,
)
from churn_assets_tests.conftest import (
    registry_of,
    run_pipeline,
)
from churn_assets_tests.processes import serve
from serving.traffic import served_model

# Starts servers or processes, or runs the whole pipeline: not in `make check`.
pytestmark = pytest.mark.servers

LENIENT = QualityGates(min_f1=0.0, min_recall=0.0, max_probability_rmse=1.0)


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
