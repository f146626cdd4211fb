"""Alerts from the pipeline, posted to Alertmanager: the one routing point of every alert.

Prometheus sends the serving and monitoring alerts (its rules in `deploy/prometheus/alerts.yml`).
The pipeline's own events carry details no metric should: which run, which step or gate, why. So
the Dagster sensors post them to Alertmanager's API themselves (`churn_assets/sensors.py`), with
the same label scheme (`severity`, `team`), so that they share routing, grouping, silences and
history with the rest:

- `ChurnPipelineFailed`: a run of a pipeline job failed; the failed step and its error, and a
  link to the run in the Dagster UI.
- `ChurnPromotionBlocked`: a new version failed a quality gate, so production stayed where it
  was; which gates, observed against required, and the run link.

An alert posted through the API stays active until its `endsAt`: until the next successful run
of the same job resolves it (the sensor posts it again, ending now), or for
`CHURN_PIPELINE_ALERT_HOURS` (26 h) at most. A daily pipeline that does not run again within that
time is reported by `ChurnPipelineStale` instead.

`CHURN_ALERTMANAGER_URL` names the Alertmanager; unset (the embedded default), nothing is posted
and the sensors only log. `DAGSTER_UI_URL` is the base of the run links.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from churn.settings import settings_from

logger = logging.getLogger(__name__)

PIPELINE_FAILED = "ChurnPipelineFailed"
PROMOTION_BLOCKED = "ChurnPromotionBlocked"
DEFAULT_DAGSTER_UI_URL = "http://127.0.0.1:3000"
DEFAULT_ALERT_HOURS = 26.0


@dataclass(frozen=True)
class Alert:
    """One alert in Alertmanager's API form: identifying labels, annotations, and its times.

    Attributes:
        name: the alert's name (`alertname`).
        labels: the other identifying labels; the same labels name the same alert.
        annotations: what a person reads: `summary`, `description`, `run_url`, ...
        starts_at: when the problem began.
        ends_at: when the alert stops being active (now: it is resolved).
        generator_url: where to look (the run in the Dagster UI).

    """

    name: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str] = field(default_factory=dict)
    starts_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    ends_at: datetime | None = None
    generator_url: str = ""

    def payload(self) -> dict[str, object]:
        """The alert as `POST /api/v2/alerts` takes it."""
        body: dict[str, object] = {
            "labels": {"alertname": self.name, **self.labels},
            "annotations": dict(self.annotations),
            "startsAt": self.starts_at.isoformat(),
        }
        if self.ends_at is not None:
            body["endsAt"] = self.ends_at.isoformat()
        if self.generator_url:
            body["generatorURL"] = self.generator_url
        return body

    @classmethod
    def from_api(cls, body: Mapping[str, Any]) -> Alert:
        """An alert as `GET /api/v2/alerts` returns it."""
        labels = {str(k): str(v) for k, v in body["labels"].items() if k != "alertname"}
        return cls(
            name=str(body["labels"]["alertname"]),
            labels=labels,
            annotations={str(k): str(v) for k, v in (body.get("annotations") or {}).items()},
            starts_at=datetime.fromisoformat(str(body["startsAt"])),
            ends_at=datetime.fromisoformat(str(body["endsAt"])) if body.get("endsAt") else None,
            generator_url=str(body.get("generatorURL") or ""),
        )

    def resolved(self, at: datetime | None = None) -> Alert:
        """The same alert, ending now: Alertmanager sends its resolution."""
        return Alert(
            self.name,
            self.labels,
            self.annotations,
            self.starts_at,
            at or datetime.now(UTC),
            self.generator_url,
        )


class AlertmanagerError(RuntimeError):
    """Alertmanager could not be reached or refused the alerts."""


@dataclass(frozen=True)
class Alertmanager:
    """Alertmanager's HTTP API (v2).

    Args:
        url: the base URL, e.g. `http://alertmanager:9093`.
        timeout_seconds: connect and read timeout of one request.

    """

    url: str
    timeout_seconds: float = 10.0

    def post(self, alerts: Sequence[Alert]) -> None:
        """Create, refresh or resolve alerts (the labels say which alert).

        Raises:
            AlertmanagerError: Alertmanager is unreachable or refused them.

        """
        body = json.dumps([alert.payload() for alert in alerts]).encode()
        request = urllib.request.Request(
            f"{self.url.rstrip('/')}/api/v2/alerts",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                response.read()
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:500]
            raise AlertmanagerError(
                f"Alertmanager refused the alerts: {error.code} {detail}"
            ) from error
        except OSError as error:
            raise AlertmanagerError(f"cannot reach Alertmanager at {self.url}: {error}") from error

    def active(self, name: str | None = None) -> list[Alert]:
        """The alerts Alertmanager holds as active (not silenced or inhibited), maybe of a name.

        Raises:
            AlertmanagerError: Alertmanager is unreachable.

        """
        query = urllib.parse.urlencode(
            {"active": "true", "silenced": "false", "inhibited": "false"}
            | ({"filter": f'alertname="{name}"'} if name else {})
        )
        try:
            with urllib.request.urlopen(
                f"{self.url.rstrip('/')}/api/v2/alerts?{query}", timeout=self.timeout_seconds
            ) as response:
                return [Alert.from_api(body) for body in json.load(response)]
        except OSError as error:
            raise AlertmanagerError(f"cannot reach Alertmanager at {self.url}: {error}") from error


@dataclass(frozen=True)
class AlertSettings:
    """Where pipeline alerts go, and how long one stays active without news."""

    alertmanager_url: str | None
    dagster_ui_url: str = DEFAULT_DAGSTER_UI_URL
    hold: timedelta = timedelta(hours=DEFAULT_ALERT_HOURS)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AlertSettings:
        """`CHURN_ALERTMANAGER_URL`, `DAGSTER_UI_URL` and `CHURN_PIPELINE_ALERT_HOURS`."""
        pipeline = settings_from(environ).pipeline
        return cls(
            alertmanager_url=pipeline.alertmanager_url,
            dagster_ui_url=pipeline.dagster_ui_url,
            hold=timedelta(hours=pipeline.alert_hours),
        )

    def run_url(self, run_id: str) -> str:
        """The run's page in the Dagster UI."""
        return f"{self.dagster_ui_url.rstrip('/')}/runs/{run_id}"

    @property
    def alertmanager(self) -> Alertmanager | None:
        """The Alertmanager to post to, or None when none is configured."""
        return Alertmanager(self.alertmanager_url) if self.alertmanager_url else None


