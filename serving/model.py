"""The served model: a registry version loaded for scoring, and the watcher that hot-swaps it.

The service serves whatever version a registry alias (`production`, `staging`) names. A watcher
thread reads the alias every `refresh_seconds`; when it has moved (a promotion or a rollback), the
new version is loaded and warmed up in the background, then swapped in by replacing one
reference. A request reads that reference once and scores its whole batch with it, so requests in
flight during a swap finish on the old version and later ones use the new one: none fails, and
each response names the version that answered.
"""

from __future__ import annotations

import gc
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np

from churn.contract import RecordContract
from churn.logs import prediction_schema
from churn.model.explain import NotExplainable
from churn.model.schema import ModelSchema
from churn.model.scoring import Reason, Scorer
from churn.registry import GATE_RESULTS, METRIC_TAGS, ModelRegistry
from churn.tracking import Tracking
from serving.contract import ModelCard, QualityGate, ServedRecord, max_records

logger = logging.getLogger(__name__)


class IncompatibleModelError(ValueError):
    """A registry version this service cannot serve (no input schema, or one its pipeline lacks)."""


@dataclass(frozen=True)
class ServedModel:
    """One loaded registry version, ready to score raw customer records.

    It carries its own request contract (built from its input schema) and the schema of its
    prediction log: a request validated for this version is scored and logged by it. Scoring
    goes through `churn.model.scoring.Scorer`, the same path as nightly batch scoring.
    """

    name: str
    alias: str
    version: str
    scorer: Scorer = field(repr=False)
    threshold: float
    categories: dict[str, frozenset[str]]
    card: ModelCard
    schema: ModelSchema
    contract: RecordContract = field(repr=False)
    log_schema: Any = field(repr=False)  # pyarrow.Schema of the prediction log's rows
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def score(self, columns: dict[str, list[Any]]) -> np.ndarray:
        """Churn probabilities of records given column-wise (feature name -> values)."""
        return self.scorer.probabilities(columns)

    def explain(self, columns: dict[str, list[Any]]) -> list[list[Reason]]:
        """The inputs pushing each record's churn score up most (see `churn.model.explain`)."""
        return self.scorer.reasons(columns, self.scorer.contributions(columns))


def load_served_model(tracking: Tracking, alias: str, version: str, client: Any) -> ServedModel:
    """Load `version` of the registered model, check it fits the contract, and warm it up."""
    # Imported here, not with the module: `bentoml serve` imports the service in its arbiter
    # process too, which needs neither MLflow nor scikit-learn (1.3 s less for each start).
    import mlflow

    from churn.model.features import OneHotCategories
    from churn.model.pyfunc import load_model

    name = tracking.model_name
    model_version = client.get_model_version(name, version)
    mlflow.set_tracking_uri(tracking.tracking_uri)
    try:
        scorer = Scorer.of(load_model(f"models:/{name}/{version}"))
    except ValueError as error:
        raise IncompatibleModelError(f"version {version} of {name!r}: {error}") from error
    schema = scorer.schema
    if sorted(scorer.inputs) != sorted(schema.names):
        raise IncompatibleModelError(
            f"version {version} of {name!r}: its pipeline takes "
            f"{', '.join(sorted(scorer.inputs))}, its schema names "
            f"{', '.join(sorted(schema.names))}"
        )
    # Models trained before `FeatureEncoder` still serve, without the unknown-category report.
    encoder = getattr(scorer.transforms[-1], "one_hot_", None)
    categories = (
        {column: frozenset(seen) for column, seen in encoder.seen_categories().items()}
        if isinstance(encoder, OneHotCategories)
        else {}
    )
    # One thread per prediction: the server works on several requests at once, and a model's
    # own threads (LightGBM's OpenMP, a forest's joblib) only fight them for the same cores.
    scorer.use_threads(1)
    categorical = set(getattr(scorer.transforms[0], "categorical", ()))
    tags = model_version.tags or {}
    served = ServedModel(
        name=name,
        alias=alias,
        version=str(version),
        scorer=scorer,
        threshold=scorer.threshold,
        categories={k: v for k, v in categories.items() if k in categorical},
        card=ModelCard(
            model_name=name,
            model_alias=alias,
            model_version=str(version),
            algorithm=tags.get("algorithm", ""),
            threshold=scorer.threshold,
            data_version=tags.get("data_version", ""),
            metrics={tag: float(tags[tag]) for tag in METRIC_TAGS if tag in tags},
            promoted_at=promotion_time(ModelRegistry(client, name), alias, str(version)),
            loaded_at=datetime.now(UTC).isoformat(timespec="seconds"),
            run_id=model_version.run_id or "",
            features=scorer.inputs,
            input_schema=schema.model_dump(mode="json"),
            schema_fingerprint=schema.fingerprint,
            gates=[QualityGate(**gate) for gate in json.loads(tags.get(GATE_RESULTS, "[]"))],
        ),
        schema=schema,
        contract=RecordContract(schema, max_records(), record_base=ServedRecord),
        log_schema=prediction_schema(schema),
    )
    # Records validated by this contract name the version that scores them (`ServedRecord`).
    cast(type[ServedRecord], served.contract.record_type).served_by = served
    example = {column: [value] for column, value in schema.example().items()}
    for _ in range(3):  # first calls pay for lazy imports and caches, not the first customer
        served.score(example)
    try:  # explanations are built on first use; build them now, off the request path
        served.explain(example)
    except NotExplainable as error:
        logger.warning("version %s cannot explain its scores: %s", version, error)
    return served


