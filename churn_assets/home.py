"""The platform's home folder: everything written at run time lives below it.

`CHURN_HOME` chooses it; by default it is `.churn/` in the source checkout (git-ignored), or
`~/.churn` when the package is installed elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parents[1]


def platform_home() -> Path:
    """The folder for snapshots, suites, the Dagster instance and the MLflow store."""
    configured = os.environ.get("CHURN_HOME")
    if configured:
        return Path(configured).expanduser().resolve()
    if (_CHECKOUT / "pyproject.toml").exists():
        return _CHECKOUT / ".churn"
    return Path.home() / ".churn"
