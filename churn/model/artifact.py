"""The model as the platform ships it, and its artifact format: a folder anyone can read.

A `ChurnModel` is everything a score needs: the fitted feature steps (raw records to the
estimator's input matrix), the estimator, the decision threshold, the raw input schema and the
customer key. Training builds one; the prediction service, nightly scoring, the champion/challenger
comparison and `mlflow.pyfunc.load_model` all load the same folder:

    churn_model.json     format name and version, threshold, key, schema, the feature steps
                         as data (columns, medians, means, scales, categories), and which
                         estimator file follows
    estimator.txt        LightGBM: the booster in LightGBM's own text format
    estimator.json       logistic regression: classes, coefficients and intercept
    estimator.joblib     any other scikit-learn estimator: scikit-learn's own persistence

Nothing in the folder names a class of this project: the feature steps are data, and the
estimator is in its library's format. So a folder written today is read by any later version of
this package that reads its `format_version` (a newer format is refused with a message naming
both versions), whatever the modules are called by then. Registry versions logged before this
format (`format_version` 0: a cloudpickle of `churn_assets.training.churn_model.ChurnModel`)
load through `load_pickled`, which maps the old module paths onto this package.

This package imports nothing from the rest of the project: it is copied into every logged model
(MLflow `code_paths`), so a registered version loads where the project is not installed.
"""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churn.model.calibration import Calibration
from churn.model.features import (
    FeatureEncoder,
    MedianScaler,
    OneHotCategories,
    RawRecords,
    TelcoFeatures,
)
from churn.model.schema import ModelSchema
from churn.model.scoring import Scorer, raw_inputs

logger = logging.getLogger(__name__)

FORMAT = "churn-model"
# The newest format this package reads and writes: 2 adds a calibration map, 3 date inputs. A
# model is written in the oldest format that describes it (format 1 without either), so that
# earlier versions of this package read it.
FORMAT_VERSION = 3
WITH_CALIBRATION = 2
WITHOUT_CALIBRATION = 1
MANIFEST = "churn_model.json"
PROBABILITY = "churn_probability"
LABEL = "churn_label"


class ModelFormatError(ValueError):
    """A model folder this package cannot read: another format, a newer version, a missing file."""


