"""SCIM-shaped identities: `/api/2.0/preview/scim/v2/{Users,ServicePrincipals,Groups,Me}`.

The JSON is what the databricks-sdk's `iam` service parses (`User`, `ServicePrincipal`, `Group`,
`List*Response`, `Patch`), so `WorkspaceClient().current_user.me()`,
`service_principals.create(display_name=...)`, `users.list(filter=...)` and `groups.patch(...)`
work unchanged. Ids are our principal ids as strings.

Who may do what (until the workspace's one authorization function takes over): any caller reads;
admins create, change and delete; the creator of a principal may change and delete it; anyone may
create a *hidden* service principal (the platform's per-agent principals, made as the deployer),
becoming its creator. Changing a group's members needs the right to manage that group, whichever
side of the membership the request names, so nobody joins `admins` by editing themselves.

Hidden service principals are left out of listings unless a filter names one exactly
(`applicationId eq`, `id eq` or `displayName eq`). Extension (ours):
`"urn:agentdeploy:scim:schemas:extension:2.0:ServicePrincipal": {"hidden": true}`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from agentdeploy.errors import InvalidParameterValue, NotFound, PermissionDenied
from agentdeploy.workspace import audit, identity
from agentdeploy.workspace.api.deps import Caller, WorkspaceDep, require_admin
from agentdeploy.workspace.identity import ADMINS, GroupMember, Identity, Principal

__all__ = [
    "router",
    "service_principal_by_ref",
    "SCHEMA_USER",
    "SCHEMA_SERVICE_PRINCIPAL",
    "SCHEMA_GROUP",
    "HIDDEN_EXTENSION",
]

PREFIX = "/api/2.0/preview/scim/v2"
router = APIRouter(prefix=PREFIX, tags=["scim"])

SCHEMA_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
SCHEMA_USER_WORKSPACE = "urn:ietf:params:scim:schemas:extension:workspace:2.0:User"
SCHEMA_SERVICE_PRINCIPAL = "urn:ietf:params:scim:schemas:core:2.0:ServicePrincipal"
SCHEMA_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
SCHEMA_LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
HIDDEN_EXTENSION = "urn:agentdeploy:scim:schemas:extension:2.0:ServicePrincipal"
MAX_PAGE = 10_000

Kind = Literal["user", "service_principal", "group"]
_REF_KIND = {"user": "Users", "service_principal": "ServicePrincipals", "group": "Groups"}


# Request bodies -------------------------------------------------------------------------------
class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class MemberRef(_Body):
    """A SCIM complex value naming a principal by its id (`value`)."""

    value: str = Field(min_length=1, max_length=64)
    display: str | None = None

    @field_validator("value", mode="before")
    @classmethod
    def _int_ids_too(cls, v: object) -> object:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


class HiddenFlag(_Body):
    hidden: bool = False


class UserIn(_Body):
    user_name: str = Field(alias="userName")
    display_name: str | None = Field(default=None, alias="displayName")
    active: bool = True
    groups: list[MemberRef] | None = None


class ServicePrincipalIn(_Body):
    display_name: str = Field(alias="displayName")
    application_id: str | None = Field(default=None, alias="applicationId")
    active: bool = True
    groups: list[MemberRef] | None = None
    agentdeploy: HiddenFlag | None = Field(
        default=None, alias="urn:agentdeploy:scim:schemas:extension:2.0:ServicePrincipal"
    )  # HIDDEN_EXTENSION, spelled out for type checkers


class GroupIn(_Body):
    display_name: str = Field(alias="displayName")
    members: list[MemberRef] | None = None


class PatchOperation(_Body):
    op: str
    path: str | None = None
    value: Any = None

    @field_validator("op")
    @classmethod
    def _known_op(cls, v: str) -> str:
        if v.lower() not in ("add", "remove", "replace"):
            raise ValueError("must be 'add', 'remove' or 'replace'")
        return v.lower()


class PatchRequest(_Body):
    operations: list[PatchOperation] = Field(alias="Operations", max_length=1000)
    schemas: list[str] = []


# Rendering ------------------------------------------------------------------------------------
def _ref(p: Principal) -> dict[str, Any]:
    return {"value": str(p.id), "display": p.display_name, "$ref": f"{_REF_KIND[p.kind]}/{p.id}"}


def _direct_groups(session: Session, p: Principal) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(Principal)
        .join(GroupMember, GroupMember.group_id == Principal.id)
        .where(GroupMember.member_id == p.id)
    )
    groups = [dict(_ref(g), type="direct") for g in rows]
    if p.kind == "user":  # every user is in `account users` without a membership row
        everyone = session.scalars(
            select(Principal).where(
                Principal.kind == "group",
                Principal.builtin.is_(True),
                Principal.name == identity.ACCOUNT_USERS,
            )
        ).first()
        if everyone is not None:
            groups.append(dict(_ref(everyone), type="indirect"))
    return groups


def render(session: Session, p: Principal) -> dict[str, Any]:
    """A principal as the SDK's `User`, `ServicePrincipal` or `Group`."""
    if p.kind == "user":
        out: dict[str, Any] = {
            "schemas": [SCHEMA_USER, SCHEMA_USER_WORKSPACE],
            "id": str(p.id),
            "userName": p.name,
            "displayName": p.display_name,
            "active": p.active,
            "groups": _direct_groups(session, p),
        }
        if "@" in p.name:
            out["emails"] = [{"value": p.name, "type": "work", "primary": True}]
        return out
    if p.kind == "service_principal":
        out = {
            "schemas": [SCHEMA_SERVICE_PRINCIPAL],
            "id": str(p.id),
            "applicationId": p.application_id,
            "displayName": p.display_name,
            "active": p.active,
            "groups": _direct_groups(session, p),
        }
        if p.hidden:
            out[HIDDEN_EXTENSION] = {"hidden": True}
        return out
    members = [session.get(Principal, m) for m in identity.member_ids_of(session, p)]
    return {
        "schemas": [SCHEMA_GROUP],
        "id": str(p.id),
        "displayName": p.display_name,
        "members": [_ref(m) for m in members if m is not None],
        "groups": _direct_groups(session, p),
        "meta": {"resourceType": "WorkspaceGroup"},
    }


