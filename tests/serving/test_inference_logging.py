"""Inference logging: every request to an endpoint with inference tables on is one payload row.

One endpoint (`inflog-<id>`) serves the echo agent (100% of traffic, with a secret-backed
environment variable), the example responder (0%, for streams) and the feedback model (0%,
natively), with inference tables on in a schema of its own. Real clients (httpx, openai,
databricks-sdk, curl) send requests; the rows are read with polars and through the SQL API.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import polars as pl
import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.service.serving import ChatMessage, ChatMessageRole

from tests.harness import ServerProcess, inference_table_config
from tests.serving.conftest import (
    ECHO_MODEL,
    RESPONDER_MODEL,
    create_principal,
    set_permission,
    wait_endpoint,
)

UC = "/api/2.1/unity-catalog"
SECRET_VALUE = "inflog-s3cr3t-Zq9-never-logged"
SUFFIX = uuid.uuid4().hex[:8]
CATALOG = f"inflog_{SUFFIX}"
SCHEMA = "agents"
ENDPOINT = f"inflog-{SUFFIX}"
PREFIX = f"bot_{SUFFIX}"
TABLE = f"{CATALOG}.{SCHEMA}.{PREFIX}_payload"
CONTEXT = "Context:\nRefunds take 5 days. Shipping is free for orders over 50 euros."

EXPECTED_SCHEMA = {
    "databricks_request_id": pl.String,
    "client_request_id": pl.String,
    "date": pl.Date,
    "timestamp_ms": pl.Int64,
    "status_code": pl.Int32,
    "execution_time_ms": pl.Int64,
    "request": pl.String,
    "response": pl.String,
    "sampling_fraction": pl.Float64,
    "request_metadata": pl.Map(pl.String, pl.String),
    "served_entity_name": pl.String,
    "logging_error_codes": pl.List(pl.String),
    "requester": pl.String,
}


@dataclass
class Logged:
    server: ServerProcess
    admin: httpx.Client
    endpoint: dict[str, Any]
    path: Path  # the payload table's directory

    def rows(self, request_ids: list[str], timeout: float = 15.0) -> pl.DataFrame:
        """The rows of these requests, once all are committed (polled)."""
        deadline = time.monotonic() + timeout
        while True:
            frame = pl.DataFrame()
            if (self.path / "_delta_log").is_dir():
                frame = (
                    pl.scan_delta(str(self.path))
                    .filter(pl.col("databricks_request_id").is_in(request_ids))
                    .collect()
                )
            if frame.height >= len(request_ids) or time.monotonic() > deadline:
                return frame
            time.sleep(0.1)


@pytest.fixture(scope="module")
def logged(serving_server: ServerProcess) -> Iterator[Logged]:
    with serving_server.client() as admin:
        for path, body in (
            (f"{UC}/catalogs", {"name": CATALOG}),
            (f"{UC}/schemas", {"name": SCHEMA, "catalog_name": CATALOG}),
        ):
            response = admin.post(path, json=body)
            assert response.status_code == 200, response.text
        assert (
            admin.post("/api/2.0/secrets/scopes/create", json={"scope": f"inflog{SUFFIX}"}).status_code == 200
        )
        assert (
            admin.post(
                "/api/2.0/secrets/put",
                json={"scope": f"inflog{SUFFIX}", "key": "k", "string_value": SECRET_VALUE},
            ).status_code
            == 200
        )
        config = {
            "served_entities": [
                {
                    "name": "echo",
                    "entity_name": ECHO_MODEL,
                    "entity_version": "1",
                    "workload_size": "Small",
                    "scale_to_zero_enabled": False,
                    "environment_vars": {"AGENT_SECRET": f"{{{{secrets/inflog{SUFFIX}/k}}}}"},
                },
                {
                    "name": "responder",
                    "entity_name": RESPONDER_MODEL,
                    "entity_version": "1",
                    "workload_size": "Small",
                    "scale_to_zero_enabled": False,
                },
                {
                    "name": "feedback",
                    "entity_name": f"{CATALOG}.{SCHEMA}.feedback",
                    "entity_version": "1",
                    "workload_size": "Small",
                    "scale_to_zero_enabled": False,
                },
            ],
            "traffic_config": {
                "routes": [
                    {"served_model_name": "echo", "traffic_percentage": 100},
                    {"served_model_name": "responder", "traffic_percentage": 0},
                    {"served_model_name": "feedback", "traffic_percentage": 0},
                ]
            },
        }
        created = admin.post(
            "/api/2.0/serving-endpoints",
            json={
                "name": ENDPOINT,
                "config": config,
                "ai_gateway": {"inference_table_config": inference_table_config(CATALOG, SCHEMA, PREFIX)},
            },
        )
        assert created.status_code == 200, created.text
        ready = wait_endpoint(admin, ENDPOINT)
        assert ready["state"]["ready"] == "READY", ready
        path = serving_server.home / "warehouse" / CATALOG / SCHEMA / f"{PREFIX}_payload"
        yield Logged(serving_server, admin, ready, path)
        admin.delete(f"/api/2.0/serving-endpoints/{ENDPOINT}")


def _chat(text: str = "hello", **extra: object) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **extra}


def test_the_payload_table_is_created_and_registered_on_enable(logged: Logged) -> None:
    assert (logged.path / "_delta_log").is_dir(), "created when inference tables were turned on"
    info = logged.admin.get(f"{UC}/tables/{TABLE}")
    assert info.status_code == 200, info.text
    columns = [c["name"] for c in info.json()["columns"]]
    assert columns == list(EXPECTED_SCHEMA)
    # Idempotent: turning it on again (the SDK's put_ai_gateway) keeps the one table.
    w = WorkspaceClient(host=logged.server.url, token=logged.server.admin_token)
    again = w.api_client.do(
        "PUT",
        f"/api/2.0/serving-endpoints/{ENDPOINT}/ai-gateway",
        body={
            "inference_table_config": {
                "catalog_name": CATALOG,
                "schema_name": SCHEMA,
                "table_name_prefix": PREFIX,
                "enabled": True,
            }
        },
    )
    assert again["inference_table_config"]["enabled"] is True


def test_rows_match_requests_one_to_one_across_clients_and_errors(logged: Logged) -> None:
    server, admin = logged.server, logged.admin
    url = f"/serving-endpoints/{ENDPOINT}/invocations"
    sent: dict[str, int] = {}  # x-request-id -> status the client got

    def keep(response: httpx.Response, status: int) -> None:
        assert response.status_code == status, response.text
        sent[response.headers["x-request-id"]] = status

    keep(admin.post(url, json=_chat("plain", client_request_id="client-7")), 200)
    keep(admin.post(url, content=b"{not json", headers={"content-type": "application/json"}), 400)
    keep(admin.post(url, content=b"x" * (300 * 1024)), 413)  # over the server's 256 KiB limit
    keep(admin.post(url, json=_chat("raise")), 500)
    keep(admin.post(url, json=_chat("sleep 5")), 504)  # the server's endpoint timeout is 3 s
    keep(admin.post(f"/serving-endpoints/{ENDPOINT}/served-models/nope/invocations", json=_chat()), 404)
    nowhere = admin.post("/serving-endpoints/no-such-endpoint/invocations", json=_chat())
    assert nowhere.status_code == 404, "not on an endpoint: no row"

    client = openai.OpenAI(base_url=f"{server.url}/serving-endpoints", api_key=server.admin_token)
    raw = client.chat.completions.with_raw_response.create(
        model=ENDPOINT, messages=[{"role": "user", "content": "via openai"}]
    )
    assert raw.parse().choices[0].message.content == "v1: via openai"
    sent[raw.headers["x-request-id"]] = 200

    w = WorkspaceClient(host=server.url, token=server.admin_token)
    answer = w.serving_endpoints.query(
        ENDPOINT, messages=[ChatMessage(role=ChatMessageRole.USER, content="sdk")]
    )
    assert answer.choices[0].message.content == "v1: sdk"
    # The SDK's response object hides headers: its row is found by its request below.

    # 429: a per-user limit of 0 on a second endpoint (no served entity needed: limits come first).
    limited = f"inflog-limited-{SUFFIX}"
    created = admin.post(
        "/api/2.0/serving-endpoints",
        json={
            "name": limited,
            "ai_gateway": {
                "rate_limits": [{"calls": 0, "key": "user", "renewal_period": "minute"}],
                "inference_table_config": inference_table_config(CATALOG, SCHEMA, PREFIX),
            },
        },
    )
    assert created.status_code == 200, created.text
    keep(admin.post(f"/serving-endpoints/{limited}/invocations", json=_chat()), 429)

    frame = logged.rows(list(sent))
    assert sorted(frame["databricks_request_id"].to_list()) == sorted(sent), "exactly one row per request"
    got = dict(zip(frame["databricks_request_id"], frame["status_code"], strict=True))
    assert got == sent
    assert dict(frame.schema) == EXPECTED_SCHEMA

    row = frame.filter(pl.col("client_request_id") == "client-7").row(0, named=True)
    assert json.loads(row["request"])["messages"][0]["content"] == "plain"
    assert json.loads(row["response"])["choices"][0]["message"]["content"] == "v1: plain"
    metadata = row["request_metadata"]
    if not isinstance(metadata, dict):  # a map may come back as key/value pairs
        metadata = {m["key"]: m["value"] for m in metadata}
    assert metadata == {
        "endpoint_name": ENDPOINT,
        "model_name": ECHO_MODEL,
        "model_version": "1",
        "served_entity_name": "echo",
    }
    assert row["served_entity_name"] == "echo" and row["sampling_fraction"] == 1.0
    assert row["requester"] and row["date"] is not None and row["timestamp_ms"] > 0
    too_large = frame.filter(pl.col("status_code") == 413).row(0, named=True)
    assert json.loads(too_large["request"])["size_bytes"] == 300 * 1024
    assert json.loads(too_large["response"])["error_code"]

    sdk_rows = pl.scan_delta(str(logged.path)).filter(pl.col("request").str.contains('"sdk"')).collect()
    assert sdk_rows.height == 1 and sdk_rows["status_code"][0] == 200


def test_trace_is_in_the_row_and_only_returned_when_asked(logged: Logged) -> None:
    url = f"/serving-endpoints/{ENDPOINT}/invocations"
    plain = logged.admin.post(url, json=_chat("no trace please"))
    asked = logged.admin.post(url, json=_chat("trace please", databricks_options={"return_trace": True}))
    assert plain.status_code == asked.status_code == 200
    assert "databricks_output" not in plain.json()
    assert asked.json()["databricks_output"]["trace"]["data"]["spans"]
    ids = [plain.headers["x-request-id"], asked.headers["x-request-id"]]
    for row in logged.rows(ids).iter_rows(named=True):
        trace = json.loads(row["response"])["databricks_output"]["trace"]
        assert any(s["name"] == "echo" for s in trace["data"]["spans"]), "the trace is always logged"


def test_a_stream_is_logged_as_its_aggregate(logged: Logged) -> None:
    body = {
        "messages": [
            {"role": "system", "content": CONTEXT},
            {"role": "user", "content": "How long do refunds take?"},
        ],
        "stream": True,
    }
    with logged.admin.stream(
        "POST", f"/serving-endpoints/{ENDPOINT}/served-models/responder/invocations", json=body
    ) as response:
        assert response.status_code == 200
        request_id = response.headers["x-request-id"]
        events = "".join(response.iter_text())
    assert "event: trace" not in events, "the trace is not streamed unless asked for"
    row = logged.rows([request_id]).row(0, named=True)
    logged_response = json.loads(row["response"])
    # The responder streams chat completion chunks: logged as the one ChatCompletion they add up to.
    assert logged_response["object"] == "chat.completion", "the aggregate, not raw events"
    assert logged_response["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Refunds take 5 days.",
    }
    assert logged_response["databricks_output"]["trace"] is not None
    # The formatting flow turns it into a request-log row like any other.
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    from agentdeploy.tables.formatting import format_request_logs

    payload = DeltaTable(str(logged.path)).to_pyarrow_table()  # as the flow reads it
    formatted = format_request_logs(payload.filter(pc.equal(payload["databricks_request_id"], request_id)))
    formatted = formatted.to_pylist()
    assert [(r["databricks_request_id"], r["request"], r["response"]) for r in formatted] == [
        (request_id, "How long do refunds take?", "Refunds take 5 days.")
    ]


def test_secret_values_never_reach_the_payload_table(logged: Logged) -> None:
    response = logged.admin.post(
        f"/serving-endpoints/{ENDPOINT}/invocations", json=_chat(f"my key is {SECRET_VALUE}")
    )
    assert response.status_code == 200 and SECRET_VALUE in response.text, "the client still gets its answer"
    row = logged.rows([response.headers["x-request-id"]]).row(0, named=True)
    assert "[REDACTED]" in row["request"] and "[REDACTED]" in row["response"]
    for data_file in logged.path.rglob("*.parquet"):
        assert SECRET_VALUE.encode() not in data_file.read_bytes()


def _feedback(served_id: str, **overrides: Any) -> dict[str, Any]:
    record = {
        "source": {"id": "reviewer@example.com", "type": "human"},
        "request_id": served_id,
        "text_assessments": [
            {
                "ratings": {
                    "answer_correct": {"value": "positive"},
                    "accurate": {"value": "negative", "rationale": "stale"},
                },
                "free_text_comment": "close",
                "suggested_output": "better",
            }
        ],
        "retrieval_assessments": [{"position": 0, "ratings": {"groundedness": {"value": "positive"}}}],
    }
    record.update(overrides)
    return {"dataframe_records": [record]}


def test_the_docs_curl_for_feedback_succeeds_and_is_logged(logged: Logged) -> None:
    served = logged.admin.post(f"/serving-endpoints/{ENDPOINT}/invocations", json=_chat("rate me"))
    request_id = served.headers["x-request-id"]
    body = _feedback(request_id)
    body["dataframe_records"][0]["text_assessments"] = json.dumps(
        body["dataframe_records"][0]["text_assessments"]
    )
    env = {**os.environ, "TOKEN": logged.server.admin_token, "BODY": json.dumps(body)}
    done = subprocess.run(
        [
            "sh",
            "-c",
            f'curl -sS -i -u token:$TOKEN -X POST -H "Content-Type: application/json" -d "$BODY" '
            f"{logged.server.url}/serving-endpoints/{ENDPOINT}/served-models/feedback/invocations",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    head, _, payload = done.stdout.replace("\r\n", "\n").partition("\n\n")
    assert head.startswith("HTTP/1.1 200"), done.stdout
    assert json.loads(payload) == {"predictions": [{"result": "accepted", "request_id": request_id}]}
    feedback_id = next(
        line.split(":", 1)[1].strip()
        for line in head.splitlines()
        if line.lower().startswith("x-request-id:")
    )
    row = logged.rows([feedback_id]).row(0, named=True)
    assert row["served_entity_name"] == "feedback" and row["status_code"] == 200
    assert json.loads(row["request"])["dataframe_records"][0]["request_id"] == request_id


def test_feedback_for_an_older_request_is_found_in_the_payload_table(logged: Logged) -> None:
    """A request served before this server's memory (here: written to the table directly)."""
    old = logged.admin.post(f"/serving-endpoints/{ENDPOINT}/invocations", json=_chat("old"))
    logged.rows([old.headers["x-request-id"]])  # committed
    from deltalake import write_deltalake

    from agentdeploy.tables.payload import build_record, records_to_arrow

    ancient = f"ancient-{uuid.uuid4().hex}"
    write_deltalake(
        str(logged.path),
        records_to_arrow(
            [
                build_record(
                    table=TABLE,
                    databricks_request_id=ancient,
                    request=b"{}",
                    response=b"{}",
                    trace=None,
                    status_code=200,
                    timestamp_ms=int(time.time() * 1000),
                    execution_time_ms=1,
                    endpoint_name=ENDPOINT,
                    max_payload_bytes=1 << 20,
                )
            ]
        ),
        mode="append",
    )
    response = logged.admin.post(
        f"/serving-endpoints/{ENDPOINT}/served-models/feedback/invocations", json=_feedback(ancient)
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"request_id": "never-served-by-this-endpoint"}, "request_id"),
        ({"source": None}, "source"),
        ({"text_assessments": [{"ratings": {"answer_correct": "positive"}}]}, "ratings.answer_correct"),
        ({"retrieval_assessments": [{"position": -1, "ratings": {}}]}, "position"),
        ({"text_assessments": "{not json"}, "text_assessments"),
    ],
)
def test_invalid_feedback_is_a_400_naming_the_field_and_a_row(
    logged: Logged, overrides: dict, field: str
) -> None:
    served = logged.admin.post(f"/serving-endpoints/{ENDPOINT}/invocations", json=_chat("rated"))
    response = logged.admin.post(
        f"/serving-endpoints/{ENDPOINT}/served-models/feedback/invocations",
        json=_feedback(served.headers["x-request-id"], **overrides),
    )
    assert response.status_code == 400, response.text
    assert field in response.json()["message"]
    row = logged.rows([response.headers["x-request-id"]]).row(0, named=True)
    assert row["status_code"] == 400 and row["served_entity_name"] == "feedback"


