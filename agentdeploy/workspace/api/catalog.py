"""Unity Catalog objects over REST: `/api/2.1/unity-catalog/{catalogs,schemas,tables,functions,models}`.

Shapes are the databricks-sdk's `CatalogInfo`, `SchemaInfo`, `TableInfo`, `FunctionInfo` and
`RegisteredModelInfo`. Who may do what (decided by `grants.decide`, through `ws.authorize`):

    create catalog      CREATE_CATALOG on the metastore (members of `admins`)
    create schema       USE_CATALOG + CREATE_SCHEMA on the catalog
    create function     USE_CATALOG + USE_SCHEMA + CREATE_FUNCTION on the schema
    create model        USE_CATALOG + USE_SCHEMA + CREATE_MODEL on the schema
    get / list          catalog: USE_CATALOG; schema: USE_SCHEMA; table: SELECT (or MODIFY);
                        function and model: EXECUTE (plus the USE_* rule), or the right to manage it
    update / delete     MANAGE (owners, owners of a parent, admins)

Tables are registered by the data API (`catalog.register_securable(session, "table", ...)` with
`properties` holding `storage_location`, `columns` (ColumnInfo dicts), optionally
`data_source_format`, `table_type` and `table_properties`); here they are listed and read.
`POST /api/2.0/agentdeploy/securables` (admins; ours) registers a workspace object whose own API
is elsewhere (a Genie space, a vector search index, a connection) so it can be granted and
declared as an agent's resource; `GET`/`DELETE .../securables/{type}/{name}` read and remove it.
Listings hold only what the caller may see. Paging parameters are accepted; every answer is one
page (no `next_page_token`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from agentdeploy.errors import InvalidParameterValue, PermissionDenied
from agentdeploy.workspace import audit, catalog, grants
from agentdeploy.workspace.api.deps import Caller, WorkspaceDep
from agentdeploy.workspace.api.permissions import can_manage, owner_label, resolve_principal
from agentdeploy.workspace.catalog import Securable
from agentdeploy.workspace.context import Workspace
from agentdeploy.workspace.identity import Identity

__all__ = ["router", "securable_info", "METASTORE_ID"]

UC = "/api/2.1/unity-catalog"
METASTORE_ID = "00000000-0000-0000-0000-00000000ad00"  # the one local metastore
router = APIRouter(tags=["unity-catalog"])

# The privilege a read of each type needs (any of them), besides the right to manage it.
READ_PRIVILEGES: dict[str, tuple[str, ...]] = {
    "catalog": ("USE_CATALOG",),
    "schema": ("USE_SCHEMA",),
    "table": ("SELECT", "MODIFY"),
    "function": ("EXECUTE",),
    "registered_model": ("EXECUTE",),
}


def _ms(value: datetime | None) -> int | None:
    return int(value.timestamp() * 1000) if value else None


def _str_map(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


# Authorization helpers -------------------------------------------------------------------------
def may_read(ws: Workspace, caller: Identity, securable_type: str, full_name: str) -> bool:
    ref = ws.access.find(securable_type, full_name)
    if ref is None:
        return False
    return can_manage(ws, caller, ref) or any(
        not grants.decide(ws.access, caller, ref, p) for p in READ_PRIVILEGES[securable_type]
    )


def authorize_read(ws: Workspace, caller: Identity, securable_type: str, full_name: str) -> None:
    """404 if missing; 403 naming what the first read privilege lacks, unless any suffices."""
    full_name = catalog.check_securable_name(securable_type, full_name)
    if not may_read(ws, caller, securable_type, full_name):
        ws.authorize(caller, securable_type, full_name, READ_PRIVILEGES[securable_type][0])


def authorize_manage(ws: Workspace, caller: Identity, securable_type: str, full_name: str) -> None:
    ws.authorize(caller, securable_type, full_name, "MANAGE")


# Shapes ----------------------------------------------------------------------------------------
def securable_info(ws: Workspace, s: Securable) -> dict[str, Any]:
    """The SDK's *Info shape for a Unity Catalog securable."""
    props = s.properties or {}
    info: dict[str, Any] = {
        "name": s.name,
        "full_name": s.full_name,
        "owner": owner_label(ws, s.owner_id),
        "comment": s.comment or None,
        "created_at": _ms(s.created_at),
        "created_by": owner_label(ws, s.created_by_id) if s.created_by_id is not None else None,
        "updated_at": _ms(s.updated_at),
        "metastore_id": METASTORE_ID,
    }
    parts = s.full_name.split(".")
    if s.securable_type == "catalog":
        info.update(
            catalog_type="MANAGED_CATALOG",
            securable_type="CATALOG",
            isolation_mode="OPEN",
            properties=_str_map(props.get("properties")),
            storage_root=props.get("storage_root"),
            storage_location=str(ws.settings.warehouse_dir / s.name),
        )
    elif s.securable_type == "schema":
        info.update(
            catalog_name=parts[0],
            schema_id=s.object_id,
            properties=_str_map(props.get("properties")),
            catalog_type="MANAGED_CATALOG",
            storage_root=props.get("storage_root"),
            storage_location=str(ws.settings.warehouse_dir / parts[0] / parts[1]),
        )
    elif s.securable_type == "table":
        info.update(
            catalog_name=parts[0],
            schema_name=parts[1],
            table_id=s.object_id,
            table_type=props.get("table_type", "MANAGED"),
            data_source_format=props.get("data_source_format", "DELTA"),
            storage_location=props.get("storage_location"),
            columns=list(props.get("columns") or []),
            properties=_str_map(props.get("table_properties")),
        )
    elif s.securable_type == "function":
        info.update({k: v for k, v in props.items() if k not in info and k not in ("name", "full_name")})
        info.update(
            catalog_name=parts[0], schema_name=parts[1], function_id=s.object_id, specific_name=s.name
        )
    elif s.securable_type == "registered_model":
        info.update(
            catalog_name=parts[0],
            schema_name=parts[1],
            aliases=list(props.get("aliases") or []),
            storage_location=props.get("storage_location")
            or str(ws.settings.mlflow_dir / "models" / s.full_name),
        )
    return {k: v for k, v in info.items() if v is not None}


