"""Grants over REST, in the Databricks shapes the databricks-sdk speaks.

- `GET|PATCH /api/2.1/unity-catalog/permissions/{securable_type}/{full_name}` (`grants.get`,
  `grants.update`): direct privilege assignments; PATCH takes `changes` of add/remove.
- `GET /api/2.1/unity-catalog/effective-permissions/{securable_type}/{full_name}`
  (`grants.get_effective`): with `inherited_from_type`/`inherited_from_name` for privileges
  granted on a parent.
- `GET|PATCH|PUT /api/2.0/permissions/{object_type}/{object_id}` and `.../permissionLevels` for
  workspace objects (`warehouses`, `serving-endpoints`, `genie`, `vector-search-indexes`), answering
  `access_control_list` with `all_permissions`.
- `POST /api/2.0/agentdeploy/permissions/check` (ours): does the caller hold all of these
  privileges? Answers every missing privilege at once (the deploy's "no privilege escalation"
  check, made as the deployer).

Extension: the Unity Catalog paths accept every securable type, workspace objects by name too
(`/permissions/sql_warehouse/w1`, `/permissions/secret_scope/s1`), so one grant CLI covers all.
Principals are named as Databricks does: a user's userName, a group's displayName, a service
principal's applicationId (its display name is accepted on input).

Reading grants: whoever may manage the securable sees all; anyone else sees only their own and
their groups' (no 403). Changing grants needs MANAGE (CAN_MANAGE on workspace objects).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from agentdeploy.errors import InvalidParameterValue, NotFound, PermissionDenied
from agentdeploy.workspace import audit, catalog, grants
from agentdeploy.workspace.api.deps import Caller, WorkspaceDep
from agentdeploy.workspace.context import Workspace
from agentdeploy.workspace.grants import SecurableRef
from agentdeploy.workspace.identity import ADMINS, Identity

__all__ = [
    "router",
    "principal_label",
    "resolve_principal",
    "owner_label",
    "can_manage",
    "OBJECT_TYPES",
]

router = APIRouter(tags=["permissions"])

# /api/2.0/permissions/{object_type} -> our securable type.
OBJECT_TYPES: dict[str, str] = {
    "warehouses": "sql_warehouse",
    "serving-endpoints": "serving_endpoint",
    "genie": "genie_space",
    "genie-spaces": "genie_space",
    "vector-search-indexes": "vector_search_index",
}
_LEVEL_DESCRIPTIONS = {
    "CAN_VIEW": "Can view the object and its settings.",
    "CAN_USE": "Can use the object (run statements on a warehouse, query an index).",
    "CAN_QUERY": "Can query the serving endpoint.",
    "CAN_RUN": "Can ask the Genie space questions.",
    "CAN_EDIT": "Can edit the object.",
    "CAN_MANAGE": "Can manage the object and its permissions.",
    "IS_OWNER": "Owns the object.",
}


# Principals ------------------------------------------------------------------------------------
def principal_label(identity: Identity) -> str:
    """How grants name a principal: userName, group displayName, or SP applicationId."""
    if identity.kind == "service_principal" and identity.application_id:
        return identity.application_id
    return identity.name


def owner_label(ws: Workspace, owner_id: int) -> str:
    owner = ws.identities.by_id.get(owner_id)
    return principal_label(owner) if owner is not None else f"<deleted principal {owner_id}>"


def resolve_principal(ws: Workspace, name: object, *, field: str = "principal") -> Identity:
    """A user, group or service principal by name or application id, or 404 naming the field."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidParameterValue(f"'{field}' must name a user, group or service principal.")
    index = ws.identities
    for kind in ("user", "group", "service_principal"):
        found = index.by_name.get((kind, name))
        if found is not None:
            return found
    found = index.by_application_id.get(name)
    if found is None:
        raise NotFound(f"'{field}': no user, group or service principal named {name[:120]!r}.")
    return found


def can_manage(ws: Workspace, caller: Identity, ref: SecurableRef) -> bool:
    return not grants.decide(ws.access, caller, ref, grants.manage_privilege(ref.securable_type))


def _ref(ws: Workspace, securable_type: str, full_name: str) -> SecurableRef:
    stype = catalog.normalize_type(securable_type)
    full_name = catalog.check_securable_name(stype, full_name)
    ref = ws.access.find(stype, full_name)
    if ref is None:
        raise NotFound(f"{catalog.describe(stype, full_name).capitalize()} does not exist.")
    return ref


