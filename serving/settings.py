"""The service's settings, from environment variables, so one Bento serves any deployment."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, Field

from churn.registry import PRODUCTION, STAGING

MIB = 1024**2

# Environment variable -> field.
SERVING_ENVIRONMENT = {
    "CHURN_SERVING_ALIAS": "alias",
    "CHURN_MODEL_REFRESH_SECONDS": "refresh_seconds",
    "CHURN_MAX_BODY_BYTES": "max_body_bytes",
    "CHURN_API_KEY": "api_key",
    "CHURN_LOG_FLUSH_SECONDS": "log_flush_seconds",
    "CHURN_SERVING_WORKERS": "workers",
    "CHURN_MODEL_MAX_AGE_DAYS": "model_max_age_days",
    "CHURN_LOG_MAX_BUFFER_RECORDS": "log_max_records",
    "CHURN_LOG_MAX_BUFFER_BYTES": "log_max_bytes",
    "CHURN_LOG_SPILL_DIR": "log_spill_dir",
}


class ServingSettings(BaseModel):
    """How one deployment of the churn service behaves."""

    alias: str = Field(
        default=PRODUCTION, description=f"Registry alias to serve: {PRODUCTION} or {STAGING}."
    )
    refresh_seconds: float = Field(
        default=10.0,
        gt=0,
        description="How often the alias is read; a moved alias is served within this plus the "
        "load time (about a second).",
    )
    max_body_bytes: int = Field(default=4 * MIB, gt=0, description="Largest request body.")
    api_key: str | None = Field(
        default=None, description="Key required on /predict, /feedback, /model; unset: open."
    )
    log_flush_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How often the prediction and feedback logs are written: what a crash can "
        "lose at most.",
    )
    log_max_records: int = Field(
        default=200_000,
        gt=0,
        description="Most log records a worker keeps in memory while its disk refuses writes.",
    )
    log_max_bytes: int = Field(
        default=64 * MIB, gt=0, description="...and most bytes (as Arrow) of them."
    )
    log_spill_dir: str | None = Field(
        default=None,
        description="A folder on another disk for the records beyond that bound (moved back "
        "once the log's disk takes writes); unset: the oldest are dropped and counted.",
    )
    workers: int = Field(default=1, ge=1, description="BentoML worker processes.")
    model_max_age_days: float = Field(
        default=30.0,
        gt=0,
        description="A served model promoted longer ago than this is stale (ChurnModelStale).",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServingSettings:
        """The settings the environment gives; unset variables keep the defaults."""
        environ = os.environ if environ is None else environ
        values = {
            field: environ[variable].strip()
            for variable, field in SERVING_ENVIRONMENT.items()
            if environ.get(variable, "").strip()
        }
        settings = cls.model_validate(values)
        if settings.alias not in (PRODUCTION, STAGING):
            raise ValueError(
                f"CHURN_SERVING_ALIAS={settings.alias!r}: serve {PRODUCTION!r} or {STAGING!r}"
            )
        return settings
