"""The audit log: every change to identities, grants, tokens, secrets and deployments, written in
the same transaction as the change (no change goes unaudited). Never holds a secret value.

Readable by `admins` as the table `system.access.audit` through the SQL statements API.
"""

from __future__ import annotations

import json
import uuid
from contextvars import ContextVar
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String
from sqlalchemy.orm import Mapped, Session, mapped_column

from agentdeploy.workspace.db import Base, UTCDateTime, utcnow

__all__ = ["AuditEvent", "record", "client_context"]

# Set per request by the server (user agent and address), read when recording.
client_context: ContextVar[dict[str, str]] = ContextVar("client_context", default={})


class AuditEvent(Base):
    __tablename__ = "audit_events"

    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    event_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    actor_name: Mapped[str] = mapped_column(String(255))
    action_name: Mapped[str] = mapped_column(String(64), index=True)
    securable_type: Mapped[str] = mapped_column(String(64), default="")
    securable_name: Mapped[str] = mapped_column(String(512), default="")
    request_params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    source_ip_address: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(512), default="")
    status_code: Mapped[int] = mapped_column(Integer, default=200)


def record(
    session: Session,
    *,
    actor: Any,
    action: str,
    securable_type: str = "",
    securable_name: str = "",
    params: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add an audit row to the caller's transaction. `params` must hold no secret values."""
    client = client_context.get()
    event = AuditEvent(
        event_id=str(uuid.uuid4()),
        event_time=utcnow(),
        actor_id=getattr(actor, "id", None),
        actor_name=getattr(actor, "name", str(actor)),
        action_name=action,
        securable_type=securable_type,
        securable_name=securable_name,
        request_params=json.loads(json.dumps(params or {}, default=str)),
        source_ip_address=client.get("ip", ""),
        user_agent=client.get("user_agent", "")[:512],
    )
    session.add(event)
    return event
