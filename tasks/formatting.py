"""Inference-log formatting: find the endpoints with inference tables, locate their tables through
the catalog, format the payload increment into the request and assessment logs, export traces and
feedback to MLflow.

The tables are storage any authorised reader can open: each task asks the catalog REST API for a
table's `storage_location` and reads or writes it with deltalake, so the flow never touches the
server's internals and runs on any Prefect worker that can reach the storage. The log tables are
created on first use beside the payload table and registered in the catalog, owned by the
endpoint's creator.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from agentdeploy.client import AgentDeployClient
from agentdeploy.errors import AlreadyExists, InvalidParameterValue, NotFound
from agentdeploy.tables.delta import uc_columns
from agentdeploy.tables.formatting import (
    ASSESSMENT_LOGS_SCHEMA,
    REQUEST_LOGS_SCHEMA,
    assessment_logs_table_name,
    format_app_id,
    format_increment,
    request_logs_table_name,
)
from agentdeploy.tables.payload import payload_table_name
from agentdeploy.tables.trace_export import EXPORTS_SCHEMA, export_feedback, export_traces, exports_table_name
from tasks.retry import RETRY_DELAYS, retry_transient

__all__ = [
    "InferenceTables",
    "FormatResult",
    "ExportResult",
    "list_inference_endpoints",
    "format_endpoint",
    "export_to_mlflow",
    "table_location",
    "open_payload_table",
    "ensure_log_table",
    "endpoint_lock",
]

UC_TABLES = "/api/2.1/unity-catalog/tables"
log = logging.getLogger(__name__)


class InferenceTables(BaseModel):
    """An endpoint with inference tables on, and the full names of its tables."""

    endpoint_name: str
    creator: str | None = None
    catalog_name: str
    schema_name: str
    payload: str
    request_logs: str
    assessment_logs: str
    exports: str


class FormatResult(BaseModel):
    endpoint_name: str
    payload_version: int = -1
    request_rows: int = 0
    assessment_rows: int = 0
    seconds: float = 0.0
    note: str | None = None


class ExportResult(BaseModel):
    endpoint_name: str
    traces: int = 0
    feedback_rows: int = 0
    skipped: int = 0
    seconds: float = 0.0


def _tables_for(endpoint: dict[str, Any]) -> InferenceTables | None:
    config = (endpoint.get("ai_gateway") or {}).get("inference_table_config") or {}
    if not config.get("enabled") or not config.get("catalog_name") or not config.get("schema_name"):
        return None
    prefix = config.get("table_name_prefix") or endpoint["name"]
    payload = payload_table_name(config["catalog_name"], config["schema_name"], prefix).lower()
    return InferenceTables(
        endpoint_name=endpoint["name"], creator=endpoint.get("creator"),
        catalog_name=config["catalog_name"].lower(), schema_name=config["schema_name"].lower(),
        payload=payload, request_logs=request_logs_table_name(payload),
        assessment_logs=assessment_logs_table_name(payload), exports=exports_table_name(payload),
    )


@task(name="list-inference-endpoints", retries=3, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def list_inference_endpoints(api: AgentDeployClient,
                             endpoint_name: str | None = None) -> list[InferenceTables]:
    """Endpoints whose AI gateway has inference tables on (`endpoint_name`: only that one)."""
    if endpoint_name:
        endpoint = api.get(f"/api/2.0/serving-endpoints/{endpoint_name}")
        tables = _tables_for(endpoint)
        if tables is None:
            raise InvalidParameterValue(
                f"Endpoint {endpoint_name!r} has no inference tables: turn them on with "
                "PUT /api/2.0/serving-endpoints/{name}/ai-gateway (inference_table_config.enabled).")
        return [tables]
    endpoints = api.get("/api/2.0/serving-endpoints").get("endpoints", [])
    return [t for t in (_tables_for(e) for e in endpoints) if t is not None]


# Locations through the catalog -----------------------------------------------------------------
def table_location(api: AgentDeployClient, full_name: str) -> str | None:
    """The registered table's storage location; None if the catalog does not know the table."""
    try:
        info = api.get(f"{UC_TABLES}/{full_name}")
    except NotFound:
        return None
    return info.get("storage_location")


def _managed_location(api: AgentDeployClient, full_name: str) -> str:
    """Where a managed table of the schema lives: `<schema storage location>/<table>`."""
    catalog, schema, table = full_name.split(".")
    info = api.get(f"/api/2.1/unity-catalog/schemas/{catalog}.{schema}")
    root = info.get("storage_location")
    if not root:
        raise NotFound(f"Schema {catalog}.{schema} has no storage location for its tables.")
    return f"{root.rstrip('/')}/{table}"


def open_payload_table(api: AgentDeployClient, full_name: str) -> DeltaTable | None:
    """The payload table (registered, or where the gateway's writer makes it); None if no request
    was logged yet."""
    location = table_location(api, full_name) or _managed_location(api, full_name)
    try:
        return DeltaTable(location)
    except TableNotFoundError:
        return None


