"""Registry assets: every evaluated model is registered; the gates decide who may be promoted.

Each evaluated model becomes a version with alias `staging`. It reaches `production` only through
the quality gates (blocking checks) and by beating the current production version.
"""

import getpass
import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    Config,
    Failure,
    MetadataValue,
    Output,
    asset,
)
from pydantic import Field

from churn.metrics import HoldoutMetric
from churn.registry import (
    GATE_RESULTS,
    METRIC_TAGS,
    PRODUCTION,
    STAGING,
    GateOutcome,
    ModelRegistry,
    loading_problem,
)
from churn.settings import GateSettings, settings
from churn.uncertainty import (
    METRICS,
    Interval,
    paired_differences,
    ranking_difference,
    statistics,
)
from churn_assets.automation import daily_freshness
from churn_assets.evaluation.assets import ModelEvaluation
from churn_assets.markdown import markdown_table
from churn_assets.registry.card import model_card
from churn_assets.resources import MlflowResource, QualityGates, mlflow_step

GROUP = "registry"
REGISTERED = "registered_model"
SCHEMA_CHECK = "input_schema_compatible"
DAGSTER_ACTOR = "dagster"
LOWER_IS_BETTER = {"probability_rmse"}
# The decision costs a version was chosen with (JSON: outcome -> number or column).
COSTS_TAG = "decision_costs"

# Gate check name -> (metric of the evaluation, comparison, QualityGates field).
GATES: dict[str, tuple[str, str, str]] = {
    "f1_gate": ("f1", ">=", "min_f1"),
    "recall_gate": ("recall", ">=", "min_recall"),
    "probability_rmse_gate": ("probability_rmse", "<=", "max_probability_rmse"),
    "latency_p99_gate": ("latency_p99_ms", "<=", "max_latency_p99_ms"),
    "leakage_gate": ("max_single_column_auc", "<=", "max_single_column_auc"),
    "savings_gate": ("savings", ">=", "min_savings"),
}


@dataclass
class GateResult:
    """One quality gate: the hold-out estimate, its interval, against the threshold.

    A gate passes when the estimate is on the right side of the threshold; the interval says how
    far another hold-out of the same size might put it. A gate without a threshold (the savings
    gate when `CHURN_GATE_MIN_SAVINGS` or the costs are unset) is not applied, and passes.
    """

    gate: str
    metric: str
    observed: float
    comparison: str
    threshold: float | None
    detail: str = ""
    interval: Interval | None = None

    @property
    def applied(self) -> bool:
        """Whether the gate has a threshold and something to judge."""
        return self.threshold is not None and not math.isnan(self.observed)

    @property
    def passed(self) -> bool:
        """Whether the observed value is on the right side of the threshold."""
        if self.threshold is None or not self.applied:
            return True
        if self.comparison == ">=":
            return self.observed >= self.threshold
        return self.observed <= self.threshold

    @property
    def requirement(self) -> str:
        """`>= 0.8`, or why the gate is not applied."""
        if self.threshold is None:
            return "not applied (no threshold set)"
        if not self.applied:
            return f"not applied (no {self.metric}: set the CHURN_COST_* costs)"
        return f"{self.comparison} {self.threshold:g}"

    @property
    def shown_interval(self) -> str:
        """`0.7812 to 0.8410`, or a dash when the figure has no sampling interval."""
        if self.interval is None or not self.applied:
            return "-"
        return f"{self.interval.low:.4f} to {self.interval.high:.4f}"


@dataclass
class RegisteredVersion:
    """A model version in the registry, and whether it passed the gates."""

    model_name: str
    version: str
    gates: list[GateResult]
    evaluation: ModelEvaluation

    @property
    def gates_passed(self) -> bool:
        """Whether every quality gate passed."""
        return all(gate.passed for gate in self.gates)


def evaluate_gates(evaluation: ModelEvaluation, gates: QualityGates) -> list[GateResult]:
    """Each gate of `gates` applied to `evaluation`."""
    strongest = evaluation.single_column_auc
    observed = {
        **evaluation.metrics,
        "latency_p99_ms": evaluation.latency_p99_ms,
        "max_single_column_auc": max(strongest.values(), default=0.5),
    }
    results = []
    for name, (metric, comparison, field) in GATES.items():
        threshold = getattr(gates, field)
        results.append(
            GateResult(
                name,
                metric,
                observed.get(metric, math.nan),
                comparison,
                None if threshold is None else float(threshold),
                interval=evaluation.intervals.get(metric),
            )
        )
    leaks = [c for c, auc in strongest.items() if auc > gates.max_single_column_auc]
    for result in results:
        if result.gate == "leakage_gate" and leaks:
            result.detail = (
                "; ".join(f"{c} alone gives ROC-AUC {strongest[c]:.3f}" for c in leaks)
                + ": it leaks the target; exclude it with CHURN_EXCLUDE_COLUMNS="
                + ",".join(leaks)
            )
    return results


