"""`churn-traffic`: production-like requests for a running churn service, drifted if asked.

    churn-traffic                                         10 requests/s for 60 s on :8000
    churn-traffic --rate 20 --duration 0                  until Ctrl-C
    churn-traffic --requests 500                          500 requests, however long it takes
    churn-traffic --scale monthly_charges=1.3 --set contract=Month-to-month@0.5
    churn-traffic --label-share 0.5 --label-delay 30      outcomes of half the customers, later
    churn-traffic --from customers.csv --target Exited    another file's rows

Customers are real rows of the data the served model learned from (its data version, read from
the platform home: `GET /model` names it), or of a CSV or Parquet file given with `--from`,
replayed in a random order with the columns the served model takes (`GET /model` gives its input
schema). They can be drifted: `--scale column=factor` multiplies a numeric column,
`--set column=value@share` sets a column to a value on a share of the customers (all without
`@share`). With `--label-share`, the true outcome of that share of the scored customers (their
label in the data) is sent to `/feedback` `--label-delay` seconds after their prediction, as a
retention team would report it; by customer key when the table has one, else by prediction id.
Each answer names the model version, so a promotion shows in the summary. Failed requests are
counted and reported, never retried; when the service refuses 10 requests in a row (the records
do not fit its contract), the traffic stops with the reason and exit status 2. Integer columns
are sent as integers and boolean ones as booleans, drifted or not, as the contract takes them.
"""

from __future__ import annotations

import argparse
import json
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
import pandas as pd

from churn.model.schema import ColumnKind, ModelSchema
from churn.normalise import DEFAULT_POSITIVE_LABELS
from churn.settings import settings

POOL = 20_000
# The service refusing this many requests in a row (4xx: the records break its contract) stops
# the traffic: sending thousands more would only repeat the same refusal.
MAX_REFUSED_IN_A_ROW = 10


@dataclass
class Population:
    """Customers to send, as the service takes them, and whether each churned."""

    records: list[dict[str, Any]]
    outcomes: list[bool]
    key: str | None = None


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
    refused_in_a_row: int = 0
    stopped: str = ""


def population(
    frame: pd.DataFrame, schema: ModelSchema, rows: int = POOL, seed: int = 7
) -> Population:
    """Up to `rows` customers of a normalised table, shuffled, with the model's columns."""
    missing = [column for column in [*schema.names, schema.target] if column not in frame.columns]
    if missing:
        raise ValueError(f"the data lacks column(s) the served model needs: {', '.join(missing)}")
    sample = frame.sample(n=min(rows, len(frame)), random_state=seed)
    columns = ([schema.key] if schema.key and schema.key in frame.columns else []) + schema.names
    records = [json_record(row) for row in as_contract_types(sample[columns], schema)]
    outcomes = sample[schema.target].astype(bool).tolist()
    return Population(records, outcomes, schema.key)


def perturb(
    frame: pd.DataFrame,
    schema: ModelSchema,
    scale: Mapping[str, float] | None = None,
    set_values: Mapping[str, tuple[str, float]] | None = None,
    seed: int = 7,
) -> pd.DataFrame:
    """Drifted customers: numeric columns multiplied, columns set on a share of the rows.

    Raises:
        ValueError: a column the model does not take, or a factor on a non-numeric column.

    """
    frame = frame.copy()
    rng = np.random.default_rng(seed)
    for column, factor in (scale or {}).items():
        spec = schema.column(_known(schema, column))
        if spec.kind not in (ColumnKind.NUMBER, ColumnKind.INTEGER):
            raise ValueError(f"--scale {column}: the column holds {spec.kind.value}s, not numbers")
        scaled = frame[column].astype("float64") * factor
        if spec.maximum is not None:  # stay plausible: the contract refuses what is not
            scaled = scaled.clip(upper=spec.maximum)
        frame[column] = (
            scaled.round().astype("Int64") if spec.kind == ColumnKind.INTEGER else scaled
        )
    for column, (value, share) in (set_values or {}).items():
        spec = schema.column(_known(schema, column))
        chosen = rng.random(len(frame)) < share
        typed: Any = value
        if spec.kind == ColumnKind.NUMBER:
            typed = float(value)
        elif spec.kind == ColumnKind.INTEGER:
            typed = int(value)
        elif spec.kind == ColumnKind.BOOLEAN:
            typed = value.strip().lower() in {"true", "1", "yes"}
        frame[column] = frame[column].astype(object).where(~chosen, typed)
    return frame


