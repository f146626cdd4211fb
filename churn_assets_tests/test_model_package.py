"""The model package: an artifact format that outlives the code, and models that load anywhere.

- Models stored by earlier code (fixtures, never regenerated) load and give the scores they gave
  then: format 0 (the cloudpickles every registry version held before the model package) and
  format 1 (the model folder).
- The format round-trips to the bit, explanations included, and refuses what it cannot read
  with a message naming the problem.
- A model logged by the platform loads and scores through `mlflow.pyfunc.load_model` in a
  Python process where the project cannot be imported, from another directory.
- The Bento, installed from its own requirements into a fresh virtual environment (not the
  project's), serves the production version; `mlflow models serve` serves it from there too.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from churn.model.artifact import (
    FORMAT_VERSION,
    LABEL,
    MANIFEST,
    PROBABILITY,
    WITH_CALIBRATION,
    WITHOUT_CALIBRATION,
    BoosterClassifier,
    ChurnModel,
    ModelFormatError,
)
from churn.model.calibration import Calibration, choose_calibration
from churn.model.pyfunc import read_model_folder
from churn.model.scoring import Scorer
from churn_assets_tests.conftest import REPOSITORY, free_port
from churn_assets_tests.processes import build_bento, terminate, wait_http

FIXTURES = Path(__file__).parent / "fixtures" / "models"
ALGORITHMS = ("logistic_regression", "random_forest", "lightgbm")
BIN = Path(sys.executable).parent

# Run first in a child interpreter: the project's packages (installed editable here) cannot be
# imported; only a copy elsewhere (a logged model's code) can.
WITHOUT_PROJECT = """
import importlib.abc, importlib.machinery, sys
REPOSITORY = {repository!r}
class WithoutProject(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] not in ("churn", "churn_assets", "serving"):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        places = [spec.origin or "", *(spec.submodule_search_locations or [])] if spec else []
        if spec is None or any(str(place).startswith(REPOSITORY) for place in places):
            raise ModuleNotFoundError(f"No module named {{name!r}} (the project is not here)")
        return spec
