"""Identities: users, service principals and groups, with group membership.

Every identity is one `Principal` row (`kind` = user | service_principal | group). The built-in
group `account users` holds every user implicitly; `admins` holds the first user. Service
principals created by the platform for an agent's model version are `hidden` and left out of
default listings.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import Boolean, ForeignKey, Integer, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from agentdeploy.errors import AlreadyExists, InvalidParameterValue, NotFound
from agentdeploy.workspace.db import Base, UTCDateTime, utcnow
from agentdeploy.workspace.names import check_name

__all__ = [
    "Principal",
    "GroupMember",
    "PrincipalKind",
    "Identity",
    "ACCOUNT_USERS",
    "ADMINS",
    "create_user",
    "create_service_principal",
    "create_group",
    "get_principal",
    "find_principal",
    "list_principals",
    "delete_principal",
    "set_active",
    "rename",
    "may_manage",
    "add_member",
    "remove_member",
    "group_ids_of",
    "member_ids_of",
    "ensure_builtin_groups",
]

PrincipalKind = Literal["user", "service_principal", "group"]
ACCOUNT_USERS = "account users"
ADMINS = "admins"


class Principal(Base):
    __tablename__ = "principals"
    # Ids are never reused, so an owner or creator id cannot pass to a newcomer.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    # userName for users, displayName for groups and service principals; unique per kind.
    name: Mapped[str] = mapped_column(String(255), index=True)
    display_name: Mapped[str] = mapped_column(String(255))
    application_id: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    hidden: Mapped[bool] = mapped_column(Boolean, default=False)
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Who created it (None for the system): a principal's creator may manage it and its secrets.
    created_by_id: Mapped[int | None] = mapped_column(Integer, nullable=True)


class GroupMember(Base):
    __tablename__ = "group_members"

    group_id: Mapped[int] = mapped_column(ForeignKey("principals.id", ondelete="CASCADE"), primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("principals.id", ondelete="CASCADE"), primary_key=True)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling: an immutable view of a principal and the groups it belongs to."""

    id: int
    kind: str
    name: str
    display_name: str
    application_id: str | None
    active: bool
    group_ids: frozenset[int]
    group_names: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return ADMINS in self.group_names


def _unique(session: Session, kind: str, name: str) -> None:
    taken = session.scalar(select(Principal.id).where(Principal.kind == kind, Principal.name == name))
    if taken is not None:
        raise AlreadyExists(f"A {kind.replace('_', ' ')} named {name!r} already exists.")


def create_user(
    session: Session,
    user_name: str,
    *,
    display_name: str | None = None,
    active: bool = True,
    created_by: Principal | None = None,
) -> Principal:
    check_name("userName", user_name)
    if display_name is not None:
        check_name("displayName", display_name)
    _unique(session, "user", user_name)
    user = Principal(kind="user", name=user_name, display_name=display_name or user_name, active=active,
                     created_by_id=created_by.id if created_by else None)
    session.add(user)
    session.flush()
    return user


def create_service_principal(
    session: Session,
    display_name: str,
    *,
    application_id: str | None = None,
    hidden: bool = False,
    active: bool = True,
    created_by: Principal | None = None,
) -> Principal:
    check_name("displayName", display_name)
    _unique(session, "service_principal", display_name)
    if application_id is not None:
        try:
            application_id = str(uuid.UUID(application_id))
        except ValueError:
            raise InvalidParameterValue(
                f"'applicationId' must be a UUID; got {application_id[:80]!r}."
            ) from None
        if session.scalar(select(Principal.id).where(Principal.application_id == application_id)) is not None:
            raise AlreadyExists(f"A service principal with application id {application_id!r} already exists.")
    sp = Principal(
        kind="service_principal",
        name=display_name,
        display_name=display_name,
        application_id=application_id or str(uuid.uuid4()),
        hidden=hidden,
        active=active,
        created_by_id=created_by.id if created_by else None,
    )
    session.add(sp)
    session.flush()
    return sp


def create_group(
    session: Session, display_name: str, *, builtin: bool = False, created_by: Principal | None = None
) -> Principal:
    check_name("displayName", display_name)
    _unique(session, "group", display_name)
    group = Principal(kind="group", name=display_name, display_name=display_name, builtin=builtin,
                      created_by_id=created_by.id if created_by else None)
    session.add(group)
    session.flush()
    return group


