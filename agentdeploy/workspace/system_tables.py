"""System tables read through the SQL statements API: `system.access.audit`, the workspace's
audit log (agentdeploy/workspace/audit.py) with the columns of Databricks' system table.
Readable by members of `admins` only (checked by the statement service)."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
from sqlalchemy import select
from sqlalchemy.orm import Session

from agentdeploy.workspace.audit import AuditEvent

__all__ = ["AUDIT_TABLE", "AUDIT_SCHEMA", "audit_log_table"]

AUDIT_TABLE = "system.access.audit"
_SERVICE_BY_SECURABLE = {
    "token": "accounts",
    "user": "accounts",
    "group": "accounts",
    "service_principal": "accounts",
    "oauth_secret": "accounts",
    "secret_scope": "secrets",
    "sql_warehouse": "databrickssql",
    "serving_endpoint": "serving",
    "catalog": "unityCatalog",
    "schema": "unityCatalog",
    "table": "unityCatalog",
    "function": "unityCatalog",
    "registered_model": "unityCatalog",
    "connection": "unityCatalog",
    "metastore": "unityCatalog",
    "deployment": "agents",
}
AUDIT_SCHEMA = pa.schema(
    [
        ("event_time", pa.timestamp("us", tz="UTC")),
        ("event_date", pa.date32()),
        ("event_id", pa.string()),
        ("version", pa.string()),
        ("service_name", pa.string()),
        ("action_name", pa.string()),
        ("user_identity", pa.struct([("email", pa.string()), ("subject_name", pa.string())])),
        ("request_params", pa.map_(pa.string(), pa.string())),
        ("source_ip_address", pa.string()),
        ("user_agent", pa.string()),
        (
            "response",
            pa.struct([("status_code", pa.int32()), ("error_message", pa.string()), ("result", pa.string())]),
        ),
        ("audit_level", pa.string()),
    ]
)


def audit_log_table(session: Session) -> pa.Table:
    """The workspace's audit events with the columns of Databricks' `system.access.audit`; the
    securable an event is about is in `request_params` (`securable_type`, `full_name_arg`)."""

    rows: dict[str, list[Any]] = {name: [] for name in AUDIT_SCHEMA.names}
    for event in session.scalars(select(AuditEvent).order_by(AuditEvent.event_time)):
        params = {
            str(k): v if isinstance(v, str) else json.dumps(v, default=str)
            for k, v in (event.request_params or {}).items()
        }
        if event.securable_type:
            params.setdefault("securable_type", event.securable_type)
        if event.securable_name:
            params.setdefault("full_name_arg", event.securable_name)
        rows["event_time"].append(event.event_time)
        rows["event_date"].append(event.event_time.date())
        rows["event_id"].append(event.event_id)
        rows["version"].append("2.0")
        rows["service_name"].append(_SERVICE_BY_SECURABLE.get(event.securable_type, "workspace"))
        rows["action_name"].append(event.action_name)
        rows["user_identity"].append({"email": event.actor_name, "subject_name": event.actor_name})
        rows["request_params"].append(sorted(params.items()))
        rows["source_ip_address"].append(event.source_ip_address or None)
        rows["user_agent"].append(event.user_agent or None)
        rows["response"].append({"status_code": event.status_code, "error_message": None, "result": None})
        rows["audit_level"].append("WORKSPACE_LEVEL")
    return pa.table(rows, schema=AUDIT_SCHEMA)
