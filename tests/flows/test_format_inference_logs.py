"""The `format-inference-logs` flow on a real agentdeploy server, real Delta tables, a real Prefect
server and a real MLflow tracking server.

The payload table is written the way the gateway's writer writes it (`build_record` ->
`records_to_arrow` -> one Delta commit per batch) and registered in the catalog; traces are
captured the way a worker captures them (`pop_trace` in a serving-mode process).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import polars as pl
import pytest
from deltalake import DeltaTable, write_deltalake

from agentdeploy.tables.formatting import ASSESSMENT_LOGS_SCHEMA, REQUEST_LOGS_SCHEMA
from agentdeploy.tables.payload import PayloadRecord, build_record, records_to_arrow
from tests.flows.conftest import PrefectServer
from tests.harness import REPO, MlflowServer, ServerProcess, inference_table_config

UC = "/api/2.1/unity-catalog"
CATALOG = "flows_cat"


@dataclass
class Endpoint:
    name: str
    schema: str
    prefix: str
    block: str

    @property
    def payload(self) -> str:
        return f"{CATALOG}.{self.schema}.{self.prefix}_payload"

    @property
    def request_logs(self) -> str:
        return f"{self.payload}_request_logs"

    @property
    def assessment_logs(self) -> str:
        return f"{self.payload}_assessment_logs"


TRACE_CAPTURE = textwrap.dedent("""
    import json
    from agentdeploy.serving.tracing import enable_request_traces, pop_trace, request_context
    enable_request_traces()
    import mlflow

    @mlflow.trace(span_type="AGENT")
    def agent(question):
        with mlflow.start_span("retrieve", span_type="RETRIEVER") as span:
            span.set_outputs([{"page_content": "Delta is a table format.", "metadata": {"doc_uri": "faq"}}])
        return "answer: " + question

    out = []
    for i in range(3):
        with request_context(f"rid-{i}"):
            agent(f"question {i}")
        out.append(pop_trace(f"rid-{i}"))
    print(json.dumps(out))
""")


@pytest.fixture(scope="session")
def trace_capture() -> Iterator[subprocess.Popen[str]]:
    """Started before the servers (it is listed first), so it runs while they start."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AGENTDEPLOY_"))}
    proc = subprocess.Popen(
        [sys.executable, "-c", TRACE_CAPTURE],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=str(REPO),
        env=env,
    )
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def traces(trace_capture: subprocess.Popen[str]) -> list[dict[str, Any]]:
    """Three traces captured as the worker does: MLflow's serving path, then `pop_trace`."""
    out, _ = trace_capture.communicate(timeout=300)
    assert trace_capture.returncode == 0, "capturing traces failed"
    captured = json.loads(out.strip().splitlines()[-1])
    assert all(t and t["data"]["spans"] for t in captured)
    return captured


@pytest.fixture(scope="module")
def workspace(
    trace_capture: subprocess.Popen[str],
    server: ServerProcess,
    prefect_server: PrefectServer,
    mlflow_tracking: MlflowServer,
) -> Iterator[httpx.Client]:
    """The admin's client, the admin's WorkspaceCredentials block, MLflow pointed at the server."""
    import mlflow

    from blocks.workspace import WorkspaceCredentials

    WorkspaceCredentials(host=server.url, token=server.admin_token).save("agentdeploy-admin", overwrite=True)
    mlflow.set_tracking_uri(mlflow_tracking.url)
    with server.client() as admin:
        response = admin.post(f"{UC}/catalogs", json={"name": CATALOG})
        assert response.status_code in (200, 409), response.text
        yield admin


def make_endpoint(admin: httpx.Client, server: ServerProcess) -> Endpoint:
    """An endpoint with inference tables on, in a schema of its own (its payload table registered)."""
    suffix = uuid.uuid4().hex[:8]
    endpoint = Endpoint(
        name=f"agents_bot_{suffix}", schema=f"s_{suffix}", prefix=f"bot_{suffix}", block="agentdeploy-admin"
    )
    response = admin.post(f"{UC}/schemas", json={"name": endpoint.schema, "catalog_name": CATALOG})
    assert response.status_code == 200, response.text
    response = admin.post(
        "/api/2.0/serving-endpoints",
        json={
            "name": endpoint.name,
            "ai_gateway": {
                "inference_table_config": inference_table_config(CATALOG, endpoint.schema, endpoint.prefix)
            },
        },
    )
    assert response.status_code == 200, response.text
    # Enabling inference tables creates and registers the payload table (serving/api.py).
    response = admin.get(f"{UC}/tables/{endpoint.payload}")
    assert response.status_code == 200, response.text
    return endpoint


