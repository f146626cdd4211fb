"""Dagster resources: which data set the platform works on, and where it keeps what it writes."""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from dagster import ConfigurableResource
from pydantic import Field

from churn_assets.home import platform_home
from churn_assets.ingestion.normalise import snake_case
from churn_assets.ingestion.versioning import SnapshotStore

SYNTHETIC = "synthetic"
GIB = 1024**3

# Environment variable -> resource field. Values are parsed by pydantic with the field's type.
DATASET_ENVIRONMENT = {
    "CHURN_SOURCE": "source",
    "CHURN_TARGET": "target",
    "CHURN_ID_COLUMN": "id_column",
    "CHURN_POSITIVE_LABEL": "positive_label",
    "CHURN_DATASET_NAME": "name",
    "CHURN_EXCLUDE_COLUMNS": "exclude_columns",
    "CHURN_SYNTHETIC_ROWS": "synthetic_rows",
    "CHURN_SYNTHETIC_SEED": "synthetic_seed",
    "CHURN_SYNTHETIC_MONTHLY_CHARGES_SHIFT": "synthetic_monthly_charges_shift",
    "CHURN_SYNTHETIC_MONTH_TO_MONTH_SHIFT": "synthetic_month_to_month_shift",
    "CHURN_MAX_BYTES": "max_bytes",
    "CHURN_TIMEOUT_SECONDS": "timeout_seconds",
}

# Column names taken as the customer key when none is configured (normalised spelling).
KEY_COLUMN_NAMES = ("customer_id", "customerid", "client_id", "customer_key", "account_id")
_DATA_SUFFIXES = (".gz", ".csv", ".tsv", ".txt", ".parquet", ".pq")


class DatasetResource(ConfigurableResource):  # type: ignore[type-arg]
    """The churn data set the platform ingests, validates and learns from.

    Every field can be set by an environment variable (see `DATASET_ENVIRONMENT`), so that the
    whole platform can be pointed at another data set without editing code, and overridden per run
    in the launchpad.
    """

    source: str = Field(
        default=SYNTHETIC,
        description="`synthetic` (built-in generator), a local path, a file:// or http(s):// URL "
        "to a CSV (any delimiter, optionally gzip-compressed) or Parquet file.",
    )
    target: str = Field(
        default="Churn", description="Target column, in its raw or snake_case spelling."
    )
    id_column: str | None = Field(
        default=None,
        description="Customer key column; by default a column named like `customer_id`.",
    )
    positive_label: str | None = Field(
        default=None,
        description="Target value meaning churned; by default Yes, True, 1 (any case) are.",
    )
    name: str | None = Field(
        default=None,
        description="Data set name, which keys its validation suite; by default `telco` for the "
        "synthetic source, else the file name.",
    )
    exclude_columns: list[str] = Field(
        default_factory=list,
        description="Columns never used as features (besides the key and the target).",
    )
    synthetic_rows: int = Field(default=10_000, description="Rows the synthetic source generates.")
    synthetic_seed: int = Field(default=42, description="Seed of the synthetic source.")
    synthetic_monthly_charges_shift: float = Field(
        default=0.0, description="Synthetic drift: relative change of monthly charges (0.3 = +30%)."
    )
    synthetic_month_to_month_shift: float = Field(
        default=0.0,
        description="Synthetic drift: share of longer contracts turned into month-to-month.",
    )
    max_bytes: int = Field(default=GIB, description="Largest source file accepted, in bytes.")
    timeout_seconds: float = Field(default=30.0, description="HTTP connect and read timeout.")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DatasetResource:
        """The resource as the environment configures it; unset variables keep the defaults."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for variable, field in DATASET_ENVIRONMENT.items():
            raw = environ.get(variable, "").strip()
            if not raw:
                continue
            if field == "exclude_columns":
                values[field] = [name.strip() for name in raw.split(",") if name.strip()]
            else:
                values[field] = raw
        return cls(**values)  # type: ignore[arg-type]

    @property
    def is_synthetic(self) -> bool:
        """Whether the built-in generator is the source."""
        return self.source.strip().lower() == SYNTHETIC

    def dataset_name(self) -> str:
        """The name the data set's validation suite is kept under."""
        if self.name:
            return snake_case(self.name)
        if self.is_synthetic:
            return "telco"
        stem = PurePosixPath(urllib.parse.urlparse(self.source).path).name.lower()
        while stem.endswith(_DATA_SUFFIXES):
            stem = stem.rsplit(".", 1)[0]
        return snake_case(stem) or "dataset"


class PlatformHome(ConfigurableResource):  # type: ignore[type-arg]
    """The folder the platform writes to: data snapshots, validation suites, scratch files."""

    path: str = Field(description="Absolute path of the platform home (`CHURN_HOME`).")

    @classmethod
    def from_env(cls) -> PlatformHome:
        """The home chosen by `CHURN_HOME`, or the default."""
        return cls(path=str(platform_home()))

    @property
    def root(self) -> Path:
        """The home folder."""
        return Path(self.path)

    def snapshots(self) -> SnapshotStore:
        """Content-addressed snapshots of every ingested data version."""
        return SnapshotStore(self.root / "data" / "snapshots")

    @property
    def suites_dir(self) -> Path:
        """Validation suites derived from, or chosen for, each data set."""
        return self.root / "suites"

    @property
    def scratch_dir(self) -> Path:
        """Temporary downloads."""
        return self.root / "tmp"
