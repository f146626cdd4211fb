"""Monitoring assets: production inputs against the production model's data, and live F1.

Drift compares the inputs the production service scored with the data the production model was
trained on (or, with `population: batch`, a sample of the customers the nightly scores covered);
live performance scores the production model on the outcomes reported to it.

    production_model ─┬─> reference_customers ─┐
                      │   production_inputs ───┴─> drift_report  (feature_drift check)
                      └─> live_performance                       (F1 degradation check)

`production_inputs`, `drift_report` and `live_performance` have one partition per UTC day
(`MONITORING_DAYS`), today's included: a day's partition measures the window that ends with the
day (the last 24 hours of traffic by default), or now while the day is running. The monitoring
sensor materializes today's as the service logs new traffic; a backfill measures past days, each
in its own partition, from the logs kept. The drift sensor reads their metadata and asks for a
retraining run when drift or degradation is found in today's or yesterday's.
"""

from churn_assets.monitoring.drift import drift_report
from churn_assets.monitoring.inputs import production_inputs, reference_customers
from churn_assets.monitoring.performance import live_performance

MONITORING_ASSETS = [reference_customers, production_inputs, drift_report, live_performance]
