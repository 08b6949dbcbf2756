"""Table data: `POST /api/2.0/agentdeploy/tables/{full_name}` uploads Parquet (or Arrow IPC)
and stores it as the catalog table's Delta data; `GET /api/2.0/agentdeploy/tables` lists the
tables the caller may read. The CLI uploads (it may run on another machine than the server).

Creating a table needs CREATE_TABLE on its schema (with USE_SCHEMA and USE_CATALOG, which the
authorization function checks with it); the caller owns the new table. Replacing or appending
to a table needs MODIFY on it.
"""

from __future__ import annotations

import io
from typing import Any, Literal

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from agentdeploy.errors import AlreadyExists, InvalidParameterValue, PayloadTooLarge
from agentdeploy.tables.delta import WriteMode, table_parts
from agentdeploy.workspace import audit, catalog
from agentdeploy.workspace.api.deps import Caller, WorkspaceDep
from agentdeploy.workspace.context import Workspace
from agentdeploy.workspace.identity import Identity
from agentdeploy.workspace.sql import statement_service

__all__ = ["router", "MAX_UPLOAD_BYTES", "read_upload"]

router = APIRouter(prefix="/api/2.0/agentdeploy/tables", tags=["tables"])

MAX_UPLOAD_BYTES = 512 * 1024 * 1024


def read_upload(body: bytes) -> pa.Table:
    """Parquet (recognised by its `PAR1` magic) or an Arrow IPC stream, else 400."""
    if not body:
        raise InvalidParameterValue("The request body is empty; send the table as Parquet.")
    try:
        if body[:4] == b"PAR1":
            return pq.read_table(io.BytesIO(body))
        return ipc.open_stream(pa.py_buffer(body)).read_all()
    except (pa.ArrowException, OSError) as exc:
        raise InvalidParameterValue(
            f"The request body is neither Parquet nor an Arrow IPC stream: {str(exc)[:200]}"
        ) from None


def table_info(securable: catalog.Securable, *, rows: int | None = None) -> dict[str, Any]:
    catalog_name, schema_name, name = securable.full_name.split(".")
    props = securable.properties or {}
    info: dict[str, Any] = {
        "full_name": securable.full_name,
        "name": name,
        "catalog_name": catalog_name,
        "schema_name": schema_name,
        "table_type": props.get("table_type", "MANAGED"),
        "data_source_format": props.get("data_source_format", "DELTA"),
        "storage_location": props.get("storage_location"),
        "columns": props.get("columns", []),
        "owner_id": securable.owner_id,
        "created_at": int(securable.created_at.timestamp() * 1000),
    }
    if rows is not None:
        info["num_rows_written"] = rows
    return info


def _store(
    ws: Workspace,
    caller: Identity,
    full_name: str,
    data: pa.Table,
    mode: Literal["create", "overwrite", "append"],
) -> dict[str, Any]:
    catalog_name, schema_name, _ = full_name.split(".")
    store = statement_service(ws).tables
    existing = ws.access.find("table", full_name)
    if existing is None:
        ws.authorize(caller, "schema", f"{catalog_name}.{schema_name}", "CREATE_TABLE")
    else:
        ws.authorize(caller, "table", full_name, "MODIFY")
        if mode == "create" and store.exists(full_name):
            raise AlreadyExists(
                f"Table {full_name!r} already exists; replace it (mode=overwrite, "
                "'--replace') or add rows (mode=append, '--append')."
            )
    # A directory without a registered table is left over from a deleted table: replace it.
    delta_mode: WriteMode = (
        "append"
        if mode == "append"
        else "overwrite"
        if (mode == "overwrite" or existing is None)
        else "error"
    )
    if mode == "append" and not store.exists(full_name):
        delta_mode = "error"
    table = store.write(full_name, data, mode=delta_mode)
    columns = store.columns(full_name)
    properties = {
        "storage_location": table.table_uri,
        "data_source_format": "DELTA",
        "table_type": "MANAGED",
        "columns": columns,
    }
    with ws.change() as session:
        securable = catalog.find_securable(session, "table", full_name)
        if securable is None:
            securable = catalog.register_securable(
                session, "table", full_name, owner_id=caller.id, properties=properties
            )
            action = "createTable"
        else:
            catalog.update_properties(session, securable, properties)
            action = "updateTable"
        audit.record(
            session,
            actor=caller,
            action=action,
            securable_type="table",
            securable_name=full_name,
            params={"full_name_arg": full_name, "mode": mode, "rows": data.num_rows},
        )
        return table_info(securable, rows=data.num_rows)


@router.post("/{full_name}")
async def upload_table(
    full_name: str,
    request: Request,
    caller: Caller,
    ws: WorkspaceDep,
    mode: Literal["create", "overwrite", "append"] = Query(default="create"),
) -> dict[str, Any]:
    table_parts(full_name)  # 400 on a malformed name before reading the body
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_UPLOAD_BYTES:
            raise PayloadTooLarge(
                f"The table is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB; "
                "load it in parts with mode=append."
            )
        chunks.append(chunk)
    data = await run_in_threadpool(read_upload, b"".join(chunks))
    return await run_in_threadpool(_store, ws, caller, full_name, data, mode)


@router.get("")
def list_tables(
    caller: Caller,
    ws: WorkspaceDep,
    catalog_name: str | None = Query(default=None, max_length=255),
    schema_name: str | None = Query(default=None, max_length=255),
) -> dict[str, Any]:
    """Tables the caller may read (SELECT with the USE_* rule) or manage, with their columns."""
    parent = catalog_name or None
    if parent and schema_name:
        parent = f"{parent}.{schema_name}"
    with ws.read() as session:
        rows = catalog.list_securables(session, "table", parent=parent)
    store = statement_service(ws).tables
    visible = [
        r
        for r in rows
        if ws.is_authorized(caller, "table", r.full_name, "SELECT")
        or ws.is_authorized(caller, "table", r.full_name, "MANAGE")
    ]
    return {"tables": [dict(table_info(r), has_data=store.exists(r.full_name)) for r in visible]}
