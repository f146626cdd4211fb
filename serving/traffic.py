"""`churn-traffic`: production-like requests for a running churn service, drifted if asked.

    churn-traffic                                         10 requests/s for 60 s on :8000
    churn-traffic --rate 20 --duration 0                  until Ctrl-C
    churn-traffic --monthly-charges-shift 0.3 --month-to-month-shift 0.5
    churn-traffic --label-share 0.5 --label-delay 30      outcomes of half the customers, later

Customers come from the built-in generator (the population the default model learned from),
optionally drifted: monthly charges up by a share, longer contracts turned month-to-month. With
`--label-share`, the true outcome of that share of the scored customers is sent to `/feedback`
`--label-delay` seconds after their prediction, as a retention team would report it. Each
request's answer names the model version, so a promotion shows in the summary. Failed requests
are counted and reported, never retried.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from churn_assets.ingestion.normalise import normalise
from churn_assets.ingestion.synthetic import SyntheticDrift, generate_customers

POOL = 20_000


@dataclass
class TrafficSummary:
    """What was sent and what came back."""

    requests: int = 0
    failed: int = 0
    records: int = 0
    labels_sent: int = 0
    versions: Counter[str] = field(default_factory=Counter)
    customer_ids: list[str] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


def customers(
    rows: int, seed: int, drift: SyntheticDrift
) -> tuple[list[dict[str, Any]], list[bool]]:
    """Raw customer records as the service takes them, and whether each churned."""
    frame, _ = normalise(generate_customers(rows, seed=seed, drift=drift), "Churn")
    outcomes = frame.pop("churn").astype(bool).tolist()
    records = [json_record(row) for row in frame.to_dict("records")]
    return records, outcomes


def json_record(row: Mapping[Any, Any]) -> dict[str, Any]:
    """A frame's row as the service takes it: numpy scalars as Python ones, missing as null."""
    record = {}
    for key, value in row.items():
        value = value.item() if isinstance(value, np.generic) else value
        record[str(key)] = None if isinstance(value, float) and value != value else value
    return record


def send_traffic(
    url: str,
    rate: float,
    duration: float,
    batch: int = 1,
    drift: SyntheticDrift | None = None,
    label_share: float = 0.0,
    label_delay: float = 30.0,
    seed: int = 7,
    api_key: str | None = None,
    progress: bool = False,
) -> TrafficSummary:
    """Send `rate` requests/s of `batch` records for `duration` s (0: until interrupted)."""
    records, outcomes = customers(POOL, seed, drift or SyntheticDrift())
    rng = np.random.default_rng(seed)
    headers = {"Content-Type": "application/json", **({"X-API-Key": api_key} if api_key else {})}
    summary = TrafficSummary()
    pending: deque[tuple[float, list[dict[str, Any]]]] = deque()
    started = time.monotonic()
    next_report = started + 10
    try:
        while duration <= 0 or time.monotonic() - started < duration:
            due = started + summary.requests / rate
            time.sleep(max(0.0, due - time.monotonic()))
            chosen = [(summary.requests * batch + i) % POOL for i in range(batch)]
            answer = _post(
                f"{url}/predict", {"records": [records[i] for i in chosen]}, headers, summary
            )
            summary.requests += 1
            if answer is not None:
                summary.records += len(chosen)
                summary.versions.update(prediction["model_version"] for prediction in answer)
                summary.customer_ids += [records[i]["customer_id"] for i in chosen]
                labelled = [i for i in chosen if rng.random() < label_share]
                if labelled:
                    pending.append(
                        (time.monotonic() + label_delay, _outcomes(records, outcomes, labelled))
                    )
            while pending and pending[0][0] <= time.monotonic():
                _send_labels(url, pending.popleft()[1], headers, summary)
            if progress and time.monotonic() >= next_report:
                next_report += 10
                print(_describe(summary), flush=True)
    except KeyboardInterrupt:
        pass
    while pending:  # outcomes already promised are delivered, late rather than never
        _send_labels(url, pending.popleft()[1], headers, summary)
    return summary


def _outcomes(
    records: list[dict[str, Any]], outcomes: list[bool], chosen: list[int]
) -> list[dict[str, Any]]:
    now = datetime.now(UTC).isoformat()
    return [
        {"customer_id": records[i]["customer_id"], "churned": outcomes[i], "observed_at": now}
        for i in chosen
    ]


def _send_labels(
    url: str, labels: list[dict[str, Any]], headers: dict[str, str], summary: TrafficSummary
) -> None:
    if _post(f"{url}/feedback", {"outcomes": labels}, headers, summary) is not None:
        summary.labels_sent += len(labels)


def _post(url: str, body: Any, headers: dict[str, str], summary: TrafficSummary) -> Any:
    request = urllib.request.Request(url, json.dumps(body).encode(), headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        summary.failed += 1
        summary.errors[f"{error.code} {error.read().decode(errors='replace')[:200]}"] += 1
    except (urllib.error.URLError, OSError) as error:
        summary.failed += 1
        summary.errors[f"{url}: {error}"] += 1
    return None


def _describe(summary: TrafficSummary) -> str:
    versions = ", ".join(f"v{v}: {n}" for v, n in sorted(summary.versions.items())) or "none"
    return (
        f"{summary.requests} requests ({summary.failed} failed), {summary.records} records "
        f"scored, {summary.labels_sent} outcomes sent; answers by version: {versions}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (1 if any request failed)."""
    parser = argparse.ArgumentParser(prog="churn-traffic", description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the service")
    parser.add_argument("--rate", type=float, default=10.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds; 0: until Ctrl-C")
    parser.add_argument("--batch", type=int, default=1, help="records per request")
    parser.add_argument("--monthly-charges-shift", type=float, default=0.0, help="0.3: +30 %%")
    parser.add_argument(
        "--month-to-month-shift", type=float, default=0.0, help="share of longer contracts moved"
    )
    parser.add_argument("--label-share", type=float, default=0.0, help="customers labelled")
    parser.add_argument("--label-delay", type=float, default=30.0, help="seconds until labelled")
    parser.add_argument("--seed", type=int, default=7, help="seed of the customers")
    arguments = parser.parse_args(argv)
    if arguments.rate <= 0 or arguments.batch < 1 or not 0 <= arguments.label_share <= 1:
        parser.error("--rate must be positive, --batch at least 1, --label-share within 0-1")
    try:
        drift = SyntheticDrift(arguments.monthly_charges_shift, arguments.month_to_month_shift)
    except ValueError as error:
        parser.error(str(error))
    summary = send_traffic(
        arguments.url.rstrip("/"),
        arguments.rate,
        arguments.duration,
        batch=arguments.batch,
        drift=drift,
        label_share=arguments.label_share,
        label_delay=arguments.label_delay,
        seed=arguments.seed,
        api_key=os.environ.get("CHURN_API_KEY") or None,
        progress=True,
    )
    print(_describe(summary))
    for problem, count in summary.errors.most_common(5):
        print(f"  {count} x {problem}", file=sys.stderr)
    return 1 if summary.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
