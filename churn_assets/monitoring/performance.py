"""`live_performance`: the production model scored on the outcomes reported to it."""

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    Config,
    MetadataValue,
    Output,
    asset,
)
from pydantic import Field

from churn.logs import (
    FEEDBACK,
    PREDICTIONS,
    join_feedback,
)
from churn.metrics import estimated_metrics
from churn.parquet_log import read_log
from churn.published import publish
from churn.registry import PRODUCTION
from churn.settings import settings
from churn.value import OUTCOMES, CostMatrix, expected_savings, savings
from churn_assets.markdown import markdown_table
from churn_assets.monitoring.common import (
    F1_CHECK,
    GROUP,
    LIVE_PERFORMANCE,
    MONITORING_DAYS,
    production_version,
    window_end,
)
from churn_assets.registry.assets import COSTS_TAG
from churn_assets.resources import (
    MlflowResource,
    PlatformHome,
)


class PerformanceConfig(Config):
    """How much live F1 may fall below the evaluation's before it is an alert."""

    f1_margin: float = Field(
        default_factory=lambda: settings().monitoring.f1_degradation_margin,
        description="Largest tolerated drop of live F1 under the hold-out F1 "
        "(`CHURN_F1_DEGRADATION_MARGIN`).",
    )
    min_labels: int = Field(
        default_factory=lambda: settings().monitoring.performance_min_labels,
        description="Fewer labelled predictions than this give no verdict "
        "(`CHURN_PERFORMANCE_MIN_LABELS`).",
    )


@dataclass
class LivePerformance:
    """The production version's figures: estimated from its predictions, realised on outcomes.

    The estimate (confidence-based, from the calibrated probabilities of the day's predictions)
    exists as soon as predictions are logged; the realised figures once enough outcomes are
    reported. The verdict reads the realised F1 when there is one, else the estimate: either
    falling below the hold-out F1 by more than the margin is a degradation.
    """

    evaluated: bool
    production_version: str
    labelled: int
    margin: float
    live: dict[str, float] = field(default_factory=dict)
    evaluation: dict[str, float] = field(default_factory=dict)
    # Confidence-based estimates from the day's predictions, and how many there were.
    estimated: dict[str, float] = field(default_factory=dict)
    predictions: int = 0

    @property
    def basis(self) -> str:
        """Which figures the verdict reads: `realised`, `estimated`, or `none`."""
        if self.evaluated:
            return "realised"
        return "estimated" if self.estimated else "none"

    @property
    def f1_drop(self) -> float:
        """Hold-out F1 minus live F1, realised or else estimated (positive: worse)."""
        if self.evaluated:
            return self.evaluation["f1"] - self.live["f1"]
        if self.estimated:
            return self.evaluation["f1"] - self.estimated["f1"]
        return 0.0

    @property
    def degraded(self) -> bool:
        """Whether live F1 fell below the hold-out F1 by more than the margin."""
        return self.basis != "none" and self.f1_drop > self.margin

    def reason(self) -> str:
        """`live F1 0.62 vs 0.81 on the hold-out split (drop 0.19 > margin 0.10)`."""
        if self.basis == "estimated":
            return (
                f"estimated F1 {self.estimated['f1']:.2f} vs {self.evaluation['f1']:.2f} on the "
                f"hold-out split (drop {self.f1_drop:.2f} > margin {self.margin:.2f}, from "
                f"{self.predictions} predictions' probabilities; {self.labelled} outcomes so far)"
            )
        return (
            f"live F1 {self.live['f1']:.2f} vs {self.evaluation['f1']:.2f} on the hold-out split "
            f"(drop {self.f1_drop:.2f} > margin {self.margin:.2f}, {self.labelled} outcomes)"
        )


def _constant_costs(tags: dict[str, str]) -> CostMatrix | None:
    """The version's decision costs as a one-customer matrix, when they are all numbers."""
    raw = tags.get(COSTS_TAG)
    if not raw:
        return None
    costs = json.loads(raw)
    if any(isinstance(value, str) for value in costs.values()):
        return None  # per-customer columns: the prediction log does not carry them
    return CostMatrix(*(np.array([float(costs[outcome])]) for outcome in OUTCOMES))


