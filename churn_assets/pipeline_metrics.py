"""The pipeline's own gauges for Prometheus: drift, live performance and freshness.

The monitoring assets and the freshness sensor run in Dagster (short-lived runs, the daemon) and
publish their latest figures to `$CHURN_HOME/monitoring/latest.json` (`churn.published`).
Prometheus scrapes long-lived processes, so this small one, started beside Dagster (`make up`,
compose's `pipeline-metrics`), exposes that file on `/metrics`, read at each scrape: the gauges
are the file, with nothing held in between. It belongs to the pipeline's deployment, not to the
prediction service: the staleness alert keeps its figures while the service is down, and a
service replica exports only what it serves.

    churn-pipeline-metrics --host 127.0.0.1 --port 9108

It imports neither Dagster nor the model's libraries: a start takes a fraction of a second.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from churn.home import Home
from churn.published import read_published
from churn.settings import SettingsError


class PublishedFigures(Collector):
    """The published figures as gauge families, read from the file at each collection."""

    def __init__(self, monitoring_dir: Path) -> None:
        self.monitoring_dir = monitoring_dir

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """One family per figure that has been published (none before the first publication)."""
        figures = read_published(self.monitoring_dir)
        yield from drift_families(figures.get("drift") or {})
        yield from performance_families(figures.get("performance") or {})
        yield from pipeline_families(figures.get("pipeline") or {})


def _gauge(name: str, text: str, value: float | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=value)


def drift_families(drift: dict[str, Any]) -> Iterator[GaugeMetricFamily]:
    """PSI per feature of the latest drift report, its threshold, count and time."""
    if not drift:
        return
    psi = GaugeMetricFamily(
        "churn_drift_psi",
        "PSI of a feature in the latest drift report (production inputs vs training data).",
        labels=["feature"],
    )
    for feature, value in (drift.get("psi") or {}).items():
        psi.add_metric([feature], float(value))
    yield psi
    yield _gauge(
        "churn_drift_psi_threshold",
        "PSI above which a feature counts as drifted.",
        float(drift["threshold"]),
    )
    yield _gauge(
        "churn_drifted_features",
        "Features drifted in the latest drift report.",
        float(len(drift.get("drifted", []))),
    )
    yield _gauge(
        "churn_drift_report_timestamp_seconds",
        "When the latest drift report was published.",
        float(drift["published_at"]),
    )


def performance_families(performance: dict[str, Any]) -> Iterator[GaugeMetricFamily]:
    """Live and hold-out figures of the production version, and the F1 drop against its margin."""
    if not performance:
        return
    for name, text, key in (
        (
            "churn_live_metric",
            "Live F1, recall or precision of the production version on reported outcomes.",
            "live",
        ),
        (
            "churn_evaluation_metric",
            "Hold-out F1, recall, precision or savings of the production version (its evaluation).",
            "evaluation",
        ),
        (
            "churn_estimated_metric",
            "F1, recall, precision or savings of the production version estimated from the "
            "probabilities of the day's predictions (before outcomes arrive).",
            "estimated",
        ),
    ):
        family = GaugeMetricFamily(name, text, labels=["metric"])
        for metric, value in (performance.get(key) or {}).items():
            family.add_metric([metric], float(value))
        yield family
    yield _gauge(
        "churn_live_f1_drop",
        "Hold-out F1 minus live F1, realised or else estimated (positive: worse in production).",
        float(performance["f1_drop"]),
    )
    yield _gauge(
        "churn_live_f1_margin",
        "Largest tolerated drop of live F1 under the hold-out F1.",
        float(performance["margin"]),
    )
    yield _gauge(
        "churn_live_labelled_predictions",
        "Outcomes the live figures are computed on.",
        float(performance["labelled"]),
    )


def pipeline_families(pipeline: dict[str, Any]) -> Iterator[GaugeMetricFamily]:
    """When each Dagster job last succeeded and failed, and whether the daily schedule is on."""
    if not pipeline:
        return
    success = GaugeMetricFamily(
        "churn_pipeline_last_success_timestamp_seconds",
        "When a run of a Dagster job last succeeded (0: never).",
        labels=["dagster_job"],
    )
    failure = GaugeMetricFamily(
        "churn_pipeline_last_failure_timestamp_seconds",
        "When a run of a Dagster job last failed (0: never).",
        labels=["dagster_job"],
    )
    for job, times in (pipeline.get("jobs") or {}).items():
        success.add_metric([job], float(times.get("last_success", 0.0)))
        failure.add_metric([job], float(times.get("last_failure", 0.0)))
    yield success
    yield failure
    yield _gauge(
        "churn_pipeline_schedule_running",
        "1 while the daily schedule of the pipeline is on, 0 when it was switched off.",
        float(bool(pipeline.get("schedule_running"))),
    )


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would fill the log: say nothing."""


def main(argv: list[str] | None = None) -> None:
    """Serve `/metrics` until SIGTERM or Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9108)
    arguments = parser.parse_args(argv)
    registry = CollectorRegistry(auto_describe=False)
    try:
        home = Home.from_env()
    except SettingsError as error:
        print(f"churn-pipeline-metrics: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    registry.register(PublishedFigures(home.monitoring_dir))
    try:
        server = make_server(
            arguments.host, arguments.port, make_wsgi_app(registry), handler_class=_QuietHandler
        )
    except OSError as error:
        print(
            f"churn-pipeline-metrics: {arguments.host}:{arguments.port}: {error}", file=sys.stderr
        )
        raise SystemExit(2) from None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"pipeline metrics on http://{arguments.host}:{arguments.port}/metrics", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
