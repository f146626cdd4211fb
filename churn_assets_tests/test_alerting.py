"""Alerts reach people: Prometheus and the Dagster sensors -> Alertmanager -> e-mail and webhook.

Everything is real and on loopback: Debian's Prometheus and Alertmanager with the repository's
rules and routing (only addresses and timings changed), a `bentoml serve` without a model, an SMTP
server (aiosmtpd) and a webhook receiver that record what arrives, and real Dagster runs whose
failure the sensors post. Without Prometheus or Alertmanager these tests skip, saying so.
"""

from __future__ import annotations

import email
import email.message
import http.server
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import (
    DagsterEventType,
    DagsterInstance,
    ExecuteInProcessResult,
    build_run_status_sensor_context,
)

from churn.published import publish
from churn_assets.alerting import (
    PIPELINE_FAILED,
    PROMOTION_BLOCKED,
    Alert,
    Alertmanager,
    AlertmanagerError,
    AlertSettings,
    post_or_log,
)
from churn_assets.resources import PlatformHome
from churn_assets_tests.conftest import (
    QUICK_TRAINING,
    REPOSITORY,
    eventually,
    free_port,
    set_environment,
)
from churn_assets_tests.processes import (
    answers,
    pipeline_metrics,
    prometheus,
    query,
    serve,
    wait_for,
)

# Starts servers or processes, or runs the whole pipeline: not in `make check`.
pytestmark = pytest.mark.servers

ALERTMANAGER_DIR = REPOSITORY / "deploy" / "alertmanager"
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
ML_PLATFORM, DATA_SCIENCE = "ml-platform@churn.test", "data-science@churn.test"

requires_alerting = pytest.mark.skipif(
    ALERTMANAGER is None or shutil.which("amtool") is None or shutil.which("prometheus") is None,
    reason="Prometheus or Alertmanager is not installed (Debian packages `prometheus` and "
    "`prometheus-alertmanager`; .ci/system-services installs them)",
)


