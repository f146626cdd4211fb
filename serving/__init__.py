"""The BentoML service that serves the promoted churn model (see the serving issue)."""