@dataclass
class ChurnModel:
    """Raw customer records in; churn probability and label (at the shipped threshold) out.

    Args:
        steps: the fitted feature steps, in order, from raw records to the input matrix.
        estimator: the fitted binary classifier (`predict_proba`).
        threshold: probability at or above which a customer is labelled as churning.
        schema: the raw input columns, their kinds and ranges.
        id_column: the customer key, echoed in `predict`'s output when the input has it.
        calibration: the map applied to the estimator's probabilities, if training kept one.

    """

    steps: tuple[Any, ...]
    estimator: Any
    threshold: float
    schema: ModelSchema
    id_column: str | None = None
    calibration: Calibration | None = None

    @classmethod
    def from_pipeline(
        cls,
        pipeline: Any,
        threshold: float,
        id_column: str | None,
        schema: ModelSchema,
        calibration: Calibration | None = None,
    ) -> ChurnModel:
        """The model of a fitted scikit-learn pipeline (feature steps, then the estimator)."""
        return cls(
            steps=tuple(_transforms(pipeline)),
            estimator=pipeline.steps[-1][1],
            threshold=float(threshold),
            schema=schema,
            id_column=id_column,
            calibration=calibration,
        )

    @property
    def inputs(self) -> list[str]:
        """The raw columns the first step reads (the schema's columns)."""
        return raw_inputs(self.steps)

    @cached_property
    def scorer(self) -> Scorer:
        """The model's scorer, built once (`predict` is called a record at a time)."""
        return Scorer.of(self)

    def predict(self, records: pd.DataFrame) -> pd.DataFrame:
        """Score raw records: the key (when given), `churn_probability` and `churn_label`."""
        probability = self.scorer.probabilities({c: records[c] for c in self.inputs})
        scored = pd.DataFrame(
            {PROBABILITY: probability, LABEL: (probability >= self.threshold).astype(np.int64)}
        )
        if self.id_column and self.id_column in records:
            scored.insert(0, self.id_column, records[self.id_column].to_numpy())
        return scored

    @property
    def format_version(self) -> int:
        """The oldest format that describes this model (what a reader must understand)."""
        if any(isinstance(step, RawRecords) and step.dates for step in self.steps):
            return FORMAT_VERSION  # a reader that turns dates into days: format 3
        if self.calibration is not None:
            return WITH_CALIBRATION  # a reader that applies the map: format 2
        return WITHOUT_CALIBRATION

    def save(self, folder: Path) -> Path:
        """Write the model to `folder` (created; it must not hold a model yet).

        Raises:
            ModelFormatError: a step or estimator the format cannot describe.

        """
        folder.mkdir(parents=True, exist_ok=True)
        if (folder / MANIFEST).exists():
            raise ModelFormatError(f"{folder} already holds a model")
        manifest = {
            "format": FORMAT,
            "format_version": self.format_version,
            "threshold": self.threshold,
            "id_column": self.id_column,
            "schema": self.schema.model_dump(mode="json"),
            "steps": [_describe(step) for step in self.steps],
            "estimator": _save_estimator(self.estimator, folder),
            "libraries": _library_versions(),
        }
        if self.calibration is not None:
            manifest["calibration"] = self.calibration.describe()
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, default=_plain))
        return folder

    @classmethod
    def load(cls, folder: Path) -> ChurnModel:
        """Read a model folder written by `save`, by this version or an earlier one.

        Raises:
            ModelFormatError: not a model folder, or a format version newer than this package's.

        """
        path = Path(folder) / MANIFEST
        if not path.exists():
            raise ModelFormatError(f"{folder} holds no {MANIFEST}: it is not a churn model folder")
        manifest = json.loads(path.read_text())
        if manifest.get("format") != FORMAT:
            raise ModelFormatError(f"{path} is not a {FORMAT} manifest")
        version = manifest.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ModelFormatError(
                f"{path} is in model format version {version}, newer than this platform reads "
                f"(up to {FORMAT_VERSION}): load it with the platform version that trained it, "
                "or upgrade"
            )
        _warn_on_other_libraries(manifest.get("libraries", {}), path)
        return cls(
            steps=tuple(_build(step) for step in manifest["steps"]),
            estimator=_load_estimator(manifest["estimator"], Path(folder)),
            threshold=float(manifest["threshold"]),
            schema=ModelSchema.model_validate(manifest["schema"]),
            id_column=manifest.get("id_column"),
            calibration=Calibration.from_description(manifest["calibration"])
            if manifest.get("calibration")
            else None,
        )


# Registry versions of format 0 pickled these classes at these paths; `load_pickled` reads them
# from where they live now.
MOVED_MODULES = {
    "churn_assets.features.pipeline": "churn.model.features",
    "churn_assets.training.churn_model": "churn.model.artifact",
    "churn.schema": "churn.model.schema",
}
MOVED_CLASSES = {("churn.model.artifact", "ChurnModel"): "PickledChurnModel"}


class PickledChurnModel:
    """What a format-0 pickle holds: a fitted pipeline, threshold, key and schema."""

    pipeline: Any
    threshold: float
    id_column: str | None
    schema: ModelSchema | None


