"""The model registry's lifecycle on MLflow aliases: None -> Staging -> Production -> Archived.

Aliases are the truth: `production` names the served version, `staging` the newest candidate.
Moving an alias is one atomic update in MLflow's store, so once a production version exists there
is never a moment without one, and a promotion that fails before the move leaves it in place. Each
version also carries a `lifecycle` tag (staging, production, archived) for people reading the
registry, updated after the alias moves.

Every alias change is appended to an audit trail kept as tags of the registered model
(`audit/<time>-<id>`), so it lives in the same store as the registry, local or shared.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from churn.model.schema import SCHEMA_ARTIFACT, ModelSchema, SchemaChange

PRODUCTION = "production"
STAGING = "staging"
ARCHIVED = "archived"
LIFECYCLE = "lifecycle"
AUDIT_PREFIX = "audit/"
# Each version's quality gates, as registered: a JSON list of `GateOutcome`s.
GATE_RESULTS = "gate_results"
# The hold-out metrics each version carries as tags (`savings` only with decision costs).
METRIC_TAGS = ("f1", "accuracy", "precision", "recall", "roc_auc", "probability_rmse", "savings")


class RegistryError(ValueError):
    """A registry request that cannot be carried out; nothing was changed."""


@dataclass(frozen=True)
class AuditEntry:
    """One alias change: who moved which alias from which version to which, when and why."""

    time: str
    actor: str
    alias: str
    from_version: str | None
    to_version: str
    reason: str


@dataclass(frozen=True)
class GateOutcome:
    """One quality gate of a version: the observed value, the requirement, the setting."""

    gate: str
    metric: str
    observed: float | None
    comparison: str
    threshold: float | None
    passed: bool
    setting: str
    detail: str = ""
    # The estimate's bootstrap interval on the hold-out (none for older versions).
    low: float | None = None
    high: float | None = None
    # False: no threshold set, or nothing to judge (savings without costs); it passed.
    applied: bool = True

    def __str__(self) -> str:
        if not self.applied or self.observed is None or self.threshold is None:
            return f"{self.metric}: not applied"
        interval = (
            f" (interval {self.low:.4f} to {self.high:.4f})"
            if self.low is not None and self.high is not None
            else ""
        )
        return (
            f"{self.metric} = {self.observed:.4f}{interval}, required {self.comparison} "
            f"{self.threshold:g}"
        )


@dataclass(frozen=True)
class VersionRow:
    """One line of the version history."""

    model: str
    version: str
    algorithm: str
    f1: str
    accuracy: str
    stage: str
    date: str
    owner: str


class ModelRegistry:
    """Registration, promotion, rollback and history of one registered model."""

    def __init__(self, client: Any, model_name: str) -> None:
        self.client = client
        self.name = model_name

    def register(self, model_uri: str, run_id: str, tags: dict[str, str], description: str) -> str:
        """Register a logged model as a new version (lifecycle None); return its number.

        Once per MLflow run: registering a run's model again returns the version it already has.
        """
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(
                self.name, description="Customer-churn classifier (raw records in)."
            )
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        # A retry after a failure half-way (the store went away after the version was created)
        # completes the version of this run rather than leaving it behind and adding another.
        for existing in self.client.search_model_versions(
            f"name = '{self.name}' and run_id = '{run_id}'"
        ):
            for key, value in tags.items():
                if (existing.tags or {}).get(key) != value:
                    self.client.set_model_version_tag(self.name, existing.version, key, value)
            return str(existing.version)
        # A logged model's URI (models:/m-...) names its model id; a tracking server requires
        # the id beside such a source (a local store does not check).
        model_id = (
            model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
        )
        version = self.client.create_model_version(
            self.name,
            source=model_uri,
            run_id=run_id,
            tags=tags,
            description=description,
            model_id=model_id,
        )
        return str(version.version)

    def schema_of(self, version: str) -> ModelSchema | None:
        """The input schema recorded with a version (None for versions from before schemas)."""
        import mlflow

        run_id = self._version(version).run_id
        try:
            recorded = mlflow.artifacts.load_dict(
                f"{self.client.get_run(run_id).info.artifact_uri}/{SCHEMA_ARTIFACT}"
            )
        except Exception:  # no such artifact: MLflow raises several types for a missing file
            return None
        return ModelSchema.model_validate(recorded)

    def schema_changes(self, version: str) -> list[SchemaChange]:
        """How `version`'s input schema differs from the production version's, for clients."""
        production = self.alias_version(PRODUCTION)
        if production is None or production == str(version):
            return []
        current, candidate = self.schema_of(production), self.schema_of(version)
        if current is None or candidate is None:
            return []
        return candidate.changes_from(current)

    def alias_version(self, alias: str) -> str | None:
        """The version an alias points at, or None."""
        model = self._model()
        version = None if model is None else model.aliases.get(alias)
        return None if version is None else str(version)

    def move_alias(self, alias: str, version: str, actor: str, reason: str) -> AuditEntry:
        """Point `alias` at `version`, update lifecycle tags, and record it in the audit trail."""
        version = str(version)
        self._version(version)
        aliases = {name: str(number) for name, number in self._model().aliases.items()}
        previous = aliases.get(alias)
        self.client.set_registered_model_alias(self.name, alias, version)
        production = version if alias == PRODUCTION else aliases.get(PRODUCTION)
        self.client.set_model_version_tag(
            self.name, version, LIFECYCLE, PRODUCTION if version == production else alias
        )
        if previous and previous != version and previous != production:
            self.client.set_model_version_tag(self.name, previous, LIFECYCLE, ARCHIVED)
        now = datetime.now(UTC)
        entry = AuditEntry(
            time=now.isoformat(timespec="microseconds"),
            actor=actor,
            alias=alias,
            from_version=previous,
            to_version=version,
            reason=reason,
        )
        key = f"{AUDIT_PREFIX}{now:%Y%m%dT%H%M%S.%fZ}-{uuid.uuid4().hex[:6]}"
        self.client.set_registered_model_tag(self.name, key, json.dumps(asdict(entry)))
        return entry

    def gates(self, version: str) -> list[GateOutcome]:
        """The quality gates `version` met or failed when it was registered (oldest: none)."""
        tags = self._version(version).tags or {}
        return [GateOutcome(**gate) for gate in json.loads(tags.get(GATE_RESULTS, "[]"))]

    def promote(
        self,
        version: str,
        actor: str,
        reason: str,
        allow_schema_change: bool = False,
        servable: Callable[[str], str | None] | None = None,
        override_gates: bool = False,
    ) -> AuditEntry:
        """Make `version` the production version (by hand or after the gates).

        A version that failed its quality gates is refused unless `override_gates`, and a
        version whose input schema differs from production's (clients would have to send other
        columns) unless `allow_schema_change`: either must be deliberate, and the audit trail
        says which gates or changes were overridden. With `servable` (returns why a version
        cannot be served, or None), a version the service could not load is refused before the
        alias moves.
        """
        if not reason.strip():
            raise RegistryError("a promotion needs a reason")
        self._version(version)
        if self.alias_version(PRODUCTION) == str(version):
            raise RegistryError(f"version {version} of {self.name!r} is already in production")
        failed = [gate for gate in self.gates(version) if not gate.passed]
        if failed and not override_gates:
            raise RegistryError(
                f"version {version} of {self.name!r} failed its quality gates: "
                + "; ".join(f"{gate.gate}: {gate}" for gate in failed)
                + ". Promote with --override-gates to do it anyway"
            )
        if failed:
            reason = f"{reason} (gates overridden: {'; '.join(map(str, failed))})"
        problem = servable(str(version)) if servable else None
        if problem:
            raise RegistryError(f"version {version} of {self.name!r} cannot be served: {problem}")
        changes = self.schema_changes(version)
        if changes and not allow_schema_change:
            raise RegistryError(
                f"version {version} of {self.name!r} takes other inputs than production: "
                + "; ".join(str(change) for change in changes)
                + ". Clients must change too: promote with --allow-schema-change to do it anyway"
            )
        if changes:
            reason = f"{reason} (schema change allowed: {'; '.join(map(str, changes))})"
        return self.move_alias(PRODUCTION, version, actor, reason)

    def rollback(self, actor: str, reason: str) -> AuditEntry:
        """Put back the version that production pointed at before the current one."""
        if not reason.strip():
            raise RegistryError("a rollback needs a reason")
        current = self.alias_version(PRODUCTION)
        if current is None:
            raise RegistryError(f"{self.name!r} has no production version to roll back from")
        arrivals = [e for e in self.audit() if e.alias == PRODUCTION and e.to_version == current]
        previous = arrivals[-1].from_version if arrivals else None
        if previous is None:
            raise RegistryError(
                f"version {current} of {self.name!r} was the first production version; "
                "there is nothing to roll back to"
            )
        return self.move_alias(PRODUCTION, previous, actor, f"rollback: {reason}")

    def newest(self) -> tuple[str, datetime] | None:
        """The newest version and when it was registered, or None before the first."""
        if self._model() is None:
            return None
        versions = self.client.search_model_versions(f"name = '{self.name}'")
        if not versions:
            return None
        newest = max(versions, key=lambda v: int(v.version))
        return str(newest.version), datetime.fromtimestamp(newest.creation_timestamp / 1000, UTC)

    def audit(self) -> list[AuditEntry]:
        """Every alias change, oldest first."""
        model = self._model()
        if model is None:
            return []
        keys = sorted(key for key in model.tags if key.startswith(AUDIT_PREFIX))
        return [AuditEntry(**json.loads(model.tags[key])) for key in keys]

    def history(self) -> list[VersionRow]:
        """Every version, newest first, as the brief's version table."""
        model = self._model()
        if model is None:
            return []
        aliases: dict[str, list[str]] = {}
        for alias, version in model.aliases.items():
            aliases.setdefault(str(version), []).append(alias)
        versions = self.client.search_model_versions(f"name = '{self.name}'")
        rows = []
        for mv in sorted(versions, key=lambda v: int(v.version), reverse=True):
            tags = mv.tags or {}
            stage = ", ".join(sorted(aliases.get(str(mv.version), []))) or tags.get(
                LIFECYCLE, "none"
            )
            rows.append(
                VersionRow(
                    model=self.name,
                    version=str(mv.version),
                    algorithm=tags.get("algorithm", ""),
                    f1=tags.get("f1", ""),
                    accuracy=tags.get("accuracy", ""),
                    stage=stage,
                    date=datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).strftime(
                        "%Y-%m-%d %H:%M"
                    ),
                    owner=tags.get("owner", ""),
                )
            )
        return rows

    def _model(self) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_registered_model(self.name)
        except MlflowException as error:
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    def _version(self, version: str) -> Any:
        from mlflow.exceptions import MlflowException

        if self._model() is None:
            raise RegistryError(f"unknown model {self.name!r}: nothing is registered under it")
        try:
            return self.client.get_model_version(self.name, str(version))
        except MlflowException as error:
            raise RegistryError(f"{self.name!r} has no version {version!r}") from error


def loading_problem(model_name: str, version: str) -> str | None:
    """Why the prediction service could not serve a version, or None when it can.

    What the service does when it loads a version: load the logged model, find its input
    schema, check it against the pipeline's columns, and score the schema's example record.
    A version that fails here must never become `production`.
    """
    import pandas as pd

    from churn.model.pyfunc import load_model

    try:
        model = load_model(f"models:/{model_name}/{version}")
        record = pd.DataFrame([model.schema.example()])
        scored = model.predict(record)
        if len(scored) != 1 or not 0 <= float(scored["churn_probability"].iloc[0]) <= 1:
            return f"scoring its example record gave {scored.to_dict('records')}"
    except Exception as error:  # whatever stops a load stops the service's load too
        return f"{type(error).__name__}: {error}"
    return None
