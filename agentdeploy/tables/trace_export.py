"""Request-log traces -> the stack's MLflow tracking server; assessment-log rows -> MLflow feedback.

    exports = ensure the `{prefix}_payload_mlflow_exports` Delta table (EXPORTS_SCHEMA)
    export_traces(request_logs, exports, endpoint_name=..., request_logs_name=...)
    export_feedback(assessment_logs, exports, assessment_logs_name=...)

Each request's trace is copied into the endpoint's experiment (`/agentdeploy/<endpoint>`, made if
missing) so it shows in the MLflow UI like any MLflow 3 trace, tagged with the request's
`databricks_request_id`. Reviewers' ratings are attached to those traces with
`mlflow.log_feedback` (and a suggested output with `mlflow.log_expectation`).

MLflow API used: `mlflow.tracing.utils.copy.copy_trace_to_experiment` — the function behind
`MlflowClient._log_trace` and MLflow's own evaluation harness, which re-creates a serving trace
(V2 or V3 dict, as `pop_trace` gives it) span by span under a new trace id. It is not part of
MLflow's documented API (no public call logs a whole multi-span trace dict in 3.17.2; the public
`mlflow.log_trace` keeps only one span), so it is called from this one place, mlflow is pinned
and tests/flows/test_format_inference_logs.py finds the result with `mlflow.search_traces`.

Exported once, even on re-runs: progress is the Delta application transaction of the exports
table (`agentdeploy-mlflow-traces:<request logs>` = the request-log version processed), committed
with the rows that map each request id to its MLflow trace id. A pass killed after copying traces
but before that commit can only leave traces of the chunk that starts at the durable watermark;
each copied trace carries the tag `agentdeploy.export_from = <table>@<chunk start>`, so the first
chunk of the next pass asks MLflow for that tag and skips what is already there. Feedback is
guarded the same way by an `agentdeploy.key` in each assessment's metadata.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from agentdeploy.tables.formatting import (
    ASSESSMENT_LOGS_SCHEMA,
    REQUEST_LOGS_SCHEMA,
    append_with_watermark,
    appended_rows,
    watermark,
)

__all__ = [
    "EXPORTS_SCHEMA",
    "TRACE_APP_PREFIX",
    "FEEDBACK_APP_PREFIX",
    "REQUEST_ID_TAG",
    "ExportProgress",
    "exports_table_name",
    "experiment_name",
    "ensure_experiment",
    "export_traces",
    "export_feedback",
]

TRACE_APP_PREFIX = "agentdeploy-mlflow-traces:"
FEEDBACK_APP_PREFIX = "agentdeploy-mlflow-feedback:"
REQUEST_ID_TAG = "agentdeploy.databricks_request_id"
EXPORT_FROM_TAG = "agentdeploy.export_from"
KEY_METADATA = "agentdeploy.key"
MAX_VERSIONS_PER_BATCH = 50

EXPORTS_SCHEMA = pa.schema([
    pa.field("kind", pa.string()),  # "trace" or "assessment"
    pa.field("databricks_request_id", pa.string()),
    pa.field("mlflow_trace_id", pa.string()),
    pa.field("experiment_id", pa.string()),
    pa.field("assessment_key", pa.string()),
    pa.field("exported_at", pa.timestamp("us", tz="UTC")),
])
_TRACE_COLUMNS = pa.schema([REQUEST_LOGS_SCHEMA.field(n) for n in ("databricks_request_id", "trace")])
_SOURCE_TYPES = {"human": "HUMAN", "ai_judge": "LLM_JUDGE", "llm_judge": "LLM_JUDGE", "code": "CODE"}


def exports_table_name(payload_table: str) -> str:
    """The small table beside the logs recording what went to MLflow."""
    return f"{payload_table}_mlflow_exports"


def experiment_name(endpoint_name: str) -> str:
    return f"/agentdeploy/{endpoint_name}"


def ensure_experiment(endpoint_name: str) -> str:
    """The id of the endpoint's experiment in the current tracking server, made if missing."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    name = experiment_name(endpoint_name)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return str(experiment.experiment_id)
    try:
        return str(client.create_experiment(name, tags={"agentdeploy.endpoint": endpoint_name}))
    except MlflowException:  # made meanwhile by a concurrent run
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


@dataclass
class ExportProgress:
    exported: int = 0
    skipped: int = 0  # already in MLflow (a killed pass), or nothing to attach to
    commits: int = 0
    seconds: float = 0.0


def _now_us(n: int) -> pa.Array:
    now = pa.array([int(time.time() * 1_000_000)] * n, pa.int64())
    return now.cast(EXPORTS_SCHEMA.field("exported_at").type)


