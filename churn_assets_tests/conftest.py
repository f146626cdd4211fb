"""Shared fixtures: an isolated platform home, a real HTTP server, real and bank-style data sets."""

from __future__ import annotations

import http.server
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pytest

from churn.model.schema import ColumnKind, ModelSchema
from churn.settings import settings
from churn_assets.resources import PlatformHome

if TYPE_CHECKING:
    from dagster import DagsterInstance, ExecuteInProcessResult

    from churn.registry import ModelRegistry
    from churn_assets.resources import DatasetResource, QualityGates

REPOSITORY = Path(__file__).resolve().parents[1]
TELCO_CSV = REPOSITORY.parent / "shared" / "data" / "telco_customer_churn.csv"
ORANGE_CSV = REPOSITORY.parent / "shared" / "data" / "orange_telecom_churn.csv"

# The smallest search that is still a search (two trials to compare, cross-validated): tests
# check what training does, not how well it tunes.
QUICK_TRAINING = {
    "algorithms": ["logistic_regression"],
    "iterations": 2,
    "folds": 2,
    "n_jobs": 1,
}

# `churn_assets.definitions` reads CHURN_HOME when imported: point it away from the repository.
os.environ["CHURN_HOME"] = tempfile.mkdtemp(prefix="churn-tests-")
os.environ["GX_ANALYTICS_ENABLED"] = "False"


def metadata(result: ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    """The metadata of the one materialization of `asset` in an in-process run."""
    [event] = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key is not None and e.asset_key.to_user_string() == asset
    ]
    assert event.materialization is not None
    return {k: v.value for k, v in event.materialization.metadata.items()}


def today() -> str:
    """Today's partition key (UTC): the monitoring assets' window ends now in it."""
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y-%m-%d")


