"""Payload rows -> request-log and assessment-log rows: every request shape, feedback, the exact
columns and types, and the incremental pass on real Delta tables (compaction, deletes, a stop
half-way)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from agentdeploy.tables.formatting import (
    ASSESSMENT_LOGS_SCHEMA,
    REQUEST_LOGS_SCHEMA,
    answer_text,
    conversation_id,
    format_assessment_logs,
    format_increment,
    format_request_logs,
    last_user_query,
)
from agentdeploy.tables.payload import PAYLOAD_SCHEMA, PayloadRecord, build_record, records_to_arrow

TABLE = "main.agents.bot_payload"
TRACE = {"info": {"trace_id": "tr-1"}, "data": {"spans": [{"name": "agent", "span_id": "s"}]}}

RESPONSES_REQUEST = {
    "input": [
        {"role": "user", "content": "earlier"},
        {"role": "assistant", "content": "x"},
        {"role": "user", "content": [{"type": "input_text", "text": "What is Delta?"}]},
    ],
    "context": {"conversation_id": "conv-r", "user_id": "u"},
}
RESPONSES_RESPONSE = {
    "output": [
        {"type": "function_call", "call_id": "c", "name": "lookup", "arguments": "{}"},
        {
            "type": "message",
            "id": "m1",
            "role": "assistant",
            "content": [
                {"type": "output_text", "text": "A table "},
                {"type": "output_text", "text": "format."},
            ],
        },
    ]
}
CHAT_REQUEST = {
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "second?"},
    ],
    "custom_inputs": {"conversation_id": "conv-c"},
}
CHAT_AGENT_RESPONSE = {"messages": [{"role": "assistant", "content": "chat answer", "id": "a1"}]}
COMPLETIONS_REQUEST = {
    "model": "agents_bot",
    "messages": [{"role": "user", "content": [{"type": "text", "text": "completion question"}]}],
    "databricks_options": {"conversation_id": "conv-o"},
}
COMPLETIONS_RESPONSE = {
    "object": "chat.completion",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "completion answer"},
            "finish_reason": "stop",
        }
    ],
}
FEEDBACK = {
    "dataframe_records": [
        {
            "source": {"id": "reviewer@example.com", "type": "human"},
            "request_id": "req-responses",
            "text_assessments": [
                {
                    "ratings": {
                        "answer_correct": {"value": "positive", "rationale": "right"},
                        "harmless": {"value": True},
                    },
                    "free_text_comment": "good",
                    "suggested_output": "A Delta table format.",
                }
            ],
            # Given as a JSON string, which the feedback model accepts too.
            "retrieval_assessments": orjson.dumps(
                [
                    {"position": 0, "step_id": "span-7", "ratings": {"groundedness": {"value": "negative"}}},
                    {"position": 1, "ratings": {"relevance": {"value": "positive"}}},
                ]
            ).decode(),
        }
    ]
}


def record(
    request_id: str,
    request: Any,
    response: Any,
    *,
    trace: Any = None,
    status: int = 200,
    entity: str = "bot_1",
    ts: int = 1_764_064_800_123,
) -> PayloadRecord:
    return build_record(
        table=TABLE,
        databricks_request_id=request_id,
        request=orjson.dumps(request),
        response=orjson.dumps(response),
        trace=orjson.dumps(trace) if trace is not None else None,
        status_code=status,
        timestamp_ms=ts,
        execution_time_ms=7,
        max_payload_bytes=1 << 24,
        endpoint_name="agents_bot",
        model_name="main.agents.bot",
        model_version="1",
        served_entity_name=entity,
        requester="alice@example.com",
    )


def payload_rows() -> pa.Table:
    return records_to_arrow(
        [
            record("req-responses", RESPONSES_REQUEST, RESPONSES_RESPONSE, trace=TRACE),
            record("req-chat", CHAT_REQUEST, CHAT_AGENT_RESPONSE),
            record("req-completions", COMPLETIONS_REQUEST, COMPLETIONS_RESPONSE, trace=TRACE),
            record(
                "req-error",
                {"input": [{"role": "user", "content": "boom"}]},
                {"error_code": "INTERNAL_ERROR", "message": "the agent failed"},
                status=500,
            ),
            record("req-feedback", FEEDBACK, {"ok": True}, entity="feedback"),
            record(
                "req-bad-feedback",
                {"dataframe_records": [{"request_id": "x"}]},
                {"error_code": "INVALID_PARAMETER_VALUE"},
                status=400,
                entity="feedback",
            ),
        ]
    )


def test_request_logs_have_the_seed_columns_and_one_row_per_agent_request() -> None:
    logs = format_request_logs(payload_rows())
    assert logs.schema == REQUEST_LOGS_SCHEMA
    frame = pl.from_arrow(logs)
    assert frame.columns == [
        "client_request_id",
        "databricks_request_id",
        "date",
        "timestamp_ms",
        "timestamp",
        "status_code",
        "execution_time_ms",
        "conversation_id",
        "request",
        "response",
        "request_raw",
        "response_raw",
        "trace",
        "sampling_fraction",
        "request_metadata",
        "schema_version",
    ]
    assert frame.schema["timestamp"] == pl.Datetime("us", "UTC") and frame.schema["date"] == pl.Date
    assert frame.schema["status_code"] == pl.Int32 and frame.schema["timestamp_ms"] == pl.Int64
    rows = {r["databricks_request_id"]: r for r in logs.to_pylist()}
    assert sorted(rows) == ["req-chat", "req-completions", "req-error", "req-responses"]  # feedback excluded
    responses = rows["req-responses"]
    assert (responses["request"], responses["response"], responses["conversation_id"]) == (
        "What is Delta?",
        "A table format.",
        "conv-r",
    )
    assert orjson.loads(responses["trace"]) == TRACE
    # The trace has its own column and is not stored a second time in response_raw.
    assert orjson.loads(responses["response_raw"]) == RESPONSES_RESPONSE
    assert orjson.loads(responses["request_raw"]) == RESPONSES_REQUEST
    assert responses["timestamp"].timestamp() * 1000 == responses["timestamp_ms"] == 1_764_064_800_123
    assert dict(responses["request_metadata"]) == {
        "endpoint_name": "agents_bot",
        "model_name": "main.agents.bot",
        "model_version": "1",
        "served_entity_name": "bot_1",
    }
    assert (
        rows["req-chat"]["request"],
        rows["req-chat"]["response"],
        rows["req-chat"]["conversation_id"],
    ) == ("second?", "chat answer", "conv-c")
    assert rows["req-chat"]["trace"] is None
    completions = rows["req-completions"]
    assert (completions["request"], completions["response"], completions["conversation_id"]) == (
        "completion question",
        "completion answer",
        "conv-o",
    )
    error = rows["req-error"]
    assert (error["status_code"], error["request"], error["response"]) == (500, "boom", None)
    assert {r["schema_version"] for r in rows.values()} == {"1"}


def test_assessment_logs_hold_one_row_per_assessment_of_accepted_feedback() -> None:
    logs = format_assessment_logs(payload_rows())
    assert logs.schema == ASSESSMENT_LOGS_SCHEMA
    rows = logs.to_pylist()
    assert len(rows) == 3  # 1 text + 2 retrieval assessments; the refused (400) feedback gives none
    text = [r for r in rows if r["text_assessment"]][0]
    assert text["request_id"] == "req-responses" and text["step_id"] is None
    assert text["source"] == {"id": "reviewer@example.com", "type": "human"}
    assert dict(text["text_assessment"]["ratings"]) == {
        "answer_correct": {"value": "positive", "rationale": "right"},
        "harmless": {"value": "true", "rationale": None},
    }
    assert text["text_assessment"]["free_text_comment"] == "good"
    assert text["text_assessment"]["suggested_output"] == "A Delta table format."
    retrieval = sorted(
        (r for r in rows if r["retrieval_assessment"]), key=lambda r: r["retrieval_assessment"]["position"]
    )
    assert [r["step_id"] for r in retrieval] == ["span-7", None]
    assert dict(retrieval[0]["retrieval_assessment"]["ratings"])["groundedness"]["value"] == "negative"
    assert int(text["timestamp"].timestamp() * 1000) == 1_764_064_800_123


def test_body_readers_tolerate_shapes_they_do_not_know() -> None:
    assert last_user_query({"input": "plain string"}) == "plain string"
    assert last_user_query({"dataframe_split": {}}) is None and last_user_query(None) is None
    assert answer_text({"raw_response": "text"}) is None and answer_text([1, 2]) is None
    assert answer_text({"choices": []}) is None
    assert conversation_id({"context": {"conversation_id": 42}}) == "42"
    # A body that is not JSON at all still gives a row, with the raw text kept.
    rows = format_request_logs(
        records_to_arrow(
            [
                PayloadRecord(
                    table=TABLE,
                    databricks_request_id="r",
                    timestamp_ms=1,
                    status_code=502,
                    execution_time_ms=1,
                    request=b"not json",
                    response=b"<html>bad gateway</html>",
                )
            ]
        )
    )
    row = rows.to_pylist()[0]
    assert row["request"] is None and row["request_raw"] == "not json"
    assert orjson.loads(row["response_raw"]) == {"raw_response": "<html>bad gateway</html>"}


def _tables(root: Path) -> tuple[DeltaTable, DeltaTable, DeltaTable]:
    return (
        DeltaTable.create(str(root / "payload"), PAYLOAD_SCHEMA),
        DeltaTable.create(str(root / "request_logs"), REQUEST_LOGS_SCHEMA),
        DeltaTable.create(str(root / "assessment_logs"), ASSESSMENT_LOGS_SCHEMA),
    )


def _append_requests(payload: DeltaTable, start: int, commits: int, per_commit: int = 3) -> None:
    for c in range(commits):
        batch = [
            record(f"r{start + c * per_commit + i}", CHAT_REQUEST, CHAT_AGENT_RESPONSE, trace=TRACE)
            for i in range(per_commit)
        ]
        if c % 4 == 0:
            batch.append(record(f"f{start + c}", FEEDBACK, {"ok": True}, entity="feedback"))
        write_deltalake(payload, records_to_arrow(batch), mode="append")


def test_incremental_pass_is_exactly_once_through_stops_compaction_and_deletes(tmp_path: Path) -> None:
    payload, request_logs, assessment_logs = _tables(tmp_path)
    _append_requests(payload, 0, 20)  # 60 requests, 5 feedback rows of 3 assessments each
    # A pass that stops after its third commit, as a killed run would.
    stopped = format_increment(
        payload, request_logs, assessment_logs, app_id="t", max_versions=4, stop_after_commits=3
    )
    assert stopped.commits == 3
    # Meanwhile the table is compacted and a row deleted: neither may add or remove log rows.
    payload.optimize.compact()
    payload.delete("databricks_request_id = 'r1'")
    _append_requests(payload, 1000, 4)  # 12 more requests, 1 more feedback row
    done = format_increment(payload, request_logs, assessment_logs, app_id="t", max_versions=4)
    assert done.watermarks == {"request_logs": payload.version(), "assessment_logs": payload.version()}
    again = format_increment(payload, request_logs, assessment_logs, app_id="t")
    assert (again.commits, again.request_rows, again.assessment_rows) == (0, 0, 0)
    requests = pl.read_delta(str(tmp_path / "request_logs"))
    assert requests.height == 72 and requests["databricks_request_id"].n_unique() == 72
    assert "r1" in requests["databricks_request_id"].to_list()  # deletes are not carried over
    assert pl.read_delta(str(tmp_path / "assessment_logs")).height == 6 * 3
