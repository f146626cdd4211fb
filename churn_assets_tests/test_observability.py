"""Prometheus and Grafana against the real thing: `promtool`, a real Prometheus scraping real
`bentoml serve` processes, the alert rules firing, and every dashboard query answered.

Prometheus comes from Debian's package (`.ci/system-services` installs it); without it these
tests skip, saying so.
"""

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance, materialize

from churn.model.schema import ModelSchema
from churn.published import publish
from churn_assets.monitoring.assets import MONITORING_ASSETS
from churn_assets.resources import ComputeResource, MlflowResource, PlatformHome
from churn_assets_tests.conftest import REPOSITORY, customer, eventually, today, trained_home
from churn_assets_tests.processes import (
    PROMETHEUS_DIR,
    pipeline_metrics,
    prometheus,
    query,
    serve,
    wait_for,
)
from serving.traffic import perturb, population, send_traffic, served_model

# Starts servers or processes, or runs the whole pipeline: not in `make check`.
pytestmark = pytest.mark.servers


DASHBOARD = REPOSITORY / "deploy" / "grafana" / "dashboards" / "churn.json"
# Grafana's variables, as the dashboard would resolve them over a short test.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "10m", "$deployment": ".*"}


@pytest.fixture(scope="module")
def production_home(tmp_path_factory: pytest.TempPathFactory) -> PlatformHome:
    """A home with one trained version in production, shared by the tests that only read it.

    With decision costs (numbers: a retention offer 20, a churner lost 200), so that the savings
    panel has its hold-out, estimated and realised figures to show.
    """
    return trained_home(tmp_path_factory.mktemp("observability"), cost_fp="20", cost_fn="200")


requires_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="Prometheus is not installed (Debian package `prometheus`; .ci/system-services "
    "installs it)",
)