def gate_setting(gate: str) -> str:
    """The environment variable that sets a gate (`f1_gate` -> `CHURN_GATE_MIN_F1`)."""
    field = GATES[gate][2]
    return {variable: name for name, variable in GateSettings.variables().items()}[field]


def gate_outcomes(results: list[GateResult]) -> list[GateOutcome]:
    """The gates as the registry keeps them with the version."""
    return [
        GateOutcome(
            gate=r.gate,
            metric=r.metric,
            observed=None if math.isnan(r.observed) else round(r.observed, 6),
            comparison=r.comparison,
            threshold=r.threshold,
            passed=r.passed,
            setting=gate_setting(r.gate),
            detail=r.detail,
            low=round(r.interval.low, 6) if r.interval and r.applied else None,
            high=round(r.interval.high, 6) if r.interval and r.applied else None,
            applied=r.applied,
        )
        for r in results
    ]


def owner() -> str:
    """Who owns the models this process registers: `CHURN_OWNER`, else the user name."""
    return settings().platform.owner or getpass.getuser()


@asset(
    group_name=GROUP,
    kinds={"mlflow"},
    freshness_policy=daily_freshness(),
    check_specs=[
        AssetCheckSpec(
            name,
            asset=REGISTERED,
            blocking=True,
            description=f"Hold-out {metric} {comparison} the `{field}` quality gate.",
        )
        for name, (metric, comparison, field) in GATES.items()
    ]
    + [
        AssetCheckSpec(
            SCHEMA_CHECK,
            asset=REGISTERED,
            blocking=True,
            description="The version takes the inputs the production version takes: no new "
            "required column, no removed column, no changed kind. A change is promoted by hand "
            "(`churn-registry promote N --allow-schema-change`).",
        )
    ],
)
@mlflow_step
def registered_model(
    context: AssetExecutionContext,
    model_evaluation: ModelEvaluation,
    mlflow_tracking: MlflowResource,
    gates: QualityGates,
) -> Iterator[Output[RegisteredVersion] | AssetCheckResult]:
    """The evaluated model as a new registry version with alias `staging` and its model card."""
    evaluation = model_evaluation
    mlflow_tracking.activate()
    client = mlflow_tracking.client()
    registry = ModelRegistry(client, mlflow_tracking.model_name)
    results = evaluate_gates(evaluation, gates)
    passed = all(result.passed for result in results)
    m = evaluation.metrics
    tags: dict[str, str] = {
        "algorithm": evaluation.algorithm,
        "owner": owner(),
        "data_version": evaluation.data_version,
        "dataset": evaluation.dataset,
        "source": evaluation.source[:500],
        "dagster_run_id": evaluation.dagster_run_id,
        "mlflow_run_id": evaluation.run_id,
        "threshold": f"{evaluation.threshold:.6f}",
        "gates": "passed" if passed else "failed",
        GATE_RESULTS: json.dumps([asdict(outcome) for outcome in gate_outcomes(results)]),
        "gate_profile": gates.profile,
        **{name: f"{m[name]:.4f}" for name in METRIC_TAGS if name in m},
        "latency_p99_ms": f"{evaluation.latency_p99_ms:.2f}",
        "input_schema": evaluation.schema.fingerprint if evaluation.schema else "",
    }
    if evaluation.costs is not None:
        tags[COSTS_TAG] = json.dumps(dict(evaluation.costs.items()))
    version = registry.register(evaluation.model_uri, evaluation.run_id, tags, description="")
    run_url = mlflow_tracking.run_url(evaluation.experiment_id, evaluation.run_id)
    card = model_card(
        model_name=registry.name,
        version=version,
        owner=tags["owner"],
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        algorithm=evaluation.algorithm,
        data_version=evaluation.data_version,
        dataset=evaluation.dataset,
        source=evaluation.source,
        params=evaluation.params,
        threshold=evaluation.threshold,
        metrics=evaluation.metrics,
        cv_metrics={
            k: v for k, v in evaluation.cv_metrics.items() if k.startswith(("cv_", "brier_"))
        },
        latency_ms={"p50": evaluation.latency_p50_ms, "p99": evaluation.latency_p99_ms},
        gates=[(r.gate, r.observed, r.shown_interval, r.requirement, r.passed) for r in results],
        costs=evaluation.costs.describe() if evaluation.costs else None,
        cost_curve=evaluation.cost_curve,
        calibration_map=evaluation.calibration_map,
        dagster_run_id=evaluation.dagster_run_id,
        mlflow_run_id=evaluation.run_id,
        mlflow_run_url=run_url,
        schema=evaluation.schema,
        calibration=evaluation.calibration,
    )
    client.update_model_version(registry.name, version, description=card)
    client.log_text(evaluation.run_id, card, f"model_card_v{version}.md")
    registry.move_alias(
        STAGING,
        version,
        DAGSTER_ACTOR,
        f"registered by Dagster run {evaluation.dagster_run_id} "
        f"(gates {'passed' if passed else 'failed'})",
    )
    context.log.info("Registered %s version %s as staging", registry.name, version)

    yield Output(
        RegisteredVersion(registry.name, version, results, evaluation),
        metadata={
            "model": registry.name,
            "version": version,
            "alias": STAGING,
            "gates": "passed" if passed else "failed",
            "model_card": MetadataValue.md(card),
            "mlflow_model_version": MetadataValue.url(mlflow_tracking.model_version_url(version)),
            "mlflow_run": MetadataValue.url(run_url),
        },
    )
    changes = registry.schema_changes(version)
    production = registry.alias_version(PRODUCTION)
    yield AssetCheckResult(
        check_name=SCHEMA_CHECK,
        asset_key=REGISTERED,
        passed=not changes,
        severity=AssetCheckSeverity.ERROR,
        description=(
            f"Input schema differs from production version {production}: "
            + "; ".join(str(change) for change in changes)
            + ". Promote by hand with --allow-schema-change once clients send the new schema."
            if changes
            else "Same inputs as the production version"
            if production and production != version
            else "No production version to compare with"
        ),
        metadata={
            "version": version,
            "production_version": production or "(none)",
            "changes": MetadataValue.md(
                markdown_table(["column", "change"], [(c.column, c.change) for c in changes])
                if changes
                else "(none)"
            ),
        },
    )
    for result in results:
        shown = (
            f"{result.metric} = {result.observed:.4f}"
            + (
                f" ({result.interval.confidence:.0%} interval {result.shown_interval})"
                if result.interval and result.applied
                else ""
            )
            if result.applied
            else f"{result.metric}"
        )
        yield AssetCheckResult(
            check_name=result.gate,
            asset_key=REGISTERED,
            passed=result.passed,
            severity=AssetCheckSeverity.ERROR,
            description=f"{shown}, required {result.requirement} ({gate_setting(result.gate)})"
            + (f". {result.detail}" if result.detail else ""),
            metadata={
                "observed": None if math.isnan(result.observed) else result.observed,
                "interval_low": result.interval.low if result.interval else None,
                "interval_high": result.interval.high if result.interval else None,
                "threshold": result.threshold,
                "comparison": result.comparison,
                "applied": result.applied,
                "gate_profile": gates.profile,
                "version": version,
            },
        )


