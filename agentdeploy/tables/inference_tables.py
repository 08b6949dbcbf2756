"""Switching inference tables on for an endpoint: the payload Delta table and its catalog entry.

When an endpoint's `ai_gateway.inference_table_config` is enabled (on create, or by
`PUT .../ai-gateway`), `plan_payload_table` checks the config and the caller's right to create
tables in the schema (USE_CATALOG + USE_SCHEMA + CREATE_TABLE, as on Databricks, where whoever
turns the tables on must be able to create them), `create_payload_table` makes the Delta table
(idempotent), and `register_payload_table` registers it in the catalog as a `table` securable owned
by the ENDPOINT'S CREATOR (Databricks: the creator owns the inference tables) — inside the same
transaction as the endpoint change. Reading the table then needs SELECT like any table, through
the SQL statements API too. An already registered table is left as it is (owner and grants kept).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from agentdeploy.errors import InvalidParameterValue
from agentdeploy.tables.delta import table_parts, uc_columns
from agentdeploy.tables.payload import PAYLOAD_SCHEMA, payload_table_name
from agentdeploy.tables.payload_writer import ensure_payload_table, payload_table_path
from agentdeploy.workspace import catalog

__all__ = ["PayloadTablePlan", "plan_payload_table", "create_payload_table", "register_payload_table"]

FIELD = "ai_gateway.inference_table_config"


@dataclass(frozen=True, slots=True)
class PayloadTablePlan:
    full_name: str
    config: dict[str, Any]  # the inference_table_config, with table_name_prefix filled in


def plan_payload_table(
    ws: Any, caller: Any, endpoint_name: str, ai_gateway: dict[str, Any] | None
) -> PayloadTablePlan | None:
    """None if the config does not turn inference tables on; else the checked table name.

    Fills in `table_name_prefix` (default: the endpoint name, `-` -> `_`) in `ai_gateway` so the
    stored config names the table the gateway writes. 400 naming the field, 404 for a missing
    catalog or schema, 403 without CREATE_TABLE (+ USE_*) on the schema for a new table.
    """
    config = (ai_gateway or {}).get("inference_table_config")
    if not config or config.get("enabled") is False:
        return None
    for key in ("catalog_name", "schema_name"):
        if not isinstance(config.get(key), str) or not config[key]:
            raise InvalidParameterValue(f"'{FIELD}.{key}' is required to turn inference tables on.")
    prefix = config.get("table_name_prefix")
    if prefix is None or prefix == "":
        prefix = config["table_name_prefix"] = endpoint_name.replace("-", "_")
    elif not isinstance(prefix, str):
        raise InvalidParameterValue(f"'{FIELD}.table_name_prefix' must be a string.")
    config.setdefault("enabled", True)
    full_name = ".".join(
        table_parts(
            payload_table_name(config["catalog_name"], config["schema_name"], prefix),
            field=f"{FIELD}.table_name_prefix",
        )
    )
    if ws.access.find("table", full_name) is None:
        ws.authorize(caller, "schema", full_name.rsplit(".", 1)[0], "CREATE_TABLE")
    return PayloadTablePlan(full_name, config)


def create_payload_table(warehouse_dir: Path, plan: PayloadTablePlan) -> None:
    """The Delta table with the payload schema (nothing happens if it exists)."""
    ensure_payload_table(warehouse_dir, plan.full_name)


def register_payload_table(
    session: Session, warehouse_dir: Path, plan: PayloadTablePlan, *, owner_id: int, endpoint_name: str
) -> bool:
    """Register the table owned by `owner_id` unless it is registered already; True if registered now."""
    if catalog.find_securable(session, "table", plan.full_name) is not None:
        return False
    catalog.register_securable(
        session,
        "table",
        plan.full_name,
        owner_id=owner_id,
        properties={
            "storage_location": str(payload_table_path(warehouse_dir, plan.full_name)),
            "data_source_format": "DELTA",
            "table_type": "MANAGED",
            "columns": uc_columns(PAYLOAD_SCHEMA),
        },
        comment=f"Payload log of serving endpoint {endpoint_name} (agentdeploy).",
    )
    return True
