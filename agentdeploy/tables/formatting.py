"""Payload rows -> request-log rows and assessment-log rows, and the incremental pass over a table.

    requests = format_request_logs(payload)        # one row per non-feedback payload row
    assessments = format_assessment_logs(payload)  # one row per assessment in feedback rows

Both take an Arrow table with (at least) the columns of `PAYLOAD_SCHEMA` and return tables of
exactly `REQUEST_LOGS_SCHEMA` / `ASSESSMENT_LOGS_SCHEMA` (the seed's columns and types). The
pass-through columns are moved with Arrow kernels; only the JSON bodies are parsed per row (with
orjson), which is what bounds the speed (bench/format_throughput.py).

Request shapes understood (non-streamed): ResponsesAgent `{"input": [...]}` (or a plain string
input), chat and ChatAgent `{"messages": [...]}`, chat completions (the same with `model`).
Responses: ResponsesAgent `{"output": [...]}`, ChatCompletion `{"choices": [...]}`, ChatAgent
`{"messages": [...]}`. The conversation id comes from the request's `context.conversation_id`
(MLflow's ChatContext, carried by ResponsesAgentRequest and ChatAgentRequest), else
`custom_inputs.conversation_id`, else `databricks_options.conversation_id`.

Feedback rows are payload rows of served entity `feedback` answered with 200; their bodies are
normalised by the feedback model's own `parse_feedback`, so the logs read what it accepted.

`format_increment(payload, request_logs, assessment_logs, app_id=...)` is the incremental pass the
scheduled flow runs: it reads the rows the payload table's commits appended since each log
table's watermark (Delta's change feed) and appends their formatting to each log table in one
commit that also records the new watermark (a Delta application transaction), so a re-run, or a
pass killed between commits and run again, adds nothing twice.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from agentdeploy.errors import InvalidParameterValue
from agentdeploy.tables.assessments import parse_feedback
from agentdeploy.tables.payload import PAYLOAD_SCHEMA

__all__ = [
    "REQUEST_LOGS_SCHEMA",
    "ASSESSMENT_LOGS_SCHEMA",
    "SCHEMA_VERSION",
    "FEEDBACK_ENTITY",
    "request_logs_table_name",
    "assessment_logs_table_name",
    "split_payload",
    "format_request_logs",
    "format_assessment_logs",
    "assessment_rows",
    "last_user_query",
    "answer_text",
    "conversation_id",
    "FORMAT_APP_PREFIX",
    "FormatProgress",
    "format_app_id",
    "watermark",
    "appended_rows",
    "append_with_watermark",
    "format_increment",
]

SCHEMA_VERSION = "1"
FEEDBACK_ENTITY = "feedback"
TIMESTAMP = pa.timestamp("us", tz="UTC")  # Delta's `timestamp` (UTC instants)

REQUEST_LOGS_SCHEMA = pa.schema([
    pa.field("client_request_id", pa.string()),
    pa.field("databricks_request_id", pa.string()),
    pa.field("date", pa.date32()),
    pa.field("timestamp_ms", pa.int64()),
    pa.field("timestamp", TIMESTAMP),
    pa.field("status_code", pa.int32()),
    pa.field("execution_time_ms", pa.int64()),
    pa.field("conversation_id", pa.string()),
    pa.field("request", pa.string()),
    pa.field("response", pa.string()),
    pa.field("request_raw", pa.string()),
    pa.field("response_raw", pa.string()),
    pa.field("trace", pa.string()),
    pa.field("sampling_fraction", pa.float64()),
    pa.field("request_metadata", pa.map_(pa.string(), pa.string())),
    pa.field("schema_version", pa.string()),
])

_RATING = pa.struct([pa.field("value", pa.string()), pa.field("rationale", pa.string())])
_RATINGS = pa.map_(pa.string(), _RATING)
_SOURCE = pa.struct([pa.field("id", pa.string()), pa.field("type", pa.string())])
_TEXT_ASSESSMENT = pa.struct([
    pa.field("ratings", _RATINGS),
    pa.field("free_text_comment", pa.string()),
    pa.field("suggested_output", pa.string()),
])
_RETRIEVAL_ASSESSMENT = pa.struct([
    pa.field("position", pa.int32()),
    pa.field("ratings", _RATINGS),
    pa.field("free_text_comment", pa.string()),
])

ASSESSMENT_LOGS_SCHEMA = pa.schema([
    pa.field("request_id", pa.string()),
    pa.field("step_id", pa.string()),
    pa.field("source", _SOURCE),
    pa.field("timestamp", TIMESTAMP),
    pa.field("text_assessment", _TEXT_ASSESSMENT),
    pa.field("retrieval_assessment", _RETRIEVAL_ASSESSMENT),
])


def request_logs_table_name(payload_table: str) -> str:
    """`..._payload` -> `..._payload_request_logs` (the Databricks names)."""
    return f"{payload_table}_request_logs"


def assessment_logs_table_name(payload_table: str) -> str:
    return f"{payload_table}_assessment_logs"


# Reading the bodies ----------------------------------------------------------------------------
def _loads(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def _content_text(content: Any) -> str | None:
    """A message's content as text: a string, or the text parts of a list of content parts
    (`input_text`/`output_text`/`text`), joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = [part["text"] for part in content if isinstance(part, dict)
                            and isinstance(part.get("text"), str)]
        if texts:
            return "".join(texts)
    return None