@requires_prometheus
def test_promtool_accepts_the_configuration_and_the_alert_rules() -> None:
    for command in (["check", "rules", "alerts.yml"], ["check", "config", "prometheus.yml"]):
        result = subprocess.run(
            ["promtool", *command], cwd=PROMETHEUS_DIR, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    names = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert names == {
        "ChurnPredictLatencyP99High",
        "ChurnPredictErrorRateHigh",
        "ChurnNoModelLoaded",
        "ChurnServiceDown",
        "ChurnFeatureDrift",
        "ChurnLiveF1Degraded",
        "ChurnPipelineStale",
        "ChurnModelStale",
        "ChurnLogRecordsDropped",
        "ChurnRegistryUnreachable",
    }
    # Every rule says who it is for: Alertmanager routes by these labels.
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
            assert rule["labels"]["team"] in {"ml-platform", "data-science"}, rule["alert"]


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL with Grafana's variables resolved) for every panel target."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expression = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expression = expression.replace(variable, value)
            queries.append((panel["title"], expression))
    return queries


@requires_prometheus
def test_prometheus_scrapes_the_services_fires_the_alerts_and_answers_every_panel(
    production_home: PlatformHome, tmp_path: Path
) -> None:
    home = production_home
    with (
        serve(home) as production,
        # A staging service whose registry has no model at all.
        serve(
            PlatformHome(path=str(tmp_path / "empty-home")),
            ready=False,
            CHURN_SERVING_ALIAS="staging",
        ) as empty,
        pipeline_metrics(home) as pipeline,
        prometheus(
            {
                "production": production.url.removeprefix("http://"),
                "staging": empty.url.removeprefix("http://"),
            },
            tmp_path / "prometheus",
            pipeline=pipeline,
        ) as url,
    ):
        # Drifted traffic, and requests the contract refuses. A counter's rate counts increases
        # between scrapes, so the refused requests are spread.
        def refuse(times: int) -> None:
            for _ in range(times):
                answer = production.request("/predict", {"records": [customer(tenure=-1)]})
                assert answer.status == 400
                time.sleep(0.2)

        refuse(1)
        time.sleep(2)
        card = served_model(production.url)
        schema = ModelSchema.model_validate(card["input_schema"])
        reference = home.snapshots().load(card["data_version"])
        drifted = perturb(
            reference, schema, {"monthly_charges": 1.3}, {"contract": ("Month-to-month", 0.5)}
        )
        summary = send_traffic(
            production.url,
            rate=40,
            duration=0,
            requests=240,
            customers=population(drifted, schema),
        )
        assert summary.failed == 0 and summary.records == 240
        refuse(20)
        # Outcomes that contradict every label served: live F1 falls to 0.
        records = population(reference, schema, rows=60, seed=3).records
        for start in (0, 30):
            answer = production.request("/predict", {"records": records[start : start + 30]})
            assert answer.status == 200
            outcomes = [
                {
                    "customer_id": p["customer_id"],
                    "churned": not p["churn_label"],
                    "prediction_id": p["prediction_id"],
                }
                for p in answer.body
            ]
            assert production.request("/feedback", {"outcomes": outcomes}).status == 200
        eventually(production.logs_written)

        # The monitoring assets publish drift and live F1; the production service exposes them.
        monitored = materialize(
            MONITORING_ASSETS,
            partition_key=today(),
            resources={
                "home": home,
                "mlflow_tracking": MlflowResource.from_env(home),
                "compute": ComputeResource(),
            },
            run_config={"ops": {"drift_report": {"config": {"min_records": 100}}}},
            instance=DagsterInstance.ephemeral(),
        )
        assert monitored.success
        assert monitored.output_for_node("drift_report").detected
        assert monitored.output_for_node("live_performance").degraded

        firing = 'ALERTS{alertstate="firing", alertname="%s"}'
        errors = wait_for(url, firing % "ChurnPredictErrorRateHigh")
        assert [a["metric"]["deployment"] for a in errors] == ["production"]
        drift = wait_for(url, firing % "ChurnFeatureDrift")
        assert "monthly_charges" in {a["metric"]["feature"] for a in drift}
        degraded = wait_for(url, firing % "ChurnLiveF1Degraded")
        assert [a["metric"]["deployment"] for a in degraded] == ["production"]
        empty_alerts = wait_for(url, firing % "ChurnNoModelLoaded")
        assert [a["metric"]["deployment"] for a in empty_alerts] == ["staging"]
        assert query(url, firing % "ChurnServiceDown") == []

        # Latency and throughput as scraped: p99 of /predict within the 200 ms budget.
        [p99] = query(
            url,
            "histogram_quantile(0.99, sum by (le) (rate(bentoml_service_request_duration_seconds_"
            'bucket{endpoint="/predict", deployment="production"}[1m])))',
        )
        assert 0 < float(p99["value"][1]) < 0.2

        # The pipeline's freshness, as the Dagster sensor publishes it, reaches the Pipeline row.
        now = time.time()
        publish(
            home.monitoring_dir,
            "pipeline",
            {
                "jobs": {"churn_pipeline": {"last_success": now - 60, "last_failure": now - 600}},
                "schedule": "daily_churn_pipeline",
                "schedule_running": True,
            },
        )
        wait_for(url, "churn_pipeline_schedule_running == 1", timeout=30)
        assert query(url, firing % "ChurnPipelineStale") == []
        assert query(url, firing % "ChurnModelStale") == []

        # Every dashboard panel's query names metrics Prometheus has, and returns data (the
        # Alertmanager panel's in test_alerting.py, where an Alertmanager runs).
        names = set(query_names(url))
        for title, expression in dashboard_queries():
            if "alertmanager_" in expression:
                continue
            used = set(re.findall(r"(?<![\"\w])(?:bentoml|churn)_[a-z0-9_]+", expression))
            assert used <= names, f"panel {title!r} uses unknown metrics {used - names}"
            assert wait_for(url, expression, timeout=30), f"panel {title!r} shows no data"


def query_names(url: str) -> list[str]:
    with urllib.request.urlopen(f"{url}/api/v1/label/__name__/values", timeout=10) as response:
        names: list[str] = json.load(response)["data"]
    return names


def test_every_panel_the_brief_asks_for_is_on_the_dashboard() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    text = json.dumps([panel["targets"] for panel in dashboard["panels"]])
    for needed in (
        "histogram_quantile(0.5,",
        "histogram_quantile(0.95,",
        "histogram_quantile(0.99,",
        "bentoml_service_request_total",
        'http_response_code!~\\"2..\\"',
        "churn_predictions_total",
        "churn_prediction_probability_bucket",
        "churn_served_model_version",
        "churn_drift_psi",
        'churn_live_metric{metric=\\"f1\\"',
        'churn_estimated_metric{metric=\\"f1\\"',
        'churn_evaluation_metric{metric=\\"savings\\"',
        "ALERTS",
        "alertmanager_alerts",
        "churn_pipeline_last_success_timestamp_seconds",
        "churn_served_model_promoted_timestamp_seconds",
        "churn_pipeline_schedule_running",
    ):
        assert needed in text, needed
    rows = [panel["title"] for panel in dashboard["panels"] if panel["type"] == "row"]
    assert rows == ["Pipeline"]
    provisioned = yaml.safe_load(
        (DASHBOARD.parents[1] / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )
    [source] = provisioned["datasources"]
    assert {panel["datasource"]["uid"] for panel in dashboard["panels"]} == {source["uid"]}