def as_contract_types(frame: pd.DataFrame, schema: ModelSchema) -> list[dict[str, Any]]:
    """Rows as the contract types them: integer columns as integers, booleans as booleans.

    A stored table keeps an integer column with missing values as floats (`55.0`), which an
    integer field refuses; a drifted integer column is rounded, never sent as a fraction.
    """
    typed: dict[str, pd.Series] = {}
    for spec in schema.columns:
        values = frame[spec.name]
        if spec.kind == ColumnKind.INTEGER and not pd.api.types.is_integer_dtype(values):
            numbers = pd.to_numeric(values, errors="coerce")
            typed[spec.name] = numbers.round().astype("Int64")
        elif spec.kind == ColumnKind.BOOLEAN and not pd.api.types.is_bool_dtype(values):
            typed[spec.name] = values.map(_boolean, na_action="ignore").astype("boolean")
        elif spec.kind == ColumnKind.DATE:
            typed[spec.name] = values.map(_iso, na_action="ignore")
    rows = frame.assign(**typed).astype(object).to_dict("records")
    return [{str(name): value for name, value in row.items()} for row in rows]


def _iso(value: Any) -> str:
    """A date as the contract takes it: ISO 8601, the date alone at midnight."""
    if isinstance(value, str):
        return value
    stamp = pd.Timestamp(value)
    return stamp.date().isoformat() if stamp == stamp.normalize() else stamp.isoformat()


