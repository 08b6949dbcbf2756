"""Secret scopes, secrets and ACLs: `/api/2.0/secrets/*`, the shapes of the databricks-sdk
`w.secrets` API. No route returns a secret value (`/api/2.0/secrets/get` answers 403)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from agentdeploy.errors import InvalidParameterValue, PermissionDenied
from agentdeploy.workspace import secrets
from agentdeploy.workspace.api.deps import Caller, WorkspaceDep

__all__ = ["router"]

router = APIRouter(prefix="/api/2.0/secrets", tags=["secrets"])


class ScopeCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")
    scope: str = Field(min_length=1, max_length=128)
    initial_manage_principal: str | None = Field(default=None, max_length=255)
    scope_backend_type: str | None = None


class ScopeRef(BaseModel):
    model_config = ConfigDict(extra="ignore")
    scope: str = Field(min_length=1, max_length=128)


class SecretPut(BaseModel):
    model_config = ConfigDict(extra="ignore", hide_input_in_errors=True)  # never echo a value
    scope: str = Field(min_length=1, max_length=128)
    key: str = Field(min_length=1, max_length=128)
    string_value: str | None = None
    bytes_value: str | None = None


class SecretRef(BaseModel):
    model_config = ConfigDict(extra="ignore")
    scope: str = Field(min_length=1, max_length=128)
    key: str = Field(min_length=1, max_length=128)


class AclPut(BaseModel):
    model_config = ConfigDict(extra="ignore")
    scope: str = Field(min_length=1, max_length=128)
    principal: str = Field(min_length=1, max_length=255)
    permission: str = Field(min_length=1, max_length=16)


class AclRef(BaseModel):
    model_config = ConfigDict(extra="ignore")
    scope: str = Field(min_length=1, max_length=128)
    principal: str = Field(min_length=1, max_length=255)


# Scopes ----------------------------------------------------------------------------------------


@router.post("/scopes/create")
def create_scope(body: ScopeCreate, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    secrets.create_scope(
        ws,
        caller,
        body.scope,
        initial_manage_principal=body.initial_manage_principal,
        backend_type=body.scope_backend_type,
    )
    return {}


@router.get("/scopes/list")
def list_scopes(caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    return {
        "scopes": [{"name": s.name, "backend_type": s.backend_type} for s in secrets.list_scopes(ws, caller)]
    }


@router.post("/scopes/delete")
def delete_scope(body: ScopeRef, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    secrets.delete_scope(ws, caller, body.scope)
    return {}


# Secrets ---------------------------------------------------------------------------------------


@router.post("/put")
def put_secret(body: SecretPut, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    if (body.string_value is None) == (body.bytes_value is None):
        raise InvalidParameterValue("Give exactly one of 'string_value' or 'bytes_value'.")
    if body.string_value is not None:
        value, is_bytes = body.string_value.encode("utf-8"), False
    else:
        try:
            value, is_bytes = base64.b64decode(body.bytes_value or "", validate=True), True
        except (binascii.Error, ValueError):
            raise InvalidParameterValue("'bytes_value' must be base64-encoded.") from None
    secrets.put_secret(ws, caller, body.scope, body.key, value, is_bytes=is_bytes)
    return {}


@router.get("/list")
def list_secrets(
    caller: Caller, ws: WorkspaceDep, scope: str = Query(min_length=1, max_length=128)
) -> dict[str, Any]:
    return {
        "secrets": [
            {"key": s.key, "last_updated_timestamp": s.last_updated_timestamp}
            for s in secrets.list_secrets(ws, caller, scope)
        ]
    }


@router.post("/delete")
def delete_secret(body: SecretRef, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    secrets.delete_secret(ws, caller, body.scope, body.key)
    return {}


@router.get("/get")
def get_secret(caller: Caller) -> dict[str, Any]:
    raise PermissionDenied(
        "Secret values are never returned by the API; they reach a deployed agent as "
        "secret-backed environment variables."
    )


# ACLs ------------------------------------------------------------------------------------------


@router.post("/acls/put")
def put_acl(body: AclPut, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    secrets.put_acl(ws, caller, body.scope, body.principal, body.permission)
    return {}


@router.get("/acls/get")
def get_acl(
    caller: Caller,
    ws: WorkspaceDep,
    scope: str = Query(min_length=1, max_length=128),
    principal: str = Query(min_length=1, max_length=255),
) -> dict[str, Any]:
    entry = secrets.get_acl(ws, caller, scope, principal)
    return {"principal": entry.principal, "permission": entry.permission}


@router.get("/acls/list")
def list_acls(
    caller: Caller, ws: WorkspaceDep, scope: str = Query(min_length=1, max_length=128)
) -> dict[str, Any]:
    return {
        "items": [
            {"principal": e.principal, "permission": e.permission}
            for e in secrets.list_acls(ws, caller, scope)
        ]
    }


@router.post("/acls/delete")
def delete_acl(body: AclRef, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    secrets.delete_acl(ws, caller, body.scope, body.principal)
    return {}