def render(folder: Path, **settings: str) -> Path:
    """The repository's Alertmanager configuration, rendered by its own script."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "alertmanager.yml"
    subprocess.run(
        ["sh", str(ALERTMANAGER_DIR / "render.sh")],
        env={**os.environ, "ALERTMANAGER_CONFIG": str(config), **settings},
        check=True,
    )
    return config


@requires_alerting
def test_the_rendered_configuration_passes_amtool_and_keeps_secrets_literal(
    tmp_path: Path,
) -> None:
    secret = 'p|a&s\\s"w0rd'
    config = render(tmp_path, ALERT_SMTP_PASSWORD=secret, ALERT_SMTP_SMARTHOST="mail:587")
    checked = subprocess.run(
        ["amtool", "check-config", str(config)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    loaded = yaml.safe_load(config.read_text())
    assert loaded["global"]["smtp_auth_password"] == secret
    assert loaded["global"]["smtp_smarthost"] == "mail:587"
    assert {receiver["name"] for receiver in loaded["receivers"]} == {"ml-platform", "data-science"}
    for receiver in loaded["receivers"]:
        assert receiver["email_configs"][0]["send_resolved"] is True
        assert receiver["webhook_configs"][0]["send_resolved"] is True
    settings = [line for line in config.read_text().splitlines() if not line.startswith("#")]
    assert not [line for line in settings if "${" in line]
    template = (ALERTMANAGER_DIR / "alertmanager.yml.template").read_text()
    assert 'smtp_auth_password: "${ALERT_SMTP_PASSWORD}"' in template  # no secret in the file


@dataclass
class Inbox:
    """What the SMTP server and the webhook receiver were sent."""

    emails: list[tuple[list[str], email.message.Message]] = field(default_factory=list)
    webhooks: list[dict[str, Any]] = field(default_factory=list)

    def mails(self, alertname: str, status: str = "FIRING") -> list[tuple[list[str], str]]:
        """(recipients, body) of the e-mails about `alertname` in `status` (FIRING, RESOLVED)."""
        found = []
        for recipients, message in list(self.emails):
            subject = str(message["Subject"])
            if alertname in subject and subject.startswith(f"[{status}"):
                found.append((recipients, _body(message)))
        return found

    def hooks(self, alertname: str, status: str = "firing") -> list[dict[str, Any]]:
        """The webhook notifications of groups of `alertname` with `status`."""
        return [
            hook
            for hook in list(self.webhooks)
            if hook["groupLabels"].get("alertname") == alertname and hook["status"] == status
        ]


def _body(message: email.message.Message) -> str:
    parts = message.walk() if message.is_multipart() else [message]
    texts = []
    for part in parts:
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            texts.append(payload.decode(errors="replace"))
    return "\n".join(texts)


@contextmanager
def inbox() -> Iterator[tuple[Inbox, int, str]]:
    """An SMTP server and a webhook receiver on loopback: (inbox, SMTP port, webhook URL)."""
    from aiosmtpd.controller import Controller

    received = Inbox()

    class Mailbox:
        async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
            received.emails.append(
                (list(envelope.rcpt_tos), email.message_from_bytes(envelope.content))
            )
            return "250 OK"

    class Webhook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.webhooks.append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    smtp_port = free_port()
    controller = Controller(Mailbox(), hostname="127.0.0.1", port=smtp_port)
    controller.start()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Webhook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield received, smtp_port, f"http://127.0.0.1:{server.server_address[1]}/alerts"
    finally:
        server.shutdown()
        server.server_close()
        controller.stop()


@contextmanager
def alertmanager(config: Path, folder: Path) -> Iterator[str]:
    """Debian's Alertmanager with `config`, alone (no cluster), on a free port: its URL."""
    assert ALERTMANAGER is not None
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(folder / "alertmanager.log", "wb") as log:
        process = subprocess.Popen(
            [
                ALERTMANAGER,
                f"--config.file={config}",
                f"--storage.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        eventually(
            lambda: answers(f"{url}/-/ready"),
            60,
            lambda: (folder / "alertmanager.log").read_text(),
        )
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def notify_timings(config: Path) -> None:
    """The test copy's only change: groups wait 1 s, are re-sent after 2 s, repeat after 1 h."""
    loaded = yaml.safe_load(config.read_text())
    route = loaded["route"]
    route.update(group_wait="1s", group_interval="2s", repeat_interval="1h")
    for child in route["routes"]:
        child["repeat_interval"] = "1h"
    config.write_text(yaml.safe_dump(loaded))


def run_job(name: str, run_config: dict[str, Any], instance: DagsterInstance) -> Any:
    from churn_assets.definitions import defs

    result: ExecuteInProcessResult = defs.resolve_job_def(name).execute_in_process(
        run_config=run_config, instance=instance, raise_on_error=False
    )
    return result


def sensor_on(sensor: Any, instance: DagsterInstance, run_id: str, event: DagsterEventType) -> None:
    """Evaluate a run-status sensor on a real run's status event, as the daemon does."""
    run = instance.get_run_by_id(run_id)
    assert run is not None
    [record] = instance.all_logs(run_id, of_type=event)
    assert record.dagster_event is not None
    context = build_run_status_sensor_context(
        sensor_name=sensor.name,
        dagster_event=record.dagster_event,
        dagster_instance=instance,
        dagster_run=run,
    )
    sensor(context.for_run_failure() if event == DagsterEventType.RUN_FAILURE else context)


@requires_alerting
def test_alerts_arrive_once_by_mail_and_webhook_with_their_reason_and_resolve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from churn_assets.sensors import pipeline_failure_alert, pipeline_recovery

    home = PlatformHome(path=str(tmp_path / "home"))  # no model: ChurnNoModelLoaded
    with inbox() as (received, smtp_port, webhook_url):
        config = render(
            tmp_path / "alertmanager",
            ALERT_SMTP_SMARTHOST=f"127.0.0.1:{smtp_port}",
            ALERT_SMTP_REQUIRE_TLS="false",
            ALERT_EMAIL_ML_PLATFORM=ML_PLATFORM,
            ALERT_EMAIL_DATA_SCIENCE=DATA_SCIENCE,
            ALERT_WEBHOOK_URL=webhook_url,
        )
        notify_timings(config)
        with (
            alertmanager(config, tmp_path / "alertmanager") as manager_url,
            serve(home, ready=False) as production,
            pipeline_metrics(home) as pipeline,
            prometheus(
                {
                    "production": production.url.removeprefix("http://"),
                    "staging": f"127.0.0.1:{free_port()}",  # nothing listens: down
                },
                tmp_path / "prometheus",
                alertmanager=manager_url.removeprefix("http://"),
                pipeline=pipeline,
            ) as prometheus_url,
        ):
            manager = Alertmanager(manager_url)
            set_environment(
                monkeypatch,
                CHURN_ALERTMANAGER_URL=manager_url,
                DAGSTER_UI_URL="http://dagster.test:3000",
            )

            def both(alertname: str, status: str = "firing") -> bool:
                return bool(received.mails(alertname, status.upper())) and bool(
                    received.hooks(alertname, status)
                )

            def seen() -> str:
                return "mails: " + "; ".join(str(m["Subject"]) for _, m in received.emails)

            # 1. A serving alert: the service has no model. By e-mail to its team, and webhook.
            eventually(lambda: both("ChurnNoModelLoaded"), 90, seen)
            [(recipients, body)] = received.mails("ChurnNoModelLoaded")
            assert recipients == [ML_PLATFORM]
            assert "production serves no model" in body

            # 2. Inhibition: the staging service is down, which explains its error rate.
            eventually(lambda: both("ChurnServiceDown"), 60, seen)
            explained = Alert(
                "ChurnPredictErrorRateHigh",
                {"deployment": "staging", "severity": "critical", "team": "ml-platform"},
                {"summary": "More than 1 % of /predict requests fail on staging"},
            )
            manager.post([explained])
            eventually(lambda: _inhibited(manager_url, "ChurnPredictErrorRateHigh"), 30)

            # 3. A stale pipeline: no success for 27 h while the schedule is on.
            now = time.time()
            publish(
                home.monitoring_dir,
                "pipeline",
                {
                    "jobs": {
                        "churn_pipeline": {"last_success": now - 27 * 3600, "last_failure": 0}
                    },
                    "schedule": "daily_churn_pipeline",
                    "schedule_running": True,
                },
            )
            eventually(lambda: both("ChurnPipelineStale"), 60, seen)
            [(recipients, body)] = received.mails("ChurnPipelineStale")
            assert recipients == [ML_PLATFORM] and "has not succeeded for" in body

            # 4. Drift goes to the data scientists, and resolves with a report without drift.
            drift = {"threshold": 0.2, "production_version": "1", "current_rows": 600}
            publish(
                home.monitoring_dir,
                "drift",
                {**drift, "psi": {"monthly_charges": 2.4, "tenure": 0.01}, "drifted": ["x"]},
            )
            eventually(lambda: both("ChurnFeatureDrift"), 60, seen)
            [(recipients, body)] = received.mails("ChurnFeatureDrift")
            assert recipients == [DATA_SCIENCE] and "monthly_charges" in body
            publish(
                home.monitoring_dir,
                "drift",
                {**drift, "psi": {"monthly_charges": 0.05, "tenure": 0.01}, "drifted": []},
            )
            eventually(lambda: both("ChurnFeatureDrift", "resolved"), 60, seen)

            # 5. A failed run, posted by the sensor with its step, reason and link; the next
            #    successful run of the same job resolves it.
            instance = DagsterInstance.ephemeral()
            broken = run_job(
                "ingest_and_validate",
                {"resources": {"dataset": {"config": {"source": str(tmp_path / "gone.csv")}}}},
                instance,
            )
            assert not broken.success
            sensor_on(pipeline_failure_alert, instance, broken.run_id, DagsterEventType.RUN_FAILURE)
            eventually(lambda: both(PIPELINE_FAILED), 30, seen)
            [(recipients, body)] = received.mails(PIPELINE_FAILED)
            link = f"http://dagster.test:3000/runs/{broken.run_id}"
            assert recipients == [ML_PLATFORM]
            assert link in body and "file not found" in body and "raw_customers" in body
            [hook] = received.hooks(PIPELINE_FAILED)
            [alert] = hook["alerts"]
            assert alert["labels"]["dagster_job"] == "ingest_and_validate"
            assert alert["annotations"]["run_url"] == link
            assert alert["annotations"]["step"] == "raw_customers"
            assert "file not found" in alert["annotations"]["description"]
            repaired = run_job(
                "ingest_and_validate",
                {"resources": {"dataset": {"config": {"synthetic_rows": 300}}}},
                instance,
            )
            assert repaired.success
            sensor_on(pipeline_recovery, instance, repaired.run_id, DagsterEventType.RUN_SUCCESS)
            eventually(lambda: both(PIPELINE_FAILED, "resolved"), 30, seen)
            assert manager.active(PIPELINE_FAILED) == []

            # 6. A promotion blocked by a quality gate: the gate, observed against required.
            blocked = run_job(
                "churn_pipeline",
                {
                    "resources": {
                        "dataset": {"config": {"synthetic_rows": 1_500}},
                        "gates": {"config": {"min_f1": 0.999}},
                    },
                    "ops": {
                        "candidate_models": {"config": QUICK_TRAINING},
                        "model_evaluation": {"config": {"latency_samples": 50}},
                    },
                },
                instance,
            )
            assert not blocked.success
            sensor_on(
                pipeline_failure_alert, instance, blocked.run_id, DagsterEventType.RUN_FAILURE
            )
            eventually(lambda: both(PROMOTION_BLOCKED), 30, seen)
            [(recipients, body)] = received.mails(PROMOTION_BLOCKED)
            assert recipients == [DATA_SCIENCE]
            assert f"http://dagster.test:3000/runs/{blocked.run_id}" in body
            assert "f1_gate: f1 = " in body and "required &gt;= 0.999" in body
            assert received.mails(PIPELINE_FAILED) and len(received.mails(PIPELINE_FAILED)) == 1

            # Alertmanager's own figures reach Prometheus (the dashboard's Alertmanager panel).
            assert wait_for(prometheus_url, 'alertmanager_alerts{state="active"} > 0', 30)
            assert query(prometheus_url, "alertmanager_notifications_total")

            # 7. One incident, one message: nothing changed in these groups, nothing was re-sent.
            time.sleep(5)  # more than two group intervals
            for alertname in ("ChurnNoModelLoaded", "ChurnServiceDown", "ChurnPipelineStale"):
                assert len(received.mails(alertname)) == 1, alertname
                assert len(received.hooks(alertname)) == 1, alertname
            assert received.mails("ChurnPredictErrorRateHigh") == []
            assert received.hooks("ChurnPredictErrorRateHigh") == []


def _inhibited(url: str, alertname: str) -> bool:
    import urllib.parse
    import urllib.request

    query_string = urllib.parse.urlencode({"filter": f'alertname="{alertname}"'})
    with urllib.request.urlopen(f"{url}/api/v2/alerts?{query_string}", timeout=5) as response:
        alerts = json.load(response)
    return bool(alerts) and all(alert["status"]["inhibitedBy"] for alert in alerts)


def test_pipeline_alerts_carry_their_run_and_are_not_posted_without_an_alertmanager() -> None:
    from churn_assets.alerting import pipeline_failed, promotion_blocked

    settings = AlertSettings.from_env({"DAGSTER_UI_URL": "http://ui:3000/"})
    assert settings.alertmanager is None
    failed = pipeline_failed("churn_pipeline", "r1", "raw_customers", "HTTP 404", settings)
    payload = failed.payload()
    assert payload["labels"] == {
        "alertname": PIPELINE_FAILED,
        "dagster_job": "churn_pipeline",
        "severity": "critical",
        "team": "ml-platform",
    }
    assert payload["generatorURL"] == "http://ui:3000/runs/r1"
    assert failed.ends_at is not None
    assert failed.ends_at - failed.starts_at == timedelta(hours=26)
    assert failed.resolved().ends_at is not None
    assert failed.resolved().ends_at <= datetime.now(UTC)  # type: ignore[operator]
    blocked = promotion_blocked("churn_pipeline", "r2", ["f1_gate: f1 = 0.61"], "4", settings)
    assert blocked.labels["team"] == "data-science"
    assert "Version 4 was not promoted" in blocked.annotations["summary"]
    assert post_or_log([failed], settings) == (
        "ChurnPipelineFailed: not posted (CHURN_ALERTMANAGER_URL is not set)"
    )
    unreachable = AlertSettings(alertmanager_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(AlertmanagerError, match="cannot reach Alertmanager"):
        post_or_log([failed], unreachable)


def test_the_freshness_sensor_publishes_each_jobs_last_success_and_failure(
    isolated_home: PlatformHome, tmp_path: Path
) -> None:
    from dagster import build_sensor_context

    from churn.published import read_published
    from churn_assets.definitions import defs

    # A persistent instance, as the daemon's: it has schedule storage.
    (tmp_path / "dagster").mkdir()
    instance = DagsterInstance.local_temp(str(tmp_path / "dagster"))
    failed = run_job(
        "ingest_and_validate",
        {"resources": {"dataset": {"config": {"source": "/nowhere/customers.csv"}}}},
        instance,
    )
    succeeded = run_job(
        "ingest_and_validate",
        {"resources": {"dataset": {"config": {"synthetic_rows": 300}}}},
        instance,
    )
    assert succeeded.success and not failed.success
    # Yesterday's logs compacted as the automation sensor does: an asset run, not the job's.
    from dagster import materialize

    from churn_assets.monitoring.compaction import compacted_logs

    compacted = materialize(
        [compacted_logs],
        partition_key="2026-12-01",
        resources={"home": isolated_home},
        instance=instance,
    )
    assert compacted.success and compacted.dagster_run.job_name != "compact_logs"
    sensor = next(s for s in defs.sensors or [] if s.name == "pipeline_freshness_sensor")
    result = sensor(build_sensor_context(instance=instance, resources={"home": isolated_home}))
    assert "schedule daily_churn_pipeline on" in str(result.skip_message)  # type: ignore[union-attr]
    figures = read_published(isolated_home.monitoring_dir)["pipeline"]
    jobs = figures["jobs"]
    ended = {
        run.run_id: record.end_time
        for record in instance.get_run_records()
        for run in [record.dagster_run]
    }
    assert jobs["ingest_and_validate"]["last_success"] == ended[succeeded.run_id]
    assert jobs["ingest_and_validate"]["last_failure"] == ended[failed.run_id]
    assert jobs["churn_pipeline"] == {"last_success": 0.0, "last_failure": 0.0}
    latest = instance.get_latest_materialization_event(compacted_logs.key)
    assert latest is not None and jobs["compact_logs"]["last_success"] == latest.timestamp
    assert figures["schedule_running"] is True