def _exports_rows(kind: str, request_ids: list[str], trace_ids: list[str], experiment_id: str,
                  keys: list[str | None] | None = None) -> pa.Table:
    n = len(request_ids)
    return pa.table({
        "kind": pa.array([kind] * n, pa.string()),
        "databricks_request_id": pa.array(request_ids, pa.string()),
        "mlflow_trace_id": pa.array(trace_ids, pa.string()),
        "experiment_id": pa.array([experiment_id] * n, pa.string()),
        "assessment_key": pa.array(keys if keys is not None else [None] * n, pa.string()),
        "exported_at": _now_us(n),
    }, schema=EXPORTS_SCHEMA)


def _already_copied(experiment_id: str, export_from: str) -> dict[str, str]:
    """Request id -> MLflow trace id of the traces a killed pass already copied for the chunk
    `export_from` (their ids are recorded now, so feedback still finds them)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    found: dict[str, str] = {}
    token = None
    while True:
        page = client.search_traces(
            locations=[experiment_id], include_spans=False, max_results=500, page_token=token,
            filter_string=f"tag.`{EXPORT_FROM_TAG}` = '{export_from}'")
        found.update((t.info.tags.get(REQUEST_ID_TAG, ""), t.info.trace_id) for t in page)
        token = page.token
        if not token:
            return found


def export_traces(
    request_logs: DeltaTable,
    exports: DeltaTable,
    *,
    endpoint_name: str,
    request_logs_name: str,
    max_versions: int = MAX_VERSIONS_PER_BATCH,
) -> ExportProgress:
    """Copy the traces of request-log rows not exported yet into the endpoint's experiment."""
    import mlflow
    from mlflow.tracing.utils.copy import copy_trace_to_experiment

    started = time.perf_counter()
    progress = ExportProgress()
    app_id = TRACE_APP_PREFIX + request_logs_name
    request_logs.update_incremental()
    current = request_logs.version()
    experiment_id: str | None = None
    first_chunk = True
    while True:
        exports.update_incremental()
        mark = watermark(exports, app_id)
        if mark >= current:
            break
        end = min(mark + max_versions, current)
        rows = appended_rows(request_logs, mark + 1, end, _TRACE_COLUMNS)
        rows = rows.filter(pc.is_valid(rows.column("trace")))
        request_ids: list[str] = []
        trace_ids: list[str] = []
        if rows.num_rows:
            experiment_id = experiment_id or ensure_experiment(endpoint_name)
            export_from = f"{request_logs_name}@{mark + 1}"
            done = _already_copied(experiment_id, export_from) if first_chunk else {}
            for request_id, trace_text in zip(rows.column("databricks_request_id").to_pylist(),
                                              rows.column("trace").to_pylist(), strict=True):
                if request_id in done:
                    request_ids.append(request_id)
                    trace_ids.append(done[request_id])
                    progress.skipped += 1
                    continue
                trace = _trace_dict(trace_text)
                if trace is None:
                    progress.skipped += 1
                    continue
                info = trace.setdefault("info", {})
                tags = info.get("tags") if isinstance(info.get("tags"), dict) else {}
                info["tags"] = {**tags, REQUEST_ID_TAG: request_id, EXPORT_FROM_TAG: export_from,
                                "agentdeploy.endpoint": endpoint_name}
                trace_ids.append(copy_trace_to_experiment(trace, experiment_id=experiment_id))
                request_ids.append(request_id)
                progress.exported += 1
            # The copies are written by MLflow's async exporter: wait for them before the marker.
            mlflow.flush_trace_async_logging()
        append_with_watermark(exports, _exports_rows("trace", request_ids, trace_ids, experiment_id or ""),
                              app_id, end)
        progress.commits += 1
        first_chunk = False
    progress.seconds = time.perf_counter() - started
    return progress


def _trace_dict(text: str) -> dict[str, Any] | None:
    """A trace with spans, or None (a truncated stand-in `{"truncated": true}`, or not JSON)."""
    try:
        trace = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    data = trace.get("data") if isinstance(trace, dict) else None
    if not isinstance(data, dict) or not data.get("spans"):
        return None
    return trace


def _trace_ids_for(exports: DeltaTable, request_ids: list[str]) -> dict[str, str]:
    import pyarrow.dataset as pads

    dataset = exports.to_pyarrow_dataset()
    found = dataset.to_table(
        columns=["databricks_request_id", "mlflow_trace_id"],
        filter=(pads.field("kind") == "trace") & pads.field("databricks_request_id").isin(request_ids))
    return dict(zip(found.column("databricks_request_id").to_pylist(),
                    found.column("mlflow_trace_id").to_pylist(), strict=True))


def _assessment_key(row: dict[str, Any], kind: str, name: str) -> str:
    """Deterministic across re-runs: the same assessment row and rating give the same key."""
    source = row.get("source") or {}
    stamp = row["timestamp"].isoformat() if row.get("timestamp") is not None else ""
    parts = (row["request_id"], source.get("id"), source.get("type"), stamp, row.get("step_id"), kind, name)
    return hashlib.sha256(orjson.dumps(parts)).hexdigest()[:32]