sys.meta_path.insert(0, WithoutProject())
"""


def fixture_records() -> pd.DataFrame:
    return pd.read_json(FIXTURES / "format-0" / "records.json", orient="records")


def expected(folder: Path) -> dict[str, list[Any]]:
    result: dict[str, list[Any]] = json.loads((folder / "expected.json").read_text())
    return result


@pytest.mark.parametrize("fmt", ["format-0", "format-1"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_models_stored_by_earlier_code_load_and_score_as_they_did(fmt: str, algorithm: str) -> None:
    folder = FIXTURES / fmt / algorithm
    model = read_model_folder(folder) if fmt == "format-0" else ChurnModel.load(folder)
    scored = model.predict(fixture_records())
    assert scored[PROBABILITY].tolist() == pytest.approx(expected(folder)[PROBABILITY], abs=1e-12)
    assert scored[LABEL].tolist() == expected(folder)[LABEL]
    assert model.threshold == 0.37 and model.id_column == "customer_id"
    assert scored["customer_id"].tolist() == fixture_records()["customer_id"].tolist()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_the_format_round_trips_to_the_bit_with_its_explanations(
    tmp_path: Path, algorithm: str
) -> None:
    trained = read_model_folder(FIXTURES / "format-0" / algorithm)  # the estimator as trained
    loaded = ChurnModel.load(trained.save(tmp_path / "model"))
    records = fixture_records()
    columns = {name: records[name] for name in trained.inputs}
    before, after = Scorer.of(trained), Scorer.of(loaded)
    assert np.array_equal(before.probabilities(columns), after.probabilities(columns))
    assert np.array_equal(before.contributions(columns).values, after.contributions(columns).values)
    assert loaded.schema == trained.schema and loaded.inputs == trained.inputs
    manifest = json.loads((tmp_path / "model" / MANIFEST).read_text())
    # Without a calibration map, format 1: the versions of this package before maps read it.
    assert manifest["format_version"] == WITHOUT_CALIBRATION
    # With one, format 2: the map is numbers in the manifest, applied after the estimator.
    for calibration in (
        Calibration("sigmoid", slope=0.8, intercept=-0.2),
        Calibration("isotonic", breakpoints=(0.0, 0.3, 1.0), values=(0.05, 0.2, 0.9)),
    ):
        calibrated = dataclasses.replace(trained, calibration=calibration)
        folder = calibrated.save(tmp_path / calibration.method)
        assert json.loads((folder / MANIFEST).read_text())["format_version"] == WITH_CALIBRATION
        reread = ChurnModel.load(folder)
        assert reread.calibration == calibration
        assert np.array_equal(
            Scorer.of(reread).probabilities(columns),
            calibration.apply(before.probabilities(columns)),
        )
    # LightGBM is stored as its own text format and read back as a bare booster.
    if algorithm == "lightgbm":
        assert isinstance(loaded.estimator, BoosterClassifier)
        assert (tmp_path / "model" / "estimator.txt").read_text().startswith("tree")
    # Nothing in the folder names a module of this project.
    stored = "".join(p.read_text(errors="replace") for p in (tmp_path / "model").iterdir())
    assert "churn_assets" not in stored and "churn.model" not in stored


def test_what_the_format_cannot_read_is_refused_with_the_reason(tmp_path: Path) -> None:
    folder = ChurnModel.load(FIXTURES / "format-1" / "lightgbm").save(tmp_path / "newer")
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**manifest, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(ModelFormatError, match=f"version {FORMAT_VERSION + 1}, newer than"):
        ChurnModel.load(folder)
    with pytest.raises(ModelFormatError, match="not a churn model folder"):
        ChurnModel.load(tmp_path)
    (folder / MANIFEST).write_text(json.dumps(manifest))
    (folder / "estimator.txt").unlink()
    with pytest.raises(ModelFormatError, match=r"lacks its estimator file estimator\.txt"):
        ChurnModel.load(folder)
    with pytest.raises(ModelFormatError, match="already holds a model"):
        ChurnModel.load(FIXTURES / "format-1" / "lightgbm").save(folder)


def log_fixture_model(store: Path, algorithm: str) -> str:
    """Log a fixture model as the training asset does; the model's `runs:/` URI."""
    import mlflow

    from churn.model.pyfunc import log_model

    model = ChurnModel.load(FIXTURES / "format-1" / algorithm)
    mlflow.set_tracking_uri(f"sqlite:///{store}")
    # Its own experiment: another test in this process may have left another store's active.
    mlflow.set_experiment("model-package")
    example = fixture_records()[["customer_id", *model.schema.names]].head(5)
    with mlflow.start_run() as run:
        log_model(
            model,
            name="model",
            signature=None,
            input_example=example,
            pip_requirements=[],
        )
    return f"runs:/{run.info.run_id}/model"


