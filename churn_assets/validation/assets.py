"""The `validated_customers` asset: the labelled data version, checked by Great Expectations.

Each group of expectations is a blocking Dagster asset check. When any fails, the asset is not
materialized at all: its previous good version stays current and nothing downstream runs.
"""

from collections.abc import Iterator

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    DataVersion,
    Failure,
    MetadataValue,
    Output,
    asset,
)

from churn.leakage import single_column_power
from churn.settings import settings
from churn.tables import CustomerTable
from churn_assets.markdown import markdown_table
from churn_assets.resources import PlatformHome
from churn_assets.validation.eda import class_balance, column_statistics, statistics_markdown
from churn_assets.validation.suite import CHECKS, CheckOutcome, SuiteStore, run_suite

GROUP = "validation"
ASSET = "validated_customers"


LEAKAGE_CHECK = "target_leakage"


@asset(
    group_name=GROUP,
    kinds={"great_expectations", "pandas"},
    check_specs=[
        AssetCheckSpec(name, asset=ASSET, description=description, blocking=True)
        for name, description in CHECKS.items()
    ]
    + [
        AssetCheckSpec(
            LEAKAGE_CHECK,
            asset=ASSET,
            description="No input predicts the target almost perfectly on its own (ROC-AUC "
            "above CHURN_GATE_MAX_SINGLE_COLUMN_AUC): such a column is a copy or a consequence "
            "of the answer. A warning here; the leakage gate keeps a model built on it from "
            "production.",
        )
    ],
)
def validated_customers(
    context: AssetExecutionContext, labelled_customers: CustomerTable, home: PlatformHome
) -> Iterator[Output[CustomerTable] | AssetCheckResult]:
    """Customer records that passed the data-quality suite: the only data training ever sees."""
    table = labelled_customers
    suites = SuiteStore(home.suites_dir)
    suite, origin = suites.resolve(
        table.dataset, table.frame, table.target, table.id_column, table.quality, table.excluded
    )
    outcomes = run_suite(table.frame, suite, table.quality, table.excluded)
    for outcome in outcomes:
        yield _check_result(outcome, origin)

    leakage = _leakage_result(table)
    if not leakage.passed:
        context.log.warning("Target leakage suspected: %s", leakage.description)
    yield leakage

    failed = [outcome for outcome in outcomes if not outcome.passed]
    if failed:
        summary = "; ".join(
            f"{outcome.check}: "
            + ", ".join(
                f"{f.column} {f.observed} (expected {f.expected})" for f in outcome.failures[:3]
            )
            for outcome in failed
        )
        raise Failure(
            description=f"Data version {table.version} of {table.dataset!r} failed validation, "
            f"so it is not used: {summary}",
            metadata={"data_version": table.version, "suite": origin},
            allow_retries=False,  # the same data fails the same way
        )

    adopted = suites.adopt(table.dataset, suite)
    if adopted:
        context.log.info("Data set %r will be checked by %s from now on", table.dataset, adopted)
    statistics = column_statistics(table.frame)
    balance = class_balance(table.frame[table.target])
    yield Output(
        table,
        data_version=DataVersion(table.version),
        metadata={
            "data_version": table.version,
            "dataset": table.dataset,
            "suite": origin,
            "expectations": sum(len(outcome.expectations) for outcome in outcomes),
            "dagster/row_count": len(table.frame),
            "churn_rate": balance["churned"],
            "class_balance": MetadataValue.md(
                markdown_table(
                    ["class", "share"],
                    [
                        ("retained (0)", f"{balance['retained']:.2%}"),
                        ("churned (1)", f"{balance['churned']:.2%}"),
                    ],
                )
            ),
            "eda_statistics": MetadataValue.md(statistics_markdown(statistics)),
        },
    )


def _leakage_result(table: CustomerTable) -> AssetCheckResult:
    """The inputs that tell churners apart on their own, flagged above the leakage gate."""
    powers = single_column_power(table.frame, table.target, table.inputs)
    limit = settings().gates.thresholds()["max_single_column_auc"]
    leaks = [power for power in powers if power.auc > limit]
    return AssetCheckResult(
        check_name=LEAKAGE_CHECK,
        asset_key=ASSET,
        passed=not leaks,
        severity=AssetCheckSeverity.WARN,
        description=(
            "; ".join(str(leak) for leak in leaks)
            + f" (above {limit:g}): it leaks the target. Exclude it with "
            f"CHURN_EXCLUDE_COLUMNS={','.join(leak.column for leak in leaks)}"
            if leaks
            else f"No input alone exceeds ROC-AUC {limit:g}"
            + (f" (strongest: {powers[0]})" if powers else "")
        ),
        metadata={
            "threshold": limit,
            "strongest_inputs": MetadataValue.md(
                markdown_table(
                    ["input", "ROC-AUC alone"], [(p.column, f"{p.auc:.3f}") for p in powers[:10]]
                )
            ),
        },
    )


def _check_result(outcome: CheckOutcome, origin: str) -> AssetCheckResult:
    rows = outcome.expectations
    return AssetCheckResult(
        check_name=outcome.check,
        asset_key=ASSET,
        passed=outcome.passed,
        severity=AssetCheckSeverity.ERROR,
        description=(
            f"{len(outcome.failures)} of {len(rows)} expectations failed"
            if rows
            else "Not applicable: the suite has no expectation for this check"
        ),
        metadata={
            "suite": origin,
            "expectations": len(rows),
            "failed": len(outcome.failures),
            "not_evaluated": ", ".join(outcome.not_evaluated) or "(none)",
            "results": MetadataValue.md(
                markdown_table(
                    ["result", "expectation", "column", "observed", "expected"],
                    [
                        (
                            "pass" if row.success else "FAIL",
                            row.expectation,
                            row.column,
                            row.observed,
                            row.expected,
                        )
                        for row in sorted(rows, key=lambda row: row.success)
                    ],
                )
            ),
        },
    )