def _existing_keys(trace_id: str) -> set[str]:
    import mlflow

    trace = mlflow.get_trace(trace_id)
    if trace is None:
        return set()
    return {str((a.metadata or {}).get(KEY_METADATA)) for a in trace.info.assessments or []}


def _log_row(trace_id: str, row: dict[str, Any], done: set[str]) -> list[str]:
    """Log one assessment-log row's ratings (and comment, suggested output) on `trace_id`, except
    those whose key is in `done`; returns the keys logged now."""
    import mlflow
    from mlflow.entities import AssessmentSource

    source_info = row.get("source") or {}
    source = AssessmentSource(source_type=_SOURCE_TYPES.get(str(source_info.get("type")), "HUMAN"),
                              source_id=str(source_info.get("id") or "unknown"))
    keys: list[str] = []

    def once(kind: str, name: str, log: Any, **kwargs: Any) -> None:
        key = _assessment_key(row, kind, name)
        if key not in done:
            log(trace_id=trace_id, name=name, source=source,
                metadata={KEY_METADATA: key, **_extra_metadata(row, kind)}, **kwargs)
            done.add(key)
            keys.append(key)

    text = row.get("text_assessment")
    if text:
        for name, rating in text.get("ratings") or []:
            once("text", name, mlflow.log_feedback, value=rating.get("value"),
                 rationale=rating.get("rationale"))
        if text.get("free_text_comment"):
            once("text", "free_text_comment", mlflow.log_feedback, value=text["free_text_comment"])
        if text.get("suggested_output"):
            once("text", "expected_response", mlflow.log_expectation, value=text["suggested_output"])
    retrieval = row.get("retrieval_assessment")
    if retrieval:
        for name, rating in retrieval.get("ratings") or []:
            once("retrieval", name, mlflow.log_feedback, value=rating.get("value"),
                 rationale=rating.get("rationale"))
        if retrieval.get("free_text_comment"):
            once("retrieval", "free_text_comment", mlflow.log_feedback, value=retrieval["free_text_comment"])
    return keys


def _extra_metadata(row: dict[str, Any], kind: str) -> dict[str, str]:
    if kind != "retrieval":
        return {}
    retrieval = row.get("retrieval_assessment") or {}
    extra = {"assessment": "retrieval"}
    if retrieval.get("position") is not None:
        extra["position"] = str(retrieval["position"])
    if row.get("step_id"):
        extra["step_id"] = str(row["step_id"])
    return extra


def export_feedback(
    assessment_logs: DeltaTable,
    exports: DeltaTable,
    *,
    assessment_logs_name: str,
    max_versions: int = MAX_VERSIONS_PER_BATCH,
) -> ExportProgress:
    """Attach assessment-log rows not exported yet to their requests' MLflow traces. A row whose
    request has no exported trace (it failed before tracing, or was never formatted) is skipped
    and counted."""
    started = time.perf_counter()
    progress = ExportProgress()
    app_id = FEEDBACK_APP_PREFIX + assessment_logs_name
    assessment_logs.update_incremental()
    current = assessment_logs.version()
    first_chunk = True
    while True:
        exports.update_incremental()
        mark = watermark(exports, app_id)
        if mark >= current:
            break
        end = min(mark + max_versions, current)
        rows = appended_rows(assessment_logs, mark + 1, end, ASSESSMENT_LOGS_SCHEMA)
        rows = rows.drop_columns(["_commit_version"])
        records = rows.to_pylist()
        trace_ids = _trace_ids_for(exports, sorted({r["request_id"] for r in records})) if records else {}
        out_ids: list[str] = []
        out_traces: list[str] = []
        out_keys: list[str | None] = []
        done_by_trace: dict[str, set[str]] = {}
        for record in records:
            trace_id = trace_ids.get(record["request_id"])
            if trace_id is None:
                progress.skipped += 1
                continue
            if trace_id not in done_by_trace:
                done_by_trace[trace_id] = _existing_keys(trace_id) if first_chunk else set()
            logged = _log_row(trace_id, record, done_by_trace[trace_id])
            for key in logged:
                out_ids.append(record["request_id"])
                out_traces.append(trace_id)
                out_keys.append(key)
            if logged:
                progress.exported += 1
            else:
                progress.skipped += 1  # attached by a pass killed before its commit
        experiment = ""
        append_with_watermark(exports, _exports_rows("assessment", out_ids, out_traces, experiment, out_keys),
                              app_id, end)
        progress.commits += 1
        first_chunk = False
    progress.seconds = time.perf_counter() - started
    return progress
