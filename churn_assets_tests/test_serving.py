"""The churn service: in process, then as a real `bentoml serve` process over HTTP.

The registry is made by the real pipeline (two materializations, so two versions); every
service is a real BentoML server on a free loopback port, stopped gracefully so that its logs
are flushed as in production.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from churn.parquet_log import read_log
from churn.registry import PRODUCTION, STAGING, ModelRegistry
from churn_assets.resources import MlflowResource, PlatformHome
from churn_assets.telco import FEATURES
from churn_assets_tests.conftest import (
    EXAMPLE_CUSTOMER,
    customer,
    eventually,
    set_environment,
    trained_home,
)
from churn_assets_tests.processes import (
    MAX_BODY_BYTES,
    MAX_RECORDS,
    Server,
    build_bento,
    fill,
    fuzz_api,
    mlflow_server,
    serve,
    small_disk,
    stop,
)

# Starts servers or processes, or runs the whole pipeline: not in `make check`.
pytestmark = pytest.mark.servers


@dataclass(frozen=True)
class Registry:
    """A platform home whose registry holds two versions, version 1 in production."""

    home: PlatformHome

    def registry(self) -> ModelRegistry:
        tracking = MlflowResource.from_env(self.home)
        return ModelRegistry(tracking.client(), tracking.model_name)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return Registry(trained_home(tmp_path_factory.mktemp("serving"), seeds=(42, 7)))


def test_the_service_class_scores_like_the_registered_model(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from pydantic import TypeAdapter

    from serving.contract import Prediction
    from serving.service import ChurnService

    set_environment(monkeypatch, CHURN_HOME=str(registry.home.root))
    service = ChurnService()
    try:
        deadline = time.monotonic() + 60
        while not service.__is_ready__() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert service.__is_ready__(), service.not_ready_reason()
        records = [customer(customer_id=f"c{i}", tenure=i) for i in range(5)]
        # What BentoML does with the request: validate it against the served version's contract.
        model = service.watcher.current
        assert model is not None
        request = model.contract.request_type.model_validate({"records": records})
        # ...and with the answer: validate it as the declared response type.
        predictions = TypeAdapter(list[Prediction]).validate_python(
            asyncio.run(service.predict(request.records))
        )
    finally:
        service.close()
    tracking = MlflowResource.from_env(registry.home)
    mlflow.set_tracking_uri(tracking.tracking_uri)
    expected = mlflow.pyfunc.load_model(f"models:/{tracking.model_name}/1").predict(
        pd.DataFrame(records)
    )
    assert [p.model_version for p in predictions] == ["1"] * 5
    assert [p.customer_id for p in predictions] == expected["customer_id"].tolist()
    assert [p.churn_probability for p in predictions] == pytest.approx(
        expected["churn_probability"].tolist(), abs=1e-12
    )
    assert [p.churn_label for p in predictions] == expected["churn_label"].tolist()
    logged = read_log(registry.home.serving_log("production", "predictions"))
    assert logged["prediction_id"].tolist() == [p.prediction_id for p in predictions]
    assert logged["tenure"].tolist() == list(range(5))


@pytest.fixture(scope="module")
def production(registry: Registry) -> Iterator[Server]:
    with serve(registry.home) as server:
        yield server


def test_single_and_batch_predictions_over_http(production: Server) -> None:
    single = production.predict(customer())
    assert single.status == 200
    [prediction] = single.body
    assert prediction["customer_id"] == EXAMPLE_CUSTOMER["customer_id"]
    assert 0 <= prediction["churn_probability"] <= 1
    assert prediction["churn_label"] == int(
        prediction["churn_probability"] >= prediction["threshold"]
    )
    assert (prediction["model_name"], prediction["model_version"], prediction["model_alias"]) == (
        "churn-predictor",
        "1",
        "production",
    )
    batch = production.predict(
        *[customer(customer_id=f"b{i}", tenure=i) for i in range(MAX_RECORDS)]
    )
    assert batch.status == 200
    assert [p["customer_id"] for p in batch.body] == [f"b{i}" for i in range(MAX_RECORDS)]
    assert len({p["request_id"] for p in batch.body}) == 1
    assert len({p["prediction_id"] for p in batch.body}) == MAX_RECORDS
    # A key is optional; an unseen category is scored and reported.
    anonymous = production.predict(customer(customer_id=None, payment_method="Crypto"))
    assert anonymous.status == 200
    assert anonymous.body[0]["customer_id"] is None
    assert anonymous.body[0]["unknown_categories"] == {"payment_method": "Crypto"}


BAD_REQUESTS = [
    pytest.param({"raw": b'{"records": [{"gender": '}, 400, "json", id="malformed JSON"),
    pytest.param(
        {"body": {"records": [customer()]}, "headers": {"Content-Type": "text/csv"}},
        415,
        "application/json",
        id="wrong content type",
    ),
    pytest.param(
        {"body": {"records": [{k: v for k, v in customer().items() if k != "tenure"}]}},
        400,
        "tenure",
        id="missing field",
    ),
    pytest.param(
        {"body": {"records": [customer(loyalty="gold")]}}, 400, "loyalty", id="extra field"
    ),
    pytest.param({"body": {"records": [customer()], "mode": "fast"}}, 400, "mode", id="extra key"),
    pytest.param({"body": {"records": [customer(tenure="long")]}}, 400, "tenure", id="wrong type"),
    pytest.param({"body": {"records": [customer(gender=1)]}}, 400, "gender", id="number as text"),
    pytest.param(
        {"raw": json.dumps({"records": [customer()]}).replace("29.85,", "NaN,", 1).encode()},
        400,
        "monthly_charges",
        id="NaN",
    ),
    pytest.param(
        {"raw": json.dumps({"records": [customer()]}).replace("29.85}", "Infinity}").encode()},
        400,
        "total_charges",
        id="Infinity",
    ),
    pytest.param(
        {"body": {"records": [customer(monthly_charges=-5)]}}, 400, "monthly_charges", id="negative"
    ),
    pytest.param({"body": {"records": [customer(tenure=900)]}}, 400, "tenure", id="implausible"),
    pytest.param({"body": {"records": []}}, 400, "records", id="empty list"),
    pytest.param({"body": {"records": customer()}}, 400, "records", id="record not in a list"),
    pytest.param({"body": {}}, 400, "records", id="no records"),
    pytest.param(
        {"body": {"records": [customer()] * (MAX_RECORDS + 1)}},
        400,
        "records",
        id="batch too large",
    ),
    pytest.param(
        {"body": {"records": [customer(customer_id="x" * MAX_BODY_BYTES)]}},
        413,
        "too large",
        id="body too large",
    ),
    pytest.param({"body": [customer()]}, 400, "", id="bare list"),
]


@pytest.mark.parametrize(("request_args", "status", "named"), BAD_REQUESTS)
def test_bad_input_gets_a_4xx_naming_the_problem_and_the_worker_keeps_serving(
    production: Server, request_args: dict[str, Any], status: int, named: str
) -> None:
    answer = production.request(
        "/predict",
        request_args.get("body"),
        **{k: v for k, v in request_args.items() if k != "body"},
    )
    assert answer.status == status, answer.body
    assert named.lower() in json.dumps(answer.body).lower()
    assert production.predict(customer()).status == 200


def test_an_oversized_chunked_body_is_refused_without_reading_it_all(production: Server) -> None:
    host, port = production.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b" " * 16_384
        for _ in range(MAX_BODY_BYTES // len(chunk) + 2):
            connection.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        reply = connection.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 413"), reply
    assert production.predict(customer()).status == 200


def test_feedback_model_card_readiness_and_metrics(production: Server) -> None:
    receipt = production.request(
        "/feedback",
        {
            "outcomes": [
                {"customer_id": "a1", "churned": True, "observed_at": "2026-11-01T10:00:00Z"},
                {"customer_id": "a2", "churned": "No"},
            ]
        },
    )
    assert receipt.status == 200 and receipt.body["accepted"] == 2
    future = production.request(
        "/feedback",
        {"outcomes": [{"customer_id": "a3", "churned": True, "observed_at": "2999-01-01"}]},
    )
    assert future.status == 400 and "observed_at" in json.dumps(future.body)
    card = production.request("/model")
    assert card.status == 200
    assert card.body["model_version"] == "1" and card.body["model_alias"] == "production"
    assert {"f1", "recall", "precision"} <= set(card.body["metrics"])
    assert card.body["data_version"] and card.body["promoted_at"]
    assert 0 < card.body["threshold"] < 1
    assert production.request("/readyz").status == 200
    production.predict(customer())
    metrics = production.request("/metrics").body
    for name in (
        "bentoml_service_request_total",
        "bentoml_service_request_duration_seconds_bucket",
        'churn_predictions_total{alias="production",label=',
        "churn_prediction_probability_bucket",
        'churn_served_model_version{alias="production"} 1.0',
        "churn_served_model_info{",
        "churn_log_backlog_records",
        "churn_model_swaps_total",
        "churn_feedback_outcomes_total",
        'churn_gc_pause_seconds_count{alias="production",generation="0"}',
    ):
        assert name in metrics, name


def test_with_an_api_key_the_service_holds_to_its_openapi_document_under_fuzzing(
    registry: Registry, tmp_path: Path
) -> None:
    """Schemathesis, every check, positive and negative data, against a real `bentoml serve`."""
    # Its own home: the fuzzer's predictions and outcomes stay out of the shared logs.
    with serve(served_home(registry, tmp_path), CHURN_API_KEY="s3cret") as server:
        assert server.predict(customer()).status == 401
        wrong = server.predict(customer(), **{"X-API-Key": "guess"})
        assert wrong.status == 401 and "API key" in wrong.body["error"]
        assert server.request("/model").status == 401
        assert server.predict(customer(), **{"X-API-Key": "s3cret"}).status == 200
        assert server.predict(customer(), Authorization="Bearer s3cret").status == 200
        # An empty X-API-Key does not hide a good token.
        assert (
            server.predict(customer(), **{"X-API-Key": ""}, Authorization="Bearer s3cret").status
            == 200
        )
        for open_path in ("/livez", "/readyz", "/metrics"):
            assert server.request(open_path).status == 200
        document = server.request("/docs.json").body
        assert document["components"]["securitySchemes"]["ApiKey"]["name"] == "X-API-Key"
        assert document["paths"]["/model"]["get"]["security"] == [{"ApiKey": []}, {"Bearer": []}]
        logged = server.log_file.read_text().count("\n")
        generated = fuzz_api(server.url, tmp_path, {"X-API-Key": "s3cret"})
        assert generated >= 1_000, generated
        # Still serving; each refusal logged on one line (beside the access log), none as an error.
        assert server.predict(customer(), **{"X-API-Key": "s3cret"}).status == 200
        lines = server.log_file.read_text().splitlines()[logged:]
        assert any("client error on /predict" in line for line in lines)
        assert not any("Traceback" in line or "[ERROR]" in line for line in lines)


def test_without_a_model_the_service_starts_not_ready_and_answers_503(tmp_path: Path) -> None:
    empty = PlatformHome(path=str(tmp_path / "empty-home"))
    with serve(empty, ready=False) as server:
        assert server.request("/livez").status == 200
        assert server.request("/readyz").status == 503
        answer = server.predict(customer())
        deadline = time.monotonic() + 60
        while "starting" in answer.body["error"] and time.monotonic() < deadline:
            time.sleep(0.5)  # the first look at the registry is under way
            answer = server.predict(customer())
        assert answer.status == 503
        assert "churn-predictor" in answer.body["error"] and "production" in answer.body["error"]
        assert server.request("/model").status == 503


def test_promotion_swaps_the_served_model_without_a_failed_request(registry: Registry) -> None:
    staging = registry.registry()
    with serve(registry.home) as server:
        sent: list[int] = []
        answers: list[tuple[float, int, str]] = []
        stop = threading.Event()

        def client(batch: int) -> None:
            index = 0
            while not stop.is_set():
                size = 1 + index % 3 if batch == 1 else batch
                records = [customer(customer_id=f"swap-{batch}-{index}-{n}") for n in range(size)]
                answer = server.predict(*records)
                sent.append(len(records))
                version = answer.body[0]["model_version"] if answer.status == 200 else "?"
                answers.append((time.monotonic(), answer.status, version))
                index += 1

        # Two clients at once, single records and full batches, so requests are merged.
        threads = [threading.Thread(target=client, args=(size,)) for size in (1, MAX_RECORDS)]
        for thread in threads:
            thread.start()
        try:
            eventually(lambda: len(answers) >= 50)  # both clients are sending
            promoted_at = time.monotonic()
            staging.promote("2", actor="tests", reason="hot swap test")
            deadline = promoted_at + 30
            while time.monotonic() < deadline and not any(v == "2" for _, _, v in answers):
                time.sleep(0.2)
            time.sleep(1)  # version 2 answers for a while
            staging.rollback(actor="tests", reason="back to version 1")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and answers[-1][2] != "1":
                time.sleep(0.2)
            time.sleep(0.5)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        feedback = server.request(
            "/feedback",
            {"outcomes": [{"customer_id": f"swap-{i}", "churned": i % 2 == 0} for i in range(7)]},
        )
        assert feedback.status == 200
    statuses = {status for _, status, _ in answers}
    assert statuses == {200}, f"failed requests during the swap: {statuses}"
    versions = [version for _, _, version in answers]
    assert "2" in versions, "the promotion was never served"
    first_v2 = versions.index("2")
    assert set(versions[:first_v2]) == {"1"}
    assert answers[first_v2][0] - promoted_at < 30
    assert versions[-1] == "1", "the rollback was not served"
    # Flushed on the graceful stop: every record sent is in the log, exactly once.
    predictions = read_log(registry.home.serving_log("production", "predictions"))
    swap_rows = predictions[predictions["customer_id"].str.startswith("swap-", na=False)]
    assert len(swap_rows) == sum(sent)
    assert swap_rows["prediction_id"].is_unique
    assert set(swap_rows["model_version"]) == {"1", "2"}
    outcomes = read_log(registry.home.serving_log("production", "feedback"))
    answered = outcomes[outcomes["customer_id"].str.startswith("swap-", na=False)]
    assert sorted(answered["customer_id"]) == sorted(f"swap-{i}" for i in range(7))
    assert answered["churned"].tolist() == [i % 2 == 0 for i in range(7)]


def test_the_openapi_document_shows_the_contract_and_its_example(production: Server) -> None:
    document = production.request("/docs.json")
    assert document.status == 200
    schemas = document.body["components"]["schemas"]
    customer_schema = schemas["CustomerRecord"]
    assert customer_schema["additionalProperties"] is False
    served = production.request("/model").body["input_schema"]
    # A realistic example: each column's typical training value, no real customer's row.
    example = customer_schema["example"]
    assert set(example) == {"customer_id", *(column["name"] for column in served["columns"])}
    assert example["contract"] == "Month-to-month" and isinstance(example["tenure"], int)
    assert customer_schema["properties"]["tenure"]["description"].startswith("Integer from 0 to")
    assert "Seen in training" in customer_schema["properties"]["contract"]["description"]
    records = schemas["PredictRequest"]["properties"]["records"]
    assert records["items"] == {"$ref": "#/components/schemas/CustomerRecord"}
    assert {"/predict", "/feedback", "/model", "/readyz", "/metrics"} <= set(document.body["paths"])
    card = document.body["paths"]["/model"]["get"]["responses"]["200"]["content"]
    assert card["application/json"]["schema"] == {"$ref": "#/components/schemas/ModelCard"}
    assert "registry_unreachable_since" in schemas["ModelCard"]["properties"]
    # Without a key configured, no operation asks for one, and no 401 is promised.
    predict = document.body["paths"]["/predict"]["post"]
    assert predict["security"] == [] and "401" not in predict["responses"]
    assert {"400", "413", "415", "503"} <= set(predict["responses"])
    assert production.predict(example).status == 200


def test_bentoml_build_packages_the_service(tmp_path: Path) -> None:
    bento = build_bento(tmp_path)
    assert (bento / "src" / "serving" / "service.py").exists()
    assert (bento / "src" / "churn" / "model" / "artifact.py").exists()
    # Nothing of the Dagster code location travels with the service.
    assert not (bento / "src" / "churn_assets").exists()
    assert "serving.service:ChurnService" in (bento / "bento.yaml").read_text()
    requirements = (bento / "env" / "python" / "requirements.txt").read_text()
    assert "bentoml==" in requirements and "scikit-learn==" in requirements
    assert "dagster" not in requirements


def test_continuous_batching_merges_concurrent_requests_and_returns_each_its_own() -> None:
    from serving.batching import ContinuousBatcher

    calls: list[list[int]] = []

    groups: list[str] = []

    def score(items: list[int], group: str) -> list[int]:
        calls.append(items)
        groups.append(group)
        if -1 in items:
            raise ValueError("a poisoned batch")
        time.sleep(0.05)
        return [item * 10 for item in items]

    async def scenario() -> list[object]:
        batcher: ContinuousBatcher[int, int, str] = ContinuousBatcher(score, max_records=5)
        requests = [[1], [2, 3], [4], [5, 6, 7], [8]]
        return await asyncio.gather(
            *(batcher.submit(items, "v1") for items in requests), return_exceptions=True
        )

    results = asyncio.run(scenario())
    assert results == [[10], [20, 30], [40], [50, 60, 70], [80]]
    # Requests queued together share calls of up to 5 records; a request is never split.
    assert calls == [[1, 2, 3, 4], [5, 6, 7, 8]]

    async def failing() -> list[object]:
        batcher: ContinuousBatcher[int, int, str] = ContinuousBatcher(score, max_records=5)
        first = asyncio.ensure_future(batcher.submit([1], "v1"))
        await asyncio.sleep(0)
        rest = [batcher.submit([-1], "v1"), batcher.submit([2], "v1")]
        return [await first, *await asyncio.gather(*rest, return_exceptions=True)]

    # Around a swap, requests validated for different versions are never scored together.
    async def swapped() -> list[object]:
        batcher: ContinuousBatcher[int, int, str] = ContinuousBatcher(score, max_records=5)
        first = asyncio.ensure_future(batcher.submit([1], "v1"))
        await asyncio.sleep(0)
        rest = [batcher.submit([2], "v1"), batcher.submit([3], "v2"), batcher.submit([4], "v2")]
        return [await first, *await asyncio.gather(*rest)]

    calls.clear()
    groups.clear()
    assert asyncio.run(swapped()) == [[10], [20], [30], [40]]
    assert calls == [[1], [2], [3, 4]] and groups == ["v1", "v1", "v2"]

    first, poisoned, neighbour = asyncio.run(failing())
    assert first == [10]
    assert isinstance(poisoned, ValueError) and isinstance(neighbour, ValueError)


def test_churn_traffic_replays_the_models_data_drifted_with_delayed_labels(
    production: Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from churn.model.schema import ModelSchema
    from serving.traffic import (
        main,
        perturb,
        population,
        reference_frame,
        send_traffic,
        served_model,
    )

    set_environment(monkeypatch, CHURN_HOME=str(production.home.root))
    card = served_model(production.url)
    schema = ModelSchema.model_validate(card["input_schema"])
    reference = reference_frame(card, None, None)  # the data version the model learned from
    assert len(reference) == 3_000
    drifted = perturb(
        reference, schema, {"monthly_charges": 1.5}, {"contract": ("Month-to-month", 1.0)}, seed=99
    )
    customers = population(drifted, schema, seed=99)
    summary = send_traffic(
        production.url,
        rate=20,
        duration=0,
        requests=40,
        customers=customers,
        batch=2,
        label_share=1.0,
        label_delay=0.5,
        seed=99,
    )
    assert summary.failed == 0 and summary.requests == 40
    assert summary.records == 2 * summary.requests == summary.labels_sent
    assert set(summary.versions) == {"1"}
    eventually(production.logs_written)
    predictions = production.log("predictions")
    sent = predictions[predictions["customer_id"].isin(summary.customer_ids)]
    assert len(sent) == summary.records
    assert sent["monthly_charges"].max() > reference["monthly_charges"].max()
    assert set(sent["contract"]) == {"Month-to-month"}
    outcomes = production.log("feedback")
    answered = outcomes[outcomes["customer_id"].isin(summary.customer_ids)]
    assert len(answered) == summary.labels_sent
    # The outcome reported is the customer's label in the data.
    truth = reference.set_index("customer_id")["churn"].astype(bool)
    assert (answered["churned"].to_numpy() == truth.loc[answered["customer_id"]].to_numpy()).all()
    # The command line refuses drift on a column the model does not take.
    assert main(["--url", production.url, "--scale", "loyalty=2"]) == 2
    assert "'loyalty' is not an input of the served model" in capsys.readouterr().err


def test_the_staging_deployment_serves_the_staging_alias(registry: Registry) -> None:
    staging_version = registry.registry().alias_version(STAGING)
    assert staging_version is not None
    with serve(registry.home, CHURN_SERVING_ALIAS="staging") as server:
        card = server.request("/model").body
        assert (card["model_alias"], card["model_version"]) == ("staging", staging_version)
        answer = server.predict(customer(customer_id="staging-1"))
        assert (answer.body[0]["model_alias"], answer.body[0]["model_version"]) == (
            "staging",
            staging_version,
        )
    logged = read_log(registry.home.serving_log("staging", "predictions"))
    assert logged["customer_id"].tolist() == ["staging-1"]


def test_the_served_contract_is_the_schema_the_model_was_trained_on(production: Server) -> None:
    card = production.request("/model").body
    names = [column["name"] for column in card["input_schema"]["columns"]]
    # A model of the Telco schema takes the Telco columns, the key aside.
    assert tuple(names) == FEATURES
    assert card["input_schema"]["key"] == "customer_id"
    assert card["features"] == sorted(names, key=card["features"].index)


def test_unknown_paths_and_bad_requests_cannot_grow_metrics_or_logs(production: Server) -> None:
    import http.client

    def metrics() -> str:
        with urllib.request.urlopen(production.url + "/metrics", timeout=10) as response:
            return str(response.read().decode())

    before = metrics()
    connection = http.client.HTTPConnection("127.0.0.1", production.port, timeout=10)
    for i in range(3_000):  # no API key needed for a 404
        connection.request("GET", f"/probe-{i}-{os.getpid()}")
        response = connection.getresponse()
        response.read()
        assert response.status == 404
    after = metrics()
    assert "probe-" not in after
    assert 'endpoint="other"' in after
    # A handful of new series (the `other` label), not thousands.
    assert len(after) < len(before) + 20_000, (len(before), len(after))

    logged = production.log_file.read_text().count("\n")
    for i in range(100):
        refused = production.predict(customer(tenure=f"ten-{i}"))
        assert refused.status == 400

    def logged_since() -> list[str]:
        return production.log_file.read_text().splitlines()[logged:]

    eventually(lambda: sum("client error on /predict" in line for line in logged_since()) >= 100)
    lines = logged_since()
    warnings = [line for line in lines if "client error on /predict" in line]
    assert len(warnings) == 100, lines[-20:]
    assert all("records.0.tenure" in line and "127.0.0.1:" in line for line in warnings)
    assert not [line for line in lines if "Traceback" in line]
    assert len(lines) <= 100 + 110  # one warning and at most one access-log line per request


def test_a_registry_file_restored_from_backup_is_picked_up(registry: Registry) -> None:
    import shutil

    database = registry.home.root / "mlflow" / "mlflow.db"
    backup = database.with_name("mlflow.db.backup")
    shutil.copy2(database, backup)  # production: version 1
    models = registry.registry()
    with serve(registry.home) as server:
        assert server.request("/model").body["model_version"] == "1"
        models.promote("2", actor="tests", reason="before the restore")
        eventually(lambda: server.request("/model").body["model_version"] == "2")
        os.replace(backup, database)  # a restore: the old file comes back by rename
        eventually(
            lambda: server.request("/model").body["model_version"] == "1",
            explain=lambda: "the service kept reading the replaced file",
        )
        assert server.predict(customer()).status == 200
    # This process's own connections still read the replaced file, as the service's did.
    from serving.model import forget_connections

    forget_connections(f"sqlite:///{database}")
    assert registry.registry().alias_version(PRODUCTION) == "1"
    assert "was replaced: reconnecting" in server.log_file.read_text()


def test_a_registry_outage_is_visible_and_its_end_is_logged(registry: Registry) -> None:
    from churn_assets_tests.conftest import free_port

    port = free_port()
    store = f"sqlite:///{registry.home.root / 'mlflow' / 'mlflow.db'}"

    tracking = mlflow_server(store, port)
    try:
        with serve(registry.home, MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}") as server:
            card = server.request("/model").body
            assert card["registry_unreachable_since"] is None and card["registry_checked_at"]
            stop(tracking)  # the server and its workers: the registry is down
            eventually(
                lambda: server.request("/model").body["registry_unreachable_since"] is not None
            )
            # The model keeps serving, and the outage shows in the metrics.
            assert server.predict(customer()).status == 200
            metrics = server.request("/metrics").body
            assert "churn_registry_unreachable_since_timestamp_seconds" in metrics
            assert 'churn_registry_check_failures_total{alias="production"}' in metrics
            tracking = mlflow_server(store, port)
            eventually(
                lambda: server.request("/model").body["registry_unreachable_since"] is None, 60
            )
    finally:
        stop(tracking)
    log = server.log_file.read_text()
    assert "the registry cannot be read (unreachable since" in log
    assert "the registry answers again after" in log


def served_home(registry: Registry, root: Path) -> PlatformHome:
    """A new platform home over a copy of the registry (the model artifacts stay shared)."""
    import shutil

    home = PlatformHome(path=str(root / "home"))
    shutil.copytree(registry.home.root / "mlflow", home.root / "mlflow")
    return home


def test_a_full_disk_spills_the_log_and_loses_nothing(registry: Registry, tmp_path: Path) -> None:
    home = served_home(registry, tmp_path)
    predictions = home.serving_log("production", "predictions")
    spill = tmp_path / "spill"
    with small_disk(predictions):
        filler = fill(predictions)
        with serve(
            home, CHURN_LOG_MAX_BUFFER_RECORDS="300", CHURN_LOG_SPILL_DIR=str(spill)
        ) as server:
            answered = 0
            for i in range(600):
                answer = server.predict(customer(customer_id=f"full-{i}"))
                assert answer.status == 200
                answered += 1
            # Beyond the bound the backlog went to the spill folder, none was dropped.
            eventually(lambda: list(spill.rglob("part-*.parquet")))
            metrics = server.request("/metrics").body
            assert (
                'churn_log_dropped_records_total{alias="production",log="predictions"}'
                not in (metrics)
                or 'log="predictions"} 0.0' in metrics
            )
            # The disk is freed: the spilled files move back, every prediction is logged once.
            filler.unlink()
            eventually(lambda: not list(spill.rglob("part-*.parquet")))
            eventually(lambda: len(read_log(predictions)) == answered)
            # Outcomes first: with the prediction log's disk full again at shutdown, the
            # outcomes are written, and the predictions left over are spilled.
            feedback = server.request(
                "/feedback", {"outcomes": [{"customer_id": f"full-{i}", "churned": True}
                                           for i in range(3)]},
            )  # fmt: skip
            assert feedback.status == 200
            filler = fill(predictions)
            for i in range(20):
                assert server.predict(customer(customer_id=f"late-{i}")).status == 200
        logged = read_log(predictions)
        spilled = read_log(spill / "production" / "predictions")
        assert logged["prediction_id"].is_unique
        assert len(logged) + len(spilled) == answered + 20
    outcomes = read_log(home.serving_log("production", "feedback"))
    assert sorted(outcomes["customer_id"]) == ["full-0", "full-1", "full-2"]


def test_without_a_spill_folder_a_full_disk_drops_the_oldest_and_counts_them(
    registry: Registry, tmp_path: Path
) -> None:
    home = served_home(registry, tmp_path)
    predictions = home.serving_log("production", "predictions")
    with small_disk(predictions):
        fill(predictions)
        with serve(home, CHURN_LOG_MAX_BUFFER_RECORDS="200") as server:
            for start in range(0, 1_000, MAX_RECORDS):
                records = [customer(customer_id=f"drop-{start + n}") for n in range(MAX_RECORDS)]
                assert server.predict(*records).status == 200

            # The bound holds at each flush (every CHURN_LOG_FLUSH_SECONDS): records appended
            # since the last one wait above it until the next drops them.
            def bounded() -> bool:
                dropped = sum(server.metric("churn_log_dropped_records_total", log="predictions"))
                backlog = server.metric("churn_log_backlog_records", log="predictions")
                return dropped >= 600 and bool(backlog) and backlog[0] <= 200 + MAX_RECORDS

            eventually(
                bounded,
                explain=lambda: str(server.metric("churn_log_backlog_records", log="predictions")),
            )
    assert "dropped its" in server.log_file.read_text()
