"""Calibration of churn probabilities: a monotone map fitted on out-of-fold predictions.

A model can rank customers well and still say 0.30 where three in twenty churn. The threshold,
the probability RMSE gate, the savings and the live estimates before outcomes all read the
probabilities as they are, so training checks, on the out-of-fold predictions of the selected
trial, whether a calibration map makes them truer:

- `sigmoid`: Platt scaling, a logistic regression on the logit of the probability;
- `isotonic`: the best non-decreasing step map (kept as its breakpoints, interpolated).

Each is judged by cross-fitting: fitted on four fifths of the out-of-fold predictions and
applied to the fifth, so the Brier score it is judged by is out of sample. The better one is
kept when it lowers the Brier score by at least `MIN_GAIN` (relative); it is then refitted on
all out-of-fold predictions and shipped with the model, which applies it after the estimator.

This module is part of the model package (`churn.model`): it imports nothing else of the
project, and the map is stored as numbers in the model's manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# The least relative improvement of the cross-fitted Brier score that earns a calibration map.
MIN_GAIN = 0.01
_EPSILON = 1e-6


@dataclass(frozen=True)
class Calibration:
    """A monotone map of raw churn probabilities to calibrated ones."""

    method: str  # "sigmoid" or "isotonic"
    slope: float = 1.0
    intercept: float = 0.0
    breakpoints: tuple[float, ...] = ()
    values: tuple[float, ...] = ()

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        """The calibrated probabilities."""
        p = np.asarray(probabilities, dtype=float)
        if self.method == "isotonic":
            return np.asarray(np.interp(p, self.breakpoints, self.values))
        logit = np.log(np.clip(p, _EPSILON, 1 - _EPSILON) / np.clip(1 - p, _EPSILON, 1))
        return np.asarray(1.0 / (1.0 + np.exp(-(self.slope * logit + self.intercept))))

    def describe(self) -> dict[str, Any]:
        """The map as JSON-ready data (for the model's manifest)."""
        if self.method == "isotonic":
            return {
                "method": "isotonic",
                "breakpoints": list(self.breakpoints),
                "values": list(self.values),
            }
        return {"method": "sigmoid", "slope": self.slope, "intercept": self.intercept}

    @classmethod
    def from_description(cls, description: dict[str, Any]) -> Calibration:
        """The map `describe` wrote."""
        if description["method"] == "isotonic":
            return cls(
                "isotonic",
                breakpoints=tuple(float(x) for x in description["breakpoints"]),
                values=tuple(float(y) for y in description["values"]),
            )
        return cls(
            "sigmoid", slope=float(description["slope"]), intercept=float(description["intercept"])
        )


def fit_calibration(method: str, labels: np.ndarray, probabilities: np.ndarray) -> Calibration:
    """The `method` map fitted to outcomes `labels` of `probabilities`."""
    p = np.asarray(probabilities, dtype=float)
    y = np.asarray(labels, dtype=int)
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        fitted = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
        return Calibration(
            "isotonic",
            breakpoints=tuple(float(x) for x in fitted.X_thresholds_),
            values=tuple(float(v) for v in fitted.y_thresholds_),
        )
    if method == "sigmoid":
        from sklearn.linear_model import LogisticRegression

        logit = np.log(np.clip(p, _EPSILON, 1 - _EPSILON) / np.clip(1 - p, _EPSILON, 1))
        fitted = LogisticRegression(C=1e6, max_iter=1_000).fit(logit.reshape(-1, 1), y)
        return Calibration(
            "sigmoid", slope=float(fitted.coef_[0, 0]), intercept=float(fitted.intercept_[0])
        )
    raise ValueError(f"unknown calibration method {method!r}: sigmoid or isotonic")


@dataclass(frozen=True)
class CalibrationChoice:
    """What the out-of-fold check found, and the map kept (None: the raw probabilities)."""

    calibration: Calibration | None
    brier_raw: float
    brier: dict[str, float] = field(default_factory=dict)  # method -> cross-fitted Brier score
    # The out-of-fold probabilities as the shipped model would give them (cross-fitted when a
    # map is kept): the threshold is chosen on these.
    probabilities: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)

    @property
    def method(self) -> str:
        """The map kept, or `none`."""
        return self.calibration.method if self.calibration else "none"


def choose_calibration(
    labels: np.ndarray, probabilities: np.ndarray, folds: int = 5, seed: int = 0
) -> CalibrationChoice:
    """Cross-fit each map on the out-of-fold predictions; keep the better one if it pays."""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(labels, dtype=int)
    p = np.asarray(probabilities, dtype=float)
    raw = float(np.mean((p - y) ** 2))
    if min(np.bincount(y, minlength=2)) < folds:
        return CalibrationChoice(None, raw, {}, p)
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    crossfitted: dict[str, np.ndarray] = {}
    for method in ("sigmoid", "isotonic"):
        calibrated = np.empty_like(p)
        for fit, held in splitter.split(p, y):
            calibrated[held] = fit_calibration(method, y[fit], p[fit]).apply(p[held])
        crossfitted[method] = calibrated
    scores = {method: float(np.mean((c - y) ** 2)) for method, c in crossfitted.items()}
    best = min(scores, key=scores.__getitem__)
    if scores[best] > raw * (1 - MIN_GAIN):
        return CalibrationChoice(None, raw, scores, p)
    return CalibrationChoice(fit_calibration(best, y, p), raw, scores, crossfitted[best])
