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

from churn.home import Home, platform_home
from churn.normalise import (
    DEFAULT_MAX_QUARANTINE_SHARE,
    DEFAULT_NUMERIC_MIN_SHARE,
    CleaningRules,
    snake_case,
)
from churn.settings import GIB, SYNTHETIC, settings_from
from churn.snapshots import SnapshotStore
from churn.tracking import Tracking

if TYPE_CHECKING:
    from mlflow import MlflowClient

_DATA_SUFFIXES = (".gz", ".csv", ".tsv", ".txt", ".parquet", ".pq")
# The Dagster resources below are the launchpad-editable face of `churn.settings`: the same fields,
# with defaults from the environment (`from_env`); `test_settings.py` holds them in lockstep.


class DatasetResource(ConfigurableResource):  # type: ignore[type-arg]
    """The churn data set the platform ingests, validates and learns from.

    Every field can be set by an environment variable (`churn.settings.DatasetSettings`), so the
    whole platform can be pointed at another data set without editing code, and overridden per run
    in the launchpad.
    """

    source: str = Field(
        default=SYNTHETIC,
        description="`synthetic` (built-in generator), a local path, a file:// or http(s):// URL "
        "to a CSV (any delimiter, optionally gzip-compressed), Parquet or Excel (.xlsx) file.",
    )
    target: str = Field(
        default="Churn", description="Target column, in its raw or snake_case spelling."
    )
    sheet: str | None = Field(
        default=None,
        description="For an Excel workbook, the sheet holding the data; by default the largest.",
    )
    id_column: str | None = Field(
        default=None,
        description="Customer key column; by default a column named like `customer_id`.",
    )
    positive_label: str | None = Field(
        default=None,
        description="Target value meaning churned; by default Yes, True, 1 (any case) are.",
    )
    name: str | None = Field(
        default=None,
        description="Data set name, which keys its validation suite; by default `telco` for the "
        "synthetic source, else the file name.",
    )
    exclude_columns: list[str] = Field(
        default_factory=list,
        description="Columns never used as features (besides the key and the target).",
    )
    synthetic_rows: int = Field(default=10_000, description="Rows the synthetic source generates.")
    synthetic_seed: int = Field(default=42, description="Seed of the synthetic source.")
    synthetic_monthly_charges_shift: float = Field(
        default=0.0, description="Synthetic drift: relative change of monthly charges (0.3 = +30%)."
    )
    synthetic_month_to_month_shift: float = Field(
        default=0.0,
        description="Synthetic drift: share of longer contracts turned into month-to-month.",
    )
    max_bytes: int = Field(default=GIB, description="Largest source file accepted, in bytes.")
    timeout_seconds: float = Field(default=30.0, description="HTTP connect and read timeout.")
    numeric_min_share: float = Field(
        default=DEFAULT_NUMERIC_MIN_SHARE,
        gt=0,
        le=1,
        description="A text column is numeric when at least this share of its non-blank values "
        "are numbers; the others become missing.",
    )
    max_quarantine_share: float = Field(
        default=DEFAULT_MAX_QUARANTINE_SHARE,
        ge=0,
        le=1,
        description="The data set fails when more than this share of its rows is set aside "
        "(missing or unrecognised target, missing key, key repeated with different values).",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DatasetResource:
        """The resource as the environment configures it (`churn.settings.DatasetSettings`)."""
        return cls(**settings_from(environ).dataset.model_dump())

    @property
    def rules(self) -> CleaningRules:
        """How tolerant normalisation is of messy values and rows."""
        return CleaningRules(self.numeric_min_share, self.max_quarantine_share)

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

    source: str = Field(
        default="",
        description="The customers to score: a path or URL of a CSV or Parquet file (the target "
        "column may be absent). Empty: the latest validated data version's customers who have "
        "not churned.",
    )
    max_rejected_share: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="The run fails, publishing nothing, when more than this share of the "
        "customers do not fit the model's input schema.",
    )
    database_url: str = Field(
        default="",
        description="PostgreSQL URL; when set, each night's scores also replace that partition's "
        "rows of the `churn_scores` table.",
    )
    chunk_rows: int = Field(
        default=100_000, gt=0, description="Customers held in memory at a time."
    )
    alias: str = Field(default="production", description="The registry alias whose model scores.")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ScoringResource:
        """The resource as the environment configures it (`churn.settings.ScoringSettings`)."""
        return cls(**settings_from(environ).scoring.model_dump())


class MlflowResource(ConfigurableResource):  # type: ignore[type-arg]
    """MLflow tracking and model registry (`churn.tracking.Tracking`), as a resource."""

    tracking_uri: str = Field(description="MLflow tracking URI (sqlite:///..., http://...).")
    artifact_location: str | None = Field(
        default=None,
        description="Where a new experiment stores artifacts; the server's default when unset.",
    )
    experiment: str = Field(default="churn", description="Experiment of the training runs.")
    model_name: str = Field(default="churn-predictor", description="Registered model name.")
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
    min_f1: float = Field(default=0.85, description="Lowest hold-out F1 (churn class).")
    min_recall: float = Field(
        default=0.80,
        description="Lowest hold-out recall; also the recall the decision threshold must keep.",
    )
    max_probability_rmse: float = Field(
        default=0.15, description="Highest RMSE of the churn probabilities."
    )
    max_latency_p99_ms: float = Field(
        default=200.0, description="Highest p99 latency of a single-record prediction, in ms."
    )
    max_single_column_auc: float = Field(
        default=0.95,
        gt=0.5,
        le=1,
        description="Highest ROC-AUC of any single input alone: above it, the input leaks the "
        "target.",
    )

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