def ensure_builtin_groups(session: Session) -> tuple[Principal, Principal]:
    """`account users` (every user, implicitly) and `admins`; created once."""
    found = {
        p.name: p
        for p in session.scalars(
            select(Principal).where(Principal.kind == "group", Principal.builtin.is_(True))
        )
    }
    users = found.get(ACCOUNT_USERS) or create_group(session, ACCOUNT_USERS, builtin=True)
    admins = found.get(ADMINS) or create_group(session, ADMINS, builtin=True)
    return users, admins


def get_principal(session: Session, principal_id: int | str, *, kind: str | None = None) -> Principal:
    try:
        pid = int(principal_id)
    except (TypeError, ValueError):
        raise NotFound(f"No {kind or 'principal'} with id {str(principal_id)[:80]!r}.") from None
    principal = session.get(Principal, pid)
    if principal is None or (kind is not None and principal.kind != kind):
        raise NotFound(f"No {(kind or 'principal').replace('_', ' ')} with id {pid}.")
    return principal


def find_principal(session: Session, name: str, *, kind: str | None = None) -> Principal | None:
    """A principal by user name, group display name, service principal name or application id."""
    query = select(Principal).where((Principal.name == name) | (Principal.application_id == name))
    if kind is not None:
        query = query.where(Principal.kind == kind)
    return session.scalars(query.order_by(Principal.kind.desc())).first()


def list_principals(session: Session, kind: str, *, include_hidden: bool = False) -> list[Principal]:
    query = select(Principal).where(Principal.kind == kind)
    if not include_hidden:
        query = query.where(Principal.hidden.is_(False))
    return list(session.scalars(query.order_by(Principal.id)))


def delete_principal(session: Session, principal: Principal) -> None:
    if principal.builtin:
        raise InvalidParameterValue(f"The built-in group {principal.name!r} cannot be deleted.")
    session.delete(principal)
    session.flush()


def set_active(session: Session, principal: Principal, active: bool) -> None:
    if principal.kind == "group":
        raise InvalidParameterValue("Groups have no 'active' attribute.")
    principal.active = active
    session.flush()


def rename(session: Session, principal: Principal, *, display_name: str | None = None,
           user_name: str | None = None) -> None:
    """Change a display name (and a user's userName); names stay unique per kind."""
    if principal.builtin and display_name not in (None, principal.display_name):
        raise InvalidParameterValue(f"The built-in group {principal.name!r} cannot be renamed.")
    if display_name is not None:
        check_name("displayName", display_name)
        principal.display_name = display_name
        if principal.kind != "user" and display_name != principal.name:
            _unique(session, principal.kind, display_name)
            principal.name = display_name
    if user_name is not None and principal.kind == "user" and user_name != principal.name:
        check_name("userName", user_name)
        _unique(session, "user", user_name)
        principal.name = user_name
    session.flush()


def may_manage(caller: Identity, principal: Principal) -> bool:
    """Admins manage every identity; a principal's creator manages that principal."""
    return caller.is_admin or (principal.created_by_id is not None and principal.created_by_id == caller.id)


def add_member(session: Session, group: Principal, member: Principal) -> None:
    if group.kind != "group":
        raise InvalidParameterValue(f"{group.name!r} is not a group.")
    if group.name == ACCOUNT_USERS:
        raise InvalidParameterValue("'account users' holds every user already; it takes no explicit members.")
    if member.id == group.id:
        raise InvalidParameterValue(f"The group {group.name!r} cannot be a member of itself.")
    if session.get(GroupMember, (group.id, member.id)) is None:
        session.add(GroupMember(group_id=group.id, member_id=member.id))
        session.flush()


def remove_member(session: Session, group: Principal, member: Principal) -> None:
    row = session.get(GroupMember, (group.id, member.id))
    if row is not None:
        session.delete(row)
        session.flush()


def member_ids_of(session: Session, group: Principal) -> list[int]:
    if group.name == ACCOUNT_USERS and group.builtin:
        return list(session.scalars(select(Principal.id).where(Principal.kind == "user")))
    return list(session.scalars(select(GroupMember.member_id).where(GroupMember.group_id == group.id)))


def group_ids_of(session: Session, principal: Principal) -> list[int]:
    """Direct and nested groups of a principal, plus `account users` for every user."""
    seen: set[int] = set()
    frontier = [principal.id]
    while frontier:
        rows = session.scalars(select(GroupMember.group_id).where(GroupMember.member_id.in_(frontier)))
        frontier = [g for g in rows if g not in seen]
        seen.update(frontier)
    if principal.kind == "user":
        everyone = session.scalar(
            select(Principal.id).where(Principal.kind == "group", Principal.name == ACCOUNT_USERS)
        )
        if everyone is not None:
            seen.add(everyone)
    return sorted(seen)
