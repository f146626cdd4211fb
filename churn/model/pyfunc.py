"""The model in MLflow: logged as a models-from-code pyfunc that carries this package.

`log_model` writes the model folder (`churn.model.artifact`) as the pyfunc's artifact
`churn_model`, and copies this package into the logged model (`code_paths`). The pyfunc itself
is the file `mlflow_model.py` (MLflow's models-from-code), not a pickle: `mlflow.pyfunc.load_model`
and `mlflow models serve` load a registered version with only its logged requirements, from any
directory, without this project installed; and nothing is unpickled but the estimator of a
scikit-learn model other than logistic regression.

Inside the platform, `load_model` reads the same folder with the platform's own reader of the
format (and reads the pickles of versions logged before the format, `format_version` 0).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.pyfunc.model import PythonModel

from churn.model.artifact import ChurnModel, ModelFormatError, load_pickled

MODEL_FOLDER = "churn_model"
PACKAGE = Path(__file__).resolve().parent
ENTRY = PACKAGE / "mlflow_model.py"


class ChurnPyfunc(PythonModel):
    """The pyfunc face of a `ChurnModel`: raw records in, key, probability and label out."""

    model: ChurnModel

    def load_context(self, context: Any) -> None:
        """Read the model folder logged beside this code."""
        self.model = ChurnModel.load(Path(context.artifacts[MODEL_FOLDER]))

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Score raw records (a DataFrame with the model's input columns)."""
        return self.model.predict(pd.DataFrame(model_input))


def log_model(
    model: ChurnModel,
    *,
    name: str,
    signature: Any,
    input_example: pd.DataFrame,
    pip_requirements: list[str],
) -> Any:
    """Log `model` to the active MLflow run, with this package as its code; its `ModelInfo`."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="churn-model-") as scratch:
        folder = model.save(Path(scratch) / MODEL_FOLDER)
        code = Path(scratch) / "code" / "churn"
        # `churn.model` keeps its import path: a bare `churn` package around this one alone.
        shutil.copytree(
            PACKAGE, code / "model", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
        (code / "__init__.py").write_text(
            '"""The churn model package, as logged with a model."""\n'
        )
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(ENTRY),
            artifacts={MODEL_FOLDER: str(folder)},
            code_paths=[str(code)],
            signature=signature,
            input_example=input_example,
            pip_requirements=pip_requirements,
        )


def load_model(model_uri: str) -> ChurnModel:
    """The model a registry or run URI (`models:/name/3`, `runs:/...`) holds, read in-process.

    Raises:
        ModelFormatError: the URI holds no churn model of a format this platform reads.

    """
    import mlflow

    # MLflow draws a progress bar for every download unless told not to: a load is not a task
    # a person watches.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory(prefix="churn-model-") as scratch:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=scratch))
        return read_model_folder(local)


def read_model_folder(local: Path) -> ChurnModel:
    """The model of a downloaded MLflow model directory (format 1, or a format-0 pickle)."""
    folder = local / "artifacts" / MODEL_FOLDER
    if folder.is_dir():
        return ChurnModel.load(folder)
    if (local / "python_model.pkl").exists():
        return load_pickled(local / "python_model.pkl")
    raise ModelFormatError(f"{local} holds neither a {MODEL_FOLDER} folder nor a format-0 pickle")