def _last_message_text(messages: Any, role: str) -> str | None:
    if not isinstance(messages, list):
        return None
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == role:
            text = _content_text(message.get("content"))
            if text is not None:
                return text
    return None


def last_user_query(request: Any) -> str | None:
    """The last user message of the conversation the request carries."""
    if not isinstance(request, dict):
        return None
    if "input" in request:
        value = request["input"]
        if isinstance(value, str):  # the Responses API allows a bare string
            return value
        return _last_message_text(value, "user")
    if "messages" in request:
        return _last_message_text(request["messages"], "user")
    return None


def answer_text(response: Any) -> str | None:
    """The agent's answer: the text of the last output message (ResponsesAgent), of the first
    choice (ChatCompletion), or of the last assistant message (ChatAgent)."""
    if not isinstance(response, dict):
        return None
    output = response.get("output")
    if isinstance(output, list):
        for item in reversed(output):
            if isinstance(item, dict) and item.get("type", "message") == "message":
                text = _content_text(item.get("content"))
                if text is not None:
                    return text
        return None
    choices = response.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        message = choices[0].get("message")
        if isinstance(message, dict):
            return _content_text(message.get("content"))
        return _content_text(choices[0].get("text"))
    if "messages" in response:
        return _last_message_text(response["messages"], "assistant")
    return None


def conversation_id(request: Any) -> str | None:
    if not isinstance(request, dict):
        return None
    for holder in ("context", "custom_inputs", "databricks_options"):
        value = request.get(holder)
        if isinstance(value, dict):
            found = value.get("conversation_id")
            if found is not None:
                return str(found)
    return None


def _split_response(text: str | None) -> tuple[str | None, str | None, Any]:
    """(response_raw without the trace, the trace as JSON text, the parsed body).

    The payload keeps the trace inside the response under `databricks_output.trace`; the request
    log gives it its own column and leaves it out of `response_raw`, so a large trace is stored
    once per row rather than twice."""
    body = _loads(text)
    if not isinstance(body, dict):
        return text, None, body
    output = body.get("databricks_output")
    if not isinstance(output, dict) or "trace" not in output:
        return text, None, body
    trace = output["trace"]
    rest = {k: v for k, v in output.items() if k != "trace"}
    stripped = {k: v for k, v in body.items() if k != "databricks_output"}
    if rest:
        stripped["databricks_output"] = rest
    trace_text = None if trace is None else trace if isinstance(trace, str) else orjson.dumps(trace).decode()
    return orjson.dumps(stripped).decode(), trace_text, body


# Splitting the payload -------------------------------------------------------------------------
def _is_feedback(payload: pa.Table) -> pa.ChunkedArray:
    return pc.fill_null(pc.equal(payload.column("served_entity_name"), FEEDBACK_ENTITY), False)