@asset(
    group_name=GROUP,
    partitions_def=MONITORING_DAYS,
    kinds={"pandas"},
    deps=["production_model"],
    check_specs=[
        AssetCheckSpec(
            F1_CHECK,
            asset=LIVE_PERFORMANCE,
            description="F1 of the production version, realised on reported outcomes or else "
            "estimated from its predictions' probabilities, is within the margin of its "
            "hold-out F1.",
        )
    ],
)
def live_performance(
    context: AssetExecutionContext,
    config: PerformanceConfig,
    mlflow_tracking: MlflowResource,
    home: PlatformHome,
) -> Iterator[Output[LivePerformance] | AssetCheckResult]:
    """F1, recall, precision (and savings) of the production version: estimated, then realised."""
    from sklearn.metrics import f1_score, precision_score, recall_score

    production = production_version(mlflow_tracking)
    version, tags = production.version, production.tags
    # Only this version's predictions count, and it made none before it was registered: the days
    # read grow with its time in production, not with the logs' whole history.
    # ...and a past day's partition counts what had been reported by the end of that day.
    since, until = production.registered_on, window_end(context).date()
    predictions = read_log(home.serving_log(PRODUCTION, PREDICTIONS), since=since, until=until)
    feedback = read_log(home.serving_log(PRODUCTION, FEEDBACK), since=since, until=until)
    joined = join_feedback(predictions, feedback)
    labelled = joined.rows
    if not labelled.empty:
        labelled = labelled[labelled["model_version"] == version]
    costs = _constant_costs(tags)
    performance = LivePerformance(
        evaluated=len(labelled) >= config.min_labels,
        production_version=version,
        labelled=len(labelled),
        margin=config.f1_margin,
        evaluation={
            name: float(tags[name])
            for name in ("f1", "recall", "precision", "savings")
            if name in tags
        },
    )
    # The partition's day of predictions, estimated from their probabilities.
    day = predictions
    if not day.empty:
        day = day[day["model_version"] == version]
        day = day[pd.to_datetime(day["predicted_at"], utc=True).dt.date == until]
    performance.predictions = len(day)
    if len(day) >= config.min_labels:
        probabilities = day["churn_probability"].to_numpy(dtype=float)
        flagged = day["churn_label"].to_numpy(dtype=int)
        performance.estimated = estimated_metrics(probabilities, flagged)
        if costs is not None:
            performance.estimated["savings"] = expected_savings(
                probabilities, flagged, _broadcast(costs, len(day))
            )
    metadata: dict[str, Any] = {
        "production_version": version,
        "labelled_predictions": performance.labelled,
        "predictions_today": performance.predictions,
        "unmatched_outcomes": joined.unmatched,
        "f1_margin": config.f1_margin,
        "basis": performance.basis,
        **{f"evaluation_{name}": value for name, value in performance.evaluation.items()},
        **{f"estimated_{name}": value for name, value in performance.estimated.items()},
    }
    if performance.evaluated:
        truth = labelled["churned"].astype(int).to_numpy()
        served = labelled["churn_label"].astype(int).to_numpy()
        performance.live = {
            "f1": float(f1_score(truth, served, zero_division=0)),
            "recall": float(recall_score(truth, served, zero_division=0)),
            "precision": float(precision_score(truth, served, zero_division=0)),
        }
        if costs is not None:
            performance.live["savings"] = savings(truth, served, _broadcast(costs, len(truth)))
        metadata |= {f"live_{name}": value for name, value in performance.live.items()}
    else:
        metadata["verdict"] = (
            f"not realised: {performance.labelled} labelled predictions of version {version}, "
            f"{config.min_labels} needed"
            + (
                "; the verdict reads the estimate"
                if performance.estimated
                else f"; {performance.predictions} predictions today, too few to estimate"
            )
        )
    metadata |= {
        "f1_drop": performance.f1_drop,
        "degraded": performance.degraded,
        "comparison": MetadataValue.md(_comparison(performance)),
    }
    if performance.degraded:
        metadata["reason"] = performance.reason()
        context.log.warning("Degraded F1: %s", performance.reason())
    publish(
        home.monitoring_dir,
        "performance",
        {
            "live": performance.live,
            "estimated": performance.estimated,
            "evaluation": performance.evaluation,
            "f1_drop": performance.f1_drop,
            "basis": performance.basis,
            "margin": performance.margin,
            "labelled": performance.labelled,
            "production_version": version,
        },
    )
    yield Output(performance, metadata=metadata)
    yield AssetCheckResult(
        check_name=F1_CHECK,
        asset_key=LIVE_PERFORMANCE,
        passed=not performance.degraded,
        severity=AssetCheckSeverity.ERROR,
        description=(
            ("Degraded F1: " + performance.reason())
            if performance.degraded
            else f"F1 within the margin: live {performance.live['f1']:.3f}, hold-out "
            f"{performance.evaluation['f1']:.3f} (margin {config.f1_margin:.2f})"
            if performance.evaluated
            else f"Estimated F1 within the margin: {performance.estimated['f1']:.3f}, hold-out "
            f"{performance.evaluation['f1']:.3f} (margin {config.f1_margin:.2f}); "
            + metadata["verdict"]
            if performance.estimated
            else metadata["verdict"]
        ),
        metadata={
            "f1_drop": performance.f1_drop,
            "basis": performance.basis,
            "labelled_predictions": performance.labelled,
        },
    )


def _broadcast(costs: CostMatrix, n: int) -> CostMatrix:
    """One customer's costs for each of `n` customers."""
    return CostMatrix(*(np.full(n, float(value[0])) for value in vars(costs).values()))


def _comparison(performance: LivePerformance) -> str:
    """Hold-out, estimated and realised figures side by side."""
    names = list(performance.evaluation)
    return markdown_table(
        ["metric", "hold-out", "estimated (today's predictions)", "realised (outcomes)"],
        [
            (
                name,
                f"{performance.evaluation[name]:.4f}",
                f"{performance.estimated[name]:.4f}" if name in performance.estimated else "-",
                f"{performance.live[name]:.4f}" if name in performance.live else "-",
            )
            for name in names
        ],
    )
