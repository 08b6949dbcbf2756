"""Table maintenance of one endpoint's inference tables (payload, request logs, assessment logs,
MLflow exports): compaction and checkpoints when due, vacuum only behind every incremental reader
(see agentdeploy/tables/maintenance.py for why that never removes a file still needed)."""

from __future__ import annotations

from typing import Any

from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError
from prefect import task
from prefect.cache_policies import NO_CACHE

from agentdeploy.client import AgentDeployClient
from agentdeploy.tables.formatting import format_app_id, watermark
from agentdeploy.tables.maintenance import MaintenancePolicy, maintain
from agentdeploy.tables.trace_export import FEEDBACK_APP_PREFIX, TRACE_APP_PREFIX
from tasks.formatting import InferenceTables, endpoint_lock, open_payload_table, table_location
from tasks.retry import RETRY_DELAYS, retry_transient

__all__ = ["maintain_endpoint_tables"]


def _open(api: AgentDeployClient, full_name: str) -> DeltaTable | None:
    location = table_location(api, full_name)
    if location is None:
        return None
    try:
        return DeltaTable(location)
    except TableNotFoundError:
        return None


def _caught_up(source: DeltaTable, readers: list[tuple[DeltaTable | None, str]]) -> bool:
    """Every incremental reader of `source` has processed it up to its current version."""
    source.update_incremental()
    version = source.version()
    for reader, app_id in readers:
        if reader is None:
            return False
        reader.update_incremental()
        if watermark(reader, app_id) < version:
            return False
    return True


@task(name="maintain-inference-tables", retries=2, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_transient, cache_policy=NO_CACHE,
      task_run_name="maintain tables of {tables.endpoint_name}")
def maintain_endpoint_tables(api: AgentDeployClient, tables: InferenceTables,
                             policy: MaintenancePolicy | None = None) -> list[dict[str, Any]]:
    payload = open_payload_table(api, tables.payload)
    request_logs = _open(api, tables.request_logs)
    assessment_logs = _open(api, tables.assessment_logs)
    exports = _open(api, tables.exports)
    reports = []
    # Each table with the readers that must have caught up before its history may go.
    plan: list[tuple[str, DeltaTable | None, list[tuple[DeltaTable | None, str]]]] = [
        (tables.payload, payload, [(request_logs, format_app_id(tables.payload)),
                                   (assessment_logs, format_app_id(tables.payload))]),
        (tables.request_logs, request_logs, [(exports, TRACE_APP_PREFIX + tables.request_logs)]),
        (tables.assessment_logs, assessment_logs, [(exports, FEEDBACK_APP_PREFIX + tables.assessment_logs)]),
        (tables.exports, exports, []),
    ]
    with endpoint_lock(tables.endpoint_name):  # one maintenance at a time, never beside a formatting pass
        for name, table, readers in plan:
            if table is None:
                continue
            may_drop = _caught_up(table, readers)
            reports.append(maintain(table, name=name, policy=policy, may_drop_history=may_drop).to_dict())
    return reports