def _boolean(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in DEFAULT_POSITIVE_LABELS
    return bool(value)


def _known(schema: ModelSchema, column: str) -> str:
    if column not in schema.names:
        raise ValueError(
            f"{column!r} is not an input of the served model; its inputs are: "
            + ", ".join(schema.names)
        )
    return column


def json_record(row: Mapping[Any, Any]) -> dict[str, Any]:
    """A frame's row as the service takes it: numpy scalars as Python ones, missing as null."""
    record = {}
    for key, value in row.items():
        value = value.item() if isinstance(value, np.generic) else value
        if value is pd.NA or value is pd.NaT or (isinstance(value, float) and value != value):
            value = None
        record[str(key)] = value
    return record


def served_model(url: str, api_key: str | None = None) -> dict[str, Any]:
    """The service's `GET /model`: version, data version, input schema."""
    request = urllib.request.Request(
        f"{url}/model", headers={"X-API-Key": api_key} if api_key else {}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        card: dict[str, Any] = json.load(response)
    return card


def reference_frame(
    card: Mapping[str, Any], source: str | None, target: str | None
) -> pd.DataFrame:
    """The rows to replay: the served model's own data version, or the file given."""
    if source:
        from churn.home import Home
        from churn.normalise import normalise
        from churn.sources import read_table

        raw = read_table(source, 1024**3, 30.0, Home.from_env().scratch_dir)
        schema = ModelSchema.model_validate(card["input_schema"])
        frame, _ = normalise(raw, target or schema.target, id_column=schema.key)
        return frame
    from churn.home import Home
    from churn.snapshots import SnapshotStore

    store = SnapshotStore(Home.from_env().snapshots_dir)
    if not store.has(card["data_version"]):
        raise ValueError(
            f"the served model's data version {card['data_version']} is not under "
            f"{Home.from_env().root}: set CHURN_HOME to the platform home the service runs "
            "from, or replay a file of customers with --from FILE"
        )
    return store.load(card["data_version"])


def send_traffic(
    url: str,
    rate: float,
    duration: float,
    customers: Population,
    batch: int = 1,
    label_share: float = 0.0,
    label_delay: float = 30.0,
    seed: int = 7,
    api_key: str | None = None,
    progress: bool = False,
    requests: int = 0,
) -> TrafficSummary:
    """Send at most `rate` requests/s of `batch` records, for `duration` s or `requests` requests.

    Whichever limit comes first ends it; 0 lifts a limit, and with both 0 it runs until
    interrupted. A count of requests holds on a busy machine, where a duration sends fewer.
    """
    records, outcomes = customers.records, customers.outcomes
    pool = len(records)
    rng = np.random.default_rng(seed)
    headers = {"Content-Type": "application/json", **({"X-API-Key": api_key} if api_key else {})}
    summary = TrafficSummary()
    pending: deque[tuple[float, list[dict[str, Any]]]] = deque()
    started = time.monotonic()
    next_report = started + 10
    try:
        while (duration <= 0 or time.monotonic() - started < duration) and (
            requests <= 0 or summary.requests < requests
        ):
            due = started + summary.requests / rate
            time.sleep(max(0.0, due - time.monotonic()))
            chosen = [(summary.requests * batch + i) % pool for i in range(batch)]
            answer = _post(
                f"{url}/predict", {"records": [records[i] for i in chosen]}, headers, summary
            )
            summary.requests += 1
            if summary.refused_in_a_row >= MAX_REFUSED_IN_A_ROW:
                [(problem, _)] = summary.errors.most_common(1)
                summary.stopped = (
                    f"stopped: the service refused {summary.refused_in_a_row} requests in a row, "
                    f"so these records do not fit its contract ({problem})"
                )
                break
            if answer is not None:
                summary.records += len(chosen)
                summary.versions.update(prediction["model_version"] for prediction in answer)
                summary.customer_ids += [
                    str(p["customer_id"]) for p in answer if p["customer_id"] is not None
                ]
                labelled = [
                    (i, prediction)
                    for i, prediction in zip(chosen, answer, strict=True)
                    if rng.random() < label_share
                ]
                if labelled:
                    pending.append((time.monotonic() + label_delay, _outcomes(outcomes, labelled)))
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
    outcomes: list[bool], labelled: list[tuple[int, dict[str, Any]]]
) -> list[dict[str, Any]]:
    now = datetime.now(UTC).isoformat()
    return [
        {
            **({"customer_id": prediction["customer_id"]} if prediction["customer_id"] else {}),
            "prediction_id": prediction["prediction_id"],
            "churned": outcomes[i],
            "observed_at": now,
        }
        for i, prediction in labelled
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
            answer = json.loads(response.read())
            summary.refused_in_a_row = 0
            return answer
    except urllib.error.HTTPError as error:
        summary.failed += 1
        summary.errors[f"{error.code} {error.read().decode(errors='replace')[:200]}"] += 1
        # A refusal of the records themselves; 429 and 503 pass (load, or no model yet).
        if 400 <= error.code < 500 and error.code != 429:
            summary.refused_in_a_row += 1
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


def _pairs(values: Sequence[str], option: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        column, separator, setting = value.partition("=")
        if not separator or not column or not setting:
            raise ValueError(f"{option} takes column=value, not {value!r}")
        pairs[column.strip()] = setting.strip()
    return pairs


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (1 if any request failed)."""
    parser = argparse.ArgumentParser(prog="churn-traffic", description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the service")
    parser.add_argument("--rate", type=float, default=10.0, help="requests per second")
    parser.add_argument(
        "--duration",
        type=float,
        help="seconds; 0: until Ctrl-C (default: 60, or no limit with --requests)",
    )
    parser.add_argument("--requests", type=int, default=0, help="stop after this many requests")
    parser.add_argument("--batch", type=int, default=1, help="records per request")
    parser.add_argument(
        "--from",
        dest="source",
        help="a CSV or Parquet file of customers (default: the data the served model learned from)",
    )
    parser.add_argument("--target", help="the target column of --from (default: the model's)")
    parser.add_argument(
        "--scale",
        action="append",
        default=[],
        metavar="COLUMN=FACTOR",
        help="multiply a numeric column, e.g. monthly_charges=1.3 (repeatable)",
    )
    parser.add_argument(
        "--set",
        dest="set_values",
        action="append",
        default=[],
        metavar="COLUMN=VALUE[@SHARE]",
        help="set a column on a share of the customers, e.g. contract=Month-to-month@0.5",
    )
    parser.add_argument("--label-share", type=float, default=0.0, help="customers labelled")
    parser.add_argument("--label-delay", type=float, default=30.0, help="seconds until labelled")
    parser.add_argument("--seed", type=int, default=7, help="seed of the sampling and drift")
    arguments = parser.parse_args(argv)
    if arguments.rate <= 0 or arguments.batch < 1 or not 0 <= arguments.label_share <= 1:
        parser.error("--rate must be positive, --batch at least 1, --label-share within 0-1")
    if arguments.requests < 0:
        parser.error("--requests must be 0 (no limit) or more")
    if arguments.duration is None:
        arguments.duration = 0.0 if arguments.requests else 60.0
    url = arguments.url.rstrip("/")
    api_key = settings().serving.api_key
    try:
        scale = {c: float(v) for c, v in _pairs(arguments.scale, "--scale").items()}
        set_values = {}
        for column, setting in _pairs(arguments.set_values, "--set").items():
            value, _, share = setting.rpartition("@") if "@" in setting else (setting, "", "1")
            set_values[column] = (value, float(share))
        card = served_model(url, api_key)
        schema = ModelSchema.model_validate(card["input_schema"])
        frame = reference_frame(card, arguments.source, arguments.target)
        frame = perturb(frame, schema, scale, set_values, arguments.seed)
        customers = population(frame, schema, seed=arguments.seed)
    except urllib.error.URLError as error:
        print(f"churn-traffic: cannot read {url}/model: {error}", file=sys.stderr)
        return 2
    except (ValueError, KeyError, OSError) as error:
        print(f"churn-traffic: {error}", file=sys.stderr)
        return 2
    print(
        f"{len(customers.records)} customers of data version {card['data_version']}"
        + (f" from {arguments.source}" if arguments.source else "")
        + f", served by version {card['model_version']}",
        flush=True,
    )
    summary = send_traffic(
        url,
        arguments.rate,
        arguments.duration,
        customers,
        batch=arguments.batch,
        label_share=arguments.label_share,
        label_delay=arguments.label_delay,
        seed=arguments.seed,
        api_key=api_key,
        progress=True,
        requests=arguments.requests,
    )
    print(_describe(summary))
    for problem, count in summary.errors.most_common(5):
        print(f"  {count} x {problem}", file=sys.stderr)
    if summary.stopped:
        print(summary.stopped, file=sys.stderr)
        return 2
    return 1 if summary.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
