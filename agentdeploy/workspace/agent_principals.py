"""Agent service principals: one hidden principal per deployed model version, granted exactly
the resources the model declared (least privilege), and only what its deployer holds (no
privilege escalation). Deleting it revokes its grants and makes its tokens fail at once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from agentdeploy.errors import InvalidParameterValue, PermissionDenied
from agentdeploy.workspace import audit, catalog, grants, identity
from agentdeploy.workspace.agent_resources import Requirement
from agentdeploy.workspace.db import Base, UTCDateTime, utcnow
from agentdeploy.workspace.identity import Identity, Principal

__all__ = [
    "AgentPrincipal",
    "ensure_agent_principal",
    "find_for_entity",
    "current_grants",
    "replace_grants",
    "may_manage",
]

class AgentPrincipal(Base):
    __tablename__ = "agent_principals"
    __table_args__ = (UniqueConstraint("model_name", "model_version", name="uq_agent_principals_model_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    principal_id: Mapped[int] = mapped_column(ForeignKey("principals.id", ondelete="CASCADE"), unique=True)
    model_name: Mapped[str] = mapped_column(String(255), index=True)
    model_version: Mapped[str] = mapped_column(String(32))
    endpoint_name: Mapped[str] = mapped_column(String(255), index=True)
    served_entity_name: Mapped[str] = mapped_column(String(255), index=True)
    created_by_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


def ensure_agent_principal(
    session: Session, caller: Identity, *, model_name: str, model_version: str, endpoint_name: str,
    served_entity_name: str,
) -> tuple[AgentPrincipal, Principal, bool]:
    """The model version's principal, created (hidden, owned by the caller) if missing."""
    row = session.scalars(select(AgentPrincipal).where(
        AgentPrincipal.model_name == model_name, AgentPrincipal.model_version == model_version)).first()
    if row is not None:
        principal = session.get(Principal, row.principal_id)
        assert principal is not None
        row.endpoint_name, row.served_entity_name = endpoint_name, served_entity_name
        return row, principal, False
    creator = identity.get_principal(session, caller.id)
    principal = identity.create_service_principal(
        session, f"agent {model_name} v{model_version}", hidden=True, created_by=creator)
    row = AgentPrincipal(principal_id=principal.id, model_name=model_name, model_version=model_version,
                         endpoint_name=endpoint_name, served_entity_name=served_entity_name,
                         created_by_id=caller.id, created_at=utcnow())
    session.add(row)
    session.flush()
    audit.record(session, actor=caller, action="createServicePrincipal", securable_type="service_principal",
                 securable_name=principal.name,
                 params={"model_name": model_name, "model_version": model_version, "hidden": True})
    return row, principal, True


def find_for_entity(session: Session, served_entity_name: str) -> AgentPrincipal | None:
    return session.scalars(select(AgentPrincipal).where(
        AgentPrincipal.served_entity_name == served_entity_name).order_by(AgentPrincipal.id.desc())).first()


def may_manage(caller: Identity, row: AgentPrincipal) -> bool:
    return caller.is_admin or caller.id == row.created_by_id


def current_grants(session: Session, principal_id: int) -> list[Requirement]:
    rows = session.execute(
        select(catalog.Securable.securable_type, catalog.Securable.full_name, grants.Grant.privilege)
        .join(grants.Grant, grants.Grant.securable_id == catalog.Securable.id)
        .where(grants.Grant.principal_id == principal_id))
    return sorted(Requirement(t, n, p) for t, n, p in rows)


def replace_grants(
    session: Session, caller: Identity, principal: Principal, wanted: list[Requirement],
    missing_for_caller: list[str],
) -> list[Requirement]:
    """Make the principal hold exactly `wanted`; returns what it held before.

    `missing_for_caller` is what the caller itself lacks of `wanted` (computed on the in-memory
    view): anything missing is refused, so an agent never gets more than its deployer has."""
    if missing_for_caller:
        raise PermissionDenied(
            f"Cannot grant the agent's principal what its deployer does not hold: {', '.join(missing_for_caller)}.")
    previous = current_grants(session, principal.id)
    for req in sorted(set(previous) - set(wanted)):
        securable = catalog.find_securable(session, req.securable_type, req.full_name)
        if securable is not None:
            grants.revoke(session, securable, principal, privileges=[req.privilege], actor=caller)
    for req in sorted(set(wanted) - set(previous)):
        securable = catalog.find_securable(session, req.securable_type, req.full_name)
        if securable is None:
            raise InvalidParameterValue(f"Cannot grant {req.describe()}: it does not exist.")
        grants.grant(session, securable, principal, privileges=[req.privilege], actor=caller)
    return previous


def describe_row(row: AgentPrincipal, principal: Principal, held: list[Requirement]) -> dict[str, Any]:
    return {
        "id": str(principal.id),
        "application_id": principal.application_id,
        "display_name": principal.display_name,
        "model_name": row.model_name,
        "model_version": row.model_version,
        "endpoint_name": row.endpoint_name,
        "served_entity_name": row.served_entity_name,
        "grants": [g.as_json() for g in held],
    }
