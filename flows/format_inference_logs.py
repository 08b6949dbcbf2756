"""`format-inference-logs`: raw payloads -> request logs, assessment logs, MLflow traces.

Scheduled (every `settings.format_interval_s`, 30 s by default) and run on demand with
`agentdeploy logs format [ENDPOINT]`. For each endpoint with inference tables on, in its own
chain of tasks (so one failing endpoint does not stop the others):

    format-endpoint-logs        payload increment -> `..._payload_request_logs` / `..._assessment_logs`
    export-traces-to-mlflow     new traces -> experiment `/agentdeploy/<endpoint>`, feedback attached
    maintain-inference-tables   compaction and checkpoints when due; vacuum behind the readers

Every step is idempotent: progress is kept as Delta application transactions committed with the
rows, so a re-run, or a run killed half-way and run again, adds nothing twice.
"""

from __future__ import annotations

from typing import Any, cast

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from agentdeploy.deploy_spec import ADMIN_BLOCK
from blocks.workspace import WorkspaceCredentials
from tasks.formatting import export_to_mlflow, format_endpoint, list_inference_endpoints
from tasks.maintenance import maintain_endpoint_tables

__all__ = ["format_inference_logs", "FORMATTING_ARTIFACT", "DEPLOYMENT_NAME"]

FORMATTING_ARTIFACT = "inference-log-formatting"
DEPLOYMENT_NAME = "format-inference-logs/format-inference-logs"


def _report(rows: list[dict[str, Any]]) -> str:
    lines = ["# Inference-log formatting", "",
             "| endpoint | payload version | request rows | assessment rows | traces | feedback | error |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['endpoint_name']} | {r.get('payload_version', '-')} | {r.get('request_rows', 0)} "
                     f"| {r.get('assessment_rows', 0)} | {r.get('traces', 0)} | {r.get('feedback_rows', 0)} "
                     f"| {r.get('error') or r.get('note') or ''} |")
    if not rows:
        lines.append("| (no endpoint with inference tables) | | | | | | |")
    return "\n".join(lines)


@flow(name="format-inference-logs", log_prints=False, persist_result=False)
def format_inference_logs(
    credentials_block: str = ADMIN_BLOCK,
    endpoint_name: str | None = None,
    export_traces: bool = True,
    maintenance: bool = True,
    mlflow_tracking_uri: str | None = None,
) -> list[dict[str, Any]]:
    """Format the inference logs of every endpoint with inference tables (or of `endpoint_name`).

    `credentials_block`: the WorkspaceCredentials block whose identity reads the catalog (it needs
    SELECT on the payload tables and CREATE_TABLE in their schemas). `mlflow_tracking_uri`: where
    traces go (default: MLFLOW_TRACKING_URI, else the stack's tracking server)."""
    logger = get_run_logger()
    api = cast(WorkspaceCredentials, WorkspaceCredentials.load(credentials_block)).client()
    endpoints = list_inference_endpoints(api, endpoint_name)
    chains = []
    for tables in endpoints:
        formatted = format_endpoint.submit(api, tables)
        exported = export_to_mlflow.submit(api, tables, mlflow_tracking_uri, wait_for=[formatted],
                                           return_state=False) if export_traces else None
        maintained = maintain_endpoint_tables.submit(api, tables, wait_for=[exported or formatted],
                                                     return_state=False) if maintenance else None
        chains.append((tables, formatted, exported, maintained))
    rows: list[dict[str, Any]] = []
    for tables, formatted, exported, maintained in chains:
        row: dict[str, Any] = {"endpoint_name": tables.endpoint_name}
        errors = []
        for future in (formatted, exported, maintained):
            if future is None:
                continue
            future.wait()
            if future.state.is_completed():
                result = future.result()
                if hasattr(result, "model_dump"):
                    row.update({k: v for k, v in result.model_dump().items() if v is not None})
            else:
                errors.append(str(future.state.message or future.state.name)[:300])
        if errors:
            row["error"] = errors[0]
        rows.append(row)
    create_markdown_artifact(markdown=_report(rows), key=FORMATTING_ARTIFACT,
                             description="Rows formatted and traces exported per endpoint by this run.")
    failed = [r["endpoint_name"] for r in rows if r.get("error")]
    logger.info("formatted %d endpoint(s), %d failed", len(rows) - len(failed), len(failed))
    if failed:
        raise RuntimeError(f"Formatting failed for {len(failed)} endpoint(s): {', '.join(failed)}")
    return rows
