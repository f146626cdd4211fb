"""The MLflow store the platform tracks runs in and registers models in.

By default a SQLite store and an artifact folder under the platform home, which need no server;
`MLFLOW_TRACKING_URI` points the platform at a tracking server instead. The pipeline (through its
`mlflow_tracking` resource) and the prediction service both take it from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from churn.settings import settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"


@dataclass(frozen=True)
class Tracking:
    """One place owns the tracking URI, the experiment and the registered model's name."""

    tracking_uri: str
    artifact_location: str | None = None
    experiment: str = "churn"
    model_name: str = "churn-predictor"
    ui_url: str = "http://127.0.0.1:5000"

    @classmethod
    def from_env(cls, home: Path) -> Tracking:
        """A tracking server from `MLFLOW_TRACKING_URI`, else the local store under `home`."""
        configured = settings().tracking
        uri = configured.tracking_uri
        local = home / "mlflow"
        if uri.startswith("sqlite:///"):
            # A local store (MLflow itself exports the URI once a run has set it): artifacts
            # beside the database, never in an `mlruns` folder of whatever the working directory.
            local = Path(uri.removeprefix("sqlite:///")).parent
        return cls(
            tracking_uri=uri or f"sqlite:///{local / 'mlflow.db'}",
            artifact_location=None
            if uri and not uri.startswith("sqlite:///")
            else (local / "artifacts").as_uri(),
            experiment=configured.experiment,
            model_name=configured.model_name,
            ui_url=configured.ui_url
            or (uri if uri.startswith("http") else "")
            or "http://127.0.0.1:5000",
        )

    def activate(self, experiment_name: str | None = None) -> str:
        """Point the mlflow module at this store and experiment; return the experiment id.

        The training experiment by default; `experiment_name` chooses another (monitoring).
        """
        import mlflow

        name = experiment_name or self.experiment

        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(
                parents=True, exist_ok=True
            )
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        client = mlflow.MlflowClient()
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            location = self.artifact_location
            if location and experiment_name:
                location = f"{location.rstrip('/')}/{experiment_name}"
            try:
                experiment_id: str = client.create_experiment(name, artifact_location=location)
            except mlflow.exceptions.MlflowException:
                # Another run created it between our look-up and our create.
                created = client.get_experiment_by_name(name)
                if created is None:
                    raise
                experiment_id = created.experiment_id
        else:
            experiment_id = experiment.experiment_id
        if experiment is None or experiment.tags.get(EXPERIMENT_KIND) != MODEL_TRAINING:
            # MLflow 3's UI opens an experiment without this tag in its GenAI view (traces,
            # token usage); ours are model-training experiments: runs, metrics, models.
            client.set_experiment_tag(experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
        mlflow.set_experiment(experiment_id=experiment_id)
        return experiment_id

    def client(self) -> MlflowClient:
        """A client of this tracking store and registry."""
        from mlflow import MlflowClient

        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(
                parents=True, exist_ok=True
            )
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def run_url(self, experiment_id: str, run_id: str) -> str:
        """The MLflow UI page of a run."""
        return f"{self.ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    @property
    def monitoring_experiment(self) -> str:
        """The experiment of the drift reports."""
        return f"{self.experiment}-monitoring"

    def model_version_url(self, version: str) -> str:
        """The MLflow UI page of a registered model version."""
        return f"{self.ui_url.rstrip('/')}/#/models/{self.model_name}/versions/{version}"
