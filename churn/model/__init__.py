"""The model as served: feature steps, estimator, threshold, schema, scoring and explanations.

The pipeline builds a `ChurnModel` and logs it (`pyfunc.log_model`); the prediction service,
nightly scoring and the champion/challenger comparison load it (`pyfunc.load_model`) and score
it through `scoring.Scorer`. The artifact format is in `artifact`.

This package imports nothing from the rest of the project (a test holds it): it travels inside
every logged model, so a registered version loads where the project is not installed.
"""
