"""The service's own Prometheus metrics, served by BentoML's `/metrics` next to its built-in ones.

BentoML already counts requests, their latency and their errors per endpoint
(`bentoml_service_request_total`, `bentoml_service_request_duration_seconds`). These add what
only the service knows: what it predicted, with which model, and the health of its logs.

`prometheus_client` is imported when the metrics are created, inside the worker: BentoML sets
`PROMETHEUS_MULTIPROC_DIR` only after importing the service module, and prometheus_client picks
its (multi-process) storage when first imported. Each instance keeps its own registry so that
several services in one test process do not collide; in a BentoML worker the values reach
`/metrics` through the multi-process files whatever the registry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

PROBABILITY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)


class ServingMetrics:
    """Counters and gauges of one service (one alias)."""

    def __init__(self, alias: str, max_model_age_seconds: float = 30 * 86_400) -> None:
        import prometheus_client as prom

        self.alias = alias
        self.registry = prom.CollectorRegistry()
        registry = self.registry
        self.predictions = prom.Counter(
            "churn_predictions",
            "Predictions made, by predicted label and model version.",
            ["alias", "model_version", "label"],
            registry=registry,
        )
        self.probability = prom.Histogram(
            "churn_prediction_probability",
            "Predicted churn probabilities.",
            ["alias"],
            buckets=PROBABILITY_BUCKETS,
            registry=registry,
        )
        self.batch_records = prom.Histogram(
            "churn_batch_records",
            "Records per model call (requests merged by continuous batching).",
            ["alias"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048),
            registry=registry,
        )
        self.unknown_categories = prom.Counter(
            "churn_unknown_categories",
            "Records carrying a category the served model never saw, by field.",
            ["alias", "field"],
            registry=registry,
        )
        self.model_version = prom.Gauge(
            "churn_served_model_version",
            "Registry version being served (0: none loaded).",
            ["alias"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.model_info = prom.Gauge(
            "churn_served_model_info",
            "1 for the model version being served, 0 for one served before.",
            ["alias", "model_name", "model_version", "algorithm"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.swaps = prom.Counter(
            "churn_model_swaps",
            "Served model changes (first load, promotion, rollback).",
            ["alias"],
            registry=registry,
        )
        self.load_failures = prom.Counter(
            "churn_model_load_failures",
            "Versions that failed to load (or were refused); the served model stays.",
            ["alias"],
            registry=registry,
        )
        self.registry_failures = prom.Counter(
            "churn_registry_check_failures",
            "Reads of the registry alias that failed (registry unreachable or broken).",
            ["alias"],
            registry=registry,
        )
        self.registry_unreachable_since = prom.Gauge(
            "churn_registry_unreachable_since_timestamp_seconds",
            "Since when the registry has been unreachable (0: reachable).",
            ["alias"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.log_backlog = prom.Gauge(
            "churn_log_backlog_records",
            "Records buffered in memory, not yet written to the prediction or feedback log.",
            ["alias", "log"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.log_dropped = prom.Counter(
            "churn_log_dropped_records",
            "Log records dropped because the disk refused writes beyond the buffer's bound.",
            ["alias", "log"],
            registry=registry,
        )
        self.feedback = prom.Counter(
            "churn_feedback_outcomes",
            "Outcomes received on /feedback, by outcome.",
            ["alias", "churned"],
            registry=registry,
        )
        self.gc_pauses = prom.Histogram(
            "churn_gc_pause_seconds",
            "Python garbage-collection pauses of the worker, by generation: every request in "
            "flight waits for them.",
            ["alias", "generation"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5),
            registry=registry,
        )
        self.model_version.labels(alias).set(0)

        def served_gauge(name: str, description: str) -> Any:
            return prom.Gauge(
                name, description, ["alias"], multiprocess_mode="livemax", registry=registry
            )

        # The served model's age (ChurnModelStale).
        self.promoted_at = served_gauge(
            "churn_served_model_promoted_timestamp_seconds",
            "When the registry alias last moved to the version being served (0: unknown).",
        )
        self.max_age = served_gauge(
            "churn_model_max_age_seconds",
            "Oldest a production model may be before ChurnModelStale (CHURN_MODEL_MAX_AGE_DAYS).",
        )
        self.max_age.labels(alias).set(max_model_age_seconds)

    def predicted(
        self, version: str, probabilities: Sequence[float], labels: Any, unknown: dict[str, int]
    ) -> None:
        """Count one scored batch."""
        churned = int(labels.sum())
        if churned:
            self.predictions.labels(self.alias, version, "churn").inc(churned)
        if len(labels) - churned:
            self.predictions.labels(self.alias, version, "stay").inc(len(labels) - churned)
        histogram = self.probability.labels(self.alias)
        for probability in probabilities:
            histogram.observe(probability)
        for field, count in unknown.items():
            self.unknown_categories.labels(self.alias, field).inc(count)

    def swapped(self, previous: Any, new: Any) -> None:
        """Record a model swap (`previous` and `new` are `ServedModel`s, previous maybe None)."""
        if previous is not None:
            self.model_info.labels(
                self.alias, previous.name, previous.version, previous.card.algorithm
            ).set(0)
        self.model_info.labels(self.alias, new.name, new.version, new.card.algorithm).set(1)
        self.model_version.labels(self.alias).set(float(new.version))
        promoted = new.card.promoted_at
        self.promoted_at.labels(self.alias).set(
            datetime.fromisoformat(promoted).timestamp() if promoted else 0.0
        )
        self.swaps.labels(self.alias).inc()

    def watch_garbage_collection(self) -> Callable[[], None]:
        """Time every collection of this process into `churn_gc_pause_seconds`; return the stop.

        The collector's callback only appends to a deque: it runs wherever a collection starts,
        possibly inside prometheus_client while it holds its (non-reentrant) lock, so it must not
        observe the histogram itself. A thread moves the pauses into it every second.
        """
        import gc
        import threading
        import time
        from collections import deque

        pauses: deque[tuple[int, float]] = deque(maxlen=100_000)
        started = [0.0]

        def timed(phase: str, info: dict[str, Any]) -> None:
            if phase == "start":
                started[0] = time.perf_counter()
            elif started[0]:
                pauses.append((info["generation"], time.perf_counter() - started[0]))

        observe = {
            generation: self.gc_pauses.labels(self.alias, str(generation)).observe
            for generation in range(3)
        }
        stopping = threading.Event()

        def record() -> None:
            while not stopping.wait(1.0):
                while pauses:
                    generation, seconds = pauses.popleft()
                    observe[generation](seconds)

        gc.callbacks.append(timed)
        threading.Thread(target=record, name="gc-pauses", daemon=True).start()

        def stop() -> None:
            stopping.set()
            gc.callbacks.remove(timed)

        return stop

    def backlog(self, log: str, records: int) -> None:
        """Set the number of records waiting in one log's buffer."""
        self.log_backlog.labels(self.alias, log).set(records)
