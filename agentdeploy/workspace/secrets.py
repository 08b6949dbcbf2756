"""Secret scopes: named sets of secret values, encrypted at rest, readable only by the deploy path.

A scope is a `secret_scope` securable (catalog.py): its creator owns it (MANAGE), and its ACLs
are grants of READ < WRITE < MANAGE (grants.py), so the one authorization function decides every
access. Values live in `secret_values`, Fernet-encrypted under a key file outside the database
(`keys.secrets_key`), each bound to its scope and key so a ciphertext moved to another row does
not decrypt there. No listing or API returns a value; `read_secret` is the one way to a value,
for the deploy path inside the server, and it is audited. Audit rows never hold a value.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr
from sqlalchemy import Boolean, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from agentdeploy.errors import AgentDeployError, AlreadyExists, InvalidParameterValue, NotFound
from agentdeploy.workspace import audit, catalog, grants, identity, keys
from agentdeploy.workspace.context import Workspace
from agentdeploy.workspace.db import Base, UTCDateTime, utcnow
from agentdeploy.workspace.identity import Identity

__all__ = [
    "SecretValue",
    "SCOPE_PERMISSIONS",
    "MAX_VALUE_BYTES",
    "ScopeInfo",
    "SecretInfo",
    "AclEntry",
    "check_scope_name",
    "check_key",
    "create_scope",
    "list_scopes",
    "delete_scope",
    "put_secret",
    "list_secrets",
    "delete_secret",
    "put_acl",
    "get_acl",
    "list_acls",
    "delete_acl",
    "read_secret",
]

SCOPE_PERMISSIONS = ("READ", "WRITE", "MANAGE")  # lowest first; each includes those before it
MAX_VALUE_BYTES = 128 * 1024  # Databricks' limit per secret
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


class SecretValue(Base):
    __tablename__ = "secret_values"

    scope: Mapped[str] = mapped_column(String(128), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    ciphertext: Mapped[str] = mapped_column(Text)
    is_bytes: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by_id: Mapped[int | None] = mapped_column(Integer, nullable=True)


@dataclass(frozen=True, slots=True)
class ScopeInfo:
    name: str
    backend_type: str


@dataclass(frozen=True, slots=True)
class SecretInfo:
    key: str
    last_updated_timestamp: int  # ms since the epoch, as Databricks reports it


@dataclass(frozen=True, slots=True)
class AclEntry:
    principal: str
    permission: str


def check_scope_name(value: object, *, field: str = "scope") -> str:
    if not isinstance(value, str) or not _NAME.match(value) or ".." in value:
        raise InvalidParameterValue(
            f"'{field}' must be 1-128 characters of letters, digits, '_', '-' and '.'; "
            f"got {str(value)[:80]!r}."
        )
    return value


def check_key(value: object) -> str:
    return check_scope_name(value, field="key")


# Encryption ------------------------------------------------------------------------------------


@functools.cache
def _fernet(keys_dir: Path) -> Fernet:
    return Fernet(keys.secrets_key(keys_dir))


def _seal(ws: Workspace, scope: str, key: str, value: bytes) -> str:
    # The scope and key travel inside the ciphertext: a row copied elsewhere will not decrypt.
    plain = json.dumps({"scope": scope, "key": key, "value": base64.b64encode(value).decode()})
    return _fernet(ws.settings.keys_dir).encrypt(plain.encode()).decode()


def _open(ws: Workspace, row: SecretValue) -> bytes:
    try:
        plain = json.loads(_fernet(ws.settings.keys_dir).decrypt(row.ciphertext.encode()))
    except (InvalidToken, ValueError):
        raise AgentDeployError(
            f"Secret {row.key!r} in scope {row.scope!r} cannot be decrypted with this "
            "server's key file (keys/secrets.key); put it again."
        ) from None
    if plain.get("scope") != row.scope or plain.get("key") != row.key:
        raise AgentDeployError(f"Secret {row.key!r} in scope {row.scope!r} was not stored under that name.")
    return base64.b64decode(plain["value"])


# Scopes ----------------------------------------------------------------------------------------


def _scope(ws: Workspace, caller: Identity, scope: str, permission: str) -> None:
    """Authorize `permission` on a scope (404 if it does not exist, 403 naming what is missing)."""
    check_scope_name(scope)
    ws.authorize(caller, "secret_scope", scope, permission)


def _principal(session: Session, name: str) -> identity.Principal:
    """A user (by user name), group (by name) or service principal (by application id or name).
    Databricks' all-users group is called `users`; ours is `account users`."""
    if not isinstance(name, str) or not name:
        raise InvalidParameterValue("'principal' must be a user name, group name or application id.")
    found = identity.find_principal(session, name)
    if found is None and name == "users":
        found = identity.find_principal(session, identity.ACCOUNT_USERS, kind="group")
    if found is None:
        raise NotFound(f"'principal': no user, group or service principal named {name[:80]!r}.")
    return found