def _settle_heap() -> None:
    """Exempt the long-lived objects (libraries, the model) from garbage-collection passes.

    A full collection walks every object the process holds: with MLflow, pandas, scikit-learn and
    the model loaded, that is a pause of tens of milliseconds that lands on a random request.
    Freezing what exists now leaves the collector only the objects requests create. Done after
    each swap, so the previous model can still be collected.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def forget_connections(uri: str) -> None:
    """Close MLflow's cached database connections to `uri` (they outlive its clients)."""
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore

    for store in (TrackingStore, RegistryStore):
        with store._engine_map_lock:
            engine = store._engine_map.pop(uri, None)
        if engine is not None:
            engine.dispose()


def promotion_time(registry: ModelRegistry, alias: str, version: str) -> str | None:
    """When `alias` last moved to `version`, from the registry's audit trail."""
    arrivals = [e for e in registry.audit() if e.alias == alias and e.to_version == version]
    return arrivals[-1].time if arrivals else None


@dataclass
class WatcherStatus:
    """What the watcher last saw, for `/model`, `/readyz` and the logs."""

    checked_at: datetime | None = None
    problem: str | None = None
    # Since when reading the registry has failed (None: it answered at the last check).
    unreachable_since: datetime | None = None


class ModelWatcher:
    """Keeps the served model in step with a registry alias, from a background thread.

    Args:
        tracking: the tracking store and registered model name.
        alias: the registry alias to serve.
        refresh_seconds: how often the alias is read.
        on_swap: called with the previous model (or None) and the new one after every swap.
        on_failure: called when a version fails to load (the served model stays).
        on_registry: called with the time since which the registry is unreachable, or None
            when it answers.

    """

    def __init__(
        self,
        tracking: Tracking,
        alias: str,
        refresh_seconds: float,
        on_swap: Callable[[ServedModel | None, ServedModel], None] = lambda old, new: None,
        on_failure: Callable[[], None] = lambda: None,
        on_registry: Callable[[datetime | None], None] = lambda since: None,
    ) -> None:
        self.mlflow = tracking
        self.alias = alias
        self.refresh_seconds = refresh_seconds
        self.on_swap = on_swap
        self.on_failure = on_failure
        self.on_registry = on_registry
        self.current: ServedModel | None = None
        self.status = WatcherStatus(problem="the service is starting: no model loaded yet")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self._store: tuple[int, int] | None = None

    def check(self) -> ServedModel | None:
        """Read the alias once; load and swap in its version if it changed. Never raises.

        A registry that cannot be read and a version that cannot be loaded are told apart: the
        first is an outage (`unreachable_since`, logged again when it ends), the second a bad
        version (counted as a load failure); the served model stays in both cases.
        """
        now = datetime.now(UTC)
        since = self.status.unreachable_since
        try:
            self._follow_store_file()
            if self._client is None:
                self._client = self.mlflow.client()
            version = ModelRegistry(self._client, self.mlflow.model_name).alias_version(self.alias)
        except Exception as error:
            since = since or now
            logger.warning(
                "the registry cannot be read (unreachable since %s): %s: %s",
                since.isoformat(timespec="seconds"),
                type(error).__name__,
                error,
            )
            self._client = None  # reconnect at the next check
            self.status = WatcherStatus(now, f"registry unreachable: {error}", since)
            self.on_registry(since)
            return self.current
        if since is not None:  # a warning, as its start was: the end of an incident
            logger.warning(
                "the registry answers again after %.0f s unreachable", (now - since).total_seconds()
            )
            self.on_registry(None)
        if version is None:
            self.status = WatcherStatus(
                now,
                f"no version of {self.mlflow.model_name!r} has the alias {self.alias!r} "
                "in the registry yet (a version its quality gates kept from production is on "
                "staging: `churn-registry gates` says which failed)",
            )
            return self.current
        self.status = WatcherStatus(now, None)  # the registry answered
        try:
            if self.current is None or self.current.version != version:
                started = time.perf_counter()
                loaded = load_served_model(self.mlflow, self.alias, version, self._client)
                previous, self.current = self.current, loaded
                _settle_heap()
                logger.info(
                    "serving %s version %s (%s) after %.1f s of loading, replacing %s",
                    loaded.name,
                    loaded.version,
                    self.alias,
                    time.perf_counter() - started,
                    previous.version if previous else "nothing",
                )
                self.on_swap(previous, loaded)
        except Exception as error:  # a bad version must not stop the one being served
            logger.exception("loading version %s of the %r alias failed", version, self.alias)
            self.status = WatcherStatus(now, f"{type(error).__name__}: {error}")
            self.on_failure()
        return self.current

    def _follow_store_file(self) -> None:
        """Reconnect when a local registry file was replaced (a restore from backup).

        SQLite connections keep reading the file they opened, even once it is replaced by
        rename: alias moves in the new file would go unseen. A file that disappears is an
        outage, not an empty registry (connecting would create one); a file that never existed
        is a new platform, whose registry MLflow creates.

        Raises:
            FileNotFoundError: the local registry file was there and is gone.

        """
        uri = self.mlflow.tracking_uri
        if not uri.startswith("sqlite:///"):
            return
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.exists():
            if self._store is None:
                return
            raise FileNotFoundError(f"the registry file {path} is missing")
        stat = path.stat()
        identity = (stat.st_dev, stat.st_ino)
        if self._store is not None and identity != self._store:
            logger.warning("the registry file %s was replaced: reconnecting to it", path)
            forget_connections(uri)
            self._client = None
        self._store = identity

    def start(self) -> ModelWatcher:
        """Check now and then every `refresh_seconds`, in a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop checking (a load in progress finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.check()
            self._stop.wait(self.refresh_seconds)


def columns_of(records: Sequence[Any], names: Sequence[str]) -> dict[str, list[Any]]:
    """Validated records (pydantic objects) as column lists, the cheapest way to a DataFrame."""
    return {name: [getattr(record, name) for record in records] for name in names}
