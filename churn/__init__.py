"""The churn domain core: what the pipeline, the prediction service and the monitoring share.

Nothing here imports Dagster or BentoML; the Dagster code location (`churn_assets`) and the
BentoML service (`serving`) are adapters over it.
"""