def pipeline_failed(
    job: str, run_id: str, step: str, reason: str, settings: AlertSettings
) -> Alert:
    """`ChurnPipelineFailed` for a failed run: the step, the error, and the run link."""
    now = datetime.now(UTC)
    url = settings.run_url(run_id)
    return Alert(
        PIPELINE_FAILED,
        {"dagster_job": job, "severity": "critical", "team": "ml-platform"},
        {
            "summary": f"Dagster job {job} failed at step {step}",
            "description": reason[:2000],
            "step": step,
            "run_id": run_id,
            "run_url": url,
        },
        starts_at=now,
        ends_at=now + settings.hold,
        generator_url=url,
    )


def promotion_blocked(
    job: str, run_id: str, gates: Sequence[str], version: str, settings: AlertSettings
) -> Alert:
    """`ChurnPromotionBlocked` for a version that failed its gates: which, and the run link."""
    now = datetime.now(UTC)
    url = settings.run_url(run_id)
    detail = "; ".join(gates)
    return Alert(
        PROMOTION_BLOCKED,
        {"dagster_job": job, "severity": "warning", "team": "data-science"},
        {
            "summary": f"Version {version or '?'} was not promoted: a quality gate failed",
            "description": f"{detail}. Production keeps its current version.",
            "gates": detail,
            "run_id": run_id,
            "run_url": url,
        },
        starts_at=now,
        ends_at=now + settings.hold,
        generator_url=url,
    )


def post_or_log(alerts: Sequence[Alert], settings: AlertSettings) -> str:
    """Post `alerts` where configured; say what was done (for the sensor's log).

    Raises:
        AlertmanagerError: Alertmanager is configured but unreachable (the sensor tick fails,
            visibly, and the next event tries again).

    """
    names = ", ".join(sorted({alert.name for alert in alerts}))
    manager = settings.alertmanager
    if manager is None:
        return f"{names}: not posted (CHURN_ALERTMANAGER_URL is not set)"
    manager.post(alerts)
    return f"{names}: posted to {manager.url}"
