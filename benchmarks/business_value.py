"""What the cost-based threshold is worth on the TV table, against the F1 one and blanket decisions.

The TV-subscription table carries each customer's cost of a false positive, a false negative, a
true positive and a true negative (`C_FP`, `C_FN`, `C_TP`, `C_TN`). For each split seed, as the
pipeline does with `CHURN_COST_*` naming those columns: the split, the search (the pipeline's
default algorithms and budget, selected by the cross-validated Brier score), the threshold that
minimises the out-of-fold cost, the refit, and on the hold-out customers the savings of

- the cost-based threshold (what the pipeline ships with costs set),
- the F1 threshold under the recall gate (what it ships without costs: best out-of-fold F1 among
  thresholds whose recall clears the gate plus its margin),
- contacting everyone and contacting no one (the baseline is the cheaper of the two: savings 0).

Savings = (cost without a model - cost with it) / cost without it (Bahnsen et al. 2015).

    .venv/bin/python benchmarks/business_value.py --seeds 10
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import pandas as pd

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TV = DATA / "tv_subscription_churn.csv.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--algorithms", default="logistic_regression,random_forest,lightgbm")
    parser.add_argument("--gate", type=float, default=0.8, help="recall gate of the F1 threshold")
    arguments = parser.parse_args()
    warnings.filterwarnings("ignore")
    if not TV.exists():
        sys.exit(f"{TV} is absent")

    from churn.metrics import choose_threshold, classification_metrics, recall_margin
    from churn.model.features import build_feature_pipeline, feature_columns
    from churn.normalise import normalise
    from churn.sources import read_table
    from churn.value import DecisionCosts, known, savings
    from churn_assets.features.assets import SplitConfig, split_customers
    from churn_assets.training.search import SearchBudget, tune

    raw = read_table(str(TV), 2**31, 30.0, Path(tempfile.mkdtemp(prefix="business-value-")))
    frame, report = normalise(raw, "target", None, None)
    costs = DecisionCosts("c_fp", "c_fn", "c_tp", "c_tn")
    target = "target"
    excluded = ["id", *costs.columns]
    rows = []
    for seed in range(1, arguments.seeds + 1):
        train, test = split_customers(frame, target, report.id_column, SplitConfig(seed=seed))
        numeric, categorical, dates = feature_columns(frame, target, report.id_column, excluded)
        features = build_feature_pipeline(numeric, categorical, dates)
        budget = SearchBudget(6, 5, 12.0, 50_000, 2, seed)
        results = [
            tune(algorithm, features, train, train[target], budget, "neg_brier_score", 1.0, costs)
            for algorithm in arguments.algorithms.split(",")
        ]
        best = max(results, key=lambda r: r.cv_metrics["cv_neg_brier_score"])
        # The F1 threshold the pipeline ships without costs, on the same out-of-fold predictions.
        margin = recall_margin(
            arguments.gate, int(train[target].sum()), int(test[target].sum()), 0.9
        )
        oof_labels, oof = best.out_of_fold
        f1_threshold = choose_threshold(oof_labels, oof, min(1.0, arguments.gate + margin))
        labels = test[target].to_numpy()
        probabilities = best.probabilities(test)
        matrix = costs.matrix(test)
        assert known(matrix).all()
        nobody, everybody = matrix.baseline(labels)
        baseline = min(nobody, everybody)
        row = {
            "seed": seed,
            "algorithm": best.algorithm,
            "cost_threshold": best.threshold,
            "f1_threshold": f1_threshold,
            "savings_cost_threshold": savings(labels, probabilities >= best.threshold, matrix),
            "savings_f1_threshold": savings(labels, probabilities >= f1_threshold, matrix),
            "savings_everyone": (baseline - everybody) / baseline,
            "savings_no_one": (baseline - nobody) / baseline,
            "f1_cost_threshold": classification_metrics(labels, probabilities, best.threshold)[
                "f1"
            ],
            "f1_f1_threshold": classification_metrics(labels, probabilities, f1_threshold)["f1"],
            "roc_auc": classification_metrics(labels, probabilities, 0.5)["roc_auc"],
        }
        rows.append(row)
        print(
            f"seed {seed:2d} {best.algorithm:19s} savings: cost threshold "
            f"{row['savings_cost_threshold']:+.3f} ({best.threshold:.3f}), F1 threshold "
            f"{row['savings_f1_threshold']:+.3f} ({f1_threshold:.3f}), everyone "
            f"{row['savings_everyone']:+.3f}, no one {row['savings_no_one']:+.3f}; "
            f"ROC-AUC {row['roc_auc']:.3f}",
            flush=True,
        )
    runs = pd.DataFrame(rows)
    numbers = runs.drop(columns=["seed", "algorithm"])
    print(pd.DataFrame({"mean": numbers.mean(), "sd": numbers.std()}).round(3).to_string())
    print(runs["algorithm"].value_counts().to_string())


if __name__ == "__main__":
    main()
