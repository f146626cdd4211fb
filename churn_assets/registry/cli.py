"""`churn-registry`: the model registry from the command line.

    churn-registry list                               versions, as the brief's table
    churn-registry promote 3 --reason "..."           make version 3 the production version
    churn-registry promote 4 --allow-schema-change --reason "..."
                                                      ...even if it takes other inputs
    churn-registry promote 5 --override-gates --reason "..."
                                                      ...even if it failed its quality gates
    churn-registry gates [3]                          a version's gates (default: the newest)
    churn-registry blocked --since 1764900000         why the version registered since then
                                                      is not in production (exit 1: it is, or
                                                      none was registered)
    churn-registry rollback --reason "..."            put back the previous production version
    churn-registry audit                              every alias change, oldest first

It talks to the same MLflow store as the platform (`MLFLOW_TRACKING_URI`, else the local store
under `CHURN_HOME`). Bad arguments get a message and exit status 2, and change nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from churn.registry import PRODUCTION, ModelRegistry, RegistryError, loading_problem
from churn.settings import SettingsError
from churn_assets.markdown import markdown_table
from churn_assets.registry.assets import owner
from churn_assets.resources import MlflowResource, PlatformHome


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = argparse.ArgumentParser(prog="churn-registry", description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="registered model name (default: churn-predictor)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the versions")
    promote = commands.add_parser("promote", help="make a version the production version")
    promote.add_argument("version", help="version number")
    promote.add_argument(
        "--allow-schema-change",
        action="store_true",
        help="promote a version whose input schema differs from production's (clients must "
        "send the new schema)",
    )
    promote.add_argument(
        "--override-gates",
        action="store_true",
        help="promote a version that failed its quality gates (the audit trail names them)",
    )
    gates = commands.add_parser("gates", help="a version's quality gates")
    gates.add_argument("version", nargs="?", help="version number (default: the newest)")
    blocked = commands.add_parser(
        "blocked", help="why the newest version registered since a time is not in production"
    )
    blocked.add_argument(
        "--since", type=float, default=0.0, help="a time in seconds since the epoch (date +%%s)"
    )
    rollback = commands.add_parser("rollback", help="put back the previous production version")
    commands.add_parser("audit", help="list every alias change")
    for command in (promote, rollback):
        command.add_argument("--reason", required=True, help="why (kept in the audit trail)")
        command.add_argument("--actor", default=None, help="who (default: CHURN_OWNER or user)")
    arguments = parser.parse_args(argv)

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        tracking = MlflowResource.from_env(PlatformHome.from_env())
    except SettingsError as error:  # a wrong setting: one line, not a traceback
        print(f"churn-registry: {error}", file=sys.stderr)
        return 2
    tracking.activate()
    registry = ModelRegistry(tracking.client(), arguments.model or tracking.model_name)
    actor = getattr(arguments, "actor", None) or owner()
    try:
        if arguments.command == "list":
            _print_versions(registry)
        elif arguments.command == "audit":
            _print_audit(registry)
        elif arguments.command == "gates":
            _print_gates(registry, arguments.version)
        elif arguments.command == "blocked":
            return 0 if _explain_block(registry, arguments.since) else 1
        elif arguments.command == "promote":
            entry = registry.promote(
                arguments.version,
                actor,
                arguments.reason,
                arguments.allow_schema_change,
                servable=lambda version: loading_problem(registry.name, version),
                override_gates=arguments.override_gates,
            )
            print(
                f"{registry.name}: production {entry.from_version or '(none)'} -> "
                f"{entry.to_version}"
            )
        else:
            entry = registry.rollback(actor, arguments.reason)
            print(
                f"{registry.name}: production rolled back {entry.from_version} -> "
                f"{entry.to_version}"
            )
    except RegistryError as error:
        print(f"churn-registry: {error}", file=sys.stderr)
        return 2
    return 0


def _print_versions(registry: ModelRegistry) -> None:
    rows = registry.history()
    if not rows:
        raise RegistryError(f"unknown model {registry.name!r}: nothing is registered under it")
    print(
        markdown_table(
            ["Model", "Version", "Algorithm", "F1", "Accuracy", "Stage", "Date", "Owner"],
            [
                (r.model, r.version, r.algorithm, r.f1, r.accuracy, r.stage, r.date, r.owner)
                for r in rows
            ],
        )
    )


def _newest(registry: ModelRegistry) -> str:
    newest = registry.newest()
    if newest is None:
        raise RegistryError(f"unknown model {registry.name!r}: nothing is registered under it")
    return newest[0]


def _print_gates(registry: ModelRegistry, version: str | None) -> None:
    version = version or _newest(registry)
    outcomes = registry.gates(version)
    if not outcomes:
        raise RegistryError(f"version {version} of {registry.name!r} recorded no quality gates")
    print(
        markdown_table(
            ["Gate", "Observed", "90 % interval", "Required", "Result", "Set by"],
            [
                (
                    gate.gate,
                    "-" if gate.observed is None else f"{gate.metric} = {gate.observed:.4f}",
                    "-"
                    if gate.low is None or gate.high is None
                    else f"{gate.low:.4f} to {gate.high:.4f}",
                    f"{gate.comparison} {gate.threshold:g}"
                    if gate.applied and gate.threshold is not None
                    else "not applied",
                    "pass" if gate.passed else "FAIL",
                    gate.setting,
                )
                for gate in outcomes
            ],
        )
    )


def _explain_block(registry: ModelRegistry, since: float) -> bool:
    """Say why the newest version, registered after `since`, is not in production.

    Returns whether there was such a version (gates or schema kept it from production).
    """
    newest = registry.newest()
    if newest is None or newest[1].timestamp() < since - 1:
        return False
    version = newest[0]
    failed = [gate for gate in registry.gates(version) if not gate.passed]
    production = registry.alias_version(PRODUCTION)
    changes = registry.schema_changes(version) if production else []
    if production == version or not (failed or changes):
        return False
    where = (
        f"production stays at version {production}"
        if production
        else "no version is in production yet"
    )
    print(
        f"Version {version} of {registry.name} is registered and served on staging, but not "
        f"promoted: {where}."
    )
    for gate in failed:
        print(f"  {gate.gate:<22} {gate!s:<40} set by {gate.setting}")
        if gate.detail:
            print(f"    {gate.detail}")
    for change in changes:
        print(f"  input schema           {change}")
    if failed:
        print(
            "Change what the lines above name (the gates your retention team needs, or the "
            "columns to exclude: README, 'Your own data') and run again, or promote it by hand: "
            f'churn-registry promote {version} --override-gates --reason "..."'
        )
    if changes:
        print(
            f"Once clients send the new inputs: churn-registry promote {version} "
            '--allow-schema-change --reason "..."'
        )
    return True


def _print_audit(registry: ModelRegistry) -> None:
    print(
        markdown_table(
            ["Time", "Actor", "Alias", "From", "To", "Reason"],
            [
                (e.time, e.actor, e.alias, e.from_version or "", e.to_version, e.reason)
                for e in registry.audit()
            ],
        )
    )


if __name__ == "__main__":
    sys.exit(main())