def record(
    endpoint: Endpoint,
    request_id: str,
    request: Any,
    response: Any,
    *,
    trace: Any = None,
    status: int = 200,
    entity: str | None = None,
) -> PayloadRecord:
    return build_record(
        table=endpoint.payload,
        databricks_request_id=request_id,
        request=orjson.dumps(request),
        response=orjson.dumps(response),
        trace=orjson.dumps(trace) if trace is not None else None,
        status_code=status,
        timestamp_ms=int(time.time() * 1000),
        execution_time_ms=5,
        max_payload_bytes=1 << 24,
        endpoint_name=endpoint.name,
        model_name="flows_cat.s.bot",
        model_version="1",
        served_entity_name=entity or f"{endpoint.prefix}_1",
        requester="admin",
    )


def append_payload(server: ServerProcess, endpoint: Endpoint, records: list[PayloadRecord]) -> None:
    """One Delta commit, as one flush of the gateway's payload writer."""
    table = DeltaTable(
        str(server.home / "warehouse" / CATALOG / endpoint.schema / f"{endpoint.prefix}_payload")
    )
    write_deltalake(table, records_to_arrow(records), mode="append")


def every_shape(endpoint: Endpoint, traces: list[dict[str, Any]], tag: str) -> list[PayloadRecord]:
    """ResponsesAgent, chat, chat completions, an error, feedback (accepted and refused)."""
    return [
        record(
            endpoint,
            f"{tag}-responses",
            {
                "input": [{"role": "user", "content": "What is Delta?"}],
                "context": {"conversation_id": "conv-1"},
            },
            {
                "output": [
                    {
                        "type": "message",
                        "id": "m",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": "A table format."}],
                    }
                ]
            },
            trace=traces[0],
        ),
        record(
            endpoint,
            f"{tag}-chat",
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "hello"},
                    {"role": "user", "content": "chat question"},
                ]
            },
            {"messages": [{"role": "assistant", "content": "chat answer", "id": "a"}]},
            trace=traces[1],
        ),
        record(
            endpoint,
            f"{tag}-completions",
            {"model": endpoint.name, "messages": [{"role": "user", "content": "completion question"}]},
            {
                "object": "chat.completion",
                "choices": [
                    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "done"}}
                ],
            },
            trace=traces[2],
        ),
        record(
            endpoint,
            f"{tag}-error",
            {"input": [{"role": "user", "content": "boom"}]},
            {"error_code": "INTERNAL_ERROR", "message": "agent failed"},
            status=500,
        ),
        record(
            endpoint,
            f"{tag}-feedback",
            {
                "dataframe_records": [
                    {
                        "source": {"id": "reviewer@example.com", "type": "human"},
                        "request_id": f"{tag}-responses",
                        "text_assessments": [
                            {
                                "ratings": {"answer_correct": {"value": "positive", "rationale": "exact"}},
                                "free_text_comment": "good answer",
                            }
                        ],
                        "retrieval_assessments": [
                            {"position": 0, "ratings": {"groundedness": {"value": "positive"}}}
                        ],
                    }
                ]
            },
            {"ok": True},
            entity="feedback",
        ),
        record(
            endpoint,
            f"{tag}-bad-feedback",
            {"dataframe_records": [{"request_id": "x"}]},
            {"error_code": "INVALID_PARAMETER_VALUE", "message": "source"},
            status=400,
            entity="feedback",
        ),
    ]


def table_path(server: ServerProcess, endpoint: Endpoint, full_name: str) -> str:
    return str(server.home / "warehouse" / CATALOG / endpoint.schema / full_name.split(".")[2])


def counts(server: ServerProcess, endpoint: Endpoint) -> tuple[int, int]:
    return (
        pl.scan_delta(table_path(server, endpoint, endpoint.request_logs)).select(pl.len()).collect().item(),
        pl.scan_delta(table_path(server, endpoint, endpoint.assessment_logs))
        .select(pl.len())
        .collect()
        .item(),
    )


