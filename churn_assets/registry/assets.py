"""Registry assets: every evaluated model is registered; the gates decide who may be promoted.

Each evaluated model becomes a version with alias `staging`. It reaches `production` only through
the quality gates (blocking checks) and by beating the current production version.
"""

import getpass
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

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

from churn.metrics import HoldoutMetric, classification_metrics
from churn.registry import (
    GATE_RESULTS,
    PRODUCTION,
    STAGING,
    GateOutcome,
    ModelRegistry,
    loading_problem,
)
from churn.settings import GateSettings, settings
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

# Gate check name -> (metric of the evaluation, comparison, QualityGates field).
GATES: dict[str, tuple[str, str, str]] = {
    "f1_gate": ("f1", ">=", "min_f1"),
    "recall_gate": ("recall", ">=", "min_recall"),
    "probability_rmse_gate": ("probability_rmse", "<=", "max_probability_rmse"),
    "latency_p99_gate": ("latency_p99_ms", "<=", "max_latency_p99_ms"),
    "leakage_gate": ("max_single_column_auc", "<=", "max_single_column_auc"),
}


@dataclass
class GateResult:
    """One quality gate: the observed value against its threshold."""

    gate: str
    metric: str
    observed: float
    comparison: str
    threshold: float
    detail: str = ""

    @property
    def passed(self) -> bool:
        """Whether the observed value is on the right side of the threshold."""
        if self.comparison == ">=":
            return self.observed >= self.threshold
        return self.observed <= self.threshold


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
    results = [
        GateResult(name, metric, observed[metric], comparison, float(getattr(gates, field)))
        for name, (metric, comparison, field) in GATES.items()
    ]
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
            observed=round(r.observed, 6),
            comparison=r.comparison,
            threshold=r.threshold,
            passed=r.passed,
            setting=gate_setting(r.gate),
            detail=r.detail,
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
    tags = {
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
        **{
            name: f"{m[name]:.4f}"
            for name in ("f1", "accuracy", "precision", "recall", "roc_auc", "probability_rmse")
        },
        "latency_p99_ms": f"{evaluation.latency_p99_ms:.2f}",
        "input_schema": evaluation.schema.fingerprint if evaluation.schema else "",
    }
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
        cv_metrics={k: v for k, v in evaluation.cv_metrics.items() if k.startswith("cv_")},
        latency_ms={"p50": evaluation.latency_p50_ms, "p99": evaluation.latency_p99_ms},
        gates=[(r.gate, r.observed, r.comparison, r.threshold, r.passed) for r in results],
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
        yield AssetCheckResult(
            check_name=result.gate,
            asset_key=REGISTERED,
            passed=result.passed,
            severity=AssetCheckSeverity.ERROR,
            description=f"{result.metric} = {result.observed:.4f}, required "
            f"{result.comparison} {result.threshold:g} ({gate_setting(result.gate)})"
            + (f". {result.detail}" if result.detail else ""),
            metadata={
                "observed": result.observed,
                "threshold": result.threshold,
                "comparison": result.comparison,
                "gate_profile": gates.profile,
                "version": version,
            },
        )


class PromotionConfig(Config):
    """How a challenger must compare with the production version to replace it."""

    metric: HoldoutMetric = Field(
        default=HoldoutMetric.f1,
        description="Hold-out metric compared: accuracy, f1, precision, recall, roc_auc, "
        "pr_auc or probability_rmse (lower is better); another value is refused before the run "
        "starts.",
    )
    margin: float = Field(
        default=0.0,
        description="The challenger must be better by more than this. A negative margin "
        "accepts a challenger up to that much worse: drift-triggered retrains use -0.01, since "
        "they learned from newer data than production (CHURN_RETRAIN_PROMOTION_MARGIN).",
    )


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


@asset(group_name=GROUP, kinds={"mlflow"}, freshness_policy=daily_freshness())
@mlflow_step
def production_model(
    context: AssetExecutionContext,
    config: PromotionConfig,
    registered_model: RegisteredVersion,
    mlflow_tracking: MlflowResource,
) -> Output[PromotionDecision]:
    """The version behind the `production` alias, after the champion/challenger comparison."""
    from churn.model.artifact import PROBABILITY
    from churn.model.pyfunc import load_model

    challenger = registered_model
    evaluation = challenger.evaluation
    metric = config.metric.value
    mlflow_tracking.activate()
    registry = ModelRegistry(mlflow_tracking.client(), mlflow_tracking.model_name)
    champion = registry.alias_version(PRODUCTION)
    score = evaluation.metrics[metric]
    champion_score: float | None = None
    if champion is None:
        promoted, reason = True, "first version to pass the gates"
    elif champion == challenger.version:
        promoted, reason = False, f"version {champion} is already in production"
    else:
        # Both models on the same hold-out customers; the champion's own threshold labels them.
        champion_model = load_model(f"models:/{registry.name}/{champion}")
        labels = evaluation.test[evaluation.target].to_numpy()
        # As the service scores: the champion's own inputs, whatever else the rows carry now.
        records = evaluation.test[champion_model.schema.names]
        probabilities = champion_model.predict(records)[PROBABILITY].to_numpy()
        champion_score = classification_metrics(labels, probabilities, champion_model.threshold)[
            metric
        ]
        gain = champion_score - score if metric in LOWER_IS_BETTER else score - champion_score
        promoted = gain > config.margin
        reason = (
            f"challenger {metric} {score:.4f} vs production {champion_score:.4f} "
            f"(margin {config.margin:g}) on the same hold-out data"
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
    )
    metadata: dict[str, Any] = {
        "decision": "promoted" if promoted else "kept the production version",
        "production_version": production,
        "challenger_version": challenger.version,
        "previous_production_version": champion or "(none)",
        "reason": reason,
        "mlflow_model_version": MetadataValue.url(mlflow_tracking.model_version_url(production)),
    }
    return Output(decision, metadata=metadata)