def render_me(session: Session, p: Principal) -> dict[str, Any]:
    """`Me` is always `User`-shaped; a service principal's userName is its application id."""
    if p.kind == "user":
        return render(session, p)
    return {
        "schemas": [SCHEMA_USER, SCHEMA_USER_WORKSPACE],
        "id": str(p.id),
        "userName": p.application_id,
        "displayName": p.display_name,
        "active": p.active,
        "groups": _direct_groups(session, p),
    }


# Filters and paging ---------------------------------------------------------------------------
_TERM = re.compile(
    r'\s*(?P<attr>[A-Za-z][\w.]*)\s+(?P<op>eq|ne|co|sw|ew)\s+(?P<value>"(?:[^"\\]|\\.)*"|true|false|-?\d+)\s*',
    re.IGNORECASE,
)
_AND = re.compile(r"and\b", re.IGNORECASE)
_OPS: dict[str, Callable[[str, str], bool]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "co": lambda a, b: b in a,
    "sw": lambda a, b: a.startswith(b),
    "ew": lambda a, b: a.endswith(b),
}
_EXACT_LOOKUP = {"id", "applicationid", "displayname"}


def _attribute(p: Principal, attr: str) -> str | None:
    attr = attr.lower()
    if attr == "id":
        return str(p.id)
    if attr == "displayname":
        return p.display_name
    if attr == "username":
        return p.name if p.kind == "user" else p.application_id
    if attr == "applicationid":
        return p.application_id
    if attr == "active":
        return "true" if p.active else "false"
    if attr in ("externalid", "emails.value"):
        return p.name if attr == "emails.value" and p.kind == "user" else None
    raise InvalidParameterValue(
        f"'filter' names an unsupported attribute {attr!r}; "
        "use id, userName, displayName, applicationId or active."
    )


def parse_filter(text: str) -> list[tuple[str, str, str]]:
    """`attr op "value" [and ...]` -> [(attr, op, value)]; 400 on anything else."""
    terms: list[tuple[str, str, str]] = []
    pos = 0
    while True:
        m = _TERM.match(text, pos)
        if m is None:
            raise InvalidParameterValue(
                f"'filter' must look like 'displayName eq \"name\"' (operators eq, ne, co, sw, ew joined by "
                f"'and'); got {text[:120]!r}."
            )
        raw = m["value"]
        value = re.sub(r"\\(.)", r"\1", raw[1:-1]) if raw.startswith('"') else raw.lower()
        terms.append((m["attr"], m["op"].lower(), value))
        pos = m.end()
        if pos == len(text):
            return terms
        more = _AND.match(text, pos)
        if more is None:
            raise InvalidParameterValue(f"'filter' may only join terms with 'and'; got {text[:120]!r}.")
        pos = more.end()