class PromotionConfig(Config):
    """How a challenger must compare with the production version to replace it."""

    metric: HoldoutMetric = Field(
        default=HoldoutMetric.f1,
        description="Hold-out metric compared: accuracy, f1, precision, recall, roc_auc, "
        "pr_auc, probability_rmse (lower is better) or savings (with costs set); another value "
        "is refused before the run starts.",
    )
    margin: float = Field(
        default=0.0,
        description="The challenger must be better by more than this, with confidence: the "
        "lower end of the paired interval of its gain must be above the margin. A negative "
        "margin accepts a challenger up to that much worse: drift-triggered retrains use -0.02, "
        "since they learned from newer data than production (CHURN_RETRAIN_PROMOTION_MARGIN).",
    )
    confidence: float = Field(
        default=0.9,
        ge=0.5,
        lt=1.0,
        description="Two-sided confidence of the paired intervals; the decision reads the lower "
        "end, so 0.9 promotes a challenger whose gain exceeds the margin with 95 % confidence.",
    )


@dataclass
class PairedComparison:
    """The challenger against the champion on the same hold-out customers."""

    customers: int
    # Metric -> challenger minus champion, with its paired interval.
    differences: dict[str, Interval]
    challenger: dict[str, float]
    champion: dict[str, float]

    def table(self) -> str:
        """The comparison as a markdown table, one row per metric."""
        return markdown_table(
            ["metric", "challenger", "production", "difference", "interval of the difference"],
            [
                (
                    name,
                    f"{self.challenger[name]:.4f}",
                    f"{self.champion[name]:.4f}",
                    f"{d.estimate:+.4f}",
                    f"{d.low:+.4f} to {d.high:+.4f} ({d.confidence:.0%})",
                )
                for name, d in self.differences.items()
            ],
        )