class _MovedModules(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        module = MOVED_MODULES.get(module, module)
        name = MOVED_CLASSES.get((module, name), name)
        return super().find_class(module, name)


def load_pickled(path: Path) -> ChurnModel:
    """A format-0 model: the `python_model.pkl` of an MLflow model logged before format 1.

    Raises:
        ModelFormatError: the pickle holds no input schema (trained before schemas were kept).

    """
    with open(path, "rb") as stream:
        pickled = _MovedModules(stream).load()
    schema = getattr(pickled, "schema", None)
    if schema is None:
        raise ModelFormatError(
            "the model has no recorded input schema (it was trained before schemas were "
            "recorded): retrain it"
        )
    return ChurnModel.from_pipeline(pickled.pipeline, pickled.threshold, pickled.id_column, schema)


class BoosterClassifier:
    """A LightGBM binary booster with the face the scorer and explainer use.

    `predict_proba` is what `LGBMClassifier.predict_proba` computes (the booster's probability
    and its complement), so a model read from `estimator.txt` scores as the one trained.
    """

    def __init__(self, booster: Any, n_jobs: int = 1) -> None:
        self.booster_ = booster
        self.n_jobs = n_jobs

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The one setting: threads per prediction."""
        return {"n_jobs": self.n_jobs}

    def set_params(self, **params: Any) -> BoosterClassifier:
        """Set `n_jobs`."""
        self.n_jobs = int(params.get("n_jobs", self.n_jobs))
        return self

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Probabilities of class 0 and class 1, one row per record."""
        positive = self.booster_.predict(features, num_threads=self.n_jobs)
        return np.column_stack([1.0 - positive, positive])


STEP_TYPES: dict[str, type] = {
    "raw_records": RawRecords,
    "telco_features": TelcoFeatures,
    "encode": FeatureEncoder,
}


def _describe(step: Any) -> dict[str, Any]:
    """A fitted feature step as data."""
    if isinstance(step, RawRecords):
        described: dict[str, Any] = {
            "type": "raw_records",
            "numeric": list(step.numeric),
            "categorical": list(step.categorical),
        }
        if step.dates:
            described["dates"] = list(step.dates)
        return described
    if isinstance(step, TelcoFeatures):
        return {
            "type": "telco_features",
            "services": list(step.services),
            "charges": bool(step.charges),
            "tenure": bool(step.tenure),
        }
    if isinstance(step, FeatureEncoder):
        numbers, one_hot = step.numbers_, step.one_hot_
        return {
            "type": "encode",
            "numeric": list(step.numeric),
            "categorical": list(step.categorical),
            "min_frequency": int(step.min_frequency),
            "numbers": {
                "columns": list(numbers.feature_names_in_),
                "median": numbers.median_.tolist(),
                "mean": numbers.mean_.tolist(),
                "scale": numbers.scale_.tolist(),
            },
            "categories": {
                "columns": list(one_hot.feature_names_in_),
                "frequent": [
                    _categories(column, values)
                    for column, values in zip(
                        one_hot.feature_names_in_, one_hot.categories_, strict=True
                    )
                ],
                "rare": [
                    _categories(column, values)
                    for column, values in zip(
                        one_hot.feature_names_in_, one_hot.infrequent_categories_, strict=True
                    )
                ],
            },
        }
    raise ModelFormatError(
        f"a feature step of type {type(step).__name__} has no description in model format "
        f"{FORMAT_VERSION}"
    )


def _build(description: Mapping[str, Any]) -> Any:
    """The fitted feature step a description stands for."""
    kind = description.get("type")
    if kind == "raw_records":
        return RawRecords(
            description["numeric"], description["categorical"], description.get("dates", [])
        )
    if kind == "telco_features":
        return TelcoFeatures(description["services"], description["charges"], description["tenure"])
    if kind == "encode":
        encoder = FeatureEncoder(
            description["numeric"], description["categorical"], description["min_frequency"]
        )
        numbers, categories = description["numbers"], description["categories"]
        scaler = MedianScaler()
        scaler.feature_names_in_ = np.array(numbers["columns"], dtype=object)
        scaler.median_ = np.array(numbers["median"], dtype="float64")
        scaler.mean_ = np.array(numbers["mean"], dtype="float64")
        scaler.scale_ = np.array(numbers["scale"], dtype="float64")
        one_hot = OneHotCategories(description["min_frequency"])
        one_hot.feature_names_in_ = np.array(categories["columns"], dtype=object)
        one_hot.categories_ = [list(c) for c in categories["frequent"]]
        one_hot.infrequent_categories_ = [list(c) for c in categories["rare"]]
        encoder.numbers_, encoder.one_hot_ = scaler, one_hot
        return encoder
    raise ModelFormatError(f"unknown feature step {kind!r} in the model manifest")


def _categories(column: str, values: Sequence[Any]) -> list[Any]:
    """Categories as JSON values (text and booleans; numpy scalars as Python ones).

    Raises:
        ModelFormatError: a category is neither text, a boolean nor a number (a date, say).

    """
    plain = [value.item() if isinstance(value, np.generic) else value for value in values]
    odd = [value for value in plain if not isinstance(value, str | bool | int | float)]
    if odd:
        raise ModelFormatError(
            f"column {column!r} holds {type(odd[0]).__name__} values ({odd[0]!r}), which a "
            "served request cannot carry: give them as text or numbers in the source, or leave "
            "the column out (CHURN_EXCLUDE_COLUMNS)"
        )
    return plain


def _save_estimator(estimator: Any, folder: Path) -> dict[str, Any]:
    """Write the estimator in its library's own format; what the manifest says of it."""
    booster = getattr(estimator, "booster_", None)
    if booster is not None:
        (folder / "estimator.txt").write_text(booster.model_to_string())
        return {"library": "lightgbm", "file": "estimator.txt"}
    from sklearn.linear_model import LogisticRegression

    if type(estimator) is LogisticRegression:
        (folder / "estimator.json").write_text(
            json.dumps(
                {
                    "classes": estimator.classes_.tolist(),
                    "coef": estimator.coef_.tolist(),
                    "intercept": estimator.intercept_.tolist(),
                    "n_features_in": int(estimator.n_features_in_),
                    "params": {
                        k: v
                        for k, v in estimator.get_params().items()
                        if isinstance(v, str | int | float | bool | type(None))
                    },
                }
            )
        )
        return {"library": "scikit-learn", "class": "LogisticRegression", "file": "estimator.json"}
    import joblib

    joblib.dump(estimator, folder / "estimator.joblib")
    return {
        "library": "scikit-learn",
        "class": type(estimator).__name__,
        "file": "estimator.joblib",
    }


def _load_estimator(description: Mapping[str, Any], folder: Path) -> Any:
    path = folder / str(description["file"])
    if not path.exists():
        raise ModelFormatError(f"the model folder {folder} lacks its estimator file {path.name}")
    if description["library"] == "lightgbm":
        import lightgbm

        return BoosterClassifier(lightgbm.Booster(model_str=path.read_text()))
    if path.suffix == ".json":
        from sklearn.linear_model import LogisticRegression

        stored = json.loads(path.read_text())
        model = LogisticRegression(**stored["params"])
        model.classes_ = np.array(stored["classes"])
        model.coef_ = np.array(stored["coef"], dtype="float64")
        model.intercept_ = np.array(stored["intercept"], dtype="float64")
        model.n_features_in_ = stored["n_features_in"]
        model.n_iter_ = np.array([0])
        return model
    import joblib

    return joblib.load(path)


def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("scikit-learn", "lightgbm", "numpy", "pandas"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def _warn_on_other_libraries(recorded: Mapping[str, str], path: Path) -> None:
    """Log libraries whose version differs from training's (the scores may differ slightly)."""
    now = _library_versions()
    differ = [
        f"{name} {was} (now {now[name]})"
        for name, was in recorded.items()
        if name in now and now[name] != was
    ]
    if differ:
        logger.info("%s was written with %s", path, ", ".join(differ))


def _plain(value: Any) -> Any:
    """Numpy scalars and arrays as JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _transforms(pipeline: Any) -> list[Any]:
    """The transforming steps of a (nested) pipeline, in order, without the final estimator."""
    steps = []
    for _, step in pipeline.steps[:-1]:
        steps += [*_transforms(step), step.steps[-1][1]] if hasattr(step, "steps") else [step]
    return steps