def _acl_name(principal: identity.Principal) -> str:
    return (
        principal.application_id
        if principal.kind == "service_principal" and principal.application_id
        else principal.name
    )


def create_scope(
    ws: Workspace,
    caller: Identity,
    scope: str,
    *,
    initial_manage_principal: str | None = None,
    backend_type: str | None = None,
) -> ScopeInfo:
    """Create a scope owned by the caller (MANAGE). 409 if the name is taken."""
    check_scope_name(scope)
    if backend_type not in (None, "DATABRICKS"):
        raise InvalidParameterValue(
            f"'scope_backend_type': only DATABRICKS scopes are supported; got {str(backend_type)[:40]!r}."
        )
    with ws.change() as session:
        if catalog.find_securable(session, "secret_scope", scope) is not None:
            raise AlreadyExists(f"Secret scope {scope!r} already exists.")
        securable = catalog.register_securable(
            session, "secret_scope", scope, owner_id=caller.id, properties={"backend_type": "DATABRICKS"}
        )
        if initial_manage_principal:
            grants.grant(
                session,
                securable,
                _principal(session, initial_manage_principal),
                privileges=["MANAGE"],
                actor=caller,
            )
        audit.record(
            session,
            actor=caller,
            action="createScope",
            securable_type="secret_scope",
            securable_name=scope,
            params={"scope": scope, "initial_manage_principal": initial_manage_principal or ""},
        )
    return ScopeInfo(scope, "DATABRICKS")


def list_scopes(ws: Workspace, caller: Identity) -> list[ScopeInfo]:
    """The scopes the caller may at least READ."""
    with ws.read() as session:
        rows = catalog.list_securables(session, "secret_scope")
    return [
        ScopeInfo(r.full_name, str((r.properties or {}).get("backend_type", "DATABRICKS")))
        for r in rows
        if ws.is_authorized(caller, "secret_scope", r.full_name, "READ")
    ]


def delete_scope(ws: Workspace, caller: Identity, scope: str) -> None:
    _scope(ws, caller, scope, "MANAGE")
    with ws.change() as session:
        securable = catalog.get_securable(session, "secret_scope", scope)
        session.query(SecretValue).filter(SecretValue.scope == scope).delete(synchronize_session=False)
        catalog.delete_securable(session, securable)
        audit.record(
            session,
            actor=caller,
            action="deleteScope",
            securable_type="secret_scope",
            securable_name=scope,
            params={"scope": scope},
        )


# Secrets ---------------------------------------------------------------------------------------


def put_secret(
    ws: Workspace, caller: Identity, scope: str, key: str, value: bytes, *, is_bytes: bool
) -> None:
    """Store (or overwrite) a value; needs WRITE. The audit row names the key, never the value."""
    check_key(key)
    _scope(ws, caller, scope, "WRITE")
    if len(value) > MAX_VALUE_BYTES:
        raise InvalidParameterValue(
            f"The secret value is {len(value)} bytes; the limit is {MAX_VALUE_BYTES}."
        )
    with ws.change() as session:
        catalog.get_securable(session, "secret_scope", scope)  # not deleted meanwhile
        row = session.get(SecretValue, (scope, key))
        if row is None:
            row = SecretValue(scope=scope, key=key)
            session.add(row)
        row.ciphertext = _seal(ws, scope, key, value)
        row.is_bytes = is_bytes
        row.updated_at = utcnow()
        row.updated_by_id = caller.id
        audit.record(
            session,
            actor=caller,
            action="putSecret",
            securable_type="secret_scope",
            securable_name=scope,
            params={"scope": scope, "key": key},
        )


def list_secrets(ws: Workspace, caller: Identity, scope: str) -> list[SecretInfo]:
    """Keys and when they changed (never values); needs READ."""
    _scope(ws, caller, scope, "READ")
    with ws.read() as session:
        rows = session.execute(
            select(SecretValue.key, SecretValue.updated_at)
            .where(SecretValue.scope == scope)
            .order_by(SecretValue.key)
        )
        return [SecretInfo(key, int(updated.timestamp() * 1000)) for key, updated in rows]


