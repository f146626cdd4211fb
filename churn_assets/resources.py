"""Dagster resources: the data set, the platform home, and MLflow (tracking and registry)."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TypeVar, cast

from dagster import ConfigurableResource, Failure
from pydantic import Field
from pydantic.fields import FieldInfo

from churn.engine import Engine
from churn.home import Home, platform_home
from churn.normalise import (
    CleaningRules,
    snake_case,
)
from churn.settings import (
    GATE_PROFILES,
    SYNTHETIC,
    DatasetSettings,
    GateSettings,
    PipelineSettings,
    ScoringSettings,
    Section,
    TrackingSettings,
    decision_costs,
    settings_from,
)
from churn.snapshots import SnapshotStore
from churn.tracking import Tracking
from churn.value import DecisionCosts

if TYPE_CHECKING:
    from mlflow import MlflowClient

_DATA_SUFFIXES = (".gz", ".csv", ".tsv", ".txt", ".parquet", ".pq")
BRIEF = GATE_PROFILES["brief"]


def from_setting(section: type[Section], name: str, **override: Any) -> Any:
    """The resource field of setting `section.name`: its default, description and bounds.

    The Dagster resources below are the launchpad-editable face of `churn.settings`: each field
    is declared once there, and a launchpad value outside its bounds is refused as the variable
    would be. `override` replaces what differs (a gate's default is its threshold, not "unset").
    """
    declared = section.model_fields[name]
    default: dict[str, Any] = (
        {"default": declared.default}
        if declared.default_factory is None
        else {"default_factory": declared.default_factory}
    )
    field: FieldInfo = Field(**(default | {"description": declared.description} | override))
    field.metadata = [*declared.metadata, *field.metadata]
    return field


class DatasetResource(ConfigurableResource):  # type: ignore[type-arg]
    """The churn data set the platform ingests, validates and learns from.

    Every field can be set by an environment variable (`churn.settings.DatasetSettings`), so the
    whole platform can be pointed at another data set without editing code, and overridden per run
    in the launchpad.
    """

    source: str = from_setting(DatasetSettings, "source")
    target: str = from_setting(DatasetSettings, "target")
    sheet: str | None = from_setting(DatasetSettings, "sheet")
    id_column: str | None = from_setting(DatasetSettings, "id_column")
    positive_label: str | None = from_setting(DatasetSettings, "positive_label")
    name: str | None = from_setting(DatasetSettings, "name")
    exclude_columns: list[str] = from_setting(DatasetSettings, "exclude_columns")
    synthetic_rows: int = from_setting(DatasetSettings, "synthetic_rows")
    synthetic_seed: int = from_setting(DatasetSettings, "synthetic_seed")
    synthetic_monthly_charges_shift: float = from_setting(
        DatasetSettings, "synthetic_monthly_charges_shift"
    )
    synthetic_month_to_month_shift: float = from_setting(
        DatasetSettings, "synthetic_month_to_month_shift"
    )
    max_bytes: int = from_setting(DatasetSettings, "max_bytes")
    timeout_seconds: float = from_setting(DatasetSettings, "timeout_seconds")
    numeric_min_share: float = from_setting(DatasetSettings, "numeric_min_share")
    max_quarantine_share: float = from_setting(DatasetSettings, "max_quarantine_share")
    cost_fp: str | None = from_setting(DatasetSettings, "cost_fp")
    cost_fn: str | None = from_setting(DatasetSettings, "cost_fn")
    cost_tp: str | None = from_setting(DatasetSettings, "cost_tp")
    cost_tn: str | None = from_setting(DatasetSettings, "cost_tn")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DatasetResource:
        """The resource as the environment configures it (`churn.settings.DatasetSettings`)."""
        return cls(**settings_from(environ).dataset.model_dump())

    @property
    def rules(self) -> CleaningRules:
        """How tolerant normalisation is of messy values and rows."""
        return CleaningRules(self.numeric_min_share, self.max_quarantine_share)

    def costs(self) -> DecisionCosts | None:
        """The decision costs this resource sets, or None.

        Raises:
            CostError: a cost that is neither a number of at least 0 nor a column name.

        """
        return decision_costs(self.cost_fp, self.cost_fn, self.cost_tp, self.cost_tn)

    @property
    def is_synthetic(self) -> bool:
        """Whether the built-in generator is the source."""
        return self.source.strip().lower() == SYNTHETIC

    def dataset_name(self) -> str:
        """The name the data set's validation suite is kept under."""
        if self.name:
            return snake_case(self.name)
        if self.is_synthetic:
            return "telco"
        stem = PurePosixPath(urllib.parse.urlparse(self.source).path).name.lower()
        while stem.endswith(_DATA_SUFFIXES):
            stem = stem.rsplit(".", 1)[0]
        return snake_case(stem) or "dataset"


class PlatformHome(ConfigurableResource):  # type: ignore[type-arg]
    """The folder the platform writes to (`churn.home.Home` is its layout), as a resource."""

    path: str = Field(description="Absolute path of the platform home (`CHURN_HOME`).")

    @classmethod
    def from_env(cls) -> PlatformHome:
        """The home chosen by `CHURN_HOME`, or the default."""
        return cls(path=str(platform_home()))

    @property
    def layout(self) -> Home:
        """Where each part of the platform reads and writes, below this home."""
        return Home(Path(self.path))

    @property
    def root(self) -> Path:
        """The home folder."""
        return Path(self.path)

    def snapshots(self) -> SnapshotStore:
        """Content-addressed snapshots of every ingested data version."""
        return SnapshotStore(self.layout.snapshots_dir)

    @property
    def suites_dir(self) -> Path:
        """`Home.suites_dir`."""
        return self.layout.suites_dir

    @property
    def scratch_dir(self) -> Path:
        """`Home.scratch_dir`."""
        return self.layout.scratch_dir

    def serving_log(self, alias: str, log: str) -> Path:
        """`Home.serving_log`."""
        return self.layout.serving_log(alias, log)

    @property
    def serving_dir(self) -> Path:
        """`Home.serving_dir`."""
        return self.layout.serving_dir

    @property
    def landing_dir(self) -> Path:
        """`Home.landing_dir`."""
        return self.layout.landing_dir

    @property
    def scores_dir(self) -> Path:
        """`Home.scores_dir`."""
        return self.layout.scores_dir

    @property
    def monitoring_dir(self) -> Path:
        """`Home.monitoring_dir`."""
        return self.layout.monitoring_dir


class ScoringResource(ConfigurableResource):  # type: ignore[type-arg]
    """Who is scored every night, by which deployment's model, and where the scores go too."""

    source: str = from_setting(ScoringSettings, "source")
    max_rejected_share: float = from_setting(ScoringSettings, "max_rejected_share")
    database_url: str = from_setting(ScoringSettings, "database_url")
    chunk_rows: int = from_setting(ScoringSettings, "chunk_rows")
    alias: str = from_setting(ScoringSettings, "alias")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ScoringResource:
        """The resource as the environment configures it (`churn.settings.ScoringSettings`)."""
        return cls(**settings_from(environ).scoring.model_dump())


class ComputeResource(ConfigurableResource):  # type: ignore[type-arg]
    """Where the heavy steps run: in the step's process, or on a Dask cluster (`churn.engine`)."""

    dask_scheduler: str = from_setting(PipelineSettings, "dask_scheduler")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ComputeResource:
        """The resource as `CHURN_DASK_SCHEDULER` configures it."""
        return cls(dask_scheduler=settings_from(environ).pipeline.dask_scheduler)

    def engine(self) -> Engine:
        """The engine this resource names."""
        return Engine(self.dask_scheduler.strip() or None)


class MlflowResource(ConfigurableResource):  # type: ignore[type-arg]
    """MLflow tracking and model registry (`churn.tracking.Tracking`), as a resource."""

    tracking_uri: str = Field(description="MLflow tracking URI (sqlite:///..., http://...).")
    artifact_location: str | None = Field(
        default=None,
        description="Where a new experiment stores artifacts; the server's default when unset.",
    )
    experiment: str = from_setting(TrackingSettings, "experiment")
    model_name: str = from_setting(TrackingSettings, "model_name")
    ui_url: str = Field(
        default="http://127.0.0.1:5000",
        description="Base URL of the MLflow UI, for the links in Dagster metadata.",
    )

    @classmethod
    def from_env(cls, home: PlatformHome) -> MlflowResource:
        """A tracking server from `MLFLOW_TRACKING_URI`, else the local store under `home`."""
        return cls(**dataclasses.asdict(Tracking.from_env(home.root)))

    @property
    def tracking(self) -> Tracking:
        """The store this resource configures."""
        return Tracking(
            tracking_uri=self.tracking_uri,
            artifact_location=self.artifact_location,
            experiment=self.experiment,
            model_name=self.model_name,
            ui_url=self.ui_url,
        )

    def activate(self, experiment_name: str | None = None) -> str:
        """Point the mlflow module at this store and experiment; return the experiment id."""
        return self.tracking.activate(experiment_name)

    def client(self) -> MlflowClient:
        """A client of this tracking store and registry."""
        return self.tracking.client()

    def run_url(self, experiment_id: str, run_id: str) -> str:
        """The MLflow UI page of a run."""
        return self.tracking.run_url(experiment_id, run_id)

    @property
    def monitoring_experiment(self) -> str:
        """The experiment of the drift reports."""
        return self.tracking.monitoring_experiment

    def model_version_url(self, version: str) -> str:
        """The MLflow UI page of a registered model version."""
        return self.tracking.model_version_url(version)


class QualityGates(ConfigurableResource):  # type: ignore[type-arg]
    """The thresholds a model must meet, on the hold-out split, to be promoted to production."""

    profile: str = Field(default="brief", description="Which preset the thresholds came from.")
    # Each gate as `CHURN_GATE_*` declares it; its default is the brief's threshold.
    min_f1: float = from_setting(GateSettings, "min_f1", default=BRIEF["min_f1"])
    min_recall: float = from_setting(GateSettings, "min_recall", default=BRIEF["min_recall"])
    max_probability_rmse: float = from_setting(
        GateSettings, "max_probability_rmse", default=BRIEF["max_probability_rmse"]
    )
    max_latency_p99_ms: float = from_setting(
        GateSettings, "max_latency_p99_ms", default=BRIEF["max_latency_p99_ms"]
    )
    max_single_column_auc: float = from_setting(
        GateSettings, "max_single_column_auc", default=BRIEF["max_single_column_auc"]
    )
    min_savings: float | None = from_setting(GateSettings, "min_savings")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> QualityGates:
        """`CHURN_GATES` picks a profile (brief, telco); `CHURN_GATE_*` override single gates."""
        gates = settings_from(environ).gates
        return cls(profile=gates.label, **gates.thresholds())


# How a store that cannot be reached shows in an exception's text, at any depth of its chain
# (MLflow's REST client re-raises the connection error as a plain `MlflowException`).
_UNREACHABLE = (
    "Connection refused",
    "Max retries exceeded",
    "Failed to establish a new connection",
    "Connection aborted",
    "Read timed out",
    "failed with timeout exception",
    "Name or service not known",
    "too many 5",  # urllib3: "too many 500 error responses"
)


def store_unreachable(error: BaseException) -> str | None:
    """The short reason when `error` means the MLflow store could not be reached, else None."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current)
        for sign in _UNREACHABLE:
            if sign in text:
                return sign.lower()
        current = current.__cause__ or current.__context__
    return None


F = TypeVar("F", bound=Callable[..., Any])


def mlflow_step(function: F) -> F:
    """Report an MLflow store that cannot be reached as a retried `Failure` that says so.

    For the assets that write to the tracking store or the registry: the failure names the store
    and the step, is retried by the job's retry policy (`CHURN_STEP_RETRIES`), and leaves nothing
    half-done that a retry would not complete (registration finds the version of its MLflow run
    again, `ModelRegistry.register`).
    """

    @contextmanager
    def translated(kwargs: dict[str, Any]) -> Iterator[None]:
        try:
            yield
        except Failure:
            raise
        except Exception as error:
            reason = store_unreachable(error)
            if reason is None:
                raise
            tracking = kwargs.get("mlflow_tracking")
            store = tracking.tracking_uri if isinstance(tracking, MlflowResource) else "MLflow"
            raise Failure(
                description=f"The MLflow store {store} could not be reached during "
                f"{function.__name__} ({reason}). Nothing it started is left half-registered: "
                "the step is retried (CHURN_STEP_RETRIES), and a later run picks up where it "
                "stopped.",
                metadata={"store": store, "error": str(error)[:1000]},
                allow_retries=True,
            ) from error

    if inspect.isgeneratorfunction(function):

        @functools.wraps(function)
        def steps(*args: Any, **kwargs: Any) -> Iterator[Any]:
            with translated(kwargs):
                yield from function(*args, **kwargs)

        return cast(F, steps)

    @functools.wraps(function)
    def step(*args: Any, **kwargs: Any) -> Any:
        with translated(kwargs):
            return function(*args, **kwargs)

    return cast(F, step)
