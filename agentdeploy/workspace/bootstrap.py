"""First start: built-in groups, the admin user, and the credentials file the CLI and SDK read."""

from __future__ import annotations

import json
import logging

from sqlalchemy import func, select

from agentdeploy.workspace import audit, identity, tokens
from agentdeploy.workspace.context import Workspace
from agentdeploy.workspace.keys import write_private_file

__all__ = ["bootstrap", "ADMIN_USER"]

log = logging.getLogger("agentdeploy.bootstrap")
ADMIN_USER = "admin"


def bootstrap(workspace: Workspace) -> None:
    """Idempotent: creates the groups always, the admin and its credentials only on first start."""
    settings = workspace.settings
    with workspace.change() as session:
        _, admins = identity.ensure_builtin_groups(session)
        users = session.scalar(select(func.count()).select_from(identity.Principal).where(
            identity.Principal.kind == "user"))
        if users:
            return
        admin = identity.create_user(session, ADMIN_USER, display_name="Workspace admin")
        identity.add_member(session, admins, admin)
        value, record = tokens.create_token(session, workspace.hash_key, admin, comment="agentdeploy bootstrap")
        audit.record(session, actor="system", action="createUser", securable_type="user", securable_name=ADMIN_USER)
        audit.record(session, actor="system", action="generateToken", securable_type="token",
                     securable_name=record.id, params={"principal": ADMIN_USER})
        write_private_file(
            settings.credentials_path,
            json.dumps({"host": settings.server_url, "token": value}).encode(),
        )
    log.info("created the admin user; credentials written to %s", settings.credentials_path)