def _visible_ids(
    ws: Workspace, caller: Identity, ref: SecurableRef, principal: str | None
) -> set[int] | None:
    """Which principals' grants the caller may see (None: all)."""
    if principal is not None:
        who = resolve_principal(ws, principal)
        wanted = {who.id, *who.group_ids}
        if can_manage(ws, caller, ref):
            return wanted
        return wanted & {caller.id, *caller.group_ids}
    return None if can_manage(ws, caller, ref) else {caller.id, *caller.group_ids}


def _label_of(ws: Workspace, principal_id: int) -> str | None:
    identity = ws.identities.by_id.get(principal_id)
    return principal_label(identity) if identity is not None else None


def _assignments(ws: Workspace, ref: SecurableRef, visible: set[int] | None) -> list[dict[str, Any]]:
    out = []
    for pid, privileges in ws.access.grants.get(ref.id, {}).items():
        label = _label_of(ws, pid)
        if label is None or (visible is not None and pid not in visible):
            continue
        out.append({"principal": label, "privileges": sorted(privileges)})
    return sorted(out, key=lambda a: a["principal"])


# Unity Catalog grants --------------------------------------------------------------------------
class PermissionsChange(BaseModel):
    model_config = ConfigDict(extra="ignore")
    principal: str = Field(min_length=1, max_length=255)
    add: list[str] = Field(default_factory=list, max_length=64)
    remove: list[str] = Field(default_factory=list, max_length=64)


class UpdatePermissions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    changes: list[PermissionsChange] = Field(default_factory=list, max_length=1000)
    omit_permissions_in_response: bool = False


@router.get("/api/2.1/unity-catalog/permissions/{securable_type}/{full_name}")
def get_permissions(
    securable_type: str, full_name: str, caller: Caller, ws: WorkspaceDep, principal: str | None = Query(None)
) -> dict[str, Any]:
    ref = _ref(ws, securable_type, full_name)
    return {"privilege_assignments": _assignments(ws, ref, _visible_ids(ws, caller, ref, principal))}


@router.patch("/api/2.1/unity-catalog/permissions/{securable_type}/{full_name}")
def update_permissions(
    securable_type: str, full_name: str, body: UpdatePermissions, caller: Caller, ws: WorkspaceDep
) -> dict[str, Any]:
    ref = _ref(ws, securable_type, full_name)
    ws.authorize(caller, ref.securable_type, ref.full_name, grants.manage_privilege(ref.securable_type))
    # Validate everything before changing anything: one request, one transaction, all or nothing.
    planned = []
    for i, change in enumerate(body.changes):
        who = resolve_principal(ws, change.principal, field=f"changes[{i}].principal")
        add = [
            grants.normalize_privilege(ref.securable_type, p, field=f"changes[{i}].add") for p in change.add
        ]
        remove = [
            grants.normalize_privilege(ref.securable_type, p, field=f"changes[{i}].remove")
            for p in change.remove
        ]
        planned.append((who, add, remove))
    with ws.change() as session:
        securable = catalog.get_securable(session, ref.securable_type, ref.full_name)
        for who, add, remove in planned:
            if remove:
                grants.revoke(session, securable, who, privileges=remove, actor=caller)
            if add:
                grants.grant(session, securable, who, privileges=add, actor=caller)
    if body.omit_permissions_in_response:
        return {}
    return {"privilege_assignments": _assignments(ws, ws.access.by_id[ref.id], None)}


@router.get("/api/2.1/unity-catalog/effective-permissions/{securable_type}/{full_name}")
def get_effective_permissions(
    securable_type: str, full_name: str, caller: Caller, ws: WorkspaceDep, principal: str | None = Query(None)
) -> dict[str, Any]:
    ref = _ref(ws, securable_type, full_name)
    visible = _visible_ids(ws, caller, ref, principal)
    by_principal: dict[str, list[dict[str, Any]]] = {}
    for node in ws.access.chain(ref):
        for pid, privileges in ws.access.grants.get(node.id, {}).items():
            label = _label_of(ws, pid)
            if label is None or (visible is not None and pid not in visible):
                continue
            for privilege in sorted(privileges):
                entry: dict[str, Any] = {"privilege": privilege}
                if node is not ref:
                    entry["inherited_from_type"] = node.securable_type.upper()
                    entry["inherited_from_name"] = node.full_name
                by_principal.setdefault(label, []).append(entry)
    return {
        "privilege_assignments": [
            {"principal": label, "privileges": entries} for label, entries in sorted(by_principal.items())
        ]
    }


