"""The payload row: building, spool encoding, redaction, truncation, and the types a reader sees."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import polars as pl
from deltalake import DeltaTable, write_deltalake

from agentdeploy.tables.payload import (
    MAX_REQUEST_SIZE_EXCEEDED,
    MAX_RESPONSE_SIZE_EXCEEDED,
    PAYLOAD_SCHEMA,
    PayloadRecord,
    Redactor,
    build_record,
    payload_table_name,
    records_to_arrow,
    response_with_trace,
)
from agentdeploy.tables.spool import MAGIC

TABLE = payload_table_name("main", "agents", "support_bot")
TRACE = orjson.dumps({"info": {"request_id": "req-1"}, "data": {"spans": [{"name": "predict"}]}})


def make(**overrides: object) -> PayloadRecord:
    options: dict[str, object] = dict(
        table=TABLE, databricks_request_id="req-1", client_request_id="client-7",
        request=b'{"input": [{"role": "user", "content": "hi"}]}',
        response=b'{"output": [{"type": "message", "content": "hello"}]}',
        trace=TRACE, status_code=200, timestamp_ms=1_764_064_800_123, execution_time_ms=12,
        max_payload_bytes=16 * 1024 * 1024, endpoint_name="agents_main-agents-support_bot",
        model_name="main.agents.support_bot", model_version="3", served_entity_name="support_bot_3",
        requester="alice@example.com",
    )
    options.update(overrides)
    return build_record(**options)  # type: ignore[arg-type]


def test_table_name_follows_databricks() -> None:
    assert TABLE == "main.agents.support_bot_payload"


def test_spool_encoding_round_trips_every_field() -> None:
    record = make()
    assert PayloadRecord.decode(record.encode()) == record
    no_trace = make(trace=None, client_request_id=None, requester=None)
    assert PayloadRecord.decode(no_trace.encode()) == no_trace
    for damaged in (b"", record.encode()[:-1], b"\x02" + record.encode()[1:]):
        try:
            PayloadRecord.decode(damaged)
        except ValueError:
            continue
        raise AssertionError("a damaged record decoded")


def test_row_holds_the_trace_under_databricks_output_and_metadata_as_a_map() -> None:
    record = make()
    row = records_to_arrow([record]).to_pylist()[0]
    response = json.loads(row["response"])
    assert response["output"][0]["content"] == "hello"
    assert response["databricks_output"]["trace"] == json.loads(TRACE)
    assert json.loads(row["request"]) == json.loads(record.request)
    assert dict(row["request_metadata"]) == {
        "endpoint_name": "agents_main-agents-support_bot", "model_name": "main.agents.support_bot",
        "model_version": "3", "served_entity_name": "support_bot_3"}
    assert str(row["date"]) == "2025-11-25" and row["timestamp_ms"] == 1_764_064_800_123
    assert row["logging_error_codes"] == [] and row["sampling_fraction"] == 1.0


def test_response_with_trace_keeps_other_output_fields_and_wraps_non_objects() -> None:
    merged = json.loads(response_with_trace(b'{"databricks_output": {"databricks_request_id": "r"}}', TRACE))
    assert merged["databricks_output"]["databricks_request_id"] == "r"
    assert merged["databricks_output"]["trace"]["info"]["request_id"] == "req-1"
    wrapped = json.loads(response_with_trace(b"<html>bad gateway</html>", None))
    assert wrapped == {"raw_response": "<html>bad gateway</html>", "databricks_output": {"trace": None}}
    chunks = json.loads(response_with_trace(b'[{"delta": 1}, {"delta": 2}]', TRACE))  # a stream
    assert chunks["raw_response"] == [{"delta": 1}, {"delta": 2}]
    assert chunks["databricks_output"]["trace"] == json.loads(TRACE)
    error = json.loads(response_with_trace(b'{"error_code": "BAD_REQUEST", "message": "m"}', None))
    assert error["error_code"] == "BAD_REQUEST" and error["databricks_output"] == {"trace": None}


def test_known_secret_values_are_redacted_everywhere_including_json_escaped_forms() -> None:
    plain, quoted, accented = "sk-live-0123456789", 'pa"ss\\word', "clé-secrète-42"
    redactor = Redactor([plain, quoted, accented, ""])
    record = make(
        request=orjson.dumps({"q": f"my key is {plain}", "k": quoted}),
        response=json.dumps({"a": accented}).encode(),  # ensure_ascii: \u00e9 escapes
        trace=orjson.dumps({"env": {"API_KEY": plain}, "x": accented}),
        redactor=redactor,
    )
    row = records_to_arrow([record]).to_pylist()[0]
    logged = row["request"] + row["response"]
    for secret in (plain, quoted, accented, "0123456789", "ss\\\\word", "cl\\u00e9"):
        assert secret not in logged, secret
    assert json.loads(row["request"]) == {"q": "my key is [REDACTED]", "k": "[REDACTED]"}
    response = json.loads(row["response"])
    assert response["a"] == "[REDACTED]"
    assert response["databricks_output"]["trace"] == {"env": {"API_KEY": "[REDACTED]"}, "x": "[REDACTED]"}


def test_bodies_are_kept_as_utf8_so_no_body_can_fake_a_spool_frame() -> None:
    fake_frame = MAGIC + b"\x05\x00\x00\x00" + b"\x00" * 4 + b"hello"
    record = make(request=b'{"q": "' + fake_frame + b'"}', response="{\"a\": \"caf\u00e9\"}".encode(),
                  trace=b"\xff\xfe")
    assert MAGIC not in record.encode() and b"\xff" not in record.encode()
    row = records_to_arrow([record]).to_pylist()[0]
    assert "\ufffd" in row["request"] and json.loads(row["response"])["a"] == "caf\u00e9"


def test_oversized_trace_is_cut_first_and_the_response_kept() -> None:
    big_trace = orjson.dumps({"spans": ["s" * 5000]})
    record = make(trace=big_trace, max_payload_bytes=2000)
    assert record.logging_error_codes == (MAX_RESPONSE_SIZE_EXCEEDED,)
    response = json.loads(records_to_arrow([record]).to_pylist()[0]["response"])
    assert response["output"][0]["content"] == "hello"  # the response itself is intact
    assert response["databricks_output"]["trace"] == {"truncated": True, "size_bytes": len(big_trace)}


def test_oversized_request_and_response_are_truncated_flagged_and_stay_json() -> None:
    request = orjson.dumps({"input": "q" * 10_000 + "é"})
    response = orjson.dumps({"output": '"quoted" ' * 2_000})
    record = make(request=request, response=response, max_payload_bytes=3000)
    assert record.logging_error_codes == (MAX_REQUEST_SIZE_EXCEEDED, MAX_RESPONSE_SIZE_EXCEEDED)
    assert len(record.request) <= 3000 and len(record.response) + len(record.trace or b"") <= 3000
    row = records_to_arrow([record]).to_pylist()[0]
    logged_request = json.loads(row["request"])
    assert logged_request["truncated"] is True and logged_request["size_bytes"] == len(request)
    assert request.decode().startswith(logged_request["prefix"]) and len(logged_request["prefix"]) > 2000
    logged_response = json.loads(row["response"])
    assert logged_response["size_bytes"] == len(response)
    assert response.decode().startswith(logged_response["prefix"])
    assert logged_response["databricks_output"]["trace"]["truncated"] is True
    assert row["logging_error_codes"] == [MAX_REQUEST_SIZE_EXCEEDED, MAX_RESPONSE_SIZE_EXCEEDED]


def test_rows_read_back_with_polars_have_the_documented_types(tmp_path: Path) -> None:
    DeltaTable.create(str(tmp_path), PAYLOAD_SCHEMA)
    rows = [make(), make(databricks_request_id="req-2", status_code=500, trace=None,
                         response=b'{"error_code": "INTERNAL_ERROR", "message": "boom"}')]
    write_deltalake(str(tmp_path), records_to_arrow(rows), mode="append")
    frame = pl.read_delta(str(tmp_path))
    assert dict(frame.schema) == {
        "databricks_request_id": pl.String, "client_request_id": pl.String, "date": pl.Date,
        "timestamp_ms": pl.Int64, "status_code": pl.Int32, "execution_time_ms": pl.Int64,
        "request": pl.String, "response": pl.String, "sampling_fraction": pl.Float64,
        "request_metadata": frame.schema["request_metadata"], "served_entity_name": pl.String,
        "logging_error_codes": pl.List(pl.String), "requester": pl.String,
    }
    # A map of string to string, whichever way this polars spells maps.
    assert "str" in str(frame.schema["request_metadata"]).lower()
    assert frame["status_code"].to_list() == [200, 500]
    assert json.loads(frame["response"][1])["message"] == "boom"
