"""Bounds on what clients can make the service write: metric series and log lines.

- **Metric labels.** BentoML labels its request metrics with the request's path, unknown paths
  (404s, which need no API key) included: every new path is a new series, and a client sending
  random paths grows `/metrics` and the worker's memory without bound (measured: 8,000 unknown
  paths took `/metrics` to 28 MB and a scrape to 10 s). Paths that are not the service's own are
  counted under one label, `endpoint="other"`.
- **Log lines.** BentoML logs every refused request at ERROR with a full traceback: a client with
  a broken integration fills the disk (1,523 fuzzed requests wrote 54,306 lines). A client error
  (400-499) becomes one WARNING line naming the method, path, client and the fields at fault;
  server errors (5xx) keep their traceback.
"""

from __future__ import annotations

import contextvars
import logging
from typing import Any

OTHER_ENDPOINT = "other"
# BentoML's own routes besides the service's APIs.
INFRASTRUCTURE_ROUTES = frozenset(
    {"/", "/livez", "/readyz", "/healthz", "/metrics", "/docs.json", "/schema.json", "/model"}
)
METRICS = (
    "metrics_request_duration",
    "metrics_request_total",
    "metrics_request_in_progress",
    "metrics_websocket_connections",
    "metrics_websocket_data_received",
    "metrics_websocket_data_sent",
)
# The client of the request being handled, set by the request guard, read by the log filter.
CLIENT: contextvars.ContextVar[str] = contextvars.ContextVar("churn_client", default="unknown")


class _KnownEndpoints:
    """A labelled metric whose `endpoint` label only takes known routes (others: `other`)."""

    def __init__(self, metric: Any, routes: frozenset[str]) -> None:
        self._metric = metric
        self._routes = routes

    def labels(self, *values: Any, **labels: Any) -> Any:
        """The metric's child for these labels, an unknown endpoint as `other`."""
        if labels.get("endpoint") not in self._routes:
            labels["endpoint"] = OTHER_ENDPOINT
        return self._metric.labels(*values, **labels)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._metric, name)


def bound_metric_labels() -> None:
    """Make BentoML's traffic metrics count unknown paths under one label (idempotent)."""
    from bentoml._internal.context import server_context
    from bentoml._internal.server.http import instruments

    middleware: Any = instruments.RunnerTrafficMetricsMiddleware
    if getattr(middleware, "_churn_bounded", False):
        return
    setup = middleware._setup

    def bounded_setup(self: Any, *args: Any, **kwargs: Any) -> None:
        setup(self, *args, **kwargs)
        routes = frozenset(server_context.service_routes or ()) | INFRASTRUCTURE_ROUTES
        for name in METRICS:
            metric = getattr(self, name, None)
            if metric is not None and not isinstance(metric, _KnownEndpoints):
                setattr(self, name, _KnownEndpoints(metric, routes))

    middleware._setup = bounded_setup
    middleware._churn_bounded = True


class ClientErrorsOnOneLine(logging.Filter):
    """Turn BentoML's traceback of a client error into one WARNING line; 5xx are left whole."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite a client error's record in place; keep every record."""
        if not record.exc_info or record.exc_info[1] is None:
            return True
        error = record.exc_info[1]
        summary = client_error(error)
        if summary is None:
            return True
        request = record.getMessage().removeprefix("Exception on ")
        record.msg = "client error on %s from %s: %s"
        record.args = (request, CLIENT.get(), summary)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def client_error(error: BaseException) -> str | None:
    """What a client did wrong, in one line; None when the error is the server's."""
    from bentoml.exceptions import BentoMLException
    from pydantic import ValidationError

    if isinstance(error, ValidationError):
        problems = [
            f"{'.'.join(str(part) for part in problem['loc']) or '(body)'}: {problem['msg']}"
            for problem in error.errors(include_url=False, include_input=False)[:5]
        ]
        more = error.error_count() - len(problems)
        return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")
    if isinstance(error, BentoMLException) and 400 <= int(error.error_code) < 500:
        return f"{int(error.error_code)} {error}"
    return None


def quiet_client_errors() -> None:
    """Install `ClientErrorsOnOneLine` on BentoML's request-error logger (idempotent)."""
    logger = logging.getLogger("bentoml._internal.server.http_app")
    if not any(isinstance(f, ClientErrorsOnOneLine) for f in logger.filters):
        logger.addFilter(ClientErrorsOnOneLine())