def test_reading_the_table_needs_select_also_through_sql(logged: Logged) -> None:
    admin = logged.admin
    marker = admin.post(f"/serving-endpoints/{ENDPOINT}/invocations", json=_chat("sql"))
    request_id = marker.headers["x-request-id"]
    logged.rows([request_id])
    warehouse = admin.post("/api/2.0/sql/warehouses", json={"name": f"wh-{SUFFIX}"})
    assert warehouse.status_code == 200, warehouse.text
    statement = {
        "warehouse_id": warehouse.json()["id"],
        "wait_timeout": "30s",
        "statement": f"SELECT status_code, served_entity_name FROM {TABLE} WHERE databricks_request_id = :rid",
        "parameters": [{"name": "rid", "value": request_id}],
    }
    answer = admin.post("/api/2.0/sql/statements", json=statement)
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"]["data_array"] == [["200", "echo"]]

    reader = create_principal(admin, f"inflog-reader-{SUFFIX}")
    set_permission(admin, logged.endpoint["id"], reader, "CAN_QUERY")
    with logged.server.client(reader.token) as client:
        permissions = admin.patch(
            f"/api/2.0/permissions/warehouses/{warehouse.json()['id']}",
            json={
                "access_control_list": [
                    {"service_principal_name": reader.application_id, "permission_level": "CAN_USE"}
                ]
            },
        )
        assert permissions.status_code == 200, permissions.text
        denied = client.post("/api/2.0/sql/statements", json=statement)
        assert denied.status_code == 403, denied.text
        for securable, privileges in (
            ("catalog", ["USE_CATALOG"]),
            ("schema", ["USE_SCHEMA"]),
            ("table", ["SELECT"]),
        ):
            full = {"catalog": CATALOG, "schema": f"{CATALOG}.{SCHEMA}", "table": TABLE}[securable]
            granted = admin.patch(
                f"{UC}/permissions/{securable}/{full}",
                json={"changes": [{"principal": reader.application_id, "add": privileges}]},
            )
            assert granted.status_code == 200, granted.text
        allowed = client.post("/api/2.0/sql/statements", json=statement)
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["result"]["data_array"] == [["200", "echo"]]