def _visible(ws: Workspace, caller: Identity, rows: Sequence[Securable]) -> list[Securable]:
    return [r for r in rows if may_read(ws, caller, r.securable_type, r.full_name)]


def _create(
    ws: Workspace,
    caller: Identity,
    securable_type: str,
    full_name: str,
    *,
    parent_privilege: str | None,
    comment: str | None,
    properties: dict[str, Any],
    action: str,
) -> dict[str, Any]:
    full_name = catalog.check_securable_name(securable_type, full_name, field="name")
    parent = catalog.parent_name(securable_type, full_name)
    if parent is None:
        if grants.decide(None, caller, None, "CREATE_CATALOG"):
            raise PermissionDenied(
                grants.denial_message(caller, ["CREATE_CATALOG on the metastore (a member of 'admins')"])
            )
    else:
        assert parent_privilege is not None
        ws.authorize(caller, parent[0], parent[1], parent_privilege)
    with ws.change() as session:
        row = catalog.register_securable(
            session,
            securable_type,
            full_name,
            owner_id=caller.id,
            properties=properties,
            comment=comment or "",
        )
        audit.record(
            session, actor=caller, action=action, securable_type=securable_type, securable_name=full_name
        )
        return securable_info(ws, row)


def _update(
    ws: Workspace, caller: Identity, securable_type: str, full_name: str, body: UpdateBody, action: str
) -> dict[str, Any]:
    authorize_manage(ws, caller, securable_type, full_name)
    if body.new_name is not None and body.new_name != full_name.rsplit(".", 1)[-1]:
        raise InvalidParameterValue("'new_name': renaming is not supported; create a new object instead.")
    new_owner = resolve_principal(ws, body.owner, field="owner") if body.owner is not None else None
    with ws.change() as session:
        row = catalog.get_securable(session, securable_type, full_name)
        if body.comment is not None or body.properties is not None:
            catalog.update_properties(
                session, row, {"properties": body.properties} if body.properties else {}, comment=body.comment
            )
        if new_owner is not None and new_owner.id != row.owner_id:
            catalog.set_owner(session, row, new_owner.id)
            audit.record(
                session,
                actor=caller,
                action="changeOwner",
                securable_type=securable_type,
                securable_name=full_name,
                params={"owner": new_owner.name},
            )
        audit.record(
            session, actor=caller, action=action, securable_type=securable_type, securable_name=full_name
        )
        info = securable_info(ws, row)
    return info