def eventually(
    condition: Callable[[], Any],
    timeout: float = 30.0,
    explain: Callable[[], str] = lambda: "",
    interval: float = 0.2,
) -> Any:
    """Poll `condition` until it returns something truthy, and return that.

    Fails after `timeout` seconds, with `explain()` (what was seen instead). Tests wait for the
    condition they need, never a fixed time: a log written every second, an alert, a swap.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s. {explain()}"[-3000:])
        time.sleep(interval)


def free_port() -> int:
    """A loopback port nobody listens on (until someone binds it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def set_environment(patch: pytest.MonkeyPatch, **values: str) -> None:
    """Set environment variables for the rest of a test, and have the settings read them again.

    The platform reads its settings once per process (`churn.settings.settings`); a test that
    changes the environment in-process says so here.
    """
    for name, value in values.items():
        patch.setenv(name, value)
    settings.cache_clear()


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    """Each test reads the settings from its own environment, and leaves none behind.

    Set up before `monkeypatch` (it asks for nothing), so torn down after it has restored the
    environment.
    """
    settings.cache_clear()
    yield
    settings.cache_clear()


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PlatformHome:
    """Every test writes under its own platform home, never into the repository's `.churn/`."""
    root = tmp_path / "churn-home"
    monkeypatch.setenv("CHURN_HOME", str(root))
    monkeypatch.setenv("GX_ANALYTICS_ENABLED", "False")
    # mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI: never inherit another test's store.
    for variable in (
        "CHURN_SOURCE",
        "CHURN_TARGET",
        "CHURN_ID_COLUMN",
        "CHURN_POSITIVE_LABEL",
        "CHURN_GATES",
        "MLFLOW_TRACKING_URI",
        "MLFLOW_UI_URL",
    ):
        monkeypatch.delenv(variable, raising=False)
    settings.cache_clear()
    return PlatformHome(path=str(root))


@pytest.fixture
def telco_csv() -> Path:
    """The real IBM Telco file from `../shared/data`, or a skip saying it is absent."""
    if not TELCO_CSV.exists():
        pytest.skip(f"the real Telco data set is absent ({TELCO_CSV})")
    return TELCO_CSV


def bank_customers(rows: int = 2_000, seed: int = 7) -> pd.DataFrame:
    """A bank's churn table (target `Exited`, a surname column), unlike the Telco schema."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 92, rows)
    balance = np.where(rng.random(rows) < 0.35, 0.0, rng.normal(120_000, 30_000, rows).round(2))
    active = rng.integers(0, 2, rows)
    exited = rng.random(rows) < 1 / (1 + np.exp(-(age - 50) / 8 + active))
    return pd.DataFrame(
        {
            "RowNumber": np.arange(1, rows + 1),
            "CustomerId": 15_600_000 + rng.permutation(rows),
            "Surname": rng.choice(["Hargrave", "Hill", "Onio", "Boni", "Mitchell"], rows)
            + pd.Series(np.arange(rows)).astype(str).to_numpy(),
            "CreditScore": rng.integers(350, 851, rows),
            "Geography": rng.choice(["France", "Spain", "Germany"], rows),
            "Gender": rng.choice(["Female", "Male"], rows),
            "Age": age,
            "Tenure": rng.integers(0, 11, rows),
            "Balance": balance,
            "NumOfProducts": rng.integers(1, 5, rows),
            "HasCrCard": rng.integers(0, 2, rows),
            "IsActiveMember": active,
            "EstimatedSalary": rng.uniform(10, 200_000, rows).round(2),
            "Exited": exited.astype(int),
        }
    )


@dataclass
class FileServer:
    """A real HTTP server on a free loopback port, serving files from `root`."""

    root: Path
    port: int

    def url(self, path: str) -> str:
        """The URL of `path` on this server."""
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves files, plus a few routes that misbehave the way real servers do."""

    def do_GET(self) -> None:
        if self.path == "/slow.csv":
            time.sleep(3)
        if self.path == "/page":
            body = b"<!DOCTYPE html><html><body><h1>Telco churn</h1></body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path == "/endless.csv":
            # No Content-Length: only counting the bytes received can enforce the limit.
            self.send_response(200)
            self.send_header("Content-Type", "text/csv")
            self.end_headers()
            self.wfile.write(b"a,churn\n")
            try:
                for _ in range(10_000):
                    self.wfile.write(b"1,Yes\n" * 1000)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[FileServer]:
    """Serve `tmp_path/www` over HTTP on 127.0.0.1, on a port the OS picks."""
    root = tmp_path / "www"
    root.mkdir()

    def handler(*args: object, **kwargs: object) -> _Handler:
        return _Handler(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield FileServer(root=root, port=server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def json_record(row: pd.Series, schema: ModelSchema) -> dict[str, Any]:
    """A population row as a client sends it: JSON types by the schema, missing as null."""
    record: dict[str, Any] = {schema.key: str(row[schema.key])} if schema.key else {}
    for column in schema.columns:
        value = row[column.name]
        if pd.isna(value):
            record[column.name] = None
        elif column.kind == ColumnKind.INTEGER:
            record[column.name] = int(value)
        elif column.kind == ColumnKind.NUMBER:
            record[column.name] = float(value)
        elif column.kind == ColumnKind.BOOLEAN:
            record[column.name] = bool(value)
        else:
            record[column.name] = str(value)
    return record


def run_pipeline(
    home: PlatformHome,
    dataset: DatasetResource,
    gates: QualityGates | None = None,
    training: dict[str, Any] | None = None,
    instance: DagsterInstance | None = None,
    promotion: dict[str, Any] | None = None,
) -> ExecuteInProcessResult:
    """The training pipeline (ingestion to production), in process, with a small search."""
    from dagster import DagsterInstance, materialize

    from churn_assets.definitions import ASSETS
    from churn_assets.resources import ComputeResource, MlflowResource, QualityGates
    from churn_assets.storage import ValueStore

    return materialize(
        ASSETS,
        resources={
            "dataset": dataset,
            "home": home,
            "mlflow_tracking": MlflowResource.from_env(home),
            "compute": ComputeResource(),
            "gates": gates or QualityGates(),
            "io_manager": ValueStore.under(home.layout),
        },
        run_config={
            "ops": {
                "candidate_models": {"config": {**QUICK_TRAINING, **(training or {})}},
                "model_evaluation": {"config": {"latency_samples": 50}},
                **({"production_model": {"config": promotion}} if promotion else {}),
            }
        },
        instance=instance or DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


# A record of the Telco schema, as clients of a Telco-trained model send them.
EXAMPLE_CUSTOMER: dict[str, Any] = {
    "customer_id": "7590-VHVEG",
    "gender": "Female",
    "senior_citizen": 0,
    "partner": "Yes",
    "dependents": "No",
    "tenure": 1,
    "phone_service": "No",
    "multiple_lines": "No phone service",
    "internet_service": "DSL",
    "online_security": "No",
    "online_backup": "Yes",
    "device_protection": "No",
    "tech_support": "No",
    "streaming_tv": "No",
    "streaming_movies": "No",
    "contract": "Month-to-month",
    "paperless_billing": "Yes",
    "payment_method": "Electronic check",
    "monthly_charges": 29.85,
    "total_charges": 29.85,
}


def customer(**changes: Any) -> dict[str, Any]:
    """The example Telco customer, with some values changed."""
    return {**EXAMPLE_CUSTOMER, **changes}


def trained_home(directory: Path, seeds: tuple[int, ...] = (42,), **dataset: Any) -> PlatformHome:
    """A home whose registry holds one version per seed, version 1 in production.

    Each version is trained on 3,000 synthetic rows under the `telco` gates (the tests that use
    it need registered versions, not the brief's thresholds); `dataset` sets more of the
    `DatasetResource` (decision costs, say). For module fixtures: tests that only read the model
    share it.
    """
    from churn.registry import PRODUCTION
    from churn_assets.resources import DatasetResource, QualityGates

    home = PlatformHome(path=str(directory / "home"))
    # Module fixtures run before the per-test isolation: never inherit another test's store.
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    settings.cache_clear()
    gates = QualityGates.from_env({"CHURN_GATES": "telco"})
    for seed in seeds:
        resource = DatasetResource(synthetic_rows=3_000, synthetic_seed=seed, **dataset)
        assert run_pipeline(home, resource, gates=gates).success
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # set by mlflow during the runs
    registry = registry_of(home)
    if registry.alias_version(PRODUCTION) != "1":
        registry.move_alias(PRODUCTION, "1", actor="tests", reason="start from version 1")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    return home


def registry_of(home: PlatformHome) -> ModelRegistry:
    """The registry of `home`'s MLflow store (or MLFLOW_TRACKING_URI's)."""
    from churn.registry import ModelRegistry
    from churn_assets.resources import MlflowResource

    tracking = MlflowResource.from_env(home)
    tracking.activate()
    return ModelRegistry(tracking.client(), tracking.model_name)


# The modules that take longest, longest first: with two workers (`make test`), the long ones
# start at once and the short ones fill the gaps, instead of one long module running alone at the
# end. From `pytest --durations=25` on a 2-core machine; modules not listed follow in file order.
# `make test` passes --no-loadscope-reorder, without which xdist orders modules by test count.
LONGEST_FIRST = (
    "test_real_tables.py",
    "test_containers.py",
    "test_serving.py",
    "test_any_table.py",
    "test_training_registry.py",
    "test_production_profile.py",
    "test_observability.py",
    "test_alerting.py",
    "test_batch_scoring.py",
    "test_pipeline_faults.py",
    "test_monitoring.py",
    "test_validation.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order test modules longest first (see `LONGEST_FIRST`); tests keep their order inside."""
    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