def ensure_log_table(api: AgentDeployClient, full_name: str, schema: pa.Schema, *, owner: str | None,
                     comment: str) -> DeltaTable:
    """Open a log table, creating it (and registering it, owned by `owner`) on first use."""
    location = table_location(api, full_name)
    registered = location is not None
    location = location or _managed_location(api, full_name)
    table = DeltaTable.create(location, schema, mode="ignore", name=full_name.split(".")[2])
    if not registered:
        catalog, schema_name, name = full_name.split(".")
        try:
            api.post(UC_TABLES, json={
                "name": name, "catalog_name": catalog, "schema_name": schema_name,
                "storage_location": location, "table_type": "MANAGED", "data_source_format": "DELTA",
                "columns": uc_columns(schema), "comment": comment,
            })
        except AlreadyExists:  # registered meanwhile by a concurrent run
            return table
        if owner:
            try:
                api.patch(f"{UC_TABLES}/{full_name}", json={"owner": owner})
            except (InvalidParameterValue, NotFound) as exc:  # the creator was deleted meanwhile
                log.warning("table %s stays owned by the flow's identity: %s", full_name, exc.message)
    return table


def _log_tables(api: AgentDeployClient, tables: InferenceTables) -> tuple[DeltaTable, DeltaTable]:
    request_logs = ensure_log_table(
        api, tables.request_logs, REQUEST_LOGS_SCHEMA, owner=tables.creator,
        comment=f"Formatted requests and responses of endpoint {tables.endpoint_name} (agentdeploy).")
    assessment_logs = ensure_log_table(
        api, tables.assessment_logs, ASSESSMENT_LOGS_SCHEMA, owner=tables.creator,
        comment=f"Reviewer feedback on requests of endpoint {tables.endpoint_name} (agentdeploy).")
    return request_logs, assessment_logs


@contextlib.contextmanager
def endpoint_lock(endpoint_name: str) -> Iterator[None]:
    """One task at a time per endpoint across runs and processes (a Prefect global concurrency
    limit of 1, made on first use). The Delta watermarks already make a racing commit fail rather
    than duplicate rows, but two runs copying the same traces to MLflow would duplicate them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    name = "agentdeploy-inference-logs-" + re.sub(r"[^A-Za-z0-9_-]", "-", endpoint_name)
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
    with concurrency(name, occupy=1, timeout_seconds=600, strict=True, lease_duration=900):
        yield


# Tasks -------------------------------------------------------------------------------------------
@task(name="format-endpoint-logs", retries=2, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_transient, cache_policy=NO_CACHE,
      task_run_name="format {tables.endpoint_name}")
def format_endpoint(api: AgentDeployClient, tables: InferenceTables,
                    stop_after_commits: int | None = None) -> FormatResult:
    """Append what the payload table gained to the request and assessment logs (idempotent: the
    watermark is a Delta application transaction committed with the rows)."""
    payload = open_payload_table(api, tables.payload)
    request_logs, assessment_logs = _log_tables(api, tables)
    if payload is None:
        return FormatResult(endpoint_name=tables.endpoint_name, note="no payload table yet")
    with endpoint_lock(tables.endpoint_name):
        progress = format_increment(payload, request_logs, assessment_logs,
                                    app_id=format_app_id(tables.payload),
                                    stop_after_commits=stop_after_commits)
    return FormatResult(endpoint_name=tables.endpoint_name, payload_version=progress.payload_version,
                        request_rows=progress.request_rows, assessment_rows=progress.assessment_rows,
                        seconds=round(progress.seconds, 3))


def _configure_mlflow(tracking_uri: str | None) -> None:
    import mlflow

    from agentdeploy.stack import configure_mlflow

    mlflow.set_tracking_uri(tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or configure_mlflow())


@task(name="export-traces-to-mlflow", retries=2, retry_delay_seconds=RETRY_DELAYS, cache_policy=NO_CACHE,
      task_run_name="export traces of {tables.endpoint_name}")
def export_to_mlflow(api: AgentDeployClient, tables: InferenceTables,
                     tracking_uri: str | None = None) -> ExportResult:
    """Copy new request traces into the endpoint's MLflow experiment and attach new feedback to
    them, each exactly once (progress: application transactions on the exports table)."""
    _configure_mlflow(tracking_uri)
    request_logs, assessment_logs = _log_tables(api, tables)
    exports = ensure_log_table(
        api, tables.exports, EXPORTS_SCHEMA, owner=tables.creator,
        comment=f"Traces and feedback of endpoint {tables.endpoint_name} exported to MLflow (agentdeploy).")
    with endpoint_lock(tables.endpoint_name):
        traces = export_traces(request_logs, exports, endpoint_name=tables.endpoint_name,
                               request_logs_name=tables.request_logs)
        feedback = export_feedback(assessment_logs, exports, assessment_logs_name=tables.assessment_logs)
    return ExportResult(endpoint_name=tables.endpoint_name, traces=traces.exported,
                        feedback_rows=feedback.exported, skipped=traces.skipped + feedback.skipped,
                        seconds=round(traces.seconds + feedback.seconds, 3))
