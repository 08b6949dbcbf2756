"""Deployment records: which model version is deployed to which endpoint, as the reference's
`/api/2.0/agents/deployments` REST keeps them. Written by the deploy flow's last step, removed by
`delete_deployment`; they survive restarts (workspace database).

Answers use the reference's shapes: `{"deployed_chain": {...}}` and
`{"chain_deployments": [{model_name, model_version, endpoint_name, served_entity_name,
query_endpoint, endpoint_url, review_app_url}]}`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ForeignKey, Integer, String, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from agentdeploy.errors import NotFound
from agentdeploy.naming import served_entity_name_for
from agentdeploy.serving import endpoints
from agentdeploy.workspace import audit, catalog, identity
from agentdeploy.workspace.agent_principals import AgentPrincipal
from agentdeploy.workspace.api.deps import Caller, WorkspaceDep
from agentdeploy.workspace.db import Base, UTCDateTime, utcnow
from agentdeploy.workspace.names import check_full_name, check_name

__all__ = ["DeploymentRecord", "router", "review_app_path", "deployment_json"]


class DeploymentRecord(Base):
    __tablename__ = "agent_deployments"
    __table_args__ = (UniqueConstraint("model_name", "model_version", name="uq_agent_deployments_model_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(255), index=True)
    model_version: Mapped[str] = mapped_column(String(32))
    endpoint_name: Mapped[str] = mapped_column(String(255), index=True)
    served_entity_name: Mapped[str] = mapped_column(String(255))
    query_endpoint: Mapped[str] = mapped_column(String(1024))
    workspace_url: Mapped[str] = mapped_column(String(1024))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("principals.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


def review_app_path(endpoint_name: str) -> str:
    return f"/review/{endpoint_name}"


def deployment_json(record: DeploymentRecord) -> dict[str, Any]:
    base = record.workspace_url.rstrip("/")
    return {
        "model_name": record.model_name,
        "model_version": record.model_version,
        "endpoint_name": record.endpoint_name,
        "served_entity_name": record.served_entity_name,
        "query_endpoint": record.query_endpoint,
        "endpoint_url": f"{base}/serving-endpoints/{record.endpoint_name}/invocations",
        "review_app_url": base + review_app_path(record.endpoint_name),
    }


class DeploymentCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model_name: str
    model_version: str = Field(min_length=1, max_length=32, pattern=r"^[0-9]+$")
    query_endpoint: str = Field(min_length=1, max_length=1024)
    endpoint_name: str
    served_entity_name: str
    workspace_url: str = Field(min_length=1, max_length=1024)


router = APIRouter(tags=["agents"])


def _records(session: Session, model_name: str | None, model_version: str | None) -> list[DeploymentRecord]:
    query = select(DeploymentRecord).order_by(DeploymentRecord.model_name, DeploymentRecord.id)
    if model_name is not None:
        query = query.where(DeploymentRecord.model_name == model_name)
    if model_version is not None:
        query = query.where(DeploymentRecord.model_version == model_version)
    return list(session.scalars(query))


@router.post("/api/2.0/agents/deployments")
def create_deployment(body: DeploymentCreate, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    check_full_name("model_name", body.model_name, parts=3)
    check_name("endpoint_name", body.endpoint_name)
    check_name("served_entity_name", body.served_entity_name)
    # Only who may change the endpoint may say what is deployed on it.
    ws.authorize(caller, "serving_endpoint", body.endpoint_name, "CAN_MANAGE")
    with ws.change() as session:
        existing = _records(session, body.model_name, body.model_version)
        record = existing[0] if existing else DeploymentRecord(model_name=body.model_name,
                                                                model_version=body.model_version)
        record.endpoint_name = body.endpoint_name
        record.served_entity_name = body.served_entity_name or served_entity_name_for(body.model_name,
                                                                                    body.model_version)
        record.query_endpoint = body.query_endpoint
        record.workspace_url = body.workspace_url
        record.created_by_id = caller.id
        record.created_at = utcnow()
        session.add(record)
        session.flush()
        audit.record(session, actor=caller, action="deployAgent", securable_type="registered_model",
                     securable_name=body.model_name,
                     params={"model_version": body.model_version, "endpoint_name": body.endpoint_name})
        return {"deployed_chain": deployment_json(record)}


def _visible(ws: Any, caller: Any, records: list[DeploymentRecord]) -> list[dict[str, Any]]:
    return [deployment_json(r) for r in records
            if ws.is_authorized(caller, "serving_endpoint", r.endpoint_name, "CAN_VIEW")]


@router.get("/api/2.0/agents/deployments")
def list_deployments(caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    with ws.read() as session:
        return {"chain_deployments": _visible(ws, caller, _records(session, None, None))}


@router.get("/api/2.0/agents/deployments/{model_name}")
@router.get("/api/2.0/agents/deployments/{model_name}/versions/{model_version}")
def get_deployments(model_name: str, caller: Caller, ws: WorkspaceDep,
                    model_version: str | None = None) -> dict[str, Any]:
    check_full_name("model_name", model_name, parts=3)
    with ws.read() as session:
        return {"chain_deployments": _visible(ws, caller, _records(session, model_name, model_version))}


_ENTITY_INPUT = ("name", "entity_name", "entity_version", "workload_size", "scale_to_zero_enabled",
                 "environment_vars")


def _without(config: dict[str, Any], remove: set[str]) -> dict[str, Any] | None:
    """The config minus `remove`, traffic to the highest remaining agent version; None when no
    agent entity is left (then the endpoint goes)."""
    remaining = [e for e in endpoints.served_entities(config) if e["name"] not in remove]
    agents = [e for e in remaining if not endpoints.is_native(e)]
    if not agents:
        return None
    highest = max(agents, key=lambda e: int(e["entity_version"]) if str(e["entity_version"]).isdigit() else 0)
    return {
        "served_entities": [{k: e[k] for k in _ENTITY_INPUT if e.get(k) is not None} for e in remaining],
        "traffic_config": {"routes": [{"served_model_name": e["name"],
                                       "traffic_percentage": 100 if e is highest else 0} for e in remaining]},
    }


@router.delete("/api/2.0/agents/deployments/{model_name}")
@router.delete("/api/2.0/agents/deployments/{model_name}/versions/{model_version}")
def delete_deployments(model_name: str, caller: Caller, ws: WorkspaceDep, request: Request,
                       model_version: str | None = None) -> dict[str, Any]:
    """Remove the version's served entity (traffic to the highest remaining version), its
    principal (its tokens fail at once) with its grants, and the record; with no version, or
    nothing left, the endpoint goes. Inference tables stay: they are data."""
    check_full_name("model_name", model_name, parts=3)
    controller = request.app.state.serving_controller
    store = request.app.state.agent_credentials
    teardowns: list[tuple[str, Any, Any]] = []
    rollouts: list[str] = []
    removed_principals: list[str] = []
    with ws.change() as session:
        records = _records(session, model_name, model_version)
        if not records:
            what = f"{model_name} version {model_version}" if model_version else model_name
            raise NotFound(f"No deployment of {what}.")
        for record in records:
            ws.authorize(caller, "serving_endpoint", record.endpoint_name, "CAN_MANAGE")
        for endpoint_name in sorted({r.endpoint_name for r in records}):
            row = endpoints.find_endpoint(session, endpoint_name)
            if row is None:
                continue
            gone = {r.served_entity_name for r in records if r.endpoint_name == endpoint_name}
            config = _without(row.config or {}, gone) if model_version is not None else None
            if config is None:
                securable = catalog.find_securable(session, "serving_endpoint", endpoint_name)
                if securable is not None:
                    catalog.delete_securable(session, securable)
                teardowns.append((row.id, row.config, row.pending_config))
                session.delete(row)
                audit.record(session, actor=caller, action="deleteServingEndpoint",
                             securable_type="serving_endpoint", securable_name=endpoint_name)
            else:
                endpoints.begin_update(session, row, config, actor=caller.name)
                rollouts.append(row.id)
        for record in records:
            agent = session.scalars(select(AgentPrincipal).where(
                AgentPrincipal.model_name == record.model_name,
                AgentPrincipal.model_version == record.model_version)).first()
            if agent is not None:
                principal = session.get(identity.Principal, agent.principal_id)
                if principal is not None:
                    removed_principals.append(str(principal.application_id))
                    audit.record(session, actor=caller, action="deleteServicePrincipal",
                                 securable_type="service_principal", securable_name=principal.name)
                    identity.delete_principal(session, principal)  # grants, tokens, secrets cascade
                store.delete(record.served_entity_name)
            session.delete(record)
            audit.record(session, actor=caller, action="deleteAgentDeployment", securable_type="registered_model",
                         securable_name=model_name, params={"model_version": record.model_version})
    for endpoint_id, config, pending in teardowns:
        controller.schedule_teardown(endpoint_id, config, pending)
    for endpoint_id in rollouts:
        controller.schedule_rollout(endpoint_id)
    return {"deleted_principals": removed_principals}