def _matches(p: Principal, terms: list[tuple[str, str, str]]) -> bool:
    for attr, op, value in terms:
        actual = _attribute(p, attr)
        if actual is None or not _OPS[op](actual, value):
            return False
    return True


def _list(session: Session, kind: Kind, flt: str | None, start_index: int, count: int) -> dict[str, Any]:
    if flt is not None and len(flt) > 2000:
        raise InvalidParameterValue("'filter' may be at most 2000 characters.")
    terms = parse_filter(flt) if flt else []
    # An exact lookup is not a listing: it may find a hidden (platform) service principal.
    exact = any(op == "eq" and attr.lower() in _EXACT_LOOKUP for attr, op, _ in terms)
    found = [p for p in identity.list_principals(session, kind, include_hidden=exact) if _matches(p, terms)]
    start = max(start_index, 1)
    page = found[start - 1 : start - 1 + max(0, min(count, MAX_PAGE))]
    return {
        "schemas": [SCHEMA_LIST],
        "totalResults": len(found),
        "startIndex": start,
        "itemsPerPage": len(page),
        "Resources": [render(session, p) for p in page],
    }


# Look-ups and checks --------------------------------------------------------------------------
def _get(session: Session, kind: Kind, principal_id: str) -> Principal:
    return identity.get_principal(session, principal_id, kind=kind)


def service_principal_by_ref(session: Session, ref: str) -> Principal:
    """A service principal by SCIM id or by application id (both appear in Databricks docs)."""
    if ref.isdigit():
        return identity.get_principal(session, ref, kind="service_principal")
    found = session.scalars(
        select(Principal).where(Principal.application_id == ref, Principal.kind == "service_principal")
    ).first()
    if found is None:
        raise NotFound(f"No service principal with id or application id {ref[:80]!r}.")
    return found


def _check_manage(caller: Identity, p: Principal, action: str) -> None:
    if not identity.may_manage(caller, p):
        noun = p.kind.replace("_", " ")
        raise PermissionDenied(
            f"{action} the {noun} {p.display_name!r} requires membership in the group '{ADMINS}' "
            f"or being its creator."
        )


def _not_self(caller: Identity, p: Principal, action: str) -> None:
    if p.id == caller.id:
        raise InvalidParameterValue(f"You cannot {action} yourself; ask another admin.")


def _member(session: Session, ref: MemberRef | dict[str, Any] | str, field: str) -> Principal:
    value = ref.value if isinstance(ref, MemberRef) else ref.get("value") if isinstance(ref, dict) else ref
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise InvalidParameterValue(
            f"'{field}' entries must be objects with a string 'value' (a principal id)."
        )
    try:
        return identity.get_principal(session, value)
    except NotFound:
        raise NotFound(f"'{field}' names principal id {value[:80]!r}, which does not exist.") from None


def _refs(value: Any, field: str) -> list[Any]:
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(i, (dict, str, int)) for i in items):
        raise InvalidParameterValue(f'\'{field}\' must be a list of objects like {{"value": "<id>"}}.')
    return items


def _join(session: Session, caller: Identity, group: Principal, member: Principal) -> None:
    if group.kind != "group":
        raise InvalidParameterValue(f"Principal {group.id} ({group.display_name!r}) is not a group.")
    _check_manage(caller, group, "Changing the members of")
    identity.add_member(session, group, member)


def _leave(session: Session, caller: Identity, group: Principal, member: Principal) -> None:
    if group.kind != "group":
        raise InvalidParameterValue(f"Principal {group.id} ({group.display_name!r}) is not a group.")
    _check_manage(caller, group, "Changing the members of")
    if group.name == ADMINS and group.builtin and member.id == caller.id:
        raise InvalidParameterValue("You cannot remove yourself from 'admins'; ask another admin.")
    identity.remove_member(session, group, member)