# Workspace object permissions ------------------------------------------------------------------
class AccessControlRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    user_name: str | None = Field(default=None, max_length=255)
    group_name: str | None = Field(default=None, max_length=255)
    service_principal_name: str | None = Field(default=None, max_length=255)
    permission_level: str = Field(min_length=1, max_length=64)


class ObjectPermissionsRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    access_control_list: list[AccessControlRequest] = Field(default_factory=list, max_length=1000)


def _object(ws: Workspace, object_type: str, object_id: str) -> SecurableRef:
    stype = OBJECT_TYPES.get(object_type)
    if stype is None:
        raise InvalidParameterValue(
            f"'object_type': {object_type[:80]!r} has no permissions here; expected one of "
            f"{', '.join(sorted(OBJECT_TYPES))}."
        )
    ref = ws.access.by_object_id.get((stype, object_id)) or ws.access.find(stype, object_id)
    if ref is None:
        raise NotFound(f"No {stype.replace('_', ' ')} with id {object_id[:80]!r}.")
    return ref


def _acl_principal(ws: Workspace, entry: AccessControlRequest, i: int) -> Identity:
    given = [
        (k, v)
        for k, v in (
            ("user_name", entry.user_name),
            ("group_name", entry.group_name),
            ("service_principal_name", entry.service_principal_name),
        )
        if v
    ]
    if len(given) != 1:
        raise InvalidParameterValue(
            f"'access_control_list[{i}]' must name exactly one of user_name, group_name, "
            "service_principal_name."
        )
    key, name = given[0]
    field = f"access_control_list[{i}].{key}"
    kind = {"user_name": "user", "group_name": "group", "service_principal_name": "service_principal"}[key]
    found = ws.identities.by_name.get((kind, name))
    if found is None and kind == "service_principal":
        found = ws.identities.by_application_id.get(name)
    if found is None:
        raise NotFound(f"'{field}': no {kind.replace('_', ' ')} named {name[:120]!r}.")
    return found


def _acl_entry(identity: Identity, permissions: list[dict[str, Any]]) -> dict[str, Any]:
    key = {"user": "user_name", "group": "group_name", "service_principal": "service_principal_name"}[
        identity.kind
    ]
    return {
        key: principal_label(identity),
        "display_name": identity.display_name,
        "all_permissions": permissions,
    }


def _object_permissions(ws: Workspace, object_type: str, ref: SecurableRef) -> dict[str, Any]:
    entries: dict[int, list[dict[str, Any]]] = {}
    entries.setdefault(ref.owner_id, []).append({"permission_level": "IS_OWNER", "inherited": False})
    for pid, levels in ws.access.grants.get(ref.id, {}).items():
        for level in sorted(levels, key=grants.LEVELS[ref.securable_type].index):
            entries.setdefault(pid, []).append({"permission_level": level, "inherited": False})
    admins = ws.identities.by_name.get(("group", ADMINS))
    if admins is not None:  # rule 1 of grants.decide, shown the way Databricks shows it
        entries.setdefault(admins.id, []).append(
            {
                "permission_level": grants.manage_privilege(ref.securable_type),
                "inherited": True,
                "inherited_from_object": [f"/{object_type}/"],
            }
        )
    acl = [
        _acl_entry(ws.identities.by_id[pid], perms)
        for pid, perms in entries.items()
        if pid in ws.identities.by_id
    ]
    return {
        "object_id": f"/{object_type}/{ref.object_id}",
        "object_type": object_type,
        "access_control_list": acl,
    }


@router.get("/api/2.0/permissions/{object_type}/{object_id}")
def get_object_permissions(
    object_type: str, object_id: str, caller: Caller, ws: WorkspaceDep
) -> dict[str, Any]:
    ref = _object(ws, object_type, object_id)
    ws.authorize(caller, ref.securable_type, ref.full_name, grants.LEVELS[ref.securable_type][0])
    return _object_permissions(ws, object_type, ref)


@router.get("/api/2.0/permissions/{object_type}/{object_id}/permissionLevels")
def get_permission_levels(
    object_type: str, object_id: str, caller: Caller, ws: WorkspaceDep
) -> dict[str, Any]:
    ref = _object(ws, object_type, object_id)
    ws.authorize(caller, ref.securable_type, ref.full_name, grants.LEVELS[ref.securable_type][0])
    levels = [*grants.LEVELS[ref.securable_type], "IS_OWNER"]
    return {
        "permission_levels": [
            {"permission_level": lv, "description": _LEVEL_DESCRIPTIONS.get(lv, lv)} for lv in levels
        ]
    }


