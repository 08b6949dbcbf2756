"""Dependencies shared by every route: the workspace, the caller, JSON bodies."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import Depends, Request

from agentdeploy.errors import PermissionDenied, Unauthenticated
from agentdeploy.workspace import grants
from agentdeploy.workspace.context import Workspace
from agentdeploy.workspace.identity import ADMINS, Identity

__all__ = ["get_workspace", "authenticate", "bearer_token", "WorkspaceDep", "Caller", "require_admin"]


def get_workspace(request: Request) -> Workspace:
    return request.app.state.workspace  # type: ignore[no-any-return]


def bearer_token(authorization: str | None) -> str:
    """The token in `Bearer <token>` or basic `token:<token>` (the Databricks docs' curl form)."""
    if not authorization:
        raise Unauthenticated("Missing credentials: send 'Authorization: Bearer <token>'.")
    scheme, _, value = authorization.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthenticated("Malformed basic credentials.") from None
        if user == "token" and password:
            return password
        raise Unauthenticated("Basic credentials must be 'token:<token>'.")
    raise Unauthenticated("Unsupported authorization scheme: use 'Bearer <token>'.")


def authenticate(request: Request) -> Identity:
    """The one authentication dependency: resolves the caller from a PAT or an access token."""
    identity = get_workspace(request).identify(bearer_token(request.headers.get("authorization")))
    request.state.caller = identity
    return identity


WorkspaceDep = Annotated[Workspace, Depends(get_workspace)]
Caller = Annotated[Identity, Depends(authenticate)]


def require_admin(caller: Identity, action: str) -> None:
    """Admin-only actions are MANAGE on the metastore, decided like every other check by
    `grants.decide` (which gives the metastore to the members of `admins` only)."""
    if grants.decide(None, caller, None, "MANAGE"):
        raise PermissionDenied(f"{action} requires membership in the group '{ADMINS}'.")
