"""`live_performance`: the production model scored on the outcomes reported to it."""

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

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
from churn.parquet_log import read_log
from churn.published import publish
from churn.registry import PRODUCTION
from churn.settings import settings
from churn_assets.markdown import markdown_table
from churn_assets.monitoring.common import (
    F1_CHECK,
    GROUP,
    LIVE_PERFORMANCE,
    MONITORING_DAYS,
    production_version,
    window_end,
)
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
    """The production version's classification figures on the outcomes reported so far."""

    evaluated: bool
    production_version: str
    labelled: int
    margin: float
    live: dict[str, float] = field(default_factory=dict)
    evaluation: dict[str, float] = field(default_factory=dict)

    @property
    def f1_drop(self) -> float:
        """Hold-out F1 minus live F1 (positive: worse in production)."""
        if not self.evaluated:
            return 0.0
        return self.evaluation["f1"] - self.live["f1"]

    @property
    def degraded(self) -> bool:
        """Whether live F1 fell below the hold-out F1 by more than the margin."""
        return self.evaluated and self.f1_drop > self.margin

    def reason(self) -> str:
        """`live F1 0.62 vs 0.81 on the hold-out split (drop 0.19 > margin 0.10)`."""
        return (
            f"live F1 {self.live['f1']:.2f} vs {self.evaluation['f1']:.2f} on the hold-out split "
            f"(drop {self.f1_drop:.2f} > margin {self.margin:.2f}, {self.labelled} outcomes)"
        )


@asset(
    group_name=GROUP,
    partitions_def=MONITORING_DAYS,
    kinds={"pandas"},
    deps=["production_model"],
    check_specs=[
        AssetCheckSpec(
            F1_CHECK,
            asset=LIVE_PERFORMANCE,
            description="Live F1 of the production version is within the margin of its "
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
    """F1, recall and precision of the production version on the outcomes reported to it."""
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
    performance = LivePerformance(
        evaluated=len(labelled) >= config.min_labels,
        production_version=version,
        labelled=len(labelled),
        margin=config.f1_margin,
        evaluation={name: float(tags[name]) for name in ("f1", "recall", "precision")},
    )
    metadata: dict[str, Any] = {
        "production_version": version,
        "labelled_predictions": performance.labelled,
        "unmatched_outcomes": joined.unmatched,
        "f1_margin": config.f1_margin,
        **{f"evaluation_{name}": value for name, value in performance.evaluation.items()},
    }
    if performance.evaluated:
        truth = labelled["churned"].astype(int).to_numpy()
        served = labelled["churn_label"].astype(int).to_numpy()
        performance.live = {
            "f1": float(f1_score(truth, served, zero_division=0)),
            "recall": float(recall_score(truth, served, zero_division=0)),
            "precision": float(precision_score(truth, served, zero_division=0)),
        }
        metadata |= {
            **{f"live_{name}": value for name, value in performance.live.items()},
            "f1_drop": performance.f1_drop,
            "degraded": performance.degraded,
            "reason": performance.reason(),
            "comparison": MetadataValue.md(
                markdown_table(
                    ["metric", "live", "hold-out"],
                    [
                        (name, f"{performance.live[name]:.4f}", f"{value:.4f}")
                        for name, value in performance.evaluation.items()
                    ],
                )
            ),
        }
        publish(
            home.monitoring_dir,
            "performance",
            {
                "live": performance.live,
                "evaluation": performance.evaluation,
                "f1_drop": performance.f1_drop,
                "margin": performance.margin,
                "labelled": performance.labelled,
                "production_version": version,
            },
        )
        if performance.degraded:
            context.log.warning("Degraded F1: %s", performance.reason())
    else:
        metadata |= {
            "degraded": False,
            "verdict": f"not evaluated: {performance.labelled} labelled predictions of version "
            f"{version}, {config.min_labels} needed",
        }
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
            else metadata["verdict"]
        ),
        metadata={"f1_drop": performance.f1_drop, "labelled_predictions": performance.labelled},
    )
