"""Target leakage: an input that tells churners apart on its own is flagged, an honest one not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churn.leakage import single_column_power
from churn.normalise import normalise
from churn.sources import read_table
from churn_assets_tests.conftest import REPOSITORY, bank_customers

BANKCHURNERS = REPOSITORY.parent / "shared" / "data" / "bankchurners.csv"


def test_a_copy_of_the_target_is_flagged_in_either_direction_and_names_are_not() -> None:
    frame, _ = normalise(bank_customers(3_000), "Exited")
    rng = np.random.default_rng(3)
    frame["closed_account"] = np.where(rng.random(len(frame)) < 0.995, frame["exited"], 0)
    frame["still_active"] = 1 - frame["exited"]
    frame["exit_reason"] = pd.Series("moved", index=frame.index).where(frame["exited"] == 1)
    inputs = [c for c in frame.columns if c not in {"exited", "customer_id"}]
    powers = {power.column: power.auc for power in single_column_power(frame, "exited", inputs)}
    for leak in ("closed_account", "still_active", "exit_reason"):
        assert powers[leak] > 0.95, powers
    # A surname is unique per customer: learned out of fold, it tells nothing.
    assert powers["surname"] == pytest.approx(0.5, abs=0.05)
    # Age drives the generated churn strongly (0.93 alone), and is still below the gate.
    assert max(powers[c] for c in ("age", "balance", "geography", "is_active_member")) < 0.95


def test_the_two_classifier_outputs_of_bankchurners_are_the_only_leaks() -> None:
    if not BANKCHURNERS.exists():
        pytest.skip(f"the real BankChurners table is absent ({BANKCHURNERS})")
    raw = read_table(str(BANKCHURNERS), 2**30, 30.0, REPOSITORY / ".churn" / "scratch")
    frame, _ = normalise(raw, "Attrition_Flag", "Attrited Customer", "CLIENTNUM")
    inputs = [c for c in frame.columns if c not in {"attrition_flag", "clientnum"}]
    powers = single_column_power(frame, "attrition_flag", inputs)
    leaks = [power.column for power in powers if power.auc > 0.95]
    assert len(leaks) == 2 and all(c.startswith("naive_bayes_classifier_") for c in leaks)
    assert powers[2].auc < 0.85  # the strongest honest input (total_trans_ct: 0.80)
