"""The model card: what a registered version is, where it came from and how good it is."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from churn.metrics import CalibrationBin
from churn.model.schema import ModelSchema
from churn_assets.evaluation.assets import cost_curve_table, reliability_table
from churn_assets.evaluation.plots import COST_CURVE, EVALUATION_FOLDER, RELIABILITY_DIAGRAM
from churn_assets.markdown import markdown_table


def model_card(
    *,
    model_name: str,
    version: str,
    owner: str,
    date: str,
    algorithm: str,
    data_version: str,
    dataset: str,
    source: str,
    params: Mapping[str, object],
    threshold: float,
    metrics: Mapping[str, float],
    cv_metrics: Mapping[str, float],
    latency_ms: Mapping[str, float],
    gates: list[tuple[str, float, str, str, bool]],
    dagster_run_id: str,
    mlflow_run_id: str,
    mlflow_run_url: str,
    schema: ModelSchema | None = None,
    calibration: list[CalibrationBin] | None = None,
    costs: str | None = None,
    cost_curve: Mapping[str, Any] | None = None,
    calibration_map: str = "none",
) -> str:
    """A markdown model card.

    `gates` rows: (gate, observed, interval, requirement, passed); `costs`: the decision costs
    described, with `cost_curve` their hold-out curve. `production_model` appends the
    champion/challenger comparison once it is made.
    """
    verdict = "all gates passed" if all(row[4] for row in gates) else "gates FAILED"
    lines = [
        f"# {model_name} version {version}",
        "",
        f"- **Owner:** {owner}",
        f"- **Date:** {date}",
        f"- **Algorithm:** {algorithm}",
        f"- **Decision threshold:** {threshold:.4f} (churn when probability >= threshold; chosen "
        "on out-of-fold training predictions)",
        f"- **Quality gates:** {verdict}",
        "",
        "## Data",
        "",
        f"- **Data set:** {dataset}",
        f"- **Data version:** `{data_version}` (content hash of the validated training data)",
        f"- **Source:** {source}",
        "",
        "## Hold-out metrics",
        "",
        markdown_table(["metric", "value"], [(k, f"{v:.4f}") for k, v in metrics.items()]),
        "",
        *_business_value(metrics, threshold, costs, cost_curve),
        "## Calibration (hold-out)",
        "",
        f"Brier score {metrics.get('brier', float('nan')):.4f}, expected calibration error "
        f"{metrics.get('ece', float('nan')):.4f}: the churn rate observed among customers given "
        "a probability, against that probability. "
        f"![reliability diagram]({EVALUATION_FOLDER}/{RELIABILITY_DIAGRAM})",
        "",
        _calibration_map(calibration_map, cv_metrics),
        "",
        reliability_table(calibration) if calibration else "(not recorded)",
        "",
        "## Cross-validation (training split)",
        "",
        markdown_table(["metric", "value"], [(k, f"{v:.4f}") for k, v in cv_metrics.items()]),
        "",
        "## Latency (single record, model loaded from MLflow)",
        "",
        markdown_table(["percentile", "ms"], [(k, f"{v:.2f}") for k, v in latency_ms.items()]),
        "",
        "## Quality gates",
        "",
        "A gate passes when the hold-out estimate meets its requirement. The interval (90 %, "
        "bootstrap over the hold-out customers) is where another hold-out of the same size would "
        "put the estimate.",
        "",
        markdown_table(
            ["gate", "observed", "90 % interval", "required", "result"],
            [
                (g, "-" if math.isnan(o) else f"{o:.4f}", i, r, "pass" if p else "FAIL")
                for g, o, i, r, p in gates
            ],
        ),
        "",
        "## Input schema",
        "",
        schema_table(schema) if schema else "(not recorded)",
        "",
        "## Training parameters",
        "",
        markdown_table(["parameter", "value"], list(params.items())),
        "",
        "## Lineage",
        "",
        f"- **Dagster run:** `{dagster_run_id}`",
        f"- **MLflow run:** [`{mlflow_run_id}`]({mlflow_run_url})",
        "",
    ]
    return "\n".join(lines)


def schema_table(schema: ModelSchema) -> str:
    """The model's input columns as a markdown table, the customer key first."""
    rows: list[tuple[str, ...]] = []
    if schema.key:
        rows.append((schema.key, "customer key", "yes", "", "optional; echoed back, not an input"))
    for column in schema.columns:
        bounds = (
            f"{column.minimum:g} to {column.maximum:g}"
            if column.minimum is not None and column.maximum is not None
            else ""
        )
        shown = ", ".join(column.categories[:8])
        if len(column.categories) > 8:
            shown += f", ... ({len(column.categories)} in all)"
        rows.append(
            (column.name, column.kind.value, "yes" if column.nullable else "no", bounds, shown)
        )
    return markdown_table(
        ["column", "kind", "may be missing", "plausible range", "categories"], rows
    )


def _business_value(
    metrics: Mapping[str, float],
    threshold: float,
    costs: str | None,
    curve: Mapping[str, Any] | None,
) -> list[str]:
    """The card's *Business value* section, when decision costs are set."""
    if costs is None:
        return []
    lines = [
        "## Business value (hold-out)",
        "",
        f"Costs per decision: {costs}. The threshold {threshold:.4f} minimises the total cost "
        "of the decisions on out-of-fold training predictions.",
        "",
        markdown_table(
            ["savings", "F1", "recall", "precision"],
            [
                tuple(
                    f"{metrics[name]:.4f}" if name in metrics else "-"
                    for name in ("savings", "f1", "recall", "precision")
                )
            ],
        ),
        "",
        "Savings: (cost without a model - cost with it) / cost without it, where without a "
        "model is the cheaper of contacting every customer and contacting none.",
        "",
    ]
    if curve:
        lines += [
            f"Contacting no one costs {curve['cost_nobody']:,.0f}; contacting everyone "
            f"{curve['cost_everybody']:,.0f}. "
            f"![cost curve]({EVALUATION_FOLDER}/{COST_CURVE})",
            "",
            cost_curve_table(dict(curve)),
            "",
        ]
    return lines


def _calibration_map(method: str, cv_metrics: Mapping[str, float]) -> str:
    """Which map the model applies, and the out-of-fold Brier scores that chose it."""
    raw = cv_metrics.get("brier_uncalibrated")
    scores = ", ".join(
        f"{name} {cv_metrics[f'brier_{name}']:.4f}"
        for name in ("sigmoid", "isotonic")
        if f"brier_{name}" in cv_metrics
    )
    found = (
        f" Out-of-fold Brier score: uncalibrated {raw:.4f}, cross-fitted {scores}."
        if raw is not None and scores
        else ""
    )
    if method == "none":
        return f"**Calibration map:** none (no map lowered the Brier score by 1 % or more).{found}"
    return f"**Calibration map:** {method}, applied to the estimator's probabilities.{found}"