def test_a_logged_model_loads_where_the_project_cannot_be_imported(tmp_path: Path) -> None:
    store = tmp_path / "mlflow.db"
    uri = log_fixture_model(store, "lightgbm")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "records.json").write_text((FIXTURES / "format-0" / "records.json").read_text())
    probe = WITHOUT_PROJECT.format(repository=str(REPOSITORY)) + (
        "import json, mlflow, pandas as pd\n"
        "try:\n"
        "    import churn_assets\n"
        "    raise SystemExit('the project is importable')\n"
        "except ModuleNotFoundError:\n"
        "    pass\n"
        f"mlflow.set_tracking_uri('sqlite:///{store}')\n"
        f"model = mlflow.pyfunc.load_model({uri!r})\n"
        "records = pd.read_json('records.json', orient='records')\n"
        "scored = model.predict(records)\n"
        "import churn.model\n"
        "print(json.dumps({'from': churn.model.__file__, "
        "'probability': scored['churn_probability'].tolist()}))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    answer = json.loads(completed.stdout.strip().splitlines()[-1])
    # The model's own copy of the package answered, not the project's.
    assert not answer["from"].startswith(str(REPOSITORY)), answer["from"]
    assert answer["probability"] == pytest.approx(
        expected(FIXTURES / "format-1" / "lightgbm")[PROBABILITY], abs=1e-12
    )


def test_the_bento_requirements_are_the_constraints_pins_of_what_the_service_imports() -> None:
    from serving.requirements import REQUIREMENTS, pins, requirements

    assert REQUIREMENTS.read_text() == requirements(), "run `python -m serving.requirements`"
    pinned = pins()
    lines = [line for line in REQUIREMENTS.read_text().splitlines() if not line.startswith("#")]
    for line in lines:
        name, _, version = line.partition("==")
        assert pinned[name] == version, line
    names = {line.partition("==")[0] for line in lines}
    assert {"bentoml", "mlflow", "lightgbm", "scikit-learn"} <= names
    assert not {name for name in names if name.startswith(("dagster", "great-expectations"))}
    assert "evidently" not in names


# --- A fresh environment with only the Bento's requirements -------------------------------------


@pytest.fixture(scope="module")
def bento_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """A built Bento, and a virtual environment with only its requirements (not the project)."""
    root = tmp_path_factory.mktemp("bento")
    store = root / "bentoml"
    bento = build_bento(store)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            str(bento / "env" / "python" / "requirements.txt"),
        ],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    yield bento, venv
    shutil.rmtree(root, ignore_errors=True)


