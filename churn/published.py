"""The latest monitoring figures, published for Prometheus by the pipeline.

The monitoring assets run in Dagster runs, which come and go; Prometheus scrapes long-lived
processes. So each evaluated drift report, live-performance result and the freshness sensor's
times are written to `$CHURN_HOME/monitoring/latest.json` (one atomic replace), and
`churn-pipeline-metrics` (`churn_assets/pipeline_metrics.py`), started beside Dagster, exposes
them on its `/metrics` as `churn_drift_psi{feature}`, `churn_live_metric{metric}` and the rest,
read at each scrape. The figures survive restarts of either side.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from churn.files import write_atomically

LATEST = "latest.json"


def latest_path(monitoring_dir: Path) -> Path:
    """Where the latest figures are published."""
    return monitoring_dir / LATEST


def read_published(monitoring_dir: Path) -> dict[str, Any]:
    """The published figures (empty when nothing was published or the file is unreadable)."""
    try:
        figures: dict[str, Any] = json.loads(latest_path(monitoring_dir).read_text())
    except (OSError, ValueError):
        return {}
    return figures


def publish(monitoring_dir: Path, section: str, figures: Mapping[str, Any]) -> None:
    """Replace one section (`drift`, `performance`) of the published figures, stamped now."""
    monitoring_dir.mkdir(parents=True, exist_ok=True)
    current = read_published(monitoring_dir)
    current[section] = {**figures, "published_at": datetime.now(UTC).timestamp()}
    text = json.dumps(current, indent=2, sort_keys=True)
    write_atomically(latest_path(monitoring_dir), lambda path: Path(path).write_text(text))