def _set_groups(session: Session, caller: Identity, p: Principal, wanted: Iterable[Principal]) -> None:
    current = set(session.scalars(select(GroupMember.group_id).where(GroupMember.member_id == p.id)))
    # `account users` is implicit (shown as "indirect" on a user): a GET-then-PUT round trip keeps working.
    wanted_ids = {g.id: g for g in wanted if not (g.builtin and g.name == identity.ACCOUNT_USERS)}
    for gid, g in wanted_ids.items():
        if gid not in current:
            _join(session, caller, g, p)
    for gid in current - set(wanted_ids):
        _leave(session, caller, identity.get_principal(session, gid), p)


def _set_members(session: Session, caller: Identity, group: Principal, wanted: Iterable[Principal]) -> None:
    current = set(session.scalars(select(GroupMember.member_id).where(GroupMember.group_id == group.id)))
    wanted_ids = {m.id: m for m in wanted}
    for mid, m in wanted_ids.items():
        if mid not in current:
            _join(session, caller, group, m)
    for mid in current - set(wanted_ids):
        _leave(session, caller, group, identity.get_principal(session, mid))


def _as_bool(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"  # Entra ID sends "False"
    hint = (
        ' (the databricks-sdk drops a False value from a Patch: pass the string "false")'
        if value is None
        else ""
    )
    raise InvalidParameterValue(f"'{field}' must be true or false{hint}.")


def _as_name(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidParameterValue(f"'{field}' must be a string.")
    return value


_MEMBER_PATH = re.compile(r'^(members|groups)\[value eq "?([^"\]]+)"?\]$', re.IGNORECASE)


def _apply_patch(session: Session, caller: Identity, p: Principal, ops: list[PatchOperation]) -> list[str]:
    """Apply SCIM PatchOp operations in order; returns a summary for the audit log."""
    summary: list[str] = []
    list_field = "members" if p.kind == "group" else "groups"
    for n, op in enumerate(ops):
        where = f"Operations[{n}]"
        if op.path is None:  # {"op": "replace", "value": {"active": false, ...}}
            if not isinstance(op.value, dict):
                raise InvalidParameterValue(f"'{where}.value' must be an object when 'path' is absent.")
            expanded = [PatchOperation(op=op.op, path=k, value=v) for k, v in op.value.items()]
            summary += _apply_patch(session, caller, p, expanded)
            continue
        path = op.path.strip()
        member_path = _MEMBER_PATH.match(path)
        key = path.lower()
        if member_path is not None and member_path.group(1).lower() == list_field and op.op == "remove":
            other = _member(session, member_path.group(2), f"{where}.path")
            if p.kind == "group":
                _leave(session, caller, p, other)
            else:
                _leave(session, caller, other, p)
            summary.append(f"remove {list_field} {other.id}")
        elif key == list_field:
            others = [_member(session, r, f"{where}.value") for r in _refs(op.value or [], f"{where}.value")]
            if op.op == "replace":
                (_set_members if p.kind == "group" else _set_groups)(session, caller, p, others)
            else:
                for other in others:
                    group, member = (p, other) if p.kind == "group" else (other, p)
                    (_join if op.op == "add" else _leave)(session, caller, group, member)
            summary.append(f"{op.op} {list_field} {[o.id for o in others]}")
        elif key == "active" and p.kind != "group" and op.op in ("replace", "add"):
            active = _as_bool(op.value, f"{where}.value")
            _check_manage(caller, p, "Enabling or disabling")
            if not active:
                _not_self(caller, p, "disable")
            identity.set_active(session, p, active)
            summary.append(f"active={active}")
        elif key == "displayname" and op.op in ("replace", "add"):
            _check_manage(caller, p, "Renaming")
            identity.rename(session, p, display_name=_as_name(op.value, f"{where}.value"))
            summary.append("displayName")
        elif key == "username" and p.kind == "user" and op.op in ("replace", "add"):
            _check_manage(caller, p, "Renaming")
            identity.rename(session, p, user_name=_as_name(op.value, f"{where}.value"))
            summary.append("userName")
        else:
            raise InvalidParameterValue(
                f"'{where}': {op.op} of path {path[:80]!r} is not supported on a {p.kind.replace('_', ' ')}; "
                f"supported: replace active/displayName, add/remove/replace {list_field}."
            )
    return summary


def _record(session: Session, caller: Identity, action: str, p: Principal, **params: Any) -> None:
    audit.record(
        session,
        actor=caller,
        action=action,
        securable_type=p.kind,
        securable_name=p.name,
        params={"id": p.id, **params},
    )


def _me_principal(session: Session, caller: Identity) -> Principal:
    return identity.get_principal(session, caller.id)


# Me ---------------------------------------------------------------------------------------------
@router.get("/Me")
def me(caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    with ws.read() as session:
        return render_me(session, _me_principal(session, caller))


# Users ------------------------------------------------------------------------------------------
Filter = Query(default=None, description='e.g. userName eq "ana@example.com"')


@router.get("/Users")
def list_users(
    caller: Caller,
    ws: WorkspaceDep,
    filter: str | None = Filter,
    startIndex: int = Query(1),
    count: int = Query(MAX_PAGE),
) -> dict[str, Any]:  # noqa: N803
    with ws.read() as session:
        return _list(session, "user", filter, startIndex, count)


@router.get("/Users/{principal_id}")
def get_user(principal_id: str, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    with ws.read() as session:
        return render(session, _get(session, "user", principal_id))


@router.post("/Users", status_code=201)
def create_user(body: UserIn, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    require_admin(caller, "Creating a user")
    with ws.change() as session:
        user = identity.create_user(
            session,
            body.user_name,
            display_name=body.display_name,
            active=body.active,
            created_by=_me_principal(session, caller),
        )
        for ref in body.groups or []:
            _join(session, caller, _member(session, ref, "groups"), user)
        _record(session, caller, "createUser", user)
        return render(session, user)


@router.put("/Users/{principal_id}")
def replace_user(principal_id: str, body: UserIn, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    with ws.change() as session:
        user = _get(session, "user", principal_id)
        _check_manage(caller, user, "Changing")
        if not body.active:
            _not_self(caller, user, "disable")
        identity.rename(session, user, user_name=body.user_name, display_name=body.display_name)
        identity.set_active(session, user, body.active)
        if body.groups is not None:
            _set_groups(session, caller, user, [_member(session, r, "groups") for r in body.groups])
        _record(session, caller, "updateUser", user, active=body.active)
        return render(session, user)


@router.patch("/Users/{principal_id}")
def patch_user(principal_id: str, body: PatchRequest, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    with ws.change() as session:
        user = _get(session, "user", principal_id)
        summary = _apply_patch(session, caller, user, body.operations)
        _record(session, caller, "updateUser", user, changes=summary)
        return render(session, user)


@router.delete("/Users/{principal_id}", status_code=204)
def delete_user(principal_id: str, caller: Caller, ws: WorkspaceDep) -> Response:
    with ws.change() as session:
        user = _get(session, "user", principal_id)
        _check_manage(caller, user, "Deleting")
        _not_self(caller, user, "delete")
        _record(session, caller, "deleteUser", user)
        identity.delete_principal(session, user)
    return Response(status_code=204)


# Service principals -----------------------------------------------------------------------------
@router.get("/ServicePrincipals")
def list_service_principals(
    caller: Caller,
    ws: WorkspaceDep,
    filter: str | None = Filter,
    startIndex: int = Query(1),
    count: int = Query(MAX_PAGE),
) -> dict[str, Any]:  # noqa: N803
    with ws.read() as session:
        return _list(session, "service_principal", filter, startIndex, count)


@router.get("/ServicePrincipals/{principal_id}")
def get_service_principal(principal_id: str, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    with ws.read() as session:
        return render(session, service_principal_by_ref(session, principal_id))


@router.post("/ServicePrincipals", status_code=201)
def create_service_principal(body: ServicePrincipalIn, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    hidden = bool(body.agentdeploy and body.agentdeploy.hidden)
    if not hidden:  # a hidden principal is the deployer's own agent identity; anyone may make one
        require_admin(caller, "Creating a service principal")
    with ws.change() as session:
        sp = identity.create_service_principal(
            session,
            body.display_name,
            application_id=body.application_id,
            hidden=hidden,
            active=body.active,
            created_by=_me_principal(session, caller),
        )
        for ref in body.groups or []:
            _join(session, caller, _member(session, ref, "groups"), sp)
        _record(
            session, caller, "createServicePrincipal", sp, application_id=sp.application_id, hidden=hidden
        )
        return render(session, sp)


@router.put("/ServicePrincipals/{principal_id}")
def replace_service_principal(
    principal_id: str, body: ServicePrincipalIn, caller: Caller, ws: WorkspaceDep
) -> dict[str, Any]:
    with ws.change() as session:
        sp = service_principal_by_ref(session, principal_id)
        _check_manage(caller, sp, "Changing")
        if body.application_id is not None and body.application_id != sp.application_id:
            raise InvalidParameterValue("'applicationId' of a service principal cannot be changed.")
        if not body.active:
            _not_self(caller, sp, "disable")
        identity.rename(session, sp, display_name=body.display_name)
        identity.set_active(session, sp, body.active)
        if body.groups is not None:
            _set_groups(session, caller, sp, [_member(session, r, "groups") for r in body.groups])
        _record(session, caller, "updateServicePrincipal", sp, active=body.active)
        return render(session, sp)


@router.patch("/ServicePrincipals/{principal_id}")
def patch_service_principal(
    principal_id: str, body: PatchRequest, caller: Caller, ws: WorkspaceDep
) -> dict[str, Any]:
    with ws.change() as session:
        sp = service_principal_by_ref(session, principal_id)
        summary = _apply_patch(session, caller, sp, body.operations)
        _record(session, caller, "updateServicePrincipal", sp, changes=summary)
        return render(session, sp)


@router.delete("/ServicePrincipals/{principal_id}", status_code=204)
def delete_service_principal(principal_id: str, caller: Caller, ws: WorkspaceDep) -> Response:
    with ws.change() as session:
        sp = service_principal_by_ref(session, principal_id)
        _check_manage(caller, sp, "Deleting")
        _not_self(caller, sp, "delete")
        _record(session, caller, "deleteServicePrincipal", sp, application_id=sp.application_id)
        identity.delete_principal(session, sp)
    return Response(status_code=204)


# Groups -----------------------------------------------------------------------------------------
@router.get("/Groups")
def list_groups(
    caller: Caller,
    ws: WorkspaceDep,
    filter: str | None = Filter,
    startIndex: int = Query(1),
    count: int = Query(MAX_PAGE),
) -> dict[str, Any]:  # noqa: N803
    with ws.read() as session:
        return _list(session, "group", filter, startIndex, count)


@router.get("/Groups/{principal_id}")
def get_group(principal_id: str, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    with ws.read() as session:
        return render(session, _get(session, "group", principal_id))


@router.post("/Groups", status_code=201)
def create_group(body: GroupIn, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    require_admin(caller, "Creating a group")
    with ws.change() as session:
        group = identity.create_group(session, body.display_name, created_by=_me_principal(session, caller))
        members = [_member(session, r, "members") for r in body.members or []]
        for m in members:
            identity.add_member(session, group, m)
        _record(session, caller, "createGroup", group, members=[m.id for m in members])
        return render(session, group)


@router.put("/Groups/{principal_id}")
def replace_group(principal_id: str, body: GroupIn, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    with ws.change() as session:
        group = _get(session, "group", principal_id)
        _check_manage(caller, group, "Changing")
        identity.rename(session, group, display_name=body.display_name)
        if body.members is not None:  # absent keeps the members; [] empties the group
            _set_members(session, caller, group, [_member(session, r, "members") for r in body.members])
        _record(session, caller, "updateGroup", group)
        return render(session, group)


@router.patch("/Groups/{principal_id}")
def patch_group(principal_id: str, body: PatchRequest, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    with ws.change() as session:
        group = _get(session, "group", principal_id)
        _check_manage(caller, group, "Changing")
        summary = _apply_patch(session, caller, group, body.operations)
        _record(session, caller, "updateGroup", group, changes=summary)
        return render(session, group)


@router.delete("/Groups/{principal_id}", status_code=204)
def delete_group(principal_id: str, caller: Caller, ws: WorkspaceDep) -> Response:
    with ws.change() as session:
        group = _get(session, "group", principal_id)
        _check_manage(caller, group, "Deleting")
        _record(session, caller, "deleteGroup", group)
        identity.delete_principal(session, group)
    return Response(status_code=204)
