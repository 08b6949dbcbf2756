"""The deploy path's workspace API: agent principals and their grants. (The deployer's own
check is `POST /api/2.0/agentdeploy/permissions/check`, in permissions.py.)

    POST   /api/2.0/agents/principals               the model version's hidden principal (idempotent)
    GET    /api/2.0/agents/principals?endpoint_name= principals of an endpoint, with their grants
    DELETE /api/2.0/agents/principals/{id}          its grants and tokens go with it
    PUT    /api/2.0/agents/principals/{id}/grants   exactly these grants (least privilege)
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from agentdeploy.errors import NotFound, PermissionDenied
from agentdeploy.workspace import audit, identity
from agentdeploy.workspace.agent_principals import (
    AgentPrincipal,
    current_grants,
    describe_row,
    ensure_agent_principal,
    may_manage,
    replace_grants,
)
from agentdeploy.workspace.agent_resources import Requirement
from agentdeploy.workspace.api.deps import Caller, WorkspaceDep
from agentdeploy.workspace.names import check_full_name, check_name

router = APIRouter(tags=["agents"])


class RequirementBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    securable_type: str = Field(min_length=1, max_length=64)
    full_name: str = Field(min_length=1, max_length=255)
    privilege: str = Field(min_length=1, max_length=64)

    def requirement(self) -> Requirement:
        return Requirement(self.securable_type, self.full_name, self.privilege)


class PrincipalCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model_name: str
    model_version: str = Field(pattern=r"^[0-9]{1,12}$")
    endpoint_name: str
    served_entity_name: str


class GrantsReplace(BaseModel):
    model_config = ConfigDict(extra="ignore")
    grants: list[RequirementBody] = Field(max_length=1000)
    restore: bool = False


@router.post("/api/2.0/agents/principals")
def create_agent_principal(body: PrincipalCreate, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    check_full_name("model_name", body.model_name, parts=3)
    check_name("endpoint_name", body.endpoint_name)
    check_name("served_entity_name", body.served_entity_name)
    ws.authorize(caller, "registered_model", body.model_name, "EXECUTE")
    with ws.change() as session:
        row, principal, created = ensure_agent_principal(
            session, caller, model_name=body.model_name, model_version=body.model_version,
            endpoint_name=body.endpoint_name, served_entity_name=body.served_entity_name)
        if not created and not may_manage(caller, row):
            raise PermissionDenied(f"The principal of {body.model_name} version {body.model_version} was created "
                                   "by someone else; only they or an admin may redeploy it.")
        out = describe_row(row, principal, current_grants(session, principal.id))
    return {**out, "created": created}


@router.get("/api/2.0/agents/principals")
def list_agent_principals(caller: Caller, ws: WorkspaceDep, endpoint_name: str | None = None) -> dict[str, Any]:
    with ws.read() as session:
        query = select(AgentPrincipal).order_by(AgentPrincipal.id)
        if endpoint_name is not None:
            query = query.where(AgentPrincipal.endpoint_name == endpoint_name)
        out = []
        for row in session.scalars(query):
            if not may_manage(caller, row):
                continue
            principal = session.get(identity.Principal, row.principal_id)
            if principal is not None:
                out.append(describe_row(row, principal, current_grants(session, principal.id)))
    return {"principals": out}


def _managed_row(session: Any, caller: Any, principal_id: str) -> tuple[AgentPrincipal, identity.Principal]:
    principal = identity.get_principal(session, principal_id, kind="service_principal")
    row = session.scalars(select(AgentPrincipal).where(AgentPrincipal.principal_id == principal.id)).first()
    if row is None:
        raise NotFound(f"Service principal {principal_id} is not an agent principal.")
    if not may_manage(caller, row):
        raise PermissionDenied("Only the deployer who created an agent principal, or an admin, may change it.")
    return row, principal


@router.delete("/api/2.0/agents/principals/{principal_id}")
def delete_agent_principal(principal_id: str, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    with ws.change() as session:
        row, principal = _managed_row(session, caller, principal_id)
        audit.record(session, actor=caller, action="deleteServicePrincipal", securable_type="service_principal",
                     securable_name=principal.name,
                     params={"model_name": row.model_name, "model_version": row.model_version})
        identity.delete_principal(session, principal)  # grants, tokens and secrets cascade
    return {}


@router.put("/api/2.0/agents/principals/{principal_id}/grants")
def replace_agent_grants(principal_id: str, body: GrantsReplace, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    wanted = sorted({g.requirement() for g in body.grants})
    missing = ws.missing_privileges(caller, [(r.securable_type, r.full_name, r.privilege) for r in wanted])
    with ws.change() as session:
        _, principal = _managed_row(session, caller, principal_id)
        previous = replace_grants(session, caller, principal, wanted, missing)
    return {"grants": [g.as_json() for g in wanted], "previous": [g.as_json() for g in previous]}