def run_flow(endpoint: Endpoint, tracking: MlflowServer, **params: Any) -> list[dict[str, Any]]:
    from flows.format_inference_logs import format_inference_logs

    return format_inference_logs(endpoint_name=endpoint.name, mlflow_tracking_uri=tracking.url, **params)


def test_every_shape_becomes_rows_of_the_seed_columns_readable_with_polars_and_sql(
    server: ServerProcess,
    workspace: httpx.Client,
    mlflow_tracking: MlflowServer,
    traces: list[dict[str, Any]],
) -> None:
    endpoint = make_endpoint(workspace, server)
    append_payload(server, endpoint, every_shape(endpoint, traces, "a")[:3])
    append_payload(server, endpoint, every_shape(endpoint, traces, "a")[3:])
    [summary] = run_flow(endpoint, mlflow_tracking)
    assert (summary["request_rows"], summary["assessment_rows"], summary["traces"]) == (4, 2, 3)

    requests = pl.read_delta(table_path(server, endpoint, endpoint.request_logs))
    assert requests.columns == REQUEST_LOGS_SCHEMA.names
    assert requests.schema["timestamp"] == pl.Datetime("us", "UTC")
    assert requests.schema["request_metadata"] == pl.Map(pl.String, pl.String)
    by_id = {r["databricks_request_id"]: r for r in requests.to_dicts()}
    assert sorted(by_id) == ["a-chat", "a-completions", "a-error", "a-responses"]
    assert (
        by_id["a-responses"]["request"],
        by_id["a-responses"]["response"],
        by_id["a-responses"]["conversation_id"],
    ) == ("What is Delta?", "A table format.", "conv-1")
    assert (by_id["a-chat"]["request"], by_id["a-chat"]["response"]) == ("chat question", "chat answer")
    assert (by_id["a-completions"]["request"], by_id["a-completions"]["response"]) == (
        "completion question",
        "done",
    )
    assert by_id["a-error"]["status_code"] == 500 and by_id["a-error"]["trace"] is None
    assert json.loads(by_id["a-responses"]["trace"])["data"]["spans"][0]["name"] == "agent"

    assessments = pl.read_delta(table_path(server, endpoint, endpoint.assessment_logs))
    assert assessments.columns == ASSESSMENT_LOGS_SCHEMA.names
    assert assessments.height == 2 and set(assessments["request_id"]) == {"a-responses"}
    assert assessments.schema["source"] == pl.Struct({"id": pl.String, "type": pl.String})

    # Registered in the catalog where they are stored, owned by the endpoint's creator.
    creator = workspace.get(f"/api/2.0/serving-endpoints/{endpoint.name}").json()["creator"]
    for name, schema in (
        (endpoint.request_logs, REQUEST_LOGS_SCHEMA),
        (endpoint.assessment_logs, ASSESSMENT_LOGS_SCHEMA),
    ):
        info = workspace.get(f"{UC}/tables/{name}").json()
        assert info["owner"] == creator
        assert Path(info["storage_location"].removeprefix("file://")) == Path(
            table_path(server, endpoint, name)
        )
        assert [c["name"] for c in info["columns"]] == schema.names

    # And through the SQL statements API (DuckDB over the same Delta files).
    warehouse = workspace.post("/api/2.0/sql/warehouses", json={"name": f"wh-{endpoint.schema}"})
    assert warehouse.status_code == 200, warehouse.text
    answer = workspace.post(
        "/api/2.0/sql/statements",
        json={
            "warehouse_id": warehouse.json()["id"],
            "wait_timeout": "30s",
            "statement": f"SELECT databricks_request_id, request, status_code FROM {endpoint.request_logs} "
            "ORDER BY databricks_request_id",
        },
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"]["state"] == "SUCCEEDED", body
    assert [row[0] for row in body["result"]["data_array"]] == [
        "a-chat",
        "a-completions",
        "a-error",
        "a-responses",
    ]
    types = {c["name"]: c["type_name"] for c in body["manifest"]["schema"]["columns"]}
    assert types == {"databricks_request_id": "STRING", "request": "STRING", "status_code": "INT"}


def test_a_second_run_adds_nothing_and_new_rows_are_added_once(
    server: ServerProcess,
    workspace: httpx.Client,
    mlflow_tracking: MlflowServer,
    traces: list[dict[str, Any]],
) -> None:
    endpoint = make_endpoint(workspace, server)
    append_payload(server, endpoint, every_shape(endpoint, traces, "b"))
    run_flow(endpoint, mlflow_tracking, export_traces=False)
    assert counts(server, endpoint) == (4, 2)
    [again] = run_flow(endpoint, mlflow_tracking, export_traces=False)
    assert (again["request_rows"], again["assessment_rows"]) == (0, 0)
    assert counts(server, endpoint) == (4, 2)
    append_payload(server, endpoint, every_shape(endpoint, traces, "c"))
    run_flow(endpoint, mlflow_tracking, export_traces=False)
    assert counts(server, endpoint) == (8, 4)


KILLABLE = """
import sys
from deltalake import DeltaTable
from agentdeploy.tables.formatting import format_app_id, format_increment
payload, request_logs, assessment_logs, name = sys.argv[1:5]
# One payload version per commit, so the pass makes many commits and is killed between them.
format_increment(DeltaTable(payload), DeltaTable(request_logs), DeltaTable(assessment_logs),
                 app_id=format_app_id(name), max_versions=1)
"""


def test_a_run_killed_half_way_and_run_again_adds_nothing_twice(
    server: ServerProcess,
    workspace: httpx.Client,
    mlflow_tracking: MlflowServer,
    traces: list[dict[str, Any]],
) -> None:
    endpoint = make_endpoint(workspace, server)
    commits = 40
    for i in range(commits):
        append_payload(server, endpoint, every_shape(endpoint, traces, f"k{i}")[i % 2 * 3 : (i % 2 + 1) * 3])
    run_flow(endpoint, mlflow_tracking, export_traces=False, maintenance=False)  # creates the log tables
    assert counts(server, endpoint)[0] > 0
    # Start over on fresh log tables is not possible (the watermark is in them), so add a backlog
    # and kill a pass working through it after a few of its commits.
    for i in range(commits, 2 * commits):
        append_payload(server, endpoint, every_shape(endpoint, traces, f"k{i}")[i % 2 * 3 : (i % 2 + 1) * 3])
    request_logs = table_path(server, endpoint, endpoint.request_logs)
    before = DeltaTable(request_logs).version()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            KILLABLE,
            table_path(server, endpoint, endpoint.payload),
            request_logs,
            table_path(server, endpoint, endpoint.assessment_logs),
            endpoint.payload,
        ],
        cwd=str(REPO),
    )
    deadline = time.monotonic() + 120
    while DeltaTable(request_logs).version() < before + 3:
        assert proc.poll() is None, "the pass ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = counts(server, endpoint)
    expected = (2 * commits // 2 * 4, 2 * commits // 2 * 2)  # per pair of commits: 4 requests, 2 assessments
    assert partial[0] < expected[0], "the kill came after the pass had finished"
    run_flow(endpoint, mlflow_tracking, export_traces=False)
    assert counts(server, endpoint) == expected
    ids = pl.read_delta(request_logs)["databricks_request_id"]
    assert ids.n_unique() == ids.len()


def test_a_formatted_trace_is_in_the_agents_experiment_with_the_reviewers_rating(
    server: ServerProcess,
    workspace: httpx.Client,
    mlflow_tracking: MlflowServer,
    traces: list[dict[str, Any]],
    tmp_path: Path,
) -> None:
    import mlflow

    from agentdeploy.tables.trace_export import REQUEST_ID_TAG, experiment_name

    endpoint = make_endpoint(workspace, server)
    append_payload(server, endpoint, every_shape(endpoint, traces, "t"))
    run_flow(endpoint, mlflow_tracking)
    [again] = run_flow(endpoint, mlflow_tracking)  # exported once, even when run again
    assert (again["traces"], again["feedback_rows"]) == (0, 0)

    mlflow.set_tracking_uri(mlflow_tracking.url)
    experiment = mlflow.get_experiment_by_name(experiment_name(endpoint.name))
    assert experiment is not None
    found = mlflow.search_traces(
        locations=[experiment.experiment_id],
        return_type="list",
        filter_string=f"tag.`{REQUEST_ID_TAG}` = 't-responses'",
    )
    assert len(found) == 1
    trace = found[0]
    assert [s.name for s in trace.data.spans] == ["agent", "retrieve"]
    rating = [a for a in trace.info.assessments if a.name == "answer_correct"]
    assert len(rating) == 1
    assert rating[0].value == "positive" and rating[0].rationale == "exact"
    assert rating[0].source.source_type == "HUMAN" and rating[0].source.source_id == "reviewer@example.com"
    assert {a.name for a in trace.info.assessments} >= {"free_text_comment", "groundedness"}
    everything = mlflow.search_traces(locations=[experiment.experiment_id], return_type="list")
    assert len(everything) == 3  # three traced requests, each once

    # A pass killed after copying to MLflow but before its commit: the exports table never got
    # the rows (a fresh one stands for it). The next pass finds the copies and adds nothing.
    from agentdeploy.tables.trace_export import EXPORTS_SCHEMA, export_feedback, export_traces

    lost = DeltaTable.create(str(tmp_path / "exports"), EXPORTS_SCHEMA)
    request_logs = DeltaTable(table_path(server, endpoint, endpoint.request_logs))
    redone = export_traces(
        request_logs, lost, endpoint_name=endpoint.name, request_logs_name=endpoint.request_logs
    )
    assert (redone.exported, redone.skipped) == (0, 3)
    assessment_logs = DeltaTable(table_path(server, endpoint, endpoint.assessment_logs))
    feedback = export_feedback(assessment_logs, lost, assessment_logs_name=endpoint.assessment_logs)
    assert (feedback.exported, feedback.skipped) == (0, 2)
    assert len(mlflow.search_traces(locations=[experiment.experiment_id], return_type="list")) == 3
    trace = mlflow.get_trace(trace.info.trace_id)
    assert len([a for a in trace.info.assessments if a.name == "answer_correct"]) == 1


SERVE = """
from flows.format_inference_logs import format_inference_logs
format_inference_logs.serve(name="format-inference-logs", limit=2, print_starting_message=False)
"""


def wait_for_deployment(name: str, runner: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    """Until the runner has registered the deployment on the Prefect server."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            try:
                client.read_deployment_by_name(name)
                return
            except ObjectNotFound:
                assert runner.poll() is None, "the runner exited"
                assert time.monotonic() < deadline, f"deployment {name} never appeared"
                time.sleep(0.5)


def test_logs_format_command_runs_the_served_deployment(
    server: ServerProcess,
    prefect_server: PrefectServer,
    workspace: httpx.Client,
    mlflow_tracking: MlflowServer,
    traces: list[dict[str, Any]],
    tmp_path: Path,
) -> None:
    from tests.flows.conftest import prefect_env

    endpoint = make_endpoint(workspace, server)
    append_payload(server, endpoint, every_shape(endpoint, traces, "cli"))
    runner_env = {
        **prefect_env(prefect_server.home),
        "PREFECT_API_URL": prefect_server.api_url,
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "MLFLOW_TRACKING_URI": mlflow_tracking.url,
    }
    runner = subprocess.Popen(
        [sys.executable, "-c", SERVE],
        env=runner_env,
        cwd=str(REPO),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # The CLI user's stack: its home (an empty Prefect auth string: the test server has none),
        # the test Prefect server's port, and the admin's identity.
        home = tmp_path / "cli-home"
        (home / "keys").mkdir(parents=True)
        (home / "keys" / "prefect-api-auth").write_text("")
        port = prefect_server.url.rsplit(":", 1)[1]
        cli_env = {
            k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AGENTDEPLOY_", "MLFLOW_"))
        }
        cli_env.update(
            AGENTDEPLOY_HOME=str(home),
            AGENTDEPLOY_PREFECT_PORT=port,
            AGENTDEPLOY_HOST=server.url,
            AGENTDEPLOY_TOKEN=server.admin_token,
            MLFLOW_TRACKING_URI=mlflow_tracking.url,
        )
        wait_for_deployment("format-inference-logs/format-inference-logs", runner)
        cli = [str(Path(sys.executable).with_name("agentdeploy")), "logs", "format"]
        done = subprocess.run(
            [*cli, endpoint.name, "--timeout", "180"],
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "done" in done.stdout and endpoint.name in done.stdout  # the run's summary names it
        assert counts(server, endpoint) == (4, 2)
        unknown = subprocess.run(
            [*cli, "agents_no_such_endpoint"], env=cli_env, capture_output=True, text=True, timeout=120
        )
        assert unknown.returncode == 1 and "agents_no_such_endpoint" in unknown.stderr
    finally:
        os.killpg(runner.pid, signal.SIGINT)  # a Prefect runner stops on SIGINT (FACTS.md)
        try:
            runner.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait()
