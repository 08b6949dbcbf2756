"""Agent credentials at the server: the latest short-lived token of each served entity.

Flows never touch the server's disk: they hand a freshly minted token over
`PUT /api/2.0/agents/served-entities/{served_entity_name}/credentials`. The server checks the
token really is the entity's own principal's, keeps it (0600, outside any worker's reach) so a
restarted worker gets it back, and pushes it at once into the credentials file of every running
worker of that entity (written atomically by the backend: a request in flight never sees a
half-written file).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from agentdeploy.errors import InvalidParameterValue, NotFound, PermissionDenied
from agentdeploy.workspace.agent_principals import find_for_entity, may_manage
from agentdeploy.workspace.api.deps import Caller, WorkspaceDep
from agentdeploy.workspace.keys import write_private_file
from agentdeploy.workspace.names import check_name

__all__ = ["AgentCredential", "CredentialStore", "router"]


@dataclass(frozen=True, slots=True)
class AgentCredential:
    token: str
    expires_at: datetime

    def __repr__(self) -> str:  # never shows the token
        return f"AgentCredential(expires_at={self.expires_at.isoformat()})"


class CredentialStore:
    """Latest token per served entity name, on disk (0600) and in memory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._listeners: list[Callable[[str, AgentCredential], None]] = []

    def _path(self, served_entity_name: str) -> Path:
        return self.directory / f"{check_name('served_entity_name', served_entity_name)}.json"

    def subscribe(self, listener: Callable[[str, AgentCredential], None]) -> None:
        """`listener(served_entity_name, credential)` after every put (e.g. push to workers)."""
        self._listeners.append(listener)

    def put(self, served_entity_name: str, credential: AgentCredential) -> None:
        with self._lock:
            write_private_file(self._path(served_entity_name), json.dumps(
                {"token": credential.token, "expires_at": credential.expires_at.isoformat()}).encode())
        for listener in self._listeners:
            listener(served_entity_name, credential)

    def get(self, served_entity_name: str) -> AgentCredential | None:
        try:
            body = json.loads(self._path(served_entity_name).read_text())
        except (FileNotFoundError, ValueError):
            return None
        return AgentCredential(body["token"], datetime.fromisoformat(body["expires_at"]))

    def delete(self, served_entity_name: str) -> None:
        self._path(served_entity_name).unlink(missing_ok=True)


class CredentialHandOver(BaseModel):
    model_config = ConfigDict(extra="ignore")
    access_token: SecretStr = Field(description="A fresh access token of the entity's own principal.")


router = APIRouter(tags=["agents"])


@router.put("/api/2.0/agents/served-entities/{served_entity_name}/credentials")
def hand_over_credentials(served_entity_name: str, body: CredentialHandOver, caller: Caller,
                          ws: WorkspaceDep, request: Request) -> dict[str, Any]:
    check_name("served_entity_name", served_entity_name)
    token = body.access_token.get_secret_value()
    owner = ws.identify(token)  # 401 for an invalid or expired token
    with ws.read() as session:
        row = find_for_entity(session, served_entity_name)
        if row is None or row.principal_id != owner.id:
            raise InvalidParameterValue(
                f"The token does not belong to the service principal of served entity {served_entity_name!r}.")
        if not (may_manage(caller, row) or caller.id == owner.id):
            raise PermissionDenied("Only the entity's deployer, an admin or its own principal may hand it credentials.")
    claims = ws.issuer.verify_access_token(token)
    expires_at = datetime.fromtimestamp(int(claims["exp"]), UTC)
    store: CredentialStore = request.app.state.agent_credentials
    store.put(served_entity_name, AgentCredential(token, expires_at))
    return {"served_entity_name": served_entity_name, "expires_at": expires_at.isoformat()}


@router.delete("/api/2.0/agents/served-entities/{served_entity_name}/credentials")
def withdraw_credentials(served_entity_name: str, caller: Caller, ws: WorkspaceDep,
                         request: Request) -> dict[str, Any]:
    """Drop a handed-over token (a deploy rolling back its credentials step): no file of an
    entity that never served is left behind."""
    check_name("served_entity_name", served_entity_name)
    with ws.read() as session:
        row = find_for_entity(session, served_entity_name)
        if row is None:
            raise NotFound(f"Served entity {served_entity_name!r} has no agent principal.")
        if not may_manage(caller, row):
            raise PermissionDenied("Only the entity's deployer or an admin may withdraw its credentials.")
    store: CredentialStore = request.app.state.agent_credentials
    store.delete(served_entity_name)
    return {}
