"""Personal access tokens: `/api/2.0/token/*` (own tokens) and `/api/2.0/token-management/*`
(admins, any principal's tokens, and tokens on behalf of a service principal)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from agentdeploy.workspace import audit, identity, tokens
from agentdeploy.workspace.api.deps import Caller, WorkspaceDep, require_admin

router = APIRouter(tags=["tokens"])


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")
    comment: str = Field(default="", max_length=1024)
    lifetime_seconds: int | None = None


class TokenDelete(BaseModel):
    model_config = ConfigDict(extra="ignore")
    token_id: str = Field(min_length=1, max_length=64)


class OnBehalfCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")
    application_id: str = Field(min_length=1, max_length=64)
    comment: str = Field(default="", max_length=1024)
    lifetime_seconds: int | None = None


def _ms(value: datetime | None) -> int:
    return int(value.timestamp() * 1000) if value else -1


def token_info(record: tokens.AccessToken, owner: str | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "token_id": record.id,
        "creation_time": _ms(record.created_at),
        "expiry_time": _ms(record.expires_at),
        "comment": record.comment,
    }
    if owner is not None:
        info["created_by_username"] = owner
        info["owner_id"] = record.principal_id
    return info


@router.post("/api/2.0/token/create")
def create_token(body: TokenCreate, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    with ws.change() as session:
        principal = identity.get_principal(session, caller.id)
        value, record = tokens.create_token(
            session, ws.hash_key, principal, comment=body.comment, lifetime_seconds=body.lifetime_seconds
        )
        audit.record(session, actor=caller, action="generateToken", securable_type="token",
                     securable_name=record.id, params={"principal": caller.name})
        return {"token_value": value, "token_info": token_info(record)}


@router.get("/api/2.0/token/list")
def list_tokens(caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    with ws.read() as session:
        principal = identity.get_principal(session, caller.id)
        return {"token_infos": [token_info(t) for t in tokens.list_tokens(session, principal)]}


@router.post("/api/2.0/token/delete")
def delete_token(body: TokenDelete, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    with ws.change() as session:
        principal = identity.get_principal(session, caller.id)
        tokens.revoke_token(session, body.token_id, owner=principal)
        audit.record(session, actor=caller, action="revokeToken", securable_type="token",
                     securable_name=body.token_id)
    return {}


@router.get("/api/2.0/token-management/tokens")
def list_all_tokens(caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    require_admin(caller, "Listing every principal's tokens")
    with ws.read() as session:
        owners = {p.id: p.name for p in session.query(identity.Principal)}
        return {"token_infos": [token_info(t, owners.get(t.principal_id, "")) for t in tokens.list_tokens(session)]}


@router.delete("/api/2.0/token-management/tokens/{token_id}")
def delete_any_token(token_id: str, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    require_admin(caller, "Revoking another principal's token")
    with ws.change() as session:
        tokens.revoke_token(session, token_id)
        audit.record(session, actor=caller, action="revokeToken", securable_type="token", securable_name=token_id)
    return {}


@router.post("/api/2.0/token-management/on-behalf-of/tokens")
def create_token_on_behalf(body: OnBehalfCreate, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    require_admin(caller, "Creating a token for a service principal")
    with ws.change() as session:
        sp = identity.find_principal(session, body.application_id, kind="service_principal")
        if sp is None:
            from agentdeploy.errors import NotFound

            raise NotFound(f"No service principal with application id {body.application_id!r}.")
        creator = identity.get_principal(session, caller.id)
        value, record = tokens.create_token(session, ws.hash_key, sp, comment=body.comment,
                                            lifetime_seconds=body.lifetime_seconds, created_by=creator)
        audit.record(session, actor=caller, action="generateToken", securable_type="token",
                     securable_name=record.id, params={"principal": sp.name, "on_behalf_of": True})
        return {"token_value": value, "token_info": token_info(record, sp.name)}