def compare_paired(
    evaluation: ModelEvaluation,
    challenger_probabilities: np.ndarray,
    champion_probabilities: np.ndarray,
    champion_threshold: float,
    metric: str,
    confidence: float,
) -> PairedComparison:
    """Each gate metric (and `metric`) of both models on the same hold-out customers, paired.

    Each model decides at its own threshold. Savings are compared over the customers whose costs
    are known, when costs are set.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    labels = evaluation.test[evaluation.target].to_numpy()
    names = ["f1", "recall", "precision", "accuracy", "probability_rmse"]
    if metric not in (*names, "roc_auc", "pr_auc", "savings"):
        names.append(metric)
    matrix = evaluation.costs.matrix(evaluation.test) if evaluation.costs else None
    if matrix is not None:
        # Customers whose costs are unknown count for every metric but savings (0 cost each).
        names.append("savings")
    challenger = statistics(labels, challenger_probabilities, evaluation.threshold, matrix)
    champion = statistics(labels, champion_probabilities, champion_threshold, matrix)
    differences = paired_differences(challenger, champion, confidence, names)
    totals = {
        "challenger": challenger.sum(axis=0),
        "champion": champion.sum(axis=0),
    }
    figures = {
        side: {name: float(METRICS[name](total)) for name in names}
        for side, total in totals.items()
    }
    for name, score in (("roc_auc", roc_auc_score), ("pr_auc", average_precision_score)):
        if name == metric:
            differences[name] = ranking_difference(
                labels, challenger_probabilities, champion_probabilities, score, confidence
            )
            figures["challenger"][name] = float(score(labels, challenger_probabilities))
            figures["champion"][name] = float(score(labels, champion_probabilities))
    return PairedComparison(len(labels), differences, figures["challenger"], figures["champion"])


@dataclass
class PromotionDecision:
    """What happened to `production` after a registration."""

    promoted: bool
    production_version: str
    challenger_version: str
    champion_version: str | None
    metric: str
    challenger_score: float
    champion_score: float | None
    reason: str
    comparison: PairedComparison | None = None


@asset(group_name=GROUP, kinds={"mlflow"}, freshness_policy=daily_freshness())
@mlflow_step
def production_model(
    context: AssetExecutionContext,
    config: PromotionConfig,
    registered_model: RegisteredVersion,
    mlflow_tracking: MlflowResource,
) -> Output[PromotionDecision]:
    """The version behind the `production` alias, after the paired champion/challenger test."""
    from churn.model.artifact import PROBABILITY
    from churn.model.pyfunc import load_model

    challenger = registered_model
    evaluation = challenger.evaluation
    metric = config.metric.value
    mlflow_tracking.activate()
    client = mlflow_tracking.client()
    registry = ModelRegistry(client, mlflow_tracking.model_name)
    champion = registry.alias_version(PRODUCTION)
    if metric not in evaluation.metrics:
        raise Failure(
            f"the promotion metric {metric!r} was not measured on the hold-out: "
            + ("set the CHURN_COST_* costs" if metric == "savings" else "unknown metric"),
            allow_retries=False,
        )
    score = evaluation.metrics[metric]
    champion_score: float | None = None
    comparison: PairedComparison | None = None
    if champion is None:
        promoted, reason = True, "first version to pass the gates"
    elif champion == challenger.version:
        promoted, reason = False, f"version {champion} is already in production"
    else:
        # Both models on the same hold-out customers; each decides at its own threshold.
        champion_model = load_model(f"models:/{registry.name}/{champion}")
        # As the service scores: the champion's own inputs, whatever else the rows carry now.
        records = evaluation.test[champion_model.schema.names]
        champion_probabilities = champion_model.predict(records)[PROBABILITY].to_numpy()
        comparison = compare_paired(
            evaluation,
            _challenger_probabilities(evaluation),
            champion_probabilities,
            champion_model.threshold,
            metric,
            config.confidence,
        )
        champion_score = comparison.champion[metric]
        difference = comparison.differences[metric]
        # The gain, and the lower end of its interval, with "better" pointing up.
        lower_is_better = metric in LOWER_IS_BETTER
        gain = -difference.estimate if lower_is_better else difference.estimate
        floor = -difference.high if lower_is_better else difference.low
        promoted = floor > config.margin
        reason = (
            f"challenger {metric} {score:.4f} vs production {champion_score:.4f} on the same "
            f"{comparison.customers} hold-out customers: gain {gain:+.4f}, "
            f"{difference.confidence:.0%} interval {floor:+.4f} to "
            f"{(-difference.low if lower_is_better else difference.high):+.4f}; "
            + (
                f"its lower end is above the margin {config.margin:g}"
                if promoted
                else f"not credibly better: the interval's lower end is not above the margin "
                f"{config.margin:g}, so it stays on staging"
            )
        )
    if promoted:
        problem = loading_problem(registry.name, challenger.version)
        if problem:
            raise Failure(
                description=f"Version {challenger.version} cannot be served, so it is not "
                f"promoted (production stays at {champion or 'none'}): {problem}",
                allow_retries=False,
            )
        registry.promote(challenger.version, DAGSTER_ACTOR, reason)
        context.log.info("Promoted version %s to production: %s", challenger.version, reason)
    else:
        if champion != challenger.version:
            # The decision goes in the audit trail too: staging stays where it is.
            registry.move_alias(STAGING, challenger.version, DAGSTER_ACTOR, reason)
        context.log.info("Kept version %s in production: %s", champion, reason)
    production = registry.alias_version(PRODUCTION)
    assert production is not None
    decision = PromotionDecision(
        promoted=promoted,
        production_version=production,
        challenger_version=challenger.version,
        champion_version=champion,
        metric=metric,
        challenger_score=score,
        champion_score=champion_score,
        reason=reason,
        comparison=comparison,
    )
    section = _promotion_section(decision)
    card = (client.get_model_version(registry.name, challenger.version).description or "") + (
        "\n" + section
    )
    client.update_model_version(registry.name, challenger.version, description=card)
    client.log_text(evaluation.run_id, card, f"model_card_v{challenger.version}.md")
    if comparison is not None:
        client.log_dict(
            evaluation.run_id,
            {
                "champion_version": champion,
                "challenger_version": challenger.version,
                "customers": comparison.customers,
                "promoted": promoted,
                "reason": reason,
                "differences": {name: asdict(d) for name, d in comparison.differences.items()},
            },
            f"promotion_v{challenger.version}.json",
        )
    metadata: dict[str, Any] = {
        "decision": "promoted" if promoted else "kept the production version",
        "production_version": production,
        "challenger_version": challenger.version,
        "previous_production_version": champion or "(none)",
        "reason": reason,
        "mlflow_model_version": MetadataValue.url(mlflow_tracking.model_version_url(production)),
    }
    if comparison is not None:
        metadata["paired_comparison"] = MetadataValue.md(comparison.table())
        difference = comparison.differences[metric]
        metadata[f"{metric}_difference"] = difference.estimate
        metadata[f"{metric}_difference_low"] = difference.low
        metadata[f"{metric}_difference_high"] = difference.high
    return Output(decision, metadata=metadata)


def _challenger_probabilities(evaluation: ModelEvaluation) -> np.ndarray:
    """The challenger's hold-out probabilities, as its evaluation measured them."""
    if len(evaluation.probabilities) == len(evaluation.test):
        return evaluation.probabilities["probability"].to_numpy()
    # An evaluation stored before it kept its probabilities: score the hold-out again.
    from churn.model.artifact import PROBABILITY
    from churn.model.pyfunc import load_model

    model = load_model(evaluation.model_uri)
    return model.predict(evaluation.test[model.schema.names])[PROBABILITY].to_numpy()


def _promotion_section(decision: PromotionDecision) -> str:
    """The card's *Champion and challenger* section."""
    lines = [
        "## Champion and challenger",
        "",
        f"**{'Promoted to production' if decision.promoted else 'Kept on staging'}** "
        f"(compared on {decision.metric}): {decision.reason}.",
        "",
    ]
    if decision.comparison is not None:
        lines += [
            f"Paired on the same {decision.comparison.customers} hold-out customers against "
            f"version {decision.champion_version}, each model at its own threshold:",
            "",
            decision.comparison.table(),
            "",
        ]
    return "\n".join(lines)