def _delete(
    ws: Workspace, caller: Identity, securable_type: str, full_name: str, force: bool, action: str
) -> dict[str, Any]:
    authorize_manage(ws, caller, securable_type, full_name)
    with ws.change() as session:
        row = catalog.get_securable(session, securable_type, full_name)
        removed = catalog.delete_securable(session, row, force=force)
        audit.record(
            session,
            actor=caller,
            action=action,
            securable_type=securable_type,
            securable_name=full_name,
            params={"force": force, "removed": [f"{r.securable_type}:{r.full_name}" for r in removed]},
        )
    return {}


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class UpdateBody(_Body):
    comment: str | None = Field(default=None, max_length=1024)
    owner: str | None = Field(default=None, max_length=255)
    new_name: str | None = Field(default=None, max_length=255)
    properties: dict[str, str] | None = None


def _get_one(ws: Workspace, caller: Identity, securable_type: str, full_name: str) -> dict[str, Any]:
    authorize_read(ws, caller, securable_type, full_name)
    with ws.read() as session:
        return securable_info(ws, catalog.get_securable(session, securable_type, full_name))


def _list(ws: Workspace, caller: Identity, securable_type: str, parent: str | None) -> list[dict[str, Any]]:
    with ws.read() as session:
        rows = catalog.list_securables(session, securable_type, parent=parent)
        return [securable_info(ws, r) for r in _visible(ws, caller, rows)]


def _parent_of_listing(catalog_name: str | None, schema_name: str | None, *, need_both: bool) -> str | None:
    if schema_name and not catalog_name:
        raise InvalidParameterValue("'catalog_name' is required when 'schema_name' is given.")
    if need_both and not (catalog_name and schema_name):
        raise InvalidParameterValue("'catalog_name' and 'schema_name' are required.")
    if catalog_name:
        catalog.check_full_name_part("catalog_name", catalog_name)
    if schema_name:
        catalog.check_full_name_part("schema_name", schema_name)
    return ".".join(p for p in (catalog_name, schema_name) if p) or None


# Catalogs --------------------------------------------------------------------------------------
class CatalogCreate(_Body):
    name: str = Field(min_length=1, max_length=255)
    comment: str | None = Field(default=None, max_length=1024)
    properties: dict[str, str] | None = None
    storage_root: str | None = Field(default=None, max_length=1024)


