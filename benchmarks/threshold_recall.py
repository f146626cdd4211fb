"""Does the shipped decision threshold meet the recall gate on customers it never saw?

For each real table and seed: the pipeline's split (by a seeded hash of the customer key, or
stratified without one), the pipeline's search on the training split (6 trials, 5 folds), the
calibration check, the threshold chosen on out-of-fold probabilities, the winner refitted on all
training rows, and its recall on the hold-out split (and the F1 estimated from the probabilities
alone, as `live_performance` does before outcomes arrive). Printed per run: hold-out recall minus
the gate, and hold-out minus out-of-fold recall; then per table and margin: how often the gate
was missed against the risk the confidence states (with the binomial probability of missing that
often or more were the stated risk true), the spread of hold-out minus out-of-fold recall against
the spread the margin formula assumes, the mean hold-out F1, the mean (and mean absolute) gap
between the estimated and the realised F1, and how many runs kept a calibration map.

    .venv/bin/python benchmarks/threshold_recall.py --seeds 20 --gate 0.8 --confidence 0.9
    .venv/bin/python benchmarks/threshold_recall.py --tables telco,orange --seeds 5 --fixed
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
NAIVE_BAYES = "Naive_Bayes_Classifier_Attrition_Flag_Card_Category_Contacts_Count_12_mon_"


@dataclass(frozen=True)
class Table:
    """A real churn table and what its user tells the platform about it."""

    file: str
    target: str = "Churn"
    positive_label: str | None = None
    id_column: str | None = None
    exclude: list[str] = field(default_factory=list)


TABLES = {
    "telco": Table("telco_customer_churn.csv"),
    "orange": Table("orange_telecom_churn.csv"),
    "bankchurners": Table(
        "bankchurners.csv",
        "Attrition_Flag",
        "Attrited Customer",
        "CLIENTNUM",
        # What the leakage gate names on this table.
        [
            f"{NAIVE_BAYES}Dependent_count_Education_Level_Months_Inactive_12_mon_{i}"
            for i in (1, 2)
        ],
    ),
    "iranian": Table("iranian_churn.csv"),
    "ecommerce": Table("ecommerce_churn.xlsx"),
    # The per-customer costs are never features.
    "tv_subscriptions": Table(
        "tv_subscription_churn.csv.gz", "target", exclude=["id", "C_FP", "C_FN", "C_TP", "C_TN"]
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", default=",".join(TABLES))
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--gate", type=float, default=0.8)
    parser.add_argument("--confidence", type=float, default=0.9)
    parser.add_argument("--algorithms", default="lightgbm")
    parser.add_argument("--fixed", action="store_true", help="also the fixed 0.02 margin")
    parser.add_argument("--csv", type=Path, help="write every run's figures here")
    arguments = parser.parse_args()
    warnings.filterwarnings("ignore")

    from scipy.stats import binom

    from churn.metrics import classification_metrics, estimated_metrics, recall_margin
    from churn.model.features import build_feature_pipeline, feature_columns
    from churn.normalise import normalise, snake_case
    from churn.sources import read_table
    from churn_assets.features.assets import SplitConfig, split_customers
    from churn_assets.training.search import SearchBudget, tune

    rows = []
    scratch = Path(tempfile.mkdtemp(prefix="threshold-recall-"))
    for name in arguments.tables.split(","):
        table = TABLES[name]
        path = DATA / table.file
        if not path.exists():
            sys.exit(f"{path} is absent")
        raw = read_table(str(path), 2**31, 30.0, scratch)
        frame, report = normalise(raw, table.target, table.positive_label, table.id_column)
        excluded = [snake_case(column) for column in table.exclude]
        target = snake_case(table.target)
        for seed in range(1, arguments.seeds + 1):
            train, test = split_customers(frame, target, report.id_column, SplitConfig(seed=seed))
            numeric, categorical, dates = feature_columns(frame, target, report.id_column, excluded)
            features = build_feature_pipeline(numeric, categorical, dates)
            computed = recall_margin(
                arguments.gate,
                int(train[target].sum()),
                int(test[target].sum()),
                arguments.confidence,
            )
            margins = [(f"computed {arguments.confidence}", computed)]
            if arguments.fixed:
                margins.append(("fixed 0.02", 0.02))
            for algorithm in arguments.algorithms.split(","):
                for label, margin in margins:
                    budget = SearchBudget(6, 5, 12.0, 50_000, 2, seed)
                    result = tune(
                        algorithm,
                        features,
                        train,
                        train[target],
                        budget,
                        "neg_brier_score",
                        min(1.0, arguments.gate + margin),
                    )
                    probabilities = result.probabilities(test)
                    held_out = classification_metrics(
                        test[target].to_numpy(), probabilities, result.threshold
                    )
                    # Performance before labels: F1 expected from the probabilities alone.
                    estimated = estimated_metrics(probabilities, probabilities >= result.threshold)
                    oof = float(result.cv_metrics["recall"])
                    churners = (int(train[target].sum()), int(test[target].sum()))
                    assumed = np.sqrt(
                        arguments.gate * (1 - arguments.gate) * (1 / churners[0] + 1 / churners[1])
                    )
                    rows.append(
                        {
                            "table": name,
                            "seed": seed,
                            "algorithm": algorithm,
                            "margin": label,
                            "margin_value": margin,
                            "churners_held_out": churners[1],
                            "oof_recall": oof,
                            "holdout_recall": held_out["recall"],
                            "recall_minus_gate": held_out["recall"] - arguments.gate,
                            "holdout_minus_oof": held_out["recall"] - oof,
                            "assumed_spread": assumed,
                            "holdout_f1": held_out["f1"],
                            "estimated_f1": estimated["f1"],
                            "estimate_minus_f1": estimated["f1"] - held_out["f1"],
                            "calibration": result.calibration.method
                            if result.calibration
                            else "none",
                        }
                    )
                    print(
                        f"{name:16s} seed {seed:2d} {algorithm:19s} {label:15s} margin "
                        f"{margin:.3f}: hold-out recall - gate {rows[-1]['recall_minus_gate']:+.3f}"
                        f", hold-out - out-of-fold {rows[-1]['holdout_minus_oof']:+.3f}"
                        f" (F1 {held_out['f1']:.3f})",
                        flush=True,
                    )
    runs = pd.DataFrame(rows)
    if arguments.csv:
        runs.to_csv(arguments.csv, index=False)
    risk = 1 - arguments.confidence
    summary = runs.groupby(["table", "algorithm", "margin"]).agg(
        runs=("seed", "count"),
        margin=("margin_value", "mean"),
        missed=("recall_minus_gate", lambda d: int(np.sum(d < 0))),
        worst=("recall_minus_gate", "min"),
        gap_mean=("holdout_minus_oof", "mean"),
        gap_sd=("holdout_minus_oof", "std"),
        assumed_sd=("assumed_spread", "mean"),
        f1=("holdout_f1", "mean"),
        estimate_gap=("estimate_minus_f1", "mean"),
        estimate_abs=("estimate_minus_f1", lambda d: float(np.mean(np.abs(d)))),
        calibrated=("calibration", lambda c: int(np.sum(c != "none"))),
    )
    # P(misses >= observed) were each run's miss a coin of the stated risk.
    summary["p_value"] = [
        float(binom.sf(missed - 1, runs_, risk))
        for missed, runs_ in zip(summary["missed"], summary["runs"], strict=True)
    ]
    print(summary.round(3).to_string())


if __name__ == "__main__":
    main()
