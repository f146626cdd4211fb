"""The platform's home folder: everything written at run time lives below it.

`CHURN_HOME` chooses it; by default it is `.churn/` in the source checkout (git-ignored), or
`~/.churn` when the package is installed elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from churn.settings import settings

_CHECKOUT = Path(__file__).resolve().parents[1]


def platform_home() -> Path:
    """The folder for snapshots, suites, the Dagster instance and the MLflow store."""
    configured = settings().platform.home
    if configured:
        return configured.expanduser().resolve()
    if (_CHECKOUT / "pyproject.toml").exists():
        return _CHECKOUT / ".churn"
    return Path.home() / ".churn"


@dataclass(frozen=True)
class Home:
    """The layout of the platform home: where each part of the platform reads and writes."""

    root: Path

    @classmethod
    def from_env(cls) -> Home:
        """The home chosen by `CHURN_HOME`, or the default."""
        return cls(platform_home())

    @property
    def snapshots_dir(self) -> Path:
        """Content-addressed snapshots of every ingested data version."""
        return self.root / "data" / "snapshots"

    @property
    def tables_dir(self) -> Path:
        """Tables handed from one pipeline step to the next, keyed by content."""
        return self.root / "data" / "tables"

    @property
    def values_dir(self) -> Path:
        """What each asset handed to the next (JSON), one file per asset (and partition)."""
        return self.root / "dagster" / "values"

    @property
    def suites_dir(self) -> Path:
        """Validation suites derived from, or chosen for, each data set."""
        return self.root / "suites"

    @property
    def scratch_dir(self) -> Path:
        """Temporary downloads."""
        return self.root / "tmp"

    @property
    def serving_dir(self) -> Path:
        """One folder per deployment (registry alias), holding its logs."""
        return self.root / "serving"

    def serving_log(self, alias: str, log: str) -> Path:
        """The folder of a deployment's `predictions` or `feedback` log."""
        return self.serving_dir / alias / log

    @property
    def landing_dir(self) -> Path:
        """Where users drop files of new labelled customers for the next training."""
        return self.root / "landing"

    @property
    def scores_dir(self) -> Path:
        """Nightly scores of the customer base, one folder per partition."""
        return self.root / "scores"

    @property
    def monitoring_dir(self) -> Path:
        """Drift reports (HTML) and other monitoring output."""
        return self.root / "monitoring"