def delete_secret(ws: Workspace, caller: Identity, scope: str, key: str) -> None:
    check_key(key)
    _scope(ws, caller, scope, "WRITE")
    with ws.change() as session:
        row = session.get(SecretValue, (scope, key))
        if row is None:
            raise NotFound(f"No secret {key!r} in scope {scope!r}.")
        session.delete(row)
        audit.record(
            session,
            actor=caller,
            action="deleteSecret",
            securable_type="secret_scope",
            securable_name=scope,
            params={"scope": scope, "key": key},
        )


def read_secret(ws: Workspace, caller: Identity, scope: str, key: str) -> SecretStr:
    """A secret's value for the deploy path (server-side only; no API returns it). Needs READ on
    the scope; audited as `getSecret`. A value put as bytes comes back base64-encoded."""
    check_key(key)
    _scope(ws, caller, scope, "READ")
    with ws.change() as session:
        row = session.get(SecretValue, (scope, key))
        if row is None:
            raise NotFound(f"No secret {key!r} in scope {scope!r}.")
        value = _open(ws, row)
        audit.record(
            session,
            actor=caller,
            action="getSecret",
            securable_type="secret_scope",
            securable_name=scope,
            params={"scope": scope, "key": key, "reason": "secret read by the deploy path"},
        )
    text = base64.b64encode(value).decode() if row.is_bytes else value.decode("utf-8")
    return SecretStr(text)


# ACLs ------------------------------------------------------------------------------------------


def _check_permission(permission: object) -> str:
    value = str(permission or "").upper()
    if value not in SCOPE_PERMISSIONS:
        raise InvalidParameterValue(
            f"'permission' must be one of READ, WRITE, MANAGE; got {str(permission)[:40]!r}."
        )
    return value


def put_acl(ws: Workspace, caller: Identity, scope: str, principal: str, permission: str) -> AclEntry:
    """Set the principal's one permission on the scope (replacing what it held); needs MANAGE."""
    level = _check_permission(permission)
    _scope(ws, caller, scope, "MANAGE")
    with ws.change() as session:
        securable = catalog.get_securable(session, "secret_scope", scope)
        target = _principal(session, principal)
        held = grants.privileges_of(session, securable, target.id).get(target.id, set())
        stale = sorted(held - {level})
        if stale:
            grants.revoke(session, securable, target, privileges=stale, actor=caller)
        grants.grant(session, securable, target, privileges=[level], actor=caller)
        audit.record(
            session,
            actor=caller,
            action="putAcl",
            securable_type="secret_scope",
            securable_name=scope,
            params={"scope": scope, "principal": _acl_name(target), "permission": level},
        )
        return AclEntry(_acl_name(target), level)


def _entries(session: Session, securable: catalog.Securable) -> dict[int, str]:
    """principal id -> highest permission held directly (grants, and MANAGE for the owner)."""
    out: dict[int, str] = {}
    for pid, privileges in grants.privileges_of(session, securable).items():
        levels = [p for p in SCOPE_PERMISSIONS if p in privileges]
        if levels:
            out[pid] = levels[-1]
    out[securable.owner_id] = "MANAGE"
    return out


def list_acls(ws: Workspace, caller: Identity, scope: str) -> list[AclEntry]:
    _scope(ws, caller, scope, "MANAGE")
    with ws.read() as session:
        securable = catalog.get_securable(session, "secret_scope", scope)
        entries = []
        for pid, level in sorted(_entries(session, securable).items()):
            principal = session.get(identity.Principal, pid)
            if principal is not None:
                entries.append(AclEntry(_acl_name(principal), level))
        return entries


def get_acl(ws: Workspace, caller: Identity, scope: str, principal: str) -> AclEntry:
    _scope(ws, caller, scope, "MANAGE")
    with ws.read() as session:
        securable = catalog.get_securable(session, "secret_scope", scope)
        target = _principal(session, principal)
        level = _entries(session, securable).get(target.id)
        if level is None:
            raise NotFound(f"{principal!r} has no ACL on secret scope {scope!r}.")
        return AclEntry(_acl_name(target), level)


def delete_acl(ws: Workspace, caller: Identity, scope: str, principal: str) -> None:
    _scope(ws, caller, scope, "MANAGE")
    with ws.change() as session:
        securable = catalog.get_securable(session, "secret_scope", scope)
        target = _principal(session, principal)
        held = grants.privileges_of(session, securable, target.id).get(target.id, set())
        if not held & set(SCOPE_PERMISSIONS):
            raise NotFound(f"{principal!r} has no ACL on secret scope {scope!r}.")
        grants.revoke(
            session, securable, target, privileges=sorted(held & set(SCOPE_PERMISSIONS)), actor=caller
        )
        audit.record(
            session,
            actor=caller,
            action="deleteAcl",
            securable_type="secret_scope",
            securable_name=scope,
            params={"scope": scope, "principal": _acl_name(target)},
        )