def split_payload(payload: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(agent request rows, feedback rows) of a payload batch."""
    feedback = _is_feedback(payload)
    return payload.filter(pc.invert(feedback)), payload.filter(feedback)


def _timestamps(timestamp_ms: pa.ChunkedArray | pa.Array) -> pa.Array:
    return pc.cast(pc.cast(timestamp_ms, pa.timestamp("ms", tz="UTC")), TIMESTAMP)


def format_request_logs(payload: pa.Table) -> pa.Table:
    """One request-log row per agent request (feedback rows are left to the assessment log)."""
    requests = payload.filter(pc.invert(_is_feedback(payload))) if payload.num_rows else payload
    n = requests.num_rows
    queries: list[str | None] = [None] * n
    answers: list[str | None] = [None] * n
    conversations: list[str | None] = [None] * n
    responses_raw: list[str | None] = [None] * n
    traces: list[str | None] = [None] * n
    request_texts = requests.column("request").to_pylist() if n else []
    response_texts = requests.column("response").to_pylist() if n else []
    for i in range(n):
        request = _loads(request_texts[i])
        queries[i] = last_user_query(request)
        conversations[i] = conversation_id(request)
        responses_raw[i], traces[i], body = _split_response(response_texts[i])
        answers[i] = answer_text(body)
    columns = {
        "client_request_id": requests.column("client_request_id"),
        "databricks_request_id": requests.column("databricks_request_id"),
        "date": requests.column("date"),
        "timestamp_ms": requests.column("timestamp_ms"),
        "timestamp": _timestamps(requests.column("timestamp_ms")),
        "status_code": requests.column("status_code"),
        "execution_time_ms": requests.column("execution_time_ms"),
        "conversation_id": pa.array(conversations, pa.string()),
        "request": pa.array(queries, pa.string()),
        "response": pa.array(answers, pa.string()),
        "request_raw": requests.column("request"),
        "response_raw": pa.array(responses_raw, pa.string()),
        "trace": pa.array(traces, pa.string()),
        "sampling_fraction": requests.column("sampling_fraction"),
        "request_metadata": requests.column("request_metadata"),
        "schema_version": pa.array([SCHEMA_VERSION] * n, pa.string()),
    }
    return pa.table(columns).cast(REQUEST_LOGS_SCHEMA)


def _rating_value(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value).decode()  # true / 4 / ["a"] as their JSON text


def _ratings(ratings: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(name, {"value": _rating_value(r.get("value")), "rationale": r.get("rationale")})
            for name, r in ratings.items()]


def _feedback_records(request_text: str | None) -> list[dict[str, Any]]:
    """The normalised records of one feedback body; [] for a body the feedback model refused
    (it answered 4xx, so there is nothing to log)."""
    body = _loads(request_text)
    try:
        # Whether the request id was served was checked when the feedback was accepted.
        return parse_feedback(body, lambda _request_id: True)
    except InvalidParameterValue:
        return []


def assessment_rows(records: Iterable[dict[str, Any]], timestamp_ms: int) -> list[dict[str, Any]]:
    """One assessment-log row (as a dict) per text or retrieval assessment of the records."""
    rows: list[dict[str, Any]] = []
    for record in records:
        source = record["source"]
        for text in record["text_assessments"]:
            rows.append({
                "request_id": record["request_id"], "step_id": None, "source": source,
                "timestamp": timestamp_ms,
                "text_assessment": {"ratings": _ratings(text["ratings"]),
                                    "free_text_comment": text.get("free_text_comment"),
                                    "suggested_output": text.get("suggested_output")},
                "retrieval_assessment": None,
            })
        for retrieval in record["retrieval_assessments"]:
            rows.append({
                "request_id": record["request_id"], "step_id": retrieval.get("step_id"), "source": source,
                "timestamp": timestamp_ms, "text_assessment": None,
                "retrieval_assessment": {"position": retrieval.get("position"),
                                         "ratings": _ratings(retrieval["ratings"]),
                                         "free_text_comment": retrieval.get("free_text_comment")},
            })
    return rows


def format_assessment_logs(payload: pa.Table) -> pa.Table:
    """One assessment-log row per assessment in the accepted (status 200) feedback rows."""
    feedback = payload.filter(pc.and_(_is_feedback(payload),
                                      pc.fill_null(pc.equal(payload.column("status_code"), 200), False)))
    rows: list[dict[str, Any]] = []
    for request_text, timestamp_ms in zip(feedback.column("request").to_pylist(),
                                          feedback.column("timestamp_ms").to_pylist(), strict=True):
        rows.extend(assessment_rows(_feedback_records(request_text), timestamp_ms))
    if not rows:
        return ASSESSMENT_LOGS_SCHEMA.empty_table()
    # Timestamps go in as epoch ms, cast to the column's microseconds by Arrow.
    stamps = pa.array([r.pop("timestamp") for r in rows], pa.int64())
    table = pa.Table.from_pylist(rows, schema=ASSESSMENT_LOGS_SCHEMA.remove(3))
    return table.add_column(3, ASSESSMENT_LOGS_SCHEMA.field("timestamp"), _timestamps(stamps))


# Incremental formatting of a payload table ------------------------------------------------------
# deltalake on the tables' storage locations (local disk here, object storage at scale); the
# locations come from the catalog, so this runs wherever the flow runs.

FORMAT_APP_PREFIX = "agentdeploy-format:"
MAX_VERSIONS_PER_COMMIT = 200  # bounds the rows held in memory (and redone after a kill)
_CHANGE_COLUMNS = ("_change_type", "_commit_version", "_commit_timestamp")


def format_app_id(payload_table: str) -> str:
    """The Delta application id under which the formatter records its progress."""
    return FORMAT_APP_PREFIX + payload_table


def watermark(table: DeltaTable, app_id: str) -> int:
    """The last source version `app_id` committed into `table`, -1 if none."""
    version = table.transaction_version(app_id)
    return -1 if version is None else int(version)


def appended_rows(source: DeltaTable, start: int, end: int, schema: pa.Schema, *,
                  storage_options: dict[str, str] | None = None) -> pa.Table:
    """The rows that commits `start..end` of `source` appended, with `_commit_version`.

    Read through Delta's change feed, which for a table without CDF files yields the files each
    commit added with dataChange=true: compaction (dataChange=false) yields nothing, so compacted
    rows are never read twice. A commit that also removed data (DELETE, UPDATE, MERGE, overwrite)
    is skipped whole: its rewritten files hold rows formatted before, and the seed says deletes
    and updates in the payload table are not carried over."""
    if start > end:
        return schema.append(pa.field("_commit_version", pa.int64())).empty_table()
    first: pa.Table | None = None
    if start == 0:
        # The change feed refuses version 0 (the table's creation); its rows are its snapshot.
        first = DeltaTable(source.table_uri, version=0, storage_options=storage_options).to_pyarrow_table()
        first = first.select(schema.names).cast(schema)
        first = first.append_column("_commit_version", pa.array([0] * first.num_rows, pa.int64()))
        if end == 0:
            return first
        start = 1
    changes = pa.table(source.load_cdf(starting_version=start, ending_version=end).read_all())
    versions = pc.cast(changes.column("_commit_version"), pa.int64())
    not_insert = pc.not_equal(changes.column("_change_type").cast(pa.string()), "insert")
    rewritten = pc.unique(versions.filter(not_insert))
    keep = pc.invert(pc.is_in(versions, value_set=rewritten)) if len(rewritten) else None
    rows = changes.select([name for name in schema.names]).cast(schema)
    rows = rows.append_column("_commit_version", versions)
    rows = rows.filter(keep) if keep is not None else rows
    return pa.concat_tables([first, rows]) if first is not None else rows


def append_with_watermark(target: DeltaTable, rows: pa.Table, app_id: str, version: int) -> None:
    """Append `rows` (possibly none) and record `version` for `app_id` in the same commit, so the
    progress marker and the rows are durable together. A concurrent run that committed the same
    app id meanwhile makes this raise CommitFailedError, never a duplicate."""
    write_deltalake(target, rows, mode="append",
                    commit_properties=CommitProperties(app_transactions=[Transaction(app_id, version)]))


@dataclass
class FormatProgress:
    """What one formatting pass did for one payload table."""

    payload_version: int = -1
    request_rows: int = 0
    assessment_rows: int = 0
    commits: int = 0
    seconds: float = 0.0
    watermarks: dict[str, int] = field(default_factory=dict)


def format_increment(
    payload: DeltaTable,
    request_logs: DeltaTable,
    assessment_logs: DeltaTable,
    *,
    app_id: str,
    max_versions: int = MAX_VERSIONS_PER_COMMIT,
    stop_after_commits: int | None = None,
) -> FormatProgress:
    """Format what `payload` gained since each log table's watermark, up to its current version.

    Each log table has its own watermark (the app transaction `app_id`), so a run killed between
    the two commits of a chunk resumes each table where it stopped. `stop_after_commits` ends the
    pass early (tests use it to stand for a run killed half-way)."""
    started = time.perf_counter()
    progress = FormatProgress()
    payload.update_incremental()
    current = payload.version()
    progress.payload_version = current
    targets = ((request_logs, format_request_logs, "request_rows"),
               (assessment_logs, format_assessment_logs, "assessment_rows"))
    while True:
        for target, _, _ in targets:
            target.update_incremental()
        marks = [watermark(target, app_id) for target, _, _ in targets]
        low = min(marks)
        if low >= current:
            break
        end = min(low + max_versions, current)
        rows = appended_rows(payload, low + 1, end, PAYLOAD_SCHEMA)
        for (target, formatter, counter), mark in zip(targets, marks, strict=True):
            if mark >= end:
                continue
            mine = rows.filter(pc.greater(rows.column("_commit_version"), mark)) if mark >= low + 1 else rows
            formatted = formatter(mine.drop_columns(["_commit_version"]))
            append_with_watermark(target, formatted, app_id, end)
            setattr(progress, counter, getattr(progress, counter) + formatted.num_rows)
            progress.commits += 1
            if stop_after_commits is not None and progress.commits >= stop_after_commits:
                progress.seconds = time.perf_counter() - started
                return progress
    progress.watermarks = {"request_logs": marks[0], "assessment_logs": marks[1]}
    progress.seconds = time.perf_counter() - started
    return progress