@router.post(UC + "/catalogs")
def create_catalog(body: CatalogCreate, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    props: dict[str, Any] = {"properties": body.properties or {}}
    if body.storage_root:
        props["storage_root"] = body.storage_root
    return _create(
        ws,
        caller,
        "catalog",
        body.name,
        parent_privilege=None,
        comment=body.comment,
        properties=props,
        action="createCatalog",
    )


@router.get(UC + "/catalogs")
def list_catalogs(caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    return {"catalogs": _list(ws, caller, "catalog", None)}


@router.get(UC + "/catalogs/{name}")
def get_catalog(name: str, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    return _get_one(ws, caller, "catalog", name)


@router.patch(UC + "/catalogs/{name}")
def update_catalog(name: str, body: UpdateBody, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    return _update(ws, caller, "catalog", name, body, "updateCatalog")


@router.delete(UC + "/catalogs/{name}")
def delete_catalog(name: str, caller: Caller, ws: WorkspaceDep, force: bool = Query(False)) -> dict[str, Any]:
    return _delete(ws, caller, "catalog", name, force, "deleteCatalog")


# Schemas ---------------------------------------------------------------------------------------
class SchemaCreate(_Body):
    name: str = Field(min_length=1, max_length=255)
    catalog_name: str = Field(min_length=1, max_length=255)
    comment: str | None = Field(default=None, max_length=1024)
    properties: dict[str, str] | None = None
    storage_root: str | None = Field(default=None, max_length=1024)


@router.post(UC + "/schemas")
def create_schema(body: SchemaCreate, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    catalog.check_full_name_part("catalog_name", body.catalog_name)
    catalog.check_full_name_part("name", body.name)
    props: dict[str, Any] = {"properties": body.properties or {}}
    if body.storage_root:
        props["storage_root"] = body.storage_root
    return _create(
        ws,
        caller,
        "schema",
        f"{body.catalog_name}.{body.name}",
        parent_privilege="CREATE_SCHEMA",
        comment=body.comment,
        properties=props,
        action="createSchema",
    )


@router.get(UC + "/schemas")
def list_schemas(caller: Caller, ws: WorkspaceDep, catalog_name: str | None = Query(None)) -> dict[str, Any]:
    if not catalog_name:
        raise InvalidParameterValue("'catalog_name' is required.")
    return {"schemas": _list(ws, caller, "schema", _parent_of_listing(catalog_name, None, need_both=False))}


@router.get(UC + "/schemas/{full_name}")
def get_schema(full_name: str, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    return _get_one(ws, caller, "schema", full_name)


@router.patch(UC + "/schemas/{full_name}")
def update_schema(full_name: str, body: UpdateBody, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    return _update(ws, caller, "schema", full_name, body, "updateSchema")


@router.delete(UC + "/schemas/{full_name}")
def delete_schema(
    full_name: str, caller: Caller, ws: WorkspaceDep, force: bool = Query(False)
) -> dict[str, Any]:
    return _delete(ws, caller, "schema", full_name, force, "deleteSchema")


# Tables (Delta tables are made by the data API; here they are registered and read) ------------
class TableCreate(_Body):
    name: str = Field(min_length=1, max_length=255)
    catalog_name: str = Field(min_length=1, max_length=255)
    schema_name: str = Field(min_length=1, max_length=255)
    storage_location: str | None = Field(default=None, max_length=4096)
    table_type: str = Field(default="EXTERNAL", max_length=32)
    data_source_format: str = Field(default="DELTA", max_length=32)
    columns: list[dict[str, Any]] = Field(default_factory=list, max_length=4096)
    properties: dict[str, str] | None = None
    comment: str | None = Field(default=None, max_length=1024)


@router.post(UC + "/tables")
def create_table(body: TableCreate, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    """Register a table's metadata (the SDK's `tables.create`): USE_CATALOG, USE_SCHEMA and
    CREATE_TABLE on the schema. Writes no data; the data API registers the Delta tables it makes."""
    for field, value in (
        ("catalog_name", body.catalog_name),
        ("schema_name", body.schema_name),
        ("name", body.name),
    ):
        catalog.check_full_name_part(field, value)
    props: dict[str, Any] = {
        "table_type": body.table_type.upper(),
        "data_source_format": body.data_source_format.upper(),
        "columns": body.columns,
        "table_properties": body.properties or {},
    }
    if body.storage_location:
        props["storage_location"] = body.storage_location
    return _create(
        ws,
        caller,
        "table",
        f"{body.catalog_name}.{body.schema_name}.{body.name}",
        parent_privilege="CREATE_TABLE",
        comment=body.comment,
        properties=props,
        action="createTable",
    )


@router.get(UC + "/tables")
def list_tables(
    caller: Caller,
    ws: WorkspaceDep,
    catalog_name: str | None = Query(None),
    schema_name: str | None = Query(None),
) -> dict[str, Any]:
    return {
        "tables": _list(ws, caller, "table", _parent_of_listing(catalog_name, schema_name, need_both=True))
    }


@router.get(UC + "/tables/{full_name}/exists")
def table_exists(full_name: str, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    return {"table_exists": may_read(ws, caller, "table", catalog.check_securable_name("table", full_name))}


@router.get(UC + "/tables/{full_name}")
def get_table(full_name: str, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    return _get_one(ws, caller, "table", full_name)


@router.patch(UC + "/tables/{full_name}")
def update_table(full_name: str, body: UpdateBody, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    _update(ws, caller, "table", full_name, body, "updateTable")
    return {}


# Functions -------------------------------------------------------------------------------------
class FunctionInfoIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1, max_length=255)
    catalog_name: str = Field(min_length=1, max_length=255)
    schema_name: str = Field(min_length=1, max_length=255)
    comment: str | None = Field(default=None, max_length=1024)


class FunctionCreate(_Body):
    function_info: FunctionInfoIn


_FUNCTION_FIELDS = (
    "data_type",
    "full_data_type",
    "input_params",
    "return_params",
    "routine_body",
    "routine_definition",
    "routine_dependencies",
    "parameter_style",
    "is_deterministic",
    "sql_data_access",
    "is_null_call",
    "security_type",
    "external_language",
    "external_name",
    "sql_path",
    "properties",
)


@router.post(UC + "/functions")
def create_function(body: FunctionCreate, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    info = body.function_info
    for field, value in (
        ("function_info.catalog_name", info.catalog_name),
        ("function_info.schema_name", info.schema_name),
        ("function_info.name", info.name),
    ):
        catalog.check_full_name_part(field, value)
    extra = info.model_dump(exclude={"name", "catalog_name", "schema_name", "comment"})
    props = {k: extra[k] for k in _FUNCTION_FIELDS if extra.get(k) is not None}
    return _create(
        ws,
        caller,
        "function",
        f"{info.catalog_name}.{info.schema_name}.{info.name}",
        parent_privilege="CREATE_FUNCTION",
        comment=info.comment,
        properties=props,
        action="createFunction",
    )


@router.get(UC + "/functions")
def list_functions(
    caller: Caller,
    ws: WorkspaceDep,
    catalog_name: str | None = Query(None),
    schema_name: str | None = Query(None),
) -> dict[str, Any]:
    return {
        "functions": _list(
            ws, caller, "function", _parent_of_listing(catalog_name, schema_name, need_both=True)
        )
    }


@router.get(UC + "/functions/{name}")
def get_function(name: str, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    return _get_one(ws, caller, "function", name)


@router.patch(UC + "/functions/{name}")
def update_function(name: str, body: UpdateBody, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    return _update(ws, caller, "function", name, body, "updateFunction")


@router.delete(UC + "/functions/{name}")
def delete_function(name: str, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    return _delete(ws, caller, "function", name, False, "deleteFunction")


# Registered models -----------------------------------------------------------------------------
class ModelCreate(_Body):
    name: str = Field(min_length=1, max_length=255)
    catalog_name: str = Field(min_length=1, max_length=255)
    schema_name: str = Field(min_length=1, max_length=255)
    comment: str | None = Field(default=None, max_length=1024)
    storage_location: str | None = Field(default=None, max_length=1024)


@router.post(UC + "/models")
def create_model(body: ModelCreate, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    for field, value in (
        ("catalog_name", body.catalog_name),
        ("schema_name", body.schema_name),
        ("name", body.name),
    ):
        catalog.check_full_name_part(field, value)
    props = {"storage_location": body.storage_location} if body.storage_location else {}
    return _create(
        ws,
        caller,
        "registered_model",
        f"{body.catalog_name}.{body.schema_name}.{body.name}",
        parent_privilege="CREATE_MODEL",
        comment=body.comment,
        properties=props,
        action="createModel",
    )


@router.get(UC + "/models")
def list_models(
    caller: Caller,
    ws: WorkspaceDep,
    catalog_name: str | None = Query(None),
    schema_name: str | None = Query(None),
) -> dict[str, Any]:
    parent = _parent_of_listing(catalog_name, schema_name, need_both=False)
    return {"registered_models": _list(ws, caller, "registered_model", parent)}


@router.get(UC + "/models/{full_name}")
def get_model(full_name: str, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    return _get_one(ws, caller, "registered_model", full_name)


@router.patch(UC + "/models/{full_name}")
def update_model(full_name: str, body: UpdateBody, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    return _update(ws, caller, "registered_model", full_name, body, "updateModel")


@router.delete(UC + "/models/{full_name}")
def delete_model(full_name: str, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    return _delete(ws, caller, "registered_model", full_name, False, "deleteModel")


# Workspace objects hosted elsewhere ------------------------------------------------------------
class SecurableCreate(_Body):
    securable_type: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=255)
    object_id: str | None = Field(default=None, min_length=1, max_length=64)
    owner: str | None = Field(default=None, max_length=255)
    properties: dict[str, Any] | None = None
    comment: str | None = Field(default=None, max_length=1024)


def _object_info(ws: Workspace, s: Securable) -> dict[str, Any]:
    return {
        "securable_type": s.securable_type,
        "name": s.full_name,
        "object_id": s.object_id,
        "owner": owner_label(ws, s.owner_id),
        "comment": s.comment or "",
        "properties": s.properties or {},
        "created_at": _ms(s.created_at),
    }


@router.post("/api/2.0/agentdeploy/securables")
def register_object(body: SecurableCreate, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    """Admins register a workspace object whose API is elsewhere (a Genie space, a vector search
    index, a connection...), so it can be granted and declared as an agent's resource."""
    stype = catalog.normalize_type(body.securable_type)
    if stype not in catalog.WORKSPACE_OBJECT_TYPES:
        raise InvalidParameterValue(
            f"'securable_type': {stype} objects are created through their own API; "
            f"this registers {', '.join(sorted(catalog.WORKSPACE_OBJECT_TYPES))}."
        )
    if grants.decide(None, caller, None, "MANAGE"):
        raise PermissionDenied(
            grants.denial_message(caller, ["MANAGE on the metastore (a member of 'admins')"])
        )
    owner = resolve_principal(ws, body.owner, field="owner") if body.owner else caller
    with ws.change() as session:
        row = catalog.register_securable(
            session,
            stype,
            body.name,
            owner_id=owner.id,
            object_id=body.object_id,
            properties=body.properties,
            comment=body.comment or "",
            created_by_id=caller.id,
        )
        audit.record(
            session,
            actor=caller,
            action="registerSecurable",
            securable_type=stype,
            securable_name=row.full_name,
            params={"object_id": row.object_id, "owner": owner.name},
        )
        return _object_info(ws, row)


@router.get("/api/2.0/agentdeploy/securables/{securable_type}/{name}")
def get_object(securable_type: str, name: str, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    stype = catalog.normalize_type(securable_type)
    if stype in catalog.UNITY_CATALOG_TYPES:
        authorize_read(ws, caller, stype, name)
    else:
        ws.authorize(caller, stype, name, _lowest(stype))
    with ws.read() as session:
        return _object_info(ws, catalog.get_securable(session, stype, name))


@router.delete("/api/2.0/agentdeploy/securables/{securable_type}/{name}")
def delete_object(securable_type: str, name: str, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    stype = catalog.normalize_type(securable_type)
    if stype not in catalog.WORKSPACE_OBJECT_TYPES:
        raise InvalidParameterValue(f"'securable_type': delete {stype} objects through their own API.")
    ws.authorize(caller, stype, name, grants.manage_privilege(stype))
    with ws.change() as session:
        row = catalog.get_securable(session, stype, name)
        catalog.delete_securable(session, row)
        audit.record(
            session, actor=caller, action="deleteSecurable", securable_type=stype, securable_name=name
        )
    return {}


def _lowest(securable_type: str) -> str:
    """The least privilege that lets a principal see a workspace object."""
    if securable_type in grants.LEVELS:
        return grants.LEVELS[securable_type][0]
    return "USE_CONNECTION"