def _post(url: str, body: Any) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.mark.servers
def test_the_bento_serves_the_production_model_from_an_environment_without_the_project(
    bento_environment: tuple[Path, Path], tmp_path: Path
) -> None:
    from churn_assets_tests.conftest import registry_of, trained_home

    bento, venv = bento_environment
    home = trained_home(tmp_path)
    store = f"sqlite:///{home.root / 'mlflow' / 'mlflow.db'}"
    assert registry_of(home).alias_version("production") == "1"
    outside = tmp_path / "outside"
    outside.mkdir()
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("VIRTUAL_ENV", "PYTHON", "CHURN_", "MLFLOW_", "BENTOML_"))
    }
    environment.update(
        PATH=f"{venv / 'bin'}:/usr/bin:/bin",
        CHURN_HOME=str(tmp_path / "service-home"),
        MLFLOW_TRACKING_URI=store,
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
        BENTOML_HOME=str(bento.parent.parent.parent),
        BENTOML_DO_NOT_TRACK="True",
    )
    # The environment holds no trace of the project.
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import churn"],
        cwd=outside,
        env=environment,
        capture_output=True,
        text=True,
    )
    assert "No module named 'churn'" in probe.stderr

    port = free_port()
    log = tmp_path / "bento.log"
    with open(log, "wb") as output:
        service = subprocess.Popen(
            [
                str(venv / "bin" / "bentoml"),
                "serve",
                f"churn-service:{bento.name}",
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
            ],
            cwd=outside,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", service, log, 180)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/docs.json", timeout=10) as answer:
            document = json.loads(answer.read())
        example = document["components"]["schemas"]["CustomerRecord"]["example"]
        status, body = _post(f"http://127.0.0.1:{port}/predict", {"records": [example]})
        assert status == 200, body
        assert body[0]["model_version"] == "1" and 0 <= body[0]["churn_probability"] <= 1
    finally:
        terminate(service)
    assert service.returncode == 0, log.read_text()[-3000:]

    # `mlflow models serve` of the production version, from the same environment.
    port = free_port()
    log = tmp_path / "mlflow-serve.log"
    with open(log, "wb") as output:
        server = subprocess.Popen(
            [
                str(venv / "bin" / "mlflow"),
                "models",
                "serve",
                "-m",
                "models:/churn-predictor@production",
                "--env-manager",
                "local",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=outside,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", server, log, 180)
        status, body = _post(
            f"http://127.0.0.1:{port}/invocations", {"dataframe_records": [example]}
        )
        assert status == 200, body
        [prediction] = body["predictions"]
        assert 0 <= prediction[PROBABILITY] <= 1 and prediction[LABEL] in (0, 1)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_a_date_input_is_format_3_and_scores_iso_text_as_its_datetimes(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from churn.model.features import build_feature_pipeline, feature_columns
    from churn.model.schema import ColumnKind, ModelSchema

    frame = pd.DataFrame(
        {
            "tenure": np.arange(40) % 7,
            "signed_up": pd.to_datetime("2026-01-01")
            + pd.to_timedelta(np.arange(40) % 9, "D")
            + pd.to_timedelta(np.arange(40) % 4 * 6, "h"),
            "churn": np.arange(40) % 2,
        }
    )
    numeric, categorical, dates = feature_columns(frame, "churn", None, [])
    assert (numeric, categorical, dates) == (["tenure"], [], ["signed_up"])
    pipeline = Pipeline(
        [
            ("features", build_feature_pipeline(numeric, categorical, dates)),
            ("model", LogisticRegression()),
        ]
    ).fit(frame, frame["churn"])
    schema = ModelSchema.from_frame(frame, "churn", None)
    assert schema.column("signed_up").kind == ColumnKind.DATE
    model = ChurnModel.from_pipeline(pipeline, 0.5, None, schema)
    folder = model.save(tmp_path / "model")
    assert json.loads((folder / MANIFEST).read_text())["format_version"] == FORMAT_VERSION == 3
    loaded = ChurnModel.load(folder)
    as_trained = Scorer.of(loaded).probabilities(
        {"tenure": frame["tenure"], "signed_up": frame["signed_up"]}
    )
    as_sent = Scorer.of(loaded).probabilities(
        {
            "tenure": frame["tenure"].tolist(),
            # As a request carries them: ISO 8601, with `Z` or an offset.
            "signed_up": [
                f"{moment:%Y-%m-%dT%H:%M:%S}Z" if i % 2 else f"{moment + pd.Timedelta('2h')}+02:00"
                for i, moment in enumerate(frame["signed_up"])
            ],
        }
    )
    assert np.allclose(as_trained, as_sent, atol=1e-12)
    assert np.allclose(as_trained, pipeline.predict_proba(frame)[:, 1], atol=1e-12)


def test_a_category_a_request_cannot_carry_is_refused_naming_its_column(tmp_path: Path) -> None:
    from decimal import Decimal

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from churn.model.features import build_feature_pipeline
    from churn.model.schema import ModelSchema

    frame = pd.DataFrame(
        {
            "tenure": np.arange(40) % 7,
            "fee": [Decimal(n % 3) for n in range(40)],  # objects no JSON request holds
            "churn": np.arange(40) % 2,
        }
    )
    pipeline = Pipeline(
        [
            ("features", build_feature_pipeline(["tenure"], ["fee"])),
            ("model", LogisticRegression()),
        ]
    ).fit(frame, frame["churn"])
    model = ChurnModel.from_pipeline(
        pipeline, 0.5, None, ModelSchema.from_frame(frame, "churn", None)
    )
    with pytest.raises(ModelFormatError, match="column 'fee' holds Decimal values"):
        model.save(tmp_path / "model")


def test_a_calibration_map_is_kept_only_where_it_lowers_the_brier_score() -> None:
    rng = np.random.default_rng(21)
    truth = rng.beta(1, 4, 20_000)
    outcomes = (rng.random(len(truth)) < truth).astype(int)
    # Calibrated already: no map pays for itself.
    kept = choose_calibration(outcomes, truth)
    assert kept.calibration is None and kept.method == "none"
    assert np.array_equal(kept.probabilities, truth)
    # Too timid (squashed towards the middle): a map is kept, and the cross-fitted Brier score
    # it was chosen on is lower than the raw one.
    timid = 0.5 + (truth - 0.5) * 0.4
    chosen = choose_calibration(outcomes, timid)
    assert chosen.calibration is not None
    assert chosen.brier[chosen.method] < 0.99 * chosen.brier_raw
    assert np.mean((chosen.calibration.apply(timid) - outcomes) ** 2) < chosen.brier_raw