def _change_object_permissions(
    ws: Workspace,
    caller: Identity,
    object_type: str,
    object_id: str,
    body: ObjectPermissionsRequest,
    *,
    replace: bool,
) -> dict[str, Any]:
    ref = _object(ws, object_type, object_id)
    ws.authorize(caller, ref.securable_type, ref.full_name, grants.manage_privilege(ref.securable_type))
    wanted: dict[int, tuple[Identity, set[str]]] = {}
    new_owner: Identity | None = None
    for i, entry in enumerate(body.access_control_list):
        who = _acl_principal(ws, entry, i)
        level = entry.permission_level.strip().upper()
        if level == "IS_OWNER":
            if new_owner is not None and new_owner.id != who.id:
                raise InvalidParameterValue("'access_control_list' may name only one IS_OWNER.")
            new_owner = who
            continue
        level = grants.normalize_privilege(
            ref.securable_type, level, field=f"access_control_list[{i}].permission_level"
        )
        wanted.setdefault(who.id, (who, set()))[1].add(level)
    all_levels = set(grants.LEVELS[ref.securable_type])
    with ws.change() as session:
        securable = catalog.get_securable(session, ref.securable_type, ref.full_name)
        current = grants.privileges_of(session, securable)
        for pid, held in current.items():
            # PUT replaces every direct permission; PATCH replaces the level of whom it names.
            if replace or pid in wanted:
                drop = held - (wanted[pid][1] if pid in wanted else set())
                if drop:
                    _revoke_by_id(session, securable, ws, pid, drop, caller)
        for who, levels in wanted.values():
            grants.grant(session, securable, who, privileges=sorted(levels & all_levels), actor=caller)
        if new_owner is not None and new_owner.id != securable.owner_id:
            catalog.set_owner(session, securable, new_owner.id)
            audit.record(
                session,
                actor=caller,
                action="changeOwner",
                securable_type=securable.securable_type,
                securable_name=securable.full_name,
                params={"owner": new_owner.name},
            )
    return _object_permissions(ws, object_type, ws.access.by_id[ref.id])


def _revoke_by_id(
    session: Session,
    securable: catalog.Securable,
    ws: Workspace,
    pid: int,
    privileges: Iterable[str],
    caller: Identity,
) -> None:
    identity = ws.identities.by_id.get(pid)
    name = identity.name if identity is not None else str(pid)
    grants.revoke(session, securable, _PrincipalRef(pid, name), privileges=privileges, actor=caller)


@dataclass(frozen=True)
class _PrincipalRef:  # a grant's principal as grants.revoke needs it (id and name)
    id: int
    name: str


@router.patch("/api/2.0/permissions/{object_type}/{object_id}")
def update_object_permissions(
    object_type: str, object_id: str, body: ObjectPermissionsRequest, caller: Caller, ws: WorkspaceDep
) -> dict[str, Any]:
    return _change_object_permissions(ws, caller, object_type, object_id, body, replace=False)


@router.put("/api/2.0/permissions/{object_type}/{object_id}")
def set_object_permissions(
    object_type: str, object_id: str, body: ObjectPermissionsRequest, caller: Caller, ws: WorkspaceDep
) -> dict[str, Any]:
    return _change_object_permissions(ws, caller, object_type, object_id, body, replace=True)


# The caller's own privileges, checked all at once ----------------------------------------------
class PrivilegeCheck(BaseModel):
    model_config = ConfigDict(extra="ignore")
    securable_type: str = Field(min_length=1, max_length=64)
    full_name: str = Field(min_length=1, max_length=512)
    privilege: str = Field(min_length=1, max_length=64)


class PermissionsCheck(BaseModel):
    model_config = ConfigDict(extra="ignore")
    checks: list[PrivilegeCheck] = Field(min_length=1, max_length=1000)
    fail_on_missing: bool = Field(default=True, description="403 naming every missing privilege (else 200).")


@router.post("/api/2.0/agentdeploy/permissions/check")
def check_permissions(body: PermissionsCheck, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    """Does the caller hold every listed privilege? 403 names everything missing at once."""
    checks = []
    for i, c in enumerate(body.checks):
        stype = catalog.normalize_type(c.securable_type, field=f"checks[{i}].securable_type")
        name = catalog.check_securable_name(stype, c.full_name, field=f"checks[{i}].full_name")
        checks.append(
            (stype, name, grants.normalize_privilege(stype, c.privilege, field=f"checks[{i}].privilege"))
        )
    missing = ws.missing_privileges(caller, checks)
    if missing and body.fail_on_missing:
        raise PermissionDenied(grants.denial_message(caller, missing))
    return {"authorized": not missing, "missing": missing}
