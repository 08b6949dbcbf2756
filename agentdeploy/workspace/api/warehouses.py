"""SQL warehouses: `/api/2.0/sql/warehouses` (create, list, get, edit, delete, start, stop).

A warehouse is a `sql_warehouse` securable whose `object_id` is its id. Statements run with
DuckDB inside the server, so there is nothing to start: a new warehouse is RUNNING at once (the
SDK's `create_and_wait` returns immediately). `stop` records STOPPED and `start` RUNNING, so
clients that manage a warehouse's state see what they expect.

Who may do what: create: admins (Databricks' cluster-create entitlement); get/list: CAN_VIEW;
start: CAN_USE; edit/stop/delete: CAN_MANAGE. Permissions are at `/api/2.0/permissions/warehouses/{id}`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from agentdeploy.errors import InvalidParameterValue, NotFound
from agentdeploy.workspace import audit, catalog
from agentdeploy.workspace.api.deps import Caller, WorkspaceDep, require_admin
from agentdeploy.workspace.api.permissions import owner_label
from agentdeploy.workspace.catalog import Securable
from agentdeploy.workspace.context import Workspace
from agentdeploy.workspace.grants import SecurableRef
from agentdeploy.workspace.identity import Identity

__all__ = ["router", "warehouse_info", "SETTINGS_DEFAULTS"]

router = APIRouter(prefix="/api/2.0/sql/warehouses", tags=["warehouses"])

SETTINGS_DEFAULTS: dict[str, Any] = {
    "cluster_size": "2X-Small",
    "auto_stop_mins": 0,
    "min_num_clusters": 1,
    "max_num_clusters": 1,
    "enable_photon": False,
    "enable_serverless_compute": True,
    "warehouse_type": "PRO",
    "spot_instance_policy": "COST_OPTIMIZED",
    "channel": {"name": "CHANNEL_NAME_CURRENT"},
    "tags": {"custom_tags": []},
}
_SETTINGS = tuple(SETTINGS_DEFAULTS) + ("statement_timeout", "max_dbu")


class WarehouseSettings(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str | None = Field(default=None, min_length=1, max_length=100)
    cluster_size: str | None = Field(default=None, max_length=32)
    auto_stop_mins: int | None = Field(default=None, ge=0, le=100_000)
    min_num_clusters: int | None = Field(default=None, ge=1, le=30)
    max_num_clusters: int | None = Field(default=None, ge=1, le=30)
    enable_photon: bool | None = None
    enable_serverless_compute: bool | None = None
    warehouse_type: str | None = Field(default=None, max_length=32)
    spot_instance_policy: str | None = Field(default=None, max_length=32)
    channel: dict[str, Any] | None = None
    tags: dict[str, Any] | None = None
    statement_timeout: int | None = Field(default=None, ge=0)
    max_dbu: int | None = Field(default=None, ge=0)


def warehouse_info(ws: Workspace, row: Securable) -> dict[str, Any]:
    props = row.properties or {}
    settings = {k: props.get(k, SETTINGS_DEFAULTS.get(k)) for k in _SETTINGS}
    host = ws.settings.server_url.split("://", 1)[-1]
    state = props.get("state", "RUNNING")
    return {
        "id": row.object_id,
        "name": row.full_name,
        **{k: v for k, v in settings.items() if v is not None},
        "creator_name": owner_label(ws, row.created_by_id if row.created_by_id is not None else row.owner_id),
        "state": state,
        "num_clusters": 1 if state == "RUNNING" else 0,
        "num_active_sessions": 0,
        "health": {"status": "HEALTHY", "summary": "DuckDB in the agentdeploy server."},
        "odbc_params": {
            "hostname": host.rsplit(":", 1)[0],
            "path": f"/sql/1.0/warehouses/{row.object_id}",
            "protocol": ws.settings.scheme,
            "port": ws.settings.port,
        },
        "jdbc_url": "",
    }


def _find(ws: Workspace, warehouse_id: str) -> SecurableRef:
    ref = ws.access.by_object_id.get(("sql_warehouse", warehouse_id))
    if ref is None:
        raise NotFound(f"No SQL warehouse with id {warehouse_id[:80]!r}.")
    return ref


def _authorized(ws: Workspace, caller: Identity, warehouse_id: str, level: str) -> SecurableRef:
    ref = _find(ws, warehouse_id)
    ws.authorize(caller, "sql_warehouse", ref.full_name, level)
    return ref


@router.post("")
def create_warehouse(body: WarehouseSettings, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    require_admin(caller, "Creating a SQL warehouse")
    if not body.name:
        raise InvalidParameterValue("'name' is required: give the warehouse a name.")
    catalog.check_securable_name("sql_warehouse", body.name, field="name")
    settings = body.model_dump(exclude={"name"}, exclude_none=True)
    with ws.change() as session:
        row = catalog.register_securable(
            session,
            "sql_warehouse",
            body.name,
            owner_id=caller.id,
            properties={**settings, "state": "RUNNING"},
        )
        audit.record(
            session,
            actor=caller,
            action="createWarehouse",
            securable_type="sql_warehouse",
            securable_name=row.full_name,
            params={"id": row.object_id},
        )
        return {"id": row.object_id}


@router.get("")
def list_warehouses(caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    with ws.read() as session:
        rows = catalog.list_securables(session, "sql_warehouse")
        return {
            "warehouses": [
                warehouse_info(ws, r)
                for r in rows
                if ws.is_authorized(caller, "sql_warehouse", r.full_name, "CAN_VIEW")
            ]
        }


@router.get("/{warehouse_id}")
def get_warehouse(warehouse_id: str, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    ref = _authorized(ws, caller, warehouse_id, "CAN_VIEW")
    with ws.read() as session:
        return warehouse_info(ws, catalog.get_securable(session, "sql_warehouse", ref.full_name))


@router.post("/{warehouse_id}/edit")
def edit_warehouse(
    warehouse_id: str, body: WarehouseSettings, caller: Caller, ws: WorkspaceDep
) -> dict[str, Any]:
    ref = _authorized(ws, caller, warehouse_id, "CAN_MANAGE")
    if body.name is not None and body.name != ref.full_name:
        raise InvalidParameterValue("'name': renaming a warehouse is not supported.")
    with ws.change() as session:
        row = catalog.get_securable(session, "sql_warehouse", ref.full_name)
        catalog.update_properties(session, row, body.model_dump(exclude={"name"}, exclude_none=True))
        audit.record(
            session,
            actor=caller,
            action="editWarehouse",
            securable_type="sql_warehouse",
            securable_name=row.full_name,
            params={"id": row.object_id},
        )
    return {}


def _set_state(ws: Workspace, caller: Identity, warehouse_id: str, level: str, state: str) -> dict[str, Any]:
    ref = _authorized(ws, caller, warehouse_id, level)
    with ws.change() as session:
        row = catalog.get_securable(session, "sql_warehouse", ref.full_name)
        catalog.update_properties(session, row, {"state": state})
        audit.record(
            session,
            actor=caller,
            action="startWarehouse" if state == "RUNNING" else "stopWarehouse",
            securable_type="sql_warehouse",
            securable_name=row.full_name,
            params={"id": row.object_id},
        )
    return {}


@router.post("/{warehouse_id}/start")
def start_warehouse(warehouse_id: str, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    return _set_state(ws, caller, warehouse_id, "CAN_USE", "RUNNING")


@router.post("/{warehouse_id}/stop")
def stop_warehouse(warehouse_id: str, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    return _set_state(ws, caller, warehouse_id, "CAN_MANAGE", "STOPPED")


@router.delete("/{warehouse_id}")
def delete_warehouse(warehouse_id: str, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    ref = _authorized(ws, caller, warehouse_id, "CAN_MANAGE")
    with ws.change() as session:
        row = catalog.get_securable(session, "sql_warehouse", ref.full_name)
        catalog.delete_securable(session, row)
        audit.record(
            session,
            actor=caller,
            action="deleteWarehouse",
            securable_type="sql_warehouse",
            securable_name=ref.full_name,
            params={"id": ref.object_id},
        )
    return {}
